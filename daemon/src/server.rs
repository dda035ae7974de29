//! The gRPC surface of `cairnd`: thin `cairn.v1` handlers over [`Service`], plus `grpc.health.v1` and
//! server reflection. Wire types stop here: every handler converts, calls the service, converts back.
//! gRPC status codes are chosen in one place, `impl From<ServiceError> for Status`.
//!
//! [`run`] takes a bound listener and a shutdown future (mini-redis style): the binary passes a
//! signal, tests pass a oneshot.

use std::collections::{BTreeMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use cairn_fingerprint::{Blake3, Compression, EntryKind, Tree};
use cairn_proto::v1::cairn_server::{Cairn, CairnServer};
use cairn_proto::v1::{self as pb, fetch_event::Event};

use crate::history::{CommitRun, RunTrees};
use crate::records::RunIdentity;
use crate::resolve::{Policy, Resolution, Wanted};
use crate::service::{PublishInput, ResolveInput, Service, ServiceError, require_absolute};

/// How long a finished Fetch keeps its leases while the client copies blobs, at most.
const LEASE_GRACE: Duration = Duration::from_secs(30 * 60);
/// Bytes per `BlobChunk` message for remote clients.
const CHUNK: usize = 1 << 20;
/// Blob paths per `BlobPaths` message (~150 bytes each): a stage's 40k paths in ~40 messages
/// rather than 40k, and one index transaction per message.
const BLOB_PATHS_PER_MESSAGE: usize = 1024;

/// Archives one Fetch makes local at once. A stage is mostly many small archives, whose time goes
/// to request round trips and per-file fsyncs rather than bandwidth or CPU, so more in flight than
/// cores pays off (TheRock's own fetch keeps 10 downloads in flight; 4, 8 and 16 measured alike on
/// a 2-core machine against a loopback server, see BENCHMARKS.md).
const ARCHIVES_IN_FLIGHT: usize = 8;

/// Longest message a `Status` carries: messages quote request fields, and a message over the peer's
/// header-size limit turns a clear refusal into an HTTP/2 protocol error.
const MAX_STATUS_MESSAGE: usize = 2048;

/// `msg`, cut at [`MAX_STATUS_MESSAGE`] bytes (on a character boundary) with a note saying so.
fn clip(mut msg: String) -> String {
    if msg.len() > MAX_STATUS_MESSAGE {
        let mut end = MAX_STATUS_MESSAGE;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        let total = msg.len();
        msg.truncate(end);
        msg.push_str(&format!("… ({total} bytes, truncated)"));
    }
    msg
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        use crate::error::StoreError;
        let msg = clip(e.to_string());
        match &e {
            ServiceError::InvalidArgument(_) => Status::invalid_argument(msg),
            ServiceError::NotFound(_) => Status::not_found(msg),
            ServiceError::DataLoss(_) => Status::data_loss(msg),
            ServiceError::Storage(s) if s.is_not_found() => Status::not_found(msg),
            // Transient storage trouble: the client may retry.
            ServiceError::Storage(s) if s.is_transient() || s.is_unavailable() => {
                Status::unavailable(msg)
            }
            ServiceError::Storage(_) => Status::failed_precondition(msg),
            ServiceError::Store(s) if s.is_no_space() => Status::resource_exhausted(msg),
            ServiceError::Store(StoreError::Sha256Mismatch { .. }) => Status::data_loss(msg),
            ServiceError::Store(StoreError::Archive { .. }) => Status::data_loss(msg),
            ServiceError::Store(_) | ServiceError::Internal(_) => Status::internal(msg),
        }
    }
}

/// The tonic service.
#[derive(Debug, Clone)]
pub struct CairnService {
    inner: Arc<Service>,
    max_bytes: u64,
}

impl CairnService {
    /// Wrap a service; `max_bytes` is the configured quota used by `Gc` with no explicit quota.
    pub fn new(inner: Arc<Service>, max_bytes: u64) -> CairnService {
        CairnService { inner, max_bytes }
    }
}

fn resolve_input(req: pb::ResolveRequest) -> ResolveInput {
    let policy = req.policy.unwrap_or_default();
    ResolveInput {
        stage: req.stage,
        family: req.family,
        platform: if req.platform.is_empty() {
            "linux".into()
        } else {
            req.platform
        },
        wanted: req
            .artifacts
            .into_iter()
            .map(|a| Wanted {
                artifact: a.artifact,
                fingerprint: a.fingerprint,
            })
            .collect(),
        policy: Policy {
            allow_untrusted: policy.allow_untrusted,
            allow_failed: policy.allow_failed,
            run_id: (!policy.run_id.is_empty()).then_some(policy.run_id),
        },
        exclude_components: req.exclude_components,
    }
}

fn resolved_to_pb(rs: &[Resolution]) -> pb::ResolveResponse {
    let mut runs = std::collections::BTreeSet::new();
    let mut artifacts = Vec::new();
    for r in rs {
        match &r.chosen {
            Some((c, archives)) => {
                runs.insert(c.record.run.run_id.clone());
                for a in archives {
                    let producer = pb::Producer {
                        repo: c.record.run.repo.clone(),
                        workflow: c.record.run.workflow.clone(),
                        run_id: c.record.run.run_id.clone(),
                        commit: c.record.run.commit.clone(),
                        platform: c.record.run.platform.clone(),
                        status: c.record.run.status.clone(),
                        bucket: c.record.bucket.clone(),
                        key: a.key.clone(),
                        sha256: if a.sha256.0 == [0; 32] {
                            String::new()
                        } else {
                            a.sha256.to_hex()
                        },
                        compressed_size: a.compressed_size,
                        uncompressed_size: a.uncompressed_size,
                        built_here: a.built_here,
                        reused_from_run_id: a.reused_from_run_id.clone(),
                        trusted: c.trusted,
                        published_at: c.record.published_at.clone(),
                    };
                    artifacts.push(pb::ResolvedArtifact {
                        artifact: a.artifact.clone(),
                        name: a.name.clone(),
                        component: a.component.clone(),
                        family: a.family.clone(),
                        fingerprint: r.fingerprint.clone(),
                        status: pb::ResolveStatus::Found as i32,
                        producer: Some(producer),
                        tree_digest: if a.tree_digest.0 == [0; 32] {
                            String::new()
                        } else {
                            a.tree_digest.to_hex()
                        },
                        explanation: r.explanation.clone(),
                    });
                }
            }
            None => {
                let parsed = cairn_fingerprint::names::ArtifactName::parse(&r.artifact).ok();
                artifacts.push(pb::ResolvedArtifact {
                    artifact: r.artifact.clone(),
                    name: parsed
                        .as_ref()
                        .map(|n| n.name.clone())
                        .unwrap_or_else(|| r.artifact.clone()),
                    component: parsed
                        .as_ref()
                        .map(|n| n.component.to_string())
                        .unwrap_or_default(),
                    family: parsed
                        .as_ref()
                        .map(|n| n.family.clone())
                        .unwrap_or_default(),
                    fingerprint: r.fingerprint.clone(),
                    status: pb::ResolveStatus::Missing as i32,
                    producer: None,
                    tree_digest: String::new(),
                    explanation: r.explanation.clone(),
                })
            }
        }
    }
    pb::ResolveResponse {
        artifacts,
        runs: runs.into_iter().collect(),
    }
}

/// A tree as the wire carries it.
pub fn tree_to_pb(
    artifact: &str,
    digest: &Blake3,
    tree: &Tree,
    source: &str,
    run_id: &str,
) -> pb::ArtifactTree {
    pb::ArtifactTree {
        artifact: artifact.to_string(),
        tree_digest: digest.to_hex(),
        manifest: tree.manifest.iter().map(|m| m.to_string()).collect(),
        entries: tree
            .entries
            .iter()
            .map(|e| pb::TreeEntry {
                path: e.path.to_string(),
                kind: match e.kind {
                    EntryKind::File => "file",
                    EntryKind::Dir => "dir",
                    EntryKind::Symlink => "symlink",
                    EntryKind::Hardlink => "hardlink",
                }
                .to_string(),
                mode: e.mode,
                size: e.size,
                blake3: e.blake3.map(|d| d.to_hex()).unwrap_or_default(),
                link_target: e.link_target.clone().unwrap_or_default(),
            })
            .collect(),
        source: source.to_string(),
        run_id: run_id.to_string(),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::FetchEvent, Status>> + Send>>;

fn event(e: Event) -> Result<pb::FetchEvent, Status> {
    Ok(pb::FetchEvent { event: Some(e) })
}

#[tonic::async_trait]
impl Cairn for CairnService {
    async fn resolve(
        &self,
        req: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveResponse>, Status> {
        let started = Instant::now();
        let input = resolve_input(req.into_inner());
        let result = self.inner.resolve(&input).await;
        let m = &self.inner.metrics;
        m.observe(
            "Resolve",
            &input.stage,
            &input.family,
            result.is_ok(),
            started.elapsed(),
        );
        Ok(Response::new(resolved_to_pb(&result?)))
    }

    type FetchStream = EventStream;

    async fn fetch(
        &self,
        req: Request<pb::FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let req = req.into_inner();
        let delivery = match (req.local_paths, req.blob_path_batches) {
            (false, _) => Delivery::Bytes,
            (true, false) => Delivery::Paths,
            (true, true) => Delivery::PathBatches,
        };
        let Some(resolve) = req.resolve else {
            return Err(Status::invalid_argument(
                "fetch request has no `resolve`: nothing says what to fetch",
            ));
        };
        let input = resolve_input(resolve);
        let service = self.inner.clone();
        service
            .counters
            .fetch_requests
            .fetch_add(1, Ordering::Relaxed);
        let request_started = Instant::now();
        let resolutions = match service.resolve(&input).await {
            Ok(r) => r,
            Err(e) => {
                let m = &service.metrics;
                m.observe(
                    "Fetch",
                    &input.stage,
                    &input.family,
                    false,
                    request_started.elapsed(),
                );
                return Err(e.into());
            }
        };
        let (tx, rx) = mpsc::channel(64);
        let (stage, family) = (input.stage.clone(), input.family.clone());
        tokio::spawn(async move {
            let ok = fetch_stream(&service, resolutions, delivery, &stage, &family, tx).await;
            service
                .metrics
                .observe("Fetch", &stage, &family, ok, request_started.elapsed());
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let r = req.into_inner();
        let build_dir = std::path::PathBuf::from(&r.build_dir);
        require_absolute(&build_dir)?;
        let compression = match r.compression.as_str() {
            "" | "zstd" => Compression::Zstd,
            "xz" => Compression::Xz,
            other => {
                return Err(Status::invalid_argument(format!(
                    "compression `{other}` is neither `zstd` nor `xz`"
                )));
            }
        };
        let mut fingerprints = BTreeMap::new();
        for (name, fp) in r.fingerprints {
            let d: Blake3 = fp.parse().map_err(|e| {
                Status::invalid_argument(clip(format!("fingerprint of `{name}`: {e}")))
            })?;
            fingerprints.insert(name, d);
        }
        let input = PublishInput {
            build_dir,
            stage: r.stage,
            family: if r.family.is_empty() {
                "generic".into()
            } else {
                r.family
            },
            run: RunIdentity {
                repo: if r.repo.is_empty() {
                    "ROCm/TheRock".into()
                } else {
                    r.repo
                },
                workflow: r.workflow,
                run_id: r.run_id,
                commit: r.commit,
                platform: if r.platform.is_empty() {
                    "linux".into()
                } else {
                    r.platform
                },
                status: if r.status.is_empty() {
                    "success".into()
                } else {
                    r.status
                },
                head_repo: r.head_repo,
            },
            compression,
            fingerprints,
            reused_from: r.reused_from.into_iter().collect(),
        };
        let (started, stage, family) = (Instant::now(), input.stage.clone(), input.family.clone());
        let out = self.inner.publish(input).await;
        let m = &self.inner.metrics;
        m.observe("Publish", &stage, &family, out.is_ok(), started.elapsed());
        let out = out?;
        info!(archives = out.archives.len(), prefix = %out.prefix, "published");
        Ok(Response::new(pb::PublishResponse {
            bucket: out.bucket,
            prefix: out.prefix,
            archives: out
                .archives
                .into_iter()
                .map(|a| pb::PublishedArchive {
                    artifact: a.artifact,
                    key: a.key,
                    sha256: a.sha256.to_hex(),
                    compressed_size: a.compressed_size,
                    uncompressed_size: a.uncompressed_size,
                    files: a.files,
                    tree_digest: a.tree_digest.to_hex(),
                    fingerprint: a.fingerprint.to_hex(),
                    built_here: a.built_here,
                })
                .collect(),
            job_manifest_key: out.job_manifest_key,
            trusted: out.trusted,
        }))
    }

    async fn import(
        &self,
        req: Request<pb::ImportRequest>,
    ) -> Result<Response<pb::ImportResponse>, Status> {
        let r = req.into_inner();
        let platform = if r.platform.is_empty() {
            "linux".to_string()
        } else {
            r.platform
        };
        let started = Instant::now();
        let result = self
            .inner
            .import(&r.run_id, &platform, &r.repo, r.ingest)
            .await;
        let m = &self.inner.metrics;
        m.observe("Import", "", "", result.is_ok(), started.elapsed());
        let (listing, ingested) = result?;
        Ok(Response::new(pb::ImportResponse {
            prefix: listing.prefix,
            archives: listing.archives.into_iter().map(|a| a.key).collect(),
            ingested,
        }))
    }

    async fn stats(
        &self,
        _req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let store = self.inner.store().stats().map_err(ServiceError::from)?;
        let t = self.inner.backends().transfer_totals();
        let c = &self.inner.counters;
        Ok(Response::new(pb::StatsResponse {
            store_bytes: store.bytes,
            blobs: store.blobs,
            max_bytes: store.max_bytes.unwrap_or(0),
            trees: store.trees,
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            storage_gets: t.get_requests,
            storage_bytes: t.get_bytes,
            in_flight: c.in_flight.load(Ordering::Relaxed),
            ingests: store.ingests,
            evicted_blobs: store.evicted_blobs,
            evicted_bytes: store.evicted_bytes,
            resolve_requests: c.resolve_requests.load(Ordering::Relaxed),
            fetch_requests: c.fetch_requests.load(Ordering::Relaxed),
        }))
    }

    async fn gc(&self, req: Request<pb::GcRequest>) -> Result<Response<pb::GcResponse>, Status> {
        let quota = match req.into_inner().max_bytes {
            0 => self.max_bytes,
            n => n,
        };
        if quota == 0 {
            return Err(Status::invalid_argument(
                "no quota: pass max_bytes or configure `max_bytes` for cairnd",
            ));
        }
        let store = self.inner.store().clone();
        let report = tokio::task::spawn_blocking(move || store.gc(quota))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(ServiceError::from)?;
        let stats = self.inner.store().stats().map_err(ServiceError::from)?;
        Ok(Response::new(pb::GcResponse {
            evicted_blobs: report.evicted_blobs,
            evicted_bytes: report.evicted_bytes,
            store_bytes: stats.bytes,
        }))
    }

    async fn find_runs(
        &self,
        req: Request<pb::FindRunsRequest>,
    ) -> Result<Response<pb::FindRunsResponse>, Status> {
        let r = req.into_inner();
        let runs = self
            .inner
            .find_runs(&r.commit, &r.repo, &r.platform, r.allow_untrusted)
            .await?;
        Ok(Response::new(pb::FindRunsResponse {
            runs: runs.iter().map(commit_run_to_pb).collect(),
        }))
    }

    async fn run_trees(
        &self,
        req: Request<pb::RunTreesRequest>,
    ) -> Result<Response<pb::RunTreesResponse>, Status> {
        let r = req.into_inner();
        let trees = self
            .inner
            .run_trees(&r.run_id, &r.platform, &r.repo)
            .await?;
        Ok(Response::new(run_trees_to_pb(&trees)))
    }
}

/// How a Fetch hands the blobs to its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Their bytes, in chunks (any machine).
    Bytes,
    /// Their paths in the store, one `blob_path` event each (same machine, older clients).
    Paths,
    /// Their paths in the store, many per `blob_paths` event.
    PathBatches,
}

/// Produce one Fetch response stream; returns whether it completed without error.
async fn fetch_stream(
    service: &Arc<Service>,
    resolutions: Vec<Resolution>,
    delivery: Delivery,
    stage: &str,
    family: &str,
    tx: mpsc::Sender<Result<pb::FetchEvent, Status>>,
) -> bool {
    let started = Instant::now();
    if tx
        .send(event(Event::Resolved(resolved_to_pb(&resolutions))))
        .await
        .is_err()
    {
        return false;
    }
    // Make every found archive local, a few at a time (each is itself a parallel download).
    let mut found: Vec<_> = resolutions
        .iter()
        .filter_map(|r| r.chosen.as_ref())
        .flat_map(|(c, archives)| archives.iter().map(move |a| (c.clone(), a.clone())))
        .collect();
    // Largest first: a stage's time is decode-bound, and one archive often holds a third of its
    // bytes (amd-llvm's lib); started last, it would finish alone on one core while the others idle.
    found.sort_by_key(|(_, a)| std::cmp::Reverse(a.uncompressed_size.max(a.compressed_size)));
    let total = found.len() as u64;
    let mut leases = Vec::new();
    let mut locals = Vec::new();
    let mut results = futures::stream::iter(found.into_iter().map(|(c, a)| {
        let service = service.clone();
        async move { service.make_local(&c, &a).await }
    }))
    .buffer_unordered(ARCHIVES_IN_FLIGHT);
    let mut done = 0u64;
    while let Some(r) = results.next().await {
        match r {
            Ok((local, lease)) => {
                done += 1;
                let _ = tx
                    .send(event(Event::Progress(pb::Progress {
                        artifact: local.artifact.clone(),
                        bytes_done: done,
                        bytes_total: total,
                        message: if local.from_cas {
                            "from cache".into()
                        } else {
                            format!("downloaded {} bytes", local.downloaded_bytes)
                        },
                    })))
                    .await;
                leases.push(lease);
                locals.push(local);
            }
            Err(e) => {
                warn!(error = %e, "fetch failed");
                let _ = tx.send(Err(Status::from(e))).await;
                return false;
            }
        }
    }
    drop(results);
    locals.sort_by(|a, b| a.artifact.cmp(&b.artifact));
    for l in &locals {
        let source = if l.from_cas { "cas" } else { "storage" };
        service
            .metrics
            .served(source, stage, family, l.tree.total_size());
    }
    let mut files = 0u64;
    let mut bytes = 0u64;
    for l in &locals {
        files += l.tree.file_count() as u64;
        bytes += l.tree.total_size();
        let source = if l.from_cas { "cas" } else { "storage" };
        if tx
            .send(event(Event::Tree(tree_to_pb(
                &l.artifact,
                &l.tree_digest,
                &l.tree,
                source,
                &l.run_id,
            ))))
            .await
            .is_err()
        {
            return false;
        }
    }
    // Each unique blob once per request.
    let mut seen = HashSet::new();
    let unique: Vec<(Blake3, u64)> = locals
        .iter()
        .flat_map(|l| l.tree.entries.iter())
        .filter(|e| e.kind == EntryKind::File)
        .filter_map(|e| e.blake3.map(|d| (d, e.size)))
        .filter(|(d, _)| seen.insert(*d))
        .collect();
    drop(seen);
    let sent = match delivery {
        Delivery::Bytes => send_blob_contents(service, unique, &tx).await,
        Delivery::Paths => send_blob_paths(service, unique, &tx, false).await,
        Delivery::PathBatches => send_blob_paths(service, unique, &tx, true).await,
    };
    if !sent {
        return false;
    }
    let runs: std::collections::BTreeSet<String> =
        locals.iter().map(|l| l.run_id.clone()).collect();
    let summary = pb::FetchSummary {
        artifacts: locals.len() as u32,
        files,
        bytes,
        from_cas: locals.iter().filter(|l| l.from_cas).count() as u32,
        from_storage: locals.iter().filter(|l| !l.from_cas).count() as u32,
        storage_bytes: locals.iter().map(|l| l.downloaded_bytes).sum(),
        runs: runs.into_iter().collect(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    if tx.send(event(Event::Summary(summary))).await.is_err() {
        return false;
    }
    // Keep the leases until the client has copied the blobs and closed the stream.
    let _ = tokio::time::timeout(LEASE_GRACE, tx.closed()).await;
    drop(leases);
    true
}

/// Send where each blob lives: many per message when `batched`, else one per message. Looking them
/// up (an index read and a `stat` each, one read transaction per batch) runs on a blocking thread
/// that feeds the stream directly, so it overlaps with the encoding and the client's decoding
/// instead of alternating with them.
async fn send_blob_paths(
    service: &Arc<Service>,
    unique: Vec<(Blake3, u64)>,
    tx: &mpsc::Sender<Result<pb::FetchEvent, Status>>,
    batched: bool,
) -> bool {
    let svc = service.clone();
    let tx = tx.clone();
    let producer = tokio::task::spawn_blocking(move || {
        for batch in unique.chunks(BLOB_PATHS_PER_MESSAGE) {
            let digests: Vec<Blake3> = batch.iter().map(|(d, _)| *d).collect();
            let paths = match svc.store().blob_files(&digests) {
                Ok(p) => p,
                Err(err) => {
                    let _ = tx.blocking_send(Err(Status::from(ServiceError::from(err))));
                    return false;
                }
            };
            let paths = batch
                .iter()
                .zip(paths)
                .map(|((d, size), path)| pb::BlobPath {
                    blake3: d.to_hex(),
                    path: path.to_string_lossy().into_owned(),
                    size: *size,
                });
            let sent = if batched {
                let paths = paths.collect();
                tx.blocking_send(event(Event::BlobPaths(pb::BlobPaths { paths })))
                    .is_ok()
            } else {
                paths
                    .into_iter()
                    .all(|p| tx.blocking_send(event(Event::BlobPath(p))).is_ok())
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
    service: &Arc<Service>,
    unique: Vec<(Blake3, u64)>,
    tx: &mpsc::Sender<Result<pb::FetchEvent, Status>>,
) -> bool {
    for batch in unique.chunks(BLOB_PATHS_PER_MESSAGE) {
        let digests: Vec<Blake3> = batch.iter().map(|(d, _)| *d).collect();
        // Index reads and a stat per blob: off the runtime threads.
        let svc = service.clone();
        let paths =
            match tokio::task::spawn_blocking(move || svc.store().blob_files(&digests)).await {
                Ok(Ok(p)) => p,
                Ok(Err(err)) => {
                    let _ = tx.send(Err(Status::from(ServiceError::from(err)))).await;
                    return false;
                }
                Err(join) => {
                    let _ = tx
                        .send(Err(Status::internal(format!("blob lookup failed: {join}"))))
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

async fn send_blob_bytes(
    tx: &mpsc::Sender<Result<pb::FetchEvent, Status>>,
    digest: &Blake3,
    path: &std::path::Path,
) -> Result<(), ()> {
    use tokio::io::AsyncReadExt;
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => {
            let _ = tx
                .send(Err(Status::internal(format!(
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
                let _ = tx
                    .send(Err(Status::internal(format!("blob {digest}: {e}"))))
                    .await;
                return Err(());
            }
        };
        let last = n == 0;
        let chunk = pb::BlobChunk {
            blake3: digest.to_hex(),
            offset,
            data: buf[..n].to_vec(),
            last,
        };
        tx.send(event(Event::BlobChunk(chunk)))
            .await
            .map_err(|_| ())?;
        offset += n as u64;
        if last {
            return Ok(());
        }
    }
}

/// Where `run` listens.
pub enum Listener {
    /// A bound Unix socket.
    Unix(tokio::net::UnixListener),
    /// A bound TCP listener.
    Tcp(tokio::net::TcpListener),
}

/// Serve `cairn.v1`, health and reflection on `listener` until `shutdown` resolves; in-flight requests
/// finish (tonic's graceful shutdown) before this returns.
pub async fn run(
    service: CairnService,
    listener: Listener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    run_authenticated(service, listener, None, shutdown).await
}

/// [`run`], refusing every request (health and reflection included) that lacks the bearer token of
/// `auth` when it is given.
pub async fn run_authenticated(
    service: CairnService,
    listener: Listener,
    auth: Option<crate::auth::BearerAuth>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CairnServer<CairnService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cairn_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("descriptor sets are valid");
    let cairn = CairnServer::new(service)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20);
    let router = tonic::transport::Server::builder()
        .layer(tonic::service::InterceptorLayer::new(
            crate::auth::Access::new(auth),
        ))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(cairn);
    match listener {
        Listener::Unix(l) => {
            router
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(l),
                    shutdown,
                )
                .await
        }
        Listener::Tcp(l) => {
            router
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(l),
                    shutdown,
                )
                .await
        }
    }
}

fn commit_run_to_pb(r: &CommitRun) -> pb::RunRef {
    pb::RunRef {
        repo: r.run.repo.clone(),
        workflow: r.run.workflow.clone(),
        run_id: r.run.run_id.clone(),
        commit: r.run.commit.clone(),
        platform: r.run.platform.clone(),
        status: r.run.status.clone(),
        bucket: r.bucket.clone(),
        prefix: r.prefix.clone(),
        archives: r.archives.clone(),
        published_at: r.published_at.clone(),
        trusted: r.trusted,
        jobs: r
            .jobs
            .iter()
            .map(|j| pb::RunJob {
                stage: j.stage.clone(),
                family: j.family.clone(),
                archives: j.archives.clone(),
                published_at: j.published_at.clone(),
            })
            .collect(),
    }
}

fn run_trees_to_pb(t: &RunTrees) -> pb::RunTreesResponse {
    pb::RunTreesResponse {
        archives: t
            .archives
            .iter()
            .map(|a| {
                let (tree_digest, entries) = match &a.tree {
                    Some((digest, tree)) => (
                        digest.to_hex(),
                        tree_to_pb(&a.artifact, digest, tree, "", "").entries,
                    ),
                    None => (String::new(), Vec::new()),
                };
                pb::ArchiveInfo {
                    artifact: a.artifact.clone(),
                    key: a.key.clone(),
                    compressed_size: a.compressed_size,
                    tree_digest,
                    entries,
                    uncompressed_size: a.uncompressed_size,
                    files: a.files,
                    source: a.source.as_str().to_string(),
                }
            })
            .collect(),
        bucket: t.bucket.clone(),
        prefix: t.prefix.clone(),
        notes: t.notes.clone(),
        run: t.run.as_ref().map(|run| pb::RunRef {
            repo: run.repo.clone(),
            workflow: run.workflow.clone(),
            run_id: run.run_id.clone(),
            commit: run.commit.clone(),
            platform: run.platform.clone(),
            status: run.status.clone(),
            bucket: t.bucket.clone(),
            prefix: t.prefix.clone(),
            archives: Vec::new(),
            published_at: String::new(),
            trusted: false,
            jobs: Vec::new(),
        }),
    }
}
