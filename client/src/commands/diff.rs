//! `cairn diff A B`: how artifact sizes changed between two commits or runs, per artifact and per
//! file, sorted by absolute change, with totals.
//!
//! Each side is a run id (digits), or a commit (its newest run holding archives: Cairn's records
//! first, then GitHub). Sizes come from the daemon's `RunTrees`: per-file sizes from tree manifests
//! when the run was published by Cairn (no archive is downloaded), otherwise the compressed object
//! sizes from the run listing, with a note. An artifact is compared on files (`basis: "files"`) when
//! both sides have tree manifests, else on compressed sizes (`basis: "compressed"`).
//!
//! Exit status: 0 the diff was computed, 1 a side has no run with archives, 2 error.

use anyhow::{Context, Result};
use cairn_client::github;
use cairn_client::history::diff::{self, DiffReport, Side};
use cairn_client::history::search::{self, DiffSide};
use cairn_client::history::{Criteria, Eligibility, RunContents, Sources};
use cairn_fingerprint::Platform;

use crate::cli::{Cli, DiffArgs};
use crate::output::{ExitStatus, Printer};

/// Run `cairn diff`.
pub fn run(cli: &Cli, args: &DiffArgs, printer: &mut Printer) -> Result<ExitStatus> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(cli, args, printer))
}

async fn run_async(cli: &Cli, args: &DiffArgs, printer: &mut Printer) -> Result<ExitStatus> {
    let dir = super::checkout_or_cwd(args.checkout.as_deref());
    let topology = match &args.stage {
        Some(_) => Some(super::checkout_topology(cli, &dir, printer)?),
        None => None,
    };
    let repo = super::repo_arg(args.repo.as_deref(), &dir)?;
    let platform = args.platform.unwrap_or_else(Platform::host);
    let criteria = Criteria {
        workflow: args
            .workflow
            .clone()
            .unwrap_or_else(|| github::default_workflow(&repo).to_string()),
        workflow_explicit: args.workflow.is_some(),
        repo,
        platform,
        families: Vec::new(),
        stage: None,
        needed: Vec::new(),
        // A run id side is taken whatever its state; a commit side takes successful runs.
        eligibility: Eligibility::for_query(false, false, args.allow_incomplete, args.allow_failed),
        require_single: false,
        allow_untrusted: false,
        offline: args.offline,
    };
    let mut sources = super::history_sources(cli, args.offline).await?;
    let before = side(&mut sources, &criteria, &args.before, &dir, printer).await?;
    let after = side(&mut sources, &criteria, &args.after, &dir, printer).await?;
    let (Some((before_side, mut before)), Some((after_side, mut after))) = (before, after) else {
        return Ok(ExitStatus::Failure);
    };
    if let (Some(stage), Some(t)) = (&args.stage, &topology) {
        let names = t.produced(stage)?;
        diff::retain_artifacts(&mut before, &names);
        diff::retain_artifacts(&mut after, &names);
    }
    let mut report = diff::diff(&before, &after, &args.families);
    report.before = before_side;
    report.after = after_side;
    render(&report, args.files, printer)?;
    let changed = report
        .artifacts
        .iter()
        .filter(|a| a.status != "unchanged")
        .count();
    printer.note(&format!(
        "{changed} of {} artifact(s) differ between run {} and run {}",
        report.artifacts.len(),
        report.before.run_id,
        report.after.run_id
    ));
    Ok(ExitStatus::Success)
}

/// One side, or `None` with the problem printed when it has no run with archives.
async fn side(
    sources: &mut Sources,
    criteria: &Criteria,
    spec: &str,
    dir: &std::path::Path,
    printer: &mut Printer,
) -> Result<Option<(Side, RunContents)>> {
    Ok(
        match search::diff_side(sources, criteria, spec, dir).await? {
            DiffSide::Found(found) => Some(*found),
            DiffSide::NoRunForCommit { commit } => {
                printer.problem(&format!(
                    "no run with archives found for commit {commit} (platform={})",
                    criteria.platform
                ));
                None
            }
            DiffSide::NoArchives { run_id } => {
                printer.problem(&format!(
                    "run {run_id} holds no archives (platform={}, repo={})",
                    criteria.platform, criteria.repo
                ));
                None
            }
        },
    )
}

/// `s` cut to `width` characters by replacing its middle with `…` (the start and the file name
/// are what tell paths apart).
fn middle(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width || width < 5 {
        return s.to_string();
    }
    let keep = width - 1;
    let head = keep / 2;
    let tail = keep - head;
    let start: String = s.chars().take(head).collect();
    let end: String = s.chars().skip(n - tail).collect();
    format!("{start}…{end}")
}

fn signed(n: i64) -> String {
    if n > 0 {
        format!("+{n}")
    } else {
        n.to_string()
    }
}

fn render(report: &DiffReport, max_files: usize, printer: &mut Printer) -> Result<()> {
    if printer.json() {
        return printer.json_value(report);
    }
    for (label, s) in [("before", &report.before), ("after", &report.after)] {
        printer.line(&format!(
            "{label:<7} run {} (commit {}) s3://{}/{}",
            s.run_id,
            s.commit
                .as_deref()
                .unwrap_or("unknown: no Cairn job manifest or GitHub run names it"),
            s.bucket,
            s.prefix
        ))?;
    }
    // The name column is as wide as the longest artifact name (at most 60); file paths longer than
    // it are cut in the middle, so the numbers stay in their columns.
    let w = report
        .artifacts
        .iter()
        .map(|a| a.artifact.chars().count())
        .chain([20])
        .max()
        .unwrap_or(20)
        .min(60);
    printer.line(&format!(
        "{:<w$} {:>14} {:>14} {:>14}  {:<10} {}",
        "ARTIFACT", "BEFORE", "AFTER", "CHANGE", "BASIS", "STATUS"
    ))?;
    for a in &report.artifacts {
        printer.line(&format!(
            "{:<w$} {:>14} {:>14} {:>14}  {:<10} {}",
            middle(&a.artifact, w),
            a.before,
            a.after,
            signed(a.change),
            a.basis,
            a.status
        ))?;
        for f in a.files.iter().take(max_files) {
            printer.line(&format!(
                "  {:<fw$} {:>14} {:>14} {:>14}",
                middle(&f.path, w - 2),
                f.before
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                f.after.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                signed(f.change),
                fw = w - 2
            ))?;
        }
        if a.files.len() > max_files {
            printer.line(&format!(
                "  ... {} more changed file(s) (--files N, or --json)",
                a.files.len() - max_files
            ))?;
        }
    }
    let t = &report.totals;
    printer.line(&format!(
        "{:<w$} {:>14} {:>14} {:>14}",
        "total (files)",
        t.files.before,
        t.files.after,
        signed(t.files.change)
    ))?;
    printer.line(&format!(
        "{:<w$} {:>14} {:>14} {:>14}",
        "total (compressed)",
        t.compressed.before,
        t.compressed.after,
        signed(t.compressed.change)
    ))?;
    for n in &report.notes {
        printer.note(&format!("note: {n}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::middle;

    #[test]
    fn long_paths_are_cut_in_the_middle_to_the_column_width() {
        assert_eq!(middle("short", 10), "short");
        let p = "lib/rocm/very/long/path/to/some/library/libamdhip64.so.6.4.0";
        let cut = middle(p, 24);
        assert_eq!(cut.chars().count(), 24);
        assert!(cut.starts_with("lib/rocm/ve"), "{cut}");
        assert!(cut.ends_with("64.so.6.4.0"), "{cut}");
        assert!(cut.contains('…'));
    }
}
