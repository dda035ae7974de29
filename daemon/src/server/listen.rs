//! Binding the daemon's sockets. The Unix socket is the access control: its directory is created
//! `0700` (`0750` for a group-accessible socket) when we create it, and the socket itself is `0600` (owner only) or `0660` (owner and group,
//! for CI runner containers sharing one daemon through a socket mount).
//!
//! Under systemd socket activation (`cairnd.socket`) the socket is bound by systemd and passed to us as
//! fd 3 (the `sd_listen_fds` protocol: `LISTEN_PID` is our pid, `LISTEN_FDS` counts the fds from 3);
//! systemd then owns the socket file, its mode and its group.

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Bind `path` as a Unix socket with `mode` (0o600 or 0o660). A stale socket left by a killed daemon is
/// replaced; a socket some live daemon still answers on is an error naming it.
pub async fn bind_unix(path: &Path, mode: u32) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating socket directory `{}`", dir.display()))?;
        // A group-accessible socket is useless in a directory the group cannot traverse.
        let dir_mode = if mode & 0o070 != 0 { 0o750 } else { 0o700 };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode))
            .with_context(|| format!("restricting `{}`", dir.display()))?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            bail!(
                "another cairnd is already listening on `{}`",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket `{}`", path.display()))?;
    }
    // Bind under a restrictive umask so there is no window in which the socket is world-accessible.
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail.
    let old = unsafe { libc::umask(0o177) };
    let bound = tokio::net::UnixListener::bind(path);
    // SAFETY: as above; restores the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("binding `{}`", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting permissions of `{}`", path.display()))?;
    Ok(listener)
}

/// Bind a TCP listener (loopback recommended: the daemon has no authentication of its own on TCP).
pub async fn bind_tcp(addr: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding TCP `{addr}`"))
}

/// The first fd passed by the service manager (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// The Unix socket systemd passed us, if we were socket-activated: `LISTEN_PID` equals our pid and
/// `LISTEN_FDS` is at least 1. `Ok(None)` when not activated (the variables are absent or meant for
/// another process, e.g. inherited from a parent). Of several fds the first `AF_UNIX` stream socket is
/// used; when none is, that is an error naming the fds, as a misconfigured `.socket` unit should fail
/// loudly rather than leave clients hanging.
pub fn activated_unix() -> Result<Option<tokio::net::UnixListener>> {
    activated_unix_from(|k| std::env::var(k).ok())
}

fn activated_unix_from(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Option<tokio::net::UnixListener>> {
    let (Some(pid), Some(fds)) = (get("LISTEN_PID"), get("LISTEN_FDS")) else {
        return Ok(None);
    };
    let pid: u32 = pid
        .trim()
        .parse()
        .with_context(|| format!("LISTEN_PID `{pid}` is not a process id"))?;
    if pid != std::process::id() {
        return Ok(None);
    }
    let n: RawFd = fds
        .trim()
        .parse()
        .with_context(|| format!("LISTEN_FDS `{fds}` is not a count"))?;
    if n < 1 {
        return Ok(None);
    }
    for fd in LISTEN_FDS_START..LISTEN_FDS_START + n {
        if !is_unix_stream_listener(fd) {
            continue;
        }
        // The fd is not inherited by anything we spawn (systemd's `sd_listen_fds(1)` does the same);
        // we do not unset the variables because editing the environment of a running multi-threaded
        // process is unsound, and the pid check already makes them inert for children.
        // SAFETY: fcntl on an fd we were handed; failure only leaves the flag unset.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        // SAFETY: systemd passed this fd to us and nothing else in the process owns it; we checked it is
        // an open, listening `AF_UNIX` stream socket.
        let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
        std_listener
            .set_nonblocking(true)
            .with_context(|| format!("making activated socket fd {fd} non-blocking"))?;
        let listener = tokio::net::UnixListener::from_std(std_listener)
            .with_context(|| format!("registering activated socket fd {fd}"))?;
        return Ok(Some(listener));
    }
    bail!(
        "socket activation passed {n} fd(s) from {LISTEN_FDS_START} but none is a listening Unix stream \
         socket; check `ListenStream=` in cairnd.socket"
    )
}

/// Whether `fd` is an open `AF_UNIX` `SOCK_STREAM` socket in the listening state.
fn is_unix_stream_listener(fd: RawFd) -> bool {
    let int_opt = |opt: libc::c_int| -> Option<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are valid for writes of the sizes given; a bad fd just fails.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&raw mut v).cast::<libc::c_void>(),
                &mut len,
            )
        };
        (r == 0).then_some(v)
    };
    int_opt(libc::SO_DOMAIN) == Some(libc::AF_UNIX)
        && int_opt(libc::SO_TYPE) == Some(libc::SOCK_STREAM)
        && int_opt(libc::SO_ACCEPTCONN) == Some(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_variables_for_another_process_are_ignored() {
        let other = (std::process::id() + 1).to_string();
        let got = activated_unix_from(|k| match k {
            "LISTEN_PID" => Some(other.clone()),
            "LISTEN_FDS" => Some("1".into()),
            _ => None,
        })
        .unwrap();
        assert!(got.is_none());
        assert!(activated_unix_from(|_| None).unwrap().is_none());
        let err = activated_unix_from(|k| match k {
            "LISTEN_PID" => Some("me".into()),
            _ => Some("1".into()),
        })
        .unwrap_err();
        assert!(err.to_string().contains("`me`"), "{err}");
    }
}
