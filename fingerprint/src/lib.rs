//! TheRock's world, as a pure library: the build topology, artifact names, the run-output layout,
//! source fingerprints, and the tree manifests that describe archive contents.
//!
//! Nothing here touches the network; the only I/O is reading a git checkout (in [`git`], the only
//! module that runs git) and files. Everything is deterministic.
//!
//! # Overview
//! - [`Topology`] (`topology`): `BUILD_TOPOLOGY.toml` parsed in declaration order;
//!   [`Topology::validate`] returns every [`Problem`]; [`Topology::inbound`] and
//!   [`Topology::produced`] answer "what does stage X fetch / build" exactly as TheRock does.
//! - [`ArtifactName`], [`ArchiveName`], [`Component`] (`names`): `{name}_{component}_{family}` and
//!   its `.tar.zst`/`.tar.xz` file names, `.sha256sum` sidecars, GPU families and their targets.
//! - [`RunOutputRoot`] (`layout`): bucket, prefix and keys of one CI run (TheRock's
//!   `WorkflowOutputRoot`), plus Cairn's job manifests, producer records, tree manifests and
//!   commit index keys, and the [`Area`] (trusted, or `untrusted/`) records are filed in.
//! - [`Fingerprinter`] (`fingerprint`): `cairn-fp-v1` source fingerprints of artifacts from a git
//!   checkout ([`GitSnapshot`]), and an [`Explanation`] of every input.
//! - [`Tree`] (`tree`): the content of one archive, with a canonical digest.
//! - [`Blake3`], [`Sha256`] (`digest`): digests as validated newtypes.
//! - [`ByteSize`] (`units`): the one grammar of byte-count flags and settings (`50G`, `1.5GiB`).
//! - [`nofollow::Dir`] and [`artifact_dir`]: a build dir's artifacts read without following any
//!   symlink, and an artifact dir as TheRock's uncompressed tar stream (`cairnd` and `cairn` publish
//!   through the same code).
//!
//! # Features
//! - `clap`: [`Compression`] implements `clap::ValueEnum`, so a binary takes it as a flag type
//!   (`--compression zstd|xz`). [`ByteSize`] needs no feature: clap parses it through `FromStr`.
//!
//! # Example
//! ```
//! use cairn_fingerprint::{ArchiveName, Component, Platform, RunOutputRoot, RunSpec, Topology};
//!
//! let topology = Topology::parse(r#"
//!     [build_stages.compiler]
//!     artifact_groups = ["compiler"]
//!     [build_stages.libs]
//!     artifact_groups = ["libs"]
//!     [artifact_groups.compiler]
//!     [artifact_groups.libs]
//!     artifact_group_deps = ["compiler"]
//!     [artifacts.amd-llvm]
//!     artifact_group = "compiler"
//!     [artifacts.blas]
//!     artifact_group = "libs"
//!     type = "target-specific"
//!     artifact_deps = ["amd-llvm"]
//! "#)?;
//! assert!(topology.validate().is_empty());
//! assert_eq!(topology.inbound("libs")?.into_iter().collect::<Vec<_>>(), ["amd-llvm"]);
//!
//! let archive = ArchiveName::parse("blas_lib_gfx94X-dcgpu.tar.zst")?;
//! assert_eq!(archive.artifact.component, Component::Lib);
//!
//! let root = RunOutputRoot::from_run(&RunSpec::new("12345", Platform::Linux))?;
//! assert_eq!(root.artifact_key(&archive.to_string()), "12345-linux/blas_lib_gfx94X-dcgpu.tar.zst");
//! assert_eq!(root.s3_uri(), "s3://therock-ci-artifacts/12345-linux");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod artifact_dir;
pub mod bounded;
pub mod digest;
pub mod fingerprint;
pub mod git;
pub mod layout;
pub mod names;
pub mod nofollow;
pub mod topology;
pub mod tree;
pub mod units;

pub use digest::{Blake3, Sha256};
pub use fingerprint::{Explanation, FingerprintConfig, FingerprintError, Fingerprinter};
pub use git::{GitError, GitSnapshot};
pub use layout::{Area, Platform, RunOutputRoot, RunSpec};
pub use names::{ArchiveName, ArtifactName, Component, Compression};
pub use topology::{Problem, Topology, TopologyError};
pub use tree::{EntryKind, RelPath, Tree, TreeEntry};
pub use units::ByteSize;
