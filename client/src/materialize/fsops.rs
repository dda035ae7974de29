//! Small filesystem operations that never follow a symlink: `lstat`, recursive removal, the
//! per-directory temp names that every write goes through.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// `lstat`, with "does not exist" as `None`.
pub(crate) fn lstat(p: &Path) -> io::Result<Option<Metadata>> {
    match fs::symlink_metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Give a directory owner read/write/search permission so its entries can be changed; a tree may
/// legitimately contain read-only directories (their final mode is restored at the end of a run).
pub(crate) fn make_dir_writable(p: &Path, m: &Metadata) -> io::Result<()> {
    let mode = m.permissions().mode();
    if mode & 0o700 != 0o700 {
        fs::set_permissions(p, fs::Permissions::from_mode((mode | 0o700) & 0o7777))?;
    }
    Ok(())
}

/// Remove `p` whatever it is, without following symlinks; returns how many non-directories went.
pub(crate) fn remove_any(p: &Path) -> io::Result<u64> {
    match lstat(p)? {
        None => Ok(0),
        Some(m) if m.is_dir() => remove_tree(p, &m),
        Some(_) => {
            fs::remove_file(p)?;
            Ok(1)
        }
    }
}

/// Remove a directory tree. Directory entries' types come from `readdir` (`d_type`), which does not
/// follow symlinks, so a symlink inside is unlinked and never descended into.
fn remove_tree(p: &Path, m: &Metadata) -> io::Result<u64> {
    make_dir_writable(p, m)?;
    let mut removed = 0;
    for entry in fs::read_dir(p)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            let m = fs::symlink_metadata(&path)?;
            removed += remove_tree(&path, &m)?;
        } else {
            fs::remove_file(&path)?;
            removed += 1;
        }
    }
    fs::remove_dir(p)?;
    Ok(removed)
}

/// Prefix of the temp names written next to their destination before the rename.
pub(crate) const TMP_PREFIX: &str = ".cairn-tmp.";

/// A fresh temp path in the directory of `final_path` (same filesystem, so `rename` is atomic).
pub(crate) fn tmp_path(final_path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{TMP_PREFIX}{}.{n}", std::process::id());
    match final_path.parent() {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}
