//! Binding the daemon's sockets. The Unix socket is the access control: its directory is created
//! `0700` (`0750` for a group-accessible socket) when we create it, and the socket itself is `0600` (owner only) or `0660` (owner and group,
//! for CI runner containers sharing one daemon through a socket mount).
//!
//! Under systemd socket activation (`cairnd.socket`) the socket is bound by systemd and passed to us as
//! fd 3 (the `sd_listen_fds` protocol: `LISTEN_PID` is our pid, `LISTEN_FDS` counts the fds from 3);
//! systemd then owns the socket file, its mode and its group.

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Bind `path` as a Unix socket with `mode` (0o600 or 0o660). A stale socket left by a killed daemon is
/// replaced; a socket some live daemon still answers on is an error naming it; anything at `path`
/// that is not a socket is never removed. The socket's directory is created (0700, 0750 with group
/// access) or must pass [`check_socket_dir`].
pub async fn bind_unix(path: &Path, mode: u32) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if std::fs::symlink_metadata(dir).is_err() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating socket directory `{}`", dir.display()))?;
            // A group-accessible socket is useless in a directory the group cannot traverse.
            let dir_mode = if mode & 0o070 != 0 { 0o750 } else { 0o700 };
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode))
                .with_context(|| format!("restricting `{}`", dir.display()))?;
        }
        check_socket_dir(dir, mode & 0o070 != 0)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                bail!(
                    "another cairnd is already listening on `{}`",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket `{}`", path.display()))?;
        }
        Ok(meta) => bail!(
            "`{}` exists and is not a socket ({}); refusing to remove it: pass another --socket or \
             move the file away",
            path.display(),
            file_kind(&meta)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting `{}`", path.display())),
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

/// The socket directory must be a real directory (checked with `lstat`: not a symlink) owned by the
/// daemon's uid with mode 0700, or 0750 when the socket is group-accessible (`group_access`):
/// nobody else may write it (they could move the socket away or put one of their own in its
/// place) and nobody outside the group may enter it. A directory Cairn creates gets exactly that
/// mode ([`bind_unix`]); one given by the operator with looser bits is refused with the `chmod`
/// that fixes it.
pub fn check_socket_dir(dir: &Path, group_access: bool) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir)
        .with_context(|| format!("inspecting socket directory `{}`", dir.display()))?;
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    if !meta.file_type().is_dir() {
        bail!(
            "socket directory `{}` is a {}, not a directory; refusing to serve there",
            dir.display(),
            file_kind(&meta)
        );
    }
    if meta.uid() != euid {
        bail!(
            "socket directory `{}` belongs to uid {}, not to cairnd's uid {euid}; another user could \
             replace the socket: use a directory of your own (e.g. --socket $XDG_RUNTIME_DIR/cairn/cairnd.sock)",
            dir.display(),
            meta.uid()
        );
    }
    let (forbidden, wanted) = if group_access {
        (0o027, "0750")
    } else {
        (0o077, "0700")
    };
    if meta.mode() & forbidden != 0 {
        let who = if meta.mode() & 0o022 != 0 {
            "writable by group or others, who could replace the socket"
        } else if group_access {
            "open to users outside the socket's group"
        } else {
            "open to other users"
        };
        bail!(
            "socket directory `{}` has mode {:o}, {who}; it must be {wanted}{}; hint: chmod {wanted} \
             `{}`, or name a socket in a directory that does not exist yet (cairnd creates it {wanted})",
            dir.display(),
            meta.mode() & 0o7777,
            if group_access {
                " (--group-access)"
            } else {
                ""
            },
            dir.display()
        );
    }
    Ok(())
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "symlink"
    } else if t.is_dir() {
        "directory"
    } else if t.is_file() {
        "regular file"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
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

    /// A temporary directory a socket may be bound in: 0700, whatever the umask or `TMPDIR` give.
    fn private_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_regular_file_at_the_socket_path_is_never_removed() {
        let dir = private_dir();
        let path = dir.path().join("cairnd.sock");
        std::fs::write(&path, b"precious").unwrap();
        let err = bind_unix(&path, 0o600).await.unwrap_err();
        assert!(format!("{err:#}").contains("is not a socket"), "{err:#}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = private_dir();
        let path = dir.path().join("cairnd.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let live = bind_unix(&path, 0o600)
            .await
            .expect("a stale socket is replaced");
        let err = bind_unix(&path, 0o600).await.unwrap_err();
        assert!(format!("{err:#}").contains("already listening"), "{err:#}");
        drop(live);
    }

    #[tokio::test]
    async fn a_socket_dir_others_can_write_or_a_symlinked_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = bind_unix(&open.join("s.sock"), 0o600).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("writable by group or others"),
            "{err:#}"
        );
        assert!(!open.join("s.sock").exists());

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let err = bind_unix(&link.join("s.sock"), 0o600).await.unwrap_err();
        assert!(format!("{err:#}").contains("not a directory"), "{err:#}");

        let created = dir.path().join("new/deeper");
        bind_unix(&created.join("s.sock"), 0o600).await.unwrap();
        let mode = std::fs::metadata(&created).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let grouped = dir.path().join("grouped");
        bind_unix(&grouped.join("s.sock"), 0o660).await.unwrap();
        let mode = std::fs::metadata(&grouped).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o750);
    }

    #[tokio::test]
    async fn a_socket_dir_must_be_0700_or_0750_with_group_access() {
        let dir = tempfile::tempdir().unwrap();
        // (directory mode, socket mode, accepted)
        for (dir_mode, sock_mode, ok) in [
            (0o700, 0o600, true),
            (0o755, 0o600, false),
            (0o750, 0o600, false),
            (0o711, 0o600, false),
            (0o750, 0o660, true),
            (0o700, 0o660, true),
            (0o755, 0o660, false),
            (0o770, 0o660, false),
        ] {
            let d = dir.path().join(format!("d{dir_mode:o}-{sock_mode:o}"));
            std::fs::create_dir(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(dir_mode)).unwrap();
            let got = bind_unix(&d.join("s.sock"), sock_mode).await;
            assert_eq!(
                got.is_ok(),
                ok,
                "dir {dir_mode:o}, socket {sock_mode:o}: {got:?}"
            );
            if let Err(e) = got {
                let msg = format!("{e:#}");
                assert!(msg.contains("hint: chmod 07"), "{msg}");
                assert!(!d.join("s.sock").exists());
            }
        }
    }

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
