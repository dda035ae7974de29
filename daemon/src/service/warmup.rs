//! Predictive warm-up: follow branches through their **feed** in storage
//! (`cairn/branches/{owner}/{repo}/{branch}/{inv-day}/{inv-ms}-{run}-{platform}.json`, written by
//! every publish that names a branch, newest first in LIST order) and make the inbound archives of
//! the configured stages × families of the newest runs local — through the same resolve (the
//! multi-base policy, the explicit-run rule) and [`Service::make_local`] a client Fetch uses — so a
//! job that starts later finds them in the CAS. Nothing is materialized anywhere.
//!
//! Rules, each here and nowhere else:
//! - only the trusted area of a trusted backend is followed; untrusted feed entries are never read;
//! - warm-up yields to clients: before each archive it waits while any download is in flight (its own
//!   are sequential, so those are clients');
//! - it fills the store only up to [`WARMUP_FILL`] of the quota: an archive whose size would cross
//!   that line is skipped, never made room for (warm-up never evicts);
//! - downloads average at most `max_bytes_per_sec`;
//! - an error is logged and the next poll retries; it never stops the daemon.
//!
//! What it did is in [`WarmupState`]: bytes and archives prefetched, archives found already local,
//! client fetches served from prefetched trees no client had used yet (hits), and prefetched bytes
//! evicted before any client used them (wasted). The "prefetched, not used yet" set holds at most
//! [`MAX_TRACKED_TREES`] tree digests (the oldest is forgotten first).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{debug, info, warn};

use cairn_fingerprint::layout::{
    Area, GithubRepo, RunOutputRoot, RunSpec, branch_feed_prefix, in_area,
};
use cairn_fingerprint::{Blake3, Platform, Topology};

use super::policy::{ArchiveSelector, Policy, Wanted};
use super::resolve::ResolveRequest;
use super::{Result, Service, invalid};
use crate::config::{ConfigError, WarmupConfig};
use crate::records::BranchFeedRecord;

/// Warm-up fills the store up to this fraction of its quota, never more.
pub const WARMUP_FILL: f64 = 0.9;

/// Prefetched trees remembered as "not used by a client yet".
pub const MAX_TRACKED_TREES: usize = 4096;

/// Days of a branch feed listed at most per poll (newest first) to find `runs_back` runs.
pub const MAX_FEED_DAYS: usize = 14;

/// How often warm-up looks again while client downloads are in flight.
const YIELD_POLL: Duration = Duration::from_millis(100);

/// What warm-up does, resolved from `[warmup]` once at start.
#[derive(Debug, Clone)]
pub struct WarmupPlan {
    /// Followed branches.
    pub branches: Vec<(GithubRepo, String)>,
    /// Stage → its inbound artifact names (from the topology).
    pub stages: Vec<(String, Vec<String>)>,
    /// Families.
    pub families: Vec<String>,
    /// Newest runs per branch.
    pub runs_back: usize,
    /// Time between polls.
    pub interval: Duration,
    /// Download rate cap (bytes/s), 0 = none.
    pub max_bytes_per_sec: u64,
    /// Nice value of warm-up's threads (0: unchanged).
    pub nice: i32,
    /// Platform of the followed runs.
    pub platform: Platform,
}

impl WarmupPlan {
    /// The plan of an enabled `[warmup]` section: reads the topology and checks every stage.
    pub fn from_config(cfg: &WarmupConfig) -> std::result::Result<WarmupPlan, ConfigError> {
        cfg.validate()?;
        let path = cfg.topology.as_deref().unwrap_or(std::path::Path::new(""));
        let topology = Topology::load(path).map_err(|e| {
            ConfigError::Invalid(format!("[warmup] topology `{}`: {e}", path.display()))
        })?;
        let mut stages = Vec::new();
        for stage in &cfg.stages {
            let inbound = topology
                .inbound(stage)
                .map_err(|e| ConfigError::Invalid(format!("[warmup] stages: `{stage}`: {e}")))?;
            stages.push((
                stage.clone(),
                inbound.into_iter().map(str::to_string).collect(),
            ));
        }
        Ok(WarmupPlan {
            branches: cfg.followed()?,
            stages,
            families: cfg.families.clone(),
            runs_back: cfg.runs_back,
            interval: Duration::from_secs_f64(cfg.interval),
            max_bytes_per_sec: cfg.max_bytes_per_sec,
            nice: cfg.nice,
            platform: cfg
                .platform
                .parse()
                .map_err(|e| ConfigError::Invalid(format!("[warmup] platform: {e}")))?,
        })
    }
}

/// One run of a branch feed.
#[derive(Debug, Clone)]
pub struct FeedRun {
    /// Its newest feed entry.
    pub newest: BranchFeedRecord,
    /// Archive file names of every entry of it that was read.
    pub archives: BTreeSet<String>,
}

/// Warm-up's counters and status (relaxed atomics and small maps: statistics only).
#[derive(Debug, Default)]
pub struct WarmupState {
    /// Compressed bytes warm-up downloaded.
    pub prefetched_bytes: AtomicU64,
    /// Archives warm-up downloaded.
    pub prefetched_archives: AtomicU64,
    /// Archives warm-up found already local (nothing downloaded).
    pub already_local: AtomicU64,
    /// Archives skipped because they would fill the store past [`WARMUP_FILL`] of the quota.
    pub skipped_quota: AtomicU64,
    /// Client fetches of an archive warm-up prefetched and no client had used yet.
    pub hits: AtomicU64,
    /// Bytes (content) of prefetched trees evicted before any client used them.
    pub wasted_bytes: AtomicU64,
    /// Polls finished.
    pub polls: AtomicU64,
    /// Polls that ended with an error.
    pub errors: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    enabled: bool,
    branches: Vec<String>,
    last_poll: Option<String>,
    last_error: Option<String>,
    /// Branch → the newest run warmed.
    last_run: BTreeMap<String, String>,
    /// Prefetched, not used by a client yet: tree digest → content bytes, oldest first.
    unused: VecDeque<(Blake3, u64)>,
}

/// Warm-up as `/status` and `cairn status` show it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WarmupStatus {
    /// Whether warm-up runs.
    pub enabled: bool,
    /// Followed branches, `OWNER/REPO:BRANCH`.
    pub branches: Vec<String>,
    /// RFC 3339 time of the last finished poll.
    pub last_poll: Option<String>,
    /// The last poll's error, if it failed.
    pub last_error: Option<String>,
    /// Branch → newest run warmed.
    pub last_run: BTreeMap<String, String>,
    /// Compressed bytes downloaded.
    pub prefetched_bytes: u64,
    /// Archives downloaded.
    pub prefetched_archives: u64,
    /// Archives found already local.
    pub already_local_archives: u64,
    /// Archives skipped to stay within 90% of the quota.
    pub skipped_quota_archives: u64,
    /// Client fetches served from prefetched archives.
    pub hits: u64,
    /// Prefetched bytes evicted unused.
    pub wasted_bytes: u64,
    /// Polls finished.
    pub polls: u64,
}

impl WarmupState {
    /// Record that warm-up runs for `branches`.
    pub fn enable(&self, branches: Vec<String>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.enabled = true;
        inner.branches = branches;
    }

    /// A client fetch was served `tree` from the CAS: a hit if warm-up prefetched it and no client
    /// had used it yet.
    pub fn client_used(&self, tree: &Blake3) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = inner.unused.iter().position(|(d, _)| d == tree) {
            inner.unused.remove(i);
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn prefetched(&self, tree: Blake3, bytes: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.unused.iter().any(|(d, _)| *d == tree) {
            return;
        }
        if inner.unused.len() >= MAX_TRACKED_TREES {
            inner.unused.pop_front();
        }
        inner.unused.push_back((tree, bytes));
    }

    /// A copy of the status.
    pub fn status(&self) -> WarmupStatus {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        WarmupStatus {
            enabled: inner.enabled,
            branches: inner.branches.clone(),
            last_poll: inner.last_poll.clone(),
            last_error: inner.last_error.clone(),
            last_run: inner.last_run.clone(),
            prefetched_bytes: self.prefetched_bytes.load(Ordering::Relaxed),
            prefetched_archives: self.prefetched_archives.load(Ordering::Relaxed),
            already_local_archives: self.already_local.load(Ordering::Relaxed),
            skipped_quota_archives: self.skipped_quota.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            wasted_bytes: self.wasted_bytes.load(Ordering::Relaxed),
            polls: self.polls.load(Ordering::Relaxed),
        }
    }
}

/// `OWNER/REPO:BRANCH`.
fn branch_label(repo: &GithubRepo, branch: &str) -> String {
    format!("{repo}:{branch}")
}

impl Service {
    /// One warm-up poll over every followed branch. Errors of one branch are logged and the others
    /// still warmed; the poll's last error is returned (and shown in the status).
    pub async fn warm_up_once(&self, plan: &WarmupPlan) -> Result<()> {
        // Before warming again, which could bring the same trees back.
        self.count_wasted();
        let mut last_error = None;
        for (repo, branch) in &plan.branches {
            if let Err(e) = self.warm_branch(plan, repo, branch).await {
                warn!(branch = %branch_label(repo, branch), error = %e, "warm-up failed; retrying next poll");
                last_error = Some(e);
            }
        }
        self.warmup.polls.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.warmup.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.last_poll = Some(crate::records::now_rfc3339());
        inner.last_error = last_error.as_ref().map(|e| e.to_string());
        drop(inner);
        match last_error {
            Some(e) => {
                self.warmup.errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
            None => Ok(()),
        }
    }

    async fn warm_branch(&self, plan: &WarmupPlan, repo: &GithubRepo, branch: &str) -> Result<()> {
        let runs = self.branch_runs(repo, branch, plan).await?;
        // Oldest of the chosen first, so the newest run's archives are the freshest in the store.
        for run in runs.iter().rev() {
            self.warm_run(plan, repo, run).await?;
            let mut inner = self.warmup.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.last_run.insert(
                branch_label(repo, branch),
                run.newest.entry.run.run_id.clone(),
            );
        }
        Ok(())
    }

    /// The newest `runs_back` distinct runs of `branch` (of the plan's platform) in its feed, newest
    /// first, read from the trusted area of trusted backends only: per run its newest entry and the
    /// archive file names of every entry read (every job whose records are complete: a feed entry
    /// is written after the job's producer records). Whole days are read, newest first, until
    /// enough runs are found.
    pub async fn branch_runs(
        &self,
        repo: &GithubRepo,
        branch: &str,
        plan: &WarmupPlan,
    ) -> Result<Vec<FeedRun>> {
        let prefix = in_area(
            Area::Trusted,
            &branch_feed_prefix(repo, branch).map_err(invalid)?,
        );
        let mut runs: Vec<FeedRun> = Vec::new();
        for backend in self.backends().all() {
            if !backend.trusted {
                continue;
            }
            // One LIST of the day directories (newest first), then the newest days until enough.
            let days = backend.storage.list(&prefix, Some("/")).await?;
            for day in days.common_prefixes.iter().take(MAX_FEED_DAYS) {
                if runs.len() >= plan.runs_back {
                    break;
                }
                let listing = backend.storage.list(day, None).await?;
                for obj in listing.objects.iter().filter(|o| o.key.ends_with(".json")) {
                    let Some(bytes) = backend
                        .storage
                        .get_document(&obj.key, crate::storage::MAX_JOB_MANIFEST)
                        .await?
                    else {
                        continue;
                    };
                    let record: BranchFeedRecord = match serde_json::from_slice(&bytes) {
                        Ok(r) => r,
                        Err(e) => {
                            warn!(key = %obj.key, error = %e, "ignoring malformed branch feed entry");
                            continue;
                        }
                    };
                    if record.branch != branch
                        || !record
                            .entry
                            .run
                            .repo
                            .eq_ignore_ascii_case(&repo.to_string())
                        || record.entry.run.platform != plan.platform
                        || !backend.trusts(Area::Trusted, &record.entry.bucket)
                    {
                        continue;
                    }
                    let known = runs
                        .iter()
                        .position(|r| r.newest.entry.run.run_id == record.entry.run.run_id);
                    match known {
                        Some(i) => runs[i]
                            .archives
                            .extend(record.entry.archives.iter().cloned()),
                        None if runs.len() < plan.runs_back => runs.push(FeedRun {
                            archives: record.entry.archives.iter().cloned().collect(),
                            newest: record,
                        }),
                        None => {}
                    }
                }
            }
        }
        Ok(runs)
    }

    /// Warm one run: per stage and family, resolve the stage's inbound artifacts in that run's
    /// artifact set (fingerprints from its job manifests, the rest by name) and make them local.
    async fn warm_run(&self, plan: &WarmupPlan, repo: &GithubRepo, feed: &FeedRun) -> Result<()> {
        let run = &feed.newest.entry.run;
        let mut spec = RunSpec::new(&run.run_id, run.platform);
        spec.repo = repo.clone();
        let root = RunOutputRoot::from_run(&spec).map_err(invalid)?;
        // (artifact name, family) → fingerprint, from what the run recorded, for the archives of
        // jobs with a feed entry only: a job manifest is written before its producer records, and
        // resolving a fingerprint whose record is not there yet would cache "no producer" for the
        // clients of this daemon.
        let mut fps: BTreeMap<(String, String), Blake3> = BTreeMap::new();
        if let Some(backend) = self.backends().for_bucket(root.bucket()).cloned() {
            let mut notes = Vec::new();
            for m in self.job_manifests(&backend, &root, &mut notes).await? {
                for a in m.archives {
                    let file = a.key.rsplit('/').next().unwrap_or(&a.key);
                    if a.built_here && feed.archives.contains(file) {
                        fps.insert((a.name, a.family), a.fingerprint);
                    }
                }
            }
        }
        let mut done: BTreeSet<String> = BTreeSet::new();
        for (stage, names) in &plan.stages {
            for family in &plan.families {
                let wanted = names
                    .iter()
                    .map(|n| Wanted {
                        selector: ArchiveSelector::Artifact(n.clone()),
                        fingerprint: fps
                            .get(&(n.clone(), family.clone()))
                            .or_else(|| fps.get(&(n.clone(), "generic".into())))
                            .copied(),
                    })
                    .collect();
                let request = ResolveRequest {
                    stage: stage.clone(),
                    family: family.clone(),
                    platform: run.platform,
                    wanted,
                    policy: Policy {
                        allow_untrusted: false,
                        allow_failed: false,
                        run_id: Some(run.run_id.clone()),
                        run_repo: Some(repo.clone()),
                        refresh: false,
                    },
                    exclude_components: Vec::new(),
                };
                self.wait_for_clients().await;
                let resolutions = self.resolve(&request).await?;
                for (candidate, archive) in resolutions
                    .iter()
                    .filter_map(|r| r.chosen.as_ref())
                    .flat_map(|(c, archives)| archives.iter().map(move |a| (c, a)))
                {
                    if !candidate.trusted
                        || !done.insert(format!("{}/{}", candidate.bucket, archive.key))
                    {
                        continue;
                    }
                    self.warm_archive(plan, candidate, archive).await?;
                }
            }
        }
        Ok(())
    }

    /// Make one archive local unless it already is or would fill the store past the line.
    async fn warm_archive(
        &self,
        plan: &WarmupPlan,
        candidate: &super::policy::Candidate,
        archive: &super::policy::OfferedArchive,
    ) -> Result<()> {
        self.wait_for_clients().await;
        let flight_key = format!("{}/{}", candidate.bucket, archive.key);
        if self.local_tree(archive, &flight_key)?.is_some() {
            self.warmup.already_local.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if let Some(quota) = self.store().max_bytes() {
            // Content size when a record says, else a generous guess from the archive's size.
            let size = archive
                .uncompressed_size
                .unwrap_or(archive.compressed_size.saturating_mul(4));
            let line = (quota as f64 * WARMUP_FILL) as u64;
            if self.store().bytes().saturating_add(size) > line {
                debug!(key = %archive.key, size, store = self.store().bytes(), line, "warm-up: would pass 90% of the quota; skipped");
                self.warmup.skipped_quota.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        let started = Instant::now();
        let (local, lease) = self.make_local(candidate, archive).await?;
        drop(lease);
        if local.from_cas {
            self.warmup.already_local.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        info!(key = %archive.key, bytes = local.downloaded_bytes, "warm-up prefetched");
        self.warmup
            .prefetched_bytes
            .fetch_add(local.downloaded_bytes, Ordering::Relaxed);
        self.warmup
            .prefetched_archives
            .fetch_add(1, Ordering::Relaxed);
        self.warmup
            .prefetched(local.tree_digest, local.tree.total_size());
        if let Some(rest) = pace(
            local.downloaded_bytes,
            plan.max_bytes_per_sec,
            started.elapsed(),
        ) {
            tokio::time::sleep(rest).await;
        }
        Ok(())
    }

    /// Wait while client downloads are in flight (warm-up's own are sequential and finished).
    async fn wait_for_clients(&self) {
        while self.in_flight_keys().0 > 0 {
            tokio::time::sleep(YIELD_POLL).await;
        }
    }

    /// Prefetched trees no longer complete in the store and never used: wasted bytes.
    fn count_wasted(&self) {
        let unused: Vec<(Blake3, u64)> = {
            let inner = self.warmup.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.unused.iter().copied().collect()
        };
        let mut gone = Vec::new();
        for (digest, bytes) in unused {
            let complete = matches!(self.store().tree(&digest), Ok(Some(t)) if self.store().has_blobs(&t).unwrap_or(true));
            if !complete {
                gone.push(digest);
                self.warmup.wasted_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
        }
        if !gone.is_empty() {
            let mut inner = self.warmup.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.unused.retain(|(d, _)| !gone.contains(d));
        }
    }
}

/// How long to wait after downloading `bytes` in `elapsed` so the average stays at most
/// `max_bytes_per_sec` (0: no cap).
fn pace(bytes: u64, max_bytes_per_sec: u64, elapsed: Duration) -> Option<Duration> {
    if max_bytes_per_sec == 0 {
        return None;
    }
    let budget = Duration::from_secs_f64(bytes as f64 / max_bytes_per_sec as f64);
    budget.checked_sub(elapsed).filter(|rest| !rest.is_zero())
}

/// Lower the calling thread's CPU priority to `nice` and, when `nice > 0`, put its I/O in the idle
/// class (Linux `ioprio_set`); failures are logged, not fatal. Warm-up's own runtime runs this on
/// each of its threads, so client requests on the main runtime keep their priority.
pub fn lower_thread_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    // SAFETY: plain syscalls on the calling thread; no memory is passed.
    unsafe {
        let tid = libc::gettid();
        if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) != 0 {
            warn!(error = %std::io::Error::last_os_error(), "warm-up: setpriority failed");
        }
        // IOPRIO_WHO_PROCESS = 1 (a thread id), IOPRIO_CLASS_IDLE = 3 << IOPRIO_CLASS_SHIFT (13).
        if libc::syscall(libc::SYS_ioprio_set, 1, tid, 3 << 13) != 0 {
            debug!(error = %std::io::Error::last_os_error(), "warm-up: ioprio_set failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(i: usize) -> Blake3 {
        Blake3::of(&i.to_le_bytes())
    }

    #[test]
    fn downloads_are_paced_to_the_bandwidth_cap_on_average() {
        let ms = Duration::from_millis;
        // 10 MB at 5 MB/s takes 2 s: a download that took 0.5 s waits 1.5 s more.
        assert_eq!(pace(10_000_000, 5_000_000, ms(500)), Some(ms(1500)));
        // Slower than the cap already, or no cap: no wait.
        assert_eq!(pace(10_000_000, 5_000_000, ms(2500)), None);
        assert_eq!(pace(10_000_000, 0, ms(1)), None);
    }

    #[test]
    fn a_lowered_thread_runs_niced_with_idle_io_and_others_keep_their_priority() {
        // SAFETY (all three closures): plain syscalls about the calling thread.
        let priority =
            || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        let io_class = || unsafe { libc::syscall(libc::SYS_ioprio_get, 1, libc::gettid()) >> 13 };
        let before = std::thread::spawn(move || (priority(), io_class()))
            .join()
            .unwrap();
        let lowered = std::thread::spawn(move || {
            lower_thread_priority(10);
            (priority(), io_class())
        })
        .join()
        .unwrap();
        let after = std::thread::spawn(move || (priority(), io_class()))
            .join()
            .unwrap();
        // setpriority sets the nice value (an unprivileged process cannot go below what it has).
        assert_eq!(
            lowered,
            (before.0.max(10), 3),
            "nice 10, I/O class idle (3)"
        );
        assert_eq!(after, before, "only the lowered thread changed");
    }

    #[test]
    fn a_prefetched_tree_is_one_hit_for_the_first_client_only() {
        let s = WarmupState::default();
        s.prefetched(digest(1), 100);
        s.prefetched(digest(1), 100);
        s.client_used(&digest(2));
        assert_eq!(s.hits.load(Ordering::Relaxed), 0, "never prefetched");
        s.client_used(&digest(1));
        s.client_used(&digest(1));
        assert_eq!(
            s.hits.load(Ordering::Relaxed),
            1,
            "the second client is not warm-up's hit"
        );
    }

    #[test]
    fn the_unused_set_is_bounded_and_forgets_the_oldest() {
        let s = WarmupState::default();
        for i in 0..MAX_TRACKED_TREES + 10 {
            s.prefetched(digest(i), 1);
        }
        let inner = s.inner.lock().unwrap();
        assert_eq!(inner.unused.len(), MAX_TRACKED_TREES);
        assert_eq!(inner.unused.front().map(|(d, _)| *d), Some(digest(10)));
        drop(inner);
        s.client_used(&digest(0));
        assert_eq!(s.hits.load(Ordering::Relaxed), 0, "forgotten");
        s.client_used(&digest(MAX_TRACKED_TREES + 9));
        assert_eq!(s.hits.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn status_reports_the_branches_and_counters() {
        let s = WarmupState::default();
        assert!(!s.status().enabled);
        s.enable(vec!["ROCm/TheRock:main".into()]);
        s.prefetched_bytes.fetch_add(7, Ordering::Relaxed);
        let st = s.status();
        assert!(st.enabled);
        assert_eq!(st.branches, ["ROCm/TheRock:main"]);
        assert_eq!(st.prefetched_bytes, 7);
        assert_eq!(st.last_poll, None);
    }
}
