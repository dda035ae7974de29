//! Run history: which runs published for a commit (Cairn's **commit index**), and what a run's archives
//! hold (its **job manifests** and **tree manifests**), so clients can find baselines and diff sizes
//! without downloading archives.
//!
//! Vocabulary: a *commit index entry* is the [`CommitRecord`] one job writes at
//! `cairn/commits/{commit}/{run_id}-{platform}/{stage}-{family}.json` (under `untrusted/` for untrusted
//! runs); a [`CommitRun`] aggregates the entries of one run. [`RunTrees`] lists a run's archives with
//! their sizes, from tree manifests when the run was published by Cairn, else from the run listing
//! (compressed sizes only, with a note saying so).
//!
//! Caching: the commit index is listed on every call (a new run may publish at any time; it is one
//! LIST per backend and area). Tree manifests are immutable and content-addressed, so each one read
//! from storage is verified against its digest and kept in the local index.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::{instrument, warn};

use cairn_fingerprint::layout::{
    Area, RunOutputRoot, RunSpec, commit_index_prefix, tree_manifest_key,
};
use cairn_fingerprint::{Blake3, Tree};

use crate::records::{CommitRecord, JOB_MANIFEST_VERSION, JobManifest, RunIdentity};
use crate::service::{Result, Service, ServiceError, invalid};

/// One job's commit index entry, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitJob {
    /// Build stage.
    pub stage: String,
    /// GPU family of the job.
    pub family: String,
    /// Archive file names the job published.
    pub archives: Vec<String>,
    /// RFC 3339 publish time.
    pub published_at: String,
}

/// One run that published artifacts for a commit, aggregated over its jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRun {
    /// The run (from its newest entry; every job of a run names the same run).
    pub run: RunIdentity,
    /// Bucket of the run.
    pub bucket: String,
    /// Run prefix within the bucket.
    pub prefix: String,
    /// Whether the entries were read from the trusted area of a trusted backend.
    pub trusted: bool,
    /// Jobs, sorted by stage then family.
    pub jobs: Vec<CommitJob>,
    /// Every archive file name of every job, sorted, without duplicates.
    pub archives: Vec<String>,
    /// Newest publish time among the jobs.
    pub published_at: String,
}

/// Where an archive's sizes in [`RunTrees`] come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeSource {
    /// A job manifest and the archive's verified tree manifest: per-file sizes.
    Manifest,
    /// A job manifest whose tree manifest is missing or unreadable: archive totals only.
    Job,
    /// Only the run listing: the compressed object size.
    Listing,
}

impl SizeSource {
    /// `manifest`, `job` or `listing` (the wire spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            SizeSource::Manifest => "manifest",
            SizeSource::Job => "job",
            SizeSource::Listing => "listing",
        }
    }
}

/// One archive of a run with what is known about its size.
#[derive(Debug, Clone)]
pub struct RunArchive {
    /// `{name}_{component}_{family}`.
    pub artifact: String,
    /// Object key.
    pub key: String,
    /// Archive size in bytes.
    pub compressed_size: u64,
    /// Sum of file sizes (0 when only the listing is known).
    pub uncompressed_size: u64,
    /// Regular files (0 when only the listing is known).
    pub files: u64,
    /// The verified tree, when a tree manifest exists.
    pub tree: Option<(Blake3, Arc<Tree>)>,
    /// Where the sizes come from.
    pub source: SizeSource,
}

/// A run's archives and their contents.
#[derive(Debug, Clone)]
pub struct RunTrees {
    /// Bucket of the run.
    pub bucket: String,
    /// Run prefix.
    pub prefix: String,
    /// The run as its job manifests name it (`None` for runs published without Cairn).
    pub run: Option<RunIdentity>,
    /// Archives sorted by artifact.
    pub archives: Vec<RunArchive>,
    /// Why some sizes are less exact than others.
    pub notes: Vec<String>,
}

/// A FindRuns request in domain terms.
#[derive(Debug, Clone)]
pub struct FindRunsRequest {
    /// The commit (hex).
    pub commit: String,
    /// Only runs of this repository (`OWNER/REPO`, any case).
    pub repo: Option<String>,
    /// Only runs for this platform.
    pub platform: Option<cairn_fingerprint::Platform>,
    /// Also read the untrusted area.
    pub allow_untrusted: bool,
}

impl Service {
    /// Runs that published artifacts for `commit`, newest first: one LIST of
    /// `cairn/commits/{commit}/` per backend (and of `untrusted/cairn/commits/{commit}/` with
    /// `allow_untrusted`), then one GET per entry. `repo` and `platform` filter when non-empty.
    /// Unreadable entries are skipped with a warning: one bad entry must not hide the other runs.
    #[instrument(skip_all, fields(commit = %request.commit))]
    pub async fn find_runs(&self, request: &FindRunsRequest) -> Result<Vec<CommitRun>> {
        let commit = request.commit.to_ascii_lowercase();
        commit_index_prefix(&commit).map_err(invalid)?;
        // (trusted, bucket, prefix) → the run; the same run seen through two backends is one run.
        let mut runs: BTreeMap<(String, String), CommitRun> = BTreeMap::new();
        for backend in self.backends().all() {
            for &area in Area::readable(request.allow_untrusted) {
                let prefix = area.commit_index_prefix(&commit).map_err(invalid)?;
                let listing = backend.storage.list(&prefix, None).await?;
                for obj in listing.objects {
                    if !obj.key.ends_with(".json") {
                        continue;
                    }
                    let Some(bytes) = backend
                        .storage
                        .get_document(&obj.key, crate::storage::MAX_JOB_MANIFEST)
                        .await?
                    else {
                        continue;
                    };
                    let entry: CommitRecord = match serde_json::from_slice(&bytes) {
                        Ok(e) => e,
                        Err(e) => {
                            warn!(key = %obj.key, error = %e, "ignoring malformed commit index entry");
                            continue;
                        }
                    };
                    if !entry.run.commit.eq_ignore_ascii_case(&commit) {
                        warn!(key = %obj.key, names = %entry.run.commit, "ignoring commit index entry filed under another commit");
                        continue;
                    }
                    if let Some(repo) = &request.repo
                        && !entry.run.repo.eq_ignore_ascii_case(repo)
                    {
                        continue;
                    }
                    if request.platform.is_some_and(|p| entry.run.platform != p) {
                        continue;
                    }
                    let trusted = backend.trusts(area, &entry.bucket);
                    let job = CommitJob {
                        stage: entry.stage.clone(),
                        family: entry.family.clone(),
                        archives: entry.archives.clone(),
                        published_at: entry.published_at.clone(),
                    };
                    let run = runs
                        .entry((entry.bucket.clone(), entry.prefix.clone()))
                        .or_insert_with(|| CommitRun {
                            run: entry.run.clone(),
                            bucket: entry.bucket.clone(),
                            prefix: entry.prefix.clone(),
                            trusted,
                            jobs: Vec::new(),
                            archives: Vec::new(),
                            published_at: String::new(),
                        });
                    // A run is trusted only if every entry of it was read from a trusted place.
                    run.trusted &= trusted;
                    if entry.published_at >= run.published_at {
                        run.published_at = entry.published_at.clone();
                        // The newest job's view of the run wins (e.g. a status that became final).
                        run.run = entry.run.clone();
                    }
                    if !run
                        .jobs
                        .iter()
                        .any(|j| j.stage == job.stage && j.family == job.family)
                    {
                        run.jobs.push(job);
                    }
                }
            }
        }
        let mut out: Vec<CommitRun> = runs
            .into_values()
            .map(|mut r| {
                r.jobs
                    .sort_by(|a, b| (&a.stage, &a.family).cmp(&(&b.stage, &b.family)));
                let mut archives: Vec<String> = r
                    .jobs
                    .iter()
                    .flat_map(|j| j.archives.iter().cloned())
                    .collect();
                archives.sort();
                archives.dedup();
                r.archives = archives;
                r
            })
            .collect();
        // Newest first: by publish time, then by run id as a number (GitHub run ids grow).
        out.sort_by(|a, b| {
            b.published_at
                .cmp(&a.published_at)
                .then_with(|| run_number(&b.run.run_id).cmp(&run_number(&a.run.run_id)))
                .then_with(|| b.run.run_id.cmp(&a.run.run_id))
        });
        Ok(out)
    }

    /// A run's archives with their sizes: the job manifests under `{prefix}/cairn/` and the tree
    /// manifests they name (verified against their digests), then the run listing for archives no
    /// job manifest describes (compressed size only, with a note).
    #[instrument(skip_all, fields(run = %spec.run_id, platform = %spec.platform))]
    pub async fn run_trees(&self, spec: &RunSpec) -> Result<RunTrees> {
        let root = RunOutputRoot::from_run(spec).map_err(invalid)?;
        let backend = self
            .backends()
            .for_bucket(root.bucket())
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "no storage backend configured for bucket `{}`",
                    root.bucket()
                ))
            })?
            .clone();
        let mut notes = Vec::new();

        // Job manifests, oldest first, so a later job's record of a shared `_generic` archive wins
        // (TheRock's last-writer-wins on the object itself).
        let manifests = self.job_manifests(&backend, &root, &mut notes).await?;
        let run = manifests.last().map(|m| m.run.clone());

        let mut archives: BTreeMap<String, RunArchive> = BTreeMap::new();
        for m in &manifests {
            for a in &m.archives {
                archives.insert(
                    a.artifact.clone(),
                    RunArchive {
                        artifact: a.artifact.clone(),
                        key: a.key.clone(),
                        compressed_size: a.compressed_size,
                        uncompressed_size: a.uncompressed_size,
                        files: a.files,
                        tree: None,
                        source: SizeSource::Job,
                    },
                );
            }
        }
        // Tree digests of the archives chosen above.
        let digests: BTreeMap<String, Blake3> = manifests
            .iter()
            .flat_map(|m| m.archives.iter())
            .map(|a| (a.artifact.clone(), a.tree_digest))
            .collect();
        let lookups = digests.iter().map(|(artifact, digest)| {
            let backend = backend.clone();
            async move { (artifact.clone(), self.tree_manifest(&backend, digest).await) }
        });
        for (artifact, result) in futures::future::join_all(lookups).await {
            let Some(entry) = archives.get_mut(&artifact) else {
                continue;
            };
            match result {
                Ok(Some((digest, tree))) => {
                    entry.uncompressed_size = tree.total_size();
                    entry.files = tree.file_count() as u64;
                    entry.tree = Some((digest, tree));
                    entry.source = SizeSource::Manifest;
                }
                Ok(None) => notes.push(format!(
                    "`{artifact}`: tree manifest `{}` is missing; archive totals only",
                    tree_manifest_key(&digests[&artifact])
                )),
                Err(e) => notes.push(format!(
                    "`{artifact}`: tree manifest unusable ({e}); archive totals only"
                )),
            }
        }

        // Archives in the run that no job manifest describes (runs published without Cairn, or
        // TheRock jobs alongside Cairn ones).
        let listed = self.run_listing(&root).await?;
        let mut from_listing = 0usize;
        for a in &listed.archives {
            let artifact = a.artifact.to_string();
            if archives.contains_key(&artifact) {
                continue;
            }
            from_listing += 1;
            archives.insert(
                artifact.clone(),
                RunArchive {
                    artifact,
                    key: a.key.clone(),
                    compressed_size: a.size,
                    uncompressed_size: 0,
                    files: 0,
                    tree: None,
                    source: SizeSource::Listing,
                },
            );
        }
        if from_listing > 0 {
            notes.push(format!(
                "{from_listing} archive(s) have no Cairn manifest; their sizes are compressed object sizes from the run listing"
            ));
        }
        if archives.is_empty() {
            return Err(ServiceError::NotFound(format!(
                "run `{}` has no archives under `{}`",
                spec.run_id,
                root.s3_uri()
            )));
        }
        Ok(RunTrees {
            bucket: root.bucket().to_string(),
            prefix: root.prefix(),
            run,
            archives: archives.into_values().collect(),
            notes,
        })
    }

    /// The job manifests of the run at `root`, oldest first. Unreadable, oversized, malformed or
    /// foreign-version documents are skipped, each with a note in `notes`.
    pub(super) async fn job_manifests(
        &self,
        backend: &crate::storage::backends::Backend,
        root: &RunOutputRoot,
        notes: &mut Vec<String>,
    ) -> Result<Vec<JobManifest>> {
        let listing = backend
            .storage
            .list(&root.job_manifests_prefix(), None)
            .await?;
        let mut manifests = Vec::new();
        for obj in listing.objects.iter().filter(|o| o.key.ends_with(".json")) {
            let Some(bytes) = backend
                .storage
                .get_document(&obj.key, crate::storage::MAX_JOB_MANIFEST)
                .await?
            else {
                continue;
            };
            match serde_json::from_slice::<JobManifest>(&bytes) {
                Ok(m) if m.version == JOB_MANIFEST_VERSION => manifests.push(m),
                Ok(m) => notes.push(format!(
                    "job manifest `{}` has unknown version `{}`; ignored",
                    obj.key, m.version
                )),
                Err(e) => notes.push(format!(
                    "job manifest `{}` is malformed ({e}); ignored",
                    obj.key
                )),
            }
        }
        manifests.sort_by(|a, b| a.published_at.cmp(&b.published_at));
        Ok(manifests)
    }

    /// A tree manifest by digest: from the local index, else from `cairn/trees/{digest}` on
    /// `backend` (verified, then remembered). `Ok(None)` when storage does not have it.
    async fn tree_manifest(
        &self,
        backend: &crate::storage::backends::Backend,
        digest: &Blake3,
    ) -> Result<Option<(Blake3, Arc<Tree>)>> {
        if let Some(tree) = self.store().tree(digest)? {
            return Ok(Some((*digest, tree)));
        }
        let key = tree_manifest_key(digest);
        let bytes = match backend.storage.get_bytes(&key).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let digest = *digest;
        let store = self.store().clone();
        // Parsing and hashing a large manifest is CPU work: keep it off the runtime threads.
        let tree = tokio::task::spawn_blocking(move || -> Result<Tree> {
            let tree = Tree::from_json_verified(&bytes, &digest)
                .map_err(|e| ServiceError::DataLoss(format!("tree manifest `{key}`: {e}")))?;
            store.put_tree(&tree)?;
            Ok(tree)
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))??;
        Ok(Some((digest, Arc::new(tree))))
    }
}

/// A run id as a number for ordering (`local` and other non-numeric ids sort first).
fn run_number(run_id: &str) -> u64 {
    run_id.parse().unwrap_or(0)
}
