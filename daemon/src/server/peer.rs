//! The peer of a Unix-socket connection, read once when it is accepted: its uid and gid
//! (`SO_PEERCRED`) and its supplementary groups (`SO_PEERGROUPS`). A root daemon reads a caller's
//! build dir with exactly these ids (`crate::buildtree`), so a user whose access to a directory comes
//! from a secondary group can publish it, and no one gains a group they are not in.
//!
//! Both are the kernel's record of the connecting process at `connect` time; nothing the client
//! sends can change them.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

/// Who is on the other end of a Unix connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCredentials {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (may include the primary group).
    pub groups: Arc<[u32]>,
}

/// What a request on a Unix connection carries in its extensions: the peer, when the kernel told us.
#[derive(Debug, Clone)]
pub struct UnixPeer(pub Option<PeerCredentials>);

/// An accepted Unix connection with its peer read at accept.
#[derive(Debug)]
pub struct PeerStream {
    stream: UnixStream,
    peer: UnixPeer,
}

impl PeerStream {
    /// Wrap an accepted connection, reading its peer's credentials and groups.
    pub fn accept(stream: UnixStream) -> PeerStream {
        let peer = UnixPeer(credentials(&stream).ok());
        PeerStream { stream, peer }
    }
}

fn credentials(stream: &UnixStream) -> io::Result<PeerCredentials> {
    let cred = stream.peer_cred()?;
    let groups = peer_groups(stream.as_raw_fd())?;
    Ok(PeerCredentials {
        uid: cred.uid(),
        gid: cred.gid(),
        groups: groups.into(),
    })
}

/// `getsockopt(SO_PEERGROUPS)`: the buffer is grown when the kernel says it is too small.
fn peer_groups(fd: std::os::fd::RawFd) -> io::Result<Vec<u32>> {
    // Linux's value on every architecture Cairn builds for (x86_64, aarch64); see socket(7).
    const SO_PEERGROUPS: libc::c_int = 59;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is a writable buffer of `len` bytes, and `len` an in/out length.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && n > groups.len() {
            groups.resize(n, 0);
            continue;
        }
        return Err(err);
    }
}

impl tonic::transport::server::Connected for PeerStream {
    type ConnectInfo = UnixPeer;

    fn connect_info(&self) -> UnixPeer {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peer_reads_its_own_ids_and_groups() {
        let (a, _b) = UnixStream::pair().unwrap();
        let peer = PeerStream::accept(a).peer.0.expect("credentials");
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!((peer.uid, peer.gid), (uid, gid));
        // SAFETY: with size 0, getgroups only returns the count.
        let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        assert_eq!(peer.groups.len(), count as usize);
    }
}
