//! The daemon's domain logic behind the gRPC handlers: resolve fingerprints to producers (with the
//! index as a cache of what storage said), make archives local (single-flight downloads straight into
//! ingest), publish a build directory, import a run published without Cairn.
//!
//! `server.rs` converts wire types to the types here and back; nothing here knows about protobuf.
//!
//! Trust: producer records of trusted runs live at `cairn/fp/{fp}/...`; runs the layout classifies as
//! untrusted (forks, external bucket) write theirs under `untrusted/cairn/fp/{fp}/...` of the backend
//! serving their bucket. The resolver reads the untrusted area only when the request allows it, and a
//! record's trust comes from where it was read and from the daemon's configuration, never from the
//! record itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::{info, instrument, warn};

use cairn_fingerprint::layout::{
    CI_EXTERNAL_BUCKET, LEGACY_EXTERNAL_BUCKET, RunOutputRoot, RunSpec, producer_records_prefix,
    tree_manifest_key,
};
use cairn_fingerprint::names::{ArchiveName, ArtifactName, parse_sha256sum};
use cairn_fingerprint::{Blake3, Compression, Sha256, Tree};

use crate::archive;
use crate::backends::{Backend, Backends};
use crate::evict::Lease;
use crate::records::{
    ArchiveRecord, CommitRecord, JOB_MANIFEST_VERSION, JobManifest, PRODUCER_RECORD_VERSION,
    ProducerRecord, RunIdentity, now_rfc3339,
};
use crate::resolve::{self, ArchiveFilter, Candidate, Policy, Resolution, Wanted};
use crate::storage::transfer::{DownloadOptions, download};
use crate::storage::{PutBody, PutOutcome, Storage, StorageError};
use crate::store::LocalStore;

/// Longest artifact name, stage or family a request may carry.
pub const MAX_NAME_LEN: usize = 256;

/// Key prefix under which untrusted runs file their producer records.
pub const UNTRUSTED_AREA: &str = "untrusted/";

/// Errors of the service, each carrying what it was about. `server.rs` maps them to gRPC codes.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed (bad name, digest, path).
    #[error("{0}")]
    InvalidArgument(String),
    /// Something the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Storage failed; a retry may help when it is transient.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The local store failed or refused an archive.
    #[error(transparent)]
    Store(#[from] crate::error::StoreError),
    /// Downloaded content does not match what a record promised.
    #[error("{0}")]
    DataLoss(String),
    /// Anything else (I/O on the build dir, a task that panicked).
    #[error("{0}")]
    Internal(String),
}

type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Counters reported by `Stats` (relaxed atomics: statistics only).
#[derive(Debug, Default)]
pub struct Counters {
    /// Archives served from the CAS without a download.
    pub hits: AtomicU64,
    /// Archives that had to be downloaded.
    pub misses: AtomicU64,
    /// Downloads+ingests running now.
    pub in_flight: AtomicU64,
    /// Resolve requests (including the resolve step of fetches).
    pub resolve_requests: AtomicU64,
    /// Fetch requests.
    pub fetch_requests: AtomicU64,
}

/// A resolve request in domain terms.
#[derive(Debug, Clone)]
pub struct ResolveInput {
    /// Build stage (informational; the client chose the artifacts).
    pub stage: String,
    /// GPU family.
    pub family: String,
    /// `linux` or `windows`.
    pub platform: String,
    /// Archives and their fingerprints.
    pub wanted: Vec<Wanted>,
    /// What the caller accepts.
    pub policy: Policy,
    /// Components left out when expanding artifact names.
    pub exclude_components: Vec<String>,
}

/// One archive made local.
#[derive(Debug, Clone)]
pub struct LocalArchive {
    /// `{name}_{component}_{family}`.
    pub artifact: String,
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

/// A publish request in domain terms.
#[derive(Debug, Clone)]
pub struct PublishInput {
    /// Build directory holding `artifacts/{name}_{component}_{family}/`.
    pub build_dir: PathBuf,
    /// Stage the job built.
    pub stage: String,
    /// Family of the job.
    pub family: String,
    /// The run.
    pub run: RunIdentity,
    /// Archive compression.
    pub compression: Compression,
    /// Fingerprint per artifact name; only artifacts named here are published.
    pub fingerprints: BTreeMap<String, Blake3>,
    /// Artifact name → run it was reused from (not built by this job).
    pub reused_from: BTreeMap<String, String>,
}

/// What a publish wrote.
#[derive(Debug, Clone)]
pub struct PublishOutcome {
    /// Bucket.
    pub bucket: String,
    /// Run prefix.
    pub prefix: String,
    /// The archives.
    pub archives: Vec<ArchiveRecord>,
    /// Key of the job manifest.
    pub job_manifest_key: String,
    /// Whether trusted builds will read it.
    pub trusted: bool,
}

/// One archive of a run listing (imported runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedArchive {
    /// `{name}_{component}_{family}`.
    pub artifact: String,
    /// Object key.
    pub key: String,
    /// Object size.
    pub size: u64,
}

/// What storage holds for one run (cached forever: finished runs never change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunListing {
    /// Bucket.
    pub bucket: String,
    /// Run prefix.
    pub prefix: String,
    /// Archives, `.tar.zst` preferred over `.tar.xz` for the same artifact.
    pub archives: Vec<ListedArchive>,
}

#[derive(Serialize, Deserialize)]
struct CachedCandidates {
    /// Unix seconds when cached; only consulted for negative entries.
    at: u64,
    records: Vec<(String, bool)>,
}

/// The service: shared by every request.
#[derive(Debug)]
pub struct Service {
    store: Arc<LocalStore>,
    backends: Backends,
    negative_ttl: Duration,
    download: DownloadOptions,
    /// Per storage object, a lock held while it is downloaded and ingested, so N concurrent requests
    /// cause one download; the others wait and then find it in the index. std Mutex: held only to
    /// look up the entry, never across an await.
    downloads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per fingerprint and area, a lock held while storage is listed for its producer records, so
    /// N concurrent cold resolves of one stage cause one LIST (and one GET per record), not N.
    lookups: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Counters for `Stats`.
    pub counters: Counters,
    /// Per-request metrics for `/metrics` and `/status`.
    pub metrics: crate::metrics::Metrics,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(e.to_string())
}

impl Service {
    /// A service over an open store and its backends.
    pub fn new(store: Arc<LocalStore>, backends: Backends, negative_ttl: Duration) -> Service {
        Service {
            store,
            backends,
            negative_ttl,
            download: DownloadOptions::default(),
            downloads: Mutex::new(HashMap::new()),
            lookups: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            metrics: crate::metrics::Metrics::default(),
        }
    }

    /// The same service downloading with `options` (chunking, concurrency, resume budget) instead of
    /// the defaults; tests use it for quick retries.
    pub fn with_download_options(mut self, options: DownloadOptions) -> Service {
        self.download = options;
        self
    }

    /// The local store.
    pub fn store(&self) -> &Arc<LocalStore> {
        &self.store
    }

    /// The backends.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    fn backend(&self, bucket: &str) -> Result<&Backend> {
        self.backends.for_bucket(bucket).ok_or_else(|| {
            ServiceError::NotFound(format!(
                "no storage backend configured for bucket `{bucket}` (add a [[storage]] entry or `bucket = \"*\"`)"
            ))
        })
    }

    // ----- resolve -----

    /// Producer records for one fingerprint, from the index cache or one LIST per backend area.
    async fn candidates(&self, fp: &Blake3, allow_untrusted: bool) -> Result<Vec<Candidate>> {
        let mut out = Vec::new();
        let mut areas = vec![("", "fp")];
        if allow_untrusted {
            areas.push((UNTRUSTED_AREA, "fpu"));
        }
        for (area, tag) in areas {
            let cache_key = format!("{tag}:{fp}");
            if let Some(cached) = self.cached_candidates(&cache_key, fp)? {
                out.extend(cached);
                continue;
            }
            let lock = {
                let mut map = self.lookups.lock().expect("lookup map poisoned");
                map.entry(cache_key.clone()).or_default().clone()
            };
            let _guard = lock.lock().await;
            // Another request may have listed this fingerprint while we waited.
            if let Some(cached) = self.cached_candidates(&cache_key, fp)? {
                out.extend(cached);
                continue;
            }
            let mut found: Vec<(String, bool)> = Vec::new();
            for backend in self.backends.all() {
                let prefix = format!("{area}{}", producer_records_prefix(fp));
                let listing = backend.storage.list(&prefix, None).await?;
                for obj in listing.objects {
                    let bytes = match backend.storage.get_bytes(&obj.key).await {
                        Ok(b) => b,
                        Err(e) if e.is_not_found() => continue,
                        Err(e) => return Err(e.into()),
                    };
                    match ProducerRecord::parse(&bytes, &obj.key, fp) {
                        Ok(record) => {
                            let trusted = area.is_empty()
                                && backend.trusted
                                && record.bucket != CI_EXTERNAL_BUCKET
                                && record.bucket != LEGACY_EXTERNAL_BUCKET;
                            found.push((String::from_utf8_lossy(&bytes).into_owned(), trusted));
                            out.push(Candidate { record, trusted });
                        }
                        Err(e) => {
                            warn!(key = %obj.key, error = %e, "ignoring invalid producer record")
                        }
                    }
                }
            }
            let cached = CachedCandidates {
                at: now_secs(),
                records: found,
            };
            let json = serde_json::to_vec(&cached).map_err(internal)?;
            self.store
                .index()
                .put_meta(&cache_key, &json)
                .map_err(crate::error::StoreError::from)?;
        }
        Ok(out)
    }

    /// The cached candidates of `cache_key`, if the cache still answers: positive answers are kept
    /// forever (records are immutable), "none found" only for the negative TTL so a new producer is
    /// seen soon.
    fn cached_candidates(&self, cache_key: &str, fp: &Blake3) -> Result<Option<Vec<Candidate>>> {
        let cached = self
            .store
            .index()
            .meta(cache_key)
            .map_err(crate::error::StoreError::from)?
            .and_then(|bytes| serde_json::from_slice::<CachedCandidates>(&bytes).ok());
        let Some(cached) = cached else {
            return Ok(None);
        };
        if cached.records.is_empty()
            && now_secs().saturating_sub(cached.at) >= self.negative_ttl.as_secs()
        {
            return Ok(None);
        }
        Ok(Some(
            cached
                .records
                .into_iter()
                .filter_map(|(json, trusted)| {
                    ProducerRecord::parse(json.as_bytes(), cache_key, fp)
                        .ok()
                        .map(|record| Candidate { record, trusted })
                })
                .collect(),
        ))
    }

    /// Resolve every wanted archive. Fingerprints are looked up concurrently, once each.
    #[instrument(skip_all, fields(stage = %input.stage, family = %input.family, n = input.wanted.len()))]
    pub async fn resolve(&self, input: &ResolveInput) -> Result<Vec<Resolution>> {
        self.counters
            .resolve_requests
            .fetch_add(1, Ordering::Relaxed);
        let mut fps = BTreeSet::new();
        if let Some(run_id) = &input.policy.run_id
            && run_id.len() > MAX_NAME_LEN
        {
            return Err(ServiceError::InvalidArgument(format!(
                "run id of {} bytes is longer than the limit of {MAX_NAME_LEN}",
                run_id.len()
            )));
        }
        for w in &input.wanted {
            // Real names are a few dozen bytes; a huge one is a malformed request, not a lookup.
            if w.artifact.len() > MAX_NAME_LEN {
                return Err(ServiceError::InvalidArgument(format!(
                    "artifact name of {} bytes is longer than the limit of {MAX_NAME_LEN}",
                    w.artifact.len()
                )));
            }
            let valid = if w.artifact.contains('_') {
                ArtifactName::parse(&w.artifact).map(|_| ())
            } else {
                // A bare artifact name: validate it as the name field of an archive name.
                ArtifactName::new(
                    &w.artifact,
                    cairn_fingerprint::names::Component::Lib,
                    "generic",
                )
                .map(|_| ())
            };
            valid.map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
            let fp: Blake3 = w.fingerprint.parse().map_err(
                |e: cairn_fingerprint::digest::DigestParseError| {
                    ServiceError::InvalidArgument(format!("artifact `{}`: {e}", w.artifact))
                },
            )?;
            fps.insert(fp);
        }
        let lookups = fps.iter().map(|fp| async move {
            (
                fp.to_hex(),
                self.candidates(fp, input.policy.allow_untrusted).await,
            )
        });
        let mut candidates = BTreeMap::new();
        for (fp, result) in futures::future::join_all(lookups).await {
            candidates.insert(fp, result?);
        }
        let filter = ArchiveFilter {
            family: input.family.clone(),
            exclude_components: input.exclude_components.clone(),
        };
        let mut out = resolve::resolve(&input.wanted, &candidates, &input.policy, &filter);
        if let Some(run_id) = &input.policy.run_id {
            self.explicit_run_fallback(&mut out, run_id, &input.platform, &filter)
                .await?;
        }
        Ok(out)
    }

    /// With an explicit run id, archives without a matching producer record are taken from that run's
    /// listing by name (the user asked for that run; the explanation says the fingerprint is unverified).
    async fn explicit_run_fallback(
        &self,
        out: &mut [Resolution],
        run_id: &str,
        platform: &str,
        filter: &ArchiveFilter,
    ) -> Result<()> {
        if out.iter().all(|r| r.chosen.is_some()) {
            return Ok(());
        }
        let spec = RunSpec::new(
            run_id,
            platform
                .parse()
                .map_err(|e| ServiceError::InvalidArgument(format!("{e}")))?,
        );
        let root = RunOutputRoot::from_run(&spec)
            .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        let cached = self.cached_run_listing(&root)?;
        let from_cache = cached.is_some();
        let listing = match cached {
            Some(listing) => listing,
            None => self.list_run(&root).await?,
        };
        pick_from_listing(out, &listing, &spec, &root, filter, run_id)?;
        if from_cache && out.iter().any(|r| r.chosen.is_none()) {
            // A run still in progress gains archives after it was first listed (the next stage's
            // jobs fetch what the previous stage just uploaded): list it again before calling
            // anything missing.
            let fresh = self.list_run(&root).await?;
            pick_from_listing(out, &fresh, &spec, &root, filter, run_id)?;
        }
        Ok(())
    }

    // ----- fetch -----

    /// Make one resolved archive local: from the CAS when its tree's blobs are all present, else one
    /// download per object across all concurrent requests, streamed into ingest and verified against the
    /// record's SHA-256 (or the `.sha256sum` sidecar) and tree digest. Returns it leased.
    #[instrument(skip_all, fields(artifact = %archive.artifact, key = %archive.key))]
    pub async fn make_local(
        &self,
        candidate: &Candidate,
        archive: &ArchiveRecord,
    ) -> Result<(LocalArchive, Lease)> {
        let from_record = archive.sha256.0 != [0; 32];
        let run_id = candidate.record.run.run_id.clone();
        let flight_key = format!("{}/{}", candidate.record.bucket, archive.key);
        // Fast path: the tree (by digest from the record, or by object key) is fully local.
        if let Some(hit) = self.serve_from_cas(archive, &flight_key, &run_id)? {
            return Ok(hit);
        }
        let lock = {
            let mut map = self.downloads.lock().expect("download map poisoned");
            map.entry(flight_key.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        // Another request may have downloaded it while we waited for the lock.
        if let Some(hit) = self.serve_from_cas(archive, &flight_key, &run_id)? {
            return Ok(hit);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = self
            .download_and_ingest(candidate, archive, &flight_key, from_record)
            .await;
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        let (tree_digest, tree, bytes) = result?;
        let lease = self.store.lease(&tree)?;
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
        archive: &ArchiveRecord,
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

    fn local_tree(
        &self,
        archive: &ArchiveRecord,
        flight_key: &str,
    ) -> Result<Option<(Blake3, Arc<Tree>)>> {
        if archive.tree_digest.0 != [0; 32]
            && let Some(tree) = self.store.tree(&archive.tree_digest)?
            && self.store.has_blobs(&tree)?
        {
            return Ok(Some((archive.tree_digest, tree)));
        }
        if let Some(k) = self.store.tree_for_key(flight_key)?
            && (archive.sha256.0 == [0; 32] || k.archive_sha256 == archive.sha256)
            && self.store.has_blobs(&k.tree)?
        {
            return Ok(Some((k.tree_digest, k.tree)));
        }
        Ok(None)
    }

    async fn download_and_ingest(
        &self,
        candidate: &Candidate,
        archive: &ArchiveRecord,
        flight_key: &str,
        from_record: bool,
    ) -> Result<(Blake3, Arc<Tree>, u64)> {
        let backend = self.backend(&candidate.record.bucket)?;
        let storage: Arc<dyn Storage> = backend.storage.clone();
        let compression = Compression::from_file_name(&archive.key).ok_or_else(|| {
            ServiceError::InvalidArgument(format!(
                "`{}` is neither .tar.zst nor .tar.xz",
                archive.key
            ))
        })?;
        let expected = if from_record {
            Some(archive.sha256)
        } else {
            // Imported runs: the sidecar, when the run has one, is the only digest we can check against.
            match storage
                .get_bytes(&format!("{}.sha256sum", archive.key))
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
            }
        };
        let size = (archive.compressed_size > 0).then_some(archive.compressed_size);
        let fetched = async {
            let dl = download(storage.clone(), &archive.key, size, &self.download).await?;
            let bytes = dl.size();
            info!(key = %archive.key, bytes, "downloading");
            let outcome = self
                .store
                .ingest_async(flight_key, compression, dl.into_async_read(), expected)
                .await
                .map_err(storage_first)?;
            Ok::<_, ServiceError>((outcome, bytes))
        }
        .await;
        let (outcome, bytes) = match fetched {
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
        if from_record && archive.tree_digest != outcome.tree_digest {
            return Err(ServiceError::DataLoss(format!(
                "archive `{}`: tree digest mismatch: the producer record says {}, its content hashes to {}",
                archive.key, archive.tree_digest, outcome.tree_digest
            )));
        }
        Ok((outcome.tree_digest, outcome.tree, bytes))
    }

    // ----- publish -----

    /// Publish a build directory: archives and sidecars first, then tree manifests, the job manifest,
    /// producer records and the commit index entry — records last, so none points at a missing object.
    #[instrument(skip_all, fields(stage = %input.stage, family = %input.family, run = %input.run.run_id))]
    pub async fn publish(&self, input: PublishInput) -> Result<PublishOutcome> {
        for (what, value) in [("stage", &input.stage), ("family", &input.family)] {
            if value.len() > MAX_NAME_LEN {
                return Err(ServiceError::InvalidArgument(format!(
                    "{what} of {} bytes is longer than the limit of {MAX_NAME_LEN}",
                    value.len()
                )));
            }
        }
        let spec = run_spec(&input.run)?;
        let root = RunOutputRoot::from_run(&spec)
            .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        let backend = self.backend(root.bucket())?.clone();
        let artifacts_dir = input.build_dir.join("artifacts");
        let mut dirs = Vec::new();
        let entries = std::fs::read_dir(&artifacts_dir).map_err(|e| {
            ServiceError::InvalidArgument(format!("cannot read `{}`: {e}", artifacts_dir.display()))
        })?;
        for entry in entries {
            let entry = entry.map_err(internal)?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if !entry.path().is_dir() {
                continue;
            }
            let Ok(name) = ArtifactName::parse(&file_name) else {
                continue;
            };
            if let Some(fp) = input.fingerprints.get(&name.name) {
                dirs.push((entry.path(), name, *fp));
            }
        }
        dirs.sort_by_key(|d| d.1.to_string());
        if dirs.is_empty() {
            return Err(ServiceError::NotFound(format!(
                "no artifact directory under `{}` matches the {} artifact(s) to publish",
                artifacts_dir.display(),
                input.fingerprints.len()
            )));
        }

        // Compress in parallel on the blocking pool; ingest each archive (warms this machine's CAS and
        // gives the tree).
        let cache = input.build_dir.join(".upload_cache");
        std::fs::create_dir_all(&cache)
            .map_err(|e| internal(format!("`{}`: {e}", cache.display())))?;
        let compression = input.compression;
        let level = match compression {
            Compression::Zstd => 3,
            Compression::Xz => 6,
        };
        let store = self.store.clone();
        let jobs: Vec<(PathBuf, ArtifactName, Blake3)> = dirs;
        let built = tokio::task::spawn_blocking(move || {
            use rayon::prelude::*;
            jobs.into_par_iter()
                .map(|(dir, name, fp)| -> Result<_> {
                    let file_name = name.archive(compression).to_string();
                    let path = cache.join(&file_name);
                    let info =
                        archive::create_archive(&dir, &path, compression, level).map_err(|e| {
                            ServiceError::InvalidArgument(format!("artifact `{name}`: {e}"))
                        })?;
                    archive::write_sha256sum(&path, &info.sha256).map_err(internal)?;
                    let outcome = store.ingest_file(
                        &format!("publish/{}", info.sha256),
                        &path,
                        Some(info.sha256),
                    )?;
                    Ok((
                        name,
                        fp,
                        file_name,
                        path,
                        info,
                        outcome.tree_digest,
                        outcome.tree,
                    ))
                })
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(internal)??;

        let published_at = now_rfc3339();
        let mut archives = Vec::new();
        let uploads = built
            .iter()
            .map(|(name, fp, file_name, path, info, tree_digest, tree)| {
                let storage = backend.storage.clone();
                let key = root.artifact_key(file_name);
                let sidecar = root.sha256sum_key(file_name);
                let reused = input
                    .reused_from
                    .get(&name.name)
                    .cloned()
                    .unwrap_or_default();
                let record = ArchiveRecord {
                    artifact: name.to_string(),
                    name: name.name.clone(),
                    component: name.component.to_string(),
                    family: name.family.clone(),
                    fingerprint: *fp,
                    key: key.clone(),
                    sha256: info.sha256,
                    compressed_size: info.compressed_size,
                    uncompressed_size: info.uncompressed_size,
                    files: info.files,
                    tree_digest: *tree_digest,
                    built_here: reused.is_empty(),
                    reused_from_run_id: reused,
                };
                let tree_json = Bytes::from(tree.to_json());
                let tree_key = tree_manifest_key(tree_digest);
                let path = path.clone();
                let sha = info.sha256;
                async move {
                    storage.put(&key, PutBody::File(path)).await?;
                    storage
                        .put(&sidecar, PutBody::Bytes(Bytes::from(format!("{sha}\n"))))
                        .await?;
                    storage.put_if_absent(&tree_key, tree_json).await?;
                    Ok::<_, ServiceError>(record)
                }
            });
        for r in futures::future::join_all(uploads).await {
            archives.push(r?);
        }

        // Records last.
        let run_prefix = root.prefix();
        let manifest = JobManifest {
            version: JOB_MANIFEST_VERSION.into(),
            run: input.run.clone(),
            stage: input.stage.clone(),
            family: input.family.clone(),
            bucket: root.bucket().to_string(),
            prefix: run_prefix.clone(),
            published_at: published_at.clone(),
            archives: archives.clone(),
        };
        let job_manifest_key = root
            .job_manifest_key(&input.stage, &input.family)
            .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        backend
            .storage
            .put(
                &job_manifest_key,
                PutBody::Bytes(Bytes::from(
                    serde_json::to_vec_pretty(&manifest).map_err(internal)?,
                )),
            )
            .await?;

        let area = if root.trusted() { "" } else { UNTRUSTED_AREA };
        let mut by_name: BTreeMap<String, Vec<ArchiveRecord>> = BTreeMap::new();
        for a in &archives {
            by_name.entry(a.name.clone()).or_default().push(a.clone());
        }
        for (name, group) in by_name {
            let fp = group[0].fingerprint;
            let record = ProducerRecord {
                version: PRODUCER_RECORD_VERSION.into(),
                fingerprint: fp,
                name,
                run: input.run.clone(),
                stage: input.stage.clone(),
                bucket: root.bucket().to_string(),
                prefix: run_prefix.clone(),
                published_at: published_at.clone(),
                archives: group,
            };
            let key = format!("{area}{}", root.producer_record_key(&fp));
            let body = Bytes::from(serde_json::to_vec_pretty(&record).map_err(internal)?);
            match backend.storage.put_if_absent(&key, body).await? {
                PutOutcome::Created => {}
                PutOutcome::AlreadyExists => {
                    info!(%key, "producer record already exists; keeping the first")
                }
            }
            // A fingerprint that now has a producer must not stay negatively cached here.
            let _ = self.store.index().remove_meta(&format!("fp:{fp}"));
            let _ = self.store.index().remove_meta(&format!("fpu:{fp}"));
        }

        if let Ok(commit_key) = root.commit_index_key(&input.run.commit) {
            let entry = CommitRecord {
                run: input.run.clone(),
                bucket: root.bucket().to_string(),
                prefix: run_prefix.clone(),
                stage: input.stage.clone(),
                family: input.family.clone(),
                archives: archives
                    .iter()
                    .map(|a| a.key.rsplit('/').next().unwrap_or(&a.key).to_string())
                    .collect(),
                published_at,
            };
            let key = format!("{area}{commit_key}/{}-{}.json", input.stage, input.family);
            backend
                .storage
                .put(
                    &key,
                    PutBody::Bytes(Bytes::from(
                        serde_json::to_vec_pretty(&entry).map_err(internal)?,
                    )),
                )
                .await?;
        }
        Ok(PublishOutcome {
            bucket: root.bucket().to_string(),
            prefix: run_prefix,
            archives,
            job_manifest_key,
            trusted: root.trusted(),
        })
    }

    // ----- import -----

    /// The archives of a run, listed once (`Prefix="{prefix}/"`, `Delimiter="/"`) and remembered;
    /// callers that miss an archive in a remembered listing ask [`Service::list_run`] again.
    pub async fn run_listing(&self, root: &RunOutputRoot) -> Result<RunListing> {
        match self.cached_run_listing(root)? {
            Some(listing) => Ok(listing),
            None => self.list_run(root).await,
        }
    }

    /// The remembered listing of a run, if any.
    fn cached_run_listing(&self, root: &RunOutputRoot) -> Result<Option<RunListing>> {
        let bytes = self
            .store
            .index()
            .meta(&run_listing_key(root))
            .map_err(crate::error::StoreError::from)?;
        Ok(bytes.and_then(|b| serde_json::from_slice::<RunListing>(&b).ok()))
    }

    /// List the run now (one LIST) and remember the result for [`Service::run_listing`].
    pub async fn list_run(&self, root: &RunOutputRoot) -> Result<RunListing> {
        let prefix = root.prefix();
        let cache_key = run_listing_key(root);
        let backend = self.backend(root.bucket())?;
        let listing = backend
            .storage
            .list(&format!("{prefix}/"), Some("/"))
            .await?;
        let mut best: BTreeMap<String, (Compression, ListedArchive)> = BTreeMap::new();
        for obj in listing.objects {
            let file_name = obj.key.rsplit('/').next().unwrap_or(&obj.key);
            let Ok(archive) = ArchiveName::parse(file_name) else {
                continue;
            };
            let artifact = archive.artifact.to_string();
            let entry = ListedArchive {
                artifact: artifact.clone(),
                key: obj.key.clone(),
                size: obj.size,
            };
            match best.get(&artifact) {
                // Prefer `.tar.zst` when both exist, as TheRock's artifact_manager does.
                Some((Compression::Zstd, _)) => {}
                _ => {
                    best.insert(artifact, (archive.compression, entry));
                }
            }
        }
        let run = RunListing {
            bucket: root.bucket().to_string(),
            prefix,
            archives: best.into_values().map(|(_, a)| a).collect(),
        };
        if !run.archives.is_empty() {
            let json = serde_json::to_vec(&run).map_err(internal)?;
            self.store
                .index()
                .put_meta(&cache_key, &json)
                .map_err(crate::error::StoreError::from)?;
        }
        Ok(run)
    }

    /// Import a run published without Cairn; with `ingest`, make every archive local now.
    pub async fn import(
        &self,
        run_id: &str,
        platform: &str,
        repo: &str,
        ingest: bool,
    ) -> Result<(RunListing, u32)> {
        let mut spec = RunSpec::new(
            run_id,
            platform
                .parse()
                .map_err(|e| ServiceError::InvalidArgument(format!("{e}")))?,
        );
        if !repo.is_empty() {
            spec.repo = repo
                .parse()
                .map_err(|e| ServiceError::InvalidArgument(format!("{e}")))?;
        }
        let root = RunOutputRoot::from_run(&spec)
            .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        // Asked for explicitly: list now, so importing a run again picks up what it gained since.
        let listing = self.list_run(&root).await?;
        if listing.archives.is_empty() {
            return Err(ServiceError::NotFound(format!(
                "run `{run_id}` has no archives under `{}`",
                root.s3_uri()
            )));
        }
        let mut ingested = 0;
        if ingest {
            for a in &listing.archives {
                let name = ArtifactName::parse(&a.artifact)
                    .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
                let (candidate, record) =
                    listed_candidate(&spec, &listing, a, &name, root.trusted());
                let _ = self.make_local(&candidate, &record).await?;
                ingested += 1;
            }
        }
        Ok((listing, ingested))
    }
}

/// An ingest that failed because its download failed (the download reader surfaces storage errors as
/// I/O errors) is a storage failure, not a refused archive: report it as one, so clients see
/// `Unavailable` or `NotFound` and may retry, instead of `DataLoss`.
fn storage_first(e: crate::error::StoreError) -> ServiceError {
    use crate::archive::ArchiveError;
    use crate::error::StoreError;
    let cause = match e.root() {
        StoreError::Archive {
            source: ArchiveError::Read(io) | ArchiveError::ReadMember { source: io, .. },
            ..
        } => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<StorageError>()),
        _ => None,
    };
    match cause {
        Some(storage) => ServiceError::Storage(storage.clone()),
        None => e.into(),
    }
}

/// Where a run's listing is remembered in the index.
fn run_listing_key(root: &RunOutputRoot) -> String {
    format!("run:{}/{}", root.bucket(), root.prefix())
}

/// Take the archives `out`'s unresolved artifacts name from `listing` (explicit-run fallback).
fn pick_from_listing(
    out: &mut [Resolution],
    listing: &RunListing,
    spec: &RunSpec,
    root: &RunOutputRoot,
    filter: &ArchiveFilter,
    run_id: &str,
) -> Result<()> {
    for r in out.iter_mut().filter(|r| r.chosen.is_none()) {
        let mut picked = Vec::new();
        let mut candidate = None;
        for a in &listing.archives {
            let name = ArtifactName::parse(&a.artifact)
                .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
            let wanted = if r.artifact.contains('_') {
                a.artifact == r.artifact
            } else {
                name.name == r.artifact
                    && !filter
                        .exclude_components
                        .iter()
                        .any(|c| c == name.component.as_str())
                    && (filter.family.is_empty()
                        || cairn_fingerprint::names::family_matches(&name.family, &filter.family))
            };
            if wanted {
                let (c, archive) = listed_candidate(spec, listing, a, &name, root.trusted());
                candidate.get_or_insert(c);
                picked.push(archive);
            }
        }
        if let Some(c) = candidate {
            r.explanation.insert(
                0,
                format!("explicit run {run_id}: {} archive(s) taken from the run listing by name; fingerprints not verified", picked.len()),
            );
            r.chosen = Some((c, picked));
        }
    }
    Ok(())
}

fn listed_candidate(
    spec: &RunSpec,
    listing: &RunListing,
    a: &ListedArchive,
    name: &ArtifactName,
    trusted: bool,
) -> (Candidate, ArchiveRecord) {
    let record = ProducerRecord {
        version: PRODUCER_RECORD_VERSION.into(),
        fingerprint: Blake3([0; 32]),
        name: name.name.clone(),
        run: RunIdentity {
            repo: spec.repo.to_string(),
            workflow: String::new(),
            run_id: spec.run_id.clone(),
            commit: String::new(),
            platform: spec.platform.to_string(),
            status: "unknown".into(),
            head_repo: String::new(),
        },
        stage: String::new(),
        bucket: listing.bucket.clone(),
        prefix: listing.prefix.clone(),
        published_at: String::new(),
        archives: vec![],
    };
    let archive = ArchiveRecord {
        artifact: a.artifact.clone(),
        name: name.name.clone(),
        component: name.component.to_string(),
        family: name.family.clone(),
        fingerprint: Blake3([0; 32]),
        key: a.key.clone(),
        sha256: Sha256([0; 32]),
        compressed_size: a.size,
        uncompressed_size: 0,
        files: 0,
        tree_digest: Blake3([0; 32]),
        built_here: true,
        reused_from_run_id: String::new(),
    };
    (Candidate { record, trusted }, archive)
}

/// The layout spec of a run identity.
pub fn run_spec(run: &RunIdentity) -> Result<RunSpec> {
    let platform = run
        .platform
        .parse()
        .map_err(|e| ServiceError::InvalidArgument(format!("{e}")))?;
    let mut spec = RunSpec::new(&run.run_id, platform);
    if !run.repo.is_empty() {
        spec.repo = run
            .repo
            .parse()
            .map_err(|e| ServiceError::InvalidArgument(format!("{e}")))?;
    }
    if !run.head_repo.is_empty() {
        spec.head_repo = Some(
            run.head_repo
                .parse()
                .map_err(|e| ServiceError::InvalidArgument(format!("{e}")))?,
        );
    }
    Ok(spec)
}

/// Whether `path` is absolute (publish reads build dirs by absolute path only).
pub fn require_absolute(path: &Path) -> Result<()> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(ServiceError::InvalidArgument(format!(
            "build dir `{}` must be an absolute path",
            path.display()
        )))
    }
}
