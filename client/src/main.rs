//! `cairn`: the command-line client. This file is glue: parse arguments, run one command, render
//! its error, and turn the outcome into an exit status (0 ok, 1 "no", 2 error).

mod cli;
mod commands;
mod help;
mod output;
mod progress;

use clap::FromArgMatches;
use clap::parser::ValueSource;

use crate::output::{ExitStatus, Printer};

fn main() -> std::process::ExitCode {
    let matches = help::command().get_matches();
    let mut cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    cli.topology_explicit = matches.value_source("topology") == Some(ValueSource::CommandLine);
    if let Some(file) = &cli.token_file {
        cairn_client::connect::set_token_file(file.clone());
    }
    let mut printer = Printer::new(cli.json, cli.quiet, cli.verbose);
    let status = match commands::run(&cli, &mut printer).and_then(|s| printer.flush().map(|()| s)) {
        Ok(status) => status,
        // A closed pipe (`cairn topology artifacts | head -1`) is the reader's choice, not an error:
        // exit quietly with success, as Unix tools do.
        Err(err) if output::is_broken_pipe(&err) => ExitStatus::Success,
        Err(err) => {
            output::print_error(&err);
            // An invalid topology is an answer ("no"), like `cairn topology validate`'s.
            if err.downcast_ref::<commands::InvalidTopology>().is_some() {
                ExitStatus::Failure
            } else {
                ExitStatus::Error
            }
        }
    };
    status.into()
}
