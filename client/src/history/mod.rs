//! The run history of commits: which CI runs hold artifacts for a commit, which run each GPU family
//! (or a stage's inbound artifacts) should come from, the newest complete baseline commit, and how
//! artifact sizes changed between two runs. `cairn find` and `cairn diff` are glue over this.
//!
//! Data flows through the submodules in this order:
//! - [`wire`]: the daemon's RPCs (`FindRuns`, `RunTrees`, `Import` without ingest, `Resolve`) as
//!   plain structs; no wire type leaves it.
//! - [`candidates`]: Cairn's recorded runs of a commit, completed by GitHub's workflow runs (status
//!   from GitHub, archives from the daemon's listing), merged into [`RunCandidate`]s, newest first.
//! - [`select`]: pure; which candidate covers each family and the stage's needs, honouring
//!   eligibility ([`Eligibility`]: successful runs unless `--allow-incomplete`/`--allow-failed`;
//!   `--require-single-run`), into an [`Evaluation`]
//!   with a [`Rejection`] for every run or commit passed over.
//! - [`commits`]: commit lookup: a revision to a full SHA, and the commits a `--fallback` search
//!   examines (local first-parent history, else GitHub's commit listing).
//! - [`search`]: the online questions, composed from the above: one commit, one run id, the
//!   `--fallback` walk, exact-fingerprint producers, and a `cairn diff` side.
//! - [`report`]: the `cairn find --json` document (schema `cairn-find-v1`).
//! - [`diff`]: pure; the size diff of two runs' contents (schema `cairn-diff-v1`).

pub mod candidates;
pub mod commits;
pub mod diff;
pub mod report;
pub mod search;
pub mod select;
pub mod wire;

use cairn_fingerprint::layout::{GithubRepo, LayoutError};
use cairn_fingerprint::{FingerprintError, Platform};
use cairn_proto::v1::cairn_client::CairnClient;

pub use candidates::RunCandidate;
pub use report::{ArtifactRunInfo, Baseline, FindReport, FingerprintStatus, Rejection};
pub use select::Evaluation;
pub use wire::{
    ArchiveSizes, ExactProducer, FileSize, ListedRun, RecordedJob, RecordedRun, RpcError,
    RunContents, exact_producers, find_runs, list_run, run_trees,
};

use crate::connect::DaemonChannel;
use crate::github::{GithubClient, GithubError};

/// What a history question asks for, resolved from the arguments before any work starts.
#[derive(Debug, Clone)]
pub struct Criteria {
    /// Repository whose runs count.
    pub repo: GithubRepo,
    /// Workflow file of GitHub's runs.
    pub workflow: String,
    /// Platform.
    pub platform: Platform,
    /// GPU families asked for (none: any).
    pub families: Vec<String>,
    /// Stage whose inbound artifacts are required.
    pub stage: Option<String>,
    /// Artifact names the stage needs on this platform ([`select::stage_needs`]).
    pub needed: Vec<String>,
    /// Which runs may answer, by their state.
    pub eligibility: Eligibility,
    /// One run must hold every family.
    pub require_single: bool,
    /// Accept runs from untrusted places.
    pub allow_untrusted: bool,
    /// Never ask GitHub.
    pub offline: bool,
    /// `workflow` was given: Cairn's records of other workflows do not count.
    pub workflow_explicit: bool,
}

impl Criteria {
    /// The families to match: those asked for, else `*` (any).
    pub fn families_or_any(&self) -> Vec<String> {
        if self.families.is_empty() {
            vec!["*".to_string()]
        } else {
            self.families.clone()
        }
    }
}

/// A run's state, from GitHub's status and conclusion words (Cairn's records are spelled the same
/// way by [`candidates`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Completed with conclusion `success`.
    Successful,
    /// Not completed yet (`queued`, `in_progress`, ...): it may still upload what it lacks.
    Incomplete,
    /// Completed without success (`failure`, `cancelled`, `timed_out`, ...).
    Failed,
}

impl RunState {
    /// The state of a run with `status` and `conclusion`.
    pub fn of(status: &str, conclusion: Option<&str>) -> RunState {
        match (status, conclusion) {
            ("completed", Some("success")) => RunState::Successful,
            ("completed", _) => RunState::Failed,
            _ => RunState::Incomplete,
        }
    }
}

/// Which runs may answer a history question. The default (what `find` and `diff` do for a commit)
/// is completed successful runs only: a newer run still in progress or failed is passed over, with a
/// [`Rejection`] saying so, and `--allow-incomplete` / `--allow-failed` let those in (marked by their
/// status in every answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Eligibility {
    /// Runs not completed yet count (`--allow-incomplete`).
    pub allow_incomplete: bool,
    /// Completed runs without success count (`--allow-failed`).
    pub allow_failed: bool,
}

impl Eligibility {
    /// Every run counts.
    pub const ANY: Eligibility = Eligibility {
        allow_incomplete: true,
        allow_failed: true,
    };

    /// The rule of one query. A question about one explicit `--run-id` takes that run whatever its
    /// state (the answer shows the state) unless `--require-successful-run`; a question about a
    /// commit takes successful runs unless allowed otherwise.
    pub fn for_query(
        explicit_run: bool,
        require_successful: bool,
        allow_incomplete: bool,
        allow_failed: bool,
    ) -> Eligibility {
        if require_successful {
            Eligibility::default()
        } else if explicit_run {
            Eligibility::ANY
        } else {
            Eligibility {
                allow_incomplete,
                allow_failed,
            }
        }
    }

    /// Only successful runs count.
    pub fn successful_only(&self) -> bool {
        !self.allow_incomplete && !self.allow_failed
    }

    /// Why a run in `state` does not count, or `None` when it does.
    pub fn refusal(&self, state: RunState) -> Option<&'static str> {
        match state {
            RunState::Successful => None,
            RunState::Incomplete if self.allow_incomplete => None,
            RunState::Failed if self.allow_failed => None,
            RunState::Incomplete => Some("not completed (pass --allow-incomplete to use it)"),
            RunState::Failed => Some("not successful (pass --allow-failed to use it)"),
        }
    }
}

/// Where history comes from: the daemon, and GitHub unless offline.
pub struct Sources {
    /// The daemon.
    pub daemon: CairnClient<DaemonChannel>,
    /// GitHub's REST API (`None` offline).
    pub github: Option<GithubClient>,
}

/// Why a history question could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The daemon refused a call.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// GitHub failed.
    #[error(transparent)]
    Github(#[from] GithubError),
    /// A run's layout could not be determined.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Fingerprints could not be computed.
    #[error(transparent)]
    Fingerprint(#[from] FingerprintError),
    /// A revision names no commit.
    #[error("`{rev}` is neither a full commit SHA nor a revision of the checkout at `{}`", dir.display())]
    UnknownRevision {
        /// What was given.
        rev: String,
        /// The checkout asked.
        dir: std::path::PathBuf,
    },
    /// The local history could not be listed.
    #[error("listing the checkout's history")]
    LocalHistory,
    /// The commit is not local and GitHub may not be asked.
    #[error(
        "commit `{commit}` is not in the checkout at `{}` and --offline forbids asking GitHub for its history",
        dir.display()
    )]
    OfflineHistory {
        /// The commit.
        commit: String,
        /// The checkout asked.
        dir: std::path::PathBuf,
    },
    /// Fingerprints are per family.
    #[error("fingerprints need exactly one --family (got {0})")]
    FamilyCount(usize),
}
