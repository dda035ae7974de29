//! The store's index, in one redb file (`index-v1.redb`). This module is the only one that imports
//! redb.
//!
//! # Tables
//!
//! | table       | key                          | value                                   |
//! |-------------|------------------------------|-----------------------------------------|
//! | `archives`  | archive SHA-256              | tree digest                             |
//! | `keys`      | archive key (storage key)    | (archive SHA-256, tree digest)          |
//! | `trees`     | tree digest                  | tree manifest JSON (`Tree::to_json`)    |
//! | `blobs-v2`  | blob BLAKE3                  | [`BlobRecord`]: size, last use, uses, trees referencing it, its source archive (bytes, content bytes, compression) |
//! | `meta`      | string                       | JSON (run listings, commit index, ...)  |
//! | `unsynced-v1` | blob BLAKE3                | the store clock of the commit that wrote it |
//! | `versions-v1` | blob BLAKE3                | [`Version`] it was last ingested for: (artifact lineage, generation) |
//! | `newest-v1` | artifact lineage             | the newest generation of that artifact ingested |
//!
//! `archives`, `keys` and `trees` record facts (what an archive contains) and stay true forever;
//! `blobs` records presence: an entry exists while its file is in the CAS. **Invariant:** every
//! `blobs` entry names a complete, durable file, *or* its digest is in `unsynced-v1` — ingest writes
//! blob files without syncing them and adds them to `unsynced-v1` in the same transaction that adds
//! the blobs, the tree, the archive and the key; the store's flusher (`store/flush.rs`) syncs them in
//! the background and only then removes them from `unsynced-v1`; an open after an unclean stop
//! re-hashes every blob still listed there and drops those a crash lost or tore before anything is
//! served. Eviction removes entries before it deletes files.
//!
//! The `blobs-v2` table replaced `blobs` (size, last use) when eviction became cost-aware
//! (`store/score.rs`); an index that still has `blobs` is migrated in place at open
//! ([`Index::open`]): each row keeps its size and last use, and gets one use, one referencing tree
//! and an unknown source archive (costed as a zstd archive of the blob alone), then `blobs` is
//! deleted, in one transaction.
//!
//! `versions-v1` and `newest-v1` say which blobs belong to **superseded** artifact versions (a newer
//! build of the same artifact has been ingested since): eviction takes those first
//! (`store/score.rs`). They are hints: a blob without a version is never superseded, and losing them
//! costs eviction accuracy, never data.
//!
//! Leases are not persisted: a lease belongs to a request in flight in this process, and a lease
//! written to disk would outlive the crash that ended its request. They live in `evict.rs`.

use std::path::Path;

use cairn_fingerprint::{Blake3, Compression, Sha256, Tree};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

const ARCHIVES: TableDefinition<[u8; 32], [u8; 32]> = TableDefinition::new("archives");
const KEYS: TableDefinition<&str, ([u8; 32], [u8; 32])> = TableDefinition::new("keys");
const TREES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("trees");
/// The blob table before cost-aware eviction: (size, last use). Only read to migrate it.
const BLOBS_V1: TableDefinition<[u8; 32], (u64, u64)> = TableDefinition::new("blobs");
/// (size, last use, uses, referencing trees, source archive bytes, source content bytes, source
/// compression code): see [`BlobRecord`].
type BlobRow = (u64, u64, u32, u32, u64, u64, u8);
const BLOBS: TableDefinition<[u8; 32], BlobRow> = TableDefinition::new("blobs-v2");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Blobs whose files may not be durable yet (see the module docs), with the commit's clock.
const UNSYNCED: TableDefinition<[u8; 32], u64> = TableDefinition::new("unsynced-v1");
/// The artifact version each blob was last ingested for: (lineage, generation); see [`Version`].
const VERSIONS: TableDefinition<[u8; 32], (u64, u64)> = TableDefinition::new("versions-v1");
/// The newest generation ingested per artifact lineage.
const NEWEST: TableDefinition<u64, u64> = TableDefinition::new("newest-v1");

/// Why the index could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// redb reported an error (I/O, corruption, lock held by another process).
    #[error("index: {0}")]
    Db(#[from] redb::Error),
    /// Creating the index file failed.
    #[error("creating index `{path}`: {source}")]
    Create {
        /// The index file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The index file is damaged (redb reported corruption, refused the file, or panicked reading
    /// it). The store moves it aside and rebuilds (`LocalStore::open`, `cairnd repair`).
    #[error("index `{path}` is corrupt: {reason}")]
    Corrupt {
        /// The index file.
        path: std::path::PathBuf,
        /// What redb said.
        reason: String,
    },
    /// A stored value could not be decoded.
    #[error("index entry {what} is malformed: {reason}")]
    Malformed {
        /// Which entry.
        what: String,
        /// Why.
        reason: String,
    },
}

impl IndexError {
    /// True when another process (a running `cairnd`) holds the index's file lock.
    pub fn is_locked(&self) -> bool {
        matches!(self, IndexError::Db(redb::Error::DatabaseAlreadyOpen))
    }
}

trait Db<T> {
    fn db(self) -> Result<T, IndexError>;
}

impl<T, E: Into<redb::Error>> Db<T> for Result<T, E> {
    fn db(self) -> Result<T, IndexError> {
        self.map_err(|e| IndexError::Db(e.into()))
    }
}

/// A blob's index record: what eviction needs to weigh it (`store/score.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRecord {
    /// Content length.
    pub size: u64,
    /// Last use on the store's clock (larger is more recent). The clock counts bytes leased and
    /// ingested, so the difference of two values is the traffic between them.
    pub last_use: u64,
    /// Leases that used it (fetches and pins), saturating; an ingest alone does not count.
    pub uses: u32,
    /// Distinct trees the index learned referencing it (at least 1): a `_generic` blob every
    /// family's archive carries has one per family.
    pub refs: u32,
    /// The archive it was last ingested from: evicting the blob means fetching and decoding all of
    /// it again.
    pub source: SourceArchive,
    /// Derived by [`Index::blobs`] (eviction's read; `false` from the other reads), not stored in
    /// the row: the artifact version the blob was last ingested for has been superseded by a newer
    /// generation of the same artifact (see [`Version`]).
    pub superseded: bool,
}

/// Which build of which artifact an ingested archive is, for eviction: CI jobs want the newest
/// build of each artifact; older builds are wanted only by bisects and old branches, so their blobs
/// go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// The artifact (`{name}_{component}_{family}`), as a 64-bit hash ([`Version::lineage_of`]).
    pub lineage: u64,
    /// Larger is newer: the producing CI run's id (GitHub run ids increase with time).
    pub generation: u64,
}

impl Version {
    /// The build of `artifact` (`{name}_{component}_{family}`) that CI run `producer_run_id` made:
    /// `None` when the run id is not a number (a local run has no order among builds).
    pub fn of_build(artifact: &str, producer_run_id: &str) -> Option<Version> {
        Some(Version {
            lineage: Version::lineage_of(artifact),
            generation: producer_run_id.parse().ok()?,
        })
    }

    /// The lineage of an artifact name: the first 8 bytes of its BLAKE3.
    pub fn lineage_of(artifact: &str) -> u64 {
        let d = Blake3::of(artifact.as_bytes());
        u64::from_le_bytes(d.0[..8].try_into().expect("8 bytes of 32"))
    }
}

/// The archive a blob came from, as far as the cost of fetching it again goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceArchive {
    /// Compressed (downloaded) bytes.
    pub archive_bytes: u64,
    /// Content bytes of its tree (what decoding produces).
    pub content_bytes: u64,
    /// Its compression; `None` when unknown (a blob found in the CAS by a rebuild, or migrated).
    pub compression: Option<Compression>,
}

impl SourceArchive {
    /// The source of a blob nothing is known about: an archive of that blob alone, uncompressed
    /// size, costed as zstd.
    pub fn unknown(size: u64) -> SourceArchive {
        SourceArchive {
            archive_bytes: size,
            content_bytes: size,
            compression: None,
        }
    }
}

fn compression_code(c: Option<Compression>) -> u8 {
    match c {
        Some(Compression::Zstd) => 1,
        Some(Compression::Xz) => 2,
        None => 0,
    }
}

fn compression_of_code(code: u8) -> Option<Compression> {
    match code {
        1 => Some(Compression::Zstd),
        2 => Some(Compression::Xz),
        _ => None,
    }
}

impl BlobRecord {
    fn from_row(row: BlobRow) -> BlobRecord {
        let (size, last_use, uses, refs, archive_bytes, content_bytes, compression) = row;
        BlobRecord {
            size,
            last_use,
            uses,
            refs: refs.max(1),
            source: SourceArchive {
                archive_bytes,
                content_bytes,
                compression: compression_of_code(compression),
            },
            superseded: false,
        }
    }

    fn row(&self) -> BlobRow {
        (
            self.size,
            self.last_use,
            self.uses,
            self.refs,
            self.source.archive_bytes,
            self.source.content_bytes,
            compression_code(self.source.compression),
        )
    }

    /// The record of a blob with no history: used once, one tree, unknown source.
    pub fn fresh(size: u64, last_use: u64) -> BlobRecord {
        BlobRecord {
            size,
            last_use,
            uses: 1,
            refs: 1,
            source: SourceArchive::unknown(size),
            superseded: false,
        }
    }
}

/// Everything one ingest adds, committed in one transaction.
#[derive(Debug)]
pub struct IngestCommit<'a> {
    /// The archive's SHA-256.
    pub archive: Sha256,
    /// The key the archive was ingested under, if any.
    pub key: Option<&'a str>,
    /// The tree's digest.
    pub tree_digest: Blake3,
    /// The tree, stored as its JSON.
    pub tree: &'a Tree,
    /// Every blob the tree references, with its size. All must be in the CAS; those new to the
    /// index and those in `written` are recorded as unsynced.
    pub blobs: &'a [(Blake3, u64)],
    /// Blob files this ingest wrote (not yet synced).
    pub written: &'a [Blake3],
    /// The logical time to record as their last use.
    pub now: u64,
    /// The archive they come from (recorded on each blob for eviction's cost model).
    pub source: SourceArchive,
    /// Which build of which artifact the archive is, when known (eviction takes superseded builds
    /// first).
    pub version: Option<Version>,
}

/// Totals over the index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexCounts {
    /// Blob entries.
    pub blobs: u64,
    /// Sum of blob sizes.
    pub bytes: u64,
    /// Tree entries.
    pub trees: u64,
    /// Archive entries.
    pub archives: u64,
    /// Key entries.
    pub keys: u64,
    /// Largest `last_use` recorded (the logical clock resumes after it).
    pub max_last_use: u64,
}

/// Bytes of index pages redb keeps in its own cache. Its default (1 GiB) lets a long-running
/// daemon's memory grow with the index; pages beyond this are re-read through the OS page cache.
const INDEX_CACHE_BYTES: usize = 64 << 20;

/// The open index. Cheap to share behind an `Arc`; redb serializes write transactions itself.
pub struct Index {
    db: Database,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Index")
    }
}

impl Index {
    /// Open or create the index file, taking redb's exclusive file lock (a second process opening the
    /// same store fails here rather than corrupting it).
    ///
    /// Every page's checksum is verified at open (redb's integrity check): a file damaged outside
    /// redb is reported as [`IndexError::Corrupt`] instead of being trusted, and so is a panic inside
    /// redb while opening it — no panic escapes. A lock held by another process, or an I/O error
    /// such as a permission problem, is not corruption and is returned as such.
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        if !path.exists() {
            create_atomically(path)?;
        }
        let corrupt = |reason: String| IndexError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let opened = std::panic::catch_unwind(|| {
            let db = Database::builder()
                .set_cache_size(INDEX_CACHE_BYTES)
                .set_check_integrity_on_open(true)
                .create(path)
                .db()?;
            let index = Self::init(db)?;
            // One pass over every table's entries, so damage the checksums cannot see (a value
            // of the wrong shape) is found now rather than by a request.
            index.counts()?;
            index.archives()?;
            index.keys()?;
            index.tree_digests()?;
            Ok::<_, IndexError>(index)
        });
        match opened {
            Ok(Ok(index)) => Ok(index),
            Ok(Err(IndexError::Db(e))) if !is_environmental(&e) => Err(corrupt(e.to_string())),
            Ok(Err(IndexError::Malformed { what, reason })) => {
                Err(corrupt(format!("entry {what}: {reason}")))
            }
            Ok(Err(e)) => Err(e),
            Err(panic) => Err(corrupt(format!(
                "redb panicked reading it: {}",
                panic_message(&*panic)
            ))),
        }
    }

    fn init(db: Database) -> Result<Index, IndexError> {
        let tx = db.begin_write().db()?;
        tx.open_table(ARCHIVES).db()?;
        tx.open_table(KEYS).db()?;
        tx.open_table(TREES).db()?;
        tx.open_table(BLOBS).db()?;
        tx.open_table(META).db()?;
        tx.open_table(UNSYNCED).db()?;
        tx.open_table(VERSIONS).db()?;
        tx.open_table(NEWEST).db()?;
        migrate_v1_blobs(&tx)?;
        tx.commit().db()?;
        Ok(Index { db })
    }
}

/// Move the rows of the pre-cost-aware `blobs` table, if there is one, into `blobs-v2` (within the
/// caller's transaction): size and last use kept, the rest as for a blob with no history.
fn migrate_v1_blobs(tx: &redb::WriteTransaction) -> Result<(), IndexError> {
    let has_v1 = tx
        .list_tables()
        .db()?
        .any(|t| redb::TableHandle::name(&t) == "blobs");
    if !has_v1 {
        return Ok(());
    }
    {
        let old = tx.open_table(BLOBS_V1).db()?;
        let mut new = tx.open_table(BLOBS).db()?;
        for row in old.iter().db()? {
            let (k, v) = row.db()?;
            let (size, last_use) = v.value();
            new.insert(k.value(), BlobRecord::fresh(size, last_use).row())
                .db()?;
        }
    }
    tx.delete_table(BLOBS_V1).db()?;
    Ok(())
}

/// True for errors that say nothing about the file's content: the lock is held by another process,
/// or the file system refused an operation (permissions, full disk). Those are never "repaired" by
/// moving the index aside.
fn is_environmental(e: &redb::Error) -> bool {
    match e {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => true,
        redb::Error::Io(io) => !matches!(
            io.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl IndexError {
    /// True when the index file itself is damaged (see [`IndexError::Corrupt`]).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, IndexError::Corrupt { .. })
    }
}

/// Create a new, initialized index file at `path` without ever exposing a half-written one.
///
/// redb writes a new file's header in several steps; a process killed in between leaves a file redb
/// refuses to open ("magic number mismatch") — the crash test found this. So the file is built under a
/// temp name in the same directory, fsynced, and renamed into place; if another process won the race,
/// its file is used.
fn create_atomically(path: &Path) -> Result<(), IndexError> {
    let io = |source: std::io::Error| IndexError::Create {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    // Debris of earlier killed creations. Only old files: a young one may be another process's
    // creation in progress.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 60));
            if old && e.file_name().to_string_lossy().starts_with(".index-new-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix(".index-new-")
        .tempfile_in(dir)
        .map_err(io)?;
    let db = Database::create(tmp.path()).db()?;
    drop(Index::init(db)?);
    tmp.as_file().sync_all().map_err(io)?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {}
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e.error)),
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

impl Index {
    /// Record an ingest: blobs (with `now` as last use), tree, archive → tree, key → archive.
    /// Returns the blobs that were not in the index before, with their sizes.
    pub fn commit_ingest(&self, c: &IngestCommit<'_>) -> Result<Vec<(Blake3, u64)>, IndexError> {
        let tx = self.db.begin_write().db()?;
        let mut added = Vec::new();
        {
            let mut trees = tx.open_table(TREES).db()?;
            let new_tree = trees.get(c.tree_digest.0).db()?.is_none();
            let mut blobs = tx.open_table(BLOBS).db()?;
            let mut unsynced = tx.open_table(UNSYNCED).db()?;
            for digest in c.written {
                unsynced.insert(digest.0, c.now).db()?;
            }
            for (digest, size) in c.blobs {
                let old = blobs
                    .get(digest.0)
                    .db()?
                    .map(|v| BlobRecord::from_row(v.value()));
                let record = match old {
                    // Known: one more referencing tree when this tree is new; uses are counted by
                    // the leases that follow, not by the ingest.
                    Some(old) => BlobRecord {
                        size: *size,
                        last_use: c.now,
                        uses: old.uses,
                        refs: old.refs.saturating_add(u32::from(new_tree)),
                        source: c.source,
                        superseded: false,
                    },
                    None => {
                        added.push((*digest, *size));
                        // Possibly written by a concurrent ingest that has not committed yet:
                        // unsynced until a flush says otherwise.
                        unsynced.insert(digest.0, c.now).db()?;
                        BlobRecord {
                            uses: 0,
                            source: c.source,
                            ..BlobRecord::fresh(*size, c.now)
                        }
                    }
                };
                blobs.insert(digest.0, record.row()).db()?;
            }
            if let Some(v) = c.version {
                // A blob keeps the newest build that referenced it: one still used by a current
                // build is not superseded because an old build (a bisect's) also contained it.
                let mut versions = tx.open_table(VERSIONS).db()?;
                for (digest, _) in c.blobs {
                    let newer = versions
                        .get(digest.0)
                        .db()?
                        .is_some_and(|old| old.value().1 > v.generation);
                    if !newer {
                        versions.insert(digest.0, (v.lineage, v.generation)).db()?;
                    }
                }
                let mut newest = tx.open_table(NEWEST).db()?;
                let known = newest.get(v.lineage).db()?.map(|g| g.value());
                if known.is_none_or(|g| g < v.generation) {
                    newest.insert(v.lineage, v.generation).db()?;
                }
            }
            if new_tree {
                // Serialized straight into the page redb reserves: no JSON copy in our memory.
                let mut value = trees
                    .insert_reserve(c.tree_digest.0, c.tree.json_len())
                    .db()?;
                c.tree
                    .write_json(value.as_mut())
                    .map_err(|e| IndexError::Malformed {
                        what: format!("tree {}", c.tree_digest),
                        reason: format!("JSON longer than counted: {e}"),
                    })?;
            }
            tx.open_table(ARCHIVES)
                .db()?
                .insert(c.archive.0, c.tree_digest.0)
                .db()?;
            if let Some(key) = c.key {
                tx.open_table(KEYS)
                    .db()?
                    .insert(key, (c.archive.0, c.tree_digest.0))
                    .db()?;
            }
        }
        tx.commit().db()?;
        Ok(added)
    }

    /// The tree an archive (by SHA-256) contains, if it was ever ingested.
    pub fn archive_tree(&self, archive: &Sha256) -> Result<Option<Blake3>, IndexError> {
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(ARCHIVES).db()?;
        Ok(t.get(archive.0).db()?.map(|v| Blake3(v.value())))
    }

    /// The archive digest and tree recorded for a key.
    pub fn key(&self, key: &str) -> Result<Option<(Sha256, Blake3)>, IndexError> {
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(KEYS).db()?;
        Ok(t.get(key).db()?.map(|v| {
            let (a, b) = v.value();
            (Sha256(a), Blake3(b))
        }))
    }

    /// A tree's JSON.
    pub fn tree_json(&self, digest: &Blake3) -> Result<Option<Vec<u8>>, IndexError> {
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(TREES).db()?;
        Ok(t.get(digest.0).db()?.map(|v| v.value().to_vec()))
    }

    /// Store a tree's JSON (a tree learned without ingesting, e.g. from a storage manifest).
    pub fn put_tree(&self, digest: &Blake3, json: &[u8]) -> Result<(), IndexError> {
        let tx = self.db.begin_write().db()?;
        tx.open_table(TREES).db()?.insert(digest.0, json).db()?;
        tx.commit().db()?;
        Ok(())
    }

    /// Forget a tree (its stored JSON is damaged): it is learned again with the next ingest or
    /// storage manifest that carries it.
    pub fn remove_tree(&self, digest: &Blake3) -> Result<(), IndexError> {
        let tx = self.db.begin_write().db()?;
        tx.open_table(TREES).db()?.remove(digest.0).db()?;
        tx.commit().db()?;
        Ok(())
    }

    /// Record blob files found in the CAS (rebuilding a lost index) with their sizes and last use
    /// 0, keeping entries that exist. Returns how many were added.
    pub fn register_blobs(&self, blobs: &[(Blake3, u64)]) -> Result<u64, IndexError> {
        let tx = self.db.begin_write().db()?;
        let mut added = 0;
        {
            let mut t = tx.open_table(BLOBS).db()?;
            for (digest, size) in blobs {
                if t.get(digest.0).db()?.is_none() {
                    t.insert(digest.0, BlobRecord::fresh(*size, 0).row()).db()?;
                    added += 1;
                }
            }
        }
        tx.commit().db()?;
        Ok(added)
    }

    /// A blob's record.
    pub fn blob(&self, digest: &Blake3) -> Result<Option<BlobRecord>, IndexError> {
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(BLOBS).db()?;
        Ok(t.get(digest.0)
            .db()?
            .map(|v| BlobRecord::from_row(v.value())))
    }

    /// The records of several blobs, in one read transaction (a stage's worth of lookups would
    /// otherwise open tens of thousands).
    pub fn blob_records(&self, digests: &[Blake3]) -> Result<Vec<Option<BlobRecord>>, IndexError> {
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(BLOBS).db()?;
        digests
            .iter()
            .map(|d| Ok(t.get(d.0).db()?.map(|v| BlobRecord::from_row(v.value()))))
            .collect()
    }

    /// True when every digest has a blob entry.
    pub fn has_all(&self, digests: &mut dyn Iterator<Item = &Blake3>) -> Result<bool, IndexError> {
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(BLOBS).db()?;
        for d in digests {
            if t.get(d.0).db()?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Set the last use of those blobs that are present and count one more use. Not made durable on
    /// its own: losing recency in a crash only makes eviction slightly less accurate, and it saves an
    /// fsync per request.
    pub fn touch_blobs(&self, digests: &[Blake3], now: u64) -> Result<(), IndexError> {
        let mut tx = self.db.begin_write().db()?;
        tx.set_durability(Durability::None)
            .map_err(|e| IndexError::Malformed {
                what: "durability".into(),
                reason: e.to_string(),
            })?;
        {
            let mut t = tx.open_table(BLOBS).db()?;
            for d in digests {
                let old = t.get(d.0).db()?.map(|v| BlobRecord::from_row(v.value()));
                if let Some(mut r) = old {
                    r.last_use = now;
                    r.uses = r.uses.saturating_add(1);
                    t.insert(d.0, r.row()).db()?;
                }
            }
        }
        tx.commit().db()?;
        Ok(())
    }

    /// Every blob record, with [`BlobRecord::superseded`] derived.
    pub fn blobs(&self) -> Result<Vec<(Blake3, BlobRecord)>, IndexError> {
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(BLOBS).db()?;
        let versions = tx.open_table(VERSIONS).db()?;
        let newest: std::collections::HashMap<u64, u64> = tx
            .open_table(NEWEST)
            .db()?
            .iter()
            .db()?
            .map(|row| row.db().map(|(k, v)| (k.value(), v.value())))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(t.len().db()? as usize);
        for row in t.iter().db()? {
            let (k, v) = row.db()?;
            let mut record = BlobRecord::from_row(v.value());
            if let Some(version) = versions.get(k.value()).db()? {
                let (lineage, generation) = version.value();
                record.superseded = newest.get(&lineage).is_some_and(|&g| g > generation);
            }
            out.push((Blake3(k.value()), record));
        }
        Ok(out)
    }

    /// Remove blob entries (durably). Returns the bytes the removed entries accounted for.
    pub fn remove_blobs(&self, digests: &[Blake3]) -> Result<u64, IndexError> {
        let tx = self.db.begin_write().db()?;
        let mut bytes = 0;
        {
            let mut t = tx.open_table(BLOBS).db()?;
            let mut unsynced = tx.open_table(UNSYNCED).db()?;
            let mut versions = tx.open_table(VERSIONS).db()?;
            for d in digests {
                if let Some(old) = t.remove(d.0).db()? {
                    bytes += old.value().0;
                }
                unsynced.remove(d.0).db()?;
                versions.remove(d.0).db()?;
            }
        }
        tx.commit().db()?;
        Ok(bytes)
    }

    /// Blobs recorded as unsynced, with the clock of the commit that recorded each (for
    /// [`Index::clear_unsynced`]), at most `limit` of them.
    pub fn unsynced(&self, limit: usize) -> Result<Vec<(Blake3, u64)>, IndexError> {
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(UNSYNCED).db()?;
        let mut out = Vec::new();
        for row in t.iter().db()?.take(limit) {
            let (k, v) = row.db()?;
            out.push((Blake3(k.value()), v.value()));
        }
        Ok(out)
    }

    /// How many blobs are recorded as unsynced.
    pub fn unsynced_count(&self) -> Result<u64, IndexError> {
        let tx = self.db.begin_read().db()?;
        tx.open_table(UNSYNCED).db()?.len().db()
    }

    /// Forget the unsynced records of blobs now durable. A record is removed only when it still
    /// carries the clock given: a blob written again since (evicted, then ingested anew) keeps its
    /// newer record until a later flush syncs that file.
    pub fn clear_unsynced(&self, synced: &[(Blake3, u64)]) -> Result<(), IndexError> {
        let tx = self.db.begin_write().db()?;
        {
            let mut t = tx.open_table(UNSYNCED).db()?;
            for (d, stamp) in synced {
                let current = t.get(d.0).db()?.map(|v| v.value());
                if current == Some(*stamp) {
                    t.remove(d.0).db()?;
                }
            }
        }
        tx.commit().db()?;
        Ok(())
    }

    /// Every archive → tree entry.
    pub fn archives(&self) -> Result<Vec<(Sha256, Blake3)>, IndexError> {
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(ARCHIVES).db()?;
        let mut out = Vec::new();
        for row in t.iter().db()? {
            let (k, v) = row.db()?;
            out.push((Sha256(k.value()), Blake3(v.value())));
        }
        Ok(out)
    }

    /// Every key entry.
    pub fn keys(&self) -> Result<Vec<(String, Sha256, Blake3)>, IndexError> {
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(KEYS).db()?;
        let mut out = Vec::new();
        for row in t.iter().db()? {
            let (k, v) = row.db()?;
            let (a, b) = v.value();
            out.push((k.value().to_string(), Sha256(a), Blake3(b)));
        }
        Ok(out)
    }

    /// Every tree digest.
    pub fn tree_digests(&self) -> Result<Vec<Blake3>, IndexError> {
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(TREES).db()?;
        let mut out = Vec::new();
        for row in t.iter().db()? {
            out.push(Blake3(row.db()?.0.value()));
        }
        Ok(out)
    }

    /// Totals (one pass over `blobs`).
    pub fn counts(&self) -> Result<IndexCounts, IndexError> {
        let tx = self.db.begin_read().db()?;
        let blobs = tx.open_table(BLOBS).db()?;
        let mut c = IndexCounts {
            blobs: blobs.len().db()?,
            trees: tx.open_table(TREES).db()?.len().db()?,
            archives: tx.open_table(ARCHIVES).db()?.len().db()?,
            keys: tx.open_table(KEYS).db()?.len().db()?,
            ..IndexCounts::default()
        };
        for row in blobs.iter().db()? {
            let (size, last_use, ..) = row.db()?.1.value();
            c.bytes += size;
            c.max_last_use = c.max_last_use.max(last_use);
        }
        Ok(c)
    }

    /// Set a `meta` entry.
    pub fn put_meta(&self, key: &str, json: &[u8]) -> Result<(), IndexError> {
        let tx = self.db.begin_write().db()?;
        tx.open_table(META).db()?.insert(key, json).db()?;
        tx.commit().db()?;
        Ok(())
    }

    /// Read a `meta` entry.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, IndexError> {
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(META).db()?;
        Ok(t.get(key).db()?.map(|v| v.value().to_vec()))
    }

    /// Remove a `meta` entry; true when it existed.
    pub fn remove_meta(&self, key: &str) -> Result<bool, IndexError> {
        let tx = self.db.begin_write().db()?;
        let existed = tx.open_table(META).db()?.remove(key).db()?.is_some();
        tx.commit().db()?;
        Ok(existed)
    }

    /// Every `meta` entry whose key starts with `prefix`, in key order.
    pub fn meta_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, IndexError> {
        let tx = self.db.begin_read().db()?;
        let t = tx.open_table(META).db()?;
        let mut out = Vec::new();
        for row in t.range(prefix..).db()? {
            let (k, v) = row.db()?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_string(), v.value().to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn meta_ranges_stay_within_their_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("i.redb")).unwrap();
        index.put_meta("runs/1", b"1").unwrap();
        index.put_meta("runs/2", b"2").unwrap();
        index.put_meta("runt", b"x").unwrap();
        assert_eq!(index.meta_with_prefix("runs/").unwrap().len(), 2);
        assert!(index.remove_meta("runt").unwrap());
        assert_eq!(index.meta("runt").unwrap(), None);
    }

    /// An index written before cost-aware eviction (a `blobs` table of (size, last use)) opens with
    /// every blob migrated to `blobs-v2`, sizes and recency kept, and the old table gone.
    #[test]
    fn a_v1_blob_table_is_migrated_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.redb");
        let (a, b) = (Blake3::of(b"a"), Blake3::of(b"b"));
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(BLOBS_V1).unwrap();
                t.insert(a.0, (10u64, 7u64)).unwrap();
                t.insert(b.0, (20u64, 9u64)).unwrap();
            }
            tx.commit().unwrap();
        }
        let index = Index::open(&path).unwrap();
        assert_eq!(index.blob(&a).unwrap(), Some(BlobRecord::fresh(10, 7)));
        assert_eq!(
            index.blob(&b).unwrap().map(|r| (r.size, r.last_use)),
            Some((20, 9))
        );
        let c = index.counts().unwrap();
        assert_eq!((c.blobs, c.bytes, c.max_last_use), (2, 30, 9));
        let tx = index.db.begin_read().unwrap();
        assert!(
            !tx.list_tables()
                .unwrap()
                .any(|t| redb::TableHandle::name(&t) == "blobs"),
            "the v1 table is deleted"
        );
        drop(tx);
        drop(index);
        // Opening again finds nothing to migrate.
        assert_eq!(Index::open(&path).unwrap().counts().unwrap(), c);
    }

    /// Ingests count referencing trees, leases count uses, and the source archive is recorded.
    #[test]
    fn ingests_count_trees_and_leases_count_uses() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("i.redb")).unwrap();
        let shared = Blake3::of(b"shared");
        let source = SourceArchive {
            archive_bytes: 3,
            content_bytes: 9,
            compression: Some(Compression::Xz),
        };
        let empty = Tree::new(Vec::new(), Vec::new());
        for (i, digest) in [Blake3::of(b"t1"), Blake3::of(b"t2"), Blake3::of(b"t2")]
            .into_iter()
            .enumerate()
        {
            index
                .commit_ingest(&IngestCommit {
                    archive: Sha256([i as u8; 32]),
                    key: None,
                    tree_digest: digest,
                    tree: &empty,
                    blobs: &[(shared, 5)],
                    written: &[],
                    now: 10 + i as u64,
                    source,
                    version: None,
                })
                .unwrap();
        }
        index.touch_blobs(&[shared], 20).unwrap();
        let r = index.blob(&shared).unwrap().unwrap();
        assert_eq!((r.refs, r.uses, r.last_use, r.source), (2, 1, 20, source));
    }

    #[test]
    fn a_blob_is_superseded_only_when_every_build_it_was_ingested_for_is_older() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        let empty = Tree::new(Vec::new(), Vec::new());
        let blas = Version::lineage_of("blas_lib_gfx94X-dcgpu");
        let fft = Version::lineage_of("fft_lib_gfx94X-dcgpu");
        let (old_only, shared, new_only, other) = (
            Blake3::of(b"old"),
            Blake3::of(b"shared"),
            Blake3::of(b"new"),
            Blake3::of(b"other"),
        );
        let ingest = |n: u8, blobs: &[(Blake3, u64)], version: Option<Version>| {
            index
                .commit_ingest(&IngestCommit {
                    archive: Sha256([n; 32]),
                    key: None,
                    tree_digest: Blake3([n; 32]),
                    tree: &empty,
                    blobs,
                    written: &[],
                    now: u64::from(n),
                    source: SourceArchive::unknown(1),
                    version,
                })
                .unwrap();
        };
        let v = |lineage, generation| {
            Some(Version {
                lineage,
                generation,
            })
        };
        // The newest build of blas first, then (a bisect) an older one sharing a blob with it.
        ingest(1, &[(shared, 1), (new_only, 1)], v(blas, 200));
        ingest(2, &[(shared, 1), (old_only, 1)], v(blas, 100));
        ingest(3, &[(other, 1)], v(fft, 50));
        let unversioned = Blake3::of(b"unversioned");
        ingest(4, &[(unversioned, 1)], None);
        let superseded: HashSet<Blake3> = index
            .blobs()
            .unwrap()
            .into_iter()
            .filter(|(_, r)| r.superseded)
            .map(|(d, _)| d)
            .collect();
        assert_eq!(superseded, HashSet::from([old_only]));

        // Evicted blobs drop their version with their record.
        index.remove_blobs(&[old_only]).unwrap();
        ingest(5, &[(old_only, 1)], None);
        let again = index.blobs().unwrap();
        assert!(again.iter().all(|(_, r)| !r.superseded), "{again:?}");
    }
}
