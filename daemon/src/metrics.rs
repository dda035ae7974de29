//! Observability for fleet operators: Prometheus counters and latency histograms per gRPC method
//! (labelled by stage and family where the request has them), bytes and archives served by source
//! (`cas` or `storage`), store gauges, and a bazel-remote-like `/status` JSON page — both served by a
//! small optional HTTP listener (`cairnd serve --metrics 127.0.0.1:9464`).
//!
//! `Fetch` latency runs until the client closes the stream, i.e. it includes the client's copy time:
//! the daemon holds the blobs leased that long, so this is the number that matters for eviction.
//!
//! Label values come from requests, so the number of label sets is capped ([`MAX_SERIES`]); past the
//! cap new combinations are counted under `stage="other",family="other"` instead of growing without
//! bound.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tracing::warn;

use crate::service::Service;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0, 120.0,
];
/// Cap on distinct (method, stage, family, outcome) label sets.
pub const MAX_SERIES: usize = 2048;

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

type Labels = (String, String, String);

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

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, service: &Service) -> String {
        let mut out = String::new();
        let inner = self.inner.lock().expect("metrics lock poisoned");
        out.push_str(
            "# HELP cairn_requests_total gRPC requests by method, stage, family and outcome.\n",
        );
        out.push_str("# TYPE cairn_requests_total counter\n");
        for (((method, stage, family), outcome), n) in &inner.requests {
            let _ = writeln!(
                out,
                "cairn_requests_total{{method=\"{}\",stage=\"{}\",family=\"{}\",outcome=\"{outcome}\"}} {n}",
                esc(method),
                esc(stage),
                esc(family)
            );
        }
        out.push_str("# HELP cairn_request_duration_seconds gRPC request latency by method.\n");
        out.push_str("# TYPE cairn_request_duration_seconds histogram\n");
        for (method, h) in &inner.latency {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "cairn_request_duration_seconds_bucket{{method=\"{}\",le=\"{b}\"}} {}",
                    esc(method),
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "cairn_request_duration_seconds_bucket{{method=\"{}\",le=\"+Inf\"}} {}",
                esc(method),
                h.count
            );
            let _ = writeln!(
                out,
                "cairn_request_duration_seconds_sum{{method=\"{}\"}} {}",
                esc(method),
                h.sum
            );
            let _ = writeln!(
                out,
                "cairn_request_duration_seconds_count{{method=\"{}\"}} {}",
                esc(method),
                h.count
            );
        }
        out.push_str("# HELP cairn_served_archives_total Archives served to clients by source (cas or storage).\n");
        out.push_str("# TYPE cairn_served_archives_total counter\n");
        for ((source, stage, family), (n, _)) in &inner.served {
            let _ = writeln!(
                out,
                "cairn_served_archives_total{{source=\"{source}\",stage=\"{}\",family=\"{}\"}} {n}",
                esc(stage),
                esc(family)
            );
        }
        out.push_str(
            "# HELP cairn_served_bytes_total Uncompressed bytes served to clients by source.\n",
        );
        out.push_str("# TYPE cairn_served_bytes_total counter\n");
        for ((source, stage, family), (_, b)) in &inner.served {
            let _ = writeln!(
                out,
                "cairn_served_bytes_total{{source=\"{source}\",stage=\"{}\",family=\"{}\"}} {b}",
                esc(stage),
                esc(family)
            );
        }
        drop(inner);
        let c = &service.counters;
        let t = service.backends().transfer_totals();
        let mut gauge = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        gauge(
            "cairn_cache_hits_total",
            "counter",
            "Archives served from the CAS without a download.",
            c.hits.load(Ordering::Relaxed),
        );
        gauge(
            "cairn_cache_misses_total",
            "counter",
            "Archives that had to be downloaded.",
            c.misses.load(Ordering::Relaxed),
        );
        gauge(
            "cairn_in_flight_fetches",
            "gauge",
            "Downloads and ingests running now.",
            c.in_flight.load(Ordering::Relaxed),
        );
        gauge(
            "cairn_storage_get_requests_total",
            "counter",
            "GET requests sent to storage.",
            t.get_requests,
        );
        gauge(
            "cairn_storage_get_bytes_total",
            "counter",
            "Bytes received from storage.",
            t.get_bytes,
        );
        gauge(
            "cairn_storage_list_requests_total",
            "counter",
            "LIST requests sent to storage.",
            t.list_requests,
        );
        gauge(
            "cairn_storage_put_requests_total",
            "counter",
            "PUT requests sent to storage.",
            t.put_requests,
        );
        gauge(
            "cairn_storage_retries_total",
            "counter",
            "Retries and resumes after transient storage failures.",
            t.retries,
        );
        if let Ok(s) = service.store().stats() {
            gauge(
                "cairn_store_bytes",
                "gauge",
                "Bytes of blobs in the CAS.",
                s.bytes,
            );
            gauge("cairn_store_blobs", "gauge", "Blobs in the CAS.", s.blobs);
            gauge(
                "cairn_store_trees",
                "gauge",
                "Tree manifests in the index.",
                s.trees,
            );
            gauge(
                "cairn_store_max_bytes",
                "gauge",
                "CAS byte quota (0 = none).",
                s.max_bytes.unwrap_or(0),
            );
            gauge(
                "cairn_evicted_blobs_total",
                "counter",
                "Blobs evicted since start.",
                s.evicted_blobs,
            );
            gauge(
                "cairn_evicted_bytes_total",
                "counter",
                "Bytes evicted since start.",
                s.evicted_bytes,
            );
            gauge(
                "cairn_ingests_total",
                "counter",
                "Archive ingests performed since start.",
                s.ingests,
            );
        }
        gauge(
            "cairn_uptime_seconds",
            "gauge",
            "Seconds since cairnd started.",
            self.uptime().as_secs(),
        );
        out
    }

    /// The `/status` page: one JSON object, like bazel-remote's.
    pub fn status_json(&self, service: &Service) -> serde_json::Value {
        let c = &service.counters;
        let t = service.backends().transfer_totals();
        let s = service.store().stats().unwrap_or_default();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.uptime().as_secs(),
            "store_dir": service.store().root().display().to_string(),
            "cache_size_bytes": s.bytes,
            "max_size_bytes": s.max_bytes.unwrap_or(0),
            "num_blobs": s.blobs,
            "num_trees": s.trees,
            "num_archives": s.archives,
            "leased_blobs": s.leased_blobs,
            "hits": c.hits.load(Ordering::Relaxed),
            "misses": c.misses.load(Ordering::Relaxed),
            "in_flight": c.in_flight.load(Ordering::Relaxed),
            "resolve_requests": c.resolve_requests.load(Ordering::Relaxed),
            "fetch_requests": c.fetch_requests.load(Ordering::Relaxed),
            "storage_get_requests": t.get_requests,
            "storage_get_bytes": t.get_bytes,
            "evicted_blobs": s.evicted_blobs,
            "evicted_bytes": s.evicted_bytes,
            "backends": service.backends().all().iter().map(|b| serde_json::json!({
                "bucket": b.bucket, "storage": b.storage.describe(), "trusted": b.trusted,
            })).collect::<Vec<_>>(),
        })
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serve `/metrics`, `/status` and `/healthz` on `listener` until `shutdown` resolves.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    service: std::sync::Arc<Service>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "metrics listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = service.clone();
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let service = service.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&req, &service)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), handler)
                .await;
        });
    }
}

fn respond(req: &Request<hyper::body::Incoming>, service: &Service) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            service.metrics.render(service),
        ),
        ("GET", "/status") => (
            StatusCode::OK,
            "application/json",
            service.metrics.status_json(service).to_string(),
        ),
        ("GET", "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /status or /healthz\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
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
        assert_eq!(esc("a\"b\\c"), "a\\\"b\\\\c");
    }
}
