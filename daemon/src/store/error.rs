//! The local store's error type: [`StoreError`], with the archive format's [`ArchiveError`] and the
//! index's [`IndexError`] as sources.
//!
//! Variants carry the offending thing (path, key, digest, archive entry) so a message read in a CI log
//! names what to look at. Single-flight followers receive the leader's error as
//! [`StoreError::Shared`], an `Arc` of the original, so one failure is reported identically to every
//! waiter without cloning I/O errors.

use std::path::PathBuf;
use std::sync::Arc;

use cairn_fingerprint::{Blake3, Sha256};

pub use crate::archive::ArchiveError;
pub use crate::store::index::IndexError;

/// Everything that can go wrong in the local store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation on the store failed.
    #[error("`{path}`: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A pin request that cannot be honoured (bad name, unknown tree).
    #[error("{0}")]
    InvalidPin(String),
    /// The index could not be read or written.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The archive was refused (malformed, hostile, truncated) or could not be stored.
    #[error("archive `{key}`: {source}")]
    Archive {
        /// The archive's key (storage key or file name).
        key: String,
        /// Why.
        source: ArchiveError,
    },
    /// The archive's SHA-256 does not match its `.sha256sum` sidecar.
    #[error("archive `{key}`: sha256 mismatch: expected {expected}, computed {actual}")]
    Sha256Mismatch {
        /// The archive's key.
        key: String,
        /// What the sidecar said.
        expected: Sha256,
        /// What we computed over the bytes we read.
        actual: Sha256,
    },
    /// A file name that is neither `.tar.zst` nor `.tar.xz`.
    #[error("`{path}` is neither a `.tar.zst` nor a `.tar.xz` archive")]
    UnknownCompression {
        /// The file.
        path: PathBuf,
    },
    /// A blob is missing or does not have the size the index records (it was quarantined).
    #[error("blob {digest} at `{path}` is missing or corrupt")]
    BlobUnavailable {
        /// The blob.
        digest: Blake3,
        /// Where it should be.
        path: PathBuf,
    },
    /// The single-flight leader doing this ingest went away without a result (it panicked).
    #[error("ingest of `{key}` was abandoned by the request performing it")]
    Abandoned {
        /// The archive's key.
        key: String,
    },
    /// The error of the ingest this request waited for (single-flight follower).
    #[error("{0}")]
    Shared(Arc<StoreError>),
    /// The store's filesystem is full. The ingest was rolled back: nothing of it is kept.
    #[error(
        "no space left on the store's filesystem at `{path}` while ingesting `{key}`; hint: run `cairn gc`, \
         lower the quota (`max_bytes`) or free disk space"
    )]
    NoSpace {
        /// The store's root directory.
        path: PathBuf,
        /// The archive's key.
        key: String,
    },
    /// A blocking task could not be joined (it panicked or the runtime is shutting down).
    #[error("blocking task failed: {0}")]
    Join(String),
}

impl StoreError {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether an I/O error in this error's chain says the filesystem is full (`ENOSPC`, `EDQUOT`).
    pub fn is_no_space(&self) -> bool {
        if matches!(self.root(), StoreError::NoSpace { .. }) {
            return true;
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self.root());
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && (io.kind() == std::io::ErrorKind::StorageFull
                    || io.kind() == std::io::ErrorKind::QuotaExceeded)
            {
                return true;
            }
            cause = e.source();
        }
        false
    }

    /// The error itself, looking through [`StoreError::Shared`] wrappers.
    pub fn root(&self) -> &StoreError {
        match self {
            StoreError::Shared(inner) => inner.root(),
            other => other,
        }
    }
}

/// Shorthand for results in the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
