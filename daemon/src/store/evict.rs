//! Leases and eviction: a byte quota enforced least-recently-used first, never touching a blob that a
//! request in flight has leased.
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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use cairn_fingerprint::Blake3;

use crate::store::cas::Cas;
use crate::store::error::{Result, StoreError};
use crate::store::index::Index;

/// Lease counts per blob, shared by every [`Lease`] of a store.
#[derive(Debug, Default)]
pub struct Leases {
    /// Blob → number of live leases holding it. Also the eviction lock (see the module docs); std's
    /// mutex because it is never held across an `.await`.
    counts: Mutex<HashMap<Blake3, u32>>,
}

impl Leases {
    /// An empty table.
    pub fn new() -> Arc<Leases> {
        Arc::new(Leases::default())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Blake3, u32>> {
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
}

/// A guard that keeps its blobs from being evicted until it is dropped.
#[derive(Debug)]
pub struct Lease {
    leases: Arc<Leases>,
    digests: Vec<Blake3>,
}

impl Lease {
    /// Hold one more blob.
    pub fn add(&mut self, digest: Blake3) {
        *self.leases.lock().entry(digest).or_insert(0) += 1;
        self.digests.push(digest);
    }

    /// Hold several more blobs (one lock acquisition).
    pub fn extend(&mut self, digests: impl IntoIterator<Item = Blake3>) {
        let mut counts = self.leases.lock();
        for d in digests {
            *counts.entry(d).or_insert(0) += 1;
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
        let mut counts = self.leases.lock();
        for d in &self.digests {
            if let Some(n) = counts.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(d);
                }
            }
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

/// Evict least-recently-used, unleased blobs until the index accounts for at most `max_bytes`; with
/// `sweep_orphans`, also delete blob files the index does not name and no lease holds.
pub fn collect(
    index: &Index,
    cas: &Cas,
    leases: &Leases,
    max_bytes: u64,
    sweep_orphans: bool,
) -> Result<GcReport> {
    // Held to the end: see the module docs.
    let counts = leases.lock();
    let mut blobs = index.blobs()?;
    let mut report = GcReport {
        bytes_before: blobs.iter().map(|(_, r)| r.size).sum(),
        ..GcReport::default()
    };
    let mut total = report.bytes_before;

    blobs.sort_by_key(|(d, r)| (r.last_use, *d));
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
        index.remove_blobs(&victims)?;
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
        if counts.get(d).copied().unwrap_or(0) > 1 || index.blob(d)?.is_some() {
            continue;
        }
        cas.remove_blob(d)
            .map_err(|e| StoreError::io(cas.blob_path(d), e))?;
    }
    Ok(())
}
