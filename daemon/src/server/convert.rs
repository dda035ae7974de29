//! The wire ⇄ domain boundary: every `cairn.v1` request is converted here, once, into the domain's
//! request types (names parsed, fingerprints as digests, platform and run status as enums, limits
//! checked), and every domain result back into messages. The defaults an empty wire field stands
//! for are in [`defaults`], and nowhere else.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use cairn_fingerprint::layout::{GithubRepo, RunSpec};
use cairn_fingerprint::names::{ArtifactName, Component};
use cairn_fingerprint::{Blake3, Compression, EntryKind, Platform, Tree};
use cairn_proto::v1::{self as pb, fetch_event::Event};

use crate::records::RunIdentity;
use crate::service::fetch::{Delivery, FetchEvent, FetchRequest};
use crate::service::history::{CommitRun, FindRunsRequest, RunTrees};
use crate::service::import::ImportRequest;
use crate::service::policy::{ArchiveSelector, Policy, Resolution, Wanted};
use crate::service::publish::{PublishOutcome, PublishRequest};
use crate::service::publish_stream::StreamPart;
use crate::service::resolve::ResolveRequest;
use crate::service::{MAX_NAME_LEN, ServiceError};

/// What an empty wire field means.
pub mod defaults {
    use cairn_fingerprint::Compression;
    use cairn_fingerprint::Platform;
    use cairn_fingerprint::layout::GithubRepo;

    use crate::records::RunStatus;

    /// Runs are Linux runs unless a request says otherwise.
    pub const PLATFORM: Platform = Platform::Linux;
    /// Archives are published as `.tar.zst`.
    pub const COMPRESSION: Compression = Compression::Zstd;
    /// A publish that names no status publishes a successful run.
    pub const RUN_STATUS: RunStatus = RunStatus::Success;
    /// A pin without a time to live lasts one day.
    pub const PIN_TTL_SECONDS: u64 = 24 * 60 * 60;

    /// Runs belong to TheRock unless a request names another repository.
    pub fn repo() -> GithubRepo {
        GithubRepo::the_rock()
    }
}

type Result<T> = std::result::Result<T, ServiceError>;

fn invalid(msg: String) -> ServiceError {
    ServiceError::InvalidArgument(msg)
}

/// `value`, refused when longer than [`MAX_NAME_LEN`]: real names are a few dozen bytes, and a huge
/// one is a malformed request, not a lookup.
fn bounded<'a>(what: &str, value: &'a str) -> Result<&'a str> {
    if value.len() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "{what} of {} bytes is longer than the limit of {MAX_NAME_LEN}",
            value.len()
        )));
    }
    Ok(value)
}

fn platform(s: &str) -> Result<Platform> {
    if s.is_empty() {
        Ok(defaults::PLATFORM)
    } else {
        s.parse().map_err(|e| invalid(format!("{e}")))
    }
}

fn repo(s: &str) -> Result<GithubRepo> {
    if s.is_empty() {
        Ok(defaults::repo())
    } else {
        s.parse().map_err(|e| invalid(format!("{e}")))
    }
}

fn run_spec(run_id: &str, platform_name: &str, repo_name: &str) -> Result<RunSpec> {
    let mut spec = RunSpec::new(bounded("run id", run_id)?, platform(platform_name)?);
    spec.repo = repo(repo_name)?;
    Ok(spec)
}

/// A resolve request, validated.
pub fn resolve_request(req: pb::ResolveRequest) -> Result<ResolveRequest> {
    let policy = req.policy.unwrap_or_default();
    let explicit_run = !policy.run_id.is_empty();
    let wanted = req
        .artifacts
        .into_iter()
        .map(|a| {
            let selector = ArchiveSelector::parse(bounded("artifact name", &a.artifact)?)
                .map_err(|e| invalid(e.to_string()))?;
            // No fingerprint: "this run's artifact set" by name, only with an explicit run.
            let fingerprint: Option<Blake3> = match a.fingerprint.as_str() {
                "" if explicit_run => None,
                "" => {
                    return Err(invalid(format!(
                        "artifact `{}`: no fingerprint; one is required unless policy.run_id \
                         names a run",
                        a.artifact
                    )));
                }
                fp => Some(
                    fp.parse()
                        .map_err(|e| invalid(format!("artifact `{}`: {e}", a.artifact)))?,
                ),
            };
            Ok(Wanted {
                selector,
                fingerprint,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let exclude_components = req
        .exclude_components
        .iter()
        .map(|c| {
            c.parse::<Component>()
                .map_err(|e| invalid(format!("excluded component: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let run_id = match policy.run_id.as_str() {
        "" => None,
        id => Some(bounded("run id", id)?.to_string()),
    };
    let run_repo = match policy.run_repo.as_str() {
        "" => None,
        repo => Some(
            bounded("run repo", repo)?
                .parse()
                .map_err(|e| invalid(format!("policy.run_repo: {e}")))?,
        ),
    };
    Ok(ResolveRequest {
        stage: bounded("stage", &req.stage)?.to_string(),
        family: bounded("family", &req.family)?.to_string(),
        platform: platform(&req.platform)?,
        wanted,
        policy: Policy {
            allow_untrusted: policy.allow_untrusted,
            allow_failed: policy.allow_failed,
            run_id,
            run_repo,
            refresh: policy.refresh,
        },
        exclude_components,
    })
}

/// A fetch request, validated.
pub fn fetch_request(req: pb::FetchRequest) -> Result<FetchRequest> {
    let delivery = match (req.local_paths, req.blob_path_batches) {
        (false, _) => Delivery::Bytes,
        (true, false) => Delivery::Paths,
        (true, true) => Delivery::PathBatches,
    };
    let Some(resolve) = req.resolve else {
        return Err(invalid(
            "fetch request has no `resolve`: nothing says what to fetch".into(),
        ));
    };
    Ok(FetchRequest {
        resolve: resolve_request(resolve)?,
        delivery,
    })
}

/// A publish request, validated.
pub fn publish_request(r: pb::PublishRequest) -> Result<PublishRequest> {
    let build_dir = PathBuf::from(&r.build_dir);
    // A record-only publish (no fingerprints: `cairn copy`) reads no build dir and may name none.
    let record_only = r.fingerprints.is_empty() && r.build_dir.is_empty();
    if !build_dir.is_absolute() && !record_only {
        return Err(invalid(format!(
            "build dir `{}` must be an absolute path",
            build_dir.display()
        )));
    }
    publish_fields(r)
}

/// The header of a `PublishStream`, validated: a publish request that names no build dir.
pub fn publish_stream_header(r: pb::PublishRequest) -> Result<PublishRequest> {
    if !r.build_dir.is_empty() {
        return Err(invalid(format!(
            "a streamed publish names no build dir (got `{}`): the client streams the artifacts' \
             content",
            r.build_dir
        )));
    }
    publish_fields(r)
}

/// One message of a `PublishStream` after its header, validated (a second header is refused).
pub fn publish_stream_part(
    m: std::result::Result<pb::PublishStreamRequest, tonic::Status>,
) -> Result<StreamPart> {
    use pb::publish_stream_request::Part;
    let m = m.map_err(|s| {
        invalid(format!(
            "the publish stream ended with an error: {}",
            s.message()
        ))
    })?;
    match m.part {
        Some(Part::Chunk(bytes)) => Ok(StreamPart::Chunk(bytes.into())),
        Some(Part::Artifact(a)) => Ok(StreamPart::Artifact {
            name: ArtifactName::parse(bounded("artifact", &a.artifact)?)
                .map_err(|e| invalid(format!("streamed artifact `{}`: {e}", a.artifact)))?,
            precompressed: match a.precompressed.as_str() {
                "" => None,
                other => Some(other.parse::<Compression>().map_err(|_| {
                    invalid(format!(
                        "streamed artifact `{}`: precompressed `{other}` is neither `zstd` nor \
                         `xz`",
                        a.artifact
                    ))
                })?),
            },
        }),
        Some(Part::End(_)) => Ok(StreamPart::End),
        Some(Part::Header(_)) => Err(invalid(
            "a publish stream has one header, its first message".into(),
        )),
        None => Err(invalid("a publish stream message with no part".into())),
    }
}

/// The fields of a publish request (`publish_request`, `publish_stream_header`), validated.
fn publish_fields(r: pb::PublishRequest) -> Result<PublishRequest> {
    let build_dir = PathBuf::from(&r.build_dir);
    let compression = match r.compression.as_str() {
        "" => defaults::COMPRESSION,
        other => other
            .parse::<Compression>()
            .map_err(|_| invalid(format!("compression `{other}` is neither `zstd` nor `xz`")))?,
    };
    let range = match compression {
        Compression::Zstd => 1..=22,
        Compression::Xz => 0..=9,
    };
    if let Some(level) = r.compression_level
        && !range.contains(&level)
    {
        return Err(invalid(format!(
            "compression level {level} is out of range for {compression} ({}-{})",
            range.start(),
            range.end()
        )));
    }
    let mut fingerprints = BTreeMap::new();
    for (name, fp) in r.fingerprints {
        let d: Blake3 = fp
            .parse()
            .map_err(|e| invalid(format!("fingerprint of `{name}`: {e}")))?;
        fingerprints.insert(name, d);
    }
    Ok(PublishRequest {
        build_dir,
        stage: bounded("stage", &r.stage)?.to_string(),
        family: bounded("family", &r.family)?.to_string(),
        run: RunIdentity {
            repo: repo(&r.repo)?.to_string(),
            workflow: r.workflow,
            run_id: r.run_id,
            commit: r.commit,
            platform: platform(&r.platform)?,
            status: match r.status.as_str() {
                "" => defaults::RUN_STATUS,
                s => s.parse().unwrap_or_else(|never| match never {}),
            },
            head_repo: r.head_repo,
        },
        compression,
        compression_level: r.compression_level,
        fingerprints,
        reused_from: r.reused_from.into_iter().collect(),
        branch: match r.branch {
            Some(b) if !b.is_empty() => {
                cairn_fingerprint::layout::check_branch(&b).map_err(|e| invalid(e.to_string()))?;
                Some(b)
            }
            _ => None,
        },
    })
}

/// An import request, validated.
pub fn import_request(r: pb::ImportRequest) -> Result<ImportRequest> {
    Ok(ImportRequest {
        run: run_spec(&r.run_id, &r.platform, &r.repo)?,
        ingest: r.ingest,
    })
}

/// A FindRuns request, validated (an empty repo or platform means any).
/// `Pin`: the name, the tree digests and the time to live (0 = [`defaults::PIN_TTL_SECONDS`]).
pub fn pin_request(r: pb::PinRequest) -> Result<(String, Vec<Blake3>, u64)> {
    crate::store::pins::check_name(&r.name).map_err(ServiceError::InvalidArgument)?;
    let trees = r
        .tree_digests
        .iter()
        .map(|d| {
            d.parse::<Blake3>()
                .map_err(|e| ServiceError::InvalidArgument(format!("tree digest `{d}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let ttl = match r.ttl_seconds {
        0 => defaults::PIN_TTL_SECONDS,
        n => n,
    };
    Ok((r.name, trees, ttl))
}

/// A pin as the wire lists it.
pub fn pin_to_pb(p: crate::store::pins::PinInfo) -> pb::PinInfo {
    pb::PinInfo {
        name: p.name,
        trees: p.trees,
        blobs: p.blobs,
        bytes: p.bytes,
        expires_at: p.expires_at,
    }
}

pub fn find_runs_request(r: pb::FindRunsRequest) -> Result<FindRunsRequest> {
    Ok(FindRunsRequest {
        commit: bounded("commit", &r.commit)?.to_string(),
        repo: (!r.repo.is_empty()).then_some(r.repo),
        platform: match r.platform.as_str() {
            "" => None,
            p => Some(platform(p)?),
        },
        allow_untrusted: r.allow_untrusted,
    })
}

/// The run a RunTrees request names.
pub fn run_trees_request(r: pb::RunTreesRequest) -> Result<RunSpec> {
    run_spec(&r.run_id, &r.platform, &r.repo)
}

/// Resolutions as the wire carries them.
pub fn resolved_to_pb(rs: &[Resolution]) -> pb::ResolveResponse {
    let mut runs = BTreeSet::new();
    let mut artifacts = Vec::new();
    for r in rs {
        match &r.chosen {
            Some((c, archives)) => {
                runs.insert(c.run.run_id.clone());
                for a in archives {
                    let producer = pb::Producer {
                        repo: c.run.repo.clone(),
                        workflow: c.run.workflow.clone(),
                        run_id: c.run.run_id.clone(),
                        commit: c.run.commit.clone(),
                        platform: c.run.platform.to_string(),
                        status: c.run.status.to_string(),
                        bucket: c.bucket.clone(),
                        key: a.key.clone(),
                        sha256: a.sha256.map(|d| d.to_hex()).unwrap_or_default(),
                        compressed_size: a.compressed_size,
                        uncompressed_size: a.uncompressed_size.unwrap_or(0),
                        built_here: a.built_here,
                        reused_from_run_id: a.reused_from_run_id.clone().unwrap_or_default(),
                        trusted: c.trusted,
                        published_at: c.published_at.clone(),
                    };
                    artifacts.push(pb::ResolvedArtifact {
                        artifact: a.artifact.to_string(),
                        name: a.artifact.name.clone(),
                        component: a.artifact.component.to_string(),
                        family: a.artifact.family.clone(),
                        fingerprint: r
                            .fingerprint
                            .or(a.fingerprint)
                            .map(|d| d.to_hex())
                            .unwrap_or_default(),
                        status: pb::ResolveStatus::Found as i32,
                        producer: Some(producer),
                        tree_digest: a.tree_digest.map(|d| d.to_hex()).unwrap_or_default(),
                        explanation: r.explanation.clone(),
                    });
                }
            }
            None => {
                let (name, component, family) = match &r.selector {
                    ArchiveSelector::Archive(a) => {
                        (a.name.clone(), a.component.to_string(), a.family.clone())
                    }
                    ArchiveSelector::Artifact(name) => (name.clone(), String::new(), String::new()),
                };
                artifacts.push(pb::ResolvedArtifact {
                    artifact: r.selector.to_string(),
                    name,
                    component,
                    family,
                    fingerprint: r.fingerprint.map(|d| d.to_hex()).unwrap_or_default(),
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
            .map(|e| {
                // A name that is not UTF-8 goes byte-exact in the `_bytes` field, its string empty.
                let (path, path_bytes) = match e.path.to_str() {
                    Some(p) => (p.to_string(), Vec::new()),
                    None => (String::new(), e.path.as_bytes().to_vec()),
                };
                let (link_target, link_target_bytes) = match &e.link_target {
                    None => (String::new(), Vec::new()),
                    Some(t) => match t.to_str() {
                        Some(t) => (t.to_string(), Vec::new()),
                        None => (String::new(), t.as_bytes().to_vec()),
                    },
                };
                pb::TreeEntry {
                    path,
                    path_bytes,
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
                    link_target,
                    link_target_bytes,
                }
            })
            .collect(),
        source: source.to_string(),
        run_id: run_id.to_string(),
    }
}

fn event(e: Event) -> pb::FetchEvent {
    pb::FetchEvent { event: Some(e) }
}

/// One Fetch event as wire messages (a batch of blob paths for an older client is one message per
/// blob, so the result is a list).
pub fn fetch_event_to_pb(e: FetchEvent, delivery: Delivery) -> Vec<pb::FetchEvent> {
    match e {
        FetchEvent::Resolved(rs) => vec![event(Event::Resolved(resolved_to_pb(&rs)))],
        FetchEvent::Progress {
            artifact,
            archives_done,
            archives_total,
            from_cas,
            downloaded_bytes,
        } => vec![event(Event::Progress(pb::Progress {
            artifact: artifact.to_string(),
            // The wire's names predate this message; they carry archive counts.
            bytes_done: archives_done,
            bytes_total: archives_total,
            downloaded_bytes: if from_cas { 0 } else { downloaded_bytes },
            message: if from_cas {
                "from cache".into()
            } else {
                format!("downloaded {downloaded_bytes} bytes")
            },
        }))],
        FetchEvent::Tree(l) => {
            let source = if l.from_cas { "cas" } else { "storage" };
            vec![event(Event::Tree(tree_to_pb(
                &l.artifact.to_string(),
                &l.tree_digest,
                &l.tree,
                source,
                &l.run_id,
            )))]
        }
        FetchEvent::BlobPaths(locations) => {
            let paths = locations.into_iter().map(|l| pb::BlobPath {
                blake3: l.digest.to_hex(),
                path: l.path.to_string_lossy().into_owned(),
                size: l.size,
            });
            match delivery {
                Delivery::PathBatches => vec![event(Event::BlobPaths(pb::BlobPaths {
                    paths: paths.collect(),
                }))],
                _ => paths.map(|p| event(Event::BlobPath(p))).collect(),
            }
        }
        FetchEvent::BlobChunk {
            digest,
            offset,
            data,
            last,
        } => vec![event(Event::BlobChunk(pb::BlobChunk {
            blake3: digest.to_hex(),
            offset,
            data,
            last,
        }))],
        FetchEvent::Summary(s) => vec![event(Event::Summary(pb::FetchSummary {
            artifacts: s.artifacts,
            files: s.files,
            bytes: s.bytes,
            from_cas: s.from_cas,
            from_storage: s.from_storage,
            storage_bytes: s.storage_bytes,
            runs: s.runs,
            elapsed_ms: s.elapsed.as_millis() as u64,
        }))],
    }
}

/// What a publish wrote, as the wire carries it.
pub fn publish_outcome_to_pb(out: PublishOutcome) -> pb::PublishResponse {
    pb::PublishResponse {
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
                reused_from_run_id: a.reused_from_run_id,
            })
            .collect(),
        job_manifest_key: out.job_manifest_key,
        trusted: out.trusted,
    }
}

fn run_ref(run: &RunIdentity, bucket: &str, prefix: &str) -> pb::RunRef {
    pb::RunRef {
        repo: run.repo.clone(),
        workflow: run.workflow.clone(),
        run_id: run.run_id.clone(),
        commit: run.commit.clone(),
        platform: run.platform.to_string(),
        status: run.status.to_string(),
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        archives: Vec::new(),
        published_at: String::new(),
        trusted: false,
        jobs: Vec::new(),
    }
}

/// A run of a commit, as the wire carries it.
pub fn commit_run_to_pb(r: &CommitRun) -> pb::RunRef {
    pb::RunRef {
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
        ..run_ref(&r.run, &r.bucket, &r.prefix)
    }
}

/// A run's trees, as the wire carries them.
pub fn run_trees_to_pb(t: &RunTrees) -> pb::RunTreesResponse {
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
        run: t.run.as_ref().map(|run| run_ref(run, &t.bucket, &t.prefix)),
    }
}

/// A verify report on the wire (`seconds` is filled by the caller when it timed the run).
pub fn verify_to_pb(r: &crate::store::VerifyReport) -> pb::VerifyResponse {
    pb::VerifyResponse {
        checked: r.checked,
        bytes: r.bytes,
        corrupt: r
            .corrupt
            .iter()
            .map(|c| pb::CorruptBlob {
                digest: c.digest.to_string(),
                path: c.path.display().to_string(),
                quarantined_to: c.quarantined_to.display().to_string(),
                actual: c.actual.map(|a| a.to_string()).unwrap_or_default(),
            })
            .collect(),
        missing: r.missing.iter().map(ToString::to_string).collect(),
        seconds: 0.0,
    }
}

/// Warm-up's status on the wire.
pub fn warmup_to_pb(w: crate::service::warmup::WarmupStatus) -> pb::WarmupStats {
    pb::WarmupStats {
        enabled: w.enabled,
        branches: w.branches,
        last_poll: w.last_poll.unwrap_or_default(),
        last_run: w.last_run.into_iter().collect(),
        prefetched_bytes: w.prefetched_bytes,
        prefetched_archives: w.prefetched_archives,
        already_local_archives: w.already_local_archives,
        skipped_quota_archives: w.skipped_quota_archives,
        hits: w.hits,
        wasted_bytes: w.wasted_bytes,
        polls: w.polls,
        last_error: w.last_error.unwrap_or_default(),
    }
}
