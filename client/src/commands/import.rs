//! `cairn import --run-id ID`: make the daemon list a run published without Cairn once and remember
//! its archives (with `--ingest`, download them now, going on past an archive that fails, which is
//! reported). Exit 1 when the run has no archives or an archive could not be ingested.
//!
//! Plain output: one archive key per line. `--json`: the [`Imported`](cairn_client::api::Imported)
//! document (`prefix`, `archives[]`, `ingested`).

use std::time::Instant;

use cairn_client::api::{self, ClientError};
use cairn_fingerprint::Platform;

use crate::cli::{Cli, ImportArgs};
use crate::output::{ExitStatus, Printer};

/// Import a run.
pub fn run(cli: &Cli, args: &ImportArgs, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    let started = Instant::now();
    let platform = args.platform.unwrap_or_else(Platform::host).to_string();
    let repo = args.repo.clone().unwrap_or_default();
    let addr = super::daemon_addr(cli);
    let result = super::runtime()?.block_on(async {
        let mut client = super::connect_daemon(&addr).await?;
        match api::import(&mut client, &args.run_id, &platform, &repo, args.ingest).await {
            Ok(imported) => Ok(Some(imported)),
            Err(ClientError::Rpc {
                code: tonic::Code::NotFound,
                message,
                ..
            }) => {
                printer.problem(&message);
                Ok(None)
            }
            Err(e) => Err(super::explain(e, &addr)),
        }
    })?;
    let Some(imported) = result else {
        return Ok(ExitStatus::Failure);
    };
    if printer.json() {
        printer.json_value(&imported)?;
    } else {
        for key in &imported.archives {
            printer.line(key)?;
        }
    }
    for f in &imported.failures {
        printer.problem(&format!("not ingested: `{}`: {}", f.key, f.message));
    }
    printer.note(&format!(
        "cairn: import run {}: {} archive(s) under `{}`, {} ingested{}; {:.2} s",
        args.run_id,
        imported.archives.len(),
        imported.prefix,
        imported.ingested,
        if imported.failures.is_empty() {
            String::new()
        } else {
            format!(", {} failed", imported.failures.len())
        },
        started.elapsed().as_secs_f64()
    ));
    Ok(if imported.failures.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}
