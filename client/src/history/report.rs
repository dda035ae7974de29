//! The `cairn find --json` document (schema `cairn-find-v1`) and its parts: what was asked, the run
//! chosen per family, what is missing, what was rejected and why, the `--fallback` baseline, and the
//! exact-fingerprint producers. [`FindReport::new`] decides `found` / `not_found`; printing is the
//! command's.

use serde::{Deserialize, Serialize};

use super::{Criteria, Evaluation};

/// Format tag of [`FindReport`].
pub const FIND_SCHEMA: &str = "cairn-find-v1";

/// The `--json` document of `cairn find` (schema `cairn-find-v1`):
///
/// ```text
/// {
///   "schema": "cairn-find-v1",
///   "status": "found" | "not_found",
///   "query": { "commit": str|null, "run_id": str|null, "repo": str, "workflow": str,
///              "platform": str, "families": [str], "stage": str|null,
///              "require_successful_run": bool, "allow_incomplete": bool, "allow_failed": bool,
///              "require_single_run": bool },
///   "commit": str|null,        // the commit the results are for (the baseline with --fallback)
///   "results": [ArtifactRunInfo],   // per requested family (family "*" without --family) the run
///                                   // holding it; with --stage, every run that supplies part of it
///   "missing": [str],          // families nothing was found for; with --stage and a checkout,
///                              // `artifact: no run produced fingerprint F`
///   "rejected": [{ "commit": str, "run_id": str|null, "reason": str }],
///   "baseline": null | { "requested_commit": str, "commit": str, "distance": int,
///                        "merge_base": str|null, "examined": int },
///   "fingerprints": null | [{ "artifact": str, "fingerprint": str,
///                             "producer_run_id": str|null, "producer_commit": str|null }]
/// }
/// ```
///
/// `ArtifactRunInfo` = `{ "family", "commit", "commit_url", "repo", "external_repo", "platform",
/// "workflow", "run_id", "run_status", "run_conclusion" (str|null), "run_url" (str|null), "source"
/// ("cairn"|"github"), "trusted", "bucket", "s3_path", "s3_uri", "index_url", "artifact_count",
/// "artifacts" ([file name]) }`. Every key is always present.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindReport {
    /// [`FIND_SCHEMA`].
    pub schema: String,
    /// `found` or `not_found`.
    pub status: String,
    /// What was asked.
    pub query: Query,
    /// The commit the results are for.
    pub commit: Option<String>,
    /// One entry per family.
    pub results: Vec<ArtifactRunInfo>,
    /// What was not found.
    pub missing: Vec<String>,
    /// Candidates rejected, and why.
    pub rejected: Vec<Rejection>,
    /// The baseline search, with `--fallback`.
    pub baseline: Option<Baseline>,
    /// Exact-fingerprint producers of the stage's inbound artifacts (`--stage` with a checkout).
    pub fingerprints: Option<Vec<FingerprintStatus>>,
}

/// The query of a [`FindReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// `--commit`, resolved to a full SHA.
    pub commit: Option<String>,
    /// `--run-id`.
    pub run_id: Option<String>,
    /// Repository.
    pub repo: String,
    /// Workflow file.
    pub workflow: String,
    /// Platform.
    pub platform: String,
    /// Families asked for.
    pub families: Vec<String>,
    /// Stage whose inbound artifacts are required.
    pub stage: Option<String>,
    /// Only successful runs counted (the default for a commit, or `--require-successful-run`).
    pub require_successful_run: bool,
    /// `--allow-incomplete`: runs not completed yet counted.
    pub allow_incomplete: bool,
    /// `--allow-failed`: completed runs without success counted.
    pub allow_failed: bool,
    /// `--require-single-run`.
    pub require_single_run: bool,
}

/// One family found in one run (TheRock's `ArtifactRunInfo`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactRunInfo {
    /// The family (`*` when none was asked for).
    pub family: String,
    /// Commit the run built.
    pub commit: String,
    /// Its web page.
    pub commit_url: String,
    /// `OWNER/REPO`.
    pub repo: String,
    /// `""` or `{owner}-{repo}/`.
    pub external_repo: String,
    /// Platform.
    pub platform: String,
    /// Workflow file.
    pub workflow: String,
    /// Run id.
    pub run_id: String,
    /// `completed`, `in_progress`, ...
    pub run_status: String,
    /// `success`, `failure`, ... (null while running or unknown).
    pub run_conclusion: Option<String>,
    /// The run's web page (null for developer publishes).
    pub run_url: Option<String>,
    /// `cairn` (commit index) or `github` (runs published without Cairn).
    pub source: String,
    /// Whether the run's outputs are trusted.
    pub trusted: bool,
    /// Bucket.
    pub bucket: String,
    /// Run prefix.
    pub s3_path: String,
    /// `s3://{bucket}/{prefix}`.
    pub s3_uri: String,
    /// `https://{bucket}.s3.amazonaws.com/{prefix}/index.html`.
    pub index_url: String,
    /// Number of matching archives.
    pub artifact_count: usize,
    /// Matching archive file names, sorted.
    pub artifacts: Vec<String>,
}

/// Why a candidate was not used.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    /// The commit examined.
    pub commit: String,
    /// The run, when the rejection is about one run.
    pub run_id: Option<String>,
    /// Why.
    pub reason: String,
}

/// The baseline search.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// The commit asked for.
    pub requested_commit: String,
    /// The commit chosen (null when none was complete).
    pub commit: Option<String>,
    /// Candidates between the requested commit and the chosen one.
    pub distance: Option<usize>,
    /// Merge-base with the main branch, when the requested commit is not on it.
    pub merge_base: Option<String>,
    /// Commits examined.
    pub examined: usize,
}

/// Whether an exact-fingerprint producer exists for one inbound artifact.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FingerprintStatus {
    /// Artifact name.
    pub artifact: String,
    /// Its fingerprint at the checkout.
    pub fingerprint: String,
    /// A run that produced exactly this fingerprint.
    pub producer_run_id: Option<String>,
    /// That run's commit.
    pub producer_commit: Option<String>,
}

impl Query {
    /// The query of `criteria`, for `commit` (resolved) or `run_id`.
    pub fn new(criteria: &Criteria, commit: Option<String>, run_id: Option<String>) -> Query {
        Query {
            commit,
            run_id,
            repo: criteria.repo.to_string(),
            workflow: criteria.workflow.clone(),
            platform: criteria.platform.to_string(),
            families: criteria.families.clone(),
            stage: criteria.stage.clone(),
            require_successful_run: criteria.eligibility.successful_only(),
            allow_incomplete: criteria.eligibility.allow_incomplete,
            allow_failed: criteria.eligibility.allow_failed,
            require_single_run: criteria.require_single,
        }
    }
}

impl FindReport {
    /// The report of one search: found when nothing is missing and something was found — or, when
    /// exact-fingerprint producers were looked up (`--stage` with a checkout), when every inbound
    /// artifact has one; a report that is not found carries neither a commit nor results (only
    /// what is missing and why).
    pub fn new(
        query: Query,
        commit: Option<String>,
        eval: Evaluation,
        rejected: Vec<Rejection>,
        baseline: Option<Baseline>,
        fingerprints: Option<Vec<FingerprintStatus>>,
    ) -> FindReport {
        let mut missing = eval.missing;
        let mut found = missing.is_empty() && !eval.results.is_empty();
        // With a stage and a checkout, the exact-fingerprint producers are the answer (any run of
        // any commit, the multi-base policy `bootstrap` uses): the verdict and the table printed
        // from them can never disagree.
        // With `--fallback` the fingerprints describe the requested commit, not the baseline the
        // walk settled on: there they are information, and the walk's own verdict stands.
        if let Some(fps) = fingerprints
            .as_ref()
            .filter(|f| !f.is_empty() && baseline.is_none())
        {
            let lacking: Vec<String> = fps
                .iter()
                .filter(|f| f.producer_run_id.is_none())
                .map(|f| {
                    format!(
                        "{}: no run produced fingerprint {}",
                        f.artifact, f.fingerprint
                    )
                })
                .collect();
            found = lacking.is_empty();
            missing = lacking;
            // `--require-single-run`: the exact producers must be one run, or the answer is no.
            let producers: std::collections::BTreeSet<&str> = fps
                .iter()
                .filter_map(|f| f.producer_run_id.as_deref())
                .collect();
            if found && query.require_single_run && producers.len() > 1 {
                found = false;
                missing = vec![format!(
                    "--require-single-run: the exact producers are {} runs ({}); no single run \
                     holds every inbound artifact",
                    producers.len(),
                    producers.into_iter().collect::<Vec<_>>().join(", ")
                )];
            }
        }
        FindReport {
            schema: FIND_SCHEMA.into(),
            status: if found { "found" } else { "not_found" }.into(),
            query,
            commit: if found { commit } else { None },
            results: if found { eval.results } else { Vec::new() },
            missing,
            rejected,
            baseline,
            fingerprints,
        }
    }

    /// Whether the search found everything it asked for.
    pub fn found(&self) -> bool {
        self.status == "found"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_fingerprint::Platform;
    use cairn_fingerprint::layout::GithubRepo;

    fn result(family: &str) -> ArtifactRunInfo {
        ArtifactRunInfo {
            family: family.into(),
            commit: "c".into(),
            commit_url: String::new(),
            repo: "ROCm/TheRock".into(),
            external_repo: String::new(),
            platform: "linux".into(),
            workflow: "multi_arch_ci.yml".into(),
            run_id: "1".into(),
            run_status: "completed".into(),
            run_conclusion: Some("success".into()),
            run_url: None,
            source: "cairn".into(),
            trusted: true,
            bucket: "b".into(),
            s3_path: "1-linux".into(),
            s3_uri: "s3://b/1-linux".into(),
            index_url: String::new(),
            artifact_count: 0,
            artifacts: Vec::new(),
        }
    }

    fn report(results: &[&str], missing: &[&str]) -> FindReport {
        let criteria = Criteria {
            repo: GithubRepo::the_rock(),
            workflow: "multi_arch_ci.yml".into(),
            platform: Platform::Linux,
            families: vec!["gfx94X-dcgpu".into(), "gfx110X-all".into()],
            stage: None,
            needed: Vec::new(),
            eligibility: crate::history::Eligibility::default(),
            require_single: false,
            allow_untrusted: false,
            offline: true,
            workflow_explicit: false,
        };
        let eval = Evaluation {
            results: results.iter().map(|f| result(f)).collect(),
            missing: missing.iter().map(|s| s.to_string()).collect(),
        };
        FindReport::new(
            Query::new(&criteria, Some("c".into()), None),
            Some("c".into()),
            eval,
            Vec::new(),
            None,
            None,
        )
    }

    #[test]
    fn found_only_when_nothing_is_missing_and_something_was_found() {
        let r = report(&["gfx94X-dcgpu", "gfx110X-all"], &[]);
        assert!(r.found());
        assert_eq!(
            (r.status.as_str(), r.commit.as_deref()),
            ("found", Some("c"))
        );
        assert_eq!(r.results.len(), 2);
        assert_eq!(r.query.platform, "linux");
        assert!(r.query.require_successful_run);

        // A partial answer is not an answer: no results and no commit, only what is missing.
        let r = report(&["gfx94X-dcgpu"], &["gfx110X-all"]);
        assert!(!r.found());
        assert_eq!((r.status.as_str(), r.commit), ("not_found", None));
        assert!(r.results.is_empty());
        assert_eq!(r.missing, ["gfx110X-all"]);

        assert!(!report(&[], &[]).found());
    }

    /// With exact-fingerprint producers looked up, they decide: every inbound artifact produced by
    /// some run is found even when no single run of the commit holds them all, and one without a
    /// producer is missing by name — the verdict agrees with the table printed from them.
    #[test]
    fn exact_producers_decide_a_stage_verdict() {
        let status = |artifact: &str, run: Option<&str>| FingerprintStatus {
            artifact: artifact.into(),
            fingerprint: "f".repeat(64),
            producer_run_id: run.map(str::to_string),
            producer_commit: run.map(|_| "c".repeat(40)),
        };
        let with = |fps: Vec<FingerprintStatus>| {
            let r = report(&["gfx94X-dcgpu"], &["gfx110X-all"]);
            FindReport::new(
                r.query,
                Some("c".into()),
                Evaluation {
                    results: vec![result("gfx94X-dcgpu")],
                    missing: vec!["gfx94X-dcgpu".into()],
                },
                Vec::new(),
                None,
                Some(fps),
            )
        };
        let r = with(vec![
            status("blas", Some("1002")),
            status("fft", Some("1001")),
        ]);
        assert!(r.found(), "{:?}", r.missing);
        assert!(r.missing.is_empty());
        let r = with(vec![status("blas", Some("1002")), status("fft", None)]);
        assert!(!r.found());
        assert_eq!(r.missing.len(), 1);
        assert!(
            r.missing[0].starts_with("fft: no run produced"),
            "{:?}",
            r.missing
        );
    }
}
