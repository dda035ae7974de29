//! The content-addressed blob store: decompressed archive members as read-only files named by the
//! BLAKE3 of their content, which we compute ourselves while writing.
//!
//! # On-disk layout (`cas-v1`)
//!
//! ```text
//! {store}/
//!   CACHEDIR.TAG            tells backup tools to skip the store
//!   index-v1.redb           the index (see `index.rs`)
//!   cas-v1/
//!     blobs/00/ … blobs/ff/ 256 shard directories, by the first byte of the digest
//!       ab/ab12…ef          one blob: the member's bytes, mode 0444, name = full 64-hex BLAKE3
//!     tmp/                  blobs being written, one directory per ingest (`ingest-…/`, see
//!                           [`Staging`]); anything here at open is debris from a crash
//!   quarantine/             blobs `verify` found corrupt, renamed to `{digest}.{unix-seconds}`
//!   scratch/publish-…/      one publish's archives (0700), removed after it and at open
//!   index-v1.redb.corrupt-… an index found corrupt at open, kept aside for inspection
//! ```
//!
//! None of these paths may be a symlink: they are checked with `lstat` at open (`layout.rs`).
//!
//! The version lives in the directory name: a format change moves to `cas-v2/` instead of
//! reinterpreting old files.
//!
//! # Durability
//!
//! A blob is written to a temp file in its ingest's own directory under `cas-v1/tmp/` (same file
//! system as `blobs/`; one directory per ingest because creating a file holds its directory's lock
//! while the file system allocates the inode, so concurrent ingests sharing one directory wait on
//! each other — 6–12% of a cold fetch's CPU spinning on that lock before), hashed on the way,
//! made read-only, then renamed to its final name. So a file under `blobs/` is complete as far as the
//! running system sees: a process crash leaves either no file or the whole one. Making it survive a
//! power loss is deferred (`flush.rs`): the ingest lists the blobs it wrote as unsynced in its index
//! commit, the flusher `fdatasync`s them ([`sync_staged`]'s way, through the `syncer` pool) and
//! fsyncs their shard directories ([`Cas::sync_shards`]) a moment later, and an open after an unclean
//! stop re-hashes what is still listed. [`Cas::write_blob`] (tools and tests) still syncs inline.
//!
//! A file already at a blob's name is used instead of writing only when the caller trusts it (the
//! index names it, see [`Cas::stage_blob`]); otherwise the new copy replaces it. Concurrent writers of
//! the same content are therefore safe too: both hash, both rename, the content is the same.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cairn_fingerprint::Blake3;

use super::layout;

/// Members at most this large are read into memory before anything touches the disk, so a blob the
/// store already holds costs no write at all (the common case on re-ingest).
const SMALL_BLOB: u64 = 1 << 20;

/// Copy buffer for large members.
const COPY_BUF: usize = 256 * 1024;

/// The blob directory tree under a store root. See the module docs for the layout.
#[derive(Debug, Clone)]
pub struct Cas {
    blobs: PathBuf,
    /// `blobs/` held open: presence checks `fstatat` `ab/{hex}` relative to it, two path
    /// components instead of the whole store path (each component is a dentry-hash lookup, and
    /// a warm fetch checks tens of thousands of blobs).
    blobs_dir: std::sync::Arc<fs::File>,
    tmp: PathBuf,
}

/// One ingest's temp directory under `cas-v1/tmp/`, removed with what is left in it when dropped.
/// Its staged blobs must be published or dropped before it.
#[derive(Debug)]
pub struct Staging {
    dir: tempfile::TempDir,
}

/// A blob written to a closed temp file by [`Cas::stage_blob`]: not yet durable, not yet visible.
/// Dropping it deletes the temp file.
#[derive(Debug)]
pub struct StagedBlob {
    /// BLAKE3 of the content.
    pub digest: Blake3,
    /// Content length.
    pub size: u64,
    tmp: tempfile::TempPath,
}

impl StagedBlob {
    /// The temp file's path.
    pub fn path(&self) -> &Path {
        &self.tmp
    }
}

/// What [`Cas::stage_blob`] found.
#[derive(Debug)]
pub enum Staged {
    /// The store already holds this blob; nothing was written.
    Present {
        /// BLAKE3 of the content.
        digest: Blake3,
        /// Content length.
        size: u64,
    },
    /// New content, staged.
    New(StagedBlob),
}

/// Make a staged blob's content durable (`fdatasync` through a fresh read-only descriptor: the data
/// belongs to the inode, not to the descriptor that wrote it).
pub fn sync_staged(staged: &StagedBlob) -> io::Result<()> {
    File::open(staged.path())?.sync_data()
}

/// What [`Cas::write_blob`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenBlob {
    /// BLAKE3 of the content.
    pub digest: Blake3,
    /// Content length.
    pub size: u64,
    /// True when this call created the blob file; false when it already existed.
    pub created: bool,
}

impl Cas {
    /// Open (creating if needed) the `cas-v1` tree under `store_root` and remove temp-file debris.
    ///
    /// The caller must hold the store's exclusive lock (the index's file lock): another process's
    /// in-progress temp files would otherwise be deleted.
    pub fn open(store_root: &Path) -> io::Result<Cas> {
        let root = store_root.join("cas-v1");
        let blobs = root.join("blobs");
        let tmp = root.join("tmp");
        // Every fixed path is checked with lstat: a symlink or foreign file type is refused, never
        // followed (`layout.rs`), so the cleanup below cannot delete through a planted link.
        layout::ensure_dir(&root)?;
        layout::ensure_dir(&blobs)?;
        layout::ensure_dir(&tmp)?;
        let mut created_shard = false;
        for b in 0..=255u8 {
            let shard = blobs.join(hex::encode([b]));
            created_shard |= layout::ensure_dir(&shard)?;
        }
        if created_shard {
            sync_dir(&blobs)?;
            sync_dir(&root)?;
        }
        for entry in fs::read_dir(&tmp)? {
            let entry = entry?;
            // Debris of a killed writer: never renamed, so nothing references it. An ingest's
            // directory goes whole (`remove_dir_all` never follows a symlink inside it).
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => {
                    let _ = fs::remove_dir_all(&path);
                }
                _ => {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let blobs_dir = std::sync::Arc::new(
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(&blobs)?,
        );
        Ok(Cas {
            blobs,
            blobs_dir,
            tmp,
        })
    }

    /// The `blobs/` directory.
    pub fn blobs_dir(&self) -> &Path {
        &self.blobs
    }

    /// The `tmp/` directory ingests stage in.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Where the blob `digest` lives (whether or not it is present).
    pub fn blob_path(&self, digest: &Blake3) -> PathBuf {
        let hex = digest.to_hex();
        self.blobs.join(&hex[..2]).join(hex)
    }

    /// The shard directory (`blobs/ab`) of a digest.
    fn shard_of(&self, digest: &Blake3) -> u8 {
        digest.0[0]
    }

    /// True when the blob file exists with exactly `size` bytes (a cheap check, no re-hash).
    pub fn contains(&self, digest: &Blake3, size: u64) -> bool {
        use std::os::fd::AsRawFd;
        // "ab/{64 hex}\0", relative to `blobs/`.
        let mut rel = [0u8; 68];
        let mut hex = [0u8; 64];
        digest.hex_into(&mut hex);
        rel[..2].copy_from_slice(&hex[..2]);
        rel[2] = b'/';
        rel[3..67].copy_from_slice(&hex);
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `rel` is NUL-terminated, `st` is a valid out-pointer, the fd is open for `self`'s
        // lifetime.
        let rc = unsafe {
            libc::fstatat(
                self.blobs_dir.as_raw_fd(),
                rel.as_ptr().cast(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return false;
        }
        // SAFETY: fstatat succeeded, so it filled `st`.
        let st = unsafe { st.assume_init() };
        st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size as u64 == size
    }

    /// Store the `size` bytes read from `src` as a blob, durably: [`Cas::stage_blob`], then
    /// [`sync_staged`], then [`Cas::publish`]. `pin` and `touched` are as there.
    pub fn write_blob(
        &self,
        src: &mut dyn Read,
        size: u64,
        pin: &mut dyn FnMut(&Blake3),
        touched: &mut BTreeSet<u8>,
    ) -> io::Result<WrittenBlob> {
        let staging = self.staging()?;
        match self.stage_blob(&staging, src, size, pin, &|_| true)? {
            Staged::Present { digest, size } => Ok(WrittenBlob {
                digest,
                size,
                created: false,
            }),
            Staged::New(staged) => {
                sync_staged(&staged)?;
                let (digest, size) = (staged.digest, staged.size);
                let created = self.publish(staged, touched)?;
                Ok(WrittenBlob {
                    digest,
                    size,
                    created,
                })
            }
        }
    }

    /// Read `size` bytes from `src`, hash them, and, unless the store already holds that blob, write
    /// them to a closed temp file (not yet durable, not yet visible under `blobs/`).
    ///
    /// `pin` is called with the digest as soon as it is known and before the store is checked for an
    /// existing copy: the caller leases the blob there, so eviction cannot delete an existing copy
    /// between "it exists, skip the write" and the index transaction that references it.
    ///
    /// An existing file is used only when `trusted` says so for its digest (the index names it): a
    /// file nothing names may be the torn leftover of an ingest that died before its commit and
    /// before the flusher synced it, so it is written again (and [`Cas::publish`] replaces it).
    ///
    /// Returns an error of kind `UnexpectedEof` when `src` ends before `size` bytes; errors from `src`
    /// are returned unchanged so the caller can tell read failures from write failures.
    pub fn stage_blob(
        &self,
        staging: &Staging,
        src: &mut dyn Read,
        size: u64,
        pin: &mut dyn FnMut(&Blake3),
        trusted: &dyn Fn(&Blake3) -> bool,
    ) -> io::Result<Staged> {
        if size <= SMALL_BLOB {
            let mut buf = Vec::with_capacity(size as usize);
            src.take(size).read_to_end(&mut buf)?;
            if (buf.len() as u64) < size {
                return Err(truncated(size, buf.len() as u64));
            }
            let digest = Blake3::of(&buf);
            pin(&digest);
            if trusted(&digest) && self.contains(&digest, size) {
                return Ok(Staged::Present { digest, size });
            }
            let mut tmp = staging.temp_file()?;
            tmp.as_file_mut().write_all(&buf)?;
            return self.close_staged(tmp, digest, size);
        }

        let mut tmp = staging.temp_file()?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; COPY_BUF];
        let mut left = size;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = match src.read(&mut buf[..want]) {
                Ok(0) => return Err(truncated(size, size - left)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            tmp.as_file_mut().write_all(&buf[..n])?;
            left -= n as u64;
        }
        let digest: Blake3 = hasher.finalize().into();
        pin(&digest);
        if trusted(&digest) && self.contains(&digest, size) {
            return Ok(Staged::Present { digest, size });
        }
        self.close_staged(tmp, digest, size)
    }

    /// A temp directory for one ingest's staged blobs (see [`Staging`]).
    pub fn staging(&self) -> io::Result<Staging> {
        let dir = tempfile::Builder::new()
            .prefix("ingest-")
            .tempdir_in(&self.tmp)?;
        Ok(Staging { dir })
    }

    /// Make the temp file read-only and close it (an ingest may stage thousands; only paths are
    /// kept, so open files stay few).
    fn close_staged(
        &self,
        tmp: tempfile::NamedTempFile,
        digest: Blake3,
        size: u64,
    ) -> io::Result<Staged> {
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o444))?;
        Ok(Staged::New(StagedBlob {
            digest,
            size,
            tmp: tmp.into_temp_path(),
        }))
    }

    /// Rename a staged blob to its final name, replacing whatever file is there: the staged copy is
    /// complete and hashed by us, while an existing file may be the unsynced leftover of an ingest
    /// that died (see [`Cas::stage_blob`]), and a concurrent writer's copy has the same content.
    /// `touched` collects the shard, for [`Cas::sync_shards`]. Returns true (the blob file is ours).
    pub fn publish(&self, staged: StagedBlob, touched: &mut BTreeSet<u8>) -> io::Result<bool> {
        let StagedBlob { digest, tmp, .. } = staged;
        let dest = self.blob_path(&digest);
        tmp.persist(&dest).map_err(|e| e.error)?;
        touched.insert(self.shard_of(&digest));
        Ok(true)
    }

    /// fsync the shard directories renames went into, making those renames durable. Several at once:
    /// an ingest of thousands of files touches all 256 shards.
    pub fn sync_shards(&self, touched: &BTreeSet<u8>) -> io::Result<()> {
        let dirs: Vec<PathBuf> = touched
            .iter()
            .map(|s| self.blobs.join(hex::encode([*s])))
            .collect();
        let per_thread = dirs.len().div_ceil(16).max(1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = dirs
                .chunks(per_thread)
                .map(|chunk| scope.spawn(move || chunk.iter().try_for_each(|d| sync_dir(d))))
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        })
    }

    /// Delete a blob file. A missing file is not an error.
    pub fn remove_blob(&self, digest: &Blake3) -> io::Result<()> {
        match fs::remove_file(self.blob_path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every file under `blobs/`: `(Some(digest), path)` for well-named blobs, `(None, path)` for
    /// anything else (stray files a person or another tool left there).
    pub fn list(&self) -> io::Result<Vec<(Option<Blake3>, PathBuf)>> {
        let mut out = Vec::new();
        for b in 0..=255u8 {
            let shard_name = hex::encode([b]);
            let shard = self.blobs.join(&shard_name);
            let entries = match fs::read_dir(&shard) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name();
                let digest = name
                    .to_str()
                    .and_then(|n| n.parse::<Blake3>().ok())
                    .filter(|d| d.0[0] == b);
                out.push((digest, entry.path()));
            }
        }
        Ok(out)
    }
}

impl Staging {
    fn temp_file(&self) -> io::Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(self.dir.path())
    }
}

/// BLAKE3 and length of a file's content.
pub fn hash_file(path: &Path) -> io::Result<(Blake3, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let n = io::copy(&mut file, &mut hasher)?;
    Ok((hasher.finalize().into(), n))
}

/// fsync a directory so renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    OpenOptions::new().read(true).open(dir)?.sync_all()
}

fn truncated(expected: u64, got: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("member ended after {got} of {expected} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_and_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let big: Vec<u8> = (0..3 * SMALL_BLOB as usize)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        for content in [b"hello".to_vec(), big] {
            let mut touched = BTreeSet::new();
            let mut pinned = Vec::new();
            let w = cas
                .write_blob(
                    &mut &content[..],
                    content.len() as u64,
                    &mut |d| pinned.push(*d),
                    &mut touched,
                )
                .unwrap();
            assert!(w.created);
            assert_eq!(pinned, vec![w.digest]);
            assert_eq!(w.digest, Blake3::of(&content));
            let path = cas.blob_path(&w.digest);
            assert_eq!(fs::read(&path).unwrap(), content);
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o444
            );
            let again = cas
                .write_blob(
                    &mut &content[..],
                    content.len() as u64,
                    &mut |_| {},
                    &mut touched,
                )
                .unwrap();
            assert!(!again.created);
            cas.sync_shards(&touched).unwrap();
        }
        assert_eq!(
            fs::read_dir(dir.path().join("cas-v1/tmp")).unwrap().count(),
            0
        );
        assert_eq!(cas.list().unwrap().len(), 2);
    }

    /// Debris of killed ingests (their directories, loose temp files) is removed at open; a
    /// symlink planted in `tmp/` is removed, never followed.
    #[test]
    fn open_removes_staging_debris_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let staging = cas.staging().unwrap();
        let staged = cas
            .stage_blob(&staging, &mut &b"half"[..], 4, &mut |_| {}, &|_| false)
            .unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"keep").unwrap();
        let tmp = dir.path().join("cas-v1/tmp");
        std::os::unix::fs::symlink(&outside, tmp.join("ingest-link")).unwrap();
        fs::write(tmp.join("blob-loose"), b"x").unwrap();
        // A killed daemon drops nothing: its staging dir and blob stay behind.
        std::mem::forget(staged);
        std::mem::forget(staging);
        drop(cas);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 3);

        Cas::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
        assert_eq!(fs::read(outside.join("keep")).unwrap(), b"keep");
    }

    /// Concurrent ingests stage in directories of their own, and each is gone with its `Staging`.
    #[test]
    fn each_staging_has_its_own_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let (a, b) = (cas.staging().unwrap(), cas.staging().unwrap());
        let sa = cas
            .stage_blob(&a, &mut &b"aaaa"[..], 4, &mut |_| {}, &|_| false)
            .unwrap();
        let sb = cas
            .stage_blob(&b, &mut &b"bbbb"[..], 4, &mut |_| {}, &|_| false)
            .unwrap();
        let (Staged::New(sa), Staged::New(sb)) = (sa, sb) else {
            panic!("new content is staged");
        };
        assert_ne!(sa.path().parent(), sb.path().parent());
        assert_eq!(sa.path().parent().unwrap().parent().unwrap(), cas.tmp_dir());
        drop(sa);
        drop(a);
        drop(sb);
        drop(b);
        assert_eq!(fs::read_dir(cas.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn short_source_is_an_eof_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        for size in [10, 2 * SMALL_BLOB] {
            let err = cas
                .write_blob(&mut &b"abc"[..], size, &mut |_| {}, &mut BTreeSet::new())
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        }
        assert!(cas.list().unwrap().is_empty());
        assert_eq!(
            fs::read_dir(dir.path().join("cas-v1/tmp")).unwrap().count(),
            0
        );
    }
}
