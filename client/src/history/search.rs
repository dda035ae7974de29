//! The online history questions, composed from [`candidates`](super::candidates) (what runs exist)
//! and [`select`](super::select) (which of them count): the runs of one commit, one run by id, the
//! `--fallback` walk to the newest complete baseline commit, the exact-fingerprint producers of a
//! stage's inbound artifacts, and one side of a `cairn diff`. Nothing here prints.

use std::path::Path;

use cairn_fingerprint::names::GENERIC;
use cairn_fingerprint::{FingerprintConfig, Fingerprinter, Topology};

use super::candidates::{self, RunCandidate};
use super::diff::Side;
use super::select::{self, Evaluation};
use super::wire::{self, RunContents};
use super::{Baseline, Criteria, FingerprintStatus, HistoryError, Rejection, Sources, commits};

/// Find runs for one commit: Cairn first, GitHub only when Cairn's runs leave something missing.
pub async fn find_commit(
    sources: &mut Sources,
    criteria: &Criteria,
    commit: &str,
    rejected: &mut Vec<Rejection>,
) -> Result<Evaluation, HistoryError> {
    let mut probe = Vec::new();
    let runs = candidates::runs_for_commit(
        sources,
        criteria,
        commit,
        |cairn_runs| {
            !select::evaluate(criteria, commit, cairn_runs, &mut Vec::new())
                .missing
                .is_empty()
        },
        &mut probe,
    )
    .await?;
    rejected.extend(probe);
    Ok(select::evaluate(criteria, commit, &runs, rejected))
}

/// `--run-id`: one run, its archives from Cairn's manifests or the listing, its commit and status
/// from the job manifests, else from GitHub. Returns the run's commit when known.
pub async fn find_run(
    sources: &mut Sources,
    criteria: &Criteria,
    run_id: &str,
    rejected: &mut Vec<Rejection>,
) -> Result<(Option<String>, Evaluation), HistoryError> {
    let contents = wire::run_trees(
        &mut sources.daemon,
        run_id,
        criteria.platform.as_str(),
        &criteria.repo.to_string(),
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
                missing: criteria.families_or_any(),
            },
        ));
    };
    let gh_run = match (&sources.github, &contents.commit) {
        // Cairn's job manifests name the commit; GitHub still knows the final status best, but a
        // recorded run must not need GitHub.
        (Some(gh), None) => Some(gh.run(&criteria.repo, run_id).await?),
        _ => None,
    };
    let candidate = candidates::run_candidate(criteria, run_id, &contents, gh_run.as_ref())?;
    let commit = candidate.commit.clone();
    let eval = select::evaluate(
        criteria,
        &commit,
        std::slice::from_ref(&candidate),
        rejected,
    );
    Ok(((!commit.is_empty()).then_some(commit), eval))
}

/// `--fallback`: examine `commits` (newest first, from [`commits::candidate_commits`]) until one
/// has runs covering everything; `start` is the commit asked for and `merge_base` where the walk
/// left a side branch. Rejections of the commits passed over (not of runs of the chosen commit)
/// are appended to `rejected`. Returns the search, the chosen commit, and its evaluation (the last
/// commit's when none was complete).
pub async fn baseline(
    sources: &mut Sources,
    criteria: &Criteria,
    start: &str,
    commits: &[String],
    merge_base: Option<String>,
    rejected: &mut Vec<Rejection>,
) -> Result<(Baseline, Option<String>, Evaluation), HistoryError> {
    let mut last = Evaluation {
        results: Vec::new(),
        missing: criteria.families_or_any(),
    };
    for (i, commit) in commits.iter().enumerate() {
        let mut here = Vec::new();
        let eval = find_commit(sources, criteria, commit, &mut here).await?;
        if eval.complete() {
            // Runs of the chosen commit that were skipped are not why the search went on.
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

/// Fingerprints of the stage's inbound artifacts (`criteria.needed`) at the checkout `dir`, and
/// whether a run produced exactly each. Needs at most one family (none means `generic`).
pub async fn exact_fingerprints(
    sources: &mut Sources,
    criteria: &Criteria,
    topology: &Topology,
    stage: &str,
    dir: &Path,
    variant: &str,
) -> Result<Vec<FingerprintStatus>, HistoryError> {
    let family = match criteria.families.as_slice() {
        [f] => f.clone(),
        [] => GENERIC.to_string(),
        _ => return Err(HistoryError::FamilyCount(criteria.families.len())),
    };
    let names: Vec<&str> = criteria.needed.iter().map(String::as_str).collect();
    let config = FingerprintConfig {
        variant: variant.to_string(),
        ..FingerprintConfig::default()
    };
    let fingerprinter = Fingerprinter::new(topology, dir, config)?;
    let fps = fingerprinter.compute_some(&names, &family, criteria.platform)?;
    let producers = wire::exact_producers(
        &mut sources.daemon,
        stage,
        &family,
        criteria.platform.as_str(),
        &fps,
        criteria.allow_untrusted,
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

/// One side of a `cairn diff`, resolved.
#[derive(Debug)]
pub enum DiffSide {
    /// The run and what its archives hold.
    Found(Box<(Side, RunContents)>),
    /// The commit has no run with archives.
    NoRunForCommit {
        /// The commit (full SHA).
        commit: String,
    },
    /// The run holds no archives.
    NoArchives {
        /// The run.
        run_id: String,
    },
}

/// Resolve one side of a diff: a run id (digits), or a commit (revisions resolved in the checkout
/// at `dir`) whose newest eligible run holding archives is taken (Cairn's records; GitHub's runs
/// only when Cairn has none); then the run's trees. A run id is taken whatever its state.
pub async fn diff_side(
    sources: &mut Sources,
    criteria: &Criteria,
    spec: &str,
    dir: &Path,
) -> Result<DiffSide, HistoryError> {
    let is_run_id = !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit());
    let (run_id, commit) = if is_run_id {
        (spec.to_string(), None)
    } else {
        let commit = commits::resolve_commit(spec, dir)?;
        let mut rejected = Vec::new();
        let runs = candidates::runs_for_commit(
            sources,
            criteria,
            &commit,
            |cairn| cairn.is_empty(),
            &mut rejected,
        )
        .await?;
        let newest = runs
            .into_iter()
            .find(|r| !r.archives.is_empty() && criteria.eligibility.refusal(r.state()).is_none());
        let Some(RunCandidate { run_id, .. }) = newest else {
            return Ok(DiffSide::NoRunForCommit { commit });
        };
        (run_id, Some(commit))
    };
    let Some(contents) = wire::run_trees(
        &mut sources.daemon,
        &run_id,
        criteria.platform.as_str(),
        &criteria.repo.to_string(),
    )
    .await?
    else {
        return Ok(DiffSide::NoArchives { run_id });
    };
    let side = Side {
        spec: spec.to_string(),
        run_id,
        commit: commit.or_else(|| contents.commit.clone()),
        platform: criteria.platform.to_string(),
        bucket: contents.bucket.clone(),
        prefix: contents.prefix.clone(),
    };
    Ok(DiffSide::Found(Box::new((side, contents))))
}
