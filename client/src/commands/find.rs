//! `cairn find`: which CI run holds artifacts for a commit (or one run by id), and with `--fallback`
//! the newest baseline commit whose runs hold everything a family/stage needs.
//!
//! Sources, in order: Cairn's commit index (`FindRuns`), then GitHub's workflow runs of the commit for
//! runs published without Cairn, whose prefixes the daemon lists once (`Import` without ingest).
//! Matching follows TheRock's `find_artifacts_for_commit.py`: an archive belongs to a family when its
//! family is `generic` or shares the base architecture of the family or one of its targets; a family
//! counts as present only with at least one non-generic archive (unless it is `generic`); by default
//! each family takes the newest run that has it, `--require-single-run` wants one run for all.
//!
//! Exit status: 0 found, 1 not found, 2 error. `--json` prints one [`FindReport`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cairn_client::checkout;
use cairn_client::github::{self, GithubClient, WorkflowRun};
use cairn_client::history::{self, RecordedRun};
use cairn_fingerprint::layout::{GithubRepo, RunOutputRoot, RunSpec};
use cairn_fingerprint::names::{ArchiveName, Compression, GENERIC, family_matches};
use cairn_fingerprint::{FingerprintConfig, Fingerprinter, Platform, Topology, git};
use cairn_proto::v1::cairn_client::CairnClient;
use serde::{Deserialize, Serialize};

use crate::cli::{Cli, FindArgs};
use crate::output::{ExitStatus, Printer};

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
///              "require_successful_run": bool, "require_single_run": bool },
///   "commit": str|null,        // the commit the results are for (the baseline with --fallback)
///   "results": [ArtifactRunInfo],   // one per requested family (one with family "*" without --family)
///   "missing": [str],          // families (or `family: artifact`) nothing was found for
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
    /// `--require-successful-run`.
    pub require_successful_run: bool,
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

/// A run from either source, with what it holds.
#[derive(Debug, Clone)]
pub(super) struct RunCandidate {
    pub source: &'static str,
    pub run_id: String,
    pub commit: String,
    pub repo: String,
    pub workflow: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub run_url: Option<String>,
    pub trusted: bool,
    pub bucket: String,
    pub prefix: String,
    /// Archive file names (`.tar.zst` preferred per artifact).
    pub archives: Vec<String>,
    /// Newest first ordering key.
    pub order: (u64, String),
}

impl RunCandidate {
    fn successful(&self) -> bool {
        self.status == "completed" && self.conclusion.as_deref() == Some("success")
    }

    fn from_record(r: &RecordedRun) -> RunCandidate {
        // Cairn records a single status word; spell it the way GitHub does.
        let (status, conclusion) = match r.status.as_str() {
            "success" | "failure" | "cancelled" | "skipped" | "timed_out" | "neutral" => {
                ("completed".to_string(), Some(r.status.clone()))
            }
            other => (other.to_string(), None),
        };
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

fn run_url(repo: &str, run_id: &str) -> Option<String> {
    run_id
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| format!("https://github.com/{repo}/actions/runs/{run_id}"))
}

/// Archive file names, one per artifact, `.tar.zst` preferred (as TheRock's artifact_manager).
fn prefer_zst(names: &[String]) -> Vec<String> {
    let mut best: BTreeMap<String, (Compression, String)> = BTreeMap::new();
    for n in names {
        let Ok(a) = ArchiveName::parse(n) else {
            continue;
        };
        let key = a.artifact.to_string();
        match best.get(&key) {
            Some((Compression::Zstd, _)) => {}
            _ => {
                best.insert(key, (a.compression, n.clone()));
            }
        }
    }
    let mut out: Vec<String> = best.into_values().map(|(_, n)| n).collect();
    out.sort();
    out
}

/// Everything a find needs, resolved from the arguments before any work starts.
pub(super) struct Plan {
    pub repo: GithubRepo,
    pub workflow: String,
    pub platform: Platform,
    pub families: Vec<String>,
    pub stage: Option<String>,
    /// Artifact names the stage needs on this platform.
    pub needed: Vec<String>,
    pub require_successful: bool,
    pub require_single: bool,
    pub allow_untrusted: bool,
    pub offline: bool,
    pub workflow_explicit: bool,
}

/// Online context: the daemon, and GitHub when allowed.
pub(super) struct Online {
    pub daemon: CairnClient<cairn_client::connect::DaemonChannel>,
    pub github: Option<GithubClient>,
}

/// The checkout directory: [`checkout::checkout_dir`], else the current directory (a full SHA or a
/// run id needs no checkout; see that function's doc).
pub(super) fn checkout_dir(explicit: Option<&Path>) -> PathBuf {
    checkout::checkout_dir(explicit).unwrap_or_else(|_| PathBuf::from("."))
}

/// `--repo`, else the checkout's `origin`, else `ROCm/TheRock`.
pub(super) fn resolve_repo(explicit: Option<&str>, dir: &Path) -> Result<GithubRepo> {
    match explicit {
        Some(r) => r
            .parse()
            .with_context(|| format!("invalid --repo `{r}` (expected OWNER/REPO)")),
        None => Ok(github::detect_repo(dir).unwrap_or_else(GithubRepo::the_rock)),
    }
}

/// Connect to the daemon (`--daemon`, `$CAIRN_SOCKET`, else the default socket) and set up GitHub
/// (unless offline).
pub(super) async fn online(cli: &Cli, offline: bool) -> Result<Online> {
    let daemon = super::connect_daemon(&super::daemon_addr(cli)).await?;
    let github = if offline {
        None
    } else {
        Some(GithubClient::from_env()?)
    };
    Ok(Online { daemon, github })
}

/// A full commit SHA: 40 hex as given, else `git rev-parse` in `dir`.
pub(super) fn resolve_commit(rev: &str, dir: &Path) -> Result<String> {
    let hex = |s: &str| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if hex(rev) {
        return Ok(rev.to_ascii_lowercase());
    }
    match git::rev_parse_commit(dir, rev) {
        Ok(Some(sha)) if hex(&sha) => Ok(sha),
        _ => bail!(
            "`{rev}` is neither a full commit SHA nor a revision of the checkout at `{}`",
            dir.display()
        ),
    }
}

/// Every run that holds archives for `commit`: Cairn's records first; GitHub's runs for the rest
/// when `want_github` says Cairn's are not enough. Newest first. Rejections of runs without
/// archives are appended to `rejected`.
pub(super) async fn runs_for_commit(
    online: &mut Online,
    plan: &Plan,
    commit: &str,
    use_github: impl Fn(&[RunCandidate]) -> bool,
    rejected: &mut Vec<Rejection>,
) -> Result<Vec<RunCandidate>> {
    let recorded = history::find_runs(
        &mut online.daemon,
        commit,
        &plan.repo.to_string(),
        plan.platform.as_str(),
        plan.allow_untrusted,
    )
    .await?;
    let mut runs: Vec<RunCandidate> = recorded
        .iter()
        .filter(|r| !plan.workflow_explicit || r.workflow.is_empty() || r.workflow == plan.workflow)
        .map(RunCandidate::from_record)
        .collect();
    if let Some(gh) = online.github.clone()
        && use_github(&runs)
    {
        let gh_runs = gh
            .runs_for_commit(&plan.repo, &plan.workflow, commit)
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
            match github_candidate(online, plan, &gh_run).await? {
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
    online: &mut Online,
    plan: &Plan,
    run: &WorkflowRun,
) -> Result<Option<RunCandidate>> {
    let id = run.id.to_string();
    let mut spec = RunSpec::new(&id, plan.platform);
    spec.repo = plan.repo.clone();
    spec.head_repo = run
        .head_repository
        .as_ref()
        .and_then(|r| r.full_name.parse().ok());
    let root = RunOutputRoot::from_run(&spec)?;
    let Some(listed) = history::list_run(
        &mut online.daemon,
        &id,
        plan.platform.as_str(),
        &plan.repo.to_string(),
    )
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(RunCandidate {
        source: "github",
        run_id: id,
        commit: run.head_sha.clone(),
        repo: plan.repo.to_string(),
        workflow: run.workflow_file().unwrap_or(&plan.workflow).to_string(),
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

/// What one run holds for one family.
struct FamilyMatch {
    archives: Vec<String>,
    missing: Vec<String>,
}

/// Match a run's archives against a family (`*` = any) and the needed artifact names.
fn match_family(run: &RunCandidate, family: &str, needed: &[String]) -> FamilyMatch {
    let mut archives = Vec::new();
    let mut non_generic = false;
    let mut names = BTreeSet::new();
    for file in &run.archives {
        let Ok(a) = ArchiveName::parse(file) else {
            continue;
        };
        let fam = &a.artifact.family;
        let keep = match family {
            "*" => true,
            GENERIC => fam == GENERIC,
            f => family_matches(fam, f),
        };
        if keep {
            non_generic |= fam != GENERIC;
            names.insert(a.artifact.name.clone());
            archives.push(file.clone());
        }
    }
    let mut missing: Vec<String> = needed
        .iter()
        .filter(|n| !names.contains(n.as_str()))
        .cloned()
        .collect();
    if archives.is_empty() {
        missing.insert(0, "no archives".into());
    } else if needed.is_empty() && family != "*" && family != GENERIC && !non_generic {
        // TheRock's rule for a family's presence. With a stage, the stage's inbound artifacts are
        // the requirement instead: they are often all generic (a compiler-only run is a fine
        // baseline for math-libs).
        missing.insert(0, format!("no `{family}` archives (only generic ones)"));
    }
    FamilyMatch { archives, missing }
}

/// The result of evaluating one commit's runs.
pub(super) struct Evaluation {
    pub results: Vec<ArtifactRunInfo>,
    pub missing: Vec<String>,
}

fn families_or_any(plan: &Plan) -> Vec<String> {
    if plan.families.is_empty() {
        vec!["*".to_string()]
    } else {
        plan.families.clone()
    }
}

/// Pick runs for each family (newest run per family, or one run for all with
/// `--require-single-run`); rejections are appended to `rejected`.
fn evaluate(
    plan: &Plan,
    commit: &str,
    runs: &[RunCandidate],
    rejected: &mut Vec<Rejection>,
) -> Evaluation {
    let families = families_or_any(plan);
    let mut chosen: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
    for (i, run) in runs.iter().enumerate() {
        if plan.require_successful && !run.successful() {
            rejected.push(Rejection {
                commit: commit.to_string(),
                run_id: Some(run.run_id.clone()),
                reason: format!(
                    "run is {}{}, not a successful run",
                    run.status,
                    run.conclusion
                        .as_deref()
                        .map(|c| format!("/{c}"))
                        .unwrap_or_default()
                ),
            });
            continue;
        }
        let matches: Vec<(String, FamilyMatch)> = families
            .iter()
            .map(|f| (f.clone(), match_family(run, f, &plan.needed)))
            .collect();
        let problems: Vec<String> = matches
            .iter()
            .filter(|(_, m)| !m.missing.is_empty())
            .map(|(f, m)| {
                format!(
                    "{}: missing {}",
                    if f == "*" { "any family" } else { f },
                    m.missing.join(", ")
                )
            })
            .collect();
        if plan.require_single {
            if problems.is_empty() {
                for (f, m) in matches {
                    chosen.insert(f, (i, m.archives));
                }
                break;
            }
            rejected.push(Rejection {
                commit: commit.to_string(),
                run_id: Some(run.run_id.clone()),
                reason: problems.join("; "),
            });
            continue;
        }
        let mut used = false;
        for (f, m) in matches {
            if m.missing.is_empty() && !chosen.contains_key(&f) {
                chosen.insert(f, (i, m.archives));
                used = true;
            }
        }
        if !used && !problems.is_empty() {
            rejected.push(Rejection {
                commit: commit.to_string(),
                run_id: Some(run.run_id.clone()),
                reason: problems.join("; "),
            });
        }
        if chosen.len() == families.len() {
            break;
        }
    }
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for f in &families {
        match chosen.get(f) {
            Some((i, archives)) => results.push(run_info(plan, &runs[*i], f, archives)),
            None => missing.push(f.clone()),
        }
    }
    if runs.is_empty() {
        rejected.push(Rejection {
            commit: commit.to_string(),
            run_id: None,
            reason: "no run with archives for this commit".into(),
        });
    }
    Evaluation { results, missing }
}

fn run_info(plan: &Plan, run: &RunCandidate, family: &str, archives: &[String]) -> ArtifactRunInfo {
    let external_repo = run
        .prefix
        .rsplit_once('/')
        .map(|(e, _)| format!("{e}/"))
        .unwrap_or_default();
    ArtifactRunInfo {
        family: family.to_string(),
        commit: run.commit.clone(),
        commit_url: format!("https://github.com/{}/commit/{}", run.repo, run.commit),
        repo: run.repo.clone(),
        external_repo,
        platform: plan.platform.to_string(),
        workflow: if run.workflow.is_empty() {
            plan.workflow.clone()
        } else {
            run.workflow.clone()
        },
        run_id: run.run_id.clone(),
        run_status: run.status.clone(),
        run_conclusion: run.conclusion.clone(),
        run_url: run.run_url.clone(),
        source: run.source.to_string(),
        trusted: run.trusted,
        bucket: run.bucket.clone(),
        s3_path: run.prefix.clone(),
        s3_uri: format!("s3://{}/{}", run.bucket, run.prefix),
        index_url: format!(
            "https://{}.s3.amazonaws.com/{}/index.html",
            run.bucket, run.prefix
        ),
        artifact_count: archives.len(),
        artifacts: archives.to_vec(),
    }
}

/// Find runs for one commit: Cairn first, GitHub only when Cairn's runs leave something missing.
async fn find_commit(
    online: &mut Online,
    plan: &Plan,
    commit: &str,
    rejected: &mut Vec<Rejection>,
) -> Result<Evaluation> {
    let mut probe = Vec::new();
    let runs = runs_for_commit(
        online,
        plan,
        commit,
        |cairn_runs| {
            !evaluate(plan, commit, cairn_runs, &mut Vec::new())
                .missing
                .is_empty()
        },
        &mut probe,
    )
    .await?;
    rejected.extend(probe);
    Ok(evaluate(plan, commit, &runs, rejected))
}

/// Run `cairn find`.
pub fn run(cli: &Cli, args: &FindArgs, printer: &mut Printer) -> Result<ExitStatus> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(cli, args, printer))
}

async fn run_async(cli: &Cli, args: &FindArgs, printer: &mut Printer) -> Result<ExitStatus> {
    let dir = checkout_dir(args.checkout.as_deref());
    let repo = resolve_repo(args.repo.as_deref(), &dir)?;
    let platform = args.platform.unwrap_or_else(Platform::host);
    let workflow = args
        .workflow
        .clone()
        .unwrap_or_else(|| github::default_workflow(&repo).to_string());
    for f in &args.families {
        if f != GENERIC {
            cairn_fingerprint::names::family_targets(f)
                .with_context(|| format!("invalid --family `{f}`"))?;
        }
    }
    let topology = match &args.stage {
        Some(_) => Some(load_topology(cli, &dir, printer)?),
        None => None,
    };
    let needed: Vec<String> = match (&args.stage, &topology) {
        (Some(stage), Some(t)) => t
            .inbound(stage)?
            .into_iter()
            .filter(|name| {
                t.artifact(name).is_ok_and(|a| {
                    a.platform.as_deref().is_none_or(|p| p == platform.as_str())
                        && !a.disable_platforms.iter().any(|p| p == platform.as_str())
                })
            })
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let plan = Plan {
        repo,
        workflow,
        platform,
        families: args.families.clone(),
        stage: args.stage.clone(),
        needed,
        require_successful: args.require_successful_run,
        require_single: args.require_single_run,
        allow_untrusted: args.allow_untrusted,
        offline: args.offline,
        workflow_explicit: args.workflow.is_some(),
    };
    let commit = match &args.commit {
        Some(c) => Some(resolve_commit(c, &dir)?),
        None => None,
    };
    let mut online = online(cli, plan.offline).await?;
    printer.detail(&format!(
        "repo {}, workflow {}, platform {}, github {}",
        plan.repo,
        plan.workflow,
        plan.platform,
        online
            .github
            .as_ref()
            .map(|g| format!("{} ({})", g.base(), g.auth()))
            .unwrap_or_else(|| "off".into())
    ));

    let mut rejected = Vec::new();
    let mut baseline = None;
    let (found_commit, eval) = if let Some(run_id) = &args.run_id {
        let (commit, eval) = find_run(&mut online, &plan, run_id, &mut rejected).await?;
        (commit, eval)
    } else {
        let commit = commit.clone().context("--commit or --run-id is required")?;
        if args.fallback {
            let (b, found, eval) = fallback(
                &mut online,
                &plan,
                args,
                &commit,
                &dir,
                printer,
                &mut rejected,
            )
            .await?;
            baseline = Some(b);
            (found, eval)
        } else {
            let eval = find_commit(&mut online, &plan, &commit, &mut rejected).await?;
            (Some(commit), eval)
        }
    };

    let fingerprints = match (&args.stage, &topology, args.checkout.is_some()) {
        (Some(stage), Some(t), true) => {
            Some(fingerprint_status(&mut online, &plan, t, stage, &dir, &args.variant).await?)
        }
        _ => None,
    };

    let found = eval.missing.is_empty() && !eval.results.is_empty();
    let report = FindReport {
        schema: FIND_SCHEMA.into(),
        status: if found { "found" } else { "not_found" }.into(),
        query: Query {
            commit: commit.clone(),
            run_id: args.run_id.clone(),
            repo: plan.repo.to_string(),
            workflow: plan.workflow.clone(),
            platform: plan.platform.to_string(),
            families: plan.families.clone(),
            stage: plan.stage.clone(),
            require_successful_run: plan.require_successful,
            require_single_run: plan.require_single,
        },
        commit: if found { found_commit } else { None },
        results: if found { eval.results } else { Vec::new() },
        missing: eval.missing,
        rejected,
        baseline,
        fingerprints,
    };
    render(&report, printer)?;
    if !found {
        printer.problem(&format!(
            "no matching artifacts found for {} (platform={}, families=[{}]{})",
            match (&report.query.commit, &report.query.run_id) {
                (_, Some(id)) => format!("run {id}"),
                (Some(c), None) => format!("commit {c}"),
                _ => "the query".into(),
            },
            plan.platform,
            plan.families.join(", "),
            plan.stage
                .as_deref()
                .map(|s| format!(", stage={s}"))
                .unwrap_or_default()
        ));
        return Ok(ExitStatus::Failure);
    }
    let runs: BTreeSet<&str> = report.results.iter().map(|r| r.run_id.as_str()).collect();
    printer.note(&format!(
        "found {} famil{} in {} run(s) for commit {}",
        report.results.len(),
        if report.results.len() == 1 {
            "y"
        } else {
            "ies"
        },
        runs.len(),
        report.commit.as_deref().unwrap_or("unknown")
    ));
    Ok(ExitStatus::Success)
}

/// `--run-id`: one run, its archives from Cairn's manifests or the listing, its commit and status
/// from the job manifests, else from GitHub.
async fn find_run(
    online: &mut Online,
    plan: &Plan,
    run_id: &str,
    rejected: &mut Vec<Rejection>,
) -> Result<(Option<String>, Evaluation)> {
    let contents = history::run_trees(
        &mut online.daemon,
        run_id,
        plan.platform.as_str(),
        &plan.repo.to_string(),
    )
    .await?;
    let Some(contents) = contents else {
        rejected.push(Rejection {
            commit: String::new(),
            run_id: Some(run_id.to_string()),
            reason: "the run's prefix holds no archives".into(),
        });
        return Ok((
            None,
            Evaluation {
                results: Vec::new(),
                missing: families_or_any(plan),
            },
        ));
    };
    let gh_run = match (&online.github, &contents.commit) {
        // Cairn's job manifests name the commit; GitHub still knows the final status best, but a
        // recorded run must not need GitHub.
        (Some(gh), None) => Some(gh.run(&plan.repo, run_id).await?),
        _ => None,
    };
    let record_status = contents.status.clone().unwrap_or_default();
    let (status, conclusion) = match (&gh_run, record_status.as_str()) {
        (Some(r), _) => (r.status.clone().unwrap_or_default(), r.conclusion.clone()),
        (None, s @ ("success" | "failure" | "cancelled")) => {
            ("completed".to_string(), Some(s.to_string()))
        }
        (None, s) => (s.to_string(), None),
    };
    let commit = contents
        .commit
        .clone()
        .or_else(|| gh_run.as_ref().map(|r| r.head_sha.clone()))
        .unwrap_or_default();
    let candidate = RunCandidate {
        source: if contents.commit.is_some() {
            "cairn"
        } else {
            "github"
        },
        run_id: run_id.to_string(),
        commit: commit.clone(),
        repo: plan.repo.to_string(),
        workflow: contents
            .workflow
            .clone()
            .or_else(|| {
                gh_run
                    .as_ref()
                    .and_then(|r| r.workflow_file().map(str::to_string))
            })
            .unwrap_or_default(),
        status,
        conclusion,
        run_url: gh_run
            .as_ref()
            .map(|r| r.html_url.clone())
            .or_else(|| run_url(&plan.repo.to_string(), run_id)),
        trusted: {
            let mut spec = RunSpec::new(run_id, plan.platform);
            spec.repo = plan.repo.clone();
            RunOutputRoot::from_run(&spec)?.trusted()
        },
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
    };
    let eval = evaluate(plan, &commit, std::slice::from_ref(&candidate), rejected);
    Ok(((!commit.is_empty()).then_some(commit), eval))
}

/// The commits a baseline search examines, newest first, starting with `start`; and the merge-base
/// when `start` is not on the main branch. Local git history when the checkout has `start`, else
/// GitHub's commit listing.
async fn candidate_commits(
    online: &Online,
    plan: &Plan,
    args: &FindArgs,
    start: &str,
    dir: &Path,
) -> Result<(Vec<String>, Option<String>)> {
    let max = args.max_commits.max(1);
    if matches!(git::rev_parse_commit(dir, start), Ok(Some(_))) {
        let main_ref = [
            format!("origin/{}", args.main_branch),
            args.main_branch.clone(),
        ]
        .into_iter()
        .find(|r| matches!(git::rev_parse_commit(dir, r), Ok(Some(_))));
        let mut from = start.to_string();
        let mut merge_base = None;
        if let Some(main_ref) = &main_ref
            && !matches!(git::is_ancestor(dir, start, main_ref), Ok(true))
            && let Ok(Some(mb)) = git::merge_base(dir, start, main_ref)
        {
            merge_base = Some(mb.clone());
            from = mb;
        }
        let listed = git::first_parent_log(dir, &from, max)
            .ok()
            .context("listing the checkout's history")?;
        let mut out = Vec::new();
        if merge_base.is_some() {
            out.push(start.to_string());
        }
        out.extend(listed);
        out.truncate(max);
        return Ok((out, merge_base));
    }
    let Some(gh) = &online.github else {
        bail!(
            "commit `{start}` is not in the checkout at `{}` and --offline forbids asking GitHub for its history",
            dir.display()
        );
    };
    let commits = gh.commits(&plan.repo, start, max).await?;
    Ok((commits.into_iter().map(|c| c.sha).collect(), None))
}

async fn fallback(
    online: &mut Online,
    plan: &Plan,
    args: &FindArgs,
    start: &str,
    dir: &Path,
    printer: &mut Printer,
    rejected: &mut Vec<Rejection>,
) -> Result<(Baseline, Option<String>, Evaluation)> {
    let (commits, merge_base) = candidate_commits(online, plan, args, start, dir).await?;
    if let Some(mb) = &merge_base {
        printer.note(&format!(
            "commit {start} is not on `{}`; continuing from the merge-base {mb}",
            args.main_branch
        ));
    }
    let mut last = Evaluation {
        results: Vec::new(),
        missing: families_or_any(plan),
    };
    for (i, commit) in commits.iter().enumerate() {
        let mut here = Vec::new();
        let eval = find_commit(online, plan, commit, &mut here).await?;
        if eval.missing.is_empty() && !eval.results.is_empty() {
            // Runs of the chosen commit that were skipped are not why the search went on.
            printer.detail(&format!("baseline {commit} after {i} rejected commit(s)"));
            return Ok((
                Baseline {
                    requested_commit: start.to_string(),
                    commit: Some(commit.clone()),
                    distance: Some(i),
                    merge_base,
                    examined: i + 1,
                },
                Some(commit.clone()),
                eval,
            ));
        }
        if !eval.missing.is_empty() && !here.iter().any(|r| r.run_id.is_none()) {
            here.push(Rejection {
                commit: commit.clone(),
                run_id: None,
                reason: format!("missing {}", eval.missing.join(", ")),
            });
        }
        rejected.extend(here);
        last = eval;
    }
    Ok((
        Baseline {
            requested_commit: start.to_string(),
            commit: None,
            distance: None,
            merge_base,
            examined: commits.len(),
        },
        None,
        last,
    ))
}

fn load_topology(cli: &Cli, dir: &Path, printer: &mut Printer) -> Result<Topology> {
    // As every online command: `--topology` when given, else the checkout's own file.
    let path = if cli.topology_explicit {
        cli.topology.clone()
    } else {
        dir.join("BUILD_TOPOLOGY.toml")
    };
    super::load_topology(&path, printer)
}

/// Fingerprints of the stage's inbound artifacts at the checkout, and whether a run produced each.
async fn fingerprint_status(
    online: &mut Online,
    plan: &Plan,
    topology: &Topology,
    stage: &str,
    dir: &Path,
    variant: &str,
) -> Result<Vec<FingerprintStatus>> {
    let family = match plan.families.as_slice() {
        [f] => f.clone(),
        [] => GENERIC.to_string(),
        _ => bail!(
            "fingerprints need exactly one --family (got {})",
            plan.families.len()
        ),
    };
    let names: Vec<&str> = plan.needed.iter().map(String::as_str).collect();
    let config = FingerprintConfig {
        variant: variant.to_string(),
        ..FingerprintConfig::default()
    };
    let fingerprinter = Fingerprinter::new(topology, dir, config)?;
    let fps = fingerprinter.compute_some(&names, &family, plan.platform)?;
    let producers = history::exact_producers(
        &mut online.daemon,
        stage,
        &family,
        plan.platform.as_str(),
        &fps,
        plan.allow_untrusted,
    )
    .await?;
    Ok(producers
        .into_iter()
        .map(|p| FingerprintStatus {
            artifact: p.artifact,
            fingerprint: p.fingerprint.to_hex(),
            producer_run_id: p.producer.as_ref().map(|(r, _)| r.clone()),
            producer_commit: p.producer.map(|(_, c)| c),
        })
        .collect())
}

fn render(report: &FindReport, printer: &mut Printer) -> Result<()> {
    if printer.json() {
        return printer.json_value(report);
    }
    if let Some(b) = &report.baseline {
        match (&b.commit, b.distance) {
            (Some(c), Some(d)) => printer.line(&format!(
                "Baseline: {c} ({d} newer commit(s) rejected, {} examined{})",
                b.examined,
                b.merge_base
                    .as_deref()
                    .map(|m| format!(", merge-base {m}"))
                    .unwrap_or_default()
            ))?,
            _ => printer.line(&format!(
                "Baseline: none within {} commit(s) of {}",
                b.examined, b.requested_commit
            ))?,
        }
    }
    for r in &report.results {
        printer.line("Artifact info:")?;
        let rows = [
            ("commit", r.commit.clone()),
            ("repo", r.repo.clone()),
            ("workflow", r.workflow.clone()),
            ("run id", r.run_id.clone()),
            (
                "status",
                format!(
                    "{}{}",
                    r.run_status,
                    r.run_conclusion
                        .as_deref()
                        .map(|c| format!("/{c}"))
                        .unwrap_or_default()
                ),
            ),
            ("run url", r.run_url.clone().unwrap_or_else(|| "-".into())),
            ("platform", r.platform.clone()),
            ("family", r.family.clone()),
            (
                "source",
                format!(
                    "{}{}",
                    r.source,
                    if r.trusted { "" } else { " (untrusted)" }
                ),
            ),
            ("bucket", r.bucket.clone()),
            ("s3 path", r.s3_uri.clone()),
            ("index url", r.index_url.clone()),
            ("artifacts", r.artifact_count.to_string()),
        ];
        for (k, v) in rows {
            printer.line(&format!("  {k:<10} {v}"))?;
        }
        for a in &r.artifacts {
            printer.detail(&format!("    {a}"));
        }
    }
    if report.baseline.is_some() || report.results.is_empty() {
        for r in &report.rejected {
            let line = format!(
                "rejected {}{}: {}",
                if r.commit.is_empty() { "-" } else { &r.commit },
                r.run_id
                    .as_deref()
                    .map(|id| format!(" run {id}"))
                    .unwrap_or_default(),
                r.reason
            );
            if report.results.is_empty() {
                printer.note(&line);
            } else {
                printer.line(&line)?;
            }
        }
    }
    if let Some(fps) = &report.fingerprints {
        printer.line("Inbound artifacts at the checkout:")?;
        for f in fps {
            let producer = match (&f.producer_run_id, &f.producer_commit) {
                (Some(r), Some(c)) => format!("exact producer: run {r} (commit {c})"),
                (Some(r), None) => format!("exact producer: run {r}"),
                _ => "no run produced this fingerprint".into(),
            };
            printer.line(&format!(
                "  {:<24} {}  {producer}",
                f.artifact,
                &f.fingerprint[..16]
            ))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(families: &[&str], needed: &[&str]) -> Plan {
        Plan {
            repo: GithubRepo::the_rock(),
            workflow: "multi_arch_ci.yml".into(),
            platform: Platform::Linux,
            families: families.iter().map(|s| s.to_string()).collect(),
            stage: None,
            needed: needed.iter().map(|s| s.to_string()).collect(),
            require_successful: false,
            require_single: false,
            allow_untrusted: false,
            offline: true,
            workflow_explicit: false,
        }
    }

    fn run(id: u64, conclusion: &str, archives: &[&str]) -> RunCandidate {
        RunCandidate {
            source: "github",
            run_id: id.to_string(),
            commit: "c".repeat(40),
            repo: "ROCm/TheRock".into(),
            workflow: "multi_arch_ci.yml".into(),
            status: "completed".into(),
            conclusion: Some(conclusion.into()),
            run_url: None,
            trusted: true,
            bucket: "therock-ci-artifacts".into(),
            prefix: format!("{id}-linux"),
            archives: prefer_zst(&archives.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
            order: (id, String::new()),
        }
    }

    #[test]
    fn families_need_a_non_generic_archive_and_newest_run_wins() {
        let runs = [
            run(20, "success", &["blas_lib_generic.tar.zst"]),
            run(
                10,
                "success",
                &["blas_lib_gfx942.tar.zst", "blas_lib_generic.tar.xz"],
            ),
        ];
        let mut rejected = Vec::new();
        let e = evaluate(&plan(&["gfx94X-dcgpu"], &[]), "c", &runs, &mut rejected);
        assert!(e.missing.is_empty());
        assert_eq!(e.results[0].run_id, "10");
        assert_eq!(
            e.results[0].artifacts,
            ["blas_lib_generic.tar.xz", "blas_lib_gfx942.tar.zst"]
        );
        assert_eq!(rejected.len(), 1);
        assert!(
            rejected[0].reason.contains("only generic"),
            "{}",
            rejected[0].reason
        );
    }

    #[test]
    fn accumulate_across_runs_unless_single_run_is_required() {
        let runs = [
            run(20, "success", &["blas_lib_gfx942.tar.zst"]),
            run(10, "success", &["blas_lib_gfx1100.tar.zst"]),
        ];
        let mut p = plan(&["gfx94X-dcgpu", "gfx110X-all"], &[]);
        let e = evaluate(&p, "c", &runs, &mut Vec::new());
        assert!(e.missing.is_empty());
        let ids: Vec<&str> = e.results.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["20", "10"]);
        p.require_single = true;
        let e = evaluate(&p, "c", &runs, &mut Vec::new());
        assert_eq!(e.missing, ["gfx94X-dcgpu", "gfx110X-all"]);
    }

    #[test]
    fn stage_needs_every_inbound_artifact_and_success_can_be_required() {
        let runs = [
            run(
                30,
                "failure",
                &["blas_lib_gfx942.tar.zst", "fft_lib_gfx942.tar.zst"],
            ),
            run(20, "success", &["blas_lib_gfx942.tar.zst"]),
        ];
        let mut p = plan(&["gfx94X-dcgpu"], &["blas", "fft"]);
        let e = evaluate(&p, "c", &runs, &mut Vec::new());
        assert_eq!(e.results[0].run_id, "30");
        p.require_successful = true;
        let mut rejected = Vec::new();
        let e = evaluate(&p, "c", &runs, &mut rejected);
        assert_eq!(e.missing, ["gfx94X-dcgpu"]);
        assert!(
            rejected[0].reason.contains("completed/failure"),
            "{}",
            rejected[0].reason
        );
        assert!(
            rejected[1].reason.contains("missing fft"),
            "{}",
            rejected[1].reason
        );
    }
}
