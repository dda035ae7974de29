//! TheRock's world, as a pure library: the build topology, artifact names, the run-output layout,
//! source fingerprints, and the tree manifests that describe archive contents.
//!
//! Nothing here touches the network; the only I/O is reading a git checkout (in `git`) and files.
#![deny(missing_docs)]

pub mod digest;
pub mod fingerprint;
pub mod git;
pub mod layout;
pub mod names;
pub mod topology;
pub mod tree;

pub use digest::{Blake3, Sha256};
pub use fingerprint::{Explanation, FingerprintConfig, FingerprintError, Fingerprinter};
pub use git::{GitError, GitSnapshot};
pub use layout::{Platform, RunOutputRoot, RunSpec};
pub use names::{ArchiveName, ArtifactName, Component, Compression};
pub use topology::{Problem, Topology, TopologyError};
pub use tree::{EntryKind, RelPath, Tree, TreeEntry};
