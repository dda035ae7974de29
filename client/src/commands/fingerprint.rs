//! `cairn fingerprint`: source fingerprints of artifacts at a git checkout.

use std::path::Path;

use crate::cli::FingerprintArgs;
use crate::output::{ExitStatus, Printer};

/// Compute or explain fingerprints.
pub fn run(
    topology: &Path,
    _args: &FingerprintArgs,
    _printer: &mut Printer,
) -> anyhow::Result<ExitStatus> {
    let _topology = super::load_topology(topology, _printer)?;
    anyhow::bail!("fingerprints are not implemented yet")
}
