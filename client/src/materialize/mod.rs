//! Materialization: writing artifact trees (see [`cairn_fingerprint::tree::Tree`]) from blob files
//! into a destination directory, the way TheRock's extraction would leave it.
//!
//! Three layouts ([`Layout`]): *plain* (`DEST/artifacts/{artifact}/...`, `fetch`'s default), *flatten*
//! (every stage dir merged into `DEST`, `fetch --flatten`) and *bootstrap* (`DEST/{relpath}/...` plus an
//! empty `DEST/{relpath}.prebuilt` marker per stage relpath, `bootstrap`).
//!
//! A run goes through fixed phases, so the parallel part never races with cleaning:
//! 1. **plan** (pure): map every entry to its destination path and refuse hostile or conflicting
//!    trees ([`TreeProblem`]) before touching the disk;
//! 2. **prepare** (serial, parents before children): create directories, refusing to pass through a
//!    symlink or file we do not own; clean each area exactly once — a foreign stage dir is removed
//!    (TheRock's once-per-relpath `rmtree`), an area the state file says we wrote keeps its content
//!    and only loses what is no longer planned;
//! 3. **write** (parallel, rayon): files (reflink, `copy_file_range`, read/write or hard link, see
//!    [`CopyMode`]), symlinks, then hard links inside the tree; every write is a temp file renamed over
//!    its destination, so a hard-linked CAS blob is never written through;
//! 4. **finish**: directory modes, `.prebuilt` markers, and the state file (see `state.rs`).
//!
//! **Markers never lie.** A stage dir's `{relpath}.prebuilt` tells TheRock's CMake to trust the stage
//! dir as prebuilt, so it may only exist over a complete stage dir. Before the first change of any
//! kind inside a stage dir (cleaning it, removing a stray, writing a file, symlink or link, a
//! `chmod`), the run removes its marker and fsyncs the marker's directory; the marker is written back
//! only in phase 4, after every entry of the stage dir is in place. Stage dirs a run drops lose their
//! marker before any of their files. So a SIGKILL, a full disk or a power cut at any point leaves
//! each marked stage dir exactly as one complete run left it (page-cache content is not fsynced
//! before the marker is written: a power cut may still lose the content of a freshly marked dir; the
//! guarantee covered by the tests is the process-death one). A stage dir whose content does not
//! change keeps its marker (and its mtime), so CMake rebuilds nothing there.
//!
//! **Stopping.** [`Options::stop`] ([`StopFlag`]) is checked before each entry of the prepare and
//! write phases; a stopped run finishes the file it is copying, saves a state file that records
//! every entry already in place (the rerun rewrites only the rest) and fails with
//! [`MaterializeError::Interrupted`] naming how many stage dirs are left unmarked. `cairn` sets it
//! on SIGINT/SIGTERM and exits 130/143.
//!
//! **Verification.** A file is kept only when the state file recorded the digest the tree now wants
//! *and* its `lstat` (inode, size, mtime, ctime) is what the run that wrote it saw, so a file edited
//! behind cairn's back is rewritten. [`Options::verify`] (`--verify`) also re-hashes every kept file
//! (rewriting mismatches) and hashes each blob before copying it, refusing one whose content does not
//! hash to its name ([`MaterializeError::BlobCorrupt`]). It is off by default: streamed blobs are
//! already hashed as they are spooled, and for CAS paths on the same machine the measured cost
//! (`BENCHMARKS.md`, "Copy-time blob check": +12–20% of a warm materialization in a debug build, more
//! in release) is above the 15% budget, so it is left to `--verify` and `cairnd verify`.
//!
//! Incremental runs rely on the state file: a file whose record and `lstat` match is left untouched
//! (same inode, same mtime); [`blobs_needed`] tells a remote client which blobs a run will read.
//! Runs into one destination are serialized by an exclusive `flock` on the destination directory.
//! Call [`materialize`] from a blocking context (`spawn_blocking`), never on a tokio worker.

mod copy;
mod fsops;
mod plan;
pub mod prestage;
mod run;
mod state;

use std::collections::BTreeMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use cairn_fingerprint::Blake3;
use cairn_fingerprint::tree::Tree;
use rayon::prelude::*;

use plan::{Node, Plan};
use state::State;

/// Name of the state file kept at the root of the destination.
pub const STATE_FILE: &str = ".cairn-state.json";

/// Where blob contents are read from: a CAS directory on this machine or a client's spool of
/// streamed blobs.
pub trait BlobSource: Sync {
    /// The path of the file holding blob `digest`, or `None` when the source does not have it.
    fn blob_path(&self, digest: &Blake3) -> Option<PathBuf>;

    /// A private copy of blob `digest` on the destination's file system that materialization may
    /// move into place instead of copying (each handed out once; `prestage.rs`), if there is one.
    fn take_copy(&self, _digest: &Blake3) -> Option<PathBuf> {
        None
    }
}

/// A directory of blobs named by their lowercase hex BLAKE3 (streamed blobs spooled by a remote
/// Fetch).
#[derive(Debug, Clone)]
pub struct DirBlobs {
    root: PathBuf,
}

impl DirBlobs {
    /// Blobs at `root/{hex}`.
    pub fn flat(root: impl Into<PathBuf>) -> DirBlobs {
        DirBlobs { root: root.into() }
    }
}

impl BlobSource for DirBlobs {
    fn blob_path(&self, digest: &Blake3) -> Option<PathBuf> {
        Some(self.root.join(digest.to_hex()))
    }
}

/// Blob paths handed over one by one, e.g. the CAS paths a same-machine `Fetch` returns.
impl BlobSource for std::collections::HashMap<Blake3, PathBuf> {
    fn blob_path(&self, digest: &Blake3) -> Option<PathBuf> {
        self.get(digest).cloned()
    }
}

/// How the trees are laid out under the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `DEST/artifacts/{artifact}/{tree path}`, `artifact_manifest.txt` included: TheRock's default
    /// extraction. Each `artifacts/{artifact}` directory is replaced as a whole.
    Plain,
    /// Every stage dir merged into `DEST` with its relpath stripped (`fetch --flatten`,
    /// `fileset_tool.py artifact-flatten`); no manifest, no markers, foreign files kept.
    Flatten,
    /// `DEST/{tree path}` (files land at `DEST/{relpath}/...`), each stage relpath cleaned once per run
    /// unless we wrote it ourselves, and an empty `DEST/{relpath}.prebuilt` marker written after it.
    Bootstrap,
}

/// Which copy path writes file contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CopyMode {
    /// Reflink, else `copy_file_range`, else a streamed read/write copy.
    #[default]
    Auto,
    /// Reflink only; fails with [`MaterializeError::Unsupported`] where the filesystem cannot.
    Reflink,
    /// `copy_file_range` only; fails with [`MaterializeError::Unsupported`] where unavailable.
    CopyFileRange,
    /// A streamed read/write copy with a fixed buffer.
    ReadWrite,
    /// Hard links to the blobs (only when asked: a build that edits files in place would edit the
    /// CAS). Falls back to a copy when the blob's execute bits differ from the entry's mode or the
    /// blob is on another filesystem.
    Hardlink,
}

/// A stop request shared between a signal handler and a run. The run stops at the next entry
/// boundary (a file being copied is finished first), saves its state and fails with
/// [`MaterializeError::Interrupted`].
#[derive(Debug, Default)]
pub struct StopFlag {
    signal: AtomicI32,
    started: AtomicBool,
}

impl StopFlag {
    /// Ask the run to stop because of `signal`. Returns `false` when no run has started yet: then
    /// nothing in the destination is being changed and the caller may simply exit (a run that
    /// starts concurrently sees the request before its first change).
    pub fn request(&self, signal: i32) -> bool {
        self.signal.store(signal, Ordering::SeqCst);
        self.started.load(Ordering::SeqCst)
    }

    /// The signal a stop was requested for, if any.
    pub fn requested(&self) -> Option<i32> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    /// Called by a run before its first change to the destination.
    pub(crate) fn start(&self) {
        self.started.store(true, Ordering::SeqCst);
    }
}

/// Settings for one run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Destination layout.
    pub layout: Layout,
    /// Copy path for file contents.
    pub copy_mode: CopyMode,
    /// Worker threads; `None` uses rayon's global pool, `Some(1)` runs serially.
    pub threads: Option<usize>,
    /// Trust the state file of an earlier run to skip unchanged files (default `true`).
    pub incremental: bool,
    /// `--verify`: re-hash (BLAKE3) every file the state file proves unchanged and rewrite the ones
    /// whose content no longer matches, and hash every blob before copying it, refusing a corrupt
    /// one ([`MaterializeError::BlobCorrupt`]). Off by default (see `BENCHMARKS.md` for its cost).
    pub verify: bool,
    /// Where a stop request arrives (see [`StopFlag`]). `None`: the run cannot be stopped except by
    /// killing the process, which is safe too (markers are removed before their stage dir changes).
    pub stop: Option<Arc<StopFlag>>,
    /// The run each item came from (`{name}_{component}_{family}` → run id), saved in the state
    /// file when the run completes; [`recorded_sources`] reads it back for `cairn push`.
    pub sources: BTreeMap<String, String>,
}

impl Options {
    /// Defaults for `layout`: automatic copy path, global thread pool, incremental.
    pub fn new(layout: Layout) -> Options {
        Options {
            layout,
            copy_mode: CopyMode::Auto,
            threads: None,
            incremental: true,
            verify: false,
            stop: None,
            sources: BTreeMap::new(),
        }
    }
}

/// One artifact to materialize.
#[derive(Debug, Clone)]
pub struct MaterializeItem {
    /// `{name}_{component}_{family}`; the directory name in plain layout, and the name in errors.
    pub artifact: String,
    /// The artifact's content.
    pub tree: Arc<Tree>,
}

/// Progress callbacks; the CLI drives a progress bar with them, tests record them. Called from
/// worker threads.
pub trait Reporter: Sync {
    /// Once, after planning: how many files and bytes the trees hold.
    fn on_start(&self, _files: u64, _bytes: u64) {}
    /// A file of `bytes` bytes was written.
    fn on_file_written(&self, _bytes: u64) {}
    /// A file of `bytes` bytes was already in place and left untouched.
    fn on_file_skipped(&self, _bytes: u64) {}
    /// Every entry of `artifact` is in place.
    fn on_artifact_done(&self, _artifact: &str) {}
}

/// A [`Reporter`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReporter;

impl Reporter for NoReporter {}

/// How many files each copy path wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyCounts {
    /// Reflinked (`FICLONE`).
    pub reflink: u64,
    /// Copied with `copy_file_range`.
    pub copy_file_range: u64,
    /// Copied with read/write.
    pub read_write: u64,
    /// Hard-linked to the blob.
    pub hardlink_blob: u64,
    /// Hard-linked to another file of the tree (tar hard links).
    pub hardlink_tree: u64,
    /// Moved into place from a copy made while the daemon was still downloading (`prestage.rs`).
    pub prestaged: u64,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Artifacts materialized.
    pub artifacts: usize,
    /// Regular files (and hard links) in the result.
    pub files: u64,
    /// Bytes of regular files in the result (hard links not counted twice).
    pub bytes: u64,
    /// Files (and hard links) written in this run.
    pub files_written: u64,
    /// Bytes written in this run.
    pub bytes_written: u64,
    /// Files left untouched because the state file proved them unchanged.
    pub files_skipped_unchanged: u64,
    /// Kept files re-hashed because of [`Options::verify`].
    pub files_verified: u64,
    /// Kept files whose content did not match their digest under [`Options::verify`] and that were
    /// rewritten (counted in `files_written` too).
    pub files_repaired: u64,
    /// Non-directories removed: stale files of an earlier run, strays in owned areas, foreign
    /// content of cleaned stage dirs.
    pub files_removed: u64,
    /// Symlinks written in this run.
    pub symlinks_written: u64,
    /// Areas (stage dirs, `artifacts/{artifact}` dirs) wiped because they held foreign content.
    pub areas_cleaned: usize,
    /// Per copy path.
    pub copies: CopyCounts,
    /// Wall time.
    pub elapsed: Duration,
}

/// One reason a set of trees was refused before anything was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeProblem {
    /// A plain-layout artifact name that is not a single path component.
    #[error("artifact name `{artifact}` is not a plain directory name")]
    BadArtifactName {
        /// The artifact.
        artifact: String,
    },
    /// An entry below no stage relpath of the tree's `artifact_manifest.txt`.
    #[error("`{path}` in `{artifact}` is not below any relpath of its artifact_manifest.txt")]
    OutsideManifest {
        /// The artifact.
        artifact: String,
        /// The tree path.
        path: String,
    },
    /// A symlink that is absolute or climbs out of the destination.
    #[error("symlink `{path}` in `{artifact}` points outside the destination (`{target}`)")]
    SymlinkEscape {
        /// The artifact.
        artifact: String,
        /// The tree path of the symlink.
        path: String,
        /// Its target as written.
        target: String,
    },
    /// A hard link whose target is not a file of the same tree.
    #[error(
        "hardlink `{path}` in `{artifact}` targets `{target}`, which is not a file of the same tree"
    )]
    BadHardlink {
        /// The artifact.
        artifact: String,
        /// The tree path of the link.
        path: String,
        /// Its target.
        target: String,
    },
    /// An entry that would be written through a symlink or below a file.
    #[error("`{path}` in `{artifact}` lies below `{ancestor}`, which is a {ancestor_kind}")]
    BelowNonDirectory {
        /// The artifact.
        artifact: String,
        /// The destination path.
        path: String,
        /// The planned non-directory above it.
        ancestor: String,
        /// What that ancestor is.
        ancestor_kind: &'static str,
    },
    /// Two entries of incompatible kinds at one destination path.
    #[error("`{path}` conflicts between `{first}` and `{second}` ({detail})")]
    Conflict {
        /// The destination path.
        path: String,
        /// The artifact that planned it first.
        first: String,
        /// The artifact that planned it again.
        second: String,
        /// The kinds involved.
        detail: String,
    },
    /// A manifest relpath that cannot be a stage dir in bootstrap layout (see the rule in
    /// `plan.rs`): bootstrap would wipe it.
    #[error(
        "stage relpath `{relpath}` in the artifact_manifest.txt of `{artifact}` is refused: {reason}; bootstrap wipes each stage dir, so it only accepts TheRock's stage dirs (hint: fetch this archive with `cairn fetch` instead)"
    )]
    BadRelpath {
        /// The artifact.
        artifact: String,
        /// The relpath.
        relpath: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file entry without a content digest.
    #[error("file `{path}` in `{artifact}` has no blake3 digest")]
    MissingDigest {
        /// The artifact.
        artifact: String,
        /// The tree path.
        path: String,
    },
    /// An entry whose destination uses a name cairn keeps for its own files (`.cairn-*`: the state
    /// file, the spool, write temps).
    #[error(
        "`{path}` in `{artifact}` uses a name reserved for cairn's own files (`.cairn-*`, e.g. the state file `{STATE_FILE}`)"
    )]
    Reserved {
        /// The artifact.
        artifact: String,
        /// The tree path.
        path: String,
    },
}

/// Why a materialization failed.
#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    /// The trees were refused before anything was written; every problem is listed.
    #[error("refused to materialize: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Refused(Vec<TreeProblem>),
    /// The blob source does not have a blob.
    #[error("blob `{digest}` for `{path}` is missing from the blob source")]
    BlobMissing {
        /// The blob.
        digest: Blake3,
        /// The destination path that needed it.
        path: String,
    },
    /// A blob whose size differs from the tree's (truncated or replaced).
    #[error(
        "blob `{digest}` for `{path}` has {actual} bytes but the tree says {expected} (hint: run `cairnd verify`)"
    )]
    BlobSize {
        /// The blob.
        digest: Blake3,
        /// The destination path.
        path: String,
        /// Size in the tree.
        expected: u64,
        /// Size found.
        actual: u64,
    },
    /// A symlink in the destination where a directory must be, outside what cairn wrote.
    #[error("`{}` in the destination is a symlink; refusing to write through it (hint: remove it)", .path.display())]
    SymlinkInDestination {
        /// The full path.
        path: PathBuf,
    },
    /// A file (or other non-directory) in the destination where a directory must be.
    #[error("`{}` in the destination is not a directory (hint: remove it)", .path.display())]
    NotADirectory {
        /// The full path.
        path: PathBuf,
    },
    /// A directory in the destination where a file must be, outside what cairn wrote.
    #[error("`{}` in the destination is a directory but the tree has a file there (hint: remove it)", .path.display())]
    DirectoryInTheWay {
        /// The full path.
        path: PathBuf,
    },
    /// A forced copy path the filesystem does not support.
    #[error("{method} is not supported for `{path}`: {source}")]
    Unsupported {
        /// `reflink` or `copy_file_range`.
        method: &'static str,
        /// The destination path.
        path: String,
        /// The kernel's answer.
        source: io::Error,
    },
    /// An I/O error.
    #[error("i/o error on `{}`: {source}", .path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A blob whose content does not hash to its name (same size, other bytes): nothing was copied
    /// from it.
    #[error(
        "blob `{digest}` at `{}` for `{path}` is corrupt: its content hashes to `{actual}` (hint: run `cairnd verify` to quarantine it, then rerun)", .blob.display()
    )]
    BlobCorrupt {
        /// The blob.
        digest: Blake3,
        /// The blob file.
        blob: PathBuf,
        /// The destination path that needed it.
        path: String,
        /// What its content hashes to.
        actual: Blake3,
    },
    /// The run was stopped by [`Options::stop`] at a file boundary; its state was saved, and every
    /// stage dir it had started to change is left without its `.prebuilt` marker.
    #[error(
        "interrupted by signal {signal}; {unmarked} stage dir(s) left unmarked, rerun to finish"
    )]
    Interrupted {
        /// The signal number that was set in [`Options::stop`].
        signal: i32,
        /// Stage dirs of this run without a `.prebuilt` marker now.
        unmarked: usize,
    },
    /// The worker pool could not be started.
    #[error("cannot start worker threads: {0}")]
    ThreadPool(String),
}

/// Materialize `items` into `dest` (created if missing) under `opts`. See the module docs for the
/// phases and guarantees.
pub fn materialize(
    items: &[MaterializeItem],
    blobs: &dyn BlobSource,
    dest: &Path,
    opts: &Options,
    reporter: &dyn Reporter,
) -> Result<Report, MaterializeError> {
    match opts.threads {
        None => run::Run::new(items, blobs, dest, opts, reporter)?.run(),
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .build()
                .map_err(|e| MaterializeError::ThreadPool(e.to_string()))?;
            pool.install(|| run::Run::new(items, blobs, dest, opts, reporter)?.run())
        }
    }
}

/// The run each archive of the last complete bootstrap into `dest` came from
/// (`{name}_{component}_{family}` → run id); empty when `dest` was not bootstrapped by Cairn.
pub fn recorded_sources(dest: &Path) -> BTreeMap<String, String> {
    State::load(dest, Layout::Bootstrap).sources
}

/// True when `dest` holds nothing this materializer wrote (no state, or an empty one): every file
/// of a fetch will be written, so copying blobs early ([`prestage`]) never wastes a copy.
pub fn is_fresh(dest: &Path, opts: &Options) -> bool {
    !opts.incremental || State::load(dest, opts.layout).entries.is_empty()
}

/// The blobs a run of `materialize(items, _, dest, opts, _)` would read now: every file the state
/// file of `dest` cannot prove unchanged, deduplicated. A remote client asks the daemon for just
/// these, so an incremental re-bootstrap (a bisect step) downloads only what changed. Reads the
/// destination, writes nothing.
pub fn blobs_needed(
    items: &[MaterializeItem],
    dest: &Path,
    opts: &Options,
) -> Result<Vec<Blake3>, MaterializeError> {
    let plan = Plan::build(items, opts.layout).map_err(MaterializeError::Refused)?;
    let old = if opts.incremental {
        State::load(dest, opts.layout)
    } else {
        State::empty(opts.layout)
    };
    let hardlinks_ok = opts.copy_mode == CopyMode::Hardlink;
    let mut needed: Vec<Blake3> = plan
        .entries
        .par_iter()
        .filter_map(|(path, planned)| {
            let blake3 = match &planned.node {
                Node::File { blake3, .. } => *blake3,
                // A link to a planned file of the same content needs no blob of its own.
                Node::Hardlink {
                    target,
                    blake3,
                    mode,
                    ..
                } => {
                    let linkable = matches!(
                        plan.entries.get(target).map(|t| &t.node),
                        Some(Node::File { blake3: b, mode: m, .. }) if b == blake3 && m == mode
                    );
                    if linkable {
                        return None;
                    }
                    *blake3
                }
                _ => return None,
            };
            let full = dest.join(std::ffi::OsStr::from_bytes(path));
            let proven = fsops::lstat(&full).ok().flatten().is_some_and(|m| {
                old.entries
                    .get(path)
                    .is_some_and(|r| r.proves(&planned.node, &m, hardlinks_ok))
            });
            // `--verify` rewrites a kept file that does not hash to its digest: it needs the blob.
            let proven =
                proven && (!opts.verify || run::hash_file(&full).is_ok_and(|h| h == blake3));
            (!proven).then_some(blake3)
        })
        .collect();
    needed.sort();
    needed.dedup();
    Ok(needed)
}

#[cfg(test)]
mod tests;
