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

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use cairn_client::github;
use cairn_client::history::{self, ArchiveSizes, RunContents};
use cairn_fingerprint::Platform;
use cairn_fingerprint::names::family_matches;
use serde::{Deserialize, Serialize};

use super::find::{
    Online, Plan, checkout_dir, online, resolve_commit, resolve_repo, runs_for_commit,
};
use crate::cli::{Cli, DiffArgs};
use crate::output::{ExitStatus, Printer};

/// Format tag of [`DiffReport`].
pub const DIFF_SCHEMA: &str = "cairn-diff-v1";

/// The `--json` document of `cairn diff` (schema `cairn-diff-v1`):
///
/// ```text
/// {
///   "schema": "cairn-diff-v1",
///   "before": Side, "after": Side,
///   "artifacts": [ArtifactDiff],        // sorted by |change| descending, then by name
///   "totals": { "files": Totals, "compressed": Totals },
///   "notes": [str]
/// }
/// Side = { "spec": str, "run_id": str, "commit": str|null, "platform": str, "bucket": str,
///          "prefix": str }
/// ArtifactDiff = { "artifact": str, "status": "changed"|"unchanged"|"added"|"removed",
///                  "basis": "files"|"compressed", "before": int, "after": int, "change": int,
///                  "compressed_before": int|null, "compressed_after": int|null,
///                  "files": [FileDiff] }   // only files whose size differs, sorted like artifacts
/// FileDiff = { "path": str, "before": int|null, "after": int|null, "change": int }
/// Totals = { "before": int, "after": int, "change": int }
/// ```
///
/// Sizes are bytes. `totals.files` sums the artifacts compared on files, `totals.compressed` sums
/// compressed archive sizes of every artifact.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffReport {
    /// [`DIFF_SCHEMA`].
    pub schema: String,
    /// The "before" run.
    pub before: Side,
    /// The "after" run.
    pub after: Side,
    /// Per artifact.
    pub artifacts: Vec<ArtifactDiff>,
    /// Totals.
    pub totals: DiffTotals,
    /// Precision notes.
    pub notes: Vec<String>,
}

/// One side of a diff.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Side {
    /// What the user typed.
    pub spec: String,
    /// The run compared.
    pub run_id: String,
    /// Its commit, when known.
    pub commit: Option<String>,
    /// Platform.
    pub platform: String,
    /// Bucket.
    pub bucket: String,
    /// Run prefix.
    pub prefix: String,
}

/// One artifact's change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactDiff {
    /// `{name}_{component}_{family}`.
    pub artifact: String,
    /// `changed`, `unchanged`, `added` or `removed`.
    pub status: String,
    /// `files` (tree manifests) or `compressed` (archive sizes).
    pub basis: String,
    /// Size before (0 when added).
    pub before: u64,
    /// Size after (0 when removed).
    pub after: u64,
    /// `after - before`.
    pub change: i64,
    /// Archive size before.
    pub compressed_before: Option<u64>,
    /// Archive size after.
    pub compressed_after: Option<u64>,
    /// Files whose size differs.
    pub files: Vec<FileDiff>,
}

/// One file's change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDiff {
    /// Path in the archive.
    pub path: String,
    /// Size before (null when added).
    pub before: Option<u64>,
    /// Size after (null when removed).
    pub after: Option<u64>,
    /// `after - before`.
    pub change: i64,
}

/// Totals of a diff.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffTotals {
    /// Over artifacts compared on files.
    pub files: Totals,
    /// Over compressed archive sizes of every artifact.
    pub compressed: Totals,
}

/// Before, after, change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Sum before.
    pub before: u64,
    /// Sum after.
    pub after: u64,
    /// `after - before`.
    pub change: i64,
}

impl Totals {
    fn add(&mut self, before: u64, after: u64) {
        self.before += before;
        self.after += after;
        self.change = self.after as i64 - self.before as i64;
    }
}

/// Run `cairn diff`.
pub fn run(cli: &Cli, args: &DiffArgs, printer: &mut Printer) -> Result<ExitStatus> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(cli, args, printer))
}

async fn run_async(cli: &Cli, args: &DiffArgs, printer: &mut Printer) -> Result<ExitStatus> {
    let dir = checkout_dir(None);
    let repo = resolve_repo(args.repo.as_deref(), &dir)?;
    let platform = args.platform.unwrap_or_else(Platform::host);
    let plan = Plan {
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
        require_successful: false,
        require_single: false,
        allow_untrusted: false,
        offline: args.offline,
    };
    let mut online = online(cli, args.offline).await?;
    let before = side(&mut online, &plan, &args.before, printer).await?;
    let after = side(&mut online, &plan, &args.after, printer).await?;
    let (Some((before_side, before)), Some((after_side, after))) = (before, after) else {
        return Ok(ExitStatus::Failure);
    };
    let mut report = diff(&before, &after, &args.families);
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

/// Resolve one side to a run and fetch its trees; `None` (with a problem printed) when no run has
/// archives.
async fn side(
    online: &mut Online,
    plan: &Plan,
    spec: &str,
    printer: &mut Printer,
) -> Result<Option<(Side, RunContents)>> {
    let is_run_id = !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit());
    let (run_id, commit) = if is_run_id {
        (spec.to_string(), None)
    } else {
        let commit = resolve_commit(spec, &checkout_dir(None))?;
        let mut rejected = Vec::new();
        let runs = runs_for_commit(
            online,
            plan,
            &commit,
            |cairn| cairn.is_empty(),
            &mut rejected,
        )
        .await?;
        let Some(newest) = runs.into_iter().find(|r| !r.archives.is_empty()) else {
            printer.problem(&format!(
                "no run with archives found for commit {commit} (platform={})",
                plan.platform
            ));
            return Ok(None);
        };
        (newest.run_id, Some(commit))
    };
    let Some(contents) = history::run_trees(
        &mut online.daemon,
        &run_id,
        plan.platform.as_str(),
        &plan.repo.to_string(),
    )
    .await?
    else {
        printer.problem(&format!(
            "run {run_id} holds no archives (platform={}, repo={})",
            plan.platform, plan.repo
        ));
        return Ok(None);
    };
    let side = Side {
        spec: spec.to_string(),
        run_id,
        commit: commit.or_else(|| contents.commit.clone()),
        platform: plan.platform.to_string(),
        bucket: contents.bucket.clone(),
        prefix: contents.prefix.clone(),
    };
    Ok(Some((side, contents)))
}

fn keep(artifact: &str, families: &[String]) -> bool {
    if families.is_empty() {
        return true;
    }
    let Ok(a) = cairn_fingerprint::ArtifactName::parse(artifact) else {
        return false;
    };
    families.iter().any(|f| family_matches(&a.family, f))
}

/// The diff of two runs' contents (sides left empty for the caller).
pub(super) fn diff(before: &RunContents, after: &RunContents, families: &[String]) -> DiffReport {
    let index = |c: &RunContents| -> BTreeMap<String, ArchiveSizes> {
        c.archives
            .iter()
            .filter(|a| keep(&a.artifact, families))
            .map(|a| (a.artifact.clone(), a.clone()))
            .collect()
    };
    let (b, a) = (index(before), index(after));
    let names: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    let mut totals = DiffTotals {
        files: Totals::default(),
        compressed: Totals::default(),
    };
    let mut artifacts = Vec::new();
    let mut compressed_only = 0usize;
    for name in names {
        let (x, y) = (b.get(name), a.get(name));
        let has_tree = |s: Option<&ArchiveSizes>| s.is_none_or(|s| s.tree.is_some());
        let on_files = has_tree(x) && has_tree(y);
        let size = |s: Option<&ArchiveSizes>| {
            s.map(|s| {
                if on_files {
                    s.uncompressed_size
                } else {
                    s.compressed_size
                }
            })
            .unwrap_or(0)
        };
        let (sb, sa) = (size(x), size(y));
        let files = if on_files {
            file_diffs(
                x.and_then(|s| s.tree.as_deref()).unwrap_or(&[]),
                y.and_then(|s| s.tree.as_deref()).unwrap_or(&[]),
            )
        } else {
            compressed_only += 1;
            Vec::new()
        };
        let status = match (x, y) {
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            _ if sb == sa && files.is_empty() => "unchanged",
            _ => "changed",
        };
        if on_files {
            totals.files.add(sb, sa);
        }
        let (cb, ca) = (x.map(|s| s.compressed_size), y.map(|s| s.compressed_size));
        totals.compressed.add(cb.unwrap_or(0), ca.unwrap_or(0));
        artifacts.push(ArtifactDiff {
            artifact: name.clone(),
            status: status.into(),
            basis: if on_files { "files" } else { "compressed" }.into(),
            before: sb,
            after: sa,
            change: sa as i64 - sb as i64,
            compressed_before: cb,
            compressed_after: ca,
            files,
        });
    }
    artifacts.sort_by(|p, q| {
        q.change
            .unsigned_abs()
            .cmp(&p.change.unsigned_abs())
            .then_with(|| p.artifact.cmp(&q.artifact))
    });
    let mut notes: Vec<String> = before
        .notes
        .iter()
        .map(|n| format!("before: {n}"))
        .chain(after.notes.iter().map(|n| format!("after: {n}")))
        .collect();
    if compressed_only > 0 {
        notes.push(format!(
            "{compressed_only} artifact(s) compared on compressed archive sizes: no tree manifest on both sides"
        ));
    }
    DiffReport {
        schema: DIFF_SCHEMA.into(),
        before: empty_side(),
        after: empty_side(),
        artifacts,
        totals,
        notes,
    }
}

fn empty_side() -> Side {
    Side {
        spec: String::new(),
        run_id: String::new(),
        commit: None,
        platform: String::new(),
        bucket: String::new(),
        prefix: String::new(),
    }
}

fn file_diffs(before: &[history::FileSize], after: &[history::FileSize]) -> Vec<FileDiff> {
    let b: BTreeMap<&str, u64> = before.iter().map(|f| (f.path.as_str(), f.size)).collect();
    let a: BTreeMap<&str, u64> = after.iter().map(|f| (f.path.as_str(), f.size)).collect();
    let paths: BTreeSet<&str> = b.keys().chain(a.keys()).copied().collect();
    let mut out: Vec<FileDiff> = paths
        .into_iter()
        .filter_map(|p| {
            let (x, y) = (b.get(p).copied(), a.get(p).copied());
            (x != y).then(|| FileDiff {
                path: p.to_string(),
                before: x,
                after: y,
                change: y.unwrap_or(0) as i64 - x.unwrap_or(0) as i64,
            })
        })
        .collect();
    out.sort_by(|p, q| {
        q.change
            .unsigned_abs()
            .cmp(&p.change.unsigned_abs())
            .then_with(|| p.path.cmp(&q.path))
    });
    out
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
            s.commit.as_deref().unwrap_or("unknown"),
            s.bucket,
            s.prefix
        ))?;
    }
    printer.line(&format!(
        "{:<44} {:>14} {:>14} {:>14}  {:<10} {}",
        "ARTIFACT", "BEFORE", "AFTER", "CHANGE", "BASIS", "STATUS"
    ))?;
    for a in &report.artifacts {
        printer.line(&format!(
            "{:<44} {:>14} {:>14} {:>14}  {:<10} {}",
            a.artifact,
            a.before,
            a.after,
            signed(a.change),
            a.basis,
            a.status
        ))?;
        for f in a.files.iter().take(max_files) {
            printer.line(&format!(
                "  {:<42} {:>14} {:>14} {:>14}",
                f.path,
                f.before
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                f.after.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                signed(f.change)
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
        "{:<44} {:>14} {:>14} {:>14}",
        "total (files)",
        t.files.before,
        t.files.after,
        signed(t.files.change)
    ))?;
    printer.line(&format!(
        "{:<44} {:>14} {:>14} {:>14}",
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
    use super::*;
    use cairn_client::history::FileSize;

    fn archive(artifact: &str, compressed: u64, files: Option<&[(&str, u64)]>) -> ArchiveSizes {
        let tree: Option<Vec<FileSize>> = files.map(|fs| {
            fs.iter()
                .map(|(p, s)| FileSize {
                    path: p.to_string(),
                    size: *s,
                })
                .collect()
        });
        ArchiveSizes {
            artifact: artifact.into(),
            key: format!("1-linux/{artifact}.tar.zst"),
            compressed_size: compressed,
            uncompressed_size: tree
                .as_ref()
                .map(|t| t.iter().map(|f| f.size).sum())
                .unwrap_or(0),
            files: tree.as_ref().map(|t| t.len() as u64).unwrap_or(0),
            source: if tree.is_some() {
                "manifest"
            } else {
                "listing"
            }
            .into(),
            tree,
        }
    }

    fn contents(archives: Vec<ArchiveSizes>) -> RunContents {
        RunContents {
            bucket: "b".into(),
            prefix: "p".into(),
            commit: None,
            status: None,
            workflow: None,
            archives,
            notes: vec![],
        }
    }

    #[test]
    fn files_then_compressed_sorted_by_absolute_change() {
        let before = contents(vec![
            archive(
                "blas_lib_gfx942",
                50,
                Some(&[("a/x.so", 100), ("a/y.so", 10)]),
            ),
            archive("fft_lib_generic", 70, None),
            archive("old_lib_generic", 5, Some(&[("o", 1)])),
        ]);
        let after = contents(vec![
            archive(
                "blas_lib_gfx942",
                60,
                Some(&[("a/x.so", 90), ("a/z.so", 30)]),
            ),
            archive("fft_lib_generic", 300, Some(&[("f", 1000)])),
        ]);
        let r = diff(&before, &after, &[]);
        let order: Vec<(&str, &str, i64)> = r
            .artifacts
            .iter()
            .map(|a| (a.artifact.as_str(), a.basis.as_str(), a.change))
            .collect();
        assert_eq!(
            order,
            [
                ("fft_lib_generic", "compressed", 230),
                ("blas_lib_gfx942", "files", 10),
                ("old_lib_generic", "files", -1),
            ]
        );
        let files: Vec<(&str, i64)> = r.artifacts[1]
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.change))
            .collect();
        assert_eq!(files, [("a/z.so", 30), ("a/x.so", -10), ("a/y.so", -10)]);
        assert_eq!(r.artifacts[2].status, "removed");
        assert_eq!((r.totals.files.before, r.totals.files.after), (111, 120));
        assert_eq!(
            (r.totals.compressed.before, r.totals.compressed.after),
            (125, 360)
        );
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("compressed archive sizes"))
        );
        let only_generic = diff(&before, &after, &["gfx110X-all".to_string()]);
        assert!(
            only_generic
                .artifacts
                .iter()
                .all(|a| a.artifact.ends_with("generic"))
        );
    }
}
