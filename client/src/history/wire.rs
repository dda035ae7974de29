//! The daemon's run history in client terms: the runs Cairn recorded for a commit (`FindRuns`), what
//! a run's archives hold (`RunTrees`), what a run published without Cairn holds (`Import` without
//! ingest), and which runs produced exact fingerprints (`Resolve`). Wire types stop here: callers see
//! plain structs.

use std::collections::BTreeMap;

use cairn_fingerprint::Blake3;
use cairn_proto::v1 as pb;
use cairn_proto::v1::cairn_client::CairnClient;

/// A daemon call that failed.
#[derive(Debug, thiserror::Error)]
#[error("cairnd refused `{rpc}`: {message} (code {code:?})")]
pub struct RpcError {
    /// The RPC.
    pub rpc: &'static str,
    /// The gRPC status code.
    pub code: tonic::Code,
    /// The daemon's message.
    pub message: String,
}

impl RpcError {
    fn new(rpc: &'static str, s: tonic::Status) -> RpcError {
        RpcError {
            rpc,
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

/// One job of a recorded run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedJob {
    /// Build stage.
    pub stage: String,
    /// GPU family.
    pub family: String,
}

/// A run Cairn's commit index holds for a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRun {
    /// `OWNER/REPO`.
    pub repo: String,
    /// Workflow file (may be empty for developer publishes).
    pub workflow: String,
    /// Run id.
    pub run_id: String,
    /// Commit SHA.
    pub commit: String,
    /// `linux` or `windows`.
    pub platform: String,
    /// Status as published (`success`, `failure`, ...).
    pub status: String,
    /// Bucket.
    pub bucket: String,
    /// Run prefix.
    pub prefix: String,
    /// Archive file names of every job.
    pub archives: Vec<String>,
    /// Newest publish time (RFC 3339).
    pub published_at: String,
    /// Whether the records came from a trusted place.
    pub trusted: bool,
    /// Jobs that published.
    pub jobs: Vec<RecordedJob>,
}

/// One file of an archive's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSize {
    /// Path in the archive.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// One archive of a run and what is known about its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSizes {
    /// `{name}_{component}_{family}`.
    pub artifact: String,
    /// Object key.
    pub key: String,
    /// Archive bytes.
    pub compressed_size: u64,
    /// Sum of file sizes (0 when unknown).
    pub uncompressed_size: u64,
    /// Regular files (0 when unknown).
    pub files: u64,
    /// Per-file sizes, when a tree manifest exists.
    pub tree: Option<Vec<FileSize>>,
    /// `manifest`, `job` or `listing`.
    pub source: String,
}

/// A run's archives (`RunTrees`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunContents {
    /// Bucket.
    pub bucket: String,
    /// Run prefix.
    pub prefix: String,
    /// Commit, when job manifests name it.
    pub commit: Option<String>,
    /// Status, when job manifests name it.
    pub status: Option<String>,
    /// Workflow, when job manifests name it.
    pub workflow: Option<String>,
    /// Archives sorted by artifact.
    pub archives: Vec<ArchiveSizes>,
    /// The daemon's notes on precision.
    pub notes: Vec<String>,
}

/// A run listed by `Import` (no ingest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRun {
    /// Run prefix.
    pub prefix: String,
    /// Archive file names.
    pub archives: Vec<String>,
}

/// Whether an exact-fingerprint producer exists for one artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactProducer {
    /// Artifact name.
    pub artifact: String,
    /// The fingerprint asked about.
    pub fingerprint: Blake3,
    /// Producing run id and commit, when one exists.
    pub producer: Option<(String, String)>,
    /// The daemon's explanation.
    pub explanation: Vec<String>,
}

/// Runs Cairn recorded for `commit`, newest first.
pub async fn find_runs(
    client: &mut CairnClient<crate::connect::DaemonChannel>,
    commit: &str,
    repo: &str,
    platform: &str,
    allow_untrusted: bool,
) -> Result<Vec<RecordedRun>, RpcError> {
    let resp = client
        .find_runs(pb::FindRunsRequest {
            commit: commit.to_string(),
            repo: repo.to_string(),
            platform: platform.to_string(),
            allow_untrusted,
        })
        .await
        .map_err(|s| RpcError::new("FindRuns", s))?
        .into_inner();
    Ok(resp
        .runs
        .into_iter()
        .map(|r| RecordedRun {
            repo: r.repo,
            workflow: r.workflow,
            run_id: r.run_id,
            commit: r.commit,
            platform: r.platform,
            status: r.status,
            bucket: r.bucket,
            prefix: r.prefix,
            archives: r.archives,
            published_at: r.published_at,
            trusted: r.trusted,
            jobs: r
                .jobs
                .into_iter()
                .map(|j| RecordedJob {
                    stage: j.stage,
                    family: j.family,
                })
                .collect(),
        })
        .collect())
}

/// A run's archives with sizes; `None` when the run has none.
pub async fn run_trees(
    client: &mut CairnClient<crate::connect::DaemonChannel>,
    run_id: &str,
    platform: &str,
    repo: &str,
) -> Result<Option<RunContents>, RpcError> {
    let resp = match client
        .run_trees(pb::RunTreesRequest {
            run_id: run_id.to_string(),
            platform: platform.to_string(),
            repo: repo.to_string(),
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
        Err(s) => return Err(RpcError::new("RunTrees", s)),
    };
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    let run = resp.run.unwrap_or_default();
    Ok(Some(RunContents {
        bucket: resp.bucket,
        prefix: resp.prefix,
        commit: nonempty(run.commit),
        status: nonempty(run.status),
        workflow: nonempty(run.workflow),
        archives: resp
            .archives
            .into_iter()
            .map(|a| ArchiveSizes {
                tree: (!a.tree_digest.is_empty()).then(|| {
                    a.entries
                        .iter()
                        .filter(|e| e.kind == "file")
                        .map(|e| FileSize {
                            path: e.path.clone(),
                            size: e.size,
                        })
                        .collect()
                }),
                artifact: a.artifact,
                key: a.key,
                compressed_size: a.compressed_size,
                uncompressed_size: a.uncompressed_size,
                files: a.files,
                source: a.source,
            })
            .collect(),
        notes: resp.notes,
    }))
}

/// What a run's prefix holds (one LIST, remembered by the daemon); `None` when it holds no archive.
pub async fn list_run(
    client: &mut CairnClient<crate::connect::DaemonChannel>,
    run_id: &str,
    platform: &str,
    repo: &str,
) -> Result<Option<ListedRun>, RpcError> {
    match client
        .import(pb::ImportRequest {
            run_id: run_id.to_string(),
            platform: platform.to_string(),
            repo: repo.to_string(),
            ingest: false,
        })
        .await
    {
        Ok(r) => {
            let r = r.into_inner();
            Ok(Some(ListedRun {
                prefix: r.prefix,
                archives: r
                    .archives
                    .into_iter()
                    .map(|k| k.rsplit('/').next().unwrap_or(&k).to_string())
                    .collect(),
            }))
        }
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(RpcError::new("Import", s)),
    }
}

/// For each artifact (name → fingerprint), whether a run produced exactly that fingerprint.
pub async fn exact_producers(
    client: &mut CairnClient<crate::connect::DaemonChannel>,
    stage: &str,
    family: &str,
    platform: &str,
    fingerprints: &BTreeMap<String, Blake3>,
    allow_untrusted: bool,
) -> Result<Vec<ExactProducer>, RpcError> {
    let resp = client
        .resolve(pb::ResolveRequest {
            stage: stage.to_string(),
            family: family.to_string(),
            platform: platform.to_string(),
            artifacts: fingerprints
                .iter()
                .map(|(name, fp)| pb::ArtifactRequest {
                    artifact: name.clone(),
                    fingerprint: fp.to_hex(),
                })
                .collect(),
            policy: Some(pb::Policy {
                allow_untrusted,
                allow_failed: false,
                run_id: String::new(),
                run_repo: String::new(),
                refresh: false,
            }),
            exclude_components: Vec::new(),
        })
        .await
        .map_err(|s| RpcError::new("Resolve", s))?
        .into_inner();
    let mut out: BTreeMap<String, ExactProducer> = fingerprints
        .iter()
        .map(|(name, fp)| {
            (
                name.clone(),
                ExactProducer {
                    artifact: name.clone(),
                    fingerprint: *fp,
                    producer: None,
                    explanation: Vec::new(),
                },
            )
        })
        .collect();
    for a in resp.artifacts {
        let Some(entry) = out.get_mut(&a.name) else {
            continue;
        };
        if entry.explanation.is_empty() {
            entry.explanation = a.explanation.clone();
        }
        if a.status == pb::ResolveStatus::Found as i32
            && let Some(p) = a.producer
        {
            entry.producer.get_or_insert((p.run_id, p.commit));
        }
    }
    Ok(out.into_values().collect())
}
