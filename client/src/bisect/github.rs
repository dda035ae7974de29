//! `--github`: CI runs published without Cairn. A probe whose artifacts have no Cairn producer
//! record asks `cairn find`'s commit → run lookup ([`search::find_commit`]: Cairn's commit index
//! first, then GitHub's workflow runs by `head_sha`, the run's prefix listed by the daemon) for a
//! run of the candidate commit that holds every missing artifact for the family; the probe then
//! takes that run's artifact set by name through the daemon's explicit-run rule
//! ([`Policy::run_id`]). What comes from the run's listing is **unverified** (no fingerprint
//! vouches for it) and the report says so per artifact; what the run did not build is still
//! resolved by exact fingerprint.
//!
//! Only runs GitHub alone knows are taken: a run Cairn recorded was already consulted by
//! fingerprint, so its lacking an artifact means the artifact differs, and nothing is substituted.

use cairn_fingerprint::Platform;
use cairn_fingerprint::layout::GithubRepo;
use cairn_proto::v1::cairn_client::CairnClient;

use crate::api::{self, Policy, Request, Resolved};
use crate::connect::DaemonChannel;
use crate::github::GithubClient;
use crate::history::{Criteria, Eligibility, HistoryError, Sources, search};

use super::BisectError;
use super::probe;
use super::report::MissingArtifact;

/// Where and how to look a commit's runs up on GitHub.
#[derive(Debug, Clone)]
pub struct GithubLookup {
    /// The REST client (`CAIRN_GITHUB_API`, `GITHUB_TOKEN`).
    pub client: GithubClient,
    /// The repository whose workflow runs built the bisected history's commits.
    pub repo: GithubRepo,
    /// The workflow file whose runs count.
    pub workflow: String,
    /// Accept runs from untrusted places (forks).
    pub allow_untrusted: bool,
}

/// The run a commit without Cairn records takes its artifacts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubRun {
    /// Run id.
    pub run_id: String,
    /// `OWNER/REPO`.
    pub repo: String,
}

impl GithubRun {
    /// The probe's request with this run as the explicit run: its listing by name for what has no
    /// record, exact fingerprints for what it did not build.
    pub fn request(&self, base: &Request) -> Request {
        Request {
            policy: Policy {
                run_id: Some(self.run_id.clone()),
                run_repo: Some(self.repo.clone()),
                ..base.policy.clone()
            },
            ..base.clone()
        }
    }

    /// The artifacts (topology names, once each) this run supplied by name: their fingerprints are
    /// not verified. The run has no Cairn records (only such runs are taken), so whatever the
    /// resolve took from it came from its listing.
    pub fn unverified(&self, resolved: &[Resolved]) -> Vec<String> {
        let mut out: Vec<String> = resolved
            .iter()
            .filter(|r| r.producer.as_ref().is_some_and(|p| p.run_id == self.run_id))
            .map(|r| r.name.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// What a commit's artifacts resolve to: by exact fingerprint, and — with `--github`, when some
/// have no producer — from the commit's CI run GitHub alone knows, by name.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// The resolve's answer per artifact (of the run's request when a run was taken).
    pub resolved: Vec<Resolved>,
    /// What is still missing.
    pub missing: Vec<MissingArtifact>,
    /// The GitHub run taken, if any.
    pub run: Option<GithubRun>,
}

impl Resolution {
    /// The request that fetches what was resolved: `base`, or `base` with the run taken.
    pub fn request(&self, base: &Request) -> Request {
        match &self.run {
            Some(run) => run.request(base),
            None => base.clone(),
        }
    }
}

/// Resolve `request` (the artifacts of `commit`), then, with a `lookup` and something missing, look
/// the commit's run up on GitHub and take it when it supplies anything that was missing. The one
/// rule a bisect probe and a prefetch both follow, so a prefetch warms what the probe will take.
pub async fn resolve(
    client: &mut CairnClient<DaemonChannel>,
    lookup: Option<&GithubLookup>,
    commit: &str,
    family: &str,
    platform: Platform,
    request: &Request,
) -> Result<Resolution, BisectError> {
    let (resolved, _) = api::resolve(client, request).await?;
    let missing = probe::missing(&resolved);
    let mut out = Resolution {
        resolved,
        missing,
        run: None,
    };
    let Some(lookup) = lookup.filter(|_| !out.missing.is_empty()) else {
        return Ok(out);
    };
    let run = run_for_commit(lookup, client, commit, family, platform, &out.missing)
        .await
        .map_err(|source| BisectError::Github {
            commit: commit.to_string(),
            source,
        })?;
    if let Some(run) = run {
        let (again, _) = api::resolve(client, &run.request(request)).await?;
        let still = probe::missing(&again);
        if still.len() < out.missing.len() {
            out = Resolution {
                resolved: again,
                missing: still,
                run: Some(run),
            };
        }
    }
    Ok(out)
}

/// A successful run of `commit` GitHub knows and Cairn does not, holding every `missing` artifact
/// of `family`; `None` when there is none.
pub async fn run_for_commit(
    lookup: &GithubLookup,
    daemon: &CairnClient<DaemonChannel>,
    commit: &str,
    family: &str,
    platform: Platform,
    missing: &[MissingArtifact],
) -> Result<Option<GithubRun>, HistoryError> {
    let criteria = Criteria {
        repo: lookup.repo.clone(),
        workflow: lookup.workflow.clone(),
        platform,
        families: vec![family.to_string()],
        stage: None,
        needed: missing.iter().map(|m| m.artifact.clone()).collect(),
        eligibility: Eligibility::default(),
        require_single: true,
        allow_untrusted: lookup.allow_untrusted,
        offline: false,
        workflow_explicit: true,
    };
    let mut sources = Sources {
        daemon: daemon.clone(),
        github: Some(lookup.client.clone()),
    };
    let eval = search::find_commit(&mut sources, &criteria, commit, &mut Vec::new()).await?;
    Ok(eval
        .results
        .into_iter()
        .find(|r| r.source == "github")
        .map(|r| GithubRun {
            run_id: r.run_id,
            repo: r.repo,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Producer, Status};

    fn resolved(name: &str, run: Option<&str>) -> Resolved {
        Resolved {
            artifact: format!("{name}_lib_generic"),
            name: name.into(),
            component: "lib".into(),
            family: "generic".into(),
            fingerprint: String::new(),
            status: if run.is_some() {
                Status::Found
            } else {
                Status::Missing
            },
            producer: run.map(|r| Producer {
                repo: "ROCm/TheRock".into(),
                workflow: String::new(),
                run_id: r.into(),
                ..Producer::default()
            }),
            tree_digest: String::new(),
            explanation: Vec::new(),
        }
    }

    #[test]
    fn only_what_the_github_run_supplied_is_unverified() {
        let run = GithubRun {
            run_id: "77".into(),
            repo: "ROCm/TheRock".into(),
        };
        let got = run.unverified(&[
            resolved("blas", Some("77")),
            resolved("blas", Some("77")),
            resolved("llvm", Some("3000")),
            resolved("rand", Some("77")),
            resolved("fft", None),
        ]);
        assert_eq!(got, ["blas", "rand"]);
        let base = Request {
            stage: "s".into(),
            family: "f".into(),
            platform: "linux".into(),
            artifacts: Vec::new(),
            exclude_components: Vec::new(),
            policy: Policy::default(),
        };
        let req = run.request(&base);
        assert_eq!(req.policy.run_id.as_deref(), Some("77"));
        assert_eq!(req.policy.run_repo.as_deref(), Some("ROCm/TheRock"));
        assert!(!req.policy.allow_failed);
    }
}
