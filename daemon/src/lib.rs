//! `cairnd`, the per-machine artifact cache daemon, as a library: the local content-addressed store,
//! its index, the storage backends (S3 and a local directory), ingest, publish, resolution and the
//! gRPC service. The binary in `main.rs` is glue.

pub mod storage;
