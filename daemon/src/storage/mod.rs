//! Object storage: the one small interface Cairn reads and writes artifacts through.
//!
//! Vocabulary: a *backend* is one place objects live (an S3 bucket in [`s3`], or a local directory laid
//! out exactly like the bucket in [`local`]); a *key* is the object's path inside it (`{run}-{platform}/x.tar.zst`).
//! Backends are used as `Arc<dyn Storage>`.
//! Request-level retries (backoff with jitter, transient errors only) live in [`retry`];
//! concurrent ranged downloads that resume after a dropped connection live in [`transfer`].
//!
//! Errors say which object failed and whether retrying can help: [`StorageError::NotFound`] is final
//! and never retried, [`StorageError::Transient`] may be retried, everything else is permanent.

pub mod backends;

pub mod local;
pub mod retry;
pub mod s3;
pub mod transfer;

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{Stream, TryStreamExt};

pub use local::LocalStorage;
pub use retry::{Jitter, RetryPolicy};
pub use s3::{S3Config, S3Storage};
pub use transfer::{Download, DownloadOptions, UploadOptions};

/// A stream of an object's bytes, in order; an error item ends it.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StorageError>> + Send>>;

/// What a listing or a HEAD says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The full key of the object.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// The backend's entity tag (S3's ETag without quotes; size and mtime for a local file), if any.
    pub etag: Option<String>,
}

/// The result of [`Storage::list`]: every page, concatenated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Objects under the prefix (not under a common prefix), sorted by key.
    pub objects: Vec<ObjectMeta>,
    /// With a delimiter: the distinct `{prefix}{segment}{delimiter}` groups, sorted.
    pub common_prefixes: Vec<String>,
}

/// The content of a [`Storage::put`].
#[derive(Debug, Clone)]
pub enum PutBody {
    /// Bytes already in memory (manifests, records, sidecars).
    Bytes(Bytes),
    /// A local file, streamed from disk; S3 uses a multipart upload when it is large.
    File(PathBuf),
}

/// Whether [`Storage::put_if_absent`] wrote the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// This call created the object.
    Created,
    /// The object already existed (or a concurrent writer won); it was left untouched.
    AlreadyExists,
}

/// A storage failure, always naming the object (`location` is [`Storage::describe`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The object does not exist; final, never retried.
    #[error("object `{key}` not found in `{location}`")]
    NotFound {
        /// The key asked for.
        key: String,
        /// The backend, e.g. `s3://bucket`.
        location: String,
    },
    /// A failure that may pass when retried (connection reset, timeout, 5xx, `SlowDown`, truncated body).
    #[error("transient error on `{key}` in `{location}`: {message}")]
    Transient {
        /// The key being accessed.
        key: String,
        /// The backend, e.g. `s3://bucket`.
        location: String,
        /// What went wrong.
        message: String,
    },
    /// A failure that retrying will not fix (access denied, invalid key or range, local I/O error).
    #[error("error on `{key}` in `{location}`: {message}")]
    Permanent {
        /// The key being accessed.
        key: String,
        /// The backend, e.g. `s3://bucket`.
        location: String,
        /// What went wrong.
        message: String,
    },
    /// A small document (record, manifest, sidecar) is larger than such a document may be: not read.
    #[error(
        "object `{key}` in `{location}` is {size} bytes, more than the {max} bytes such a document may have; it was not written by Cairn or is damaged"
    )]
    TooLarge {
        /// The key.
        key: String,
        /// The backend, e.g. `s3://bucket`.
        location: String,
        /// Its size (from `Content-Length`; without one, the bytes received when it was refused).
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Transient failures continued past the retry budget.
    #[error(
        "giving up on `{key}` in `{location}` after {attempts} attempts: {last}; hint: check the network \
         and the storage endpoint, then retry"
    )]
    Exhausted {
        /// The key being accessed.
        key: String,
        /// The backend, e.g. `s3://bucket`.
        location: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last transient failure's message.
        last: String,
    },
}

impl StorageError {
    /// The key the error is about.
    pub fn key(&self) -> &str {
        match self {
            Self::NotFound { key, .. }
            | Self::Transient { key, .. }
            | Self::Permanent { key, .. }
            | Self::TooLarge { key, .. }
            | Self::Exhausted { key, .. } => key,
        }
    }

    /// True when the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// True when a small document was refused for its size ([`StorageError::TooLarge`]).
    pub fn is_too_large(&self) -> bool {
        matches!(self, Self::TooLarge { .. })
    }

    /// True when a retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// True when the storage is unreachable or overloaded (a transient failure, or one that exhausted its
    /// retries): the daemon reports this as "unavailable", a state in which a later retry may help.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Transient { .. } | Self::Exhausted { .. })
    }

    pub(crate) fn not_found(key: &str, location: &str) -> Self {
        Self::NotFound {
            key: key.to_owned(),
            location: location.to_owned(),
        }
    }

    pub(crate) fn transient(key: &str, location: &str, message: impl fmt::Display) -> Self {
        Self::Transient {
            key: key.to_owned(),
            location: location.to_owned(),
            message: message.to_string(),
        }
    }

    pub(crate) fn permanent(key: &str, location: &str, message: impl fmt::Display) -> Self {
        Self::Permanent {
            key: key.to_owned(),
            location: location.to_owned(),
            message: message.to_string(),
        }
    }
}

impl From<StorageError> for std::io::Error {
    /// Keeps the [`StorageError`] as the inner error so a reader of an [`std::io::Error`] (ingest, through
    /// [`Download::into_async_read`]) can recover it with `get_ref()`/`downcast`.
    fn from(err: StorageError) -> Self {
        let kind = match &err {
            StorageError::NotFound { .. } => std::io::ErrorKind::NotFound,
            StorageError::Transient { .. } | StorageError::Exhausted { .. } => {
                std::io::ErrorKind::Other
            }
            StorageError::Permanent { .. } => std::io::ErrorKind::Other,
            StorageError::TooLarge { .. } => std::io::ErrorKind::FileTooLarge,
        };
        std::io::Error::new(kind, err)
    }
}

/// Request and byte counters of one backend, shared by everything that uses it.
///
/// Relaxed atomics: these are statistics, read after the fact; no other memory depends on them.
#[derive(Debug, Default)]
pub struct TransferStats {
    get_requests: AtomicU64,
    get_bytes: AtomicU64,
    head_requests: AtomicU64,
    list_requests: AtomicU64,
    put_requests: AtomicU64,
    put_bytes: AtomicU64,
    retries: AtomicU64,
}

/// A point-in-time copy of [`TransferStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferSnapshot {
    /// GET requests sent (ranged or whole; one per attempt).
    pub get_requests: u64,
    /// Body bytes received from GETs.
    pub get_bytes: u64,
    /// HEAD requests sent.
    pub head_requests: u64,
    /// LIST requests sent (one per page).
    pub list_requests: u64,
    /// PUT requests sent (a multipart upload counts each part, plus its create and complete calls).
    pub put_requests: u64,
    /// Body bytes sent by PUTs.
    pub put_bytes: u64,
    /// Retries and resumes after transient failures.
    pub retries: u64,
}

impl TransferStats {
    /// Copies the counters.
    pub fn snapshot(&self) -> TransferSnapshot {
        TransferSnapshot {
            get_requests: self.get_requests.load(Ordering::Relaxed),
            get_bytes: self.get_bytes.load(Ordering::Relaxed),
            head_requests: self.head_requests.load(Ordering::Relaxed),
            list_requests: self.list_requests.load(Ordering::Relaxed),
            put_requests: self.put_requests.load(Ordering::Relaxed),
            put_bytes: self.put_bytes.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add_get(&self) {
        self.get_requests.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_get_bytes(&self, n: u64) {
        self.get_bytes.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn add_head(&self) {
        self.head_requests.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_list(&self) {
        self.list_requests.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_put(&self, bytes: u64) {
        self.put_requests.fetch_add(1, Ordering::Relaxed);
        self.put_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    pub(crate) fn add_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
}

/// One place objects live: an S3 bucket or a local directory with the same layout.
///
/// Required methods are single operations; the S3 backend retries transient failures of each request
/// itself (see [`retry`]), while resuming a body that broke mid-way is [`transfer::download`]'s job.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug {
    /// Where this backend points, for messages: `s3://bucket` or `file:///root`.
    fn describe(&self) -> String;

    /// The bucket name (`local` for the local directory backend, as TheRock's `for_local` does).
    fn bucket(&self) -> &str;

    /// The request and byte counters of this backend.
    fn stats(&self) -> &TransferStats;

    /// Size and entity tag of an object, `None` when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError>;

    /// The bytes of `range` (end exclusive, within the object) as a stream; one request.
    /// A missing object is [`StorageError::NotFound`]; an empty range yields an empty stream.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<ByteStream, StorageError>;

    /// Writes (or overwrites) an object; readers never see a partial object.
    async fn put(&self, key: &str, body: PutBody) -> Result<(), StorageError>;

    /// Writes an object only if no object has that key (S3 `If-None-Match: *`; a local hard link).
    /// Stores that ignore the condition overwrite, and a retry after a lost response may report
    /// `AlreadyExists` for the object this very call wrote; callers only use it for content that is
    /// identical on every rewrite, so correctness never depends on the outcome.
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<PutOutcome, StorageError>;

    /// Every object whose key starts with `prefix` (all pages). With a delimiter, keys containing it
    /// after the prefix are grouped into [`Listing::common_prefixes`] instead, as S3 does.
    async fn list(&self, prefix: &str, delimiter: Option<&str>) -> Result<Listing, StorageError>;

    /// The whole object in memory; for small objects (manifests, records, sidecars).
    async fn get_bytes(&self, key: &str) -> Result<Bytes, StorageError> {
        let meta = self
            .head(key)
            .await?
            .ok_or_else(|| StorageError::not_found(key, &self.describe()))?;
        let stream = self.get_range(key, 0..meta.size).await?;
        collect(stream).await
    }

    /// [`Storage::get_bytes`] of an object of at most `max` bytes: a larger one (whatever wrote it)
    /// is a permanent error naming the key and the limit, and is not downloaded.
    async fn get_bytes_capped(&self, key: &str, max: u64) -> Result<Bytes, StorageError> {
        let meta = self
            .head(key)
            .await?
            .ok_or_else(|| StorageError::not_found(key, &self.describe()))?;
        let too_large = |size: u64| StorageError::TooLarge {
            key: key.to_string(),
            location: self.describe(),
            size,
            max,
        };
        if meta.size > max {
            return Err(too_large(meta.size));
        }
        let bytes = self.get_bytes(key).await?;
        if bytes.len() as u64 > max {
            return Err(too_large(bytes.len() as u64));
        }
        Ok(bytes)
    }

    /// A listed Cairn document (record, manifest, index or feed entry) of at most `max` bytes, or
    /// `None` when it is gone since the listing or is larger than any document Cairn writes
    /// (logged): the caller skips it like a malformed one. Other errors are errors.
    async fn get_document(&self, key: &str, max: u64) -> Result<Option<Bytes>, StorageError> {
        match self.get_bytes_capped(key, max).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) if e.is_too_large() => {
                tracing::warn!("{e}; skipped");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// True when the object exists.
    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        Ok(self.head(key).await?.is_some())
    }
}

/// Largest producer record read from storage.
pub const MAX_PRODUCER_RECORD: u64 = 1 << 20;
/// Largest job manifest or commit index entry read from storage.
pub const MAX_JOB_MANIFEST: u64 = 16 << 20;
/// Largest `.sha256sum` sidecar read from storage.
pub const MAX_SIDECAR: u64 = 4 << 10;

/// Concatenates a [`ByteStream`] into one buffer.
pub async fn collect(stream: ByteStream) -> Result<Bytes, StorageError> {
    let buf = stream
        .try_fold(BytesMut::new(), |mut acc, chunk| async move {
            acc.extend_from_slice(&chunk);
            Ok(acc)
        })
        .await?;
    Ok(buf.freeze())
}

/// Applies S3's delimiter grouping to keys (sorted, all starting with `prefix`): the local backend
/// uses it so both backends list identically.
pub(crate) fn group_listing(
    prefix: &str,
    delimiter: Option<&str>,
    objects: Vec<ObjectMeta>,
) -> Listing {
    let Some(delim) = delimiter.filter(|d| !d.is_empty()) else {
        return Listing {
            objects,
            common_prefixes: Vec::new(),
        };
    };
    let mut listing = Listing::default();
    for obj in objects {
        let rest = &obj.key[prefix.len()..];
        match rest.find(delim) {
            Some(at) => {
                let group = format!("{prefix}{}", &rest[..at + delim.len()]);
                if listing.common_prefixes.last() != Some(&group) {
                    listing.common_prefixes.push(group);
                }
            }
            None => listing.objects.push(obj),
        }
    }
    listing.common_prefixes.dedup();
    listing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size: 1,
            etag: None,
        }
    }

    #[test]
    fn delimiter_groups_like_s3() {
        let keys = [
            "p/a.tar.zst",
            "p/a.tar.zst.sha256sum",
            "p/logs/x/1.log",
            "p/logs/y.log",
            "p/z",
        ];
        let listing = group_listing("p/", Some("/"), keys.iter().map(|k| meta(k)).collect());
        let names: Vec<_> = listing.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(names, ["p/a.tar.zst", "p/a.tar.zst.sha256sum", "p/z"]);
        assert_eq!(listing.common_prefixes, ["p/logs/"]);
    }

    #[test]
    fn no_delimiter_keeps_everything() {
        let listing = group_listing("p", None, vec![meta("p/a/b"), meta("pq")]);
        assert_eq!(listing.objects.len(), 2);
        assert!(listing.common_prefixes.is_empty());
    }
}
