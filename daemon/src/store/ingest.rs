//! Ingest: one archive stream in, its files as CAS blobs and its [`Tree`] in the index out.
//!
//! Order of events, which is what makes a crash harmless at any instant:
//! 1. every regular file is hashed and staged in the ingest's own CAS temp directory as it streams by, its digest
//!    leased before the CAS is checked for an existing copy (a member whose content this ingest has
//!    already staged is dropped at once: temp space is the archive's distinct content plus one
//!    member);
//! 2. the archive's SHA-256 (computed over the compressed bytes during the same pass) is compared
//!    with the sidecar's by `archive::read_archive` (which, given that digest, skips xz's CRC64 of
//!    the same bytes); a mismatch or a refused member stops here, and the staged files are deleted;
//! 3. staged files are renamed to their blob names;
//! 4. one index transaction adds the blobs, the tree, archive → tree and key → archive, and lists
//!    the blobs written as unsynced; the flusher (`flush.rs`) makes them durable a moment later.
//!
//! No sync on this path: a process killed before step 4 leaves at most unreferenced blob files
//! (garbage that `gc` removes) and temp debris (removed at the next open); a process killed after it
//! loses nothing (the page cache survives it); a machine that loses power before the flush loses
//! blobs the index lists as unsynced, which the next open re-hashes and drops.

use std::collections::{BTreeSet, HashSet};
use std::io::Read;
use std::sync::Arc;

use cairn_fingerprint::tree::EntryKind;
use cairn_fingerprint::{Blake3, Compression, Sha256, Tree};

use crate::archive::{self, ArchiveError, Limits};
use crate::store::cas::{Cas, Staged, StagedBlob};
use crate::store::error::{Result, StoreError};
use crate::store::evict::{self, Lease, Leases};
use crate::store::index::{Index, IngestCommit, SourceArchive, Version};

/// What one ingest produced (before single-flight sharing).
#[derive(Debug)]
pub struct Ingested {
    /// SHA-256 of the compressed archive.
    pub archive_sha256: Sha256,
    /// Digest of the tree.
    pub tree_digest: Blake3,
    /// The tree.
    pub tree: Arc<Tree>,
    /// Compressed bytes read.
    pub compressed_bytes: u64,
    /// Sum of the files' sizes.
    pub uncompressed_bytes: u64,
    /// Blob files this ingest created.
    pub new_blobs: u64,
    /// Their bytes.
    pub new_blob_bytes: u64,
    /// The index already knew this archive digest.
    pub already_known: bool,
    /// Bytes of blobs the index did not list before this ingest (for the store's byte count).
    pub indexed_bytes: u64,
    /// The lease this ingest holds on its blobs; dropped by the caller once it no longer needs them.
    pub lease: Lease,
}

/// The parts of the store an ingest needs.
pub(crate) struct Ctx<'a> {
    pub index: &'a Index,
    pub cas: &'a Cas,
    pub leases: &'a Arc<Leases>,
    pub limits: &'a Limits,
    /// Advances the store's clock by the given bytes and returns its new value.
    pub tick: &'a dyn Fn(u64) -> u64,
}

/// Ingest the archive read from `src`. See the module docs for the order of events.
pub(crate) fn ingest(
    ctx: &Ctx<'_>,
    key: &str,
    compression: Compression,
    src: impl Read,
    expected: Option<Sha256>,
    version: Option<Version>,
) -> Result<Ingested> {
    let mut lease = ctx.leases.lease();
    // Declared before `staged`, so it is dropped after the blobs staged in it.
    let staging = ctx
        .cas
        .staging()
        .map_err(|e| StoreError::io(ctx.cas.tmp_dir(), e))?;
    let mut pinned: HashSet<Blake3> = HashSet::new();
    let mut staged: Vec<StagedBlob> = Vec::new();
    let mut staged_digests: HashSet<Blake3> = HashSet::new();
    let mut sink = |_path: &cairn_fingerprint::RelPath, content: &mut dyn Read, size: u64| {
        let pin = &mut |d: &Blake3| {
            // Lease each digest once, so a failed ingest can tell its own hold from others'.
            if pinned.insert(*d) {
                lease.add(*d, size);
            }
        };
        // Only a blob file the index names is used as it is (see `Cas::stage_blob`).
        let trusted = |d: &Blake3| ctx.index.blob(d).is_ok_and(|r| r.is_some());
        match ctx.cas.stage_blob(&staging, content, size, pin, &trusted)? {
            Staged::Present { digest, .. } => Ok(digest),
            // A member identical to one already staged by this ingest: its temp copy is deleted at
            // once (dropping it), so temp space holds each distinct content once.
            Staged::New(blob) if !staged_digests.insert(blob.digest) => Ok(blob.digest),
            Staged::New(blob) => {
                let digest = blob.digest;
                staged.push(blob);
                Ok(digest)
            }
        }
    };
    // Refuses a digest other than `expected` before returning, so nothing staged is kept from it.
    let summary = archive::read_archive(src, compression, expected, ctx.limits, &mut sink);
    // On every early return below, `staged` is dropped and its temp files deleted: nothing of a
    // refused archive reaches `blobs/`.
    let summary = summary.map_err(|source| match source {
        ArchiveError::Sha256Mismatch { expected, actual } => StoreError::Sha256Mismatch {
            key: key.to_string(),
            expected,
            actual,
        },
        source => StoreError::Archive {
            key: key.to_string(),
            source,
        },
    })?;

    // Shards of renamed blobs; synced by the flusher, not here.
    let mut touched: BTreeSet<u8> = BTreeSet::new();
    let mut created: Vec<(Blake3, u64)> = Vec::new();
    let fail = |err: StoreError, created: &[(Blake3, u64)]| {
        let digests: Vec<Blake3> = created.iter().map(|(d, _)| *d).collect();
        // Best effort: a failure to clean up leaves garbage for gc, never a dangling index entry.
        let _ = evict::discard_unreferenced(ctx.index, ctx.cas, ctx.leases, &digests);
        err
    };
    for blob in staged {
        let (digest, size) = (blob.digest, blob.size);
        match ctx.cas.publish(blob, &mut touched) {
            Ok(true) => created.push((digest, size)),
            Ok(false) => {}
            Err(e) => {
                return Err(fail(
                    StoreError::io(ctx.cas.blob_path(&digest), e),
                    &created,
                ));
            }
        }
    }

    let tree = summary.tree;
    let tree_digest = tree.digest();
    let mut blobs: Vec<(Blake3, u64)> = tree
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .filter_map(|e| e.blake3.map(|d| (d, e.size)))
        .collect();
    blobs.sort();
    blobs.dedup();
    let already_known = ctx.index.archive_tree(&summary.sha256)?.is_some();
    let written: Vec<Blake3> = created.iter().map(|(d, _)| *d).collect();
    let commit = IngestCommit {
        archive: summary.sha256,
        key: Some(key),
        tree_digest,
        tree: &tree,
        blobs: &blobs,
        written: &written,
        now: (ctx.tick)(summary.uncompressed_bytes),
        source: SourceArchive {
            archive_bytes: summary.compressed_bytes,
            content_bytes: summary.uncompressed_bytes,
            compression: Some(compression),
        },
        version,
    };
    let added = match ctx.index.commit_ingest(&commit) {
        Ok(added) => added,
        Err(e) => return Err(fail(e.into(), &created)),
    };
    Ok(Ingested {
        archive_sha256: summary.sha256,
        tree_digest,
        tree: Arc::new(tree),
        compressed_bytes: summary.compressed_bytes,
        uncompressed_bytes: summary.uncompressed_bytes,
        new_blobs: created.len() as u64,
        new_blob_bytes: created.iter().map(|(_, s)| s).sum(),
        already_known,
        indexed_bytes: added.iter().map(|(_, s)| s).sum(),
        lease,
    })
}

/// The compression a path's file name implies.
pub fn compression_of(path: &std::path::Path) -> Result<Compression> {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(Compression::from_file_name)
        .ok_or_else(|| StoreError::UnknownCompression {
            path: path.to_path_buf(),
        })
}
