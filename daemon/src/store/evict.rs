//! Leases and eviction: a byte quota enforced in the order `score.rs` ranks blobs (by default the
//! lowest expected refetch cost per byte kept first), never touching a blob that a request in flight
//! has leased.
//!
//! A *lease* ([`Lease`]) is a guard holding a set of blob digests; while it lives, eviction and garbage
//! collection skip those blobs. Ingest leases every blob as soon as it knows the digest (before it
//! checks whether the blob already exists), and a materializing request leases its tree, so neither can
//! have a blob deleted from under it.
//!
//! The lease table's mutex is also the eviction lock: [`collect`] holds it from reading the index to
//! deleting the last file, so a lease is either taken before a blob is chosen (and the blob is spared)
//! or after it is gone (and the taker sees it missing and rewrites it). Eviction removes index entries
//! before deleting files, so the index never names a deleted blob.
//!
//! Each lease records the blob's size, so the table also knows the *leased bytes*: with a quota
//! smaller than what the requests in flight need, the store is over quota by at most that much, and
//! only while the leases live. Releasing a blob (its last lease dropped) wakes [`Leases::released`],
//! which the background evictor waits on, so the store comes back under quota as soon as the
//! requests that held it over are done.
//!
//! Two ways to evict: [`collect`] (one pass over the whole index under the lock: `gc`, and the
//! inline quota check of a store without a background evictor) and [`evict_step`] (at most a given
//! number of victims, the lock held only while those are removed: the background evictor's unit of
//! work, so a large eviction never stalls the ingests and fetches that need the lock to lease).

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cairn_fingerprint::Blake3;

use crate::store::cas::Cas;
use crate::store::error::{Result, StoreError};
use crate::store::index::Index;
use crate::store::score::{Rank, Ranker};

/// Evictions since open, counted in the same step that drops their blobs from the index: a reader
/// of [`EvictionLedger::snapshot`] never sees bytes gone from the index without the eviction that
/// took them. Its lock is held only for that index transaction and the count (never while files are
/// deleted), so `Stats` does not wait for a whole `gc`.
#[derive(Debug, Default)]
pub struct EvictionLedger {
    lock: Mutex<()>,
    blobs: AtomicU64,
    bytes: AtomicU64,
}

impl EvictionLedger {
    fn guard(&self) -> MutexGuard<'_, ()> {
        // The guarded value is `()`: a panic while held leaves nothing inconsistent behind it.
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drop `victims` from the index and count them, as one step. Returns the bytes the index no
    /// longer accounts for.
    fn remove(&self, index: &Index, victims: &[Blake3]) -> Result<u64> {
        let _step = self.guard();
        let bytes = index.remove_blobs(victims)?;
        self.blobs
            .fetch_add(victims.len() as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(bytes)
    }

    /// `read` (e.g. the index's counts) and the (blobs, bytes) evicted since open, with no eviction
    /// between them.
    pub fn snapshot<T>(&self, read: impl FnOnce() -> T) -> (T, u64, u64) {
        let _step = self.guard();
        let value = read();
        (
            value,
            self.blobs.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// What eviction works on: a store's index, CAS, lease table and eviction ledger.
#[derive(Debug, Clone, Copy)]
pub struct Evictable<'a> {
    /// The index blobs are dropped from first.
    pub index: &'a Index,
    /// The blob files deleted after.
    pub cas: &'a Cas,
    /// Leased blobs are never taken; the table's mutex is the eviction lock.
    pub leases: &'a Leases,
    /// Where evictions are counted.
    pub ledger: &'a EvictionLedger,
}

/// Lease counts per blob, shared by every [`Lease`] of a store.
#[derive(Debug, Default)]
pub struct Leases {
    /// Blob → (number of live leases holding it, its size). Also the eviction lock (see the module
    /// docs); std's mutex because it is never held across an `.await`.
    counts: Mutex<HashMap<Blake3, (u32, u64)>>,
    /// Sum of the sizes of the leased blobs (each counted once); written under `counts`' lock.
    bytes: AtomicU64,
    /// Woken when a blob loses its last lease.
    released: tokio::sync::Notify,
}

impl Leases {
    /// An empty table.
    pub fn new() -> Arc<Leases> {
        Arc::new(Leases::default())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Blake3, (u32, u64)>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new, empty lease.
    pub fn lease(self: &Arc<Self>) -> Lease {
        Lease {
            leases: self.clone(),
            digests: Vec::new(),
        }
    }

    /// True when some live lease holds `digest`.
    pub fn is_leased(&self, digest: &Blake3) -> bool {
        self.lock().contains_key(digest)
    }

    /// Number of distinct leased blobs.
    pub fn leased_blobs(&self) -> usize {
        self.lock().len()
    }

    /// Bytes of the distinct leased blobs.
    pub fn leased_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Notified (one stored permit) whenever some blob loses its last lease, and by whoever wants the
    /// background evictor to look at the quota now.
    pub fn released(&self) -> &tokio::sync::Notify {
        &self.released
    }

    fn hold(&self, counts: &mut HashMap<Blake3, (u32, u64)>, digest: Blake3, size: u64) {
        let e = counts.entry(digest).or_insert_with(|| {
            self.bytes.fetch_add(size, Ordering::Relaxed);
            (0, size)
        });
        e.0 += 1;
    }
}

/// A guard that keeps its blobs from being evicted until it is dropped.
#[derive(Debug)]
pub struct Lease {
    leases: Arc<Leases>,
    digests: Vec<Blake3>,
}

impl Lease {
    /// Hold one more blob of `size` bytes.
    pub fn add(&mut self, digest: Blake3, size: u64) {
        let mut counts = self.leases.lock();
        self.leases.hold(&mut counts, digest, size);
        self.digests.push(digest);
    }

    /// Hold several more blobs, `(digest, size)` (one lock acquisition).
    pub fn extend(&mut self, blobs: impl IntoIterator<Item = (Blake3, u64)>) {
        let mut counts = self.leases.lock();
        for (d, size) in blobs {
            self.leases.hold(&mut counts, d, size);
            self.digests.push(d);
        }
    }

    /// The blobs held (with repeats if added twice).
    pub fn digests(&self) -> &[Blake3] {
        &self.digests
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut released = false;
        {
            let mut counts = self.leases.lock();
            for d in &self.digests {
                if let Some((n, size)) = counts.get_mut(d) {
                    *n -= 1;
                    if *n == 0 {
                        let size = *size;
                        counts.remove(d);
                        self.leases.bytes.fetch_sub(size, Ordering::Relaxed);
                        released = true;
                    }
                }
            }
        }
        if released {
            self.leases.released.notify_one();
        }
    }
}

/// What a collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Bytes the index accounted for before.
    pub bytes_before: u64,
    /// Bytes the index accounts for after.
    pub bytes_after: u64,
    /// Blobs evicted to meet the quota.
    pub evicted_blobs: u64,
    /// Their bytes.
    pub evicted_bytes: u64,
    /// Leased blobs that would otherwise have been evicted.
    pub skipped_leased: u64,
    /// Blob files with no index entry (debris of failed or killed ingests) removed.
    pub orphans_removed: u64,
    /// Their bytes.
    pub orphan_bytes: u64,
}

/// Evict unleased blobs in `ranker`'s order until the index accounts for at most `max_bytes`; with
/// `sweep_orphans`, also delete blob files the index does not name and no lease holds.
pub fn collect(
    store: Evictable<'_>,
    ranker: &Ranker,
    max_bytes: u64,
    sweep_orphans: bool,
) -> Result<GcReport> {
    let Evictable {
        index,
        cas,
        leases,
        ledger,
    } = store;
    // Held to the end: see the module docs.
    let counts = leases.lock();
    let mut blobs = index.blobs()?;
    let mut report = GcReport {
        bytes_before: blobs.iter().map(|(_, r)| r.size).sum(),
        ..GcReport::default()
    };
    let mut total = report.bytes_before;

    blobs.sort_by_cached_key(|(d, r)| (ranker.rank(r), *d));
    let mut victims = Vec::new();
    for (digest, record) in &blobs {
        if total <= max_bytes {
            break;
        }
        if counts.contains_key(digest) {
            report.skipped_leased += 1;
            continue;
        }
        victims.push(*digest);
        total -= record.size;
        report.evicted_bytes += record.size;
    }
    report.evicted_blobs = victims.len() as u64;
    if !victims.is_empty() {
        ledger.remove(index, &victims)?;
        for d in &victims {
            cas.remove_blob(d)
                .map_err(|e| StoreError::io(cas.blob_path(d), e))?;
        }
    }

    if sweep_orphans {
        let known: HashSet<Blake3> = index.blobs()?.into_iter().map(|(d, _)| d).collect();
        let files = cas.list().map_err(|e| StoreError::io(cas.blobs_dir(), e))?;
        for (digest, path) in files {
            let Some(digest) = digest else { continue };
            if known.contains(&digest) || counts.contains_key(&digest) {
                continue;
            }
            let size = std::fs::symlink_metadata(&path)
                .map(|m| m.len())
                .unwrap_or(0);
            cas.remove_blob(&digest)
                .map_err(|e| StoreError::io(&path, e))?;
            report.orphans_removed += 1;
            report.orphan_bytes += size;
        }
    }
    report.bytes_after = total;
    Ok(report)
}

/// What one [`evict_step`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Blobs evicted.
    pub evicted_blobs: u64,
    /// Bytes the index no longer accounts for.
    pub evicted_bytes: u64,
    /// Candidate blobs passed over because a lease holds them.
    pub skipped_leased: u64,
    /// True when the step stopped at its victim limit with more to evict: call again.
    pub more: bool,
}

/// Evict up to `max_victims` unleased blobs, first in `ranker`'s order, as many as it takes to bring
/// the `current` bytes the index accounts for down to `target`.
///
/// The index is read without the lock (one pass keeping the lowest-ranked candidates in a bounded
/// heap), then the lock is held only while the chosen victims are re-checked against the leases,
/// dropped from the index and deleted. A blob leased between the two is spared; one used between
/// the two may go although it no longer ranks lowest (the rank is a hint, leases are the guarantee).
pub fn evict_step(
    store: Evictable<'_>,
    ranker: &Ranker,
    current: u64,
    target: u64,
    max_victims: usize,
) -> Result<StepReport> {
    let Evictable {
        index,
        cas,
        leases,
        ledger,
    } = store;
    let mut report = StepReport::default();
    if current <= target || max_victims == 0 {
        return Ok(report);
    }
    let need = current - target;
    // The lowest-ranked unleased blobs, enough to cover `need` (at most `max_victims`), in one pass. A
    // snapshot of the leased set keeps leased blobs from filling the heap.
    let leased: HashSet<Blake3> = leases.lock().keys().copied().collect();
    let mut heap: BinaryHeap<(Rank, Blake3, u64)> = BinaryHeap::new();
    let mut heap_bytes = 0u64;
    let mut candidates = 0u64;
    for (digest, record) in index.blobs()? {
        if leased.contains(&digest) {
            report.skipped_leased += 1;
            continue;
        }
        candidates += 1;
        heap.push((ranker.rank(&record), digest, record.size));
        heap_bytes += record.size;
        // Drop the highest-ranked while the rest still covers what is needed (or the limit is exceeded).
        while let Some(&(_, _, size)) = heap.peek() {
            if heap.len() > max_victims || heap_bytes - size >= need {
                heap.pop();
                heap_bytes -= size;
            } else {
                break;
            }
        }
    }
    let mut victims: Vec<(Rank, Blake3, u64)> = heap.into_vec();
    victims.sort();
    report.more = heap_bytes < need && candidates > victims.len() as u64;
    let counts = leases.lock();
    let chosen: Vec<Blake3> = victims
        .iter()
        .filter(|(_, d, _)| !counts.contains_key(d))
        .map(|(_, d, _)| *d)
        .collect();
    report.skipped_leased += (victims.len() - chosen.len()) as u64;
    if chosen.is_empty() {
        return Ok(report);
    }
    report.evicted_bytes = ledger.remove(index, &chosen)?;
    for d in &chosen {
        cas.remove_blob(d)
            .map_err(|e| StoreError::io(cas.blob_path(d), e))?;
    }
    report.evicted_blobs = chosen.len() as u64;
    Ok(report)
}

/// Delete blob files that this failed ingest created, unless another lease (a concurrent ingest that
/// found the file and means to reference it) holds them. Only files absent from the index qualify.
pub fn discard_unreferenced(
    index: &Index,
    cas: &Cas,
    leases: &Leases,
    created: &[Blake3],
) -> Result<()> {
    let counts = leases.lock();
    for d in created {
        // The failed ingest's own lease still holds each blob once.
        if counts.get(d).map_or(0, |(n, _)| *n) > 1 || index.blob(d)?.is_some() {
            continue;
        }
        cas.remove_blob(d)
            .map_err(|e| StoreError::io(cas.blob_path(d), e))?;
    }
    Ok(())
}
