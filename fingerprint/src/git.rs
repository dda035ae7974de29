//! Reading a git checkout: the only module that runs git.
//!
//! Besides the snapshot, a few small questions other crates ask about a checkout live here so that
//! no other module spawns git: [`toplevel`], [`rev_parse_commit`], [`is_ancestor`], [`merge_base`],
//! [`first_parent_log`], [`first_parent_range`], [`read_blob`] and [`remote_url`].
//!
//! Besides the checkout as it is ([`GitSnapshot::read`]), a snapshot can describe a commit without
//! checking it out ([`GitSnapshot::at_commit`]: its tree and `.gitmodules`, nothing dirty), and a
//! snapshot can have one gitlink replaced ([`GitSnapshot::with_gitlink`]): what the superproject's
//! tree would be with a submodule moved to another commit. `cairn bisect` fingerprints its
//! candidates this way, so it never touches the user's work tree, index or `HEAD`.
//!
//! A [`GitSnapshot`] is everything fingerprints need from a checkout, read once: the superproject's
//! `HEAD` tree (every blob and gitlink with its mode and object id), the submodules (`.gitmodules`
//! name → path, and the commit actually checked out in each, moved nested ones included), and the
//! dirty files (staged, unstaged and untracked, in the superproject and inside submodules) with a
//! BLAKE3 of their current content. Every path in it is relative to the checkout, `/`-separated.
//!
//! Why the `git` CLI and not a library such as `gix`: git's own plumbing (`ls-tree -z`, `status
//! --porcelain=v2 -z`, `config -z`) has stable, documented machine formats, honours every
//! repository setting (worktrees, `safe.directory`, sparse checkouts, alternates, fsmonitor,
//! untracked cache) exactly as the user's git does, and costs no dependency. Snapshotting runs five
//! git commands, plus one `status` per submodule with changes of its own and one `rev-parse` per
//! moved submodule, independent of the number of artifacts. `git submodule status` is avoided on
//! purpose: it runs `git describe` in every submodule, which can take seconds on a full
//! llvm-project clone; the porcelain v2 submodule flags tell which submodules need a closer look.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Blake3;

/// Why a checkout could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The path does not exist or is not a directory.
    #[error("checkout `{0}` is not a directory")]
    NotADirectory(PathBuf),
    /// The directory is not inside a git work tree.
    #[error("checkout `{0}` is not a git repository")]
    NotARepository(PathBuf),
    /// The directory is inside a git work tree but not at its top.
    #[error("checkout `{path}` is not the top of its git work tree (the top is `{top}`)")]
    NotTopLevel {
        /// The directory given.
        path: PathBuf,
        /// The work tree's top.
        top: PathBuf,
    },
    /// The repository has no commit yet.
    #[error("checkout `{0}` has no commit at HEAD")]
    NoCommit(PathBuf),
    /// git could not be started.
    #[error("cannot run `git`: {0} (is git installed and on PATH?)")]
    Spawn(std::io::Error),
    /// A git command failed.
    #[error("`git {args}` failed in `{dir}`: {stderr}")]
    Command {
        /// The arguments, space-joined.
        args: String,
        /// Where it ran.
        dir: PathBuf,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// git printed something this module does not understand.
    #[error("cannot parse the output of `git {args}`: `{line}`")]
    Parse {
        /// The arguments, space-joined.
        args: String,
        /// The offending record (truncated).
        line: String,
    },
    /// A revision that names no commit in the repository.
    #[error("`{rev}` names no commit in `{dir}` (fetch it, or check the spelling)")]
    UnknownRevision {
        /// The revision given.
        rev: String,
        /// The repository.
        dir: PathBuf,
    },
    /// A path that is not a submodule (gitlink) in the superproject's tree.
    #[error("`{path}` is not a submodule of the superproject at {commit} (no gitlink there)")]
    NotASubmodule {
        /// The path given.
        path: String,
        /// The superproject commit.
        commit: String,
    },
    /// A dirty file could not be read for hashing.
    #[error("cannot read `{path}` to hash it: {error}")]
    Read {
        /// The file, relative to the checkout.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// One blob or gitlink of the superproject's `HEAD` tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeItem {
    /// The git mode (`100644`, `100755`, `120000`, `160000`).
    pub mode: String,
    /// The object id (blob id, or the commit of a gitlink).
    pub oid: String,
}

impl TreeItem {
    /// Whether this entry is a submodule (gitlink).
    pub fn is_gitlink(&self) -> bool {
        self.mode == "160000"
    }
}

/// A submodule declared in `.gitmodules`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submodule {
    /// The name (`[submodule "NAME"]`), which TheRock's topology uses.
    pub name: String,
    /// Its path in the superproject.
    pub path: String,
    /// The commit checked out in it (`HEAD`'s gitlink unless moved; also the gitlink when not
    /// initialized; `deleted` when its directory is gone); `None` when `HEAD` has no gitlink there.
    pub commit: Option<String>,
    /// Nested submodules whose checked-out commit differs from the gitlink recorded by the
    /// enclosing submodule: path (relative to the checkout) → commit. Unmoved nested submodules
    /// are implied by the enclosing commit.
    pub nested: BTreeMap<String, String>,
}

/// The current content of a path git reports as changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirtyContent {
    /// A regular file: executable bit and BLAKE3 of its bytes.
    File {
        /// Whether any execute bit is set.
        executable: bool,
        /// BLAKE3 of the content.
        digest: Blake3,
    },
    /// A symbolic link: BLAKE3 of its target.
    Symlink(Blake3),
    /// An untracked directory git did not descend into (a nested repository).
    Directory,
    /// The path no longer exists.
    Deleted,
}

impl std::fmt::Display for DirtyContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirtyContent::File {
                executable: true,
                digest,
            } => write!(f, "file:755:{digest}"),
            DirtyContent::File {
                executable: false,
                digest,
            } => write!(f, "file:644:{digest}"),
            DirtyContent::Symlink(d) => write!(f, "symlink:{d}"),
            DirtyContent::Directory => f.write_str("directory"),
            DirtyContent::Deleted => f.write_str("deleted"),
        }
    }
}

/// What fingerprints need from a checkout, read once.
#[derive(Debug, Clone)]
pub struct GitSnapshot {
    /// The superproject's `HEAD` commit.
    pub head: String,
    /// Every blob and gitlink of `HEAD`'s tree, by path.
    pub tree: BTreeMap<String, TreeItem>,
    /// Submodules by name.
    pub submodules: BTreeMap<String, Submodule>,
    /// Changed paths (superproject and submodules) with their current content, by path.
    pub dirty: BTreeMap<String, DirtyContent>,
}

impl GitSnapshot {
    /// Read `checkout`, which must be the top of a git work tree with at least one commit.
    pub fn read(checkout: &Path) -> Result<GitSnapshot, GitError> {
        if !checkout.is_dir() {
            return Err(GitError::NotADirectory(checkout.to_path_buf()));
        }
        let top = toplevel(checkout)?;
        let same = match (top.canonicalize(), checkout.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if !same {
            return Err(GitError::NotTopLevel {
                path: checkout.to_path_buf(),
                top,
            });
        }
        let head = match git(checkout, &["rev-parse", "--verify", "-q", "HEAD^{commit}"]) {
            Ok(out) => String::from_utf8_lossy(&out).trim().to_string(),
            Err(GitError::Command { .. }) => {
                return Err(GitError::NoCommit(checkout.to_path_buf()));
            }
            Err(e) => return Err(e),
        };
        let tree = read_tree(checkout, "HEAD")?;
        let mut work = WorkState::default();
        read_dirty(checkout, checkout, "", &mut work)?;
        let gitmodules = if checkout.join(".gitmodules").is_file() {
            Gitmodules::WorkTree
        } else {
            Gitmodules::None
        };
        let submodules = read_submodules(checkout, gitmodules, &tree, &work.moved)?;
        let dirty = work.dirty;
        Ok(GitSnapshot {
            head,
            tree,
            submodules,
            dirty,
        })
    }

    /// The committed state of `rev` in the repository at `checkout`, read without checking anything
    /// out: `rev`'s tree, the submodules its `.gitmodules` declares with the commits its gitlinks
    /// record, and no dirty file (local changes never describe another commit).
    pub fn at_commit(checkout: &Path, rev: &str) -> Result<GitSnapshot, GitError> {
        let head = rev_parse_commit(checkout, rev)?.ok_or_else(|| GitError::UnknownRevision {
            rev: rev.to_string(),
            dir: checkout.to_path_buf(),
        })?;
        let tree = read_tree(checkout, &head)?;
        let gitmodules = if tree.contains_key(".gitmodules") {
            Gitmodules::Blob(format!("{head}:.gitmodules"))
        } else {
            Gitmodules::None
        };
        let submodules = read_submodules(checkout, gitmodules, &tree, &BTreeMap::new())?;
        Ok(GitSnapshot {
            head,
            tree,
            submodules,
            dirty: BTreeMap::new(),
        })
    }

    /// This snapshot with the submodule at `path` (a path, or a `.gitmodules` name) moved to
    /// `commit`: its gitlink and checked-out commit replaced, its moved nested submodules dropped
    /// (they are implied by `commit`). [`GitError::NotASubmodule`] when `path` has no gitlink.
    pub fn with_gitlink(&self, path: &str, commit: &str) -> Result<GitSnapshot, GitError> {
        let sub_path = self.submodule_path(path)?;
        let mut out = self.clone();
        if let Some(item) = out.tree.get_mut(&sub_path) {
            item.oid = commit.to_string();
        }
        for sub in out.submodules.values_mut().filter(|s| s.path == sub_path) {
            sub.commit = Some(commit.to_string());
            sub.nested.clear();
        }
        out.dirty.retain(|p, _| !is_under(p, &sub_path));
        Ok(out)
    }

    /// The gitlink path of the submodule `path_or_name` names (its path, else its `.gitmodules`
    /// name).
    pub fn submodule_path(&self, path_or_name: &str) -> Result<String, GitError> {
        let trimmed = path_or_name.trim_end_matches('/');
        if self.tree.get(trimmed).is_some_and(TreeItem::is_gitlink) {
            return Ok(trimmed.to_string());
        }
        match self.submodules.get(trimmed) {
            Some(sub) if self.tree.get(&sub.path).is_some_and(TreeItem::is_gitlink) => {
                Ok(sub.path.clone())
            }
            _ => Err(GitError::NotASubmodule {
                path: path_or_name.to_string(),
                commit: self.head.clone(),
            }),
        }
    }

    /// The submodule whose path contains `path` (the deepest top-level one), if any.
    pub fn submodule_of(&self, path: &str) -> Option<&Submodule> {
        self.submodules
            .values()
            .filter(|s| is_under(path, &s.path))
            .max_by_key(|s| s.path.len())
    }
}

/// Whether `path` is `dir` or inside it.
pub(crate) fn is_under(path: &str, dir: &str) -> bool {
    path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// The top of the git work tree that contains `dir` (`git rev-parse --show-toplevel`).
/// [`GitError::NotARepository`] when `dir` is not inside one.
pub fn toplevel(dir: &Path) -> Result<PathBuf, GitError> {
    match git(dir, &["rev-parse", "--show-toplevel"]) {
        Ok(out) => Ok(PathBuf::from(
            String::from_utf8_lossy(&out).trim_end_matches('\n'),
        )),
        Err(GitError::Command { stderr, .. }) if stderr.contains("not a git repository") => {
            Err(GitError::NotARepository(dir.to_path_buf()))
        }
        Err(e) => Err(e),
    }
}

/// The full SHA of the commit `rev` names in the repository around `dir` (`git rev-parse --verify
/// -q REV^{commit}`); `None` when `rev` names no commit there.
pub fn rev_parse_commit(dir: &Path, rev: &str) -> Result<Option<String>, GitError> {
    let out = git_answer(
        dir,
        &["rev-parse", "--verify", "-q", &format!("{rev}^{{commit}}")],
    )?;
    Ok(out.map(|o| String::from_utf8_lossy(&o).trim().to_string()))
}

/// Whether `ancestor` is an ancestor of `descendant` or the same commit (`git merge-base
/// --is-ancestor`).
pub fn is_ancestor(dir: &Path, ancestor: &str, descendant: &str) -> Result<bool, GitError> {
    Ok(git_answer(dir, &["merge-base", "--is-ancestor", ancestor, descendant])?.is_some())
}

/// The best common ancestor of `a` and `b` (`git merge-base`); `None` when their histories are
/// unrelated.
pub fn merge_base(dir: &Path, a: &str, b: &str) -> Result<Option<String>, GitError> {
    let out = git_answer(dir, &["merge-base", a, b])?;
    Ok(out.map(|o| String::from_utf8_lossy(&o).trim().to_string()))
}

/// Up to `max` commits of the first-parent history of `from`, newest first, `from` included (`git
/// rev-list --first-parent --max-count=MAX FROM`).
pub fn first_parent_log(dir: &Path, from: &str, max: usize) -> Result<Vec<String>, GitError> {
    let out = git(
        dir,
        &[
            "rev-list",
            "--first-parent",
            &format!("--max-count={max}"),
            from,
        ],
    )?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// One commit of a history: its full SHA and the first line of its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The full SHA.
    pub commit: String,
    /// The subject line.
    pub subject: String,
}

/// The first-parent commits after `good` up to and including `bad`, oldest first (`git log
/// --first-parent --reverse GOOD..BAD`): the candidates of a bisection. Both must name commits.
pub fn first_parent_range(dir: &Path, good: &str, bad: &str) -> Result<Vec<LogEntry>, GitError> {
    const ARGS: &str = "log --first-parent --reverse --format=%H%x00%s GOOD..BAD";
    let mut ids = Vec::with_capacity(2);
    for rev in [good, bad] {
        ids.push(
            rev_parse_commit(dir, rev)?.ok_or_else(|| GitError::UnknownRevision {
                rev: rev.to_string(),
                dir: dir.to_path_buf(),
            })?,
        );
    }
    let range = format!("{}..{}", ids[0], ids[1]);
    let out = git(
        dir,
        &[
            "log",
            "--first-parent",
            "--reverse",
            "--format=%H%x00%s",
            &range,
        ],
    )?;
    let mut entries = Vec::new();
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let text = utf8(ARGS, line)?;
        let (commit, subject) = text
            .split_once('\0')
            .ok_or_else(|| parse_error(ARGS, line))?;
        entries.push(LogEntry {
            commit: commit.to_string(),
            subject: subject.to_string(),
        });
    }
    Ok(entries)
}

/// The content of the blob `oid` (`git cat-file blob OID`), e.g. a file of a [`GitSnapshot::tree`].
pub fn read_blob(dir: &Path, oid: &str) -> Result<Vec<u8>, GitError> {
    git(dir, &["cat-file", "blob", oid])
}

/// The URL of the remote `name` of the repository around `dir` (`git remote get-url NAME`); an
/// error when there is no such remote or no repository.
pub fn remote_url(dir: &Path, name: &str) -> Result<String, GitError> {
    let out = git(dir, &["remote", "get-url", name])?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// Run git in `dir`. The environment variables that would redirect git to another repository are
/// removed, and optional locks are off so reading never writes the index.
fn spawn(dir: &Path, args: &[&str]) -> Result<std::process::Output, GitError> {
    if !dir.is_dir() {
        return Err(GitError::NotADirectory(dir.to_path_buf()));
    }
    Command::new("git")
        .current_dir(dir)
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_COMMON_DIR")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("LC_ALL", "C")
        .output()
        .map_err(GitError::Spawn)
}

fn command_error(dir: &Path, args: &[&str], out: &std::process::Output) -> GitError {
    GitError::Command {
        args: args.join(" "),
        dir: dir.to_path_buf(),
        stderr: String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', "; "),
    }
}

/// Run git in `dir` and return its stdout; any failure is an error.
fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, GitError> {
    let out = spawn(dir, args)?;
    if !out.status.success() {
        return Err(command_error(dir, args, &out));
    }
    Ok(out.stdout)
}

/// Run git in `dir` for an answer that may be "no": its stdout when it exits 0, `None` when it
/// exits 1 (git's "no" for `rev-parse --verify -q` and `merge-base`); any other failure (not a
/// repository, an unknown object) is an error.
fn git_answer(dir: &Path, args: &[&str]) -> Result<Option<Vec<u8>>, GitError> {
    let out = spawn(dir, args)?;
    match out.status.code() {
        Some(0) => Ok(Some(out.stdout)),
        Some(1) => Ok(None),
        _ => Err(command_error(dir, args, &out)),
    }
}

fn parse_error(args: &str, record: &[u8]) -> GitError {
    GitError::Parse {
        args: args.to_string(),
        line: String::from_utf8_lossy(record).chars().take(120).collect(),
    }
}

fn utf8(args: &str, record: &[u8]) -> Result<String, GitError> {
    String::from_utf8(record.to_vec()).map_err(|_| parse_error(args, record))
}

/// `git ls-tree -r -z --full-tree REV`: `<mode> <type> <oid>\t<path>` records.
fn read_tree(checkout: &Path, rev: &str) -> Result<BTreeMap<String, TreeItem>, GitError> {
    const ARGS: &str = "ls-tree -r -z --full-tree REV";
    let out = git(checkout, &["ls-tree", "-r", "-z", "--full-tree", rev])?;
    let mut tree = BTreeMap::new();
    for record in out.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let record = utf8(ARGS, record)?;
        let (meta, path) = record
            .split_once('\t')
            .ok_or_else(|| parse_error(ARGS, record.as_bytes()))?;
        let mut fields = meta.split(' ');
        let (Some(mode), Some(_kind), Some(oid), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(parse_error(ARGS, record.as_bytes()));
        };
        tree.insert(
            path.to_string(),
            TreeItem {
                mode: mode.to_string(),
                oid: oid.to_string(),
            },
        );
    }
    Ok(tree)
}

/// Where `.gitmodules` is read from.
enum Gitmodules {
    /// None: no submodules.
    None,
    /// The work tree's file (the checkout as it is).
    WorkTree,
    /// A blob, `COMMIT:.gitmodules` (a commit not checked out).
    Blob(String),
}

/// `.gitmodules` names and paths; each submodule's commit is the tree's gitlink unless `moved`
/// (path → checked-out commit) says otherwise.
fn read_submodules(
    checkout: &Path,
    gitmodules: Gitmodules,
    tree: &BTreeMap<String, TreeItem>,
    moved: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Submodule>, GitError> {
    let (source_flag, source) = match &gitmodules {
        Gitmodules::None => return Ok(BTreeMap::new()),
        Gitmodules::WorkTree => ("--file", ".gitmodules"),
        Gitmodules::Blob(spec) => ("--blob", spec.as_str()),
    };
    const ARGS: &str = "config -z --file .gitmodules --get-regexp ^submodule\\..*\\.path$";
    let out = match git(
        checkout,
        &[
            "config",
            "-z",
            source_flag,
            source,
            "--get-regexp",
            r"^submodule\..*\.path$",
        ],
    ) {
        Ok(out) => out,
        // Exit status 1: no submodule has a path.
        Err(GitError::Command { stderr, .. }) if stderr.is_empty() => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut submodules = BTreeMap::new();
    for record in out.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let record = utf8(ARGS, record)?;
        let (key, path) = record
            .split_once('\n')
            .ok_or_else(|| parse_error(ARGS, record.as_bytes()))?;
        let name = key
            .strip_prefix("submodule.")
            .and_then(|k| k.strip_suffix(".path"))
            .ok_or_else(|| parse_error(ARGS, record.as_bytes()))?;
        let path = path.trim_end_matches('/').to_string();
        let commit = tree
            .get(&path)
            .filter(|t| t.is_gitlink())
            .map(|t| t.oid.clone());
        submodules.insert(
            name.to_string(),
            Submodule {
                name: name.to_string(),
                path,
                commit,
                nested: BTreeMap::new(),
            },
        );
    }
    // A submodule whose checked-out commit differs from `HEAD`'s gitlink (moved without a
    // superproject commit) is built from what is checked out; nested submodules only count when
    // moved, since otherwise their commit is fixed by the enclosing submodule's commit.
    for (path, commit) in moved {
        if let Some(top) = submodules.values_mut().find(|s| s.path == *path) {
            top.commit = Some(commit.clone());
        } else if let Some(top) = submodules
            .values_mut()
            .filter(|s| is_under(path, &s.path))
            .max_by_key(|s| s.path.len())
        {
            top.nested.insert(path.clone(), commit.clone());
        }
    }
    Ok(submodules)
}

/// What differs between the work tree and `HEAD`.
#[derive(Debug, Default)]
struct WorkState {
    /// Changed paths with their current content.
    dirty: BTreeMap<String, DirtyContent>,
    /// Submodules (top-level or nested, by path) whose checked-out commit is not the recorded
    /// gitlink, with the commit checked out (or `deleted`).
    moved: BTreeMap<String, String>,
}

/// `git status --porcelain=v2 -z` in `repo` (the checkout or a submodule at `prefix/`), recursing
/// into submodules that report modified or untracked content.
fn read_dirty(
    checkout: &Path,
    repo: &Path,
    prefix: &str,
    work: &mut WorkState,
) -> Result<(), GitError> {
    const ARGS: &str = "status --porcelain=v2 -z --untracked-files=all --ignore-submodules=none";
    let out = git(
        repo,
        &[
            "status",
            "--porcelain=v2",
            "-z",
            "--untracked-files=all",
            "--ignore-submodules=none",
        ],
    )?;
    let mut records = out.split(|&b| b == 0).filter(|r| !r.is_empty());
    let join = |p: &str| {
        if prefix.is_empty() {
            p.to_string()
        } else {
            format!("{prefix}/{p}")
        }
    };
    while let Some(record) = records.next() {
        let text = utf8(ARGS, record)?;
        let (kind, fields_before_path) = match text.as_bytes()[0] {
            b'1' => ('1', 8),
            b'2' => ('2', 9),
            b'u' => ('u', 10),
            b'?' => ('?', 1),
            b'#' | b'!' => continue,
            _ => return Err(parse_error(ARGS, record)),
        };
        let mut parts = text.splitn(fields_before_path + 1, ' ');
        let fields: Vec<&str> = parts.by_ref().take(fields_before_path).collect();
        let path = parts.next().ok_or_else(|| parse_error(ARGS, record))?;
        if kind == '2' {
            // A rename or copy: the next record is the original path, which changed too.
            let orig = records.next().ok_or_else(|| parse_error(ARGS, record))?;
            let orig = utf8(ARGS, orig)?;
            let full = join(&orig);
            let content = hash_path(checkout, &full)?;
            work.dirty.insert(full, content);
        }
        let sub = if kind == '?' {
            "N..."
        } else {
            fields.get(2).copied().unwrap_or("N...")
        };
        if sub.starts_with('S') {
            // A submodule: `S<c><m><u>` says whether its checked-out commit differs from the
            // index (c), and whether it has tracked (m) or untracked (u) changes of its own.
            let flags = sub.as_bytes();
            let xy = fields.get(1).map(|f| f.as_bytes()).unwrap_or(b"..");
            let sub_prefix = join(path);
            let dir = checkout.join(&sub_prefix);
            if xy.get(1) == Some(&b'D') {
                work.moved.insert(sub_prefix.clone(), "deleted".to_string());
            } else if (flags.get(1) == Some(&b'C') || xy.first() != Some(&b'.'))
                && dir.join(".git").exists()
            {
                let out = git(&dir, &["rev-parse", "--verify", "-q", "HEAD^{commit}"])?;
                work.moved.insert(
                    sub_prefix.clone(),
                    String::from_utf8_lossy(&out).trim().to_string(),
                );
            }
            if flags.get(2) == Some(&b'M') || flags.get(3) == Some(&b'U') {
                read_dirty(checkout, &dir, &sub_prefix, work)?;
            }
            continue;
        }
        let full = join(path.trim_end_matches('/'));
        let content = hash_path(checkout, &full)?;
        work.dirty.insert(full, content);
    }
    Ok(())
}

/// The current content of `rel` under `checkout`.
fn hash_path(checkout: &Path, rel: &str) -> Result<DirtyContent, GitError> {
    let path = checkout.join(rel);
    let read_err = |error| GitError::Read {
        path: rel.to_string(),
        error,
    };
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DirtyContent::Deleted),
        Err(e) => return Err(read_err(e)),
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&path).map_err(read_err)?;
        return Ok(DirtyContent::Symlink(Blake3::of(
            target.as_os_str().as_encoded_bytes(),
        )));
    }
    if meta.is_dir() {
        return Ok(DirtyContent::Directory);
    }
    let mut hasher = blake3::Hasher::new();
    let mut file = std::fs::File::open(&path).map_err(read_err)?;
    std::io::copy(&mut file, &mut hasher).map_err(read_err)?;
    Ok(DirtyContent::File {
        executable: is_executable(&meta),
        digest: hasher.finalize().into(),
    })
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run git for a fixture (tests only; the product runs git through `cairn_fingerprint::git`).
    fn setup(dir: &Path, args: &[&str]) -> String {
        cairn_test_helpers::gitrepo::git(dir, args)
    }

    /// main: c0 - c1 - c2; branch `side` off c1 with one commit s1. Returns (dir, [c0, c1, c2], s1).
    fn history() -> (tempfile::TempDir, Vec<String>, String) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        std::fs::create_dir_all(root.join("sub/dir")).unwrap();
        setup(&root, &["init", "-q"]);
        let mut main = Vec::new();
        for i in 0..3 {
            std::fs::write(root.join("f"), format!("{i}\n")).unwrap();
            setup(&root, &["add", "-A"]);
            setup(&root, &["commit", "-q", "-m", &format!("c{i}")]);
            main.push(setup(&root, &["rev-parse", "HEAD"]));
        }
        setup(&root, &["checkout", "-q", "-b", "side", &main[1]]);
        std::fs::write(root.join("s"), "side\n").unwrap();
        setup(&root, &["add", "-A"]);
        setup(&root, &["commit", "-q", "-m", "s1"]);
        let side = setup(&root, &["rev-parse", "HEAD"]);
        setup(&root, &["checkout", "-q", "main"]);
        (tmp, main, side)
    }

    #[test]
    fn toplevel_from_a_subdirectory_and_outside_any_repository() {
        let (tmp, _, _) = history();
        let root = tmp.path().join("repo");
        let top = toplevel(&root.join("sub/dir")).unwrap();
        assert_eq!(top.canonicalize().unwrap(), root.canonicalize().unwrap());
        let outside = tmp.path().join("plain");
        std::fs::create_dir(&outside).unwrap();
        assert!(matches!(
            toplevel(&outside),
            Err(GitError::NotARepository(_))
        ));
        assert!(matches!(
            toplevel(&tmp.path().join("missing")),
            Err(GitError::NotADirectory(_))
        ));
    }

    #[test]
    fn revisions_ancestry_and_first_parent_history() {
        let (tmp, main, side) = history();
        let root = tmp.path().join("repo");
        assert_eq!(
            rev_parse_commit(&root, "main").unwrap().as_ref(),
            Some(&main[2])
        );
        assert_eq!(
            rev_parse_commit(&root, "side~1").unwrap().as_ref(),
            Some(&main[1])
        );
        assert_eq!(rev_parse_commit(&root, "no-such-branch").unwrap(), None);
        assert!(is_ancestor(&root, &main[0], "main").unwrap());
        assert!(!is_ancestor(&root, &side, "main").unwrap());
        assert_eq!(
            merge_base(&root, &side, "main").unwrap().as_ref(),
            Some(&main[1])
        );
        let log = first_parent_log(&root, "main", 2).unwrap();
        assert_eq!(log, [main[2].clone(), main[1].clone()]);
        assert_eq!(first_parent_log(&root, "side", 10).unwrap().len(), 3);
        let range = first_parent_range(&root, &main[0], "main").unwrap();
        let commits: Vec<&str> = range.iter().map(|e| e.commit.as_str()).collect();
        assert_eq!(commits, [main[1].as_str(), main[2].as_str()]);
        assert_eq!(range[1].subject, "c2");
        assert!(
            first_parent_range(&root, "main", &main[0])
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            first_parent_range(&root, "nope", "main"),
            Err(GitError::UnknownRevision { .. })
        ));
        assert!(remote_url(&root, "origin").is_err());
        setup(
            &root,
            &["remote", "add", "origin", "git@github.com:ROCm/TheRock.git"],
        );
        assert_eq!(
            remote_url(&root, "origin").unwrap(),
            "git@github.com:ROCm/TheRock.git"
        );
        // Outside a repository every question is an error, not a "no".
        let outside = tmp.path().join("plain");
        std::fs::create_dir(&outside).unwrap();
        assert!(rev_parse_commit(&outside, "HEAD").is_err());
        assert!(is_ancestor(&outside, "a", "b").is_err());
    }
}
