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
//! This file is glue: arguments to [`Criteria`], the questions to [`cairn_client::history`], the
//! answer to text. Exit status: 0 found, 1 not found, 2 error. `--json` prints one [`FindReport`].

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use cairn_client::github::{self, GithubError};
use cairn_client::history::commits::{self, Walk};
use cairn_client::history::report::Query;
use cairn_client::history::{Criteria, Eligibility, FindReport, HistoryError, search, select};
use cairn_fingerprint::Platform;
use cairn_fingerprint::names::GENERIC;

use crate::cli::{Cli, FindArgs};
use crate::output::{ExitStatus, Printer};

/// Run `cairn find`.
pub fn run(cli: &Cli, args: &FindArgs, printer: &mut Printer) -> Result<ExitStatus> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(cli, args, printer))
}

async fn run_async(cli: &Cli, args: &FindArgs, printer: &mut Printer) -> Result<ExitStatus> {
    let dir = super::checkout_or_cwd(args.checkout.as_deref());
    let repo = super::repo_arg(args.repo.as_deref(), &dir)?;
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
        Some(_) => Some(super::checkout_topology(cli, &dir, printer)?),
        None => None,
    };
    let needed = match (&args.stage, &topology) {
        (Some(stage), Some(t)) => select::stage_needs(t, stage, platform)?,
        _ => Vec::new(),
    };
    let mut criteria = Criteria {
        repo,
        workflow,
        platform,
        families: args.families.clone(),
        stage: args.stage.clone(),
        needed,
        eligibility: Eligibility::for_query(
            args.run_id.is_some(),
            args.require_successful_run,
            args.allow_incomplete,
            args.allow_failed,
        ),
        require_single: args.require_single_run,
        allow_untrusted: args.allow_untrusted,
        offline: args.offline,
        workflow_explicit: args.workflow.is_some(),
    };
    let commit = match &args.commit {
        Some(c) => Some(commits::resolve_commit(c, &dir)?),
        None => None,
    };
    let mut sources = super::history_sources(cli, criteria.offline).await?;
    printer.detail(&format!(
        "repo {}, workflow {}, platform {}, github {}",
        criteria.repo,
        criteria.workflow,
        criteria.platform,
        sources
            .github
            .as_ref()
            .map(|g| format!("{} ({})", g.base(), g.auth()))
            .unwrap_or_else(|| "off".into())
    ));

    let mut rejected = Vec::new();
    let mut baseline = None;
    let (found_commit, eval) = if let Some(run_id) = &args.run_id {
        search::find_run(&mut sources, &criteria, run_id, &mut rejected).await?
    } else {
        let commit = commit.clone().context("--commit or --run-id is required")?;
        if args.fallback {
            let walk = Walk {
                start: &commit,
                main_branch: &args.main_branch,
                max_commits: args.max_commits,
            };
            // An unreachable GitHub does not end the walk: it goes on over the local git history
            // and Cairn's records alone, as with --offline, and says so.
            let mut retried = false;
            let (b, found, eval, merge_base) = loop {
                let attempt: Result<_, HistoryError> = async {
                    let (candidates, merge_base) = commits::candidate_commits(
                        sources.github.as_ref(),
                        &criteria.repo,
                        &walk,
                        &dir,
                    )
                    .await?;
                    let (b, found, eval) = search::baseline(
                        &mut sources,
                        &criteria,
                        &commit,
                        &candidates,
                        merge_base.clone(),
                        &mut rejected,
                    )
                    .await?;
                    Ok((b, found, eval, merge_base))
                }
                .await;
                match attempt {
                    Err(HistoryError::Github(e @ GithubError::Http { .. }))
                        if !retried && sources.github.is_some() =>
                    {
                        printer.problem(&format!(
                            "cairn: find --fallback: GitHub is not reachable ({}); walking the \
                             local git history over Cairn's records alone, as --offline does \
                             (runs published without Cairn are not seen; point CAIRN_GITHUB_API \
                             at a reachable API to include them)",
                            match &e {
                                GithubError::Http { url, source } => format!("{url}: {source}"),
                                other => other.to_string(),
                            }
                        ));
                        sources.github = None;
                        criteria.offline = true;
                        rejected.clear();
                        retried = true;
                    }
                    other => break other?,
                }
            };
            if let Some(mb) = &merge_base {
                printer.note(&format!(
                    "commit {commit} is not on `{}`; continuing from the merge-base {mb}",
                    args.main_branch
                ));
            }
            if let (Some(c), Some(i)) = (&b.commit, b.distance) {
                printer.detail(&format!("baseline {c} after {i} rejected commit(s)"));
            }
            baseline = Some(b);
            (found, eval)
        } else {
            let eval = search::find_commit(&mut sources, &criteria, &commit, &mut rejected).await?;
            (Some(commit), eval)
        }
    };

    let fingerprints = match (&args.stage, &topology, args.checkout.is_some()) {
        (Some(stage), Some(t), true) => Some(
            search::exact_fingerprints(&mut sources, &criteria, t, stage, &dir, &args.variant)
                .await?,
        ),
        _ => None,
    };

    let query = Query::new(&criteria, commit, args.run_id.clone());
    let report = FindReport::new(query, found_commit, eval, rejected, baseline, fingerprints);
    render(&report, printer)?;
    if !report.found() {
        printer.problem(&format!(
            "no matching artifacts found for {} (platform={}, families=[{}]{})",
            match (&report.query.commit, &report.query.run_id) {
                (_, Some(id)) => format!("run {id}"),
                (Some(c), None) => format!("commit {c}"),
                _ => "the query".into(),
            },
            criteria.platform,
            criteria.families.join(", "),
            criteria
                .stage
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
    // Runs passed over are part of the answer when it is a baseline or nothing; otherwise they are
    // details (`-v`): a newer run in progress or failed, a run lacking a family.
    {
        let shown = report.baseline.is_some() || report.results.is_empty();
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
            if !shown {
                printer.detail(&line);
            } else if report.results.is_empty() {
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
