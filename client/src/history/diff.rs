//! Pure size diff of two runs' contents (schema `cairn-diff-v1`): per artifact and per file,
//! sorted by absolute change, with totals. An artifact is compared on files (`basis: "files"`) when
//! both sides have tree manifests, else on compressed archive sizes (`basis: "compressed"`, with a
//! note). Which runs to compare is [`search::diff_side`](super::search::diff_side)'s question.

use std::collections::{BTreeMap, BTreeSet};

use cairn_fingerprint::names::family_matches;
use serde::{Deserialize, Serialize};

use super::wire::{ArchiveSizes, FileSize, RunContents};

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

/// Whether `artifact` is compared: every artifact without `--family`, else those whose family
/// belongs to one of `families` (generic ones always do); unparsable names never.
fn keep(artifact: &str, families: &[String]) -> bool {
    if families.is_empty() {
        return true;
    }
    let Ok(a) = cairn_fingerprint::ArtifactName::parse(artifact) else {
        return false;
    };
    families.iter().any(|f| family_matches(&a.family, f))
}

/// Keep only the archives of the artifacts named in `names` (`cairn diff --stage`: what the stage
/// builds); archives whose names do not parse go too.
pub fn retain_artifacts(contents: &mut RunContents, names: &BTreeSet<&str>) {
    contents.archives.retain(|a| {
        cairn_fingerprint::ArtifactName::parse(&a.artifact)
            .is_ok_and(|n| names.contains(n.name.as_str()))
    });
}

/// The diff of two runs' contents (sides left empty for the caller).
pub fn diff(before: &RunContents, after: &RunContents, families: &[String]) -> DiffReport {
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

fn file_diffs(before: &[FileSize], after: &[FileSize]) -> Vec<FileDiff> {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn unchanged_added_and_file_level_changes() {
        let mut before = contents(vec![
            archive("a_lib_generic", 10, Some(&[("x", 5), ("gone", 1)])),
            archive("same_lib_generic", 3, Some(&[("s", 2)])),
        ]);
        before.notes = vec!["listing only".into()];
        let after = contents(vec![
            archive("a_lib_generic", 10, Some(&[("x", 5), ("new", 1)])),
            archive("same_lib_generic", 3, Some(&[("s", 2)])),
            archive("b_lib_gfx942", 7, None),
        ]);
        let r = diff(&before, &after, &[]);
        let rows: Vec<(&str, &str, &str, i64)> = r
            .artifacts
            .iter()
            .map(|a| {
                (
                    a.artifact.as_str(),
                    a.status.as_str(),
                    a.basis.as_str(),
                    a.change,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("b_lib_gfx942", "added", "compressed", 7),
                ("a_lib_generic", "changed", "files", 0),
                ("same_lib_generic", "unchanged", "files", 0),
            ]
        );
        let files: Vec<(&str, Option<u64>, Option<u64>, i64)> = r.artifacts[1]
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.before, f.after, f.change))
            .collect();
        assert_eq!(
            files,
            [("gone", Some(1), None, -1), ("new", None, Some(1), 1)]
        );
        assert_eq!(
            (
                r.artifacts[0].compressed_before,
                r.artifacts[0].compressed_after
            ),
            (None, Some(7))
        );
        assert_eq!(r.totals.compressed.change, 7);
        assert_eq!(r.totals.files.change, 0);
        assert_eq!(r.notes[0], "before: listing only");
        assert_eq!(r.schema, DIFF_SCHEMA);

        let only_gfx94 = diff(&before, &after, &["gfx94X-dcgpu".to_string()]);
        assert_eq!(only_gfx94.artifacts.len(), 3);
        let mut junk = after.clone();
        junk.archives[0].artifact = "not an artifact".into();
        let filtered = diff(&before, &junk, &["gfx94X-dcgpu".to_string()]);
        assert_eq!(filtered.artifacts[1].status, "removed");
    }
}
