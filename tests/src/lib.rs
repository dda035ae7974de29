//! Test and benchmark harness shared by the end-to-end tests and the benches.
//!
//! - [`datagen`] (`gen` is a reserved word in edition 2024): seeded, deterministic TheRock-shaped
//!   artifact directories and archives.
//! - [`checkout`]: a TheRock-shaped git superproject with real submodules.
//! - [`storecheck`]: store checks shared by tests (tree vs `tar -x`, index resolution).
//! - [`scale`]: `small`/`medium`/`large` presets of a whole run over the real topology.
//! - [`ci`]: a small TheRock-shaped topology and the build dirs its CI jobs would leave.
//! - [`daemon`]: a real `cairnd serve` process (temp store, socket, local or S3 storage).
//! - [`github_mock`]: a local HTTP server speaking the GitHub REST endpoints `cairn find` uses.
//! - [`bin_path`]: where the workspace's binaries (`cairnd`, `cairn`) are, from a test executable.
//! - [`s3server`]: the S3-compatible test server (moto) from `CAIRN_TEST_S3_ENDPOINT`.
//! - [`faultproxy`]: a fault-injecting HTTP proxy in front of it.
//! - [`gitrepo`], [`archives`]: git repositories and archive writers, re-exported from
//!   `cairn-test-helpers` (`tests/helpers`), the dependency-free crate that `cairn-fingerprint`'s
//!   and `cairn-client`'s tests use too. They live there, not here, because this crate depends on
//!   `cairn-fingerprint`, `cairn-daemon` and `cairn-client`: their tests depending on it would be a
//!   dev-dependency cycle (each crate compiled twice, types that do not unify) and would build the
//!   daemon for a fingerprint test.

pub mod bin_path;
pub mod checkout;
pub mod ci;
pub mod daemon;
pub mod datagen;
pub mod faultproxy;
pub mod github_mock;
pub mod s3server;
pub mod scale;
pub mod storecheck;

pub use cairn_test_helpers::{archives, gitrepo};
