//! `cairn fingerprint`: source fingerprints of artifacts at a git checkout, and `explain` for the
//! inputs of one.
//!
//! Plain output is `artifact<TAB>fingerprint`, one line per artifact sorted by name; `--json` is
//! one object mapping artifact name → fingerprint. `explain` prints `kind<TAB>name<TAB>value` per
//! input (or the `Explanation` object with `--json`).

use anyhow::Context;
use cairn_fingerprint::{FingerprintConfig, Fingerprinter, Platform};

use crate::cli::{Cli, ExplainArgs, FingerprintArgs, FingerprintCommand};
use crate::output::{ExitStatus, Printer};

/// Compute or explain fingerprints.
pub fn run(cli: &Cli, args: &FingerprintArgs, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    // The checkout's own topology (unless --topology): fingerprints describe that checkout.
    if let Some(FingerprintCommand::Explain(explain_args)) = &args.command {
        cairn_fingerprint::git::toplevel(&explain_args.checkout)?;
        let topology = super::checkout_topology(cli, &explain_args.checkout, printer)?;
        return explain(&topology, explain_args, printer);
    }
    let select = &args.select;
    // clap enforces both (`required = true`); the options only exist so `explain` can negate them.
    let checkout = select
        .checkout
        .as_deref()
        .context("--checkout is required")?;
    // Not a checkout at all says so, before its (missing) topology does.
    cairn_fingerprint::git::toplevel(checkout)?;
    let topology = super::checkout_topology(cli, checkout, printer)?;
    let family = select.family.as_deref().context("--family is required")?;
    let platform = select.platform.unwrap_or_else(Platform::host);

    let names: Vec<&str> = match (&select.stage, select.artifact.is_empty()) {
        (Some(stage), _) => {
            let mut names = topology.inbound(stage)?;
            names.extend(topology.produced(stage)?);
            names.into_iter().collect()
        }
        (None, false) => select.artifact.iter().map(String::as_str).collect(),
        (None, true) => topology
            .artifacts()
            .iter()
            .map(|a| a.name.as_str())
            .collect(),
    };
    let config = FingerprintConfig {
        variant: select.variant.clone(),
        ..FingerprintConfig::default()
    };
    let started = std::time::Instant::now();
    let fingerprinter = Fingerprinter::new(&topology, checkout, config)?;
    let fingerprints = fingerprinter.compute_some(&names, family, platform)?;
    printer.detail(&format!(
        "{} fingerprint(s) for family `{family}` on {platform} at commit {} in {:.1?}",
        fingerprints.len(),
        fingerprinter.snapshot().head,
        started.elapsed()
    ));
    if printer.json() {
        printer.json_value(&fingerprints)?;
    } else {
        for (name, fp) in &fingerprints {
            printer.line(&format!("{name}\t{fp}"))?;
        }
    }
    Ok(ExitStatus::Success)
}

fn explain(
    topology: &cairn_fingerprint::Topology,
    args: &ExplainArgs,
    printer: &mut Printer,
) -> anyhow::Result<ExitStatus> {
    let platform = args.platform.unwrap_or_else(Platform::host);
    let config = FingerprintConfig {
        variant: args.variant.clone(),
        ..FingerprintConfig::default()
    };
    let fingerprinter = Fingerprinter::new(topology, &args.checkout, config)?;
    let explanation = fingerprinter.explain(&args.artifact, &args.family, platform)?;
    if printer.json() {
        printer.json_value(&explanation)?;
    } else {
        printer.line(&format!(
            "{}\t{}\t(family {}, {}, {})",
            explanation.artifact,
            explanation.fingerprint,
            explanation.family,
            explanation.platform,
            explanation.scheme
        ))?;
        for input in &explanation.inputs {
            printer.line(&format!(
                "  {}\t{}\t{}",
                input.kind, input.name, input.value
            ))?;
        }
    }
    Ok(ExitStatus::Success)
}
