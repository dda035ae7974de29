//! `cairn bisect`: find the first bad commit of a history by testing CI-built artifacts instead of
//! building, each step incremental, the possible next steps prefetched.
//!
//! - [`candidates`]: what is bisected ([`History`]: the superproject, or one submodule with the
//!   superproject fixed at `HEAD`) and each candidate's fingerprints, computed from git objects
//!   without checking anything out;
//! - [`algorithm`]: the bisection over the candidate list, pure (skips handled like `git bisect`);
//! - [`probe`]: one candidate's request, its missing artifacts, and the user's command with its exit
//!   status read like `git bisect run`;
//! - [`session`]: the loop — per probe: resolve (missing → skip, or `--nearest` substitutes from
//!   ancestors), fetch and materialize into the one build dir (bootstrap layout, incremental), start
//!   the prefetch of both possible next probes, run the command; the session log after each step;
//! - [`github`]: `--github`, the commit → run lookup of `cairn find` for commits without Cairn
//!   records, whose run's artifacts are taken by name (unverified);
//! - [`prefetch`]: making candidates' artifacts local without materializing (`cairn prefetch`);
//! - [`report`]: the `cairn-bisect-v1` report and its table.
//!
//! **The repository is never touched.** Cairn does the bisection itself instead of driving `git
//! bisect`: candidates come from `git log --first-parent`, fingerprints from `ls-tree` and
//! `cat-file`, so the user's work tree, index, `HEAD` and `refs/bisect/*` are left as they were, and
//! an interrupted bisect has nothing to reset. The build dir is written only by the materializer,
//! which stops at a file boundary on SIGINT/SIGTERM with `.prebuilt` markers only over complete
//! stage dirs.

pub mod algorithm;
pub mod candidates;
pub mod github;
pub mod prefetch;
pub mod probe;
pub mod report;
pub mod session;

use std::path::PathBuf;

use cairn_fingerprint::{FingerprintError, GitError, TopologyError};

use crate::api::ClientError;

pub use algorithm::{Bisection, Next, Outcome, Verdict};
pub use candidates::{History, HistorySpec, Selection, Subject};
pub use report::Report;

/// Why a bisect (or prefetch) could not run.
#[derive(Debug, thiserror::Error)]
pub enum BisectError {
    /// git failed in a repository.
    #[error("reading git objects in `{}`", dir.display())]
    Git {
        /// The repository.
        dir: PathBuf,
        /// Why.
        #[source]
        source: GitError,
    },
    /// `--good` is not an ancestor of `--bad` (or they are the same commit).
    #[error(
        "`{good}` is not an ancestor of `{bad}` in `{}`, so there is nothing to bisect \
         (swap them, or check --submodule)",
        dir.display()
    )]
    NotAnAncestor {
        /// The good revision.
        good: String,
        /// The bad revision.
        bad: String,
        /// The repository.
        dir: PathBuf,
    },
    /// The submodule's repository is not there to read its history.
    #[error(
        "submodule `{path}` is not checked out at `{}`; run `git submodule update --init {path}` \
         (its history is read, never checked out)",
        dir.display()
    )]
    SubmoduleNotCheckedOut {
        /// Its path.
        path: String,
        /// Where it should be.
        dir: PathBuf,
    },
    /// Submodule mode needs a fixed topology.
    #[error("a submodule bisect needs the superproject's topology (internal: none was given)")]
    NoTopology,
    /// The selection does not fit the topology.
    #[error("{what}")]
    Topology {
        /// What was asked.
        what: String,
        /// The topology's answer.
        #[source]
        source: TopologyError,
    },
    /// A superproject commit's topology cannot be used.
    #[error("topology at commit {commit}: {problem}")]
    TopologyAt {
        /// The commit.
        commit: String,
        /// What is wrong.
        problem: String,
    },
    /// Fingerprinting a candidate failed.
    #[error("fingerprinting commit {commit}")]
    Fingerprint {
        /// The commit.
        commit: String,
        /// Why.
        #[source]
        source: FingerprintError,
    },
    /// `--github`: the commit → run lookup failed.
    #[error("looking up the CI runs of commit {commit} (--github)")]
    Github {
        /// The commit.
        commit: String,
        /// Why.
        #[source]
        source: crate::history::HistoryError,
    },
    /// The daemon or the materialization failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The build dir or the session log could not be written.
    #[error("`{}`: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `--resume` with a session log of another bisect.
    #[error(
        "the session log in `{}` is for another bisect (good, bad, submodule, family or \
         artifacts differ); drop --resume, or use another --build-dir",
        .0.display()
    )]
    ResumeMismatch(PathBuf),
    /// Another bisect holds the build dir.
    #[error(
        "another `cairn bisect` is running with the build dir `{}`; wait for it, or use another \
         --build-dir",
        .0.display()
    )]
    Busy(PathBuf),
    /// The command could not be started.
    #[error("cannot run the command `{program}`: {source}")]
    Command {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
