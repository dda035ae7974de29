//! [`LocalStore`]: the facade the rest of the daemon calls — ingest archives (single-flight), look up
//! trees, lease and locate blobs, report usage, collect garbage, verify.
//!
//! It ties together the CAS (`cas.rs`), the index (`index.rs`), leases and eviction (`evict.rs`) and
//! single-flight (`flight.rs`). Every method is blocking except [`LocalStore::ingest_async`]; async
//! callers use that or wrap the others in `spawn_blocking`.

pub mod cas;
pub mod error;
pub mod evict;
pub mod flight;
pub mod flush;
pub mod index;
pub mod ingest;
pub mod layout;
pub mod pins;
pub mod score;
pub mod syncer;
pub mod tree_cache;

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_fingerprint::tree::EntryKind;
use cairn_fingerprint::{Blake3, Compression, Sha256, Tree};
use rayon::prelude::*;

use crate::archive::Limits;
use crate::store::error::{Result, StoreError};
use crate::store::flight::{Role, SingleFlight};
use crate::store::index::{Index, Version};
use crate::store::score::{EvictionPolicy, Ranker};
use cas::Cas;
use evict::{GcReport, Lease, Leases};
use ingest::Ctx;
use tree_cache::TreeCache;

/// Name of the index file under the store root.
pub const INDEX_FILE: &str = "index-v1.redb";
/// Name of the quarantine directory under the store root.
pub const QUARANTINE_DIR: &str = "quarantine";
/// Name of the directory under the store root where publishes write their archives.
pub const SCRATCH_DIR: &str = "scratch";

const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by cairnd (Cairn's artifact cache).\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StoreConfig {
    /// Byte quota for blobs. `None`: no quota. Without a background evictor (see
    /// [`LocalStore::set_background_eviction`]) each ingest evicts unleased blobs down to it before
    /// returning; with one, the ingest only wakes the evictor.
    pub max_bytes: Option<u64>,
    /// Which blobs eviction takes first (`score.rs`; cost-aware by default).
    pub eviction: EvictionPolicy,
    /// Bounds on what an archive may declare.
    pub limits: Limits,
    /// When the blobs ingests write are synced (`flush.rs`).
    pub flush: flush::FlushOptions,
}

/// The result of an ingest, as every caller of a single flight sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOutcome {
    /// SHA-256 of the compressed archive.
    pub archive_sha256: Sha256,
    /// Digest of the archive's tree.
    pub tree_digest: Blake3,
    /// The tree.
    pub tree: Arc<Tree>,
    /// Compressed bytes read.
    pub compressed_bytes: u64,
    /// Sum of the files' sizes.
    pub uncompressed_bytes: u64,
    /// Blob files this ingest created (0 for a follower's view: they are the leader's).
    pub new_blobs: u64,
    /// Their bytes.
    pub new_blob_bytes: u64,
    /// True when this caller shared a concurrent ingest (single-flight follower) or the index already
    /// knew the archive digest.
    pub deduplicated: bool,
}

/// The ingest's own lease on every blob of its tree, taken before the index commit and shared by the
/// single-flight leader and its followers ([`LocalStore::ingest_reader_leased`]): the blobs stay
/// until the last holder drops it, so a caller can take its own (longer) lease without a window in
/// which eviction could take them.
pub type IngestLease = Arc<Lease>;

/// A known archive: its digest and tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownArchive {
    /// SHA-256 of the compressed archive.
    pub archive_sha256: Sha256,
    /// Digest of its tree.
    pub tree_digest: Blake3,
    /// The tree.
    pub tree: Arc<Tree>,
}

/// Usage and counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Bytes of blobs the index accounts for.
    pub bytes: u64,
    /// Blob count.
    pub blobs: u64,
    /// Tree count.
    pub trees: u64,
    /// Archive entries.
    pub archives: u64,
    /// The quota, if any.
    pub max_bytes: Option<u64>,
    /// Distinct blobs held by live leases.
    pub leased_blobs: u64,
    /// Their bytes (blobs being ingested included).
    pub leased_bytes: u64,
    /// Ingests performed (single-flight leaders) since open.
    pub ingests: u64,
    /// Ingest requests that shared a concurrent ingest since open.
    pub ingests_shared: u64,
    /// Ingests that failed since open.
    pub ingest_failures: u64,
    /// Compressed bytes ingested since open.
    pub ingested_bytes: u64,
    /// Bytes of new blob files written since open.
    pub new_blob_bytes: u64,
    /// Blobs evicted since open.
    pub evicted_blobs: u64,
    /// Their bytes.
    pub evicted_bytes: u64,
}

/// Where the store stands against its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuotaState {
    /// No quota is configured.
    #[default]
    NoQuota,
    /// At or under the quota.
    Under,
    /// Over the quota, but only by bytes that requests in flight hold leased: the store comes back
    /// under when they finish.
    OverLeased,
    /// Over the quota by more than the leased bytes: eviction has work to do.
    Over,
}

impl QuotaState {
    /// The state's name in `Stats`, `/status` and `cairn status --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaState::NoQuota => "no_quota",
            QuotaState::Under => "under_quota",
            QuotaState::OverLeased => "over_quota_leased",
            QuotaState::Over => "over_quota",
        }
    }
}

impl StoreStats {
    /// Where these figures put the store against its quota.
    pub fn quota_state(&self) -> QuotaState {
        match self.max_bytes {
            None => QuotaState::NoQuota,
            Some(max) if self.bytes <= max => QuotaState::Under,
            Some(max) if self.bytes.saturating_sub(self.leased_bytes) <= max => {
                QuotaState::OverLeased
            }
            Some(_) => QuotaState::Over,
        }
    }
}

/// A blob `verify` found corrupt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptBlob {
    /// The digest it was stored under.
    pub digest: Blake3,
    /// Where it was.
    pub path: PathBuf,
    /// Where it is now (under `quarantine/`).
    pub quarantined_to: PathBuf,
    /// What its content actually hashes to (`None` if unreadable).
    pub actual: Option<Blake3>,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blob files re-hashed.
    pub checked: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs whose content did not match their name; quarantined and dropped from the index.
    pub corrupt: Vec<CorruptBlob>,
    /// Index entries whose file was missing or of the wrong size; dropped from the index.
    pub missing: Vec<Blake3>,
    /// Archive or key entries naming a tree the index does not hold.
    pub dangling: Vec<String>,
    /// Tree entries whose stored JSON does not parse or does not match its digest; dropped from the
    /// index (the next fetch of an archive carrying one learns it again).
    pub malformed: Vec<Blake3>,
    /// Trees that parse but name blobs the index does not hold (evicted: the next fetch downloads
    /// them again; not corruption).
    pub incomplete_trees: u64,
    /// Well-named blob files the index does not list (garbage for `gc`, not corruption).
    pub orphans: u64,
    /// Files under `blobs/` that are not named like blobs (left alone).
    pub stray: Vec<PathBuf>,
}

impl VerifyReport {
    /// True when nothing was corrupt, missing or dangling.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty()
            && self.missing.is_empty()
            && self.dangling.is_empty()
            && self.malformed.is_empty()
    }
}

/// Low watermark of background eviction, as a fraction of the quota: once the store is over its
/// quota, the background evictor removes blobs down to this, so that it does not run again for
/// every small ingest that crosses the line.
pub const LOW_WATERMARK: f64 = 0.9;

/// Counters since open; relaxed atomics, read together only for reporting.
#[derive(Debug, Default)]
struct Counters {
    ingests: AtomicU64,
    shared: AtomicU64,
    failures: AtomicU64,
    ingested_bytes: AtomicU64,
    new_blob_bytes: AtomicU64,
}

/// The local content-addressed store. Open once per process (the index takes an exclusive file lock)
/// and share the `Arc`.
pub struct LocalStore {
    root: PathBuf,
    config: StoreConfig,
    cas: Cas,
    index: Index,
    leases: Arc<Leases>,
    /// Ingests in flight, by key.
    flight: SingleFlight<String, (IngestOutcome, IngestLease), StoreError>,
    /// Logical clock for blob last-use; resumes after the largest value in the index.
    clock: AtomicU64,
    /// Bytes the index accounts for, maintained incrementally so the quota check after an ingest
    /// does not scan the index.
    bytes: AtomicU64,
    counters: Counters,
    /// Evictions since open, counted with their index commit (`Stats` reads both as one snapshot).
    evictions: evict::EvictionLedger,
    /// Trees parsed from the index, kept for the next request.
    trees: TreeCache,
    /// Set when this open found the index corrupt and rebuilt it.
    recovered: std::sync::Mutex<Option<Recovery>>,
    /// A background evictor keeps the quota (see [`LocalStore::set_background_eviction`]).
    background_eviction: std::sync::atomic::AtomicBool,
    /// Named, persisted leases (`pins.rs`).
    pins: pins::PinTable,
    /// Syncs what ingests wrote, in the background (`flush.rs`); set once at open.
    flusher: std::sync::OnceLock<Arc<flush::Flusher>>,
    /// What this open's recovery of unsynced blobs found (after an unclean stop).
    unsynced_recovery: flush::RecoveryReport,
}

/// What a rebuild of the index from the CAS did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// Blob files re-registered.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs re-hashed as a sample.
    pub sampled: u64,
    /// Sampled blobs whose content did not match their name (quarantined).
    pub corrupt: u64,
}

#[derive(Debug)]
struct Recovery {
    moved_to: PathBuf,
    report: RebuildReport,
}

/// One blob in this many is re-hashed when the index is rebuilt (`cairnd verify` re-hashes all).
const REBUILD_SAMPLE_EVERY: usize = 16;

/// Rename a damaged index to `{name}.corrupt-{unix seconds}` beside it, for the operator to inspect.
fn move_aside(index: &Path) -> Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = index.as_os_str().to_owned();
    name.push(format!(".corrupt-{secs}"));
    let to = PathBuf::from(name);
    fs::rename(index, &to).map_err(|e| StoreError::io(index, e))?;
    Ok(to)
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl flush::Flushable for LocalStore {
    fn flush_now(&self) {
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "syncing newly written blobs failed; retried after the next ingest, checked at the next open");
        }
    }
}

impl Drop for LocalStore {
    /// A store closed cleanly leaves nothing unsynced for the next open to check.
    fn drop(&mut self) {
        if let Some(f) = self.flusher.get() {
            f.stop();
        }
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "syncing newly written blobs at close failed; the next open re-checks them");
        }
    }
}

/// The files of the CAS: (digest, path) of well-named blob files, and the paths of anything else.
type BlobFilesOnDisk = (Vec<(Blake3, PathBuf)>, Vec<PathBuf>);

impl LocalStore {
    /// Open (creating if needed) the store at `dir`.
    ///
    /// Every fixed path under the store is checked with `lstat` first (`layout.rs`): a symlink or a
    /// foreign file type refuses the open, naming the path. A corrupt index is moved aside and
    /// rebuilt from the CAS ([`LocalStore::rebuild`]), with a log line saying so.
    pub fn open(dir: impl AsRef<Path>, config: StoreConfig) -> Result<Arc<LocalStore>> {
        let root = dir.as_ref().to_path_buf();
        fs::create_dir_all(&root).map_err(|e| StoreError::io(&root, e))?;
        let tag = root.join("CACHEDIR.TAG");
        layout::ensure_file(&tag, CACHEDIR_TAG.as_bytes()).map_err(|e| StoreError::io(&tag, e))?;
        let quarantine = root.join(QUARANTINE_DIR);
        if quarantine.symlink_metadata().is_ok() {
            layout::ensure_dir(&quarantine).map_err(|e| StoreError::io(&quarantine, e))?;
        }
        // The index first: its file lock makes this process the store's only user, which the CAS's
        // temp-file cleanup relies on.
        let index_path = root.join(INDEX_FILE);
        layout::check_file(&index_path).map_err(|e| StoreError::io(&index_path, e))?;
        let (index, damaged) = match Index::open(&index_path) {
            Ok(index) => (index, None),
            Err(e) if e.is_corrupt() => {
                let moved = move_aside(&index_path)?;
                tracing::warn!(
                    index = %index_path.display(),
                    moved_to = %moved.display(),
                    "index is corrupt ({e}); moved aside, rebuilding it from the CAS"
                );
                (Index::open(&index_path)?, Some(moved))
            }
            Err(e) => return Err(e.into()),
        };
        let cas = Cas::open(&root).map_err(|e| StoreError::io(root.join("cas-v1"), e))?;
        // Blobs an unclean stop left unsynced are checked before anything can serve them.
        let unsynced_recovery = flush::recover(&index, &cas)?;
        if unsynced_recovery.checked > 0 {
            tracing::warn!(
                checked = unsynced_recovery.checked,
                dropped = unsynced_recovery.dropped,
                "the store was not closed cleanly: re-hashed the {} blobs written just before; {} \
                 were lost or torn and will be downloaded again when needed",
                unsynced_recovery.checked,
                unsynced_recovery.dropped
            );
        }
        let scratch = root.join(SCRATCH_DIR);
        layout::ensure_dir(&scratch).map_err(|e| StoreError::io(&scratch, e))?;
        for entry in fs::read_dir(&scratch).map_err(|e| StoreError::io(&scratch, e))? {
            // Debris of a publish that was killed: nothing references it. `remove_dir_all` removes
            // a symlink itself, never what it points to.
            let path = entry.map_err(|e| StoreError::io(&scratch, e))?.path();
            let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
        }
        let counts = index.counts()?;
        let mut store = LocalStore::assemble(root, config, cas, index, counts);
        Arc::get_mut(&mut store)
            .expect("just assembled")
            .unsynced_recovery = unsynced_recovery;
        let flusher = flush::Flusher::start(Arc::downgrade(&store), config.flush);
        let _ = store.flusher.set(flusher);
        store.restore_pins();
        if let Some(moved) = damaged {
            let report = store.rebuild()?;
            tracing::warn!(
                blobs = report.blobs,
                bytes = report.bytes,
                sampled = report.sampled,
                corrupt = report.corrupt,
                moved_to = %moved.display(),
                "index rebuilt from the CAS: {} blobs re-registered; trees are learned again on the \
                 next fetch",
                report.blobs
            );
            store
                .recovered
                .lock()
                .expect("not poisoned")
                .replace(Recovery {
                    moved_to: moved,
                    report,
                });
        }
        Ok(store)
    }

    /// Move the index aside and build a new one from the CAS (`cairnd repair`): for an index that
    /// opens but is suspected, or on an operator's request. Fails, touching nothing, while another
    /// process (a running `cairnd`) holds the store.
    pub fn repair(dir: impl AsRef<Path>, config: StoreConfig) -> Result<(PathBuf, RebuildReport)> {
        let root = dir.as_ref().to_path_buf();
        let index_path = root.join(INDEX_FILE);
        layout::check_file(&index_path).map_err(|e| StoreError::io(&index_path, e))?;
        match Index::open(&index_path) {
            // Opened (so nobody else holds it): close it, then move it aside.
            Ok(index) => drop(index),
            Err(e) if e.is_corrupt() => {}
            Err(e) => return Err(e.into()),
        }
        let moved = move_aside(&index_path)?;
        let store = LocalStore::open(&root, config)?;
        let report = store.rebuild()?;
        Ok((moved, report))
    }

    fn assemble(
        root: PathBuf,
        config: StoreConfig,
        cas: Cas,
        index: Index,
        counts: index::IndexCounts,
    ) -> Arc<LocalStore> {
        Arc::new(LocalStore {
            root,
            config,
            cas,
            index,
            leases: Leases::new(),
            flight: SingleFlight::new(),
            clock: AtomicU64::new(counts.max_last_use),
            bytes: AtomicU64::new(counts.bytes),
            counters: Counters::default(),
            evictions: evict::EvictionLedger::default(),
            trees: TreeCache::new(tree_cache::DEFAULT_MAX_ENTRIES),
            recovered: std::sync::Mutex::new(None),
            background_eviction: std::sync::atomic::AtomicBool::new(false),
            pins: pins::PinTable::default(),
            flusher: std::sync::OnceLock::new(),
            unsynced_recovery: flush::RecoveryReport::default(),
        })
    }

    /// Re-register every blob file of the CAS in the index (after the index was lost): each with its
    /// size, and a sample re-hashed; a sampled blob whose content does not match its name is
    /// quarantined. Trees, archives and keys are not in the CAS: they are learned again by the next
    /// fetch of each archive (which finds its blobs present and writes nothing new).
    pub fn rebuild(&self) -> Result<RebuildReport> {
        let files = self
            .cas
            .list()
            .map_err(|e| StoreError::io(self.cas.blobs_dir(), e))?;
        let mut found = Vec::new();
        for (digest, path) in files {
            let Some(digest) = digest else { continue };
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_file() => found.push((digest, m.len())),
                // Not a regular file (a planted symlink): never registered, left for `verify`.
                _ => {}
            }
        }
        let mut report = RebuildReport::default();
        // Every REBUILD_SAMPLE_EVERY-th blob is re-hashed (at least one when there are any).
        let sampled: Vec<(Blake3, u64)> = found
            .iter()
            .step_by(REBUILD_SAMPLE_EVERY)
            .copied()
            .collect();
        let bad: Vec<Blake3> = sampled
            .par_iter()
            .filter(|(d, _)| {
                !matches!(cas::hash_file(&self.cas.blob_path(d)), Ok((actual, _)) if actual == *d)
            })
            .map(|(d, _)| *d)
            .collect();
        report.sampled = sampled.len() as u64;
        found.retain(|(d, _)| !bad.contains(d));
        let added = self.index.register_blobs(&found)?;
        for d in &bad {
            self.quarantine(d)?;
        }
        report.corrupt = bad.len() as u64;
        report.blobs = added;
        report.bytes = found.iter().map(|(_, s)| s).sum();
        let counts = self.index.counts()?;
        self.bytes.store(counts.bytes, Ordering::Relaxed);
        Ok(report)
    }

    /// When this open found the index corrupt: where it was moved and what the rebuild did.
    pub fn recovered(&self) -> Option<(PathBuf, RebuildReport)> {
        self.recovered
            .lock()
            .expect("not poisoned")
            .as_ref()
            .map(|r| (r.moved_to.clone(), r.report))
    }

    /// A fresh private directory under the store (`scratch/publish-…`, mode 0700) for one publish's
    /// archives; removed when dropped, and any left by a killed process is removed at the next open.
    pub fn scratch_dir(&self) -> Result<tempfile::TempDir> {
        let dir = self.root.join(SCRATCH_DIR);
        tempfile::Builder::new()
            .prefix("publish-")
            .tempdir_in(&dir)
            .map_err(|e| StoreError::io(&dir, e))
    }

    /// Bounds on what an archive may declare (ingest's; publish bounds streamed artifacts by them).
    pub fn limits(&self) -> &crate::archive::Limits {
        &self.config.limits
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The index, for records other subsystems keep there (producers, `meta`).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Advance the store's clock by `bytes` of traffic (at least 1) and return the new time: ages
    /// on this clock are bytes leased or ingested since, which `score.rs` compares with the quota.
    fn tick(&self, bytes: u64) -> u64 {
        let bytes = bytes.max(1);
        self.clock.fetch_add(bytes, Ordering::Relaxed) + bytes
    }

    /// How `gc` and eviction rank blobs now: the configured policy, with a half-life of `quota`
    /// bytes of traffic.
    fn ranker(&self, quota: u64) -> Ranker {
        Ranker::new(
            self.config.eviction,
            self.clock.load(Ordering::Relaxed),
            quota.max(1 << 20),
        )
    }

    /// Ingest an archive file; its compression comes from its name (`.tar.zst` / `.tar.xz`).
    pub fn ingest_file(
        &self,
        key: &str,
        path: &Path,
        expected: Option<Sha256>,
    ) -> Result<IngestOutcome> {
        self.ingest_file_leased(key, path, expected, None)
            .map(|(o, _)| o)
    }

    /// [`LocalStore::ingest_file`] of a known build ([`Version`]), also returning the ingest's
    /// lease on the tree's blobs.
    pub fn ingest_file_leased(
        &self,
        key: &str,
        path: &Path,
        expected: Option<Sha256>,
        version: Option<Version>,
    ) -> Result<(IngestOutcome, IngestLease)> {
        let compression = ingest::compression_of(path)?;
        let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
        self.ingest_reader_leased(
            key,
            compression,
            io::BufReader::with_capacity(1 << 20, file),
            expected,
            version,
        )
    }

    /// Ingest an archive read from `src` (blocking). Concurrent calls with the same `key` perform one
    /// ingest; the others wait and share its result or error (their `src` is not read).
    pub fn ingest_reader(
        &self,
        key: &str,
        compression: Compression,
        src: impl Read,
        expected: Option<Sha256>,
    ) -> Result<IngestOutcome> {
        self.ingest_reader_leased(key, compression, src, expected, None)
            .map(|(o, _)| o)
    }

    /// [`LocalStore::ingest_reader`], also returning the ingest's lease ([`IngestLease`]), which
    /// keeps every blob of the tree from eviction until dropped. `version` says which build of
    /// which artifact the archive is, when known (eviction takes superseded builds first).
    pub fn ingest_reader_leased(
        &self,
        key: &str,
        compression: Compression,
        src: impl Read,
        expected: Option<Sha256>,
        version: Option<Version>,
    ) -> Result<(IngestOutcome, IngestLease)> {
        let (result, role) = self.flight.run(
            key.to_string(),
            || StoreError::Abandoned {
                key: key.to_string(),
            },
            || self.lead_ingest(key, compression, src, expected, version),
        );
        match (result, role) {
            (Ok((mut outcome, lease)), Role::Follower) => {
                self.counters.shared.fetch_add(1, Ordering::Relaxed);
                outcome.deduplicated = true;
                outcome.new_blobs = 0;
                outcome.new_blob_bytes = 0;
                Ok((outcome, lease))
            }
            (Ok(outcome), Role::Leader) => Ok(outcome),
            (Err(e), Role::Follower) => {
                self.counters.shared.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::Shared(e))
            }
            (Err(e), Role::Leader) => Err(Arc::try_unwrap(e).unwrap_or_else(StoreError::Shared)),
        }
    }

    fn lead_ingest(
        &self,
        key: &str,
        compression: Compression,
        src: impl Read,
        expected: Option<Sha256>,
        version: Option<Version>,
    ) -> Result<(IngestOutcome, IngestLease)> {
        self.counters.ingests.fetch_add(1, Ordering::Relaxed);
        let tick = |bytes| self.tick(bytes);
        let ctx = Ctx {
            index: &self.index,
            cas: &self.cas,
            leases: &self.leases,
            limits: &self.config.limits,
            tick: &tick,
        };
        let ingested = match ingest::ingest(&ctx, key, compression, src, expected, version) {
            Ok(i) => i,
            Err(e) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                // A full disk is the operator's to fix; say so plainly instead of naming the member
                // or index write that happened to hit it.
                if e.is_no_space() {
                    return Err(StoreError::NoSpace {
                        path: self.root.clone(),
                        key: key.to_string(),
                    });
                }
                return Err(e);
            }
        };
        self.bytes
            .fetch_add(ingested.indexed_bytes, Ordering::Relaxed);
        // Its blobs and its index commit become durable with the next flush.
        if let Some(f) = self.flusher.get() {
            f.notify();
        }
        self.counters
            .ingested_bytes
            .fetch_add(ingested.compressed_bytes, Ordering::Relaxed);
        self.counters
            .new_blob_bytes
            .fetch_add(ingested.new_blob_bytes, Ordering::Relaxed);
        // Enforce the quota while this ingest's lease still protects its own blobs: inline, or by
        // waking the background evictor.
        if let Some(max) = self.config.max_bytes
            && self.bytes.load(Ordering::Relaxed) > max
        {
            if self.background_eviction.load(Ordering::Relaxed) {
                self.leases.released().notify_one();
            } else {
                self.collect(max, false)?;
            }
        }
        let outcome = IngestOutcome {
            archive_sha256: ingested.archive_sha256,
            tree_digest: ingested.tree_digest,
            tree: ingested.tree,
            compressed_bytes: ingested.compressed_bytes,
            uncompressed_bytes: ingested.uncompressed_bytes,
            new_blobs: ingested.new_blobs,
            new_blob_bytes: ingested.new_blob_bytes,
            deduplicated: ingested.already_known,
        };
        Ok((outcome, Arc::new(ingested.lease)))
    }

    /// Ingest an archive from an async byte stream. The blocking work runs on tokio's blocking pool;
    /// the stream is read through a sync bridge from there. Must be called within a tokio runtime.
    pub async fn ingest_async(
        self: &Arc<Self>,
        key: &str,
        compression: Compression,
        src: impl tokio::io::AsyncRead + Send + Unpin + 'static,
        expected: Option<Sha256>,
    ) -> Result<IngestOutcome> {
        self.ingest_async_leased(key, compression, src, expected, None)
            .await
            .map(|(o, _)| o)
    }

    /// [`LocalStore::ingest_async`], also returning the ingest's lease ([`IngestLease`]).
    pub async fn ingest_async_leased(
        self: &Arc<Self>,
        key: &str,
        compression: Compression,
        src: impl tokio::io::AsyncRead + Send + Unpin + 'static,
        expected: Option<Sha256>,
        version: Option<Version>,
    ) -> Result<(IngestOutcome, IngestLease)> {
        let store = self.clone();
        let key = key.to_string();
        let bridge = tokio_util::io::SyncIoBridge::new(src);
        tokio::task::spawn_blocking(move || {
            store.ingest_reader_leased(&key, compression, bridge, expected, version)
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Followers currently waiting on the ingest of `key` (0 when none is running).
    pub fn ingest_followers(&self, key: &str) -> usize {
        self.flight.followers(&key.to_string())
    }

    /// A tree by digest, checked against the digest.
    pub fn tree(&self, digest: &Blake3) -> Result<Option<Arc<Tree>>> {
        if let Some(tree) = self.trees.get(digest) {
            return Ok(Some(tree));
        }
        let Some(json) = self.index.tree_json(digest)? else {
            return Ok(None);
        };
        let tree = match Tree::from_json_verified(&json, digest) {
            Ok(tree) => tree,
            Err(e) => {
                // The index is a cache: a damaged tree is forgotten, and the archive that carries it
                // is fetched (and its tree learned) again, instead of failing every request.
                tracing::warn!(%digest, "index entry for tree is malformed ({e}); forgetting it");
                self.index.remove_tree(digest)?;
                return Ok(None);
            }
        };
        let tree = Arc::new(tree);
        self.trees.insert(*digest, tree.clone());
        Ok(Some(tree))
    }

    /// The archive last ingested under `key`, with its tree.
    pub fn tree_for_key(&self, key: &str) -> Result<Option<KnownArchive>> {
        let Some((archive_sha256, tree_digest)) = self.index.key(key)? else {
            return Ok(None);
        };
        Ok(self.tree(&tree_digest)?.map(|tree| KnownArchive {
            archive_sha256,
            tree_digest,
            tree,
        }))
    }

    /// The tree of an archive known by SHA-256.
    pub fn tree_for_archive(&self, archive: &Sha256) -> Result<Option<KnownArchive>> {
        let Some(tree_digest) = self.index.archive_tree(archive)? else {
            return Ok(None);
        };
        Ok(self.tree(&tree_digest)?.map(|tree| KnownArchive {
            archive_sha256: *archive,
            tree_digest,
            tree,
        }))
    }

    /// Record a tree learned from elsewhere (a storage manifest). Returns its digest.
    pub fn put_tree(&self, tree: &Tree) -> Result<Blake3> {
        let digest = tree.digest();
        self.index.put_tree(&digest, &tree.to_json())?;
        Ok(digest)
    }

    /// True when every file blob of `tree` is in the store.
    pub fn has_blobs(&self, tree: &Tree) -> Result<bool> {
        Ok(self.index.has_all(&mut file_digests(tree))?)
    }

    /// Lease the blobs of `tree` so eviction keeps them until the lease is dropped, and mark them
    /// used now. Lease before checking [`LocalStore::has_blobs`], so the answer cannot go stale.
    pub fn lease(&self, tree: &Tree) -> Result<Lease> {
        let mut lease = self.leases.lease();
        let mut blobs: Vec<(Blake3, u64)> = file_blobs(tree).collect();
        blobs.sort();
        blobs.dedup_by_key(|(d, _)| *d);
        let digests: Vec<Blake3> = blobs.iter().map(|(d, _)| *d).collect();
        let bytes = blobs.iter().map(|(_, s)| s).sum();
        lease.extend(blobs);
        self.index.touch_blobs(&digests, self.tick(bytes))?;
        Ok(lease)
    }

    /// Pin the blobs of `trees` under `name` for `ttl_secs` from now: added to the pin's trees if
    /// it exists (its expiry moves to now + `ttl_secs`), persisted, and held against eviction until
    /// [`LocalStore::unpin`] or the expiry. Trees the store does not know are refused, naming one.
    pub fn pin(&self, name: &str, trees: &[Blake3], ttl_secs: u64) -> Result<pins::PinInfo> {
        pins::check_name(name).map_err(StoreError::InvalidPin)?;
        for t in trees {
            if self.tree(t)?.is_none() {
                return Err(StoreError::InvalidPin(format!(
                    "tree {t} is not in the store (fetch or prefetch it first)"
                )));
            }
        }
        let mut table = self.pins.pins.lock().expect("not poisoned");
        let mut record = table
            .get(name)
            .map(|p| p.record.clone())
            .unwrap_or_else(|| pins::PinRecord {
                trees: Default::default(),
                expires_at: 0,
            });
        record.trees.extend(trees.iter().copied());
        record.expires_at = pins::now().saturating_add(ttl_secs);
        let json =
            serde_json::to_vec(&record).map_err(|e| StoreError::InvalidPin(e.to_string()))?;
        self.index
            .put_meta(&format!("{}{name}", pins::META_PREFIX), &json)?;
        let pinned = self.hold(record)?;
        let info = pinned.info(name);
        // The old lease is dropped after the new one holds every blob: nothing is released between.
        table.insert(name.to_string(), pinned);
        Ok(info)
    }

    /// Remove the pin `name`; `false` when there is none.
    pub fn unpin(&self, name: &str) -> Result<bool> {
        let removed = self
            .pins
            .pins
            .lock()
            .expect("not poisoned")
            .remove(name)
            .is_some();
        let persisted = self
            .index
            .remove_meta(&format!("{}{name}", pins::META_PREFIX))?;
        if removed || persisted {
            self.leases.released().notify_one();
        }
        Ok(removed || persisted)
    }

    /// The unexpired pins, by name.
    pub fn pins(&self) -> Vec<pins::PinInfo> {
        self.expire_pins();
        let table = self.pins.pins.lock().expect("not poisoned");
        table.iter().map(|(n, p)| p.info(n)).collect()
    }

    /// A lease over the blobs of `record`'s trees.
    fn hold(&self, record: pins::PinRecord) -> Result<pins::Pinned> {
        let mut blobs: Vec<(Blake3, u64)> = Vec::new();
        for t in &record.trees {
            if let Some(tree) = self.tree(t)? {
                blobs.extend(file_blobs(&tree));
            }
        }
        blobs.sort();
        blobs.dedup_by_key(|(d, _)| *d);
        let bytes = blobs.iter().map(|(_, s)| s).sum();
        let mut lease = self.leases.lease();
        lease.extend(blobs);
        Ok(pins::Pinned {
            record,
            lease,
            bytes,
        })
    }

    /// Drop pins whose expiry has passed (records and leases).
    fn expire_pins(&self) {
        let now = pins::now();
        let expired: Vec<String> = {
            let mut table = self.pins.pins.lock().expect("not poisoned");
            let names: Vec<String> = table
                .iter()
                .filter(|(_, p)| p.record.expires_at <= now)
                .map(|(n, _)| n.clone())
                .collect();
            for n in &names {
                table.remove(n);
            }
            names
        };
        for n in expired {
            if let Err(e) = self.index.remove_meta(&format!("{}{n}", pins::META_PREFIX)) {
                tracing::warn!(pin = %n, "cannot remove the expired pin's record: {e}");
            }
        }
    }

    /// Lease the blobs of every unexpired persisted pin again (at open); unreadable records are
    /// dropped with a warning (a pin is a cache hint, never needed for correctness).
    fn restore_pins(&self) {
        let records = match self.index.meta_with_prefix(pins::META_PREFIX) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("cannot read pins: {e}");
                return;
            }
        };
        let now = pins::now();
        for (key, json) in records {
            let name = key
                .strip_prefix(pins::META_PREFIX)
                .unwrap_or(&key)
                .to_string();
            let record: Option<pins::PinRecord> = serde_json::from_slice(&json).ok();
            match record {
                Some(r) if r.expires_at > now => match self.hold(r) {
                    Ok(p) => {
                        self.pins.pins.lock().expect("not poisoned").insert(name, p);
                    }
                    Err(e) => tracing::warn!(pin = %name, "cannot restore the pin: {e}"),
                },
                _ => {
                    let _ = self.index.remove_meta(&key);
                }
            }
        }
    }

    /// Hand quota enforcement to a background evictor (`on`), which calls
    /// [`LocalStore::evict_step`] whenever [`LocalStore::eviction_wakeup`] fires; ingests then only
    /// wake it instead of evicting inline.
    pub fn set_background_eviction(&self, on: bool) {
        self.background_eviction.store(on, Ordering::Relaxed);
    }

    /// Fires when a blob loses its last lease or an ingest leaves the store over its quota.
    pub fn eviction_wakeup(&self) -> &tokio::sync::Notify {
        self.leases.released()
    }

    fn evictable(&self) -> evict::Evictable<'_> {
        evict::Evictable {
            index: &self.index,
            cas: &self.cas,
            leases: &self.leases,
            ledger: &self.evictions,
        }
    }

    /// The configured quota.
    pub fn max_bytes(&self) -> Option<u64> {
        self.config.max_bytes
    }

    /// Bytes the index accounts for (maintained incrementally; no index scan).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// One bounded unit of background eviction: when the store is over its quota (or, `continuing`
    /// a pass, over the low watermark), evict at most `max_victims` unleased blobs, lowest rank
    /// first (`score.rs`), towards the low watermark ([`LOW_WATERMARK`] of the quota). Returns what it did; `more`
    /// says another step (with `continuing`) has work.
    pub fn evict_step(&self, max_victims: usize, continuing: bool) -> Result<evict::StepReport> {
        self.expire_pins();
        let Some(max) = self.config.max_bytes else {
            return Ok(evict::StepReport::default());
        };
        let current = self.bytes.load(Ordering::Relaxed);
        let low = (max as f64 * LOW_WATERMARK) as u64;
        if current <= if continuing { low } else { max } {
            return Ok(evict::StepReport::default());
        }
        let report = evict::evict_step(
            self.evictable(),
            &self.ranker(max),
            current,
            low,
            max_victims,
        )?;
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(report.evicted_bytes))
            });
        Ok(report)
    }

    /// Where the blob `digest` lives (whether or not it is present). Same-machine clients copy from
    /// here; prefer [`LocalStore::blob_file`], which checks the blob first.
    pub fn blob_path(&self, digest: &Blake3) -> PathBuf {
        self.cas.blob_path(digest)
    }

    /// The path of a present blob whose file has the size the index records. A blob that fails this
    /// cheap check is quarantined and dropped from the index, so it is never served.
    pub fn blob_file(&self, digest: &Blake3) -> Result<PathBuf> {
        let mut paths = self.blob_files(std::slice::from_ref(digest))?;
        Ok(paths.pop().expect("one path per digest"))
    }

    /// [`LocalStore::blob_file`] for several blobs, with one index transaction; fails on the first
    /// that is unavailable.
    pub fn blob_files(&self, digests: &[Blake3]) -> Result<Vec<PathBuf>> {
        let records = self.index.blob_records(digests)?;
        let mut paths = Vec::with_capacity(digests.len());
        for (digest, record) in digests.iter().zip(records) {
            let path = self.cas.blob_path(digest);
            match record {
                Some(r) if self.cas.contains(digest, r.size) => paths.push(path),
                found => {
                    if found.is_some() {
                        self.quarantine(digest)?;
                    }
                    return Err(StoreError::BlobUnavailable {
                        digest: *digest,
                        path,
                    });
                }
            }
        }
        Ok(paths)
    }

    /// Usage and counters: the bytes and the eviction counters are one consistent snapshot.
    pub fn stats(&self) -> Result<StoreStats> {
        let (counts, evicted_blobs, evicted_bytes) =
            self.evictions.snapshot(|| self.index.counts());
        let counts = counts?;
        let c = &self.counters;
        Ok(StoreStats {
            bytes: counts.bytes,
            blobs: counts.blobs,
            trees: counts.trees,
            archives: counts.archives,
            max_bytes: self.config.max_bytes,
            leased_blobs: self.leases.leased_blobs() as u64,
            leased_bytes: self.leases.leased_bytes(),
            ingests: c.ingests.load(Ordering::Relaxed),
            ingests_shared: c.shared.load(Ordering::Relaxed),
            ingest_failures: c.failures.load(Ordering::Relaxed),
            ingested_bytes: c.ingested_bytes.load(Ordering::Relaxed),
            new_blob_bytes: c.new_blob_bytes.load(Ordering::Relaxed),
            evicted_blobs,
            evicted_bytes,
        })
    }

    /// Evict unleased blobs (lowest rank first, `score.rs`) down to `max_bytes` and delete
    /// unreferenced blob files.
    pub fn gc(&self, max_bytes: u64) -> Result<GcReport> {
        self.collect(max_bytes, true)
    }

    fn collect(&self, max_bytes: u64, sweep_orphans: bool) -> Result<GcReport> {
        self.expire_pins();
        let quota = self.config.max_bytes.unwrap_or(max_bytes);
        let report = evict::collect(
            self.evictable(),
            &self.ranker(quota),
            max_bytes,
            sweep_orphans,
        )?;
        self.bytes.store(report.bytes_after, Ordering::Relaxed);
        Ok(report)
    }

    /// Make every blob ingests wrote durable now and forget them as unsynced (`flush.rs`). The
    /// flusher does this in the background; a daemon calls it once more when it shuts down.
    pub fn flush(&self) -> Result<flush::FlushReport> {
        flush::flush(&self.index, &self.cas)
    }

    /// Blobs written but not yet synced (listed for recovery after an unclean stop).
    pub fn unsynced_blobs(&self) -> Result<u64> {
        Ok(self.index.unsynced_count()?)
    }

    /// What this open's recovery of unsynced blobs found (zeros after a clean stop).
    pub fn unsynced_recovery(&self) -> flush::RecoveryReport {
        self.unsynced_recovery
    }

    /// Move a blob file to `quarantine/` (if present) and drop its index entry.
    fn quarantine(&self, digest: &Blake3) -> Result<Option<PathBuf>> {
        let removed = self.index.remove_blobs(&[*digest])?;
        self.bytes.fetch_sub(
            removed.min(self.bytes.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        let from = self.cas.blob_path(digest);
        if fs::symlink_metadata(&from).is_err() {
            return Ok(None);
        }
        let dir = self.root.join(QUARANTINE_DIR);
        layout::ensure_dir(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let to = dir.join(format!("{digest}.{secs}"));
        fs::rename(&from, &to).map_err(|e| StoreError::io(&from, e))?;
        Ok(Some(to))
    }

    /// Every file in the CAS: those named by a digest, and strays (anything else).
    fn blob_files_on_disk(&self) -> Result<BlobFilesOnDisk> {
        let files = self
            .cas
            .list()
            .map_err(|e| StoreError::io(self.cas.blobs_dir(), e))?;
        let (mut named, mut stray) = (Vec::new(), Vec::new());
        for (digest, path) in files {
            match digest {
                Some(d) => named.push((d, path)),
                None => stray.push(path),
            }
        }
        Ok((named, stray))
    }
    /// Re-hash every blob file (in parallel). Corrupt blobs are quarantined and dropped from the
    /// index; index entries without a matching file are dropped; archive and key entries are checked
    /// to name stored trees.
    ///
    /// Meant for a quiet store (`cairnd verify` holds the store's lock); a running daemon uses
    /// [`LocalStore::verify_live`] instead. Run beside a live ingest, a
    /// corrupt blob that ingest found and leased is still quarantined — a corrupt blob is never
    /// served — and the ingest's index entry for it is then caught by [`LocalStore::blob_file`].
    pub fn verify(&self) -> Result<VerifyReport> {
        let (named, stray) = self.blob_files_on_disk()?;
        let mut report = VerifyReport {
            stray,
            ..VerifyReport::default()
        };
        let hashed: Vec<_> = named
            .into_par_iter()
            .map(|(d, p)| {
                let r = cas::hash_file(&p);
                (d, p, r)
            })
            .collect();
        let indexed: std::collections::HashMap<Blake3, u64> = self
            .index
            .blobs()?
            .into_iter()
            .map(|(d, r)| (d, r.size))
            .collect();
        let mut on_disk = std::collections::HashSet::new();
        for (digest, path, result) in hashed {
            report.checked += 1;
            let actual = match result {
                Ok((actual, size)) => {
                    report.bytes += size;
                    if actual == digest && indexed.get(&digest).is_none_or(|s| *s == size) {
                        on_disk.insert(digest);
                        if !indexed.contains_key(&digest) {
                            report.orphans += 1;
                        }
                        continue;
                    }
                    Some(actual)
                }
                Err(_) => None,
            };
            let quarantined_to = self.quarantine(&digest)?.unwrap_or_default();
            report.corrupt.push(CorruptBlob {
                digest,
                path,
                quarantined_to,
                actual,
            });
        }
        let corrupt: std::collections::HashSet<Blake3> =
            report.corrupt.iter().map(|c| c.digest).collect();
        for digest in indexed.keys() {
            if !on_disk.contains(digest) && !corrupt.contains(digest) {
                report.missing.push(*digest);
            }
        }
        if !report.missing.is_empty() {
            let removed = self.index.remove_blobs(&report.missing)?;
            self.bytes.fetch_sub(
                removed.min(self.bytes.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
        }
        // Every tree entry must parse and match its digest, so that "clean" means every fetch can
        // use what the index says.
        let indexed_blobs: std::collections::HashSet<Blake3> =
            self.index.blobs()?.into_iter().map(|(d, _)| d).collect();
        let mut trees: std::collections::HashSet<Blake3> = std::collections::HashSet::new();
        for digest in self.index.tree_digests()? {
            let json = self.index.tree_json(&digest)?.unwrap_or_default();
            match Tree::from_json_verified(&json, &digest) {
                Ok(tree) => {
                    if file_digests(&tree).any(|d| !indexed_blobs.contains(d)) {
                        report.incomplete_trees += 1;
                    }
                    trees.insert(digest);
                }
                Err(_) => {
                    self.index.remove_tree(&digest)?;
                    report.malformed.push(digest);
                }
            }
        }
        for (archive, tree) in self.index.archives()? {
            if !trees.contains(&tree) {
                report
                    .dangling
                    .push(format!("archive {archive} -> tree {tree}"));
            }
        }
        for (key, _, tree) in self.index.keys()? {
            if !trees.contains(&tree) {
                report.dangling.push(format!("key `{key}` -> tree {tree}"));
            }
        }
        Ok(report)
    }
}

impl LocalStore {
    /// Re-hash blobs while the store is in use (the `Verify` RPC): every blob file, or a random
    /// `sample` of them, one at a time on the calling (blocking) thread, so a concurrent fetch still
    /// has the other threads and the disk. Corrupt blobs are quarantined and dropped from the index,
    /// so the next fetch that needs one downloads it again; with no `sample`, index entries whose
    /// file is missing (or of the wrong size) at the moment they are checked are dropped too.
    ///
    /// Unlike [`LocalStore::verify`] it expects company: a file evicted between the listing and its
    /// hashing is skipped, not reported, and entries are checked one by one against the disk at that
    /// moment rather than against the listing. A corrupt blob is quarantined even while a fetch has
    /// it leased (a corrupt blob is never served; that fetch's client then fails on it or re-hashes
    /// it, and a retry downloads the archive again).
    pub fn verify_live(&self, sample: Option<usize>) -> Result<VerifyReport> {
        let (mut named, stray) = self.blob_files_on_disk()?;
        let mut report = VerifyReport {
            stray,
            ..VerifyReport::default()
        };
        if let Some(n) = sample
            && n < named.len()
        {
            let picked = rand::seq::index::sample(&mut rand::rng(), named.len(), n);
            let mut keep: Vec<(Blake3, PathBuf)> = Vec::with_capacity(n);
            let mut all: Vec<Option<(Blake3, PathBuf)>> = named.into_iter().map(Some).collect();
            for i in picked {
                if let Some(x) = all[i].take() {
                    keep.push(x);
                }
            }
            named = keep;
        }
        let mut checked_ok = std::collections::HashSet::new();
        for (digest, path) in named {
            let actual = match cas::hash_file(&path) {
                // Evicted (or quarantined) since the listing: nothing to check.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => None,
                Ok((actual, size)) => {
                    report.checked += 1;
                    report.bytes += size;
                    if actual == digest {
                        checked_ok.insert(digest);
                        continue;
                    }
                    Some(actual)
                }
            };
            if actual.is_none() {
                report.checked += 1;
            }
            let quarantined_to = self.quarantine(&digest)?.unwrap_or_default();
            report.corrupt.push(CorruptBlob {
                digest,
                path,
                quarantined_to,
                actual,
            });
        }
        if sample.is_none() {
            for (digest, record) in self.index.blobs()? {
                if checked_ok.contains(&digest) && self.cas.contains(&digest, record.size) {
                    continue;
                }
                if report.corrupt.iter().any(|c| c.digest == digest) {
                    continue;
                }
                // Checked now, not against the listing: an ingest may have committed it since. File
                // first, then the entry: eviction and quarantine drop the entry before the file, so
                // an entry still there once its file is gone is really missing.
                if !self.cas.contains(&digest, record.size)
                    && self
                        .index
                        .blob(&digest)?
                        .is_some_and(|r| !self.cas.contains(&digest, r.size))
                {
                    report.missing.push(digest);
                }
            }
            if !report.missing.is_empty() {
                let removed = self.index.remove_blobs(&report.missing)?;
                let _ = self
                    .bytes
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                        Some(b.saturating_sub(removed))
                    });
            }
        }
        Ok(report)
    }
}

fn file_blobs(tree: &Tree) -> impl Iterator<Item = (Blake3, u64)> + '_ {
    tree.entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .filter_map(|e| e.blake3.map(|d| (d, e.size)))
}

fn file_digests(tree: &Tree) -> impl Iterator<Item = &Blake3> {
    tree.entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .filter_map(|e| e.blake3.as_ref())
}
