//! Test and benchmark harness shared by the end-to-end tests and the benches.

pub mod faultproxy;
pub mod s3server;
