//! Reading a build tree without following any symlink: every step is descriptor-relative.
//!
//! A build dir belongs to a user who may plant symlinks in it, and it is read by `cairnd` (a Unix-socket
//! publish, often as root) or by `cairn` itself (a publish over TCP streams what it reads). Both read
//! through [`Dir`], so the rules are written once:
//!
//! - [`Dir::open`] opens the named directory with `O_DIRECTORY|O_NOFOLLOW` (its last component must be
//!   a real directory; the components above it are the reader's own path, resolved with its rights);
//! - below it every component is opened with `openat(…, O_NOFOLLOW)` relative to its parent's
//!   descriptor ([`Dir::open_dir`], [`Dir::open_rel`], [`Dir::open_file`]), so swapping a directory for
//!   a symlink between listing and reading fails instead of escaping;
//! - a symlink found inside an artifact is reported by [`Dir::metadata`] as a symlink (never
//!   followed), and archived as one;
//! - [`Dir::open_file`] opens regular files only (`O_NONBLOCK`, so a planted FIFO cannot block).
//!
//! Whose rights the reads use is the caller's business (`cairnd`'s `buildtree.rs` takes a Unix-socket
//! peer's identity per thread).

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// An open directory of a build tree, with the path it was reached by (for messages only).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

fn cstring(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{}` contains a NUL byte", name.to_string_lossy()),
        )
    })
}

/// A single path component: not empty, no `/`, not `.` or `..`.
fn component(name: &OsStr) -> io::Result<CString> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "`{}` is not a single path component",
                name.to_string_lossy()
            ),
        ));
    }
    cstring(name)
}

/// An `openat` failure, explained: a symlink where a directory or file was expected is named as such.
fn explain(err: io::Error, path: &Path, want: &str) -> io::Error {
    let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    match err.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EMLINK) if is_link => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "`{}` is a symlink; publish never follows symlinks in the build dir: make it a real {want}",
                path.display()
            ),
        ),
        Some(libc::ENOTDIR) => io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("`{}` is not a {want}", path.display()),
        ),
        _ => io::Error::new(err.kind(), format!("`{}`: {err}", path.display())),
    }
}

impl Dir {
    /// Open the directory `path`; its last component must be a directory, not a symlink to one.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let c = cstring(path.as_os_str())?;
        // SAFETY: `c` is NUL-terminated; the returned fd is owned below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(explain(io::Error::last_os_error(), path, "directory"));
        }
        Ok(Dir {
            // SAFETY: `fd` is a fresh descriptor nobody else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_path_buf(),
        })
    }

    /// The path this directory was reached by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn openat(&self, name: &OsStr, flags: libc::c_int) -> io::Result<OwnedFd> {
        let c = component(name)?;
        // SAFETY: `c` is NUL-terminated and `self.fd` is open.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The child directory `name`, which must be a directory and not a symlink.
    pub fn open_dir(&self, name: &OsStr) -> io::Result<Dir> {
        let path = self.path.join(name);
        let fd = self
            .openat(name, libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|e| explain(e, &path, "directory"))?;
        Ok(Dir { fd, path })
    }

    /// The directory `rel` (components separated by `/`, any bytes but NUL) below this one, every
    /// component opened without following a symlink.
    pub fn open_rel(&self, rel: impl AsRef<[u8]>) -> io::Result<Dir> {
        let mut parts = rel.as_ref().split(|b| *b == b'/').filter(|p| !p.is_empty());
        let Some(first) = parts.next() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty relative path",
            ));
        };
        let mut dir = self.open_dir(OsStr::from_bytes(first))?;
        for part in parts {
            dir = dir.open_dir(OsStr::from_bytes(part))?;
        }
        Ok(dir)
    }

    /// The regular file `name` for reading; a symlink, FIFO, device or directory is refused.
    pub fn open_file(&self, name: &OsStr) -> io::Result<File> {
        let path = self.path.join(name);
        let fd = self
            .openat(name, libc::O_RDONLY | libc::O_NONBLOCK)
            .map_err(|e| explain(e, &path, "file"))?;
        let file = File::from(fd);
        if !file.metadata()?.file_type().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{}` is not a regular file", path.display()),
            ));
        }
        Ok(file)
    }

    /// The metadata of `name` itself (a symlink is described, not followed).
    pub fn metadata(&self, name: &OsStr) -> io::Result<fs::Metadata> {
        let path = self.path.join(name);
        let fd = self
            .openat(name, libc::O_PATH)
            .map_err(|e| io::Error::new(e.kind(), format!("`{}`: {e}", path.display())))?;
        File::from(fd).metadata()
    }

    /// The target of the symlink `name`.
    pub fn read_link(&self, name: &OsStr) -> io::Result<PathBuf> {
        let c = component(name)?;
        let mut buf = vec![0u8; 4096];
        // SAFETY: `c` is NUL-terminated, `buf` is writable for its length, `self.fd` is open.
        let n = unsafe {
            libc::readlinkat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        Ok(PathBuf::from(OsString::from_vec(buf)))
    }

    /// The names of the entries (without `.` and `..`), in no particular order.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        // SAFETY: duplicating an open descriptor.
        let dup = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `dup` is ours; on success `fdopendir` owns it and `closedir` closes it.
        let dirp = unsafe { libc::fdopendir(dup) };
        if dirp.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: `fdopendir` failed, so `dup` is still ours to close.
            unsafe { libc::close(dup) };
            return Err(e);
        }
        let mut out = Vec::new();
        // SAFETY: `dirp` is a valid stream until `closedir`; each `dirent` is read before the next
        // call to `readdir`.
        let result = unsafe {
            libc::rewinddir(dirp);
            loop {
                *libc::__errno_location() = 0;
                let ent = libc::readdir(dirp);
                if ent.is_null() {
                    let errno = *libc::__errno_location();
                    break if errno == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(errno))
                    };
                }
                let name = CStr::from_ptr((*ent).d_name.as_ptr()).to_bytes();
                if name != b"." && name != b".." {
                    out.push(OsString::from_vec(name.to_vec()));
                }
            }
        };
        // SAFETY: `dirp` came from `fdopendir` and is closed once.
        unsafe { libc::closedir(dirp) };
        result.map(|()| out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_are_described_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), b"s").unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("real")).unwrap();
        fs::write(root.join("real/f"), b"x").unwrap();
        symlink(&outside, root.join("link")).unwrap();
        symlink(outside.join("secret"), root.join("flink")).unwrap();

        let dir = Dir::open(&root).unwrap();
        let mut names = dir.names().unwrap();
        names.sort();
        assert_eq!(names, ["flink", "link", "real"]);
        assert!(dir.metadata(OsStr::new("link")).unwrap().is_symlink());
        assert_eq!(dir.read_link(OsStr::new("link")).unwrap(), outside);
        let err = dir.open_dir(OsStr::new("link")).unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
        let err = dir.open_file(OsStr::new("flink")).unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
        let err = dir.open_rel("link/secret").unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
        let err = Dir::open(&root.join("link")).unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
        assert!(dir.open_rel("real").is_ok());
        let mut f = dir
            .open_rel("real")
            .unwrap()
            .open_file(OsStr::new("f"))
            .unwrap();
        let mut s = String::new();
        io::Read::read_to_string(&mut f, &mut s).unwrap();
        assert_eq!(s, "x");
    }
}
