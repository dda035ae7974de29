//! systemd's readiness protocol (`sd_notify`, `Type=notify` units): when `NOTIFY_SOCKET` names a
//! datagram socket, `cairnd serve` sends `READY=1` once every listener is bound and serving, and
//! `STOPPING=1` when a shutdown begins. Without `NOTIFY_SOCKET` (not under systemd) nothing is sent.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to a path or, with a leading `@`, an abstract
//! socket name; a dozen lines of std, so no crate.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Send `state` (e.g. `READY=1`) to the service manager, if there is one. Errors are the caller's to
/// log: a manager that cannot be told is not a reason to stop serving.
pub fn notify(state: &str) -> io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let addr = match path.as_encoded_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(&path)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}
