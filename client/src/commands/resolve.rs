//! `cairn resolve`: which run each inbound artifact of a stage would come from, and why — the
//! daemon's multi-base choice for the checkout's fingerprints, without downloading or writing
//! anything. What a developer asks before a bisect step or when a bootstrap picked a surprising run.
//!
//! Plain output: one line per archive, `FOUND<TAB>{archive}<TAB>run {id}<TAB>{why}` or
//! `MISSING<TAB>{artifact}<TAB>{why}`; `-v` adds every explanation line on stderr. `--json`: one
//! [`ResolveJson`] document. Exit status 0 when everything was found, 1 when something is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use cairn_client::api::{self, Resolved, Status};
use cairn_fingerprint::Blake3;
use serde::Serialize;

use crate::cli::{Cli, ResolveArgs};
use crate::output::{ExitStatus, Printer};

/// The `--json` document of `cairn resolve`.
///
/// ```json
/// {
///   "command": "resolve",
///   "stage": "math-libs",
///   "families": ["gfx94X-dcgpu"],
///   "platform": "linux",
///   "daemon": "unix:/run/user/1000/cairn/cairnd.sock",
///   "checkout_head": "<commit>",
///   "fingerprints": {"gfx94X-dcgpu": {"amd-llvm": "<64 hex>"}},
///   "resolved": [Resolved],   // every archive found and every artifact missing, with explanations
///   "missing": [Resolved],    // the missing subset
///   "runs": ["1001", "1002"], // the runs the found archives come from
///   "elapsed_ms": 12
/// }
/// ```
#[derive(Debug, Serialize)]
pub struct ResolveJson {
    /// Always `resolve`.
    pub command: &'static str,
    /// The stage.
    pub stage: String,
    /// Families resolved (besides `generic`).
    pub families: Vec<String>,
    /// Platform.
    pub platform: String,
    /// Daemon address.
    pub daemon: String,
    /// The checkout's HEAD commit.
    pub checkout_head: String,
    /// Family → artifact → fingerprint.
    pub fingerprints: BTreeMap<String, BTreeMap<String, Blake3>>,
    /// Every archive found and every artifact missing.
    pub resolved: Vec<Resolved>,
    /// The missing subset.
    pub missing: Vec<Resolved>,
    /// Runs the found archives come from.
    pub runs: Vec<String>,
    /// Wall time, fingerprinting included.
    pub elapsed_ms: u64,
}

/// `cairn resolve`.
pub fn run(cli: &Cli, args: &ResolveArgs, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    let started = Instant::now();
    let plan = super::fetch_plan(cli, Some(&args.stage), &args.select, printer)?;
    let addr = super::daemon_addr(cli);
    let rt = super::runtime()?;
    let (resolved, runs) = rt.block_on(async {
        let mut client = super::connect_daemon(&addr).await?;
        let mut resolved: Vec<Resolved> = Vec::new();
        let mut runs = BTreeSet::new();
        for request in plan.requests.iter().filter(|r| !r.artifacts.is_empty()) {
            let (answer, request_runs) = api::resolve(&mut client, request)
                .await
                .map_err(|e| super::explain(e, &addr))?;
            // A `generic` archive is the answer of every family's request: list it once.
            for r in answer {
                if !resolved.iter().any(|seen| seen.artifact == r.artifact) {
                    resolved.push(r);
                }
            }
            runs.extend(request_runs);
        }
        anyhow::Ok((resolved, runs.into_iter().collect::<Vec<_>>()))
    })?;
    let missing: Vec<Resolved> = resolved
        .iter()
        .filter(|r| r.status == Status::Missing)
        .cloned()
        .collect();
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
        printer.problem(&format!(
            "missing: `{}` (fingerprint {}) has no acceptable producer",
            m.artifact, m.fingerprint
        ));
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
