//! `cairn resolve`: which run each inbound artifact of a stage would come from, and why — the
//! daemon's multi-base choice for the checkout's fingerprints, without downloading or writing
//! anything. What a developer asks before a bisect step or when a bootstrap picked a surprising run.
//!
//! Plain output: one line per archive, `FOUND<TAB>{archive}<TAB>run {id}<TAB>{why}` or
//! `MISSING<TAB>{artifact}<TAB>{why}`; `-v` adds every explanation line on stderr. `--json`: one
//! [`ResolveJson`] document (`cairn_client::documents`). Exit status 0 when everything was found, 1 when something is missing.

use std::time::Instant;

use cairn_client::api::Status;
use cairn_client::documents::{self, ResolveJson};

use crate::cli::{Cli, ResolveArgs};
use crate::output::{ExitStatus, Printer};

/// `cairn resolve`.
pub fn run(cli: &Cli, args: &ResolveArgs, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    let started = Instant::now();
    let plan = super::fetch_plan(cli, Some(&args.stage), &args.select, printer)?;
    let addr = super::daemon_addr(cli);
    let rt = super::runtime()?;
    let (resolved, runs) = rt.block_on(async {
        let mut client = super::connect_daemon(&addr).await?;
        documents::resolve_all(&mut client, &plan.requests)
            .await
            .map_err(|e| super::explain(e, &addr))
    })?;
    let missing = documents::missing(&resolved);
    let found = resolved.len() - missing.len();

    if printer.json() {
        printer.json_value(&ResolveJson {
            command: "resolve",
            stage: args.stage.clone(),
            families: plan.families.clone(),
            platform: plan.platform.to_string(),
            daemon: addr.to_string(),
            checkout_head: plan.head.clone(),
            fingerprints: plan.fingerprints.clone(),
            resolved: resolved.clone(),
            missing: missing.clone(),
            runs: runs.clone(),
            elapsed_ms: started.elapsed().as_millis() as u64,
        })?;
    } else {
        for r in &resolved {
            let why = r.explanation.first().map_or("", String::as_str);
            match (&r.status, &r.producer) {
                (Status::Found, Some(p)) => {
                    printer.line(&format!("FOUND\t{}\trun {}\t{why}", r.artifact, p.run_id))?
                }
                _ => printer.line(&format!("MISSING\t{}\t{why}", r.artifact))?,
            }
            for line in r.explanation.iter().skip(1) {
                printer.detail(&format!("  {}: {line}", r.artifact));
            }
        }
    }
    for m in &missing {
        printer.problem(&super::missing_line(&m.artifact, &m.fingerprint));
    }
    printer.note(&format!(
        "cairn: resolve {} ({}): {found} archive(s) found, {} missing; runs: {}; {:.2} s",
        args.stage,
        plan.families.join(", "),
        missing.len(),
        if runs.is_empty() {
            "none".to_string()
        } else {
            runs.join(", ")
        },
        started.elapsed().as_secs_f64(),
    ));
    Ok(if missing.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}
