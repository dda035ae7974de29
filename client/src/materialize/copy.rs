//! Copy paths: how one blob becomes one destination file. Reflink (`FICLONE`) shares extents on
//! filesystems that support it (btrfs, XFS), `copy_file_range` copies in the kernel, a streamed
//! read/write loop works everywhere, and a hard link to the blob is used only when asked for (a build
//! that edits its tree in place would then edit the CAS).
//!
//! None of them reads a whole blob into memory: the read/write loop uses a fixed buffer.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_fingerprint::Blake3;

use super::{CopyMode, MaterializeError};

/// `FICLONE` from `linux/fs.h`: `_IOW(0x94, 9, int)`.
const FICLONE: libc::c_ulong = 0x4004_9409;

/// Read/write buffer size: large enough to amortize syscalls, small enough to keep memory bounded
/// with one buffer per worker thread.
const BUF_SIZE: usize = 256 * 1024;

/// Which copy path produced a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Reflink,
    CopyFileRange,
    ReadWrite,
    HardlinkBlob,
    /// Moved into place from a prestaged copy (`prestage.rs`).
    Prestaged,
}

/// Copies blobs according to a [`CopyMode`], remembering for the rest of the run when the
/// filesystem refused reflink or `copy_file_range`, so `Auto` does not retry a failing syscall per file.
pub(crate) struct Copier {
    mode: CopyMode,
    /// Set once `FICLONE` failed with "not supported": every later file skips straight to the next path.
    no_reflink: AtomicBool,
    /// Set once `copy_file_range` failed with "not supported" (e.g. across filesystems on old kernels).
    no_cfr: AtomicBool,
}

/// Errors from a copy path that mean "this path is unavailable here", not "this file failed".
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EOPNOTSUPP
                | libc::ENOTTY
                | libc::EXDEV
                | libc::EINVAL
                | libc::ENOSYS
                | libc::EPERM
                | libc::EBADF
        )
    )
}

impl Copier {
    pub(crate) fn new(mode: CopyMode) -> Copier {
        Copier {
            mode,
            no_reflink: AtomicBool::new(false),
            no_cfr: AtomicBool::new(false),
        }
    }

    /// Create `tmp` (which must not exist) with the content of `blob`, checked to be `size` bytes,
    /// and give it `mode`. `dest` names the destination in errors. On failure, a file this call
    /// created is removed; one it found already there is never touched.
    pub(crate) fn write(
        &self,
        blob: &Path,
        digest: &Blake3,
        size: u64,
        mode: u32,
        tmp: &Path,
        dest: &str,
    ) -> Result<Method, MaterializeError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| MaterializeError::Io { path, source }
        };
        let src = match File::open(blob) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(MaterializeError::BlobMissing {
                    digest: *digest,
                    path: dest.to_string(),
                });
            }
            Err(e) => return Err(io_err(blob)(e)),
        };
        let meta = src.metadata().map_err(io_err(blob))?;
        if !meta.is_file() || meta.len() != size {
            return Err(MaterializeError::BlobSize {
                digest: *digest,
                path: dest.to_string(),
                expected: size,
                actual: meta.len(),
            });
        }

        if self.mode == CopyMode::Hardlink {
            // The link shares the blob's inode, so its mode cannot be changed without changing the
            // CAS: link only when the blob already has the right execute bits, otherwise copy.
            if meta.permissions().mode() & 0o111 == mode & 0o111 {
                match std::fs::hard_link(blob, tmp) {
                    Ok(()) => return Ok(Method::HardlinkBlob),
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EXDEV | libc::EMLINK | libc::EPERM)
                        ) => {}
                    Err(e) => return Err(io_err(tmp)(e)),
                }
            }
        }

        // When the umask leaves `mode` intact, the file is created with it and needs no `fchmod`.
        let exact_at_create = mode & 0o7000 == 0 && mode & process_umask() == 0;
        // `create_new` is O_EXCL: it never opens, truncates or follows anything already there.
        let mut dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if exact_at_create { mode } else { 0o600 })
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(tmp)
            .map_err(io_err(tmp))?;
        let written = self
            .copy_content(&src, &mut dst, size, digest, dest)
            .map_err(|e| match e {
                CopyError::Io(source) => MaterializeError::Io {
                    path: tmp.to_path_buf(),
                    source,
                },
                CopyError::Other(e) => e,
            })
            .and_then(|method| {
                if !exact_at_create {
                    dst.set_permissions(std::fs::Permissions::from_mode(mode))
                        .map_err(io_err(tmp))?;
                }
                Ok(method)
            });
        if written.is_err() {
            // This call created the file, so it removes it: the caller may have no temp name to
            // clean up (a file written straight to its final name).
            let _ = std::fs::remove_file(tmp);
        }
        written
    }

    fn copy_content(
        &self,
        src: &File,
        dst: &mut File,
        size: u64,
        digest: &Blake3,
        dest: &str,
    ) -> Result<Method, CopyError> {
        let try_reflink = matches!(self.mode, CopyMode::Auto | CopyMode::Reflink)
            && !self.no_reflink.load(Ordering::Relaxed);
        if try_reflink && size > 0 {
            match reflink(src, dst) {
                Ok(()) => return Ok(Method::Reflink),
                Err(e) if unsupported(&e) => {
                    if self.mode == CopyMode::Reflink {
                        return Err(CopyError::Other(MaterializeError::Unsupported {
                            method: "reflink",
                            path: dest.to_string(),
                            source: e,
                        }));
                    }
                    self.no_reflink.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(CopyError::Io(e)),
            }
        } else if self.mode == CopyMode::Reflink && size > 0 {
            return Err(CopyError::Other(MaterializeError::Unsupported {
                method: "reflink",
                path: dest.to_string(),
                source: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
            }));
        }
        if self.mode == CopyMode::Reflink {
            // An empty file: nothing to clone.
            return Ok(Method::Reflink);
        }

        let try_cfr = matches!(
            self.mode,
            CopyMode::Auto | CopyMode::CopyFileRange | CopyMode::Hardlink
        ) && !self.no_cfr.load(Ordering::Relaxed);
        if try_cfr {
            match copy_file_range_all(src, dst, size) {
                Ok(n) if n == size => return Ok(Method::CopyFileRange),
                Ok(n) => {
                    return Err(CopyError::Other(MaterializeError::BlobSize {
                        digest: *digest,
                        path: dest.to_string(),
                        expected: size,
                        actual: n,
                    }));
                }
                // Only a failure before the first byte is "unsupported"; copy_file_range_all
                // reports later failures as plain I/O errors.
                Err(e) if unsupported(&e) => {
                    if self.mode == CopyMode::CopyFileRange {
                        return Err(CopyError::Other(MaterializeError::Unsupported {
                            method: "copy_file_range",
                            path: dest.to_string(),
                            source: e,
                        }));
                    }
                    self.no_cfr.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(CopyError::Io(e)),
            }
        }

        let n = read_write_copy(src, dst)?;
        if n != size {
            return Err(CopyError::Other(MaterializeError::BlobSize {
                digest: *digest,
                path: dest.to_string(),
                expected: size,
                actual: n,
            }));
        }
        Ok(Method::ReadWrite)
    }
}

enum CopyError {
    Io(io::Error),
    Other(MaterializeError),
}

impl From<io::Error> for CopyError {
    fn from(e: io::Error) -> Self {
        CopyError::Io(e)
    }
}

/// The process's umask, read once from `/proc/self/status` (`umask(2)` can only read it by
/// changing it, which would race with other threads creating files). Unknown counts as "strips
/// everything", which makes every write take the explicit `fchmod`.
pub(super) fn process_umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o777)
    })
}

fn reflink(src: &File, dst: &File) -> io::Result<()> {
    // SAFETY: FICLONE takes the source fd as its argument; both fds are open for the duration.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Copy up to `size` bytes with `copy_file_range`, returning how many were copied (fewer when the
/// source is shorter than expected). An error on the very first call is returned as is so the caller
/// can fall back; a later error is wrapped so it is never mistaken for "unsupported".
fn copy_file_range_all(src: &File, dst: &File, size: u64) -> io::Result<u64> {
    let mut done: u64 = 0;
    while done < size {
        let chunk = (size - done).min(1 << 30) as usize;
        // SAFETY: null offsets use and advance the fds' own file positions.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                dst.as_raw_fd(),
                std::ptr::null_mut(),
                chunk,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if done == 0 {
                return Err(e);
            }
            return Err(io::Error::other(e));
        }
        if n == 0 {
            if done == 0 {
                // The source was checked to hold `size` bytes, so copying nothing means this
                // filesystem pair does not really support the call (some FUSE and network
                // filesystems answer 0): let the caller fall back.
                return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
            }
            break;
        }
        done += n as u64;
    }
    Ok(done)
}

/// The portable path: a fixed-size buffer, never the whole blob. `std::io::copy` is avoided on
/// purpose because on Linux it silently uses `copy_file_range`/`sendfile`, and this is the path the
/// tests must be able to force.
fn read_write_copy(mut src: &File, dst: &mut File) -> io::Result<u64> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut total = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all(&buf[..n])?;
        total += n as u64;
    }
}
