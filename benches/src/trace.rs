//! The eviction trace benchmark (`cairn-bench trace`): replay a CI-shaped access trace against the
//! real store index and eviction code (`Index`, `evict::evict_step`, `score::Ranker`, leases) with
//! synthetic records — blob sizes and source archives recorded in the index, no blob files — under
//! quotas of a fraction of the trace's working set, once per eviction policy, and count what had to
//! be downloaded again.
//!
//! # The trace
//!
//! A linear history of [`TraceShape::commits`] commits. Artifacts belong to stages; each is either
//! `_generic` (one archive every family uses) or per family. At every commit each artifact changes
//! with its stage's probability; a change rewrites some of its files (the big binaries) and keeps
//! others (headers, data), so versions share blobs, and some files of a per-family artifact are
//! identical across families. A fraction of artifacts is published as `.tar.xz` (legacy runs).
//!
//! - **CI runs** on every `run_every`-th commit of the second half of the history: for each stage
//!   after the first, for each family, a job fetches its inbound archives (every earlier stage's
//!   `_generic` and that family's archives), leased for the job's duration.
//! - **A bisect** over the first `bisect_commits` commits, run between two CI runs: binary search
//!   for a bad commit, each probe fetching the bisect stage's inbound set for one family at that
//!   commit and prefetching both possible next probes, as `cairn bisect` does; every archive of the
//!   session stays leased until the bisect ends (`cairn bisect`'s session lease).
//!
//! Each archive is one build of one artifact: its *generation* is the commit at which that content
//! first appeared (a CI run's id orders builds the same way), recorded at ingest as the daemon does
//! from the producing run's id, so eviction can tell superseded builds from current ones.
//!
//! # What is measured
//!
//! A fetch of an archive whose blobs are not all present downloads and decodes the whole archive
//! (`download`): *downloaded bytes* are its compressed bytes; *re-downloaded* bytes are those of
//! archives downloaded before (the first download of each archive is compulsory for any policy);
//! *decode CPU-seconds* follow [`CostModel::decode_secs`] (zstd-3 0.7 GB/s, xz 0.063 GB/s of
//! content per core).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use cairn_daemon::store::LOW_WATERMARK;
use cairn_daemon::store::cas::Cas;
use cairn_daemon::store::evict::{self, Leases};
use cairn_daemon::store::index::{Index, IngestCommit, SourceArchive, Version};
use cairn_daemon::store::score::{CostModel, EvictionPolicy, Ranker};
use cairn_fingerprint::{Blake3, Compression, Sha256, Tree};

/// The trace's shape.
#[derive(Debug, Clone)]
pub struct TraceShape {
    /// PRNG seed.
    pub seed: u64,
    /// Commits in the history.
    pub commits: usize,
    /// A CI run every this many commits, over the second half of the history.
    pub run_every: usize,
    /// The bisect searches the first this many commits.
    pub bisect_commits: usize,
    /// GPU families.
    pub families: usize,
}

impl Default for TraceShape {
    fn default() -> TraceShape {
        TraceShape {
            seed: 16,
            commits: 60,
            run_every: 3,
            bisect_commits: 30,
            families: 4,
        }
    }
}

/// One stage: how many artifacts it produces, their size and how often they change.
struct StageSpec {
    name: &'static str,
    generic: usize,
    per_family: usize,
    /// Mean content bytes of one archive.
    mean_bytes: u64,
    /// Probability that an artifact changes at a commit.
    change: f64,
}

const STAGES: &[StageSpec] = &[
    StageSpec {
        name: "foundation",
        generic: 4,
        per_family: 0,
        mean_bytes: 8 << 20,
        change: 0.01,
    },
    StageSpec {
        name: "compiler",
        generic: 3,
        per_family: 0,
        mean_bytes: 300 << 20,
        change: 0.03,
    },
    StageSpec {
        name: "core-runtime",
        generic: 3,
        per_family: 2,
        mean_bytes: 40 << 20,
        change: 0.04,
    },
    StageSpec {
        name: "math-libs",
        generic: 4,
        per_family: 6,
        mean_bytes: 120 << 20,
        change: 0.05,
    },
    StageSpec {
        name: "ml-libs",
        generic: 2,
        per_family: 3,
        mean_bytes: 80 << 20,
        change: 0.05,
    },
    StageSpec {
        name: "profiler",
        generic: 2,
        per_family: 1,
        mean_bytes: 20 << 20,
        change: 0.03,
    },
];

/// The stage whose inbound set the bisect fetches.
const BISECT_STAGE: usize = 4;

/// Files per archive (one large binary per few small files, as TheRock's archives are).
const FILES_PER_ARCHIVE: usize = 24;

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One artifact (for one family, or `_generic`), across the history.
struct Artifact {
    stage: usize,
    family: Option<usize>,
    name: String,
    compression: Compression,
    /// Compression ratio (content / archive).
    ratio: f64,
    /// Per file: its size, whether a change of the artifact rewrites it, and whether its content is
    /// the same for every family.
    files: Vec<(u64, bool, bool)>,
    /// Per commit: the version of each file.
    versions: Vec<Vec<u32>>,
}

/// One archive as fetched: its identity, source record and blobs.
#[derive(Clone)]
struct ArchiveAt {
    id: Blake3,
    /// The artifact (name and family) this is a version of.
    lineage: u64,
    /// The commit at which this version first appeared (a newer build of the same artifact has a
    /// larger one).
    generation: u32,
    compression: Compression,
    archive_bytes: u64,
    content_bytes: u64,
    blobs: Vec<(Blake3, u64)>,
}

/// A fetch of a set of archives (one job or one bisect probe), leased for its duration.
pub struct Job {
    archives: Vec<ArchiveAt>,
    /// A fetch of the bisect session: its archives stay leased until the session's last fetch, as
    /// `cairn bisect` leases every artifact of its session until the bisect ends.
    session: bool,
}

/// The generated trace.
pub struct Trace {
    /// Jobs, in order.
    pub jobs: Vec<Job>,
    /// What the trace is made of, for the report.
    pub summary: TraceSummary,
}

/// The trace's figures.
#[derive(Debug, Clone, Default)]
pub struct TraceSummary {
    /// CI runs.
    pub runs: usize,
    /// Jobs of those runs.
    pub ci_jobs: usize,
    /// Bisect probes and prefetches.
    pub bisect_fetches: usize,
    /// Archive fetches (accesses).
    pub accesses: usize,
    /// Distinct archives.
    pub archives: usize,
    /// Of which `.tar.xz`.
    pub xz_archives: usize,
    /// Distinct blobs.
    pub blobs: usize,
    /// Their bytes: the working set.
    pub working_set: u64,
    /// Content bytes one CI run fetches (distinct).
    pub run_bytes: u64,
    /// Compressed bytes of the first download of every archive (compulsory for any policy).
    pub compulsory_archive_bytes: u64,
}

impl Artifact {
    fn at(&self, commit: usize) -> ArchiveAt {
        let fam = self
            .family
            .map_or("generic".to_string(), |f| format!("gfx{f}"));
        let mut blobs: Vec<(Blake3, u64)> = self
            .files
            .iter()
            .enumerate()
            .map(|(i, (size, _, common))| {
                let owner = if *common { "any" } else { fam.as_str() };
                let v = self.versions[commit][i];
                let d = Blake3::of(format!("{}/{owner}/{i}/v{v}", self.name).as_bytes());
                (d, *size)
            })
            .collect();
        blobs.sort();
        blobs.dedup_by_key(|(d, _)| *d);
        let mut h = blake3::Hasher::new();
        h.update(format!("{}_{fam}", self.name).as_bytes());
        for (d, _) in &blobs {
            h.update(&d.0);
        }
        let content_bytes: u64 = blobs.iter().map(|(_, s)| s).sum();
        let generation = (0..=commit)
            .find(|&c| self.versions[c] == self.versions[commit])
            .unwrap_or(commit) as u32;
        let lineage = u64::from_le_bytes(
            Blake3::of(format!("{}_{fam}", self.name).as_bytes()).0[..8]
                .try_into()
                .expect("8 bytes"),
        );
        ArchiveAt {
            id: Blake3(*h.finalize().as_bytes()),
            lineage,
            generation,
            compression: self.compression,
            archive_bytes: (content_bytes as f64 / self.ratio) as u64,
            content_bytes,
            blobs,
        }
    }
}

/// Generate the trace for `shape` (deterministic).
pub fn generate(shape: &TraceShape) -> Trace {
    let mut rng = Rng(shape.seed);
    let mut artifacts: Vec<Artifact> = Vec::new();
    for (s, spec) in STAGES.iter().enumerate() {
        let make = |rng: &mut Rng, k: usize, family: Option<usize>, files_of: Option<&Artifact>| {
            let xz = rng.unit() < 0.25;
            let files = match files_of {
                Some(a) => a.files.clone(),
                None => {
                    // Heavy-tailed sizes: a few binaries carry most bytes.
                    let weights: Vec<f64> = (0..FILES_PER_ARCHIVE)
                        .map(|_| rng.unit().powi(6) + 0.002)
                        .collect();
                    let scale = (0.5 + rng.unit()) * spec.mean_bytes as f64;
                    let total: f64 = weights.iter().sum();
                    weights
                        .iter()
                        .map(|w| {
                            let size = (w / total * scale) as u64 + 1;
                            // Large files are rewritten by a change; small ones mostly not.
                            let volatile = *w > 0.05 || rng.unit() < 0.3;
                            let common = family.is_some() && !volatile && rng.unit() < 0.6;
                            (size, volatile, common)
                        })
                        .collect()
                }
            };
            Artifact {
                stage: s,
                family,
                name: format!("{}-{k}", spec.name),
                compression: if xz {
                    Compression::Xz
                } else {
                    Compression::Zstd
                },
                ratio: if xz { 3.6 } else { 3.0 } * (0.8 + 0.4 * rng.unit()),
                files,
                versions: Vec::new(),
            }
        };
        for k in 0..spec.generic {
            artifacts.push(make(&mut rng, k, None, None));
        }
        for k in 0..spec.per_family {
            let first = make(&mut rng, spec.generic + k, Some(0), None);
            for f in 1..shape.families {
                let a = make(&mut rng, spec.generic + k, Some(f), Some(&first));
                artifacts.push(a);
            }
            artifacts.push(first);
        }
    }
    // Versions: an artifact changes at a commit with its stage's probability, rewriting its
    // volatile files (and, rarely, a stable one). Per-family builds of one artifact change together.
    let mut changes: HashMap<String, Vec<Vec<bool>>> = HashMap::new();
    for a in &artifacts {
        if changes.contains_key(&a.name) {
            continue;
        }
        let spec = &STAGES[a.stage];
        let per_commit = (0..shape.commits)
            .map(|c| {
                let changed = c > 0 && rng.unit() < spec.change;
                a.files
                    .iter()
                    .map(|(_, volatile, _)| changed && (*volatile || rng.unit() < 0.1))
                    .collect()
            })
            .collect();
        changes.insert(a.name.clone(), per_commit);
    }
    for a in &mut artifacts {
        let ch = &changes[&a.name];
        let mut v = vec![0u32; a.files.len()];
        for commit in ch {
            for (i, changed) in commit.iter().enumerate() {
                v[i] += u32::from(*changed);
            }
            a.versions.push(v.clone());
        }
    }

    let inbound = |stage: usize, family: usize, commit: usize| -> Job {
        Job {
            archives: artifacts
                .iter()
                .filter(|a| a.stage < stage && a.family.is_none_or(|f| f == family))
                .map(|a| a.at(commit))
                .collect(),
            session: false,
        }
    };
    let mut jobs = Vec::new();
    let mut summary = TraceSummary::default();
    let ci_commits: Vec<usize> = (shape.commits / 2..shape.commits)
        .step_by(shape.run_every.max(1))
        .collect();
    let bisect_after = ci_commits.len() / 2;
    for (r, &commit) in ci_commits.iter().enumerate() {
        let mut run_blobs: HashMap<Blake3, u64> = HashMap::new();
        for stage in 1..STAGES.len() {
            for family in 0..shape.families {
                let job = inbound(stage, family, commit);
                for a in &job.archives {
                    run_blobs.extend(a.blobs.iter().copied());
                }
                jobs.push(job);
                summary.ci_jobs += 1;
            }
        }
        summary.run_bytes = summary.run_bytes.max(run_blobs.values().sum());
        summary.runs += 1;
        if r + 1 == bisect_after {
            // Binary search over [0, bisect_commits) for a bad commit; each probe also prefetches
            // both candidates that could come next.
            let bad = (rng.next() as usize) % shape.bisect_commits.max(1);
            let (mut good, mut bad_hi) = (0usize, shape.bisect_commits.saturating_sub(1));
            let family = 0;
            while bad_hi > good + 1 {
                let mid = (good + bad_hi) / 2;
                jobs.push(Job {
                    session: true,
                    ..inbound(BISECT_STAGE, family, mid)
                });
                summary.bisect_fetches += 1;
                for next in [(good + mid) / 2, (mid + bad_hi) / 2] {
                    if next != mid {
                        jobs.push(Job {
                            session: true,
                            ..inbound(BISECT_STAGE, family, next)
                        });
                        summary.bisect_fetches += 1;
                    }
                }
                if mid >= bad {
                    bad_hi = mid;
                } else {
                    good = mid;
                }
            }
        }
    }
    let mut archives: HashMap<Blake3, (u64, Compression)> = HashMap::new();
    let mut blobs: HashMap<Blake3, u64> = HashMap::new();
    for j in &jobs {
        summary.accesses += j.archives.len();
        for a in &j.archives {
            archives.insert(a.id, (a.archive_bytes, a.compression));
            blobs.extend(a.blobs.iter().copied());
        }
    }
    summary.archives = archives.len();
    summary.xz_archives = archives
        .values()
        .filter(|(_, c)| *c == Compression::Xz)
        .count();
    summary.compulsory_archive_bytes = archives.values().map(|(b, _)| b).sum();
    summary.blobs = blobs.len();
    summary.working_set = blobs.values().sum();
    Trace { jobs, summary }
}

/// What one replay measured.
#[derive(Debug, Clone, Default)]
pub struct ReplayResult {
    /// Archive downloads.
    pub downloads: u64,
    /// Their compressed bytes.
    pub downloaded_bytes: u64,
    /// Downloads of archives downloaded before.
    pub redownloads: u64,
    /// Their compressed bytes.
    pub redownloaded_bytes: u64,
    /// Decode CPU-seconds of every download.
    pub decode_secs: f64,
    /// Decode CPU-seconds of the re-downloads.
    pub redownload_decode_secs: f64,
    /// Blobs evicted.
    pub evicted_blobs: u64,
    /// Largest bytes the index accounted for after an eviction pass.
    pub peak_bytes: u64,
    /// Wall time of the replay (index and eviction work).
    pub elapsed_secs: f64,
}

/// Replay `trace` in a fresh store index under `dir` with `quota` bytes and `policy`, the way
/// `LocalStore` and the background evictor run it: every fetch leases its archives' blobs for the
/// job, a missing archive is ingested (its records committed), and after each ingest and at the end
/// of each job eviction steps of at most 512 victims run from the quota down to its low watermark.
pub fn replay(
    trace: &Trace,
    dir: &Path,
    quota: u64,
    policy: EvictionPolicy,
    half_life_of_quota: f64,
) -> Result<ReplayResult> {
    let started = Instant::now();
    std::fs::create_dir_all(dir)?;
    let index = Index::open(&dir.join("index.redb"))?;
    let cas = Cas::open(dir)?;
    let leases: Arc<Leases> = Leases::new();
    let ledger = evict::EvictionLedger::default();
    let model = CostModel::default();
    let empty = Tree::new(Vec::new(), Vec::new());
    let mut clock = 0u64;
    let mut bytes = 0u64;
    let mut seen: HashSet<Blake3> = HashSet::new();
    let mut out = ReplayResult::default();
    let evict = |clock: u64, bytes: &mut u64, out: &mut ReplayResult| -> Result<()> {
        if *bytes <= quota {
            return Ok(());
        }
        let low = (quota as f64 * LOW_WATERMARK) as u64;
        loop {
            // As `LocalStore` ranks (half-life: the quota), unless the bench asks otherwise.
            let half_life = (quota.max(1 << 20) as f64 * half_life_of_quota) as u64;
            let ranker = Ranker::new(policy, clock, half_life);
            let store = evict::Evictable {
                index: &index,
                cas: &cas,
                leases: &leases,
                ledger: &ledger,
            };
            let r = evict::evict_step(store, &ranker, *bytes, low, 512)?;
            *bytes = bytes.saturating_sub(r.evicted_bytes);
            out.evicted_blobs += r.evicted_blobs;
            if !r.more || r.evicted_blobs == 0 {
                break;
            }
        }
        out.peak_bytes = out.peak_bytes.max(*bytes);
        Ok(())
    };
    let mut session = None;
    for job in &trace.jobs {
        if !job.session {
            session = None;
        }
        let mut lease = leases.lease();
        for a in &job.archives {
            // Lease first, then look (as `Service::fetch` does).
            lease.extend(a.blobs.iter().copied());
            if job.session {
                session
                    .get_or_insert_with(|| leases.lease())
                    .extend(a.blobs.iter().copied());
            }
            let digests: Vec<Blake3> = a.blobs.iter().map(|(d, _)| *d).collect();
            if !index.has_all(&mut digests.iter())? {
                let decode = model.decode_secs(Some(a.compression), a.content_bytes);
                out.downloads += 1;
                out.downloaded_bytes += a.archive_bytes;
                out.decode_secs += decode;
                if !seen.insert(a.id) {
                    out.redownloads += 1;
                    out.redownloaded_bytes += a.archive_bytes;
                    out.redownload_decode_secs += decode;
                }
                clock += a.content_bytes.max(1);
                let added = index.commit_ingest(&IngestCommit {
                    archive: Sha256(a.id.0),
                    key: None,
                    tree_digest: a.id,
                    tree: &empty,
                    blobs: &a.blobs,
                    written: &[],
                    now: clock,
                    source: SourceArchive {
                        archive_bytes: a.archive_bytes,
                        content_bytes: a.content_bytes,
                        compression: Some(a.compression),
                    },
                    version: Some(Version {
                        lineage: a.lineage,
                        generation: u64::from(a.generation),
                    }),
                })?;
                bytes += added.iter().map(|(_, s)| s).sum::<u64>();
                evict(clock, &mut bytes, &mut out)?;
            } else {
                seen.insert(a.id);
            }
            clock += a.content_bytes.max(1);
            index.touch_blobs(&digests, clock)?;
        }
        drop(lease);
        evict(clock, &mut bytes, &mut out)?;
    }
    out.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(out)
}

/// An offline bound for the replay: which eviction order an archive-level cache uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Least recently used archive first (the archive-level twin of [`EvictionPolicy::Lru`]).
    Lru,
    /// The archive whose next use is furthest away first (Belady's rule; needs the future, so it
    /// is a bound, not a policy).
    Furthest,
}

/// What an archive-level replay measured.
#[derive(Debug, Clone, Default)]
pub struct BoundResult {
    /// Downloads of archives downloaded before.
    pub redownloads: u64,
    /// Their compressed bytes.
    pub redownloaded_bytes: u64,
}

/// Replay `trace` at archive granularity (an archive is present or not; content shared between
/// archives is counted in each) with `quota` content bytes, leases per job and the same 90% low
/// watermark as [`replay`], evicting in `bound`'s order. With [`Bound::Furthest`] this estimates
/// how far below LRU any online policy could get on the trace: the headroom the cost-aware
/// policy's target assumes.
pub fn replay_bound(trace: &Trace, quota: u64, bound: Bound) -> BoundResult {
    // Every access in order, and for each the position of the same archive's next access.
    let accesses: Vec<(usize, &ArchiveAt)> = trace
        .jobs
        .iter()
        .enumerate()
        .flat_map(|(j, job)| job.archives.iter().map(move |a| (j, a)))
        .collect();
    let mut next_use = vec![usize::MAX; accesses.len()];
    let mut last_seen: HashMap<Blake3, usize> = HashMap::new();
    for (i, (_, a)) in accesses.iter().enumerate().rev() {
        if let Some(&n) = last_seen.get(&a.id) {
            next_use[i] = n;
        }
        last_seen.insert(a.id, i);
    }
    // Present archives: id → (content bytes, archive bytes, last use, next use).
    let mut present: HashMap<Blake3, (u64, u64, usize, usize)> = HashMap::new();
    let mut seen: HashSet<Blake3> = HashSet::new();
    let mut bytes = 0u64;
    let mut out = BoundResult::default();
    let low = (quota as f64 * LOW_WATERMARK) as u64;
    let evict = |present: &mut HashMap<Blake3, (u64, u64, usize, usize)>,
                 bytes: &mut u64,
                 leased: &HashSet<Blake3>| {
        if *bytes <= quota {
            return;
        }
        let mut candidates: Vec<(Blake3, u64, usize, usize)> = present
            .iter()
            .filter(|(id, _)| !leased.contains(*id))
            .map(|(id, (c, _, last, next))| (*id, *c, *last, *next))
            .collect();
        match bound {
            Bound::Lru => candidates.sort_by_key(|(id, _, last, _)| (*last, *id)),
            Bound::Furthest => {
                candidates.sort_by_key(|(id, _, _, next)| (std::cmp::Reverse(*next), *id))
            }
        }
        for (id, c, _, _) in candidates {
            if *bytes <= low {
                break;
            }
            present.remove(&id);
            *bytes -= c;
        }
    };
    let mut i = 0;
    let mut session: HashSet<Blake3> = HashSet::new();
    for job in &trace.jobs {
        if !job.session {
            session.clear();
        }
        let mut leased: HashSet<Blake3> = session.clone();
        for a in &job.archives {
            leased.insert(a.id);
            if job.session {
                session.insert(a.id);
            }
            match present.get_mut(&a.id) {
                Some(p) => {
                    p.2 = i;
                    p.3 = next_use[i];
                }
                None => {
                    if !seen.insert(a.id) {
                        out.redownloads += 1;
                        out.redownloaded_bytes += a.archive_bytes;
                    }
                    present.insert(a.id, (a.content_bytes, a.archive_bytes, i, next_use[i]));
                    bytes += a.content_bytes;
                    evict(&mut present, &mut bytes, &leased);
                }
            }
            i += 1;
        }
        evict(&mut present, &mut bytes, &session);
    }
    out
}
