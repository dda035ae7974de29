//! The Import RPC and run listings: what storage holds under a run prefix (runs published without
//! Cairn records), remembered in the index and listed again on a miss.

use std::collections::BTreeMap;

use cairn_fingerprint::Compression;
use cairn_fingerprint::layout::{Area, RunOutputRoot, RunSpec};
use cairn_fingerprint::names::{ArchiveName, ArtifactName};

use super::error::{Result, ServiceError, internal};
use super::policy::{Candidate, OfferedArchive};
pub use super::policy::{ListedArchive, RunListing};
use super::{Service, invalid};
use crate::records::{RunIdentity, RunStatus};
use crate::store::error::StoreError;

/// An import request in domain terms.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The run (id, platform, repository).
    pub run: RunSpec,
    /// Make every archive local now, not only list the run.
    pub ingest: bool,
}

impl Service {
    /// The archives of a run, listed once (`Prefix="{prefix}/"`, `Delimiter="/"`) and remembered;
    /// callers that miss an archive in a remembered listing ask [`Service::list_run`] again.
    pub async fn run_listing(&self, root: &RunOutputRoot) -> Result<RunListing> {
        match self.cached_run_listing(root)? {
            Some(listing) => Ok(listing),
            None => self.list_run(root).await,
        }
    }

    /// The remembered listing of a run, if any.
    pub(crate) fn cached_run_listing(&self, root: &RunOutputRoot) -> Result<Option<RunListing>> {
        let bytes = self
            .store
            .index()
            .meta(&run_listing_key(root))
            .map_err(StoreError::from)?;
        Ok(bytes.and_then(|b| serde_json::from_slice::<RunListing>(&b).ok()))
    }

    /// List the run now (one LIST) and remember the result for [`Service::run_listing`].
    pub async fn list_run(&self, root: &RunOutputRoot) -> Result<RunListing> {
        let prefix = root.prefix();
        let backend = self.backend(root.bucket())?;
        let listing = backend
            .storage
            .list(&format!("{prefix}/"), Some("/"))
            .await?;
        let mut best: BTreeMap<ArtifactName, (Compression, ListedArchive)> = BTreeMap::new();
        for obj in listing.objects {
            let file_name = obj.key.rsplit('/').next().unwrap_or(&obj.key);
            let Ok(archive) = ArchiveName::parse(file_name) else {
                continue;
            };
            let entry = ListedArchive {
                artifact: archive.artifact.clone(),
                key: obj.key.clone(),
                size: obj.size,
            };
            match best.get(&archive.artifact) {
                Some((kept, _)) if kept.preferred_over(archive.compression) => {}
                _ => {
                    best.insert(archive.artifact, (archive.compression, entry));
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
                .put_meta(&run_listing_key(root), &json)
                .map_err(StoreError::from)?;
        }
        Ok(run)
    }

    /// Import a run published without Cairn; with `ingest`, make every archive local now. One
    /// archive that cannot be ingested (a bad sidecar, a corrupt archive) does not stop the others:
    /// it is returned with its error, as (key, message).
    pub async fn import(
        &self,
        request: &ImportRequest,
    ) -> Result<(RunListing, u32, Vec<(String, String)>)> {
        let root = RunOutputRoot::from_run(&request.run).map_err(invalid)?;
        // Asked for explicitly: list now, so importing a run again picks up what it gained since.
        let listing = self.list_run(&root).await?;
        if listing.archives.is_empty() {
            return Err(ServiceError::NotFound(format!(
                "run `{}` has no archives under `{}`",
                request.run.run_id,
                root.s3_uri()
            )));
        }
        let mut ingested = 0;
        let mut failures = Vec::new();
        if request.ingest {
            let candidate = listed_candidate(&request.run, &root, self);
            for a in &listing.archives {
                let offered = OfferedArchive::listed(a);
                match self.make_local(&candidate, &offered).await {
                    Ok(_) => ingested += 1,
                    Err(e) => {
                        tracing::warn!(key = %a.key, error = %e, "import: archive not ingested");
                        failures.push((a.key.clone(), e.to_string()));
                    }
                }
            }
        }
        Ok((listing, ingested, failures))
    }
}

/// Where a run's listing is remembered in the index.
fn run_listing_key(root: &RunOutputRoot) -> String {
    format!("run:{}/{}", root.bucket(), root.prefix())
}

/// The run of `spec` as a candidate known only from its listing: status unknown, no commit, trusted
/// as its layout and backend say.
pub(crate) fn listed_candidate(
    spec: &RunSpec,
    root: &RunOutputRoot,
    service: &Service,
) -> Candidate {
    let trusted = root.trusted()
        && service
            .backends
            .for_bucket(root.bucket())
            .is_some_and(|b| b.trusts(Area::Trusted, root.bucket()));
    Candidate {
        run: RunIdentity {
            repo: spec.repo.to_string(),
            workflow: String::new(),
            run_id: spec.run_id.clone(),
            commit: String::new(),
            platform: spec.platform,
            status: RunStatus::Unknown,
            head_repo: String::new(),
        },
        bucket: root.bucket().to_string(),
        prefix: root.prefix(),
        published_at: String::new(),
        trusted,
        archives: Vec::new(),
    }
}
