//! The bisect loop. Per probe: fingerprint the candidate, resolve every artifact to its exact
//! producer (missing → the probe is skipped, unless `--nearest` finds each missing artifact at the
//! newest ancestor that has it; with `--github`, first the commit's CI run published without Cairn,
//! taken by name, [`github`]), fetch and materialize into the build dir (bootstrap layout,
//! incremental: only changed files are written, `.prebuilt` markers kept right), start prefetching
//! both possible next probes, run the command, record its verdict. After every step the report so
//! far is saved as the session log, `BUILD_DIR/.cairn-bisect/session.json`.
//!
//! Everything the session fetched or prefetched is pinned in the daemon under one name
//! (`bisect-{hash of the build dir}`, [`SESSION_PIN_TTL`]), so eviction cannot undo a prefetch
//! while the bisect runs; the pin is removed when the session ends (and expires on its own if
//! `cairn` is killed). Pinning is best effort: a daemon without pins still bisects.
//!
//! With `--resume`, the verdicts of the build dir's session log are recorded before the first
//! probe (mirroring `git bisect replay`), so an interrupted bisect continues where it stopped.
//!
//! A stop request (SIGINT/SIGTERM, [`StopFlag`]) ends the session at the next boundary: during a
//! materialization the materializer stops at a file boundary (markers only over complete stage
//! dirs), during the command the command is waited for; the report then says `interrupted`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_fingerprint::Blake3;
use cairn_fingerprint::git::LogEntry;
use cairn_proto::v1::cairn_client::CairnClient;

use crate::api::{self, ClientError};
use crate::connect::DaemonChannel;
use crate::fetch::{self, Transfer};
use crate::materialize::{Layout, MaterializeError, NoReporter, Options, StopFlag};

use super::BisectError;
use super::algorithm::{Bisection, Next, Outcome, Verdict};
use super::candidates::{History, Selection};
use super::github::{self, GithubLookup};
use super::prefetch::{self, Running};
use super::probe::{self, CommandVerdict, TestCommand};
use super::report::{
    CommitRef, Conclusion, MissingArtifact, Prefetch, Report, SCHEMA, Step, StepResult,
    Substitution, Totals,
};

/// The session log's directory under the build dir.
pub const LOG_DIR: &str = ".cairn-bisect";
/// The session log's file name.
pub const LOG_FILE: &str = "session.json";
/// How many ancestors `--nearest` looks back through.
pub const NEAREST_DEPTH: usize = 64;
/// How long a session's pin lasts if the session never removes it.
pub const SESSION_PIN_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long the end of a session waits for prefetches still running before abandoning them.
pub const PREFETCH_GRACE: Duration = Duration::from_secs(30);

/// Where a build dir's session log is.
pub fn log_path(build_dir: &Path) -> PathBuf {
    build_dir.join(LOG_DIR).join(LOG_FILE)
}

/// What to run.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// The good revision (of the bisected repository).
    pub good: String,
    /// The bad revision.
    pub bad: String,
    /// The build dir, absolute.
    pub build_dir: PathBuf,
    /// The test.
    pub command: TestCommand,
    /// Let missing artifacts come from the newest ancestor that has them.
    pub nearest: bool,
    /// Prefetch both possible next probes while the command runs.
    pub prefetch: bool,
    /// Components left out.
    pub exclude_components: Vec<String>,
    /// How blobs reach this machine.
    pub transfer: Transfer,
    /// Where a stop request arrives.
    pub stop: Arc<StopFlag>,
    /// `--github`: commits without Cairn records take the artifacts of their CI run found on
    /// GitHub, by name (unverified).
    pub github: Option<GithubLookup>,
    /// `--resume`: the session log of an earlier run of the same bisect, whose verdicts are taken
    /// as they are (its steps head the new report) instead of probing those commits again.
    pub resume: Option<Report>,
}

/// Progress callbacks (the CLI prints a line per step on stderr).
pub trait Observer: Send + Sync {
    /// The candidates are known.
    fn on_start(&self, _candidates: usize) {}
    /// Probe number `step` starts at `commit`.
    fn on_probe(&self, _step: usize, _commit: &CommitRef, _remaining: usize) {}
    /// A step finished.
    fn on_step(&self, _step: &Step) {}
}

/// An observer that says nothing.
#[derive(Debug, Default)]
pub struct Silent;

impl Observer for Silent {}

/// A prefetch started during a step.
struct Pending {
    during_step: usize,
    commit: String,
    handle: Running,
}

/// Run the bisect; the report is returned (and saved) whatever the conclusion. Errors are
/// daemon, git and I/O failures; the session log keeps the steps done before one.
pub async fn run(
    client: &mut CairnClient<DaemonChannel>,
    history: &mut History,
    spec: &SessionSpec,
    observer: &dyn Observer,
) -> Result<Report, BisectError> {
    let started = Instant::now();
    let _session_lock = lock_session(&spec.build_dir)?;
    let (good, bad, entries) = history.candidates(&spec.good, &spec.bad)?;
    observer.on_start(entries.len());
    let (stage, artifacts) = match history.selection() {
        Selection::Stage(s) => (Some(s.clone()), None),
        Selection::Artifacts(a) => (None, Some(a.clone())),
    };
    let mut report = Report {
        schema: SCHEMA.to_string(),
        repo: history.repo().to_path_buf(),
        submodule: history.submodule().map(str::to_string),
        superproject_head: history.superproject_head().map(str::to_string),
        good,
        bad,
        family: history.family().to_string(),
        platform: history.platform().to_string(),
        stage,
        artifacts,
        build_dir: spec.build_dir.clone(),
        command: spec
            .command
            .argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        candidates: entries.len(),
        result: Conclusion::Running,
        steps: Vec::new(),
        skipped: Vec::new(),
        prefetches: Vec::new(),
        totals: Totals::default(),
    };
    let pin = format!(
        "bisect-{}",
        &blake3::hash(spec.build_dir.as_os_str().as_encoded_bytes()).to_hex()[..16]
    );
    let mut session = Session {
        pin: Some(pin.clone()),
        pin_name: pin,
        client,
        history,
        spec,
        entries: &entries,
        bisection: Bisection::new(entries.len()),
        previous: None,
        previous_commit: None,
        pending: Vec::new(),
        prefetched: BTreeSet::new(),
    };
    if let Some(earlier) = &spec.resume {
        session.resume(&mut report, earlier)?;
    }
    let result = session.bisect(&mut report, observer, started).await;
    // Prefetches still running: wait a little (their downloads would be lost otherwise), then
    // abandon them; an interrupted, aborted or failed session does not wait.
    let wait = matches!(
        report.result,
        Conclusion::FirstBad { .. } | Conclusion::Ambiguous { .. }
    ) && result.is_ok();
    session.collect(&mut report, wait).await;
    let _ = api::unpin(session.client, &session.pin_name).await;
    report.totals.elapsed_ms = started.elapsed().as_millis() as u64;
    report.tally();
    save_log(&spec.build_dir, &report)?;
    result.map(|()| report)
}

struct Session<'a> {
    /// The session's pin; `None` once pinning failed (the daemon does not pin).
    pin: Option<String>,
    /// The pin's name, removed at the end whether pinning worked or not.
    pin_name: String,
    client: &'a mut CairnClient<DaemonChannel>,
    history: &'a mut History,
    spec: &'a SessionSpec,
    entries: &'a [LogEntry],
    bisection: Bisection,
    /// Fingerprints of the last materialized probe.
    previous: Option<BTreeMap<String, Blake3>>,
    /// Its commit.
    previous_commit: Option<String>,
    pending: Vec<Pending>,
    /// Candidates already prefetched (by index).
    prefetched: BTreeSet<usize>,
}

impl Session<'_> {
    fn commit_ref(&self, i: usize) -> CommitRef {
        CommitRef {
            commit: self.entries[i].commit.clone(),
            subject: self.entries[i].subject.clone(),
        }
    }

    async fn bisect(
        &mut self,
        report: &mut Report,
        observer: &dyn Observer,
        started: Instant,
    ) -> Result<(), BisectError> {
        loop {
            if let Some(signal) = self.spec.stop.requested() {
                report.result = Conclusion::Interrupted { signal };
                return Ok(());
            }
            let i = match self.bisection.next() {
                Next::Probe(i) => i,
                Next::Done(outcome) => {
                    report.result = match outcome {
                        Outcome::FirstBad(i) => {
                            let c = self.commit_ref(i);
                            Conclusion::FirstBad {
                                commit: c.commit,
                                subject: c.subject,
                            }
                        }
                        Outcome::Ambiguous(range) => Conclusion::Ambiguous {
                            commits: range.into_iter().map(|i| self.commit_ref(i)).collect(),
                        },
                    };
                    return Ok(());
                }
            };
            let number = report.steps.len() + 1;
            let remaining = (0..self.entries.len())
                .filter(|&j| self.bisection.verdict(j).is_none())
                .count();
            observer.on_probe(number, &self.commit_ref(i), remaining);
            let (step, end) = self.probe(i, number).await?;
            if let Some(v) = end.verdict() {
                self.bisection.record(i, v);
            }
            observer.on_step(&step);
            report.steps.push(step);
            self.collect(report, false).await;
            report.totals.elapsed_ms = started.elapsed().as_millis() as u64;
            report.tally();
            save_log(&self.spec.build_dir, report)?;
            match end {
                End::Verdict(_) => {}
                End::Abort(reason) => {
                    report.result = Conclusion::Aborted {
                        commit: self.entries[i].commit.clone(),
                        reason,
                    };
                    return Ok(());
                }
                End::Interrupted(signal) => {
                    report.result = Conclusion::Interrupted { signal };
                    return Ok(());
                }
            }
        }
    }

    /// Take the verdicts of an earlier session of the same bisect (good, bad and submodule must
    /// match); its steps head `report`.
    fn resume(&mut self, report: &mut Report, earlier: &Report) -> Result<(), BisectError> {
        if earlier.good != report.good
            || earlier.bad != report.bad
            || earlier.submodule != report.submodule
            || earlier.family != report.family
            || earlier.stage != report.stage
            || earlier.artifacts != report.artifacts
        {
            return Err(BisectError::ResumeMismatch(report.build_dir.clone()));
        }
        for step in &earlier.steps {
            let verdict = match step.result {
                StepResult::Good => Verdict::Good,
                StepResult::Bad => Verdict::Bad,
                StepResult::Skip => Verdict::Skip,
                StepResult::Abort => continue,
            };
            if let Some(i) = self.entries.iter().position(|e| e.commit == step.commit) {
                self.bisection.record(i, verdict);
            }
        }
        report.steps = earlier.steps.clone();
        report.prefetches = earlier.prefetches.clone();
        Ok(())
    }

    /// Test candidate `i` as step `number`.
    async fn probe(&mut self, i: usize, number: usize) -> Result<(Step, End), BisectError> {
        let began = Instant::now();
        let commit = self.entries[i].commit.clone();
        let mut step = Step {
            step: number,
            commit: commit.clone(),
            subject: self.entries[i].subject.clone(),
            result: StepResult::Skip,
            reason: String::new(),
            exit_code: None,
            missing: Vec::new(),
            nearest: Vec::new(),
            github_run: None,
            unverified: Vec::new(),
            changed: None,
            downloaded_bytes: 0,
            files_written: 0,
            files_unchanged: 0,
            files_removed: 0,
            materialize_ms: 0,
            cmd_ms: 0,
        };
        let mut fps = self.history.fingerprints(&commit)?;
        let resolution = github::resolve(
            self.client,
            self.spec.github.as_ref(),
            &commit,
            self.history.family(),
            self.history.platform(),
            &self.request(&fps),
        )
        .await?;
        let mut missing = resolution.missing;
        let from_github = resolution.run;
        step.github_run = from_github.as_ref().map(|r| r.run_id.clone());
        if !missing.is_empty() && self.spec.nearest {
            let (found, still) = self.nearest(&commit, &fps, missing).await?;
            for s in &found {
                if let Ok(fp) = s.fingerprint.parse() {
                    fps.insert(s.artifact.clone(), fp);
                }
            }
            step.nearest = found;
            missing = still;
        }
        if !missing.is_empty() {
            if let Some(prev) = &self.previous_commit {
                for m in &mut missing {
                    // Best effort: the explanation is for the reader, not the verdict.
                    m.changed_inputs = self
                        .history
                        .changed_inputs(prev, &commit, &m.artifact)
                        .unwrap_or_default();
                }
            }
            step.reason = "missing artifacts".into();
            step.missing = missing;
            step.materialize_ms = began.elapsed().as_millis() as u64;
            return Ok((step, End::Verdict(Verdict::Skip)));
        }

        let opts = Options {
            stop: Some(self.spec.stop.clone()),
            ..Options::new(Layout::Bootstrap)
        };
        let request = match &from_github {
            Some(run) => run.request(&self.request(&fps)),
            None => self.request(&fps),
        };
        let outcome = match fetch::fetch(
            self.client,
            &[request],
            &self.spec.build_dir,
            &opts,
            self.spec.transfer,
            Arc::new(NoReporter),
        )
        .await
        {
            Err(ClientError::Materialize(MaterializeError::Interrupted { signal, .. })) => {
                step.reason = "interrupted while materializing".into();
                step.materialize_ms = began.elapsed().as_millis() as u64;
                step.result = StepResult::Abort;
                return Ok((step, End::Interrupted(signal)));
            }
            other => other?,
        };
        let trees: Vec<Blake3> = outcome
            .trees
            .iter()
            .filter_map(|t| t.tree_digest.parse().ok())
            .collect();
        self.pin_trees(&trees).await;
        step.downloaded_bytes = outcome.daemon.storage_bytes;
        step.files_written = outcome.report.files_written;
        step.files_unchanged = outcome.report.files_skipped_unchanged;
        step.files_removed = outcome.report.files_removed;
        if let Some(run) = &from_github {
            step.unverified = run.unverified(&outcome.resolved);
        }
        step.materialize_ms = began.elapsed().as_millis() as u64;
        let late = probe::missing(&outcome.resolved);
        if !late.is_empty() {
            // Records changed between the resolve and the fetch: never test a partial build dir.
            step.reason = "missing artifacts".into();
            step.missing = late;
            return Ok((step, End::Verdict(Verdict::Skip)));
        }
        step.changed = self.previous.as_ref().map(|prev| {
            fps.iter()
                .filter(|(n, fp)| prev.get(*n) != Some(*fp))
                .map(|(n, _)| n.clone())
                .collect()
        });
        self.previous = Some(fps);
        self.previous_commit = Some(commit.clone());

        if let Some(signal) = self.spec.stop.requested() {
            step.reason = "interrupted before the command".into();
            step.result = StepResult::Abort;
            return Ok((step, End::Interrupted(signal)));
        }
        let ran = Instant::now();
        let command = self.spec.command.clone();
        let build_dir = self.spec.build_dir.clone();
        let family = self.history.family().to_string();
        let for_commit = commit.clone();
        let running =
            tokio::task::spawn_blocking(move || command.run(&for_commit, &build_dir, &family));
        // The next probes are fingerprinted and their prefetch started while the command runs, so
        // neither delays its start.
        if self.spec.prefetch {
            self.start_prefetch(i, number);
        }
        let status = running
            .await
            .map_err(|e| BisectError::Command {
                program: self.program(),
                source: std::io::Error::other(e.to_string()),
            })?
            .map_err(|source| BisectError::Command {
                program: self.program(),
                source,
            })?;
        step.cmd_ms = ran.elapsed().as_millis() as u64;
        step.exit_code = status.code();
        let end = match probe::classify(status) {
            CommandVerdict::Verdict(v) => {
                step.result = v.into();
                step.reason = format!("exit {}", status.code().unwrap_or(-1));
                End::Verdict(v)
            }
            CommandVerdict::Abort(reason) => {
                step.result = StepResult::Abort;
                step.reason = reason.clone();
                End::Abort(reason)
            }
        };
        if let Some(signal) = self.spec.stop.requested() {
            // The command saw the signal too; its verdict is not trusted.
            step.result = StepResult::Abort;
            return Ok((step, End::Interrupted(signal)));
        }
        Ok((step, end))
    }

    fn program(&self) -> String {
        self.spec
            .command
            .argv
            .first()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn request(&self, fps: &BTreeMap<String, Blake3>) -> api::Request {
        probe::request(
            self.history.selection().stage_label(),
            self.history.family(),
            &self.history.platform().to_string(),
            fps,
            &self.spec.exclude_components,
        )
    }

    /// `--nearest`: for each missing artifact, the newest first-parent ancestor of `commit` whose
    /// fingerprint of it has a producer. Returns the substitutions and what is still missing.
    async fn nearest(
        &mut self,
        commit: &str,
        fps: &BTreeMap<String, Blake3>,
        missing: Vec<MissingArtifact>,
    ) -> Result<(Vec<Substitution>, Vec<MissingArtifact>), BisectError> {
        let ancestors = self.history.ancestors(commit, NEAREST_DEPTH)?;
        let mut found = Vec::new();
        let mut still = Vec::new();
        'artifacts: for m in missing {
            let mut tried: BTreeSet<Blake3> = fps.get(&m.artifact).copied().into_iter().collect();
            for anc in &ancestors {
                // An ancestor whose fingerprints cannot be computed (older topology) ends the walk.
                let Ok(at) = self.history.fingerprints(anc) else {
                    break;
                };
                let Some(fp) = at.get(&m.artifact).copied() else {
                    continue;
                };
                if !tried.insert(fp) {
                    continue;
                }
                let one = BTreeMap::from([(m.artifact.clone(), fp)]);
                let (resolved, _) = api::resolve(self.client, &self.request(&one)).await?;
                if probe::missing(&resolved).is_empty() {
                    found.push(Substitution {
                        artifact: m.artifact.clone(),
                        from_commit: anc.clone(),
                        fingerprint: fp.to_hex(),
                    });
                    continue 'artifacts;
                }
            }
            still.push(m);
        }
        Ok((found, still))
    }

    /// Start warming the probes that follow candidate `i` whichever way it turns out.
    fn start_prefetch(&mut self, i: usize, number: usize) {
        for verdict in [Verdict::Good, Verdict::Bad] {
            let Some(j) = self.bisection.next_if(i, verdict) else {
                continue;
            };
            if !self.prefetched.insert(j) {
                continue;
            }
            let commit = self.entries[j].commit.clone();
            // Best effort: a candidate that cannot be fingerprinted fails again when probed.
            let Ok(fps) = self.history.fingerprints(&commit) else {
                continue;
            };
            let candidate = prefetch::Candidate {
                commit: commit.clone(),
                family: self.history.family().to_string(),
                platform: self.history.platform(),
                github: self.spec.github.clone(),
            };
            let handle = prefetch::spawn(self.client, candidate, self.request(&fps));
            self.pending.push(Pending {
                during_step: number,
                commit,
                handle,
            });
        }
    }

    /// Add `trees` to the session's pin (best effort).
    async fn pin_trees(&mut self, trees: &[Blake3]) {
        let Some(name) = self.pin.clone() else {
            return;
        };
        if trees.is_empty() {
            return;
        }
        if api::pin(self.client, &name, trees, SESSION_PIN_TTL)
            .await
            .is_err()
        {
            self.pin = None;
        }
    }

    /// Move finished prefetches into the report; with `wait`, wait for the others up to
    /// [`PREFETCH_GRACE`], then abandon what is left.
    async fn collect(&mut self, report: &mut Report, wait: bool) {
        let deadline = tokio::time::Instant::now() + PREFETCH_GRACE;
        for p in std::mem::take(&mut self.pending) {
            let finished = p.handle.is_finished()
                || wait && {
                    let mut waited = false;
                    while tokio::time::Instant::now() < deadline {
                        if p.handle.is_finished() {
                            waited = true;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    waited
                };
            if !finished {
                if wait {
                    p.handle.abort();
                    report.prefetches.push(Prefetch {
                        during_step: p.during_step,
                        commit: p.commit,
                        archives: 0,
                        from_storage: 0,
                        downloaded_bytes: 0,
                        complete: false,
                    });
                } else {
                    self.pending.push(p);
                }
                continue;
            }
            let warmed = p.handle.await.ok().and_then(Result::ok);
            if let Some(w) = &warmed {
                self.pin_trees(&w.trees).await;
            }
            report.prefetches.push(Prefetch {
                during_step: p.during_step,
                commit: p.commit,
                archives: warmed.as_ref().map_or(0, |w| w.daemon.artifacts),
                from_storage: warmed.as_ref().map_or(0, |w| w.daemon.from_storage),
                downloaded_bytes: warmed.as_ref().map_or(0, |w| w.daemon.storage_bytes),
                complete: warmed.is_some(),
            });
        }
    }
}

/// How a probe ended.
enum End {
    Verdict(Verdict),
    Abort(String),
    Interrupted(i32),
}

impl End {
    fn verdict(&self) -> Option<Verdict> {
        match self {
            End::Verdict(v) => Some(*v),
            _ => None,
        }
    }
}

/// One bisect per build dir: an exclusive, non-blocking `flock` on `.cairn-bisect/lock`, held for
/// the session (two sessions would overwrite each other's probes between a materialization and its
/// command). Released when the handle drops, or when the process dies.
fn lock_session(build_dir: &Path) -> Result<std::fs::File, BisectError> {
    use std::os::fd::AsRawFd;
    let dir = build_dir.join(LOG_DIR);
    let path = dir.join("lock");
    let io = |source| BisectError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Err(BisectError::Busy(build_dir.to_path_buf()));
        }
        return Err(io(e));
    }
    Ok(file)
}

/// Write the report as the session log (temp file, then rename).
pub fn save_log(build_dir: &Path, report: &Report) -> Result<(), BisectError> {
    let path = log_path(build_dir);
    let io = |source| BisectError::Io {
        path: path.clone(),
        source,
    };
    let dir = build_dir.join(LOG_DIR);
    std::fs::create_dir_all(&dir).map_err(io)?;
    let tmp = dir.join(format!(".{LOG_FILE}.tmp"));
    let text = serde_json::to_vec_pretty(report).map_err(|e| io(std::io::Error::other(e)))?;
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// Read a build dir's session log.
pub fn load_log(build_dir: &Path) -> Result<Report, BisectError> {
    let path = log_path(build_dir);
    let io = |source| BisectError::Io {
        path: path.clone(),
        source,
    };
    let text = std::fs::read(&path).map_err(io)?;
    serde_json::from_slice(&text).map_err(|e| io(std::io::Error::other(e)))
}
