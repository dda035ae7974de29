//! `cairn topology`: validate the topology and answer TheRock's queries (stages, artifacts,
//! inbound/produced sets, build order, dependency graph).

use std::path::Path;

use cairn_fingerprint::Topology;

use crate::cli::TopologyCommand;
use crate::output::{ExitStatus, Printer};

/// Run one topology query.
pub fn run(
    path: &Path,
    command: &TopologyCommand,
    printer: &mut Printer,
) -> anyhow::Result<ExitStatus> {
    if let TopologyCommand::Validate = command {
        let topology = super::load_unchecked(path, printer)?;
        return validate(path, &topology, printer);
    }
    // Every other query answers only from a valid topology.
    let topology = super::load_topology(path, printer)?;
    match command {
        TopologyCommand::Validate => unreachable!("handled above"),
        TopologyCommand::Stages => {
            printer.names(sorted(topology.stages().iter().map(|s| s.name.as_str())))?
        }
        TopologyCommand::Groups => {
            printer.names(sorted(topology.groups().iter().map(|g| g.name.as_str())))?
        }
        TopologyCommand::Artifacts => {
            printer.names(sorted(topology.artifacts().iter().map(|a| a.name.as_str())))?
        }
        TopologyCommand::Inbound(arg) => printer.names(topology.inbound(&arg.stage)?)?,
        TopologyCommand::Produced(arg) => printer.names(topology.produced(&arg.stage)?)?,
        // Build order is an order, not a set: never sorted.
        TopologyCommand::Order => printer.names(topology.build_order())?,
        TopologyCommand::Graph => {
            if printer.json() {
                printer.json_value(&topology.dependency_graph())?;
            } else {
                for line in topology.to_dot().lines() {
                    printer.line(line)?;
                }
            }
        }
    }
    Ok(ExitStatus::Success)
}

fn sorted<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = names.collect();
    v.sort_unstable();
    v
}

/// Exit 0 when valid; else every problem on stderr (and as a JSON array of messages with `--json`)
/// and exit 1.
fn validate(path: &Path, topology: &Topology, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    let problems: Vec<String> = topology.validate().iter().map(|p| p.to_string()).collect();
    for p in &problems {
        printer.problem(p);
    }
    if printer.json() {
        printer.json_value(&problems)?;
    }
    if problems.is_empty() {
        printer.note(&format!(
            "topology `{}` is valid: {} stages, {} artifact groups, {} artifacts",
            path.display(),
            topology.stages().len(),
            topology.groups().len(),
            topology.artifacts().len()
        ));
        Ok(ExitStatus::Success)
    } else {
        printer.note(&format!(
            "topology `{}` has {} problem(s)",
            path.display(),
            problems.len()
        ));
        Ok(ExitStatus::Failure)
    }
}
