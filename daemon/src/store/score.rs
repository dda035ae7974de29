//! Eviction order: which blob goes first, as a pure function of its index record
//! ([`BlobRecord`]), the store's clock and a half-life. No I/O; `evict.rs` reads the records and
//! applies the order under the eviction lock.
//!
//! [`EvictionPolicy::CostAware`] (the default) ranks a blob by the **expected refetch cost per byte
//! kept**, and evicts the lowest first:
//!
//! ```text
//! keep value = reuse × refs × refetch_seconds(source archive) / content_bytes(source archive)
//! reuse      = (1 + log2 max(uses, 1)) × 2^(−age / half_life)    age = clock now − last use (bytes)
//! refetch    = per_object + archive_bytes / download_rate + content_bytes / decode_rate(compression)
//! ```
//!
//! - **Refetch cost is the whole source archive's**: a miss on one blob downloads and decodes the
//!   archive it came from, so the cost is the archive's, spread over the bytes of content it holds.
//!   Small archives (per-object latency) and xz archives (decode ≈ 11× zstd-3's CPU per byte) cost
//!   more per byte kept than large zstd ones.
//! - **Trees that reference it** (`refs`): a `_generic` blob carried by every family's archive is
//!   needed by every family's fetch.
//! - **Frequency with decay**: uses count (logarithmically: a `_generic` artifact every job of every
//!   run leases would otherwise outweigh everything for many runs after it went stale), halved for
//!   every `half_life` bytes of traffic since the last use, so an artifact every CI run reuses outranks one a bisect touched once, yet stale
//!   artifacts of old runs lose their rank. A blob that has just arrived (uses 1) does not push out
//!   blobs with a history of reuse, which is what keeps a working set larger than the quota from
//!   thrashing (LRU misses on every access of a cyclic trace larger than its cache).
//! - **Whole trees together**: the blobs of one archive are ingested and leased together, so they
//!   share `last_use`, `uses` and source, hence the same value; ties break by `last_use`, so an
//!   archive's exclusive blobs are evicted together rather than one per archive (which would force
//!   every archive to be fetched again while freeing little). Blobs it shares with other trees have
//!   more `refs` and stay.
//!
//! - **Superseded builds first**: a blob whose artifact has been ingested since in a newer build
//!   ([`BlobRecord::superseded`], from the index's versions) goes before every current one, in the
//!   order above. CI jobs fetch the newest build of each artifact; an older build is wanted again
//!   only by a bisect or an old branch, and a bisect leases its session's builds while it runs.
//!
//! [`EvictionPolicy::Lru`] ranks by `last_use` alone (the previous policy; kept for comparison by
//! the trace benchmark, `cairn-bench trace`).
//!
//! Leases and pins are not this module's concern: leased blobs are never candidates (`evict.rs`).

use cairn_fingerprint::Compression;

use crate::store::index::BlobRecord;

/// Which blobs eviction takes first.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum EvictionPolicy {
    /// Least recently used first.
    Lru,
    /// Lowest expected refetch cost per byte kept first (see the module docs).
    #[default]
    CostAware,
}

/// The cost model of fetching an archive again. The defaults are this project's measurements on a
/// CI machine (`BENCHMARKS.md`, *Physical limits*): zstd-3 decodes at ~0.7 GB/s per core, xz
/// preset 6 at ~0.06 GB/s (≈ 11×), S3 delivers ~100 MB/s to one machine, and an object costs
/// ~30 ms of requests (HEAD, sidecar, first byte) before its first byte.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostModel {
    /// Seconds of requests per archive before its bytes flow.
    pub per_object_secs: f64,
    /// Download rate, bytes per second.
    pub download_bytes_per_sec: f64,
    /// zstd decode rate, content bytes per second.
    pub zstd_decode_bytes_per_sec: f64,
    /// xz decode rate, content bytes per second.
    pub xz_decode_bytes_per_sec: f64,
}

impl Default for CostModel {
    fn default() -> CostModel {
        CostModel {
            per_object_secs: 0.03,
            download_bytes_per_sec: 100e6,
            zstd_decode_bytes_per_sec: 700e6,
            xz_decode_bytes_per_sec: 63e6,
        }
    }
}

impl CostModel {
    /// CPU seconds to decode `content_bytes` of an archive of `compression` (unknown: zstd).
    pub fn decode_secs(&self, compression: Option<Compression>, content_bytes: u64) -> f64 {
        let rate = match compression {
            Some(Compression::Xz) => self.xz_decode_bytes_per_sec,
            Some(Compression::Zstd) | None => self.zstd_decode_bytes_per_sec,
        };
        content_bytes as f64 / rate
    }

    /// Seconds to fetch the archive again: requests, download, decode.
    pub fn refetch_secs(&self, r: &BlobRecord) -> f64 {
        let s = &r.source;
        self.per_object_secs
            + s.archive_bytes as f64 / self.download_bytes_per_sec
            + self.decode_secs(s.compression, s.content_bytes)
    }

    /// Refetch seconds per byte of content the archive's blobs occupy.
    pub fn refetch_secs_per_byte(&self, r: &BlobRecord) -> f64 {
        self.refetch_secs(r) / r.source.content_bytes.max(r.size).max(1) as f64
    }
}

/// An eviction rank: (current build, keep value or recency, last use); lower goes first.
pub type Rank = (bool, u64, u64);

/// Ranks blobs for eviction: lower ranks go first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranker {
    /// The policy.
    pub policy: EvictionPolicy,
    /// The cost model (cost-aware only).
    pub model: CostModel,
    /// The store's clock now.
    pub now: u64,
    /// Bytes of traffic over which a use loses half its weight (cost-aware only; the store uses its
    /// quota: a blob's history fades over the traffic that would cycle the whole store).
    pub half_life: u64,
}

impl Ranker {
    /// A ranker with the default cost model.
    pub fn new(policy: EvictionPolicy, now: u64, half_life: u64) -> Ranker {
        Ranker {
            policy,
            model: CostModel::default(),
            now,
            half_life: half_life.max(1),
        }
    }

    /// The expected refetch seconds per byte saved by keeping `r` (cost-aware value; see the
    /// module docs).
    pub fn keep_value(&self, r: &BlobRecord) -> f64 {
        let age = self.now.saturating_sub(r.last_use) as f64;
        let uses = f64::from(r.uses.max(1));
        let reuse = (1.0 + uses.log2()) * (-age / self.half_life as f64).exp2();
        reuse * f64::from(r.refs.max(1)) * self.model.refetch_secs_per_byte(r)
    }

    /// The sort key: evict ascending. Ties (the blobs of one archive) are broken by `last_use` and
    /// then by the caller (digest), so they go together.
    pub fn rank(&self, r: &BlobRecord) -> Rank {
        match self.policy {
            EvictionPolicy::Lru => (true, r.last_use, 0),
            // A non-negative finite f64's bits order like the number.
            EvictionPolicy::CostAware => {
                let v = self.keep_value(r);
                let v = if v.is_finite() && v > 0.0 { v } else { 0.0 };
                (!r.superseded, v.to_bits(), r.last_use)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::SourceArchive;

    const MB: u64 = 1_000_000;

    fn rec(size: u64, last_use: u64, uses: u32, refs: u32, source: SourceArchive) -> BlobRecord {
        BlobRecord {
            size,
            last_use,
            uses,
            refs,
            source,
            superseded: false,
        }
    }

    fn zst(archive: u64, content: u64) -> SourceArchive {
        SourceArchive {
            archive_bytes: archive,
            content_bytes: content,
            compression: Some(Compression::Zstd),
        }
    }

    fn xz(archive: u64, content: u64) -> SourceArchive {
        SourceArchive {
            compression: Some(Compression::Xz),
            ..zst(archive, content)
        }
    }

    /// Order a set of records by a ranker, returning their indices, first evicted first.
    fn order(ranker: &Ranker, records: &[BlobRecord]) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..records.len()).collect();
        idx.sort_by_key(|&i| (ranker.rank(&records[i]), i));
        idx
    }

    fn ranker(now: u64) -> Ranker {
        Ranker::new(EvictionPolicy::CostAware, now, 1000 * MB)
    }

    #[test]
    fn xz_sources_are_kept_over_zstd_ones_all_else_equal() {
        let r = ranker(100);
        let a = rec(MB, 100, 1, 1, zst(30 * MB, 100 * MB));
        let b = rec(MB, 100, 1, 1, xz(25 * MB, 100 * MB));
        assert_eq!(order(&r, &[b, a]), vec![1, 0], "the zstd blob goes first");
        let m = CostModel::default();
        let ratio = m.decode_secs(Some(Compression::Xz), MB) / m.decode_secs(None, MB);
        assert!((10.0..12.0).contains(&ratio), "xz ≈ 11× zstd: {ratio}");
    }

    #[test]
    fn superseded_builds_go_before_any_current_one() {
        let r = ranker(100);
        // An often-used xz blob of an old build against a new zstd blob used once: the old build
        // goes first, although its keep value alone is higher.
        let old = BlobRecord {
            superseded: true,
            ..rec(MB, 100, 8, 4, xz(25 * MB, 100 * MB))
        };
        let new = rec(MB, 90, 1, 1, zst(30 * MB, 100 * MB));
        assert!(r.keep_value(&old) > r.keep_value(&new));
        assert_eq!(order(&r, &[new, old]), vec![1, 0]);
        // LRU does not look at builds.
        let lru = Ranker::new(EvictionPolicy::Lru, 100, 1000 * MB);
        assert_eq!(order(&lru, &[new, old]), vec![0, 1]);
    }

    #[test]
    fn blobs_more_trees_reference_are_kept() {
        let r = ranker(100);
        let generic = rec(MB, 100, 1, 8, zst(30 * MB, 100 * MB));
        let family = rec(MB, 100, 1, 1, zst(30 * MB, 100 * MB));
        assert_eq!(order(&r, &[generic, family]), vec![1, 0]);
    }

    #[test]
    fn reused_blobs_outrank_a_scan_of_newer_ones() {
        // A CI artifact used by 6 jobs, last some traffic ago, against bisect probes used once just
        // now: the probes go first.
        let r = ranker(2000 * MB);
        let ci = rec(MB, 1500 * MB, 6, 1, zst(30 * MB, 100 * MB));
        let probe = rec(MB, 2000 * MB, 1, 1, zst(30 * MB, 100 * MB));
        assert_eq!(order(&r, &[ci, probe]), vec![1, 0]);
        // LRU takes the CI artifact.
        let lru = Ranker::new(EvictionPolicy::Lru, 2000 * MB, 1000 * MB);
        assert_eq!(order(&lru, &[ci, probe]), vec![0, 1]);
    }

    #[test]
    fn history_fades_so_stale_artifacts_go() {
        // Used 6 times, then nothing for 4 half-lives (6 × 2^-4 < 1): a blob used once just now wins.
        let r = ranker(5000 * MB);
        let stale = rec(MB, 1000 * MB, 6, 1, zst(30 * MB, 100 * MB));
        let fresh = rec(MB, 5000 * MB, 1, 1, zst(30 * MB, 100 * MB));
        assert_eq!(order(&r, &[fresh, stale]), vec![1, 0]);
    }

    #[test]
    fn small_archives_cost_more_per_byte_than_large_ones() {
        // Per-object latency makes a small archive's bytes more expensive to fetch again.
        let r = ranker(100);
        let small = rec(10_000, 100, 1, 1, zst(5_000, 20_000));
        let large = rec(10_000, 100, 1, 1, zst(100 * MB, 300 * MB));
        assert_eq!(order(&r, &[small, large]), vec![1, 0]);
    }

    #[test]
    fn an_archives_blobs_rank_together_and_shared_ones_stay() {
        // Two archives, A older than B; each has exclusive blobs, and A shares one with B's tree.
        let r = ranker(300);
        let src = zst(30 * MB, 100 * MB);
        let a1 = rec(MB, 100, 1, 1, src);
        let a2 = rec(2 * MB, 100, 1, 1, src);
        let shared = rec(MB, 200, 2, 2, src);
        let b1 = rec(MB, 200, 1, 1, src);
        let o = order(&r, &[b1, a1, shared, a2]);
        assert_eq!(
            &o[..2],
            &[1, 3],
            "A's exclusive blobs first, together: {o:?}"
        );
        assert_eq!(o[3], 2, "the shared blob last");
    }

    #[test]
    fn lru_orders_by_last_use_only() {
        let lru = Ranker::new(EvictionPolicy::Lru, 10, 1);
        let old_xz = rec(MB, 1, 9, 9, xz(MB, MB));
        let new_zst = rec(MB, 5, 1, 1, zst(MB, MB));
        assert_eq!(order(&lru, &[new_zst, old_xz]), vec![1, 0]);
    }

    #[test]
    fn degenerate_records_rank_without_panicking() {
        let r = ranker(u64::MAX);
        let zero = rec(0, 0, 0, 0, zst(0, 0));
        let max = rec(
            u64::MAX,
            u64::MAX,
            u32::MAX,
            u32::MAX,
            xz(u64::MAX, u64::MAX),
        );
        let _ = order(&r, &[zero, max]);
        assert!(r.keep_value(&zero).is_finite());
    }
}
