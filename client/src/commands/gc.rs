//! `cairn gc [--max-bytes N]`: evict least-recently-used blobs from the daemon's store down to a
//! quota (default: the daemon's configured one). Blobs leased by running fetches are kept.
//!
//! Plain output: `evicted<TAB>{blobs}<TAB>{bytes}` and `store<TAB>{bytes}`. `--json`: the
//! [`GcOutcome`](cairn_client::api::GcOutcome) document (`evicted_blobs`, `evicted_bytes`,
//! `store_bytes`).

use cairn_client::api;

use crate::cli::{Cli, GcArgs};
use crate::output::{ExitStatus, Printer};

/// Run gc.
pub fn run(cli: &Cli, args: &GcArgs, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    let quota = args.max_bytes.map(|b| b.as_u64());
    let addr = super::daemon_addr(cli);
    let outcome = super::runtime()?.block_on(async {
        let mut client = super::connect_daemon(&addr).await?;
        api::gc(&mut client, quota)
            .await
            .map_err(|e| super::explain(e, &addr))
    })?;
    if printer.json() {
        printer.json_value(&outcome)?;
    } else {
        printer.line(&format!(
            "evicted\t{}\t{}",
            outcome.evicted_blobs, outcome.evicted_bytes
        ))?;
        printer.line(&format!("store\t{}", outcome.store_bytes))?;
    }
    printer.note(&format!(
        "cairn: gc: evicted {} blob(s), {}; store now {}",
        outcome.evicted_blobs,
        super::human_bytes(outcome.evicted_bytes),
        super::human_bytes(outcome.store_bytes)
    ));
    Ok(ExitStatus::Success)
}
