//! The Publish RPC: archive a build directory's artifacts, ingest them, upload archives and sidecars,
//! then tree manifests, the job manifest, producer records and the commit index entry — records last.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use tracing::{info, instrument};

use cairn_fingerprint::layout::{Area, RunOutputRoot, RunSpec, in_area, tree_manifest_key};
use cairn_fingerprint::names::ArtifactName;
use cairn_fingerprint::{Blake3, Compression};

use super::error::{Result, ServiceError, internal};
use super::resolve::candidates_cache_key;
use super::{Service, invalid};
use crate::archive;
use crate::records::{
    ArchiveRecord, CommitRecord, JOB_MANIFEST_VERSION, JobManifest, PRODUCER_RECORD_VERSION,
    ProducerRecord, RunIdentity, now_rfc3339,
};
use crate::storage::{PutBody, PutOutcome};

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

impl Service {
    /// Publish a build directory: archives and sidecars first, then tree manifests, the job manifest,
    /// producer records and the commit index entry — records last, so none points at a missing object.
    #[instrument(skip_all, fields(stage = %input.stage, family = %input.family, run = %input.run.run_id))]
    pub async fn publish(&self, input: PublishRequest) -> Result<PublishOutcome> {
        let spec = run_spec(&input.run)?;
        let root = RunOutputRoot::from_run(&spec).map_err(invalid)?;
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
        let level = compression.default_level();
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

        if let Ok(commit_entry_key) =
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
        }
        Ok(PublishOutcome {
            bucket: root.bucket().to_string(),
            prefix: run_prefix,
            archives,
            job_manifest_key,
            trusted: root.trusted(),
        })
    }
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
