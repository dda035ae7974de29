//! The configured storage backends, by bucket: which `Storage` serves a bucket the run-output layout
//! names, and whether what is read from it is trusted.

use std::sync::Arc;

use cairn_fingerprint::layout::{Area, CI_EXTERNAL_BUCKET, LEGACY_EXTERNAL_BUCKET};

use crate::config::{StorageConfig, StorageKind};
use crate::storage::local::LocalStorage;
use crate::storage::s3::{S3Config, S3Storage};
use crate::storage::{Storage, StorageError, TransferSnapshot};

/// One configured backend.
#[derive(Debug, Clone)]
pub struct Backend {
    /// The bucket it serves, or `*`.
    pub bucket: String,
    /// The storage.
    pub storage: Arc<dyn Storage>,
    /// Whether producer records in its trusted area are trusted.
    pub trusted: bool,
}

impl Backend {
    /// The trust rule, the only place it is written: a record is trusted when it was read from the
    /// trusted area (not `untrusted/`) of a backend configured as trusted, and the bucket it names
    /// is not one of the external buckets that fork and outside-contributor runs publish to. Never
    /// from anything the record says about itself.
    pub fn trusts(&self, read_from: Area, record_bucket: &str) -> bool {
        read_from == Area::Trusted
            && self.trusted
            && record_bucket != CI_EXTERNAL_BUCKET
            && record_bucket != LEGACY_EXTERNAL_BUCKET
    }
}

/// All backends; lookups by bucket name fall back to the `*` entry.
#[derive(Debug, Clone, Default)]
pub struct Backends {
    list: Vec<Backend>,
}

impl Backends {
    /// Build the backends of a configuration (connects S3 clients; no request is made).
    pub async fn from_config(configs: &[StorageConfig]) -> Result<Backends, StorageError> {
        let mut list = Vec::new();
        for c in configs {
            let storage: Arc<dyn Storage> = match c.kind {
                StorageKind::Local => {
                    Arc::new(LocalStorage::new(c.root.clone().unwrap_or_default())?)
                }
                StorageKind::S3 => {
                    let mut s3 =
                        S3Config::new(c.s3_bucket.clone().unwrap_or_else(|| c.bucket.clone()));
                    s3.region = c.region.clone();
                    s3.endpoint = c.endpoint.clone();
                    s3.force_path_style = c.path_style;
                    s3.anonymous = c.anonymous;
                    Arc::new(S3Storage::connect(s3).await)
                }
            };
            list.push(Backend {
                bucket: c.bucket.clone(),
                storage,
                trusted: c.trusted,
            });
        }
        Ok(Backends { list })
    }

    /// Backends from ready storages (tests, benches).
    pub fn from_list(list: Vec<Backend>) -> Backends {
        Backends { list }
    }

    /// The backend serving `bucket`: an exact entry first, then `*`.
    pub fn for_bucket(&self, bucket: &str) -> Option<&Backend> {
        self.list
            .iter()
            .find(|b| b.bucket == bucket)
            .or_else(|| self.list.iter().find(|b| b.bucket == "*"))
    }

    /// Every backend once.
    pub fn all(&self) -> &[Backend] {
        &self.list
    }

    /// Transfer counters summed over every backend.
    pub fn transfer_totals(&self) -> TransferSnapshot {
        let mut total = TransferSnapshot::default();
        for b in &self.list {
            let s = b.storage.stats().snapshot();
            total.get_requests += s.get_requests;
            total.get_bytes += s.get_bytes;
            total.head_requests += s.head_requests;
            total.list_requests += s.list_requests;
            total.put_requests += s.put_requests;
            total.put_bytes += s.put_bytes;
            total.retries += s.retries;
        }
        total
    }
}
