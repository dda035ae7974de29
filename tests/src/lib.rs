//! Test and benchmark harness shared by the end-to-end tests and the benches.
//!
//! - [`datagen`] (`gen` is a reserved word in edition 2024): seeded, deterministic TheRock-shaped
//!   artifact directories and archives.
//! - [`checkout`]: a TheRock-shaped git superproject with real submodules.
//! - [`storecheck`]: store checks shared by tests (tree vs `tar -x`, index resolution).
//! - [`scale`]: `small`/`medium`/`large` presets of a whole run over the real topology.
//! - [`bin_path`]: where the workspace's binaries (`cairnd`, `cairn`) are, from a test executable.

pub mod bin_path;
pub mod checkout;
pub mod datagen;
pub mod scale;
pub mod storecheck;
