//! `cairnd`, the per-machine artifact cache daemon, as a library. The binary in `main.rs` is glue.
//!
//! The layers, in the order a request crosses them (each folder's `mod.rs` says what it owns and
//! what it may import; arrows only point down this list):
//!
//! 1. [`server`] — the edge: gRPC handlers, wire ⇄ domain conversion (`TryFrom`, defaults), the one
//!    place gRPC status codes are chosen, auth, listeners, lifecycle (`cairnd serve`), the metrics
//!    HTTP page. Knows protobuf; nothing below it does.
//! 2. [`service`] — the domain: one module per RPC (resolve, fetch, publish, import, history) over a
//!    small core ([`service::Service`]); the pure multi-base policy ([`service::policy`]); request
//!    counters and metrics data.
//! 3. [`store`] — the local store: CAS, redb index, ingest, eviction and leases, single-flight, the
//!    fsync pool, the tree cache, behind the [`store::LocalStore`] facade.
//! 4. [`storage`] — where archives and records live (S3, a local directory), ranged transfers, and
//!    [`storage::backends`], which backend serves a bucket and whether it is trusted.
//!
//! Beside the layers: [`archive`] (TheRock's `.tar.zst`/`.tar.xz` format, read and written),
//! [`buildtree`] (a caller's build dir, read without following symlinks and with the caller's rights),
//! [`records`] (the JSON documents Cairn writes to storage), [`config`] (file, environment,
//! defaults).

pub mod archive;
pub mod buildtree;
pub mod config;
pub mod records;
pub mod server;
pub mod service;
pub mod storage;
pub mod store;

pub use store::error::StoreError;
pub use store::{
    IngestLease, IngestOutcome, KnownArchive, LocalStore, QuotaState, StoreConfig, StoreStats,
    VerifyReport,
};
