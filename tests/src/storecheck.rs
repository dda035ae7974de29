//! Checks over a local store that several tests share: compare a tree with what the system `tar`
//! extracts from the same archive, list blob files, and check that every index entry resolves.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use cairn_daemon::store::LocalStore;
use cairn_fingerprint::tree::{EntryKind, escape_bytes};
use cairn_fingerprint::{Compression, Tree};

/// Every file under the store's `cas-v1/blobs/`, sorted.
pub fn blob_files(store_root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let blobs = store_root.join("cas-v1/blobs");
    let Ok(shards) = fs::read_dir(&blobs) else {
        return out;
    };
    for shard in shards.flatten() {
        for f in fs::read_dir(shard.path()).into_iter().flatten().flatten() {
            out.push(f.path());
        }
    }
    out.sort();
    out
}

/// Extract `archive` into `dest` with the system `tar` (GNU tar, decompressor named explicitly).
///
/// # Panics
/// When `tar` fails: the archive under test must be one `tar` accepts.
pub fn tar_extract(archive: &Path, compression: Compression, dest: &Path) {
    // zstd with `--long=31` so archives written with long-distance windows extract too.
    let program = match compression {
        Compression::Zstd => "zstd -d --long=31",
        Compression::Xz => "xz -d",
    };
    cairn_test_helpers::archives::untar_with_system_tar(archive, program, dest);
}

/// Compare `tree` (whose blobs are in `store`) with the directory `tar -x` produced from the same
/// archive: the same set of paths (apart from the relpaths' parent directories, which tar creates
/// implicitly), and per entry the kind, permission bits, file bytes (against the CAS blob), symlink
/// target, and for hard links the shared inode. Returns every difference.
pub fn diff_tree_with_dir(store: &LocalStore, tree: &Tree, dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut on_disk = BTreeSet::new();
    walk(dir, dir, &mut on_disk);
    // Names are compared as bytes: one that is not UTF-8 must be exactly what tar wrote.
    let in_tree: BTreeSet<Vec<u8>> = tree
        .entries
        .iter()
        .map(|e| e.path.as_bytes().to_vec())
        .collect();
    for extra in on_disk.difference(&in_tree) {
        let implicit = tree.manifest.iter().any(|r| {
            let r = r.as_bytes();
            r == extra.as_slice() || (r.starts_with(extra) && r.get(extra.len()) == Some(&b'/'))
        });
        if !implicit {
            problems.push(format!(
                "`{}` extracted by tar but not in the tree",
                escape_bytes(extra)
            ));
        }
    }
    for missing in in_tree.difference(&on_disk) {
        problems.push(format!(
            "`{}` in the tree but not extracted by tar",
            escape_bytes(missing)
        ));
    }
    for e in &tree.entries {
        let path = dir.join(e.path.to_path());
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let mode = meta.mode() & 0o7777;
        match e.kind {
            EntryKind::File => {
                if !meta.is_file() {
                    problems.push(format!("`{}` is not a regular file on disk", e.path));
                    continue;
                }
                if mode != e.mode {
                    problems.push(format!(
                        "`{}` mode {:o} on disk, {:o} in tree",
                        e.path, mode, e.mode
                    ));
                }
                let digest = e.blake3.expect("file entries have a digest");
                match store.blob_file(&digest) {
                    Ok(blob) => {
                        if fs::read(&blob).ok() != fs::read(&path).ok() {
                            problems.push(format!("`{}` differs from blob {digest}", e.path));
                        }
                    }
                    Err(err) => problems.push(format!("`{}`: {err}", e.path)),
                }
                if meta.len() != e.size {
                    problems.push(format!(
                        "`{}` size {} on disk, {} in tree",
                        e.path,
                        meta.len(),
                        e.size
                    ));
                }
            }
            EntryKind::Dir => {
                if !meta.is_dir() {
                    problems.push(format!("`{}` is not a directory on disk", e.path));
                } else if mode != e.mode {
                    problems.push(format!(
                        "`{}` mode {:o} on disk, {:o} in tree",
                        e.path, mode, e.mode
                    ));
                }
            }
            EntryKind::Symlink => {
                let target = fs::read_link(&path).ok();
                if target.as_deref() != e.link_target.as_ref().map(|t| t.to_path()) {
                    problems.push(format!(
                        "`{}` links to {:?} on disk, {:?} in tree",
                        e.path, target, e.link_target
                    ));
                }
            }
            EntryKind::Hardlink => {
                let target = dir.join(
                    e.link_target
                        .as_ref()
                        .expect("hard links have a target")
                        .to_path(),
                );
                let same = fs::metadata(&target)
                    .is_ok_and(|t| t.ino() == meta.ino() && t.dev() == meta.dev());
                if !same {
                    problems.push(format!(
                        "`{}` is not a hard link to {:?} on disk",
                        e.path, e.link_target
                    ));
                }
            }
        }
    }
    problems
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<Vec<u8>>) {
    for entry in fs::read_dir(dir).expect("read extracted dir").flatten() {
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .expect("below root")
            .as_os_str()
            .as_bytes()
            .to_vec();
        out.insert(rel);
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &path, out);
        }
    }
}

/// Check that every index entry resolves: each key and archive names a stored tree, and each stored
/// tree's blobs are all present, and each blob entry's file exists with the recorded size. The tree
/// check assumes nothing was evicted (eviction legitimately leaves trees without blobs). Returns every
/// failure.
pub fn index_problems(store: &LocalStore) -> Vec<String> {
    let mut problems = Vec::new();
    let index = store.index();
    for (key, _, tree) in index.keys().expect("read keys") {
        if store.tree(&tree).expect("read tree").is_none() {
            problems.push(format!("key `{key}` names missing tree {tree}"));
        }
    }
    for (archive, tree) in index.archives().expect("read archives") {
        if store.tree(&tree).expect("read tree").is_none() {
            problems.push(format!("archive {archive} names missing tree {tree}"));
        }
    }
    for (digest, record) in index.blobs().expect("read blobs") {
        let path = store.blob_path(&digest);
        match fs::metadata(&path) {
            Ok(m) if m.len() == record.size => {}
            Ok(m) => problems.push(format!(
                "blob {digest}: {} bytes on disk, {} indexed",
                m.len(),
                record.size
            )),
            Err(e) => problems.push(format!("blob {digest}: {e}")),
        }
    }
    for digest in index.tree_digests().expect("read trees") {
        let tree = store.tree(&digest).expect("read tree").expect("listed");
        if !store.has_blobs(&tree).expect("has_blobs") {
            problems.push(format!("tree {digest} has blobs missing from the index"));
        }
    }
    problems
}
