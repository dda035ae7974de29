//! The bisect report (`cairn-bisect-v1`): the answer and one row per probe. It is what `cairn
//! bisect run --json` prints, what the session log in the build dir (`.cairn-bisect/session.json`)
//! holds after every step, and what `cairn bisect log` renders again.
//!
//! ```json
//! {
//!   "schema": "cairn-bisect-v1",
//!   "repo": "/abs/TheRock/rocm-libraries",   // whose history was bisected
//!   "submodule": "rocm-libraries",           // null when bisecting the superproject
//!   "superproject_head": "<sha>",            // fixed superproject commit (submodule mode)
//!   "good": "<sha>", "bad": "<sha>",
//!   "family": "gfx94X-dcgpu", "platform": "linux",
//!   "stage": "math-libs",                    // or null with "artifacts": ["blas", ...]
//!   "artifacts": null,
//!   "build_dir": "/abs/build",
//!   "command": ["sh", "test.sh"],
//!   "candidates": 20,                        // commits after good up to bad
//!   "result": {"status": "first_bad", "commit": "<sha>", "subject": "..."},
//!     // or {"status": "ambiguous", "commits": [{"commit", "subject"}]}  (skips left it open)
//!     // or {"status": "aborted", "commit": "<sha>", "reason": "command killed by signal 9"}
//!     // or {"status": "interrupted", "signal": 2} | {"status": "running"}
//!   "steps": [Step],
//!   "skipped": [{"commit", "subject"}],       // every skipped probe
//!   "prefetches": [Prefetch],
//!   "totals": {"downloaded_bytes", "prefetched_bytes", "files_written", "materialize_ms",
//!              "cmd_ms", "elapsed_ms"}
//! }
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::algorithm::Verdict;

/// The schema name of [`Report`].
pub const SCHEMA: &str = "cairn-bisect-v1";

/// A commit and its subject line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRef {
    /// Full SHA.
    pub commit: String,
    /// Subject line.
    pub subject: String,
}

/// What a bisect concluded (so far).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum Conclusion {
    /// Still running (the session log between steps).
    Running,
    /// The first bad commit.
    FirstBad {
        /// Full SHA.
        commit: String,
        /// Subject line.
        subject: String,
    },
    /// Skips left the first bad commit among these (oldest first; the last one is known bad).
    Ambiguous {
        /// The commits.
        commits: Vec<CommitRef>,
    },
    /// The command exited with a status that stops the bisect (≥ 128, or killed by a signal).
    Aborted {
        /// The commit being tested.
        commit: String,
        /// What happened.
        reason: String,
    },
    /// Interrupted by a signal; the build dir is consistent and the repository untouched.
    Interrupted {
        /// The signal number.
        signal: i32,
    },
}

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepResult {
    /// Command exited 0.
    Good,
    /// Command exited 1–124, 126 or 127.
    Bad,
    /// Artifacts missing, or the command exited 125.
    Skip,
    /// The command's status stopped the bisect.
    Abort,
}

impl From<Verdict> for StepResult {
    fn from(v: Verdict) -> StepResult {
        match v {
            Verdict::Good => StepResult::Good,
            Verdict::Bad => StepResult::Bad,
            Verdict::Skip => StepResult::Skip,
        }
    }
}

impl StepResult {
    /// `good`, `bad`, `skip` or `abort`.
    pub fn as_str(self) -> &'static str {
        match self {
            StepResult::Good => "good",
            StepResult::Bad => "bad",
            StepResult::Skip => "skip",
            StepResult::Abort => "abort",
        }
    }
}

/// An artifact no acceptable run produced with the fingerprint a probe needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissingArtifact {
    /// Topology name.
    pub artifact: String,
    /// The fingerprint at the probe.
    pub fingerprint: String,
    /// The daemon's first explanation line.
    pub reason: String,
    /// The inputs of its fingerprint that changed since the previous materialized probe
    /// (`kind name`, e.g. `submodule rocm-libraries`); empty for the first probe.
    #[serde(default)]
    pub changed_inputs: Vec<String>,
}

/// An artifact `--nearest` took from an ancestor commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Substitution {
    /// Topology name.
    pub artifact: String,
    /// The ancestor whose fingerprint was used.
    pub from_commit: String,
    /// That fingerprint.
    pub fingerprint: String,
}

/// One probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// 1-based step number.
    pub step: usize,
    /// The candidate tested.
    pub commit: String,
    /// Its subject line.
    pub subject: String,
    /// What it found.
    pub result: StepResult,
    /// Why: `exit N`, `missing artifacts`, `killed by signal N`.
    pub reason: String,
    /// The command's exit code, when it ran and exited.
    pub exit_code: Option<i32>,
    /// Artifacts missing at this commit (the probe is then skipped).
    pub missing: Vec<MissingArtifact>,
    /// Artifacts `--nearest` took from an ancestor.
    pub nearest: Vec<Substitution>,
    /// `--github`: the CI run (published without Cairn records) this commit's artifacts were taken
    /// from by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_run: Option<String>,
    /// Artifacts taken from `github_run`'s listing by name: their fingerprints are not verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unverified: Vec<String>,
    /// Artifacts whose fingerprint differs from the previous materialized step (`null`: first).
    pub changed: Option<Vec<String>>,
    /// Compressed bytes the daemon downloaded for this step's materialization.
    pub downloaded_bytes: u64,
    /// Files written into the build dir.
    pub files_written: u64,
    /// Files left untouched because they were already right.
    pub files_unchanged: u64,
    /// Stale files removed.
    pub files_removed: u64,
    /// Fingerprinting, resolve, fetch and materialize, in milliseconds: the time from the previous
    /// step's end to this command's start.
    pub materialize_ms: u64,
    /// The command, in milliseconds.
    pub cmd_ms: u64,
}

/// One prefetch: the artifacts of a possible next probe, made local while the command ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prefetch {
    /// The step during whose command it ran.
    pub during_step: usize,
    /// The candidate warmed up.
    pub commit: String,
    /// Archives the daemon had or fetched.
    pub archives: u64,
    /// Archives downloaded from storage.
    pub from_storage: u64,
    /// Compressed bytes downloaded.
    pub downloaded_bytes: u64,
    /// Whether it finished before the bisect did (an unfinished one was abandoned).
    pub complete: bool,
}

/// Sums over the steps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Bytes downloaded for materializations.
    pub downloaded_bytes: u64,
    /// Bytes downloaded by prefetches.
    pub prefetched_bytes: u64,
    /// Files written.
    pub files_written: u64,
    /// Time resolving, fetching and materializing.
    pub materialize_ms: u64,
    /// Time in the command.
    pub cmd_ms: u64,
    /// Wall time of the bisect.
    pub elapsed_ms: u64,
}

/// The whole report (see the module doc for the JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: String,
    /// The repository whose history was bisected.
    pub repo: PathBuf,
    /// The submodule bisected (its path), or `None` for the superproject.
    pub submodule: Option<String>,
    /// The superproject commit fixed in submodule mode.
    pub superproject_head: Option<String>,
    /// The good commit.
    pub good: String,
    /// The bad commit.
    pub bad: String,
    /// GPU family.
    pub family: String,
    /// Platform.
    pub platform: String,
    /// The stage whose inbound artifacts were tested, if any.
    pub stage: Option<String>,
    /// The artifacts tested, when given by name.
    pub artifacts: Option<Vec<String>>,
    /// The build dir.
    pub build_dir: PathBuf,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// How many candidates (commits after good, up to bad).
    pub candidates: usize,
    /// The answer.
    pub result: Conclusion,
    /// The probes, in order.
    pub steps: Vec<Step>,
    /// The skipped probes.
    pub skipped: Vec<CommitRef>,
    /// Prefetches.
    pub prefetches: Vec<Prefetch>,
    /// Sums.
    pub totals: Totals,
}

impl Report {
    /// Recompute `skipped` and `totals` from the steps and prefetches (`elapsed_ms` is kept).
    pub fn tally(&mut self) {
        self.skipped = self
            .steps
            .iter()
            .filter(|s| s.result == StepResult::Skip)
            .map(|s| CommitRef {
                commit: s.commit.clone(),
                subject: s.subject.clone(),
            })
            .collect();
        let elapsed_ms = self.totals.elapsed_ms;
        self.totals = Totals {
            downloaded_bytes: self.steps.iter().map(|s| s.downloaded_bytes).sum(),
            prefetched_bytes: self.prefetches.iter().map(|p| p.downloaded_bytes).sum(),
            files_written: self.steps.iter().map(|s| s.files_written).sum(),
            materialize_ms: self.steps.iter().map(|s| s.materialize_ms).sum(),
            cmd_ms: self.steps.iter().map(|s| s.cmd_ms).sum(),
            elapsed_ms,
        };
    }

    /// The human report: the step table, the skipped commits with why, and the answer.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<4} {:<12} {:<6} {:>10} {:>7} {:>8} {:>8}  changed / why",
            "step", "commit", "result", "download", "files", "mat", "cmd"
        );
        for s in &self.steps {
            let why = if !s.missing.is_empty() {
                format!(
                    "missing: {}",
                    s.missing
                        .iter()
                        .map(|m| m.artifact.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                let changed = match &s.changed {
                    None => "(first)".to_string(),
                    Some(c) if c.is_empty() => "(none)".to_string(),
                    Some(c) => c.join(", "),
                };
                let nearest = if s.nearest.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; nearest: {}",
                        s.nearest
                            .iter()
                            .map(|n| format!("{} from {}", n.artifact, short(&n.from_commit)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                let unverified = match &s.github_run {
                    Some(run) => {
                        format!("; unverified from run {run}: {}", s.unverified.join(", "))
                    }
                    None => String::new(),
                };
                format!("{changed}{nearest}{unverified} [{}]", s.reason)
            };
            let _ = writeln!(
                out,
                "{:<4} {:<12} {:<6} {:>10} {:>7} {:>8} {:>8}  {why}",
                s.step,
                short(&s.commit),
                s.result.as_str(),
                human_bytes(s.downloaded_bytes),
                s.files_written,
                seconds(s.materialize_ms),
                seconds(s.cmd_ms),
            );
        }
        for s in &self.steps {
            if s.result == StepResult::Skip {
                let why = if s.missing.is_empty() {
                    s.reason.clone()
                } else {
                    format!(
                        "missing {}",
                        s.missing
                            .iter()
                            .map(|m| {
                                if m.changed_inputs.is_empty() {
                                    format!("`{}` ({})", m.artifact, m.reason)
                                } else {
                                    format!(
                                        "`{}` ({}; changed: {})",
                                        m.artifact,
                                        m.reason,
                                        m.changed_inputs.join(", ")
                                    )
                                }
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                let _ = writeln!(out, "skipped {} {}: {why}", short(&s.commit), s.subject);
            }
        }
        let _ = match &self.result {
            Conclusion::FirstBad { commit, subject } => {
                writeln!(out, "first bad commit: {commit} {subject}")
            }
            Conclusion::Ambiguous { commits } => {
                let _ = writeln!(
                    out,
                    "skipped commits leave the first bad commit ambiguous; it is one of:"
                );
                for c in commits {
                    let _ = writeln!(out, "  {} {}", c.commit, c.subject);
                }
                Ok(())
            }
            Conclusion::Aborted { commit, reason } => {
                writeln!(out, "bisect aborted at {commit}: {reason}")
            }
            Conclusion::Interrupted { signal } => writeln!(
                out,
                "bisect interrupted by signal {signal}; the build dir is consistent and the \
                 repository untouched"
            ),
            Conclusion::Running => writeln!(out, "bisect still running (or killed)"),
        };
        let t = &self.totals;
        let _ = write!(
            out,
            "{} step(s) over {} candidate(s); downloaded {} (+{} prefetched), {} file(s) written, \
             materialize {}, command {}, total {}",
            self.steps.len(),
            self.candidates,
            human_bytes(t.downloaded_bytes),
            human_bytes(t.prefetched_bytes),
            t.files_written,
            seconds(t.materialize_ms),
            seconds(t.cmd_ms),
            seconds(t.elapsed_ms),
        );
        out
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

fn seconds(ms: u64) -> String {
    format!("{:.2}s", ms as f64 / 1000.0)
}

/// `12.3 MiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
