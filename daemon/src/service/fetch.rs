//! The Fetch RPC: make every resolved archive local (from the CAS, or one single-flight download
//! per object streamed into ingest), leased, then hand the client the trees and where each blob is
//! — as [`FetchEvent`]s, which `server/` turns into wire messages.
//!
//! Order and sharing: archives are made local largest first, [`ARCHIVES_IN_FLIGHT`] at a time; a
//! same-machine client gets each tree and its blobs' paths as soon as that archive is local (it
//! starts copying while the rest downloads: `client/src/materialize/prestage.rs`), a remote one all
//! trees first, then the bytes; each unique blob is announced once per request; every tree stays leased until the client closes the
//! stream (at most [`LEASE_GRACE`] after the summary), so eviction cannot pull a blob from under a
//! client that is still copying. A downloaded archive is leased without a gap: its ingest leases
//! each blob before the index commit and hands that lease over ([`crate::store::IngestLease`], from
//! `ingest_async_leased`), which is dropped only once the request's own lease on the tree is taken.
//! With a quota smaller than a fetch's working set the fetch therefore succeeds and the store runs
//! over quota by at most the leased bytes, until the leases drop.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::{info, instrument, warn};

use cairn_fingerprint::names::{ArtifactName, parse_sha256sum};
use cairn_fingerprint::{Blake3, Compression, EntryKind, Tree};

use super::Service;
use super::error::{Result, ServiceError, storage_first};
use super::policy::{Candidate, OfferedArchive, Resolution};
use super::resolve::ResolveRequest;
use crate::storage::Storage;
use crate::storage::transfer::download;
use crate::store::evict::Lease;

/// How long a finished Fetch keeps its leases while the client copies blobs, at most.
pub const LEASE_GRACE: Duration = Duration::from_secs(30 * 60);

/// Archives one Fetch makes local at once. A stage is mostly many small archives, whose time goes
/// to request round trips and per-file fsyncs rather than bandwidth or CPU, so more in flight than
/// cores pays off (TheRock's own fetch keeps 10 downloads in flight; 4, 8 and 16 measured alike on
/// a 2-core machine against a loopback server, see BENCHMARKS.md).
pub const ARCHIVES_IN_FLIGHT: usize = 8;

/// Blob locations per [`FetchEvent::BlobPaths`] (~150 bytes each on the wire): a stage's 40k paths
/// in ~40 messages rather than 40k, and one index transaction per batch.
pub const BLOB_PATHS_PER_BATCH: usize = 1024;

/// Bytes per [`FetchEvent::BlobChunk`] for remote clients.
pub const CHUNK: usize = 1 << 20;

/// How a Fetch hands the blobs to its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Their bytes, in chunks (any machine).
    Bytes,
    /// Their paths in the store, one per message (same machine, older clients).
    Paths,
    /// Their paths in the store, many per message.
    PathBatches,
}

/// A fetch request in domain terms.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// What to fetch.
    pub resolve: ResolveRequest,
    /// How blobs reach the client.
    pub delivery: Delivery,
}

/// One archive made local.
#[derive(Debug, Clone)]
pub struct LocalArchive {
    /// `{name}_{component}_{family}`.
    pub artifact: ArtifactName,
    /// Its tree.
    pub tree: Arc<Tree>,
    /// Tree digest.
    pub tree_digest: Blake3,
    /// True when it was served from the CAS without touching storage.
    pub from_cas: bool,
    /// Compressed bytes downloaded for it (0 from the CAS).
    pub downloaded_bytes: u64,
    /// Run it came from.
    pub run_id: String,
}

/// Where one blob is in the store.
#[derive(Debug, Clone)]
pub struct BlobLocation {
    /// Its digest.
    pub digest: Blake3,
    /// Its file.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
}

/// What a Fetch has done, at its end.
#[derive(Debug, Clone, Default)]
pub struct FetchSummary {
    /// Archives delivered.
    pub artifacts: u32,
    /// Regular files in their trees.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Archives served from the CAS.
    pub from_cas: u32,
    /// Archives downloaded.
    pub from_storage: u32,
    /// Compressed bytes downloaded.
    pub storage_bytes: u64,
    /// Runs the archives came from.
    pub runs: Vec<String>,
    /// Time from the resolve to the summary.
    pub elapsed: Duration,
}

/// One step of a Fetch, in the order a client sees them.
#[derive(Debug)]
pub enum FetchEvent {
    /// What every wanted entry resolved to (first).
    Resolved(Vec<Resolution>),
    /// One more archive is local.
    Progress {
        /// The archive.
        artifact: ArtifactName,
        /// Archives local so far.
        archives_done: u64,
        /// Archives to make local.
        archives_total: u64,
        /// Served from the CAS (else downloaded).
        from_cas: bool,
        /// Compressed bytes downloaded for it.
        downloaded_bytes: u64,
    },
    /// A tree to materialize: right after its archive's `Progress` for same-machine clients, after
    /// every archive is local for remote ones.
    Tree(LocalArchive),
    /// Where blobs are (same-machine clients), right after the first tree that has them: one
    /// batch, or one blob for [`Delivery::Paths`].
    BlobPaths(Vec<BlobLocation>),
    /// Part of a blob's bytes (remote clients).
    BlobChunk {
        /// The blob.
        digest: Blake3,
        /// Offset of `data` in the blob.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
        /// Whether this is the blob's last chunk.
        last: bool,
    },
    /// The end of the stream.
    Summary(FetchSummary),
}

/// The channel a Fetch writes its events to.
pub type FetchSender = mpsc::Sender<Result<FetchEvent>>;

impl Service {
    /// Run one Fetch whose resolve step already succeeded, writing its events to `tx`; returns
    /// whether it completed. Holds every archive's lease until the receiver is dropped.
    pub async fn fetch(
        self: &Arc<Self>,
        resolutions: Vec<Resolution>,
        request: &FetchRequest,
        tx: FetchSender,
    ) -> bool {
        let started = Instant::now();
        let (stage, family) = (&request.resolve.stage, &request.resolve.family);
        let mut found: Vec<(Candidate, OfferedArchive)> = resolutions
            .iter()
            .filter_map(|r| r.chosen.as_ref())
            .flat_map(|(c, archives)| archives.iter().map(move |a| (c.clone(), a.clone())))
            .collect();
        if tx
            .send(Ok(FetchEvent::Resolved(resolutions)))
            .await
            .is_err()
        {
            return false;
        }
        // Largest first: a stage's time is decode-bound, and one archive often holds a third of its
        // bytes (amd-llvm's lib); started last, it would finish alone on one core while others idle.
        found.sort_by_key(|(_, a)| std::cmp::Reverse(a.weight()));
        let total = found.len() as u64;
        let mut leases = Vec::new();
        let mut locals = Vec::new();
        let mut results = futures::stream::iter(found.into_iter().map(|(c, a)| {
            let service = self.clone();
            async move { service.make_local(&c, &a).await }
        }))
        .buffer_unordered(ARCHIVES_IN_FLIGHT);
        let mut done = 0u64;
        // Same-machine clients get each tree and its blobs' paths as soon as the archive is local,
        // so they can start copying while the rest downloads. Remote clients get the trees first
        // and the bytes after (they decide which blobs to take from the complete set of trees).
        let early = request.delivery != Delivery::Bytes;
        let mut announced: HashSet<Blake3> = HashSet::new();
        while let Some(r) = results.next().await {
            match r {
                Ok((local, lease)) => {
                    done += 1;
                    let _ = tx
                        .send(Ok(FetchEvent::Progress {
                            artifact: local.artifact.clone(),
                            archives_done: done,
                            archives_total: total,
                            from_cas: local.from_cas,
                            downloaded_bytes: local.downloaded_bytes,
                        }))
                        .await;
                    leases.push(lease);
                    if early {
                        let blobs = new_blobs(&local.tree, &mut announced);
                        if tx.send(Ok(FetchEvent::Tree(local.clone()))).await.is_err()
                            || !self
                                .send_blob_paths(
                                    blobs,
                                    &tx,
                                    request.delivery == Delivery::PathBatches,
                                )
                                .await
                        {
                            return false;
                        }
                    }
                    locals.push(local);
                }
                Err(e) => {
                    warn!(error = %e, "fetch failed");
                    let _ = tx.send(Err(e)).await;
                    return false;
                }
            }
        }
        drop(results);
        locals.sort_by(|a, b| a.artifact.cmp(&b.artifact));
        let mut summary = FetchSummary {
            artifacts: locals.len() as u32,
            ..FetchSummary::default()
        };
        for l in &locals {
            let source = if l.from_cas { "cas" } else { "storage" };
            self.metrics
                .served(source, stage, family, l.tree.total_size());
            summary.files += l.tree.file_count() as u64;
            summary.bytes += l.tree.total_size();
            if l.from_cas {
                summary.from_cas += 1;
            } else {
                summary.from_storage += 1;
            }
            summary.storage_bytes += l.downloaded_bytes;
            if l.from_cas {
                self.warmup.client_used(&l.tree_digest);
            }
        }
        summary.runs = locals
            .iter()
            .map(|l| l.run_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !early {
            // Each unique blob once per request.
            let mut seen = HashSet::new();
            let unique: Vec<(Blake3, u64)> = locals
                .iter()
                .flat_map(|l| new_blobs(&l.tree, &mut seen))
                .collect();
            for l in locals {
                if tx.send(Ok(FetchEvent::Tree(l))).await.is_err() {
                    return false;
                }
            }
            if !self.send_blob_contents(unique, &tx).await {
                return false;
            }
        }
        summary.elapsed = started.elapsed();
        if tx.send(Ok(FetchEvent::Summary(summary))).await.is_err() {
            return false;
        }
        // Keep the leases until the client has copied the blobs and closed the stream.
        let _ = tokio::time::timeout(LEASE_GRACE, tx.closed()).await;
        drop(leases);
        true
    }

    /// Send where each blob lives: many per event when `batched`, else one per event. Looking them
    /// up (an index read and a `stat` each, one read transaction per batch) runs on a blocking
    /// thread that feeds the stream directly, so it overlaps with the encoding and the client's
    /// decoding instead of alternating with them.
    async fn send_blob_paths(
        self: &Arc<Self>,
        unique: Vec<(Blake3, u64)>,
        tx: &FetchSender,
        batched: bool,
    ) -> bool {
        let svc = self.clone();
        let tx = tx.clone();
        let producer = tokio::task::spawn_blocking(move || {
            for batch in unique.chunks(BLOB_PATHS_PER_BATCH) {
                let digests: Vec<Blake3> = batch.iter().map(|(d, _)| *d).collect();
                let paths = match svc.store().blob_files(&digests) {
                    Ok(p) => p,
                    Err(err) => {
                        let _ = tx.blocking_send(Err(err.into()));
                        return false;
                    }
                };
                let mut locations =
                    batch
                        .iter()
                        .zip(paths)
                        .map(|((digest, size), path)| BlobLocation {
                            digest: *digest,
                            path,
                            size: *size,
                        });
                let sent = if batched {
                    tx.blocking_send(Ok(FetchEvent::BlobPaths(locations.collect())))
                        .is_ok()
                } else {
                    locations.all(|l| tx.blocking_send(Ok(FetchEvent::BlobPaths(vec![l]))).is_ok())
                };
                if !sent {
                    return false;
                }
            }
            true
        });
        producer.await.unwrap_or(false)
    }

    /// Send the blobs' bytes (remote clients), each unique blob once.
    async fn send_blob_contents(
        self: &Arc<Self>,
        unique: Vec<(Blake3, u64)>,
        tx: &FetchSender,
    ) -> bool {
        for batch in unique.chunks(BLOB_PATHS_PER_BATCH) {
            let digests: Vec<Blake3> = batch.iter().map(|(d, _)| *d).collect();
            // Index reads and a stat per blob: off the runtime threads.
            let svc = self.clone();
            let paths =
                match tokio::task::spawn_blocking(move || svc.store().blob_files(&digests)).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(err)) => {
                        let _ = tx.send(Err(err.into())).await;
                        return false;
                    }
                    Err(join) => {
                        let _ = tx
                            .send(Err(ServiceError::Internal(format!(
                                "blob lookup failed: {join}"
                            ))))
                            .await;
                        return false;
                    }
                };
            for ((d, _), path) in batch.iter().zip(&paths) {
                if send_blob_bytes(tx, d, path).await.is_err() {
                    return false;
                }
            }
        }
        true
    }

    /// Make one resolved archive local: from the CAS when its tree's blobs are all present, else one
    /// download per object across all concurrent requests, streamed into ingest and verified against
    /// the record's SHA-256 (or the `.sha256sum` sidecar) and tree digest. Returns it leased.
    #[instrument(skip_all, fields(artifact = %archive.artifact, key = %archive.key))]
    pub async fn make_local(
        &self,
        candidate: &Candidate,
        archive: &OfferedArchive,
    ) -> Result<(LocalArchive, Lease)> {
        let run_id = candidate.run.run_id.clone();
        let flight_key = format!("{}/{}", candidate.bucket, archive.key);
        // Fast path: the tree (by digest from the record, or by object key) is fully local.
        if let Some(hit) = self.serve_from_cas(archive, &flight_key, &run_id)? {
            return Ok(hit);
        }
        let _turn = self.downloads.turn(flight_key.clone()).await;
        // Another request may have downloaded it while we waited for our turn.
        if let Some(hit) = self.serve_from_cas(archive, &flight_key, &run_id)? {
            return Ok(hit);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = self
            .download_and_ingest(candidate, archive, &flight_key)
            .await;
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        let (tree_digest, tree, bytes, ingest_lease) = result?;
        // The ingest's lease has held every blob since before its index commit; take this request's
        // own before letting it go, so there is no instant at which eviction could take them.
        let lease = self.store.lease(&tree)?;
        drop(ingest_lease);
        Ok((
            LocalArchive {
                artifact: archive.artifact.clone(),
                tree,
                tree_digest,
                from_cas: false,
                downloaded_bytes: bytes,
                run_id,
            },
            lease,
        ))
    }

    /// The archive served from the CAS, leased, if its tree and every blob are local.
    fn serve_from_cas(
        &self,
        archive: &OfferedArchive,
        flight_key: &str,
        run_id: &str,
    ) -> Result<Option<(LocalArchive, Lease)>> {
        let Some((tree_digest, tree)) = self.local_tree(archive, flight_key)? else {
            return Ok(None);
        };
        let lease = self.store.lease(&tree)?;
        // Re-check under the lease: eviction may have raced the first look.
        if !self.store.has_blobs(&tree)? {
            return Ok(None);
        }
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        let local = LocalArchive {
            artifact: archive.artifact.clone(),
            tree,
            tree_digest,
            from_cas: true,
            downloaded_bytes: 0,
            run_id: run_id.to_string(),
        };
        Ok(Some((local, lease)))
    }

    pub(super) fn local_tree(
        &self,
        archive: &OfferedArchive,
        flight_key: &str,
    ) -> Result<Option<(Blake3, Arc<Tree>)>> {
        if let Some(digest) = archive.tree_digest
            && let Some(tree) = self.store.tree(&digest)?
            && self.store.has_blobs(&tree)?
        {
            return Ok(Some((digest, tree)));
        }
        if let Some(k) = self.store.tree_for_key(flight_key)?
            && archive.sha256.is_none_or(|sha| k.archive_sha256 == sha)
            && self.store.has_blobs(&k.tree)?
        {
            return Ok(Some((k.tree_digest, k.tree)));
        }
        Ok(None)
    }

    async fn download_and_ingest(
        &self,
        candidate: &Candidate,
        archive: &OfferedArchive,
        flight_key: &str,
    ) -> Result<(Blake3, Arc<Tree>, u64, Arc<Lease>)> {
        let backend = self.backend(&candidate.bucket)?;
        let storage: Arc<dyn Storage> = backend.storage.clone();
        let compression = Compression::from_file_name(&archive.key).ok_or_else(|| {
            ServiceError::InvalidArgument(format!(
                "`{}` is neither .tar.zst nor .tar.xz",
                archive.key
            ))
        })?;
        let expected = match archive.sha256 {
            Some(sha) => Some(sha),
            // Listed runs: the sidecar, when the run has one, is the only digest to check against.
            None => match storage
                .get_bytes_capped(
                    &format!("{}.sha256sum", archive.key),
                    crate::storage::MAX_SIDECAR,
                )
                .await
            {
                Ok(text) => Some(parse_sha256sum(&String::from_utf8_lossy(&text)).map_err(
                    |e| ServiceError::DataLoss(format!("sidecar `{}.sha256sum`: {e}", archive.key)),
                )?),
                Err(e) if e.is_not_found() => {
                    warn!(key = %archive.key, "no .sha256sum sidecar; archive integrity rests on the tar and compression framing");
                    None
                }
                Err(e) => return Err(e.into()),
            },
        };
        let size = (archive.compressed_size > 0).then_some(archive.compressed_size);
        let fetched = async {
            let dl = download(storage.clone(), &archive.key, size, &self.download).await?;
            let bytes = dl.size();
            info!(key = %archive.key, bytes, "downloading");
            let outcome = self
                .store
                .ingest_async_leased(
                    flight_key,
                    compression,
                    dl.into_async_read(),
                    expected,
                    archive.version(&candidate.run),
                )
                .await
                .map_err(storage_first)?;
            Ok::<_, ServiceError>((outcome, bytes))
        }
        .await;
        let ((outcome, ingest_lease), bytes) = match fetched {
            Ok(done) => done,
            // An object shorter than the size we were told fails as a bad range request: say what is
            // really wrong, the object changed under its record.
            Err(ServiceError::Storage(e)) if !e.is_not_found() && size.is_some() => {
                let expected_size = size.unwrap_or_default();
                return match storage.head(&archive.key).await {
                    Ok(Some(meta)) if meta.size != expected_size => {
                        Err(ServiceError::DataLoss(format!(
                            "archive `{}` is {} bytes in storage, but its producer record or run listing says {expected_size}",
                            archive.key, meta.size
                        )))
                    }
                    _ => Err(ServiceError::Storage(e)),
                };
            }
            Err(e) => return Err(e),
        };
        if let Some(promised) = archive.tree_digest
            && promised != outcome.tree_digest
        {
            return Err(ServiceError::DataLoss(format!(
                "archive `{}`: tree digest mismatch: the producer record says {promised}, its content hashes to {}",
                archive.key, outcome.tree_digest
            )));
        }
        Ok((outcome.tree_digest, outcome.tree, bytes, ingest_lease))
    }
}

/// The file blobs of `tree` not in `seen` yet (each once), adding them to `seen`.
fn new_blobs(tree: &Tree, seen: &mut HashSet<Blake3>) -> Vec<(Blake3, u64)> {
    tree.entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .filter_map(|e| e.blake3.map(|d| (d, e.size)))
        .filter(|(d, _)| seen.insert(*d))
        .collect()
}

async fn send_blob_bytes(
    tx: &FetchSender,
    digest: &Blake3,
    path: &std::path::Path,
) -> Result<(), ()> {
    use tokio::io::AsyncReadExt;
    let fail = |msg: String| ServiceError::Internal(msg);
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => {
            let _ = tx
                .send(Err(fail(format!(
                    "blob {digest} at `{}`: {e}",
                    path.display()
                ))))
                .await;
            return Err(());
        }
    };
    let mut offset = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match file.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(Err(fail(format!("blob {digest}: {e}")))).await;
                return Err(());
            }
        };
        let last = n == 0;
        tx.send(Ok(FetchEvent::BlobChunk {
            digest: *digest,
            offset,
            data: buf[..n].to_vec(),
            last,
        }))
        .await
        .map_err(|_| ())?;
        offset += n as u64;
        if last {
            return Ok(());
        }
    }
}
