//! Observability data for fleet operators: request counters and latency histograms per gRPC method
//! (labelled by stage and family where the request has them), and bytes and archives served by
//! source (`cas` or `storage`). Data only: `server/http.rs` renders it, with the store gauges, as
//! Prometheus `/metrics` and the `/status` page.
//!
//! `Fetch` latency runs until the client closes the stream, i.e. it includes the client's copy time:
//! the daemon holds the blobs leased that long, so this is the number that matters for eviction.
//!
//! Label values come from requests, so the number of label sets is capped ([`MAX_SERIES`]); past the
//! cap new combinations are counted under `stage="other",family="other"` instead of growing without
//! bound.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the latency histogram buckets.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0, 120.0,
];
/// Cap on distinct (method, stage, family, outcome) label sets.
pub const MAX_SERIES: usize = 2048;

/// A latency histogram over [`BUCKETS`] (cumulative counts, as Prometheus wants them).
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    /// Requests at most as slow as each bucket's bound.
    pub counts: [u64; BUCKETS.len()],
    /// Sum of latencies in seconds.
    pub sum: f64,
    /// Requests.
    pub count: u64,
}

/// (method or source, stage, family).
pub type Labels = (String, String, String);

/// Request counters and histograms. std Mutex: updates are a few map operations, never held across
/// an await.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (method, stage, family) + outcome → count.
    requests: BTreeMap<(Labels, &'static str), u64>,
    /// method → latency histogram.
    latency: BTreeMap<String, Histogram>,
    /// (source, stage, family) → (archives, bytes).
    served: BTreeMap<Labels, (u64, u64)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            inner: Mutex::new(Inner::default()),
        }
    }
}

fn capped(map_len: usize, exists: bool, stage: &str, family: &str) -> (String, String) {
    if exists || map_len < MAX_SERIES {
        (stage.to_string(), family.to_string())
    } else {
        ("other".into(), "other".into())
    }
}

impl Metrics {
    /// Record one finished request.
    pub fn observe(&self, method: &str, stage: &str, family: &str, ok: bool, elapsed: Duration) {
        let mut inner = self.inner.lock().expect("metrics lock poisoned");
        let outcome = if ok { "ok" } else { "error" };
        let key = (
            (method.to_string(), stage.to_string(), family.to_string()),
            outcome,
        );
        let exists = inner.requests.contains_key(&key);
        let (stage, family) = capped(inner.requests.len(), exists, stage, family);
        *inner
            .requests
            .entry(((method.to_string(), stage, family), outcome))
            .or_default() += 1;
        let h = inner.latency.entry(method.to_string()).or_default();
        let secs = elapsed.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// Record an archive served to a client, from the CAS or from storage.
    pub fn served(&self, source: &str, stage: &str, family: &str, bytes: u64) {
        let mut inner = self.inner.lock().expect("metrics lock poisoned");
        let exists =
            inner
                .served
                .contains_key(&(source.to_string(), stage.to_string(), family.to_string()));
        let (stage, family) = capped(inner.served.len(), exists, stage, family);
        let e = inner
            .served
            .entry((source.to_string(), stage, family))
            .or_default();
        e.0 += 1;
        e.1 += bytes;
    }

    /// Seconds since the daemon started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// A copy of everything recorded so far, for rendering.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let inner = self.inner.lock().expect("metrics lock poisoned");
        MetricsSnapshot {
            requests: inner.requests.clone(),
            latency: inner.latency.clone(),
            served: inner.served.clone(),
            uptime: self.uptime(),
        }
    }
}

/// What [`Metrics`] has recorded, as plain data (rendered by `server/http.rs`).
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    /// ((method, stage, family), outcome) → requests.
    pub requests: BTreeMap<(Labels, &'static str), u64>,
    /// method → latency histogram.
    pub latency: BTreeMap<String, Histogram>,
    /// (source, stage, family) → (archives, bytes).
    pub served: BTreeMap<Labels, (u64, u64)>,
    /// Time since the daemon started.
    pub uptime: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_sets_are_capped_and_escaped() {
        let m = Metrics::default();
        for i in 0..(MAX_SERIES + 10) {
            m.observe(
                "Resolve",
                &format!("s{i}"),
                "f",
                true,
                Duration::from_millis(3),
            );
        }
        let inner = m.inner.lock().unwrap();
        assert!(inner.requests.len() <= MAX_SERIES + 1);
        assert!(inner.requests.keys().any(|((_, s, _), _)| s == "other"));
        let h = &inner.latency["Resolve"];
        assert_eq!(h.count, (MAX_SERIES + 10) as u64);
        assert_eq!(h.counts[0], 0, "3 ms is above the 1 ms bucket");
        assert_eq!(h.counts[2], h.count, "3 ms is within the 5 ms bucket");
    }
}
