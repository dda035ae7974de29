//! [`ServiceError`]: what the domain layer reports, each variant carrying what it was about.
//! The server maps it to a gRPC code in exactly one place (`server/status.rs`).

use crate::storage::StorageError;

/// Errors of the service, each carrying what it was about. `server/status.rs` maps them to gRPC codes.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed (bad name, digest, path).
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller did not prove who it is (a TCP request without the bearer token).
    #[error("{0}")]
    Unauthenticated(String),
    /// Something the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Storage failed; a retry may help when it is transient.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The local store failed or refused an archive.
    #[error(transparent)]
    Store(#[from] crate::store::error::StoreError),
    /// Downloaded content does not match what a record promised.
    #[error("{0}")]
    DataLoss(String),
    /// Anything else (I/O on the build dir, a task that panicked).
    #[error("{0}")]
    Internal(String),
}

/// The service's result type.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Anything else, as [`ServiceError::Internal`].
pub(crate) fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(e.to_string())
}

/// An ingest that failed because its download failed (the download reader surfaces storage errors as
/// I/O errors) is a storage failure, not a refused archive: report it as one, so clients see
/// `Unavailable` or `NotFound` and may retry, instead of `DataLoss`.
pub(crate) fn storage_first(e: crate::store::error::StoreError) -> ServiceError {
    use crate::archive::ArchiveError;
    use crate::store::error::StoreError;
    let cause = match e.root() {
        StoreError::Archive {
            source: ArchiveError::Read(io) | ArchiveError::ReadMember { source: io, .. },
            ..
        } => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<StorageError>()),
        _ => None,
    };
    match cause {
        Some(storage) => ServiceError::Storage(storage.clone()),
        None => e.into(),
    }
}
