//! Reading a caller's build tree with the caller's rights.
//!
//! Publish over the Unix socket reads a directory the client names. `cairnd` often runs as root, so
//! the reads go through [`Dir`] (`cairn_fingerprint::nofollow`: descriptor-relative, no symlink
//! followed, regular files only; the same reader `cairn` uses when it streams a publish over TCP)
//! and run on threads with the caller's identity:
//!
//! [`par_map_as`] runs the reads on fresh threads that first take the caller's filesystem identity
//! (`setfsuid`/`setfsgid`, and the thread's supplementary groups set to the caller's, from
//! `SO_PEERGROUPS`, all per-thread on Linux; the raw `setgroups` syscall is used because glibc's wrapper changes every
//! thread). A root daemon thus reads exactly what the peer of its Unix socket could read itself.
//! Those threads end with the work, so no thread of a shared pool ever carries a foreign identity.
//! Only reads happen there: output files are created beforehand by the daemon, in its own store.

pub use cairn_fingerprint::nofollow::Dir;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Whose rights build-tree reads are performed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsIdentity {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (`SO_PEERGROUPS`); empty means the primary group alone.
    pub groups: std::sync::Arc<[u32]>,
}

/// Take `id` as this thread's filesystem identity. Only for threads that end with their work.
fn assume(id: &FsIdentity) -> io::Result<()> {
    let groups: Vec<libc::gid_t> = if id.groups.is_empty() {
        vec![id.gid]
    } else {
        id.groups.to_vec()
    };
    // SAFETY: the raw syscall changes only the calling thread's supplementary groups; `groups` is a
    // valid array of `groups.len()` gids.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "cannot take the groups of uid {}: {}",
                id.uid,
                io::Error::last_os_error()
            ),
        ));
    }
    // SAFETY: setfsgid/setfsuid affect only the calling thread; an invalid id (-1) changes nothing and
    // returns the current value, which is how success is checked.
    let (gid, uid) = unsafe {
        libc::setfsgid(id.gid);
        let gid = libc::setfsgid(u32::MAX) as u32;
        libc::setfsuid(id.uid);
        let uid = libc::setfsuid(u32::MAX) as u32;
        (gid, uid)
    };
    if gid != id.gid || uid != id.uid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "cannot take the filesystem identity uid {} gid {} (got {uid}/{gid})",
                id.uid, id.gid
            ),
        ));
    }
    Ok(())
}

/// True when build-tree reads for `id` need a change of identity: this process is root and `id` is
/// not.
pub fn needs_identity(id: Option<&FsIdentity>) -> bool {
    // SAFETY: geteuid cannot fail.
    id.is_some_and(|id| id.uid != 0 && unsafe { libc::geteuid() } == 0)
}

/// Map `items` through `f` on up to `threads` fresh threads, each of which first takes `id` as its
/// filesystem identity (when [`needs_identity`]). Results keep the order of `items`.
pub fn par_map_as<I, T, F>(
    id: Option<FsIdentity>,
    items: Vec<I>,
    threads: usize,
    f: F,
) -> io::Result<Vec<T>>
where
    I: Send,
    T: Send,
    F: Fn(I) -> T + Sync,
{
    let n = items.len();
    let switch = needs_identity(id.as_ref());
    let queue: Vec<Mutex<Option<I>>> = items.into_iter().map(|i| Mutex::new(Some(i))).collect();
    let results: Vec<Mutex<Option<T>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let workers = threads.clamp(1, n.max(1));
    std::thread::scope(|scope| -> io::Result<()> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> io::Result<()> {
                    if switch {
                        assume(id.as_ref().expect("checked by needs_identity"))?;
                    }
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(());
                        }
                        let item = queue[i].lock().expect("not poisoned").take();
                        if let Some(item) = item {
                            let r = f(item);
                            *results[i].lock().expect("not poisoned") = Some(r);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        }
        Ok(())
    })?;
    Ok(results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .expect("not poisoned")
                .expect("every item mapped")
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_map_keeps_order() {
        let out = par_map_as(None, (0..50).collect(), 4, |i: u32| i * 2).unwrap();
        assert_eq!(out, (0..50).map(|i| i * 2).collect::<Vec<_>>());
    }
}
