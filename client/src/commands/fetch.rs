//! `cairn bootstrap` and `cairn fetch`: compute the fingerprints of a stage's inbound artifacts from
//! the checkout, ask the daemon for them (one `Fetch` per family), and materialize what it has —
//! bootstrap layout with `.prebuilt` markers, plain `artifacts/{name}_{component}_{family}/`, or
//! flattened. Missing artifacts are listed with the daemon's explanation and make the exit status 1,
//! after everything found has been materialized. Re-running into the same destination rewrites only
//! what changed (the materializer's state file).
//!
//! Plain output: one line per archive, `FOUND<TAB>{archive}<TAB>run {id}<TAB>{cas|storage}` or
//! `MISSING<TAB>{artifact}<TAB>{first explanation line}`. `--json`: one [`FetchJson`] document (`cairn_client::documents`).
//! The summary goes to stderr.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use cairn_client::api::ClientError;
use cairn_client::api::{Resolved, Status};
use cairn_client::documents::{self, FetchJson};
use cairn_client::fetch::{self, Summary, Transfer};
use cairn_client::materialize::{CopyMode, Layout, MaterializeError, Options, StopFlag};

use cairn_client::prebuilt;

use crate::cli::{BootstrapArgs, Cli, FetchArgs, PrebuiltMode, SelectArgs, WriteArgs};
use crate::output::{ExitStatus, Printer};
use crate::progress::Progress;

/// `cairn bootstrap`.
pub fn bootstrap(
    cli: &Cli,
    args: &BootstrapArgs,
    printer: &mut Printer,
) -> anyhow::Result<ExitStatus> {
    if let Some(dir) = &args.artifact_dir {
        anyhow::bail!(
            "--artifact-dir `{}`: cairn bootstraps from what cairnd can resolve, not from a \
             directory; publish that build's artifacts with `cairn push --build-dir ...` (its \
             `artifacts/`), then `cairn bootstrap` takes them by fingerprint",
            dir.display()
        );
    }
    let status = run(
        cli,
        "bootstrap",
        Some(&args.stage),
        &args.build_dir,
        options(Layout::Bootstrap, &args.write),
        &args.select,
        printer,
    )?;
    if let Some(mode) = args.mode {
        let mode = match mode {
            PrebuiltMode::Enable => prebuilt::Mode::Enable,
            PrebuiltMode::Disable => prebuilt::Mode::Disable,
        };
        let applied = prebuilt::apply(&args.build_dir, mode, &args.include, &args.exclude)?;
        printer.note("Projects marked with an 'X' will be build enabled:");
        for s in &applied.stages {
            printer.note(&format!(
                "[{}] {}",
                if s.enabled { 'X' } else { ' ' },
                s.relpath
            ));
        }
        if applied.changed || args.force_reconfigure {
            printer.note("Reconfiguring...");
            prebuilt::reconfigure(&args.build_dir)?;
        }
    }
    Ok(status)
}

/// `cairn fetch`.
pub fn fetch(cli: &Cli, args: &FetchArgs, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    if let Some(dir) = &args.download_cache_dir {
        printer.note(&format!(
            "cairn: --download-cache-dir `{}`: downloaded archives stay in cairnd's store (the \
             shared cache); this directory is not written",
            dir.display()
        ));
    }
    if args.no_extract {
        return download_only(cli, args, printer);
    }
    let layout = if args.bootstrap {
        Layout::Bootstrap
    } else if args.flatten {
        Layout::Flatten
    } else {
        Layout::Plain
    };
    run(
        cli,
        "fetch",
        args.stage.as_deref(),
        &args.output_dir,
        options(layout, &args.write),
        &args.select,
        printer,
    )
}

/// `cairn fetch --no-extract` (TheRock's "download only"): the daemon makes every archive local in
/// its store — the shared download cache — and nothing is written to the output dir. Plain output:
/// the FOUND/MISSING lines of a fetch (source `local`); `--json`: `{"command": "fetch",
/// "no_extract": true, "resolved": [...], "missing": [...]}`. Exit 1 when something is missing.
fn download_only(cli: &Cli, args: &FetchArgs, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    let started = Instant::now();
    let plan = super::fetch_plan(cli, args.stage.as_deref(), &args.select, printer)?;
    let addr = super::daemon_addr(cli);
    let warmed = super::runtime()?.block_on(async {
        let mut client = super::connect_daemon(&addr).await?;
        fetch::warm(&mut client, &plan.requests)
            .await
            .map_err(|e| super::explain(e, &addr))
    })?;
    let missing: Vec<&Resolved> = warmed
        .resolved
        .iter()
        .filter(|r| r.status != Status::Found)
        .collect();
    if printer.json() {
        printer.json_value(&serde_json::json!({
            "command": "fetch",
            "no_extract": true,
            "stage": args.stage,
            "families": plan.families,
            "platform": plan.platform.to_string(),
            "resolved": warmed.resolved,
            "missing": missing,
        }))?;
    } else {
        for r in &warmed.resolved {
            match (&r.status, &r.producer) {
                (Status::Found, Some(p)) => {
                    printer.line(&format!("FOUND\t{}\trun {}\tlocal", r.artifact, p.run_id))?
                }
                _ => printer.line(&format!(
                    "MISSING\t{}\t{}",
                    r.artifact,
                    r.explanation.first().map_or("", String::as_str)
                ))?,
            }
        }
    }
    print_missing(printer, missing.iter().map(|m| &**m));
    let found = warmed.resolved.len() - missing.len();
    printer.note(&format!(
        "cairn: fetch --no-extract: {found} archive(s) local in cairnd's store ({} downloaded), {} \
         missing; nothing written to `{}`; {:.2} s",
        super::human_bytes(warmed.daemon.storage_bytes),
        missing.len(),
        args.output_dir.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(if missing.is_empty() && found > 0 {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

/// How to materialize: `layout`, copies or hard links, incremental unless `--full`.
fn options(layout: Layout, write: &WriteArgs) -> Options {
    Options {
        copy_mode: if write.hardlink {
            CopyMode::Hardlink
        } else {
            CopyMode::Auto
        },
        incremental: !write.full,
        verify: write.verify,
        stop: Some(Arc::new(StopFlag::default())),
        ..Options::new(layout)
    }
}

fn run(
    cli: &Cli,
    command: &'static str,
    stage: Option<&str>,
    dest: &Path,
    opts: Options,
    select: &SelectArgs,
    printer: &mut Printer,
) -> anyhow::Result<ExitStatus> {
    let started = Instant::now();
    let layout = opts.layout;
    // Signal handlers first, so that SIGINT/SIGTERM during fingerprinting also end with the message
    // and 130/143; the runtime's worker threads serve them while this thread fingerprints.
    let rt = super::runtime()?;
    if let Some(stop) = opts.stop.clone() {
        let _entered = rt.enter();
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(int), Ok(term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            rt.spawn(stop_on_signal(stop, int, term));
        }
    }
    let plan = super::fetch_plan(cli, stage, select, printer)?;
    std::fs::create_dir_all(dest).with_context(|| format!("creating `{}`", dest.display()))?;
    let dest = std::path::absolute(dest).with_context(|| format!("`{}`", dest.display()))?;
    let addr = super::daemon_addr(cli);
    let asked = plan
        .requests
        .iter()
        .map(|r| r.artifacts.len())
        .sum::<usize>();
    let outcome = if asked == 0 {
        None
    } else {
        let progress = Arc::new(Progress::new(cli.quiet));
        let result = rt.block_on(async {
            let mut client = super::connect_daemon(&addr).await?;
            match fetch::fetch(
                &mut client,
                &plan.requests,
                &dest,
                &opts,
                Transfer::for_addr(&addr),
                progress.clone(),
            )
            .await
            {
                Err(ClientError::Materialize(MaterializeError::Interrupted {
                    signal,
                    unmarked,
                })) => {
                    progress.finish();
                    exit_interrupted(signal, unmarked)
                }
                other => other.map_err(|e| super::explain(e, &addr)),
            }
        });
        progress.finish();
        Some(result?)
    };
    let elapsed = started.elapsed();
    let summary = Summary::of(outcome.as_ref(), elapsed);
    let missing: Vec<Resolved> = outcome
        .as_ref()
        .map(|o| o.missing().cloned().collect())
        .unwrap_or_default();

    if printer.json() {
        let (resolved, trees) = outcome.map(|o| (o.resolved, o.trees)).unwrap_or_default();
        printer.json_value(&FetchJson {
            command,
            stage: stage.map(str::to_string),
            families: plan.families.clone(),
            platform: plan.platform.to_string(),
            destination: dest.clone(),
            layout: documents::layout_name(layout),
            daemon: addr.to_string(),
            checkout_head: plan.head.clone(),
            fingerprints: plan.fingerprints.clone(),
            resolved,
            missing: missing.clone(),
            trees,
            summary: summary.clone(),
        })?;
    } else if let Some(o) = &outcome {
        for r in &o.resolved {
            match (&r.status, &r.producer) {
                (Status::Found, Some(p)) => {
                    let source = o
                        .trees
                        .iter()
                        .find(|t| t.artifact == r.artifact)
                        .map_or("-", |t| t.source.as_str());
                    printer.line(&format!(
                        "FOUND\t{}\trun {}\t{source}",
                        r.artifact, p.run_id
                    ))?;
                }
                _ => printer.line(&format!(
                    "MISSING\t{}\t{}",
                    r.artifact,
                    r.explanation.first().map_or("", String::as_str)
                ))?,
            }
        }
    }
    print_missing(printer, missing.iter());
    let what = match stage {
        Some(s) => format!("{command} {s}"),
        None => command.to_string(),
    };
    if asked == 0 {
        printer.note(&format!(
            "cairn: {what}: nothing to fetch (no inbound artifacts)"
        ));
        return Ok(ExitStatus::Success);
    }
    printer.note(&format!(
        "cairn: {what} ({}) into `{}`: {} artifact(s), {} missing; {} file(s), {} ({} written, {} unchanged, {} removed); daemon: {} from cache, {} from storage ({} downloaded){}; runs: {}; {:.2} s",
        plan.families.join(", "),
        dest.display(),
        summary.artifacts,
        summary.missing,
        summary.files,
        super::human_bytes(summary.bytes),
        summary.files_written,
        summary.files_unchanged,
        summary.files_removed,
        summary.from_cas,
        summary.from_storage,
        super::human_bytes(summary.storage_bytes),
        if summary.received_bytes > 0 {
            format!(", {} received", super::human_bytes(summary.received_bytes))
        } else {
            String::new()
        },
        if summary.runs.is_empty() {
            "none".to_string()
        } else {
            summary.runs.join(", ")
        },
        elapsed.as_secs_f64(),
    ));
    Ok(if !missing.is_empty() || summary.artifacts == 0 {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}

/// `SIGINT`/`SIGTERM` during a fetch: before materialization has started nothing in the destination
/// is changing, so exit at once; during it, ask the materializer to stop at the next file boundary
/// (it saves its state and returns `Interrupted`, which `exit_interrupted` reports). A second signal
/// while it stops is ignored: the stop is already on its way.
async fn stop_on_signal(
    stop: Arc<StopFlag>,
    mut int: tokio::signal::unix::Signal,
    mut term: tokio::signal::unix::Signal,
) {
    let signal = tokio::select! {
        _ = int.recv() => libc::SIGINT,
        _ = term.recv() => libc::SIGTERM,
    };
    if !stop.request(signal) {
        eprintln!(
            "cairn: interrupted by {} before the build dir was changed",
            signal_name(signal)
        );
        std::process::exit(128 + signal);
    }
    // Keep the handlers installed until the run stops.
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// The materializer stopped on a signal at a consistent point: say so and exit `128 + signal`
/// (130 for SIGINT, 143 for SIGTERM), as a shell reports a process killed by it.
fn exit_interrupted(signal: i32, unmarked: usize) -> ! {
    eprintln!(
        "cairn: interrupted by {}; {unmarked} stage dirs left unmarked, rerun to finish",
        signal_name(signal)
    );
    std::process::exit(128 + signal)
}

/// Each missing artifact on stderr with the daemon's explanation, indented under it.
fn print_missing<'a>(printer: &mut Printer, missing: impl Iterator<Item = &'a Resolved>) {
    for m in missing {
        printer.problem(&super::missing_line(&m.artifact, &m.fingerprint));
        for line in &m.explanation {
            printer.problem(&format!("  {line}"));
        }
    }
}
