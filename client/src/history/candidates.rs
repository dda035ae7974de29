//! Candidate runs of a commit, from both sources merged into one shape: Cairn's commit index first
//! (`FindRuns`), then GitHub's workflow runs for what Cairn does not know. For a run both know,
//! GitHub's status wins (it knows the final one) and Cairn's archives stay; a run only GitHub knows
//! gets its layout from the run (fork, `created_at`) and its archives from the daemon's listing of
//! the prefix. `--run-id` merges a run's [`RunContents`] with GitHub's view the same way.

use std::collections::BTreeMap;

use cairn_fingerprint::layout::{LayoutError, RunOutputRoot, RunSpec};
use cairn_fingerprint::names::{ArchiveName, Compression};

use super::wire::{self, RecordedRun, RunContents};
use super::{Criteria, HistoryError, Rejection, Sources};
use crate::github::WorkflowRun;

/// A run from either source, with what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCandidate {
    /// `cairn` (commit index) or `github` (published without Cairn).
    pub source: &'static str,
    /// Run id.
    pub run_id: String,
    /// Commit the run built (empty when unknown).
    pub commit: String,
    /// `OWNER/REPO`.
    pub repo: String,
    /// Workflow file (may be empty).
    pub workflow: String,
    /// GitHub's status word (`completed`, `in_progress`, ...).
    pub status: String,
    /// GitHub's conclusion (`success`, `failure`, ...), when completed.
    pub conclusion: Option<String>,
    /// The run's web page.
    pub run_url: Option<String>,
    /// Whether the run's outputs are trusted.
    pub trusted: bool,
    /// Bucket.
    pub bucket: String,
    /// Run prefix.
    pub prefix: String,
    /// Archive file names (`.tar.zst` preferred per artifact).
    pub archives: Vec<String>,
    /// Newest first ordering key.
    pub order: (u64, String),
}

impl RunCandidate {
    /// Completed with conclusion `success`.
    pub fn successful(&self) -> bool {
        self.state() == super::RunState::Successful
    }

    /// Successful, incomplete or failed.
    pub fn state(&self) -> super::RunState {
        super::RunState::of(&self.status, self.conclusion.as_deref())
    }

    /// A run from Cairn's commit index.
    pub fn from_record(r: &RecordedRun) -> RunCandidate {
        let (status, conclusion) = github_status(&r.status, true);
        RunCandidate {
            source: "cairn",
            run_id: r.run_id.clone(),
            commit: r.commit.clone(),
            repo: r.repo.clone(),
            workflow: r.workflow.clone(),
            status,
            conclusion,
            run_url: run_url(&r.repo, &r.run_id),
            trusted: r.trusted,
            bucket: r.bucket.clone(),
            prefix: r.prefix.clone(),
            archives: prefer_zst(&r.archives),
            order: (r.run_id.parse().unwrap_or(0), r.published_at.clone()),
        }
    }
}

/// Cairn records a single status word; spell it the way GitHub does (`success` → `completed` +
/// `success`). `every_conclusion`: every GitHub conclusion word counts (commit index records), else
/// only `success`, `failure` and `cancelled` (job manifests of a `--run-id`).
fn github_status(word: &str, every_conclusion: bool) -> (String, Option<String>) {
    match word {
        "success" | "failure" | "cancelled" => ("completed".to_string(), Some(word.to_string())),
        "skipped" | "timed_out" | "neutral" if every_conclusion => {
            ("completed".to_string(), Some(word.to_string()))
        }
        other => (other.to_string(), None),
    }
}

/// The web page of a GitHub run (numeric ids only; developer publishes have none).
pub fn run_url(repo: &str, run_id: &str) -> Option<String> {
    run_id
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| format!("https://github.com/{repo}/actions/runs/{run_id}"))
}

/// Archive file names, one per artifact, in [`Compression`]'s preference order (`.tar.zst` first,
/// as TheRock's artifact_manager).
pub fn prefer_zst(names: &[String]) -> Vec<String> {
    let mut best: BTreeMap<String, (Compression, String)> = BTreeMap::new();
    for n in names {
        let Ok(a) = ArchiveName::parse(n) else {
            continue;
        };
        let key = a.artifact.to_string();
        match best.get(&key) {
            Some((kept, _)) if kept.preferred_over(a.compression) => {}
            _ => {
                best.insert(key, (a.compression, n.clone()));
            }
        }
    }
    let mut out: Vec<String> = best.into_values().map(|(_, n)| n).collect();
    out.sort();
    out
}

/// Every run that holds archives for `commit`: Cairn's records first; GitHub's runs for the rest
/// when `use_github` says Cairn's are not enough. Newest first. Rejections of runs without
/// archives are appended to `rejected`.
pub async fn runs_for_commit(
    sources: &mut Sources,
    criteria: &Criteria,
    commit: &str,
    use_github: impl Fn(&[RunCandidate]) -> bool,
    rejected: &mut Vec<Rejection>,
) -> Result<Vec<RunCandidate>, HistoryError> {
    let recorded = wire::find_runs(
        &mut sources.daemon,
        commit,
        &criteria.repo.to_string(),
        criteria.platform.as_str(),
        criteria.allow_untrusted,
    )
    .await?;
    let mut runs: Vec<RunCandidate> = recorded
        .iter()
        .filter(|r| {
            !criteria.workflow_explicit || r.workflow.is_empty() || r.workflow == criteria.workflow
        })
        .map(RunCandidate::from_record)
        .collect();
    if let Some(gh) = sources.github.clone()
        && use_github(&runs)
    {
        let gh_runs = gh
            .runs_for_commit(&criteria.repo, &criteria.workflow, commit)
            .await?;
        for gh_run in gh_runs {
            let id = gh_run.id.to_string();
            if let Some(known) = runs.iter_mut().find(|r| r.run_id == id) {
                // GitHub knows the final status; Cairn knows the archives.
                known.status = gh_run.status.clone().unwrap_or_default();
                known.conclusion = gh_run.conclusion.clone();
                known.run_url = Some(gh_run.html_url.clone());
                continue;
            }
            match github_candidate(sources, criteria, &gh_run).await? {
                Some(c) => runs.push(c),
                None => rejected.push(Rejection {
                    commit: commit.to_string(),
                    run_id: Some(id),
                    reason: "the run's prefix holds no archives".into(),
                }),
            }
        }
    }
    runs.sort_by(|a, b| b.order.cmp(&a.order));
    Ok(runs)
}

/// A GitHub run published without Cairn: its layout from the run (fork, `updated_at`), its
/// archives from the daemon's listing of the prefix.
async fn github_candidate(
    sources: &mut Sources,
    criteria: &Criteria,
    run: &WorkflowRun,
) -> Result<Option<RunCandidate>, HistoryError> {
    let id = run.id.to_string();
    let mut spec = RunSpec::new(&id, criteria.platform);
    spec.repo = criteria.repo.clone();
    spec.head_repo = run
        .head_repository
        .as_ref()
        .and_then(|r| r.full_name.parse().ok());
    let root = RunOutputRoot::from_run(&spec)?;
    let Some(listed) = wire::list_run(
        &mut sources.daemon,
        &id,
        criteria.platform.as_str(),
        &criteria.repo.to_string(),
    )
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(RunCandidate {
        source: "github",
        run_id: id,
        commit: run.head_sha.clone(),
        repo: criteria.repo.to_string(),
        workflow: run
            .workflow_file()
            .unwrap_or(&criteria.workflow)
            .to_string(),
        status: run.status.clone().unwrap_or_default(),
        conclusion: run.conclusion.clone(),
        run_url: Some(run.html_url.clone()),
        trusted: root.trusted(),
        bucket: root.bucket().to_string(),
        prefix: listed.prefix,
        archives: prefer_zst(&listed.archives),
        order: (run.id, run.created_at.clone()),
    }))
}

/// One run by id (`--run-id`): its archives from `contents` (Cairn's manifests or the listing), its
/// commit, workflow and status from the job manifests, else from `gh_run` (GitHub's view, asked
/// only when the manifests name no commit).
pub fn run_candidate(
    criteria: &Criteria,
    run_id: &str,
    contents: &RunContents,
    gh_run: Option<&WorkflowRun>,
) -> Result<RunCandidate, LayoutError> {
    let (status, conclusion) = match gh_run {
        Some(r) => (r.status.clone().unwrap_or_default(), r.conclusion.clone()),
        None => github_status(contents.status.as_deref().unwrap_or_default(), false),
    };
    let commit = contents
        .commit
        .clone()
        .or_else(|| gh_run.map(|r| r.head_sha.clone()))
        .unwrap_or_default();
    let mut spec = RunSpec::new(run_id, criteria.platform);
    spec.repo = criteria.repo.clone();
    Ok(RunCandidate {
        source: if contents.commit.is_some() {
            "cairn"
        } else {
            "github"
        },
        run_id: run_id.to_string(),
        commit,
        repo: criteria.repo.to_string(),
        workflow: contents
            .workflow
            .clone()
            .or_else(|| gh_run.and_then(|r| r.workflow_file().map(str::to_string)))
            .unwrap_or_default(),
        status,
        conclusion,
        run_url: gh_run
            .map(|r| r.html_url.clone())
            .or_else(|| run_url(&criteria.repo.to_string(), run_id)),
        trusted: RunOutputRoot::from_run(&spec)?.trusted(),
        bucket: contents.bucket.clone(),
        prefix: contents.prefix.clone(),
        archives: prefer_zst(
            &contents
                .archives
                .iter()
                .map(|a| a.key.rsplit('/').next().unwrap_or(&a.key).to_string())
                .collect::<Vec<_>>(),
        ),
        order: (0, String::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::wire::ArchiveSizes;
    use cairn_fingerprint::Platform;
    use cairn_fingerprint::layout::GithubRepo;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn criteria() -> Criteria {
        Criteria {
            repo: GithubRepo::the_rock(),
            workflow: "multi_arch_ci.yml".into(),
            platform: Platform::Linux,
            families: Vec::new(),
            stage: None,
            needed: Vec::new(),
            eligibility: crate::history::Eligibility::ANY,
            require_single: false,
            allow_untrusted: false,
            offline: true,
            workflow_explicit: false,
        }
    }

    fn contents(commit: Option<&str>, status: Option<&str>, keys: &[&str]) -> RunContents {
        RunContents {
            bucket: "therock-ci-artifacts".into(),
            prefix: "42-linux".into(),
            commit: commit.map(str::to_string),
            status: status.map(str::to_string),
            workflow: commit.map(|_| "multi_arch_ci.yml".to_string()),
            archives: keys
                .iter()
                .map(|k| ArchiveSizes {
                    artifact: String::new(),
                    key: k.to_string(),
                    compressed_size: 1,
                    uncompressed_size: 0,
                    files: 0,
                    tree: None,
                    source: "listing".into(),
                })
                .collect(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn zst_is_preferred_per_artifact_and_junk_is_dropped() {
        let names = strings(&[
            "blas_lib_gfx942.tar.xz",
            "blas_lib_gfx942.tar.zst",
            "fft_lib_generic.tar.xz",
            "index.html",
        ]);
        assert_eq!(
            prefer_zst(&names),
            ["blas_lib_gfx942.tar.zst", "fft_lib_generic.tar.xz"]
        );
    }

    #[test]
    fn recorded_status_words_are_spelled_as_github_does() {
        let record = |status: &str| RecordedRun {
            repo: "ROCm/TheRock".into(),
            workflow: String::new(),
            run_id: "17".into(),
            commit: "c".repeat(40),
            platform: "linux".into(),
            status: status.into(),
            bucket: "b".into(),
            prefix: "17-linux".into(),
            archives: Vec::new(),
            published_at: "2026-01-01T00:00:00Z".into(),
            trusted: true,
            jobs: Vec::new(),
        };
        let c = RunCandidate::from_record(&record("success"));
        assert_eq!(
            (c.status.as_str(), c.conclusion.as_deref()),
            ("completed", Some("success"))
        );
        assert!(c.successful());
        assert_eq!(c.order, (17, "2026-01-01T00:00:00Z".to_string()));
        let c = RunCandidate::from_record(&record("timed_out"));
        assert_eq!(
            (c.status.as_str(), c.conclusion.as_deref()),
            ("completed", Some("timed_out"))
        );
        assert!(!c.successful());
        let c = RunCandidate::from_record(&record("in_progress"));
        assert_eq!((c.status.as_str(), c.conclusion), ("in_progress", None));
        let mut dev = record("success");
        dev.run_id = "local-abc".into();
        assert_eq!(RunCandidate::from_record(&dev).run_url, None);
    }

    #[test]
    fn a_run_id_takes_commit_and_status_from_manifests_else_from_github() {
        let keys = [
            "42-linux/blas_lib_gfx942.tar.xz",
            "42-linux/blas_lib_gfx942.tar.zst",
        ];
        let c = contents(Some("abc"), Some("timed_out"), &keys);
        let cand = run_candidate(&criteria(), "42", &c, None).unwrap();
        assert_eq!(cand.source, "cairn");
        assert_eq!(cand.commit, "abc");
        // Job manifests' status words other than success/failure/cancelled stay as they are.
        assert_eq!((cand.status.as_str(), cand.conclusion), ("timed_out", None));
        assert_eq!(cand.archives, ["blas_lib_gfx942.tar.zst"]);
        assert_eq!(
            cand.run_url.as_deref(),
            Some("https://github.com/ROCm/TheRock/actions/runs/42")
        );

        let gh: WorkflowRun = serde_json::from_value(serde_json::json!({
            "id": 42, "head_sha": "def", "status": "completed", "conclusion": "failure",
            "html_url": "https://example.invalid/run/42", "created_at": "2026-01-01T00:00:00Z",
            "path": ".github/workflows/multi_arch_ci.yml"
        }))
        .unwrap();
        let c = contents(None, None, &keys);
        let cand = run_candidate(&criteria(), "42", &c, Some(&gh)).unwrap();
        assert_eq!(cand.source, "github");
        assert_eq!(cand.commit, "def");
        assert_eq!(cand.workflow, "multi_arch_ci.yml");
        assert_eq!(
            (cand.status.as_str(), cand.conclusion.as_deref()),
            ("completed", Some("failure"))
        );
        assert_eq!(
            cand.run_url.as_deref(),
            Some("https://example.invalid/run/42")
        );
    }
}
