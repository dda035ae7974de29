//! Commands: each turns parsed arguments into work and output, returning an [`ExitStatus`].
//! One module per top-level subcommand; the dispatcher below is the only `match` over [`Command`].

mod diff;
mod find;
mod fingerprint;
mod layout;
mod topology;

use std::path::Path;

use cairn_fingerprint::Topology;

use crate::cli::{Cli, Command};
use crate::output::{ExitStatus, Printer};

/// Run the command `cli` names.
pub fn run(cli: &Cli, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    match &cli.command {
        Command::Topology { command } => topology::run(&cli.topology, command, printer),
        Command::Layout(args) => layout::run(args, printer),
        Command::Fingerprint(args) => fingerprint::run(&cli.topology, args, printer),
        Command::Find(args) => find::run(cli, args, printer),
        Command::Diff(args) => diff::run(cli, args, printer),
    }
}

/// Load the topology named by `--topology`. The library error names the file and the cause on
/// one line, so a missing or malformed file is a one-line error.
fn load_topology(path: &Path, printer: &mut Printer) -> anyhow::Result<Topology> {
    let topology = Topology::load(path)?;
    printer.detail(&format!(
        "topology `{}`: {} stages, {} artifacts",
        path.display(),
        topology.stages().len(),
        topology.artifacts().len()
    ));
    Ok(topology)
}
