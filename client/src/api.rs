//! The daemon's answers in client terms: serializable types converted from the `cairn.v1` wire
//! messages, thin wrappers for the unary RPCs (`Resolve`, `Publish`, `Import`, `Stats`, `Gc`,
//! `Verify`, `Pin`, `Unpin`), and
//! [`ClientError`], the one error type of online operations.
//!
//! The types here are what `cairn --json` prints, so their field names are part of the CLI contract.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::connect::DaemonChannel;
use cairn_fingerprint::Blake3;
use cairn_proto::v1 as pb;
use cairn_proto::v1::cairn_client::CairnClient;
use serde::Serialize;

use crate::connect::ConnectError;
use crate::materialize::MaterializeError;

/// What can go wrong talking to `cairnd` and materializing what it sent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon is not reachable.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The daemon answered with an error.
    #[error("cairnd refused `{rpc}`: {message} (code {code:?})")]
    Rpc {
        /// The RPC.
        rpc: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The daemon's message.
        message: String,
    },
    /// The connection broke while a call was running (daemon killed, stopped or crashed).
    #[error("lost the connection to cairnd during `{rpc}` (was the daemon stopped?): {message}")]
    Lost {
        /// The RPC.
        rpc: &'static str,
        /// What the transport said.
        message: String,
    },
    /// The daemon sent something the protocol does not allow.
    #[error("cairnd broke the protocol during `{rpc}`: {detail}")]
    Protocol {
        /// The RPC.
        rpc: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A tree whose entries do not hash to the digest the daemon announced.
    #[error("tree of `{artifact}` hashes to {actual}, not to the {expected} cairnd announced")]
    TreeDigest {
        /// The archive.
        artifact: String,
        /// The announced digest.
        expected: Blake3,
        /// What its entries hash to.
        actual: Blake3,
    },
    /// A streamed blob whose bytes do not hash to its name.
    #[error("blob {expected}: the received bytes hash to {actual}")]
    BlobDigest {
        /// The blob's name.
        expected: Blake3,
        /// What the received bytes hash to.
        actual: Blake3,
    },
    /// Local file I/O (spool, destination).
    #[error("`{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing the trees into the destination failed.
    #[error(transparent)]
    Materialize(#[from] MaterializeError),
    /// The build dir of a streamed publish could not be read (`publish_stream.rs`).
    #[error(transparent)]
    BuildDir(#[from] cairn_fingerprint::artifact_dir::ArtifactDirError),
}

impl ClientError {
    /// Classify a failed call: a status the daemon decided on carries `cairn_proto::ERROR_ORIGIN_KEY`;
    /// one produced by the transport (it carries the underlying I/O or h2 error as its source, or
    /// says so) means the connection broke.
    pub fn from_status(rpc: &'static str, status: tonic::Status) -> ClientError {
        let from_daemon = status
            .metadata()
            .contains_key(cairn_proto::ERROR_ORIGIN_KEY);
        let broke = std::error::Error::source(&status).is_some()
            || matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown
            ) && [
                "transport",
                "connection",
                "h2 protocol",
                "broken pipe",
                "reset",
            ]
            .iter()
            .any(|w| status.message().to_ascii_lowercase().contains(w));
        let transport = !from_daemon && broke;
        if transport {
            let mut message = status.message().to_string();
            let mut cause = std::error::Error::source(&status);
            while let Some(c) = cause {
                message.push_str(": ");
                message.push_str(&c.to_string());
                cause = c.source();
            }
            ClientError::Lost { rpc, message }
        } else {
            ClientError::Rpc {
                rpc,
                code: status.code(),
                message: status.message().to_string(),
            }
        }
    }

    /// Whether the daemon could not be reached or went away (the CLI adds a hint how to start it).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Connect(_) | ClientError::Lost { .. })
    }
}

/// Whether an archive was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A producer was chosen.
    Found,
    /// No acceptable producer: the artifact must be built (never substituted).
    Missing,
}

/// The run an archive comes from (`Producer` of `cairn.v1`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Producer {
    /// `owner/repo` the run belongs to.
    pub repo: String,
    /// Workflow name (may be empty).
    pub workflow: String,
    /// Run id.
    pub run_id: String,
    /// Commit the run built.
    pub commit: String,
    /// `linux` or `windows`.
    pub platform: String,
    /// Run status (`success`, ...).
    pub status: String,
    /// Bucket holding the archive.
    pub bucket: String,
    /// Object key of the archive.
    pub key: String,
    /// SHA-256 of the archive (empty when unknown, e.g. imported runs).
    pub sha256: String,
    /// Archive size.
    pub compressed_size: u64,
    /// Content size.
    pub uncompressed_size: u64,
    /// The run built it (rather than reusing it from another run).
    pub built_here: bool,
    /// The run it was reused from, when not built here.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reused_from_run_id: String,
    /// Read from the trusted area.
    pub trusted: bool,
    /// RFC 3339 publish time.
    pub published_at: String,
}

/// One archive of a FOUND artifact, or one MISSING artifact (then `artifact` is what was asked for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolved {
    /// `{name}_{component}_{family}`, or the requested name when missing.
    pub artifact: String,
    /// Topology artifact name.
    pub name: String,
    /// Component (empty for a missing bare name).
    pub component: String,
    /// Archive family (empty for a missing bare name).
    pub family: String,
    /// The fingerprint the client computed.
    pub fingerprint: String,
    /// Found or missing.
    pub status: Status,
    /// The chosen producer (found only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub producer: Option<Producer>,
    /// Tree digest of the archive content, when known.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tree_digest: String,
    /// Why this producer, or why none.
    pub explanation: Vec<String>,
}

impl From<pb::ResolvedArtifact> for Resolved {
    fn from(a: pb::ResolvedArtifact) -> Resolved {
        let status = if a.status == pb::ResolveStatus::Found as i32 {
            Status::Found
        } else {
            Status::Missing
        };
        Resolved {
            artifact: a.artifact,
            name: a.name,
            component: a.component,
            family: a.family,
            fingerprint: a.fingerprint,
            status,
            producer: a.producer.map(|p| Producer {
                repo: p.repo,
                workflow: p.workflow,
                run_id: p.run_id,
                commit: p.commit,
                platform: p.platform,
                status: p.status,
                bucket: p.bucket,
                key: p.key,
                sha256: p.sha256,
                compressed_size: p.compressed_size,
                uncompressed_size: p.uncompressed_size,
                built_here: p.built_here,
                reused_from_run_id: p.reused_from_run_id,
                trusted: p.trusted,
                published_at: p.published_at,
            }),
            tree_digest: a.tree_digest,
            explanation: a.explanation,
        }
    }
}

/// Which producers are acceptable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Accept forks and developer machines.
    pub allow_untrusted: bool,
    /// Accept runs that did not succeed.
    pub allow_failed: bool,
    /// Only this run (explicit run id fallback).
    pub run_id: Option<String>,
    /// The repository of `run_id` (`--run-github-repo`; default ROCm/TheRock).
    pub run_repo: Option<String>,
    /// Skip the daemon's cached "no producer" answers (`--refresh`).
    pub refresh: bool,
}

/// One resolve/fetch request: a stage's artifacts for one family, with their fingerprints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Build stage (informational for the daemon).
    pub stage: String,
    /// GPU family.
    pub family: String,
    /// `linux` or `windows`.
    pub platform: String,
    /// Bare artifact names (or archive names) and their fingerprints (`None` only with
    /// `policy.run_id`: the run's artifact set by name, as a client without a checkout asks).
    pub artifacts: Vec<(String, Option<Blake3>)>,
    /// Components to leave out (`dbg`, `test`, ...).
    pub exclude_components: Vec<String>,
    /// Acceptable producers.
    pub policy: Policy,
}

impl Request {
    /// The wire form.
    pub fn to_pb(&self) -> pb::ResolveRequest {
        pb::ResolveRequest {
            stage: self.stage.clone(),
            family: self.family.clone(),
            platform: self.platform.clone(),
            artifacts: self
                .artifacts
                .iter()
                .map(|(artifact, fp)| pb::ArtifactRequest {
                    artifact: artifact.clone(),
                    fingerprint: fp.map(|fp| fp.to_hex()).unwrap_or_default(),
                })
                .collect(),
            policy: Some(pb::Policy {
                allow_untrusted: self.policy.allow_untrusted,
                allow_failed: self.policy.allow_failed,
                run_id: self.policy.run_id.clone().unwrap_or_default(),
                run_repo: self.policy.run_repo.clone().unwrap_or_default(),
                refresh: self.policy.refresh,
            }),
            exclude_components: self.exclude_components.clone(),
        }
    }
}

/// Resolve without fetching: per archive, the chosen run and why.
pub async fn resolve(
    client: &mut CairnClient<DaemonChannel>,
    request: &Request,
) -> Result<(Vec<Resolved>, Vec<String>), ClientError> {
    let resp = client
        .resolve(request.to_pb())
        .await
        .map_err(|s| ClientError::from_status("Resolve", s))?
        .into_inner();
    Ok((
        resp.artifacts.into_iter().map(Resolved::from).collect(),
        resp.runs,
    ))
}

/// Daemon store usage and counters (`StatsResponse`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Bytes of blobs in the CAS.
    pub store_bytes: u64,
    /// Blobs in the CAS.
    pub blobs: u64,
    /// CAS quota (0 = none).
    pub max_bytes: u64,
    /// Trees known.
    pub trees: u64,
    /// Archives served from the CAS.
    pub hits: u64,
    /// Archives downloaded.
    pub misses: u64,
    /// GET requests sent to storage.
    pub storage_gets: u64,
    /// Bytes received from storage.
    pub storage_bytes: u64,
    /// Downloads running now.
    pub in_flight: u64,
    /// Archives ingested.
    pub ingests: u64,
    /// Blobs evicted by gc.
    pub evicted_blobs: u64,
    /// Bytes evicted by gc.
    pub evicted_bytes: u64,
    /// Resolve requests served (fetches included).
    pub resolve_requests: u64,
    /// Fetch requests served.
    pub fetch_requests: u64,
    /// Bytes of blobs held leased by requests in flight (eviction skips them).
    pub leased_bytes: u64,
    /// Blobs held leased.
    pub leased_blobs: u64,
    /// Where the store stands against its quota.
    pub quota_state: QuotaState,
    /// Predictive warm-up (all zero and disabled from a daemon older than it).
    pub warmup: WarmupStats,
}

/// What the daemon's predictive warm-up has done (`StatsResponse.warmup`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WarmupStats {
    /// Whether warm-up runs.
    pub enabled: bool,
    /// Followed branches, `OWNER/REPO:BRANCH`.
    pub branches: Vec<String>,
    /// RFC 3339 time of the last finished poll (empty: none yet).
    pub last_poll: String,
    /// Branch → newest run warmed.
    pub last_run: BTreeMap<String, String>,
    /// Compressed bytes downloaded.
    pub prefetched_bytes: u64,
    /// Archives downloaded.
    pub prefetched_archives: u64,
    /// Archives found already local.
    pub already_local_archives: u64,
    /// Archives skipped to stay within 90% of the quota.
    pub skipped_quota_archives: u64,
    /// Client fetches served from prefetched archives no client had used yet.
    pub hits: u64,
    /// Prefetched bytes evicted before any client used them.
    pub wasted_bytes: u64,
    /// Polls finished.
    pub polls: u64,
    /// The last poll's error (empty: none).
    pub last_error: String,
}

impl From<pb::WarmupStats> for WarmupStats {
    fn from(w: pb::WarmupStats) -> Self {
        WarmupStats {
            enabled: w.enabled,
            branches: w.branches,
            last_poll: w.last_poll,
            last_run: w.last_run.into_iter().collect(),
            prefetched_bytes: w.prefetched_bytes,
            prefetched_archives: w.prefetched_archives,
            already_local_archives: w.already_local_archives,
            skipped_quota_archives: w.skipped_quota_archives,
            hits: w.hits,
            wasted_bytes: w.wasted_bytes,
            polls: w.polls,
            last_error: w.last_error,
        }
    }
}

/// Where the daemon's store stands against its quota (`StatsResponse.quota_state`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaState {
    /// The daemon did not say (older than this field).
    #[default]
    Unknown,
    /// No quota configured.
    NoQuota,
    /// At or under the quota.
    UnderQuota,
    /// Over the quota only by bytes that requests in flight hold leased: back under when they end.
    OverQuotaLeased,
    /// Over the quota; eviction has work to do.
    OverQuota,
}

impl QuotaState {
    fn from_wire(s: &str) -> QuotaState {
        match s {
            "no_quota" => QuotaState::NoQuota,
            "under_quota" => QuotaState::UnderQuota,
            "over_quota_leased" => QuotaState::OverQuotaLeased,
            "over_quota" => QuotaState::OverQuota,
            _ => QuotaState::Unknown,
        }
    }

    /// The name `--json` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaState::Unknown => "unknown",
            QuotaState::NoQuota => "no_quota",
            QuotaState::UnderQuota => "under_quota",
            QuotaState::OverQuotaLeased => "over_quota_leased",
            QuotaState::OverQuota => "over_quota",
        }
    }
}

/// A pin (`PinInfo`): blobs held against eviction under a name until it is removed or expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinInfo {
    /// Its name.
    pub name: String,
    /// Trees (archive contents) pinned.
    pub trees: u64,
    /// Distinct blobs held.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Unix seconds of its expiry.
    pub expires_at: u64,
}

impl From<pb::PinInfo> for PinInfo {
    fn from(p: pb::PinInfo) -> PinInfo {
        PinInfo {
            name: p.name,
            trees: p.trees,
            blobs: p.blobs,
            bytes: p.bytes,
            expires_at: p.expires_at,
        }
    }
}

/// `Pin`: hold the blobs of `trees` (known to the daemon) under `name` for `ttl` from now, adding
/// to the pin if it exists.
pub async fn pin(
    client: &mut CairnClient<DaemonChannel>,
    name: &str,
    trees: &[Blake3],
    ttl: std::time::Duration,
) -> Result<PinInfo, ClientError> {
    let resp = client
        .pin(pb::PinRequest {
            name: name.to_string(),
            tree_digests: trees.iter().map(Blake3::to_hex).collect(),
            ttl_seconds: ttl.as_secs().max(1),
        })
        .await
        .map_err(|s| ClientError::from_status("Pin", s))?
        .into_inner();
    resp.pin
        .map(PinInfo::from)
        .ok_or_else(|| ClientError::Protocol {
            rpc: "Pin",
            detail: "the answer has no pin".into(),
        })
}

/// `Unpin`; `false` when there was no such pin.
pub async fn unpin(
    client: &mut CairnClient<DaemonChannel>,
    name: &str,
) -> Result<bool, ClientError> {
    Ok(client
        .unpin(pb::UnpinRequest {
            name: name.to_string(),
        })
        .await
        .map_err(|s| ClientError::from_status("Unpin", s))?
        .into_inner()
        .removed)
}

/// `Stats`.
pub async fn stats(client: &mut CairnClient<DaemonChannel>) -> Result<Stats, ClientError> {
    Ok(stats_and_pins(client).await?.0)
}

/// `Stats` with the daemon's unexpired pins.
pub async fn stats_and_pins(
    client: &mut CairnClient<DaemonChannel>,
) -> Result<(Stats, Vec<PinInfo>), ClientError> {
    let s = client
        .stats(pb::StatsRequest {})
        .await
        .map_err(|s| ClientError::from_status("Stats", s))?
        .into_inner();
    let pins = s.pins.iter().cloned().map(PinInfo::from).collect();
    Ok((
        Stats {
            store_bytes: s.store_bytes,
            blobs: s.blobs,
            max_bytes: s.max_bytes,
            trees: s.trees,
            hits: s.hits,
            misses: s.misses,
            storage_gets: s.storage_gets,
            storage_bytes: s.storage_bytes,
            in_flight: s.in_flight,
            ingests: s.ingests,
            evicted_blobs: s.evicted_blobs,
            evicted_bytes: s.evicted_bytes,
            resolve_requests: s.resolve_requests,
            fetch_requests: s.fetch_requests,
            leased_bytes: s.leased_bytes,
            leased_blobs: s.leased_blobs,
            quota_state: QuotaState::from_wire(&s.quota_state),
            warmup: s.warmup.clone().map(WarmupStats::from).unwrap_or_default(),
        },
        pins,
    ))
}

/// What `Gc` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GcOutcome {
    /// Blobs evicted.
    pub evicted_blobs: u64,
    /// Bytes evicted.
    pub evicted_bytes: u64,
    /// CAS bytes afterwards.
    pub store_bytes: u64,
}

/// `Gc` down to `max_bytes` (`None`: the daemon's configured quota).
pub async fn gc(
    client: &mut CairnClient<DaemonChannel>,
    max_bytes: Option<u64>,
) -> Result<GcOutcome, ClientError> {
    let r = client
        .gc(pb::GcRequest {
            max_bytes: max_bytes.unwrap_or(0),
        })
        .await
        .map_err(|s| ClientError::from_status("Gc", s))?
        .into_inner();
    Ok(GcOutcome {
        evicted_blobs: r.evicted_blobs,
        evicted_bytes: r.evicted_bytes,
        store_bytes: r.store_bytes,
    })
}

/// A blob `Verify` found corrupt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CorruptBlob {
    /// The digest it was stored under.
    pub digest: String,
    /// Where it was.
    pub path: String,
    /// Where it is now (the store's `quarantine/`).
    pub quarantined_to: String,
    /// What its content hashes to (empty when unreadable).
    pub actual: String,
}

/// What `Verify` found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VerifyOutcome {
    /// Blob files re-hashed.
    pub checked: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Corrupt blobs (quarantined; the next fetch downloads them again).
    pub corrupt: Vec<CorruptBlob>,
    /// Index entries whose file was missing (dropped).
    pub missing: Vec<String>,
    /// Seconds the daemon took.
    pub seconds: f64,
}

impl VerifyOutcome {
    /// True when nothing was corrupt or missing.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty()
    }
}

/// `Verify`: every blob (`sample` `None`) or a random sample.
pub async fn verify(
    client: &mut CairnClient<DaemonChannel>,
    sample: Option<u64>,
) -> Result<VerifyOutcome, ClientError> {
    let r = client
        .verify(pb::VerifyRequest {
            sample: sample.unwrap_or(0),
        })
        .await
        .map_err(|s| ClientError::from_status("Verify", s))?
        .into_inner();
    Ok(VerifyOutcome {
        checked: r.checked,
        bytes: r.bytes,
        corrupt: r
            .corrupt
            .into_iter()
            .map(|c| CorruptBlob {
                digest: c.digest,
                path: c.path,
                quarantined_to: c.quarantined_to,
                actual: c.actual,
            })
            .collect(),
        missing: r.missing,
        seconds: r.seconds,
    })
}

/// A publish request: a build directory's artifacts as (part of) a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishSpec {
    /// Absolute build directory holding `artifacts/{name}_{component}_{family}/`.
    pub build_dir: PathBuf,
    /// Stage the job built.
    pub stage: String,
    /// Family of the job.
    pub family: String,
    /// `linux` or `windows`.
    pub platform: String,
    /// `owner/repo` the run belongs to.
    pub repo: String,
    /// Head repository of a fork (empty: same as `repo`).
    pub head_repo: String,
    /// Workflow name.
    pub workflow: String,
    /// Run id.
    pub run_id: String,
    /// Commit built.
    pub commit: String,
    /// Run status.
    pub status: String,
    /// `zstd` or `xz`.
    pub compression: String,
    /// Compression level; `None`: TheRock's default for the compression.
    pub compression_level: Option<u32>,
    /// Fingerprint per artifact name; only these artifacts are published.
    pub fingerprints: Vec<(String, Blake3)>,
    /// Artifacts the job used but did not build: artifact name → the run it came from.
    pub reused_from: BTreeMap<String, String>,
    /// The branch the run built; the daemon files a branch feed entry for warm-up (`None`: none).
    pub branch: Option<String>,
}

/// The branch a push names: `flag` (`--branch`), else `CAIRN_BRANCH`, else GitHub Actions'
/// `GITHUB_REF_NAME` when `GITHUB_REF_TYPE` is `branch`; empty is none. Checked, so a bad name fails
/// before anything is read. `cairn push` and the Python package's `push` both use it.
pub fn push_branch(
    flag: Option<String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, cairn_fingerprint::layout::LayoutError> {
    let branch = flag
        .or_else(|| env("CAIRN_BRANCH"))
        .or_else(|| {
            (env("GITHUB_REF_TYPE").as_deref() == Some("branch"))
                .then(|| env("GITHUB_REF_NAME"))
                .flatten()
        })
        .filter(|b| !b.is_empty());
    if let Some(b) = &branch {
        cairn_fingerprint::layout::check_branch(b)?;
    }
    Ok(branch)
}

/// One archive a publish wrote (`PublishedArchive`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedArchive {
    /// `{name}_{component}_{family}`.
    pub artifact: String,
    /// Object key.
    pub key: String,
    /// SHA-256 of the archive.
    pub sha256: String,
    /// Archive size.
    pub compressed_size: u64,
    /// Content size.
    pub uncompressed_size: u64,
    /// Regular files in it.
    pub files: u64,
    /// Tree digest.
    pub tree_digest: String,
    /// Fingerprint recorded for it.
    pub fingerprint: String,
    /// Built by this run.
    pub built_here: bool,
    /// The run that built it, when reused (empty when built here).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reused_from_run_id: String,
}

/// What a publish wrote (`PublishResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Published {
    /// Bucket.
    pub bucket: String,
    /// Run prefix.
    pub prefix: String,
    /// The archives.
    pub archives: Vec<PublishedArchive>,
    /// Key of the job manifest.
    pub job_manifest_key: String,
    /// Whether trusted builds will use it.
    pub trusted: bool,
}

/// `Publish`: the daemon reads `spec.build_dir` (with the caller's rights, over the Unix socket).
pub async fn publish(
    client: &mut CairnClient<DaemonChannel>,
    spec: &PublishSpec,
) -> Result<Published, ClientError> {
    let r = client
        .publish(publish_request(spec))
        .await
        .map_err(|s| ClientError::from_status("Publish", s))?
        .into_inner();
    Ok(published(r))
}

/// The wire request of `spec`.
pub(crate) fn publish_request(spec: &PublishSpec) -> pb::PublishRequest {
    pb::PublishRequest {
        build_dir: spec.build_dir.to_string_lossy().into_owned(),
        stage: spec.stage.clone(),
        family: spec.family.clone(),
        platform: spec.platform.clone(),
        repo: spec.repo.clone(),
        workflow: spec.workflow.clone(),
        run_id: spec.run_id.clone(),
        commit: spec.commit.clone(),
        status: spec.status.clone(),
        compression: spec.compression.clone(),
        compression_level: spec.compression_level,
        branch: spec.branch.clone(),
        head_repo: spec.head_repo.clone(),
        fingerprints: spec
            .fingerprints
            .iter()
            .map(|(n, fp)| (n.clone(), fp.to_hex()))
            .collect(),
        reused_from: spec
            .reused_from
            .iter()
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect(),
    }
}

/// A publish's answer in client terms.
pub(crate) fn published(r: pb::PublishResponse) -> Published {
    Published {
        bucket: r.bucket,
        prefix: r.prefix,
        archives: r
            .archives
            .into_iter()
            .map(|a| PublishedArchive {
                artifact: a.artifact,
                key: a.key,
                sha256: a.sha256,
                compressed_size: a.compressed_size,
                uncompressed_size: a.uncompressed_size,
                files: a.files,
                tree_digest: a.tree_digest,
                fingerprint: a.fingerprint,
                built_here: a.built_here,
                reused_from_run_id: a.reused_from_run_id,
            })
            .collect(),
        job_manifest_key: r.job_manifest_key,
        trusted: r.trusted,
    }
}

/// What an import found (`ImportResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Imported {
    /// Run prefix.
    pub prefix: String,
    /// Archive keys.
    pub archives: Vec<String>,
    /// Archives ingested now (with `ingest`).
    pub ingested: u32,
    /// Archives that could not be ingested, with the daemon's error (with `ingest`).
    pub failures: Vec<ImportFailure>,
}

/// One archive `import --ingest` could not make local.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportFailure {
    /// Object key.
    pub key: String,
    /// Why.
    pub message: String,
}

/// `Import` a run published without Cairn.
pub async fn import(
    client: &mut CairnClient<DaemonChannel>,
    run_id: &str,
    platform: &str,
    repo: &str,
    ingest: bool,
) -> Result<Imported, ClientError> {
    let r = client
        .import(pb::ImportRequest {
            run_id: run_id.to_string(),
            platform: platform.to_string(),
            repo: repo.to_string(),
            ingest,
        })
        .await
        .map_err(|s| ClientError::from_status("Import", s))?
        .into_inner();
    Ok(Imported {
        prefix: r.prefix,
        archives: r.archives,
        ingested: r.ingested,
        failures: r
            .failures
            .into_iter()
            .map(|f| ImportFailure {
                key: f.key,
                message: f.message,
            })
            .collect(),
    })
}

#[cfg(test)]
mod push_branch_tests {
    use super::push_branch as branch;

    #[test]
    fn branch_comes_from_the_flag_then_cairn_branch_then_github_branch_refs() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let gh = &[
            ("GITHUB_REF_TYPE", "branch"),
            ("GITHUB_REF_NAME", "develop"),
        ];
        assert_eq!(
            branch(Some("main".into()), env(gh)).unwrap().as_deref(),
            Some("main")
        );
        assert_eq!(branch(None, env(gh)).unwrap().as_deref(), Some("develop"));
        let tag = &[("GITHUB_REF_TYPE", "tag"), ("GITHUB_REF_NAME", "v1")];
        assert_eq!(branch(None, env(tag)).unwrap(), None);
        let both = &[("CAIRN_BRANCH", "x/y"), ("GITHUB_REF_TYPE", "branch")];
        assert_eq!(branch(None, env(both)).unwrap().as_deref(), Some("x/y"));
        let err = branch(Some("a/../b".into()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("branch"), "{err}");
    }
}
