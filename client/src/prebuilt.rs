//! TheRock's `buildctl.py enable|disable`, as `cairn bootstrap --mode` runs it after bootstrapping:
//! over the stage dirs the build system knows (a `.{name}.marker` file ending in `stage.marker`
//! beside each, e.g. `.stage.marker` next to `stage/`), those matching an include regular
//! expression (all when none) and no exclude one are *enabled* — their `{stage}.prebuilt` marker is
//! removed, so CMake builds them — and every other non-empty stage dir is *disabled* (marker
//! written); with `disable`, all are disabled. Empty or missing stage dirs are left alone. When a
//! marker changed (or when forced), CMake is re-run from the `CMAKE_COMMAND` of `CMakeCache.txt`.
//!
//! Symlinks are never followed: the walk does not enter symlinked directories, and a marker is
//! created with `O_EXCL` (a symlink in its place is an error).

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

use regex::Regex;

/// What `--mode` does to the selected stage dirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Selected stage dirs are built (marker removed); the rest stay prebuilt.
    Enable,
    /// Every stage dir stays prebuilt.
    Disable,
}

/// Why `--mode` failed.
#[derive(Debug, thiserror::Error)]
pub enum PrebuiltError {
    /// An include or exclude pattern is not a regular expression.
    #[error("`{pattern}` is not a regular expression")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why.
        #[source]
        source: regex::Error,
    },
    /// A file could not be read or written.
    #[error("`{}`", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// CMake could not be re-run.
    #[error("cannot reconfigure `{}`: {why}", build_dir.display())]
    Reconfigure {
        /// The build dir.
        build_dir: PathBuf,
        /// What went wrong.
        why: String,
    },
}

/// One stage dir and what `--mode` made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageState {
    /// Path relative to the build dir (`base/foo/stage`).
    pub relpath: String,
    /// Whether it is now built (no `.prebuilt` marker).
    pub enabled: bool,
}

/// The outcome of [`apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Every non-empty stage dir, sorted.
    pub stages: Vec<StageState>,
    /// Whether any marker was written or removed.
    pub changed: bool,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PrebuiltError + '_ {
    move |source| PrebuiltError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The stage dirs of `build_dir`, relative and sorted: `D/{name}` for every file `D/.{name}.marker`
/// whose name ends in `stage.marker`; a stage dir is not searched further.
pub fn stage_dirs(build_dir: &Path) -> Result<Vec<String>, PrebuiltError> {
    let mut out = Vec::new();
    let mut stack = vec![(build_dir.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let mut subdirs = Vec::new();
        let mut stages = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = entry.file_type().map_err(io_err(&entry.path()))?;
            if kind.is_dir() {
                subdirs.push(name);
            } else if kind.is_file()
                && let Some(stage) = name
                    .strip_prefix('.')
                    .and_then(|n| n.strip_suffix(".marker"))
                && stage.ends_with("stage")
            {
                stages.push(stage.to_string());
            }
        }
        let join = |n: &str| {
            if rel.is_empty() {
                n.to_string()
            } else {
                format!("{rel}/{n}")
            }
        };
        for s in &stages {
            out.push(join(s));
        }
        for d in subdirs.into_iter().filter(|d| !stages.contains(d)) {
            stack.push((dir.join(&d), join(&d)));
        }
    }
    out.sort();
    Ok(out)
}

/// Apply `mode` to the stage dirs of `build_dir` selected by `include` (all when empty) and not by
/// `exclude` (Python `re.search` semantics: a match anywhere in the relative path).
pub fn apply(
    build_dir: &Path,
    mode: Mode,
    include: &[String],
    exclude: &[String],
) -> Result<Applied, PrebuiltError> {
    let compile = |ps: &[String]| -> Result<Vec<Regex>, PrebuiltError> {
        ps.iter()
            .map(|p| {
                Regex::new(p).map_err(|source| PrebuiltError::Pattern {
                    pattern: p.clone(),
                    source,
                })
            })
            .collect()
    };
    let (inc, exc) = (compile(include)?, compile(exclude)?);
    let mut applied = Applied::default();
    for relpath in stage_dirs(build_dir)? {
        let stage = build_dir.join(&relpath);
        let non_empty = std::fs::read_dir(&stage).is_ok_and(|mut d| d.next().is_some());
        if !non_empty {
            continue;
        }
        let selected = (inc.is_empty() || inc.iter().any(|r| r.is_match(&relpath)))
            && !exc.iter().any(|r| r.is_match(&relpath));
        let enabled = mode == Mode::Enable && selected;
        let marker = build_dir.join(format!("{relpath}.prebuilt"));
        let exists = std::fs::symlink_metadata(&marker).is_ok();
        if enabled && exists {
            std::fs::remove_file(&marker).map_err(io_err(&marker))?;
            applied.changed = true;
        } else if !enabled && !exists {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker)
                .map_err(io_err(&marker))?;
            applied.changed = true;
        }
        applied.stages.push(StageState { relpath, enabled });
    }
    Ok(applied)
}

/// Re-run CMake on `build_dir` with the `CMAKE_COMMAND` its `CMakeCache.txt` names.
pub fn reconfigure(build_dir: &Path) -> Result<(), PrebuiltError> {
    let fail = |why: String| PrebuiltError::Reconfigure {
        build_dir: build_dir.to_path_buf(),
        why,
    };
    let cache = build_dir.join("CMakeCache.txt");
    let text = std::fs::read_to_string(&cache)
        .map_err(|e| fail(format!("reading `{}`: {e}", cache.display())))?;
    let cmake = text
        .lines()
        .find_map(|l| l.strip_prefix("CMAKE_COMMAND:INTERNAL="))
        .ok_or_else(|| {
            fail(format!(
                "`{}` has no CMAKE_COMMAND:INTERNAL=",
                cache.display()
            ))
        })?;
    let out = std::process::Command::new(cmake)
        .arg(build_dir)
        .output()
        .map_err(|e| fail(format!("running `{cmake}`: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "`{cmake}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(root: &Path, rel: &str, file: bool) {
        let dir = root.join(rel);
        std::fs::create_dir_all(&dir).unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::write(dir.parent().unwrap().join(format!(".{name}.marker")), "").unwrap();
        if file {
            std::fs::write(dir.join("f"), "x").unwrap();
        }
    }

    #[test]
    fn enable_builds_the_selected_stage_dirs_and_keeps_the_rest_prebuilt() {
        let tmp = tempfile::tempdir().unwrap();
        let b = tmp.path();
        stage(b, "base/rocm-core/stage", true);
        stage(b, "core/ROCR-Runtime/stage", true);
        stage(b, "core/clr/stage", true);
        stage(b, "math-libs/empty/stage", false);
        std::fs::write(b.join("core/clr/stage.prebuilt"), "").unwrap();
        assert_eq!(
            stage_dirs(b).unwrap(),
            [
                "base/rocm-core/stage",
                "core/ROCR-Runtime/stage",
                "core/clr/stage",
                "math-libs/empty/stage"
            ]
        );
        let a = apply(
            b,
            Mode::Enable,
            &["ROCR".into(), "clr".into()],
            &["clr".into()],
        )
        .unwrap();
        let enabled: Vec<_> = a.stages.iter().filter(|s| s.enabled).collect();
        assert_eq!(enabled.len(), 1);
        assert_eq!(enabled[0].relpath, "core/ROCR-Runtime/stage");
        assert!(a.changed);
        assert!(b.join("base/rocm-core/stage.prebuilt").exists());
        assert!(b.join("core/clr/stage.prebuilt").exists());
        assert!(!b.join("core/ROCR-Runtime/stage.prebuilt").exists());
        assert!(
            !b.join("math-libs/empty/stage.prebuilt").exists(),
            "empty: left alone"
        );
        let again = apply(
            b,
            Mode::Enable,
            &["ROCR".into(), "clr".into()],
            &["clr".into()],
        )
        .unwrap();
        assert!(!again.changed, "nothing to change the second time");
        let d = apply(b, Mode::Disable, &[], &[]).unwrap();
        assert!(d.changed && d.stages.iter().all(|s| !s.enabled));
        assert!(b.join("core/ROCR-Runtime/stage.prebuilt").exists());
        assert!(matches!(
            apply(b, Mode::Enable, &["(".into()], &[]),
            Err(PrebuiltError::Pattern { .. })
        ));
    }
}
