//! `cairn diff A B`: size changes between two runs.

use anyhow::Result;

use crate::cli::{Cli, DiffArgs};
use crate::output::{ExitStatus, Printer};

/// Run `cairn diff`.
pub fn run(_cli: &Cli, _args: &DiffArgs, _printer: &mut Printer) -> Result<ExitStatus> {
    anyhow::bail!("not yet")
}
