//! Deferred durability: blob files are written without a sync on the fetch's path; the index lists
//! them as *unsynced* in the same transaction that names them (`index.rs`, table `unsynced-v1`), a
//! background flusher makes them durable a moment later and only then forgets them, and an open
//! after an unclean stop re-hashes whatever is still listed.
//!
//! A blob file the index does not name is never trusted, since it may be the torn leftover of an
//! ingest that died before its commit: an ingest that meets one writes its own copy over it
//! (`Cas::stage_blob`'s `known`).
//!
//! Why: a per-blob `fdatasync` before the index commit put the disk's write-back on every cold
//! fetch's critical path (the whole stage written to disk before the first file reaches the build
//! dir), while TheRock's own fetch never syncs. Now a crash of the process (SIGKILL, OOM) loses
//! nothing, since the page cache survives it, and a crash of the machine (power loss) loses at most
//! the blobs written since the last flush — at most [`MAX_UNSYNCED_AGE`] plus one flush, since a
//! flush follows a pause of [`FlushOptions::delay`] in ingests — which recovery finds by their
//! listing, re-hashes, and drops when lost or torn, so they are downloaded again instead of being
//! served. The invariant the index keeps is in `index.rs`'s docs; `tests/e2e/crash_daemon.rs` proves it
//! with a simulated power loss (unsynced blob files zeroed, truncated and unlinked between a
//! SIGKILL and the restart).

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use cairn_fingerprint::Blake3;
use rayon::prelude::*;

use crate::store::cas::Cas;
use crate::store::error::{Result, StoreError};
use crate::store::index::Index;
use crate::store::syncer;

/// Unsynced records handled per flush transaction: bounds a pass's memory and its index write.
const FLUSH_BATCH: usize = 4096;

/// Unsynced blobs are synced at the latest this long after the first of them was written, however
/// busy the store stays: the kernel's own write-back age (`vm.dirty_expire_centisecs`, 30 s by
/// default), so by then the sync mostly finds its data already written.
pub const MAX_UNSYNCED_AGE: Duration = Duration::from_secs(30);

/// When the flusher runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushOptions {
    /// The quiet period: blobs are synced once no ingest has written any for this long (plus the
    /// sync itself), or [`MAX_UNSYNCED_AGE`] (this, if longer) after the first unsynced one. So a
    /// stage's burst of ingests is synced once, after it, instead of forcing the disk's write-back
    /// in the middle of the fetch that is still writing; a power loss costs the downloads of that
    /// burst at most.
    pub delay: Duration,
}

impl Default for FlushOptions {
    fn default() -> Self {
        FlushOptions {
            delay: Duration::from_secs(5),
        }
    }
}

/// What one flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Blob files synced (and forgotten by the unsynced listing).
    pub synced: u64,
}

/// What recovery after an unclean stop did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Unsynced blobs re-hashed.
    pub checked: u64,
    /// Those found lost or torn, dropped from the index (downloaded again when next needed).
    pub dropped: u64,
}

/// Sync every blob listed as unsynced, then the shard directories that name them, then forget them.
pub(crate) fn flush(index: &Index, cas: &Cas) -> Result<FlushReport> {
    let mut report = FlushReport::default();
    loop {
        let rows = index.unsynced(FLUSH_BATCH)?;
        if rows.is_empty() {
            return Ok(report);
        }
        sync_and_forget(index, cas, &rows)?;
        report.synced += rows.len() as u64;
        if rows.len() < FLUSH_BATCH {
            return Ok(report);
        }
    }
}

/// Sync these listed blobs (a file evicted meanwhile counts as done) and their shard directories,
/// then remove exactly these records from the listing.
fn sync_and_forget(index: &Index, cas: &Cas, rows: &[(Blake3, u64)]) -> Result<()> {
    let batch = syncer::Batch::new();
    let mut shards = BTreeSet::new();
    for (digest, _) in rows {
        batch.submit_if_present(cas.blob_path(digest));
        shards.insert(digest.0[0]);
    }
    batch
        .wait()
        .map_err(|e| StoreError::io(cas.blobs_dir(), e))?;
    cas.sync_shards(&shards)
        .map_err(|e| StoreError::io(cas.blobs_dir(), e))?;
    index.clear_unsynced(rows)?;
    Ok(())
}

/// At open, before anything is served: re-hash every blob still listed as unsynced (the process
/// stopped before a flush reached it), drop from the index those whose file is missing, short or
/// not what its name says, sync the rest, and forget them all.
pub(crate) fn recover(index: &Index, cas: &Cas) -> Result<RecoveryReport> {
    recover_in_batches(index, cas, FLUSH_BATCH)
}

fn recover_in_batches(index: &Index, cas: &Cas, batch: usize) -> Result<RecoveryReport> {
    let mut report = RecoveryReport::default();
    loop {
        let rows = index.unsynced(batch)?;
        if rows.is_empty() {
            return Ok(report);
        }
        let records = index.blob_records(&rows.iter().map(|(d, _)| *d).collect::<Vec<_>>())?;
        let checked: Vec<bool> = rows
            .par_iter()
            .zip(records)
            .map(|((digest, _), record)| record.is_none_or(|r| holds(cas, digest, r.size)))
            .collect();
        let (good, bad): (Vec<_>, Vec<_>) = rows.iter().zip(checked).partition(|(_, ok)| *ok);
        let bad: Vec<Blake3> = bad.into_iter().map(|((d, _), _)| *d).collect();
        if !bad.is_empty() {
            // Their records and their unsynced rows go together.
            index.remove_blobs(&bad)?;
            for digest in &bad {
                cas.remove_blob(digest)
                    .map_err(|e| StoreError::io(cas.blob_path(digest), e))?;
            }
        }
        // The survivors of this batch (only they: later batches are not checked yet) are made
        // durable now, so the next unclean stop need not check them again.
        let good: Vec<(Blake3, u64)> = good.into_iter().map(|(row, _)| *row).collect();
        sync_and_forget(index, cas, &good)?;
        report.checked += rows.len() as u64;
        report.dropped += bad.len() as u64;
    }
}

/// True when the blob file is complete: `size` bytes that hash to `digest`.
fn holds(cas: &Cas, digest: &Blake3, size: u64) -> bool {
    if !cas.contains(digest, size) {
        return false;
    }
    let Ok(mut file) = std::fs::File::open(cas.blob_path(digest)) else {
        return false;
    };
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    Blake3::from(hasher.finalize()) == *digest
}

/// The background flusher: woken by each ingest that wrote blobs, it waits until ingests have been
/// quiet for [`FlushOptions::delay`] (or the oldest unsynced blob reached the maximum age, see
/// [`FlushOptions`]), then flushes. It holds the store weakly and ends with it.
pub(crate) struct Flusher {
    state: Mutex<FlusherState>,
    wake: Condvar,
}

#[derive(Default)]
struct FlusherState {
    /// Blobs written since the last flush, if any.
    pending: Option<Pending>,
    stop: bool,
}

/// When the first ingest since the last flush, and the latest one, wrote blobs.
#[derive(Clone, Copy)]
struct Pending {
    first: std::time::Instant,
    last: std::time::Instant,
}

impl Pending {
    /// When these blobs are due: `quiet` after the latest write, but no later than the maximum
    /// age after the first.
    fn due(&self, quiet: Duration) -> std::time::Instant {
        (self.last + quiet).min(self.first + quiet.max(MAX_UNSYNCED_AGE))
    }
}

/// What the flusher thread flushes: the store, reached through a weak reference.
pub(crate) trait Flushable: Send + Sync + 'static {
    /// Run one flush; errors are logged by the implementation.
    fn flush_now(&self);
}

impl Flusher {
    /// Start the flusher thread for `target`.
    pub(crate) fn start<T: Flushable>(target: Weak<T>, options: FlushOptions) -> Arc<Flusher> {
        let flusher = Arc::new(Flusher {
            state: Mutex::new(FlusherState::default()),
            wake: Condvar::new(),
        });
        let me = flusher.clone();
        let spawned = std::thread::Builder::new()
            .name("cairn-flush".into())
            .spawn(move || me.run(target, options));
        if let Err(e) = spawned {
            // Without the thread, blobs stay listed until shutdown or the next open's recovery:
            // still correct, only slower to recover after a crash.
            tracing::warn!("could not start the flush thread: {e}");
        }
        flusher
    }

    /// Note that an ingest wrote blobs.
    pub(crate) fn notify(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let first = state.pending.map_or(now, |p| p.first);
        state.pending = Some(Pending { first, last: now });
        self.wake.notify_one();
    }

    /// Stop the thread after its current flush.
    pub(crate) fn stop(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.stop = true;
        self.wake.notify_one();
    }

    fn run<T: Flushable>(&self, target: Weak<T>, options: FlushOptions) {
        loop {
            {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                while state.pending.is_none() && !state.stop {
                    state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                if state.stop {
                    return;
                }
                // Wait until the blobs are due (each ingest meanwhile moves that on, up to the
                // maximum age; a stop ends it early), then take the pending blobs: ingests that land
                // during the flush make new ones.
                while !state.stop {
                    let Some(due) = state.pending.map(|p| p.due(options.delay)) else {
                        break;
                    };
                    let left = due.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    state = self
                        .wake
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                if state.stop {
                    return;
                }
                state.pending = None;
            }
            let Some(target) = target.upgrade() else {
                return;
            };
            target.flush_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::{IngestCommit, SourceArchive};
    use cairn_fingerprint::{Sha256, Tree};

    /// A burst of ingests is synced once it pauses, not while it goes on; a store that never
    /// pauses is still synced by the maximum age.
    #[test]
    fn blobs_are_due_after_a_quiet_period_or_at_the_maximum_age() {
        let t0 = std::time::Instant::now();
        let quiet = Duration::from_secs(5);
        let s = |first: u64, last: u64| Pending {
            first: t0 + Duration::from_secs(first),
            last: t0 + Duration::from_secs(last),
        };
        // One ingest: 5 s later.
        assert_eq!(s(0, 0).due(quiet), t0 + Duration::from_secs(5));
        // Ingests every few seconds push it on: 5 s after the latest.
        assert_eq!(s(0, 12).due(quiet), t0 + Duration::from_secs(17));
        // ... up to the maximum age after the first.
        assert_eq!(s(0, 29).due(quiet), t0 + MAX_UNSYNCED_AGE);
        // A quiet period longer than the maximum age (tests that keep blobs unsynced) is honoured.
        let long = Duration::from_secs(3600);
        assert_eq!(s(0, 0).due(long), t0 + long);
    }

    /// Recovery checks every listed blob before it forgets any: with more unsynced blobs than one
    /// batch, damaged ones in every batch are dropped and the rest kept and forgotten.
    #[test]
    fn recovery_checks_every_batch_before_forgetting_it() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let mut blobs = Vec::new();
        for i in 0..7u8 {
            let content = vec![i; 100 + i as usize];
            let w = cas
                .write_blob(
                    &mut &content[..],
                    content.len() as u64,
                    &mut |_| {},
                    &mut BTreeSet::new(),
                )
                .unwrap();
            blobs.push((w.digest, w.size));
        }
        let written: Vec<Blake3> = blobs.iter().map(|(d, _)| *d).collect();
        index
            .commit_ingest(&IngestCommit {
                archive: Sha256([1; 32]),
                key: None,
                tree_digest: Blake3([2; 32]),
                tree: &Tree::new(Vec::new(), Vec::new()),
                blobs: &blobs,
                written: &written,
                now: 1,
                source: SourceArchive::unknown(1),
                version: None,
            })
            .unwrap();
        assert_eq!(index.unsynced_count().unwrap(), 7);
        // Damage the first and the last in the listing's order: different batches of 2.
        let mut listed: Vec<Blake3> = index
            .unsynced(100)
            .unwrap()
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        listed.sort();
        let (first, last) = (listed[0], listed[6]);
        for d in [first, last] {
            let p = cas.blob_path(&d);
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .unwrap();
            let len = std::fs::metadata(&p).unwrap().len() as usize;
            std::fs::write(&p, vec![0u8; len]).unwrap();
        }

        let report = recover_in_batches(&index, &cas, 2).unwrap();
        assert_eq!(
            report,
            RecoveryReport {
                checked: 7,
                dropped: 2
            }
        );
        assert_eq!(index.unsynced_count().unwrap(), 0);
        for (d, _) in &blobs {
            let damaged = *d == first || *d == last;
            assert_eq!(index.blob(d).unwrap().is_some(), !damaged, "{d}");
            assert_eq!(cas.blob_path(d).exists(), !damaged, "{d}");
        }
    }
}
