//! The domain layer: one module per RPC over a small core ([`Service`]: the store, the backends,
//! the in-flight maps, the counters). Nothing here knows about protobuf: `server/` converts the wire
//! into the request types declared here and turns results and [`fetch::FetchEvent`]s back into
//! messages.
//!
//! - [`resolve`] — producer records per fingerprint (storage, the index as cache), then [`policy`];
//! - [`policy`] — the multi-base policy and the explicit-run fallback, pure;
//! - [`fetch`] — make resolved archives local (single-flight downloads into ingest), leased, and the
//!   Fetch orchestration (largest first, de-duplicated blobs, summary) as domain events;
//! - [`publish`] — a build directory into archives, sidecars, manifests and records;
//! - [`publish_stream`] — artifacts a client streams (TCP: the daemon never reads its paths) into
//!   the same archives, then `publish`'s path;
//! - [`import`] — run listings for runs published without Cairn;
//! - [`history`] — the commit index and a run's trees, for `find` and `diff`;
//! - [`warmup`] — predictive warm-up: follow branch feeds, make their newest runs' archives local;
//! - [`metrics`] — request counters and histograms (data only; `server/http.rs` renders them);
//! - [`error`] — [`ServiceError`].
//!
//! May import: `store`, `storage`, `records`, `archive`, `buildtree`, `config` — never `server`.
//!
//! Trust: which records are trusted is decided by [`Backends::trusts`] alone, from where a record
//! was read and the daemon's configuration, never from the record itself.

pub mod error;
pub mod fetch;
pub mod history;
pub mod import;
pub mod index_page;
pub mod metrics;
pub mod policy;
pub mod publish;
pub mod publish_stream;
pub mod resolve;
pub mod warmup;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::storage::backends::{Backend, Backends};
use crate::storage::transfer::DownloadOptions;
use crate::store::LocalStore;
use crate::store::flight::KeyedFlight;

pub use error::{Result, ServiceError};
pub use fetch::{Delivery, FetchEvent, FetchRequest, FetchSummary, LocalArchive};
pub use import::{ImportRequest, ListedArchive, RunListing};
pub use publish::{Caller, PublishOutcome, PublishRequest};
pub use resolve::ResolveRequest;

/// Longest artifact name, stage, family or run id a request may carry.
pub const MAX_NAME_LEN: usize = 256;

/// A request field that does not parse, as [`ServiceError::InvalidArgument`].
pub(crate) fn invalid(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::InvalidArgument(e.to_string())
}

/// Counters reported by `Stats` (relaxed atomics: statistics only).
#[derive(Debug, Default)]
pub struct Counters {
    /// Archives served from the CAS without a download.
    pub hits: AtomicU64,
    /// Archives that had to be downloaded.
    pub misses: AtomicU64,
    /// Downloads+ingests running now.
    pub in_flight: AtomicU64,
    /// Resolve requests (including the resolve step of fetches).
    pub resolve_requests: AtomicU64,
    /// Fetch requests.
    pub fetch_requests: AtomicU64,
}

/// The service: shared by every request.
#[derive(Debug)]
pub struct Service {
    store: Arc<LocalStore>,
    backends: Backends,
    negative_ttl: Duration,
    download: DownloadOptions,
    /// Per storage object, a turn held while it is downloaded and ingested, so N concurrent requests
    /// cause one download; the others wait and then find it in the index.
    downloads: KeyedFlight<String>,
    /// Per fingerprint and area, a turn held while storage is listed for its producer records, so
    /// N concurrent cold resolves of one stage cause one LIST (and one GET per record), not N.
    lookups: KeyedFlight<String>,
    /// Counters for `Stats`.
    pub counters: Counters,
    /// Per-request metrics for `/metrics` and `/status`.
    pub metrics: metrics::Metrics,
    /// Predictive warm-up's counters and status.
    pub warmup: warmup::WarmupState,
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Service {
    /// A service over an open store and its backends.
    pub fn new(store: Arc<LocalStore>, backends: Backends, negative_ttl: Duration) -> Service {
        Service {
            store,
            backends,
            negative_ttl,
            download: DownloadOptions::default(),
            downloads: KeyedFlight::new(),
            lookups: KeyedFlight::new(),
            counters: Counters::default(),
            metrics: metrics::Metrics::default(),
            warmup: warmup::WarmupState::default(),
        }
    }

    /// The same service downloading with `options` (chunking, concurrency, resume budget) instead of
    /// the defaults; tests use it for quick retries.
    pub fn with_download_options(mut self, options: DownloadOptions) -> Service {
        self.download = options;
        self
    }

    /// The local store.
    pub fn store(&self) -> &Arc<LocalStore> {
        &self.store
    }

    /// The backends.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Re-hash the store's blobs (all, or a random `sample`) while serving, quarantining corrupt
    /// ones: [`LocalStore::verify_live`] on one blocking thread, so fetches keep the runtime and the
    /// other blocking threads.
    pub async fn verify(&self, sample: Option<usize>) -> Result<crate::store::VerifyReport> {
        let store = self.store.clone();
        let started = std::time::Instant::now();
        let report = tokio::task::spawn_blocking(move || store.verify_live(sample))
            .await
            .map_err(|e| ServiceError::Internal(format!("verify task failed: {e}")))??;
        tracing::info!(
            checked = report.checked,
            corrupt = report.corrupt.len(),
            missing = report.missing.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "verify"
        );
        Ok(report)
    }

    /// `cairn gc`: evict unleased blobs down to `quota`, else the configured one, and delete blob
    /// files the index does not name, on a blocking thread.
    pub async fn gc(&self, quota: Option<u64>) -> Result<crate::store::evict::GcReport> {
        let quota = quota.or(self.store.max_bytes()).ok_or_else(|| {
            ServiceError::InvalidArgument(
                "no quota to collect down to: pass `cairn gc --max-bytes SIZE` (e.g. 50G), or give \
                 cairnd one (`cairnd serve --max-bytes SIZE`, or `max_bytes` in its config)"
                    .into(),
            )
        })?;
        let store = self.store.clone();
        let report = tokio::task::spawn_blocking(move || store.gc(quota))
            .await
            .map_err(|e| ServiceError::Internal(format!("gc task failed: {e}")))??;
        Ok(report)
    }

    /// Objects being downloaded and fingerprints being looked up right now (both drop to 0 when
    /// the daemon is idle: the maps never keep finished work).
    pub fn in_flight_keys(&self) -> (usize, usize) {
        (self.downloads.len(), self.lookups.len())
    }

    fn backend(&self, bucket: &str) -> Result<&Backend> {
        self.backends.for_bucket(bucket).ok_or_else(|| {
            ServiceError::NotFound(format!(
                "no storage backend configured for bucket `{bucket}` (add a [[storage]] entry or `bucket = \"*\"`)"
            ))
        })
    }
}
