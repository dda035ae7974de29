//! `cairn`, the client: a gRPC client library for `cairnd` and the materialization of trees into
//! build directories. The CLI in `main.rs` is glue.

pub mod api;
pub mod bisect;
pub mod checkout;
pub mod connect;
pub mod documents;
pub mod fetch;
pub mod github;
pub mod history;
pub mod materialize;
pub mod plan;
pub mod prebuilt;
pub mod publish_stream;
