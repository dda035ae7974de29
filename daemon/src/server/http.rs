//! The metrics HTTP listener (`cairnd serve --metrics 127.0.0.1:9464`): Prometheus `/metrics`,
//! a bazel-remote-like `/status` JSON page and `/healthz`, rendered from the service's metrics data,
//! counters, store stats and backends.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tracing::warn;

use crate::service::Service;
use crate::service::metrics::BUCKETS;
use crate::store::QuotaState;

/// The Prometheus text exposition (format 0.0.4).
pub fn render(service: &Service) -> String {
    let mut out = String::new();
    let inner = service.metrics.snapshot();
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
    let c = &service.counters;
    let t = service.backends().transfer_totals();
    // Labelled gauges, appended after the plain ones.
    let mut states = String::new();
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
            "cairn_store_leased_bytes",
            "gauge",
            "Bytes of blobs held leased by requests in flight (eviction skips them).",
            s.leased_bytes,
        );
        gauge(
            "cairn_store_leased_blobs",
            "gauge",
            "Blobs held leased by requests in flight.",
            s.leased_blobs,
        );
        let state = s.quota_state();
        gauge(
            "cairn_store_over_quota",
            "gauge",
            "1 when the CAS holds more than its quota (see cairn_store_quota_state for why).",
            u64::from(matches!(state, QuotaState::OverLeased | QuotaState::Over)),
        );
        let _ = writeln!(
            states,
            "# HELP cairn_store_quota_state 1 for the store's state against its quota: no_quota, under_quota, over_quota_leased (only leased bytes over; back under when they are released) or over_quota.\n# TYPE cairn_store_quota_state gauge"
        );
        for st in [
            QuotaState::NoQuota,
            QuotaState::Under,
            QuotaState::OverLeased,
            QuotaState::Over,
        ] {
            let _ = writeln!(
                states,
                "cairn_store_quota_state{{state=\"{}\"}} {}",
                st.as_str(),
                u64::from(st == state)
            );
        }
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
        service.metrics.uptime().as_secs(),
    );
    out.push_str(&states);
    let w = service.warmup.status();
    for (name, help, value) in [
        (
            "cairn_warmup_prefetched_bytes_total",
            "Compressed bytes predictive warm-up downloaded.",
            w.prefetched_bytes,
        ),
        (
            "cairn_warmup_prefetched_archives_total",
            "Archives predictive warm-up downloaded.",
            w.prefetched_archives,
        ),
        (
            "cairn_warmup_hits_total",
            "Client fetches served from archives warm-up prefetched and no client had used yet.",
            w.hits,
        ),
        (
            "cairn_warmup_wasted_bytes_total",
            "Content bytes warm-up prefetched that were evicted before any client used them.",
            w.wasted_bytes,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    out
}

/// The `/status` page: one JSON object, like bazel-remote's.
pub fn status_json(service: &Service) -> serde_json::Value {
    let c = &service.counters;
    let t = service.backends().transfer_totals();
    let s = service.store().stats().unwrap_or_default();
    let (downloads, lookups) = service.in_flight_keys();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": service.metrics.uptime().as_secs(),
        "store_dir": service.store().root().display().to_string(),
        "cache_size_bytes": s.bytes,
        "max_size_bytes": s.max_bytes.unwrap_or(0),
        "num_blobs": s.blobs,
        "num_trees": s.trees,
        "num_archives": s.archives,
        "leased_blobs": s.leased_blobs,
        "leased_bytes": s.leased_bytes,
        "quota_state": s.quota_state().as_str(),
        "hits": c.hits.load(Ordering::Relaxed),
        "misses": c.misses.load(Ordering::Relaxed),
        "in_flight": c.in_flight.load(Ordering::Relaxed),
        "in_flight_downloads": downloads,
        "in_flight_lookups": lookups,
        "resolve_requests": c.resolve_requests.load(Ordering::Relaxed),
        "fetch_requests": c.fetch_requests.load(Ordering::Relaxed),
        "storage_get_requests": t.get_requests,
        "storage_get_bytes": t.get_bytes,
        "evicted_blobs": s.evicted_blobs,
        "evicted_bytes": s.evicted_bytes,
        "warmup": service.warmup.status(),
        "backends": service.backends().all().iter().map(|b| serde_json::json!({
            "bucket": b.bucket, "storage": b.storage.describe(), "trusted": b.trusted,
        })).collect::<Vec<_>>(),
    })
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
        ("GET", "/metrics") => (StatusCode::OK, "text/plain; version=0.0.4", render(service)),
        ("GET", "/status") => (
            StatusCode::OK,
            "application/json",
            status_json(service).to_string(),
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
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c"), "a\\\"b\\\\c");
        assert_eq!(esc("x\ny"), "x\\ny");
    }
}
