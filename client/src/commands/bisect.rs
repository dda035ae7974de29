//! `cairn bisect run` and `cairn bisect log`: glue over [`cairn_client::bisect`].
//!
//! Plain output: one line per probe on stderr while it runs, then the report's table and answer on
//! stdout. `--json`: the `cairn-bisect-v1` [`Report`] (the command's own stdout goes to stderr so
//! stdout holds only the document). Exit status: 0 when the first bad commit was found, 1 when
//! skipped commits leave it ambiguous, 2 when the command aborted the bisect (exit ≥ 128 or a
//! signal) or on errors, 128 + N when interrupted by signal N.

use std::sync::Arc;

use anyhow::Context;
use cairn_client::bisect::Report;
use cairn_client::bisect::probe::{CommandOutput, TestCommand, prepare_build_dir};
use cairn_client::bisect::report::{CommitRef, Conclusion, Step, StepResult};
use cairn_client::bisect::session::{self, Observer, SessionSpec};
use cairn_client::fetch::Transfer;
use cairn_client::materialize::StopFlag;

use crate::cli::{BisectCommand, BisectLogArgs, BisectRunArgs, Cli};
use crate::output::{ExitStatus, Printer};

/// `cairn bisect ...`.
pub fn run(
    cli: &Cli,
    command: &BisectCommand,
    printer: &mut Printer,
) -> anyhow::Result<ExitStatus> {
    match command {
        BisectCommand::Run(args) => bisect_run(cli, args, printer),
        BisectCommand::Log(args) => log(args, printer),
    }
}

/// One line per probe on stderr.
struct StepLines {
    quiet: bool,
}

impl Observer for StepLines {
    fn on_start(&self, candidates: usize) {
        if !self.quiet {
            eprintln!("cairn: bisect: {candidates} candidate commit(s)");
        }
    }

    fn on_probe(&self, step: usize, commit: &CommitRef, remaining: usize) {
        if !self.quiet {
            eprintln!(
                "cairn: bisect: step {step}: {} {} ({remaining} untested)",
                &commit.commit[..commit.commit.len().min(12)],
                commit.subject
            );
        }
    }

    fn on_step(&self, step: &Step) {
        if !self.quiet {
            eprintln!(
                "cairn: bisect: step {}: {} ({}); {} downloaded, {} file(s) written",
                step.step,
                step.result.as_str(),
                step.reason,
                super::human_bytes(step.downloaded_bytes),
                step.files_written
            );
        }
    }
}

fn bisect_run(
    cli: &Cli,
    args: &BisectRunArgs,
    printer: &mut Printer,
) -> anyhow::Result<ExitStatus> {
    let rt = super::runtime()?;
    let stop = Arc::new(StopFlag::default());
    {
        let _entered = rt.enter();
        use tokio::signal::unix::{SignalKind, signal};
        let int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        rt.spawn(stop_on_signal(stop.clone(), int, term));
    }
    let exclude_components = super::history_excluded_components(&args.history)?;
    let mut history = super::bisect_history(cli, &args.history, printer)?;
    // Revisions are checked before anything is created or the daemon is asked.
    let (_, _, candidates) = history.candidates(&args.good, &args.bad)?;
    printer.detail(&format!(
        "{} candidate(s) in `{}`",
        candidates.len(),
        history.repo().display()
    ));
    let build_dir = prepare_build_dir(&args.build_dir)
        .with_context(|| format!("creating the build dir `{}`", args.build_dir.display()))?;
    let resume = if args.resume {
        Some(session::load_log(&build_dir).with_context(|| {
            format!(
                "--resume: no readable session log in `{}`",
                build_dir.display()
            )
        })?)
    } else {
        None
    };
    let github = super::github_lookup(&args.github, &history)?;
    let addr = super::daemon_addr(cli);
    let spec = SessionSpec {
        github,
        resume,
        good: args.good.clone(),
        bad: args.bad.clone(),
        build_dir,
        command: TestCommand {
            argv: args.command.clone(),
            output: if printer.json() {
                CommandOutput::Stderr
            } else {
                CommandOutput::Inherit
            },
        },
        nearest: args.nearest,
        prefetch: !args.no_prefetch,
        exclude_components,
        transfer: Transfer::for_addr(&addr),
        stop,
    };
    let observer = StepLines { quiet: cli.quiet };
    let report = rt.block_on(async {
        let mut client = super::connect_daemon(&addr).await?;
        session::run(&mut client, &mut history, &spec, &observer)
            .await
            .map_err(|e| match e {
                cairn_client::bisect::BisectError::Client(c) => super::explain(c, &addr),
                other => anyhow::Error::new(other),
            })
    })?;
    print_report(&report, printer)
}

fn log(args: &BisectLogArgs, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    let report = session::load_log(&args.build_dir).with_context(|| {
        format!(
            "no bisect session log in `{}` (`cairn bisect run --build-dir` writes it)",
            args.build_dir.display()
        )
    })?;
    print_report(&report, printer)
}

fn print_report(report: &Report, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    if printer.json() {
        printer.json_value(report)?;
    } else {
        printer.line(&report.render())?;
    }
    let skipped = report
        .steps
        .iter()
        .filter(|s| s.result == StepResult::Skip)
        .count();
    if skipped > 0 {
        printer.note(&format!("cairn: bisect: {skipped} probe(s) skipped"));
    }
    Ok(match &report.result {
        Conclusion::FirstBad { .. } => ExitStatus::Success,
        Conclusion::Ambiguous { .. } => ExitStatus::Failure,
        Conclusion::Aborted { .. } | Conclusion::Running => ExitStatus::Error,
        Conclusion::Interrupted { signal } => {
            printer.flush()?;
            std::process::exit(128 + signal)
        }
    })
}

/// SIGINT/SIGTERM: ask the session to stop at its next boundary (the materializer stops at a file
/// boundary; a running command is waited for, and it usually got the same SIGINT from the
/// terminal). Later signals are ignored: the stop is on its way.
async fn stop_on_signal(
    stop: Arc<StopFlag>,
    mut int: tokio::signal::unix::Signal,
    mut term: tokio::signal::unix::Signal,
) {
    let signal = tokio::select! {
        _ = int.recv() => libc::SIGINT,
        _ = term.recv() => libc::SIGTERM,
    };
    stop.request(signal);
    eprintln!("cairn: bisect: stopping at the next step boundary (the repository is untouched)");
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}
