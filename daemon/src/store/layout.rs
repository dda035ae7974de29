//! The store's own paths, checked before use: everything `cairnd` creates under its root is a real
//! directory or a regular file, never a symlink.
//!
//! The store often belongs to root. A symlink planted inside it (`cas-v1/tmp -> /etc`, a shard
//! directory pointing elsewhere, a dangling `CACHEDIR.TAG -> /some/file`) would make the daemon
//! delete, write or create files through it. So at open every fixed path is examined with `lstat`
//! ([`ensure_dir`], [`ensure_file`]): a missing one is created, a symlink or a foreign file type is
//! corruption and the store refuses to open, naming the path and what to do. Nothing is ever
//! followed, and a refused store is left exactly as found for the operator to inspect.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What the path holds, in words, when it is not what the store expects.
fn describe(path: &Path, meta: &fs::Metadata) -> String {
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(path)
            .map(|t| format!(" to `{}`", t.display()))
            .unwrap_or_default();
        format!("a symlink{target}")
    } else if ft.is_dir() {
        "a directory".into()
    } else if ft.is_file() {
        "a regular file".into()
    } else if ft.is_fifo() {
        "a FIFO".into()
    } else if ft.is_socket() {
        "a socket".into()
    } else {
        "a device".into()
    }
}

/// The error for a store path that holds the wrong kind of thing.
pub fn tampered(path: &Path, found: &str, expected: &str) -> io::Error {
    io::Error::other(format!(
        "store path `{}` is {found}, where the store keeps {expected}; cairnd never follows a symlink \
         or uses a foreign file inside its store. Move it aside (`mv '{}' '{}.bad'`) and start \
         cairnd again: the store is a cache and rebuilds what it lacks",
        path.display(),
        path.display(),
        path.display()
    ))
}

/// Make sure `path` is a real directory: create it (as `fs::create_dir` would) when missing,
/// refuse a symlink or any other file type. Returns true when it was created.
pub fn ensure_dir(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => Ok(false),
        Ok(m) => Err(tampered(path, &describe(path, &m), "a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match fs::DirBuilder::new().mode(0o777).create(path) {
                Ok(()) => Ok(true),
                // Created concurrently: check what is there now.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => ensure_dir(path),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Make sure `path` is a regular file or absent (true when present); refuse a symlink (dangling or
/// not) or any other file type.
pub fn check_file(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(true),
        Ok(m) => Err(tampered(path, &describe(path, &m), "a regular file")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Make sure the regular file `path` exists, creating it with `content` (never through a symlink:
/// `O_EXCL|O_NOFOLLOW`) when missing.
pub fn ensure_file(path: &Path, content: &[u8]) -> io::Result<()> {
    if check_file(path)? {
        return Ok(());
    }
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    match file {
        Ok(mut f) => io::Write::write_all(&mut f, content),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => check_file(path).map(|_| ()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_and_foreign_types_are_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let link = tmp.path().join("link");
        symlink(&outside, &link).unwrap();
        let err = ensure_dir(&link).unwrap_err().to_string();
        assert!(err.contains("is a symlink to"), "{err}");
        assert!(err.contains("Move it aside"), "{err}");
        assert!(link.symlink_metadata().unwrap().is_symlink());

        let dangling = tmp.path().join("TAG");
        symlink(outside.join("nothing"), &dangling).unwrap();
        let err = ensure_file(&dangling, b"x").unwrap_err().to_string();
        assert!(err.contains("is a symlink"), "{err}");
        assert!(!outside.join("nothing").exists(), "nothing written through");

        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(
            ensure_dir(&file)
                .unwrap_err()
                .to_string()
                .contains("a regular file")
        );

        assert!(ensure_dir(&tmp.path().join("new")).unwrap());
        assert!(!ensure_dir(&tmp.path().join("new")).unwrap());
        ensure_file(&tmp.path().join("new/TAG"), b"tag").unwrap();
        assert_eq!(fs::read(tmp.path().join("new/TAG")).unwrap(), b"tag");
    }
}
