//! Binding the daemon's sockets. The Unix socket is the access control: its directory is created
//! `0700` when we create it, and the socket itself is `0600` (owner only) or `0660` (owner and group,
//! for CI runner containers sharing one daemon through a socket mount).

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
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
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
