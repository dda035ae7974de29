//! Git repositories built from scratch for tests: git run with a fixed identity, `main` as the
//! initial branch, local-file submodules allowed, and neither the user's nor the system's git
//! configuration read, so a test behaves the same on every machine.
//!
//! ```no_run
//! use cairn_test_helpers::gitrepo::GitRepo;
//!
//! let dir = std::path::Path::new("/tmp/example");
//! let upstream = GitRepo::init(dir.join("upstream/alpha"));
//! upstream.write("src.txt", "alpha\n").commit_all("init");
//! let root = GitRepo::init(dir.join("TheRock"));
//! root.write("BUILD_TOPOLOGY.toml", "").add_submodule(&upstream.path, "alpha");
//! let head = root.commit_all("init");
//! assert_eq!(head.len(), 40);
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `git` in `dir`, configured for tests (identity, branch name, file protocol, no user or system
/// configuration). Add the arguments and run it.
pub fn git_command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args([
            "-c",
            "protocol.file.allow=always",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "advice.detachedHead=false",
        ])
        .env("GIT_AUTHOR_NAME", "Cairn Test")
        .env("GIT_AUTHOR_EMAIL", "cairn@example.invalid")
        .env("GIT_COMMITTER_NAME", "Cairn Test")
        .env("GIT_COMMITTER_EMAIL", "cairn@example.invalid")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    cmd
}

/// Run git with `args` in `dir`; its stdout, trimmed. An error (naming the command, the directory
/// and git's stderr) when git cannot run or fails.
pub fn try_git(dir: &Path, args: &[&str]) -> io::Result<String> {
    let out = git_command(dir).args(args).output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("running git {args:?} in `{}`: {e}", dir.display()),
        )
    })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "git {args:?} in `{}` failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// [`try_git`], panicking on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    try_git(dir, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Write `text` to `path`, creating its parent directories.
pub fn write_file(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("creating `{}`: {e}", parent.display()));
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing `{}`: {e}", path.display()));
}

/// A git work tree under test. Every method panics when git fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRepo {
    /// The work tree.
    pub path: PathBuf,
}

impl GitRepo {
    /// Create `path` (and its parents) and `git init` it.
    pub fn init(path: impl Into<PathBuf>) -> GitRepo {
        let path = path.into();
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating `{}`: {e}", path.display()));
        git(&path, &["init", "-q"]);
        GitRepo { path }
    }

    /// An existing work tree (a clone, a submodule checkout).
    pub fn open(path: impl Into<PathBuf>) -> GitRepo {
        GitRepo { path: path.into() }
    }

    /// Run git with `args` in the work tree; its stdout, trimmed.
    pub fn git(&self, args: &[&str]) -> String {
        git(&self.path, args)
    }

    /// Write a file at `rel` (parents created); not staged.
    pub fn write(&self, rel: &str, text: &str) -> &GitRepo {
        write_file(&self.path.join(rel), text);
        self
    }

    /// `git add -A` and commit with `message`; the new HEAD.
    pub fn commit_all(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.head()
    }

    /// The HEAD commit id.
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// `git submodule add` the repository at `upstream` at `path` (the submodule's name is `path`).
    pub fn add_submodule(&self, upstream: &Path, path: &str) -> &GitRepo {
        self.git(&["submodule", "add", "-q", utf8(upstream), path]);
        self
    }

    /// `git submodule add --name name` the repository at `upstream` at `path`.
    pub fn add_submodule_named(&self, name: &str, upstream: &Path, path: &str) -> &GitRepo {
        self.git(&[
            "submodule",
            "add",
            "-q",
            "--name",
            name,
            utf8(upstream),
            path,
        ]);
        self
    }
}

fn utf8(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("`{}` is not UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_superproject_with_a_submodule() {
        let dir = std::env::temp_dir().join(format!("cairn-gitrepo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let up = GitRepo::init(dir.join("upstream/alpha"));
        let first = up.write("src.txt", "v1\n").commit_all("v1");
        assert_eq!(first.len(), 40);
        let root = GitRepo::init(dir.join("TheRock"));
        root.write("a/b.txt", "x\n")
            .add_submodule_named("alpha", &up.path, "deps/alpha");
        let head = root.commit_all("init");
        assert_eq!(root.head(), head);
        let gitlink = root.git(&["ls-tree", "HEAD", "deps/alpha"]);
        assert!(
            gitlink.starts_with("160000 commit ") && gitlink.contains(&first),
            "{gitlink}"
        );
        assert_eq!(
            root.git(&["log", "-1", "--format=%an <%ae>"]),
            "Cairn Test <cairn@example.invalid>"
        );
        assert_eq!(root.git(&["branch", "--show-current"]), "main");
        let err = try_git(&root.path, &["rev-parse", "--verify", "-q", "nope"]).unwrap_err();
        assert!(err.to_string().contains("\"rev-parse\""), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
