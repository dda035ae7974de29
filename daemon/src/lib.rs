//! `cairnd`, the per-machine artifact cache daemon, as a library: the local content-addressed store,
//! its index, the storage backends (S3 and a local directory), ingest, publish, resolution and the
//! gRPC service. The binary in `main.rs` is glue.
//!
//! # The local store
//!
//! - [`store::LocalStore`] is the facade: ingest archives, find trees, lease and locate blobs, stats,
//!   gc, verify.
//! - [`archive`] reads and writes TheRock's `.tar.zst`/`.tar.xz` artifact archives.
//! - [`cas`] keeps decompressed files as read-only blobs named by BLAKE3 (its docs show the layout).
//! - [`ingest`] turns one archive stream into blobs plus a tree, in crash-safe order; [`syncer`] is
//!   the process-wide pool that makes staged blobs durable meanwhile.
//! - [`index`] is the redb index (the only redb importer).
//! - [`flight`] is single-flight; [`evict`] holds leases and the LRU byte quota.
//! - [`error`] has [`StoreError`], the subsystem's error.
//!
//! # Storage and the service
//!
//! - [`storage`]: the `Storage` trait, S3 and local-directory backends, ranged parallel downloads.
//! - [`backends`]: which backend serves which bucket, and whether it is trusted.
//! - [`records`]: job manifests, producer records and commit index entries written to storage.
//! - [`history`]: the runs of a commit (commit index) and a run's trees, for `find` and `diff`.
//! - [`resolve`]: the multi-base policy (pure); [`service`]: resolve/fetch/publish/import over the
//!   store and the backends; [`server`]: the thin gRPC layer; [`serve`]: `cairnd serve`.
//! - [`config`]: configuration file, environment and defaults; [`listen`]: socket binding;
//!   [`metrics`]: Prometheus `/metrics` and `/status`.

pub mod archive;
pub mod auth;
pub mod backends;
pub mod cas;
pub mod config;
pub mod error;
pub mod evict;
pub mod flight;
pub mod history;
pub mod index;
pub mod ingest;
pub mod listen;
pub mod metrics;
pub mod records;
pub mod resolve;
pub mod serve;
pub mod server;
pub mod service;
pub mod storage;
pub mod store;
pub mod syncer;
pub mod tree_cache;

pub use error::StoreError;
pub use store::{IngestOutcome, KnownArchive, LocalStore, StoreConfig, StoreStats, VerifyReport};
