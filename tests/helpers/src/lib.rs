//! Test helpers shared by every test binary of the workspace: [`gitrepo`] (git repositories built
//! from scratch, with a fixed identity and no user or system configuration) and [`archives`]
//! (raw ustar members, tar streams, in-memory zstd/xz, and archives packed or unpacked with the
//! system `tar`).
//!
//! # Why a crate of its own
//! `cairn-testkit` depends on `cairn-fingerprint`, `cairn-daemon` and `cairn-client`. Had these
//! helpers lived there, `cairn-fingerprint`'s and `cairn-client`'s tests would dev-depend on the
//! testkit and so, through it, on a second copy of the crate under test (a dev-dependency cycle
//! compiles the crate twice, with types that do not unify), and `cargo test -p cairn-fingerprint`
//! would build the daemon and the AWS SDK. This crate depends on no workspace crate, so every
//! package can dev-depend on it; `cairn-testkit` re-exports it (`cairn_testkit::gitrepo`,
//! `cairn_testkit::archives`) for the end-to-end tests and the benches.
//!
//! Helpers panic with a message naming what failed: they are for tests, where a failed setup is a
//! failed test. [`gitrepo::try_git`] returns the error instead, for harness code that reports it.

pub mod archives;
pub mod gitrepo;
