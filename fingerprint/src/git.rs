//! Reading a git checkout: the only module that runs git.
//!
//! A [`GitSnapshot`] is everything fingerprints need from a checkout, read once: the superproject's
//! `HEAD` tree (every blob and gitlink with its mode and object id), the submodules (`.gitmodules`
//! name → path, and the commit actually checked out in each, nested ones included), and the dirty
//! files (staged, unstaged and untracked, in the superproject and inside submodules) with a BLAKE3
//! of their current content. Every path in it is relative to the checkout, `/`-separated.
//!
//! Why the `git` CLI and not a library such as `gix`: git's own plumbing (`ls-tree`, `status
//! --porcelain=v2 -z`, `submodule status`) has stable, documented machine formats, honours every
//! repository setting (worktrees, `safe.directory`, sparse checkouts, alternates, fsmonitor) exactly
//! as the user's git does, and costs no dependency. Snapshotting runs a fixed number of git
//! commands (five, plus one `status` per *dirty* submodule), independent of the number of
//! artifacts, so a whole topology is fingerprinted in tens of milliseconds.

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
    /// The commit checked out in it, or the gitlink of `HEAD` when it is not initialized; `None`
    /// when the path is in neither.
    pub commit: Option<String>,
    /// Nested submodules: path (relative to the checkout) → checked-out commit.
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
        let top = match git(checkout, &["rev-parse", "--show-toplevel"]) {
            Ok(out) => PathBuf::from(String::from_utf8_lossy(&out).trim_end_matches('\n')),
            Err(GitError::Command { stderr, .. }) if stderr.contains("not a git repository") => {
                return Err(GitError::NotARepository(checkout.to_path_buf()));
            }
            Err(e) => return Err(e),
        };
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
        let tree = read_tree(checkout)?;
        let submodules = read_submodules(checkout, &tree)?;
        let mut dirty = BTreeMap::new();
        read_dirty(checkout, checkout, "", &mut dirty)?;
        Ok(GitSnapshot {
            head,
            tree,
            submodules,
            dirty,
        })
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

/// Run git in `dir` and return its stdout. The environment variables that would redirect git to
/// another repository are removed, and optional locks are off so reading never writes the index.
fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, GitError> {
    let out = Command::new("git")
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
        .map_err(GitError::Spawn)?;
    if !out.status.success() {
        return Err(GitError::Command {
            args: args.join(" "),
            dir: dir.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', "; "),
        });
    }
    Ok(out.stdout)
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

/// `git ls-tree -r -z --full-tree HEAD`: `<mode> <type> <oid>\t<path>` records.
fn read_tree(checkout: &Path) -> Result<BTreeMap<String, TreeItem>, GitError> {
    const ARGS: &str = "ls-tree -r -z --full-tree HEAD";
    let out = git(checkout, &["ls-tree", "-r", "-z", "--full-tree", "HEAD"])?;
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

/// `.gitmodules` names and paths, plus checked-out commits from `git submodule status --recursive`.
fn read_submodules(
    checkout: &Path,
    tree: &BTreeMap<String, TreeItem>,
) -> Result<BTreeMap<String, Submodule>, GitError> {
    if !checkout.join(".gitmodules").is_file() {
        return Ok(BTreeMap::new());
    }
    const ARGS: &str = "config -z --file .gitmodules --get-regexp ^submodule\\..*\\.path$";
    let out = match git(
        checkout,
        &[
            "config",
            "-z",
            "--file",
            ".gitmodules",
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
    if submodules.is_empty() {
        return Ok(submodules);
    }
    // `<flag><sha> <path>[ (<describe>)]` per line; flag ' ' in sync, '+' other commit checked out,
    // '-' not initialized (sha = gitlink), 'U' merge conflict. Paths are relative to the checkout.
    const STATUS: &str = "submodule status --recursive";
    let out = git(checkout, &["submodule", "status", "--recursive"])?;
    for line in String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| !l.is_empty())
    {
        let flag = line.as_bytes()[0];
        let rest = &line[1..];
        let (sha, path) = rest
            .split_once(' ')
            .ok_or_else(|| parse_error(STATUS, line.as_bytes()))?;
        if !(sha.len() == 40 || sha.len() == 64) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(parse_error(STATUS, line.as_bytes()));
        }
        let path = match path.rfind(" (") {
            Some(i) if path.ends_with(')') => &path[..i],
            _ => path,
        };
        if let Some(top) = submodules.values_mut().find(|s| s.path == path) {
            if flag != b'-' || top.commit.is_none() {
                top.commit = Some(sha.to_string());
            }
        } else if let Some(top) = submodules
            .values_mut()
            .filter(|s| is_under(path, &s.path))
            .max_by_key(|s| s.path.len())
        {
            top.nested.insert(path.to_string(), sha.to_string());
        }
    }
    Ok(submodules)
}

/// `git status --porcelain=v2 -z` in `repo` (the checkout or a submodule at `prefix/`), recursing
/// into submodules that report modified or untracked content.
fn read_dirty(
    checkout: &Path,
    repo: &Path,
    prefix: &str,
    dirty: &mut BTreeMap<String, DirtyContent>,
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
            dirty.insert(full, content);
        }
        let sub = if kind == '?' {
            "N..."
        } else {
            fields.get(2).copied().unwrap_or("N...")
        };
        if sub.starts_with('S') {
            // A submodule: its commit is read by `submodule status`; its own changes by recursion.
            let flags = sub.as_bytes();
            if flags.get(2) == Some(&b'M') || flags.get(3) == Some(&b'U') {
                let sub_prefix = join(path);
                read_dirty(checkout, &checkout.join(&sub_prefix), &sub_prefix, dirty)?;
            }
            continue;
        }
        let full = join(path.trim_end_matches('/'));
        let content = hash_path(checkout, &full)?;
        dirty.insert(full, content);
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
