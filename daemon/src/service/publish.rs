//! The Publish RPC: archive a build directory's artifacts, ingest them, upload archives and sidecars,
//! then tree manifests, the job manifest, producer records and the commit index entry — records last.
//!
//! The build dir belongs to the caller and is only read: without following any symlink, and with the
//! Unix-socket peer's rights when `cairnd` is root (`buildtree.rs`). Archives are written in a
//! private per-publish directory under the store (`LocalStore::scratch_dir`), never in the build dir.
//! A publish over TCP names no build dir: the client streams its artifacts (`publish_stream.rs`),
//! which then take the same path from ingest on.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tracing::{info, instrument};

use cairn_fingerprint::artifact_dir::{self, ArtifactSource};
use cairn_fingerprint::layout::{
    Area, GithubRepo, RunOutputRoot, RunSpec, branch_feed_key, in_area, tree_manifest_key,
};
use cairn_fingerprint::names::{ArtifactName, GENERIC, family_matches};
use cairn_fingerprint::{Blake3, Compression, Sha256};

use super::error::{Result, ServiceError, internal};
use super::resolve::candidates_cache_key;
use super::{Service, invalid};
use crate::archive;
use crate::buildtree::{self, Dir, FsIdentity};
use crate::records::{
    ArchiveRecord, BranchFeedRecord, CommitRecord, JOB_MANIFEST_VERSION, JobManifest,
    PRODUCER_RECORD_VERSION, ProducerRecord, RunIdentity, now_rfc3339,
};
use crate::storage::{PutBody, PutOutcome};
use crate::store::index::Version;

/// A publish request in domain terms.
#[derive(Debug, Clone)]
pub struct PublishRequest {
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
    /// Compression level (checked at the edge); `None`: TheRock's default for `compression`.
    pub compression_level: Option<u32>,
    /// Fingerprint per artifact name; only artifacts named here are published.
    pub fingerprints: BTreeMap<String, Blake3>,
    /// Artifact name → run it was reused from (not built by this job).
    pub reused_from: BTreeMap<String, String>,
    /// The branch the run built (checked at the edge): the publish also files a branch feed entry,
    /// which warm-up follows. `None`: no feed entry.
    pub branch: Option<String>,
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

/// Who asked for a publish, which decides whose rights the build dir is read with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// In-process callers (tests, tools): the daemon's own rights.
    Daemon,
    /// The peer of the Unix socket (`SO_PEERCRED`, `SO_PEERGROUPS`): when `cairnd` runs as root and
    /// the peer does not, the build dir is read with the peer's uid, gid and supplementary groups.
    Local(FsIdentity),
    /// A TCP client: it cannot name a path on this machine (it streams its artifacts, or sends a
    /// record-only publish, which reads no path).
    Remote,
}

/// Why a TCP publish naming a build dir is refused.
pub const TCP_PUBLISH_REFUSED: &str = "a publish over TCP cannot name a build dir (it would be read \
     on the daemon's machine): the client streams the artifacts instead (`PublishStream`, what \
     `cairn push` does over TCP); update the client, or run it over the daemon's Unix socket";

impl Service {
    /// [`Service::publish_as`] for an in-process caller, with the daemon's own rights.
    pub async fn publish(&self, input: PublishRequest) -> Result<PublishOutcome> {
        self.publish_as(input, Caller::Daemon).await
    }

    /// Publish a build directory: archives and sidecars first, then tree manifests, the job manifest,
    /// producer records and the commit index entry — records last, so none points at a missing object.
    ///
    /// The build dir is the caller's: it is read without following any symlink (`buildtree`) and, for
    /// a local non-root caller of a root daemon, with the caller's rights. Nothing is written there:
    /// archives are made in a private directory under the store, removed afterwards.
    #[instrument(skip_all, fields(stage = %input.stage, family = %input.family, run = %input.run.run_id))]
    pub async fn publish_as(
        &self,
        input: PublishRequest,
        caller: Caller,
    ) -> Result<PublishOutcome> {
        let identity = match caller {
            // A record-only publish (`cairn copy`) reads no path, so a remote client may send it.
            Caller::Remote if !input.fingerprints.is_empty() => {
                return Err(ServiceError::InvalidArgument(TCP_PUBLISH_REFUSED.into()));
            }
            Caller::Remote | Caller::Daemon => None,
            Caller::Local(identity) => Some(identity),
        };
        let (root, backend) = self.publish_target(&input)?;
        let record_only = self.check_publishes_something(&input)?;
        let scratch = self.store.scratch_dir()?;
        let written = if record_only {
            Vec::new()
        } else {
            self.archive_build_dir(&input, identity, &scratch).await?
        };
        self.publish_written(input, root, backend, scratch, written)
            .await
    }

    /// Where `input`'s run publishes: its output root and the backend of its bucket.
    pub(super) fn publish_target(
        &self,
        input: &PublishRequest,
    ) -> Result<(RunOutputRoot, crate::storage::backends::Backend)> {
        let spec = run_spec(&input.run)?;
        let root = RunOutputRoot::from_run(&spec).map_err(invalid)?;
        let backend = self.backend(root.bucket())?.clone();
        Ok((root, backend))
    }

    /// Whether `input` is record-only (`cairn copy`, TheRock's stage reuse: no artifact built, only
    /// the reuse of another run's archives recorded; no build dir read); an error when it publishes
    /// nothing at all.
    pub(super) fn check_publishes_something(&self, input: &PublishRequest) -> Result<bool> {
        let record_only = input.fingerprints.is_empty();
        if record_only && input.reused_from.is_empty() {
            return Err(ServiceError::InvalidArgument(
                "nothing to publish: no artifact fingerprints and no reused artifacts".into(),
            ));
        }
        Ok(record_only)
    }

    /// Archive the build dir's artifacts named in `input` into `scratch`, reading them with
    /// `identity`'s rights (none: the daemon's own) and without following any symlink.
    async fn archive_build_dir(
        &self,
        input: &PublishRequest,
        identity: Option<FsIdentity>,
        scratch: &tempfile::TempDir,
    ) -> Result<Vec<Written>> {
        // Which artifact dirs to publish, listed with the caller's rights.
        let build_dir = input.build_dir.clone();
        let wanted = input.fingerprints.clone();
        let first_identity = identity.clone();
        let listed = tokio::task::spawn_blocking(move || {
            buildtree::par_map_as(first_identity, vec![()], 1, |()| {
                list_artifacts(&build_dir, &wanted)
            })
        })
        .await
        .map_err(internal)?
        .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        let dirs = listed.into_iter().next().expect("one listing")?;
        if dirs.is_empty() {
            return Err(ServiceError::NotFound(
                artifact_dir::ArtifactDirError::NoneWanted {
                    artifacts: input.build_dir.join("artifacts"),
                    wanted: input.fingerprints.len(),
                }
                .to_string(),
            ));
        }

        // Archives are written in a private directory of the store (never in the build dir): the
        // daemon creates each output file itself, then the caller-identity threads fill them.
        let opts = archive_options(input);
        let mut jobs = Vec::with_capacity(dirs.len());
        for (dir_name, name, fp, source) in dirs {
            let file_name = match source {
                ArtifactSource::Dir => name.archive(opts.compression),
                ArtifactSource::Archive(c) => name.archive(c),
            }
            .to_string();
            let path = scratch.path().join(&file_name);
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| internal(format!("`{}`: {e}", path.display())))?;
            jobs.push((dir_name, name, fp, source, file_name, path, file));
        }
        let build_dir = input.build_dir.clone();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::task::spawn_blocking(move || {
            buildtree::par_map_as(
                identity,
                jobs,
                threads,
                |(dir_name, name, fp, source, file_name, path, file)| {
                    let bad = |e: std::io::Error| {
                        ServiceError::InvalidArgument(format!("artifact `{name}`: {e}"))
                    };
                    let artifacts = Dir::open(&build_dir)
                        .and_then(|b| b.open_dir(OsStr::new("artifacts")))
                        .map_err(bad)?;
                    let (info, origin) = match source {
                        ArtifactSource::Dir => {
                            let artifact = artifacts.open_dir(&dir_name).map_err(bad)?;
                            let info =
                                archive::write_archive(&artifact, &file, &opts).map_err(|e| {
                                    ServiceError::InvalidArgument(format!("artifact `{name}`: {e}"))
                                })?;
                            (info, Origin::Cairnd)
                        }
                        ArtifactSource::Archive(_) => {
                            let info =
                                copy_archive(artifacts.open_file(&dir_name).map_err(bad)?, &file)
                                    .map_err(bad)?;
                            let what = format!("pre-compressed archive `artifacts/{file_name}`");
                            (info, Origin::Caller(what))
                        }
                    };
                    Ok::<_, ServiceError>(Written {
                        name,
                        fp,
                        file_name,
                        path,
                        info,
                        origin,
                    })
                },
            )
        })
        .await
        .map_err(internal)?
        .map_err(internal)?
        .into_iter()
        .collect::<Result<Vec<_>>>()
    }

    /// Ingest, upload and record archives already in `scratch`, whoever made them: sidecars and tree
    /// manifests with the archives, then the job manifest, producer records and the commit index
    /// entry — records last, so none points at a missing object.
    pub(super) async fn publish_written(
        &self,
        input: PublishRequest,
        root: RunOutputRoot,
        backend: crate::storage::backends::Backend,
        scratch: tempfile::TempDir,
        written: Vec<Written>,
    ) -> Result<PublishOutcome> {
        let record_only = input.fingerprints.is_empty();
        // Ingest each archive (warms this machine's CAS and gives the tree), as the daemon.
        let store = self.store.clone();
        let run_id = input.run.run_id.clone();
        let built = tokio::task::spawn_blocking(move || {
            use rayon::prelude::*;
            written
                .into_par_iter()
                .map(|w| -> Result<_> {
                    let Written {
                        name,
                        fp,
                        file_name,
                        path,
                        mut info,
                        origin,
                    } = w;
                    // This run built it: a newer build than any earlier run's (for eviction).
                    let version = Version::of_build(&name.to_string(), &run_id);
                    let outcome = store
                        .ingest_file_leased(
                            &format!("publish/{}", info.sha256),
                            &path,
                            Some(info.sha256),
                            version,
                        )
                        .map(|(outcome, _lease)| outcome)
                        .map_err(|e| match &origin {
                            // The caller's archive, not cairnd's: say which one is bad.
                            Origin::Caller(what) => {
                                ServiceError::InvalidArgument(format!("{what}: {e}"))
                            }
                            Origin::Cairnd => e.into(),
                        })?;
                    if let Origin::Caller(_) = origin {
                        info.uncompressed_size = outcome.tree.total_size();
                        info.files = outcome.tree.file_count() as u64;
                    }
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
        // The archives are uploaded and ingested: their scratch copies go.
        drop(scratch);

        // What this job used without building it: recorded, not uploaded again.
        let reused = self.reused_records(&backend, &input, &archives).await?;
        if record_only && reused.is_empty() {
            let runs: BTreeSet<&str> = input.reused_from.values().map(String::as_str).collect();
            return Err(ServiceError::NotFound(format!(
                "run(s) {} have no Cairn record of the {} artifact(s) to record for family `{}` \
                 (a run published without Cairn has none): nothing recorded; take them with \
                 --run-id instead",
                runs.into_iter().collect::<Vec<_>>().join(", "),
                input.reused_from.len(),
                input.family
            )));
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
            archives: archives.iter().chain(&reused).cloned().collect(),
        };
        let job_manifest_key = root
            .job_manifest_key(&input.stage, &input.family)
            .map_err(invalid)?;
        backend
            .storage
            .put(
                &job_manifest_key,
                PutBody::Bytes(Bytes::from(
                    serde_json::to_vec_pretty(&manifest).map_err(internal)?,
                )),
            )
            .await?;

        self.write_index_page(&backend, &root).await?;

        let area = root.area();
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
            let key = in_area(area, &root.producer_record_key(&fp));
            let body = Bytes::from(serde_json::to_vec_pretty(&record).map_err(internal)?);
            match backend.storage.put_if_absent(&key, body).await? {
                PutOutcome::Created => {}
                PutOutcome::AlreadyExists => {
                    info!(%key, "producer record already exists; keeping the first")
                }
            }
            // A fingerprint that now has a producer must not stay negatively cached here.
            for area in Area::ALL {
                let _ = self
                    .store
                    .index()
                    .remove_meta(&candidates_cache_key(area, &fp));
            }
        }

        // A record-only publish built nothing at this commit: no commit index entry.
        if !record_only
            && let Ok(commit_entry_key) =
                root.commit_entry_key(&input.run.commit, &input.stage, &input.family)
        {
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
            let key = in_area(area, &commit_entry_key);
            backend
                .storage
                .put(
                    &key,
                    PutBody::Bytes(Bytes::from(
                        serde_json::to_vec_pretty(&entry).map_err(internal)?,
                    )),
                )
                .await?;
            if let Some(branch) = &input.branch {
                self.write_branch_feed_entry(&backend, area, branch, entry)
                    .await?;
            }
        }
        Ok(PublishOutcome {
            bucket: root.bucket().to_string(),
            prefix: run_prefix,
            archives: archives.into_iter().chain(reused).collect(),
            job_manifest_key,
            trusted: root.trusted(),
        })
    }
}

impl Service {
    /// File `entry` in `branch`'s feed ([`branch_feed_key`], in `area`: an untrusted run's entry
    /// goes under `untrusted/`, which warm-up never follows), after the commit index entry it copies.
    async fn write_branch_feed_entry(
        &self,
        backend: &crate::storage::backends::Backend,
        area: Area,
        branch: &str,
        entry: CommitRecord,
    ) -> Result<()> {
        let repo: GithubRepo = entry.run.repo.parse().map_err(invalid)?;
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let key = branch_feed_key(
            &repo,
            branch,
            unix_ms,
            &entry.run.run_id,
            entry.run.platform,
        )
        .map_err(invalid)?;
        let record = BranchFeedRecord {
            branch: branch.to_string(),
            entry,
        };
        let body = Bytes::from(serde_json::to_vec_pretty(&record).map_err(internal)?);
        backend
            .storage
            .put(&in_area(area, &key), PutBody::Bytes(body))
            .await?;
        Ok(())
    }

    /// Regenerate the run's `index.html` from its job manifests. Jobs of one run publish
    /// concurrently: after writing, the manifests are listed again and the page rewritten while
    /// the set changed, so the last page written names every manifest written before it (a job
    /// whose manifest lands later writes a later page itself). Bounded: a run with a job
    /// publishing every moment stops after a few rounds, and the next publish catches up.
    async fn write_index_page(
        &self,
        backend: &crate::storage::backends::Backend,
        root: &RunOutputRoot,
    ) -> Result<()> {
        let key = root.index_key();
        let mut notes = Vec::new();
        let mut manifests = self.job_manifests(backend, root, &mut notes).await?;
        for _ in 0..8 {
            let page = super::index_page::render(&root.prefix(), &manifests);
            backend
                .storage
                .put(&key, PutBody::Bytes(Bytes::from(page)))
                .await?;
            let again = self.job_manifests(backend, root, &mut notes).await?;
            let seen = |ms: &[JobManifest]| -> Vec<(String, String)> {
                ms.iter()
                    .map(|m| (m.published_at.clone(), format!("{}-{}", m.stage, m.family)))
                    .collect()
            };
            if seen(&again) == seen(&manifests) {
                return Ok(());
            }
            manifests = again;
        }
        Ok(())
    }

    /// The records of the artifacts a job used but did not build (`reused_from`: artifact name →
    /// run it came from), copied from that run's job manifests: the archive stays where it is, and
    /// the record says `built_here: false` and names the run that really built it (a chain of
    /// reuses is followed to its builder, since each copied record already names it). Only
    /// archives of the job's family or `generic` are taken. A named artifact that run has no record
    /// of is skipped with a warning: the run's manifests then list less, never something wrong.
    async fn reused_records(
        &self,
        backend: &crate::storage::backends::Backend,
        input: &PublishRequest,
        built: &[ArchiveRecord],
    ) -> Result<Vec<ArchiveRecord>> {
        let mut by_run: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (name, run_id) in &input.reused_from {
            if run_id != &input.run.run_id && !built.iter().any(|a| &a.name == name) {
                by_run.entry(run_id).or_default().insert(name);
            }
        }
        let mut out = Vec::new();
        for (run_id, names) in by_run {
            let source = RunIdentity {
                run_id: run_id.to_string(),
                ..input.run.clone()
            };
            let root = RunOutputRoot::from_run(&run_spec(&source)?).map_err(invalid)?;
            let mut notes = Vec::new();
            let manifests = self.job_manifests(backend, &root, &mut notes).await?;
            for n in notes {
                tracing::warn!(run = run_id, "{n}");
            }
            // Oldest first: a later manifest's record of the same archive wins.
            let mut latest: BTreeMap<String, ArchiveRecord> = BTreeMap::new();
            for a in manifests.iter().flat_map(|m| &m.archives) {
                let family_fits = a.family == GENERIC || family_matches(&a.family, &input.family);
                if names.contains(a.name.as_str()) && family_fits {
                    latest.insert(a.artifact.clone(), a.clone());
                }
            }
            for name in &names {
                if !latest.values().any(|a| a.name == *name) {
                    tracing::warn!(
                        artifact = name,
                        run = run_id,
                        "reused artifact has no record in its run's job manifests; not recorded"
                    );
                }
            }
            for (_, mut a) in latest {
                if a.built_here {
                    a.reused_from_run_id = run_id.to_string();
                }
                a.built_here = false;
                out.push(a);
            }
        }
        Ok(out)
    }
}

/// The artifact dirs and pre-compressed archives under `{build_dir}/artifacts` named in `wanted`
/// (`artifact_dir::list_artifacts`, the one listing rule), as (entry name, name, fingerprint,
/// source). Neither `build_dir` nor `artifacts` may be a symlink.
fn list_artifacts(
    build_dir: &Path,
    wanted: &BTreeMap<String, Blake3>,
) -> Result<Vec<(OsString, ArtifactName, Blake3, ArtifactSource)>> {
    let artifacts = Dir::open(build_dir)
        .and_then(|b| b.open_dir(OsStr::new("artifacts")))
        .map_err(|e| ServiceError::InvalidArgument(format!("cannot read the build dir: {e}")))?;
    let listed = artifact_dir::list_artifacts(&artifacts, &|name| wanted.contains_key(name))
        .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
    Ok(listed
        .into_iter()
        .map(|l| {
            let fp = wanted[&l.name.name];
            (l.entry, l.name, fp, l.source)
        })
        .collect())
}

/// An archive in a publish's scratch dir, ready to ingest and upload.
pub(super) struct Written {
    /// The artifact.
    pub name: ArtifactName,
    /// Its fingerprint.
    pub fp: Blake3,
    /// `{name}_{component}_{family}.tar.zst|.tar.xz`.
    pub file_name: String,
    /// The archive in the scratch dir.
    pub path: PathBuf,
    /// Its SHA-256 and size (and counts, when cairnd wrote it).
    pub info: archive::ArchiveInfo,
    /// Who made its content.
    pub origin: Origin,
}

/// Who made an archive's content, which decides how a bad one is reported and where its counts
/// come from.
pub(super) enum Origin {
    /// cairnd, from a build dir it read: its counts are known, and a failed ingest is cairnd's.
    Cairnd,
    /// The caller (a pre-compressed archive, or a streamed artifact), named: its counts come from
    /// its tree, and a failed ingest is the caller's (`InvalidArgument` naming it).
    Caller(String),
}

/// The archive options of `input`: its compression, at its level or TheRock's default.
pub(super) fn archive_options(input: &PublishRequest) -> archive::CreateOptions {
    archive::CreateOptions {
        compression: input.compression,
        level: input
            .compression_level
            .unwrap_or_else(|| input.compression.default_level()),
        reverse_order: false,
    }
}

/// Copy the pre-compressed archive `file` into `out`, hashing it: its SHA-256 and size (the file
/// counts come from its tree after ingest).
pub(super) fn copy_archive(
    mut file: impl std::io::Read,
    out: &std::fs::File,
) -> std::io::Result<archive::ArchiveInfo> {
    use sha2::Digest as _;
    use std::io::Write as _;
    let mut hasher = sha2::Sha256::new();
    let mut writer = std::io::BufWriter::new(out);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
        size += n as u64;
    }
    writer.flush()?;
    Ok(archive::ArchiveInfo {
        sha256: Sha256(hasher.finalize().into()),
        compressed_size: size,
        uncompressed_size: 0,
        files: 0,
    })
}

/// The layout spec of a run identity.
pub fn run_spec(run: &RunIdentity) -> Result<RunSpec> {
    let mut spec = RunSpec::new(&run.run_id, run.platform);
    if !run.repo.is_empty() {
        spec.repo = run.repo.parse().map_err(invalid)?;
    }
    if !run.head_repo.is_empty() {
        spec.head_repo = Some(run.head_repo.parse().map_err(invalid)?);
    }
    Ok(spec)
}
