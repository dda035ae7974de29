//! `cairn verify [--sample N]`: ask the running daemon to re-hash its store (every blob, or a
//! random sample of N) while it keeps serving; corrupt blobs are quarantined and dropped from its
//! index, so the next bootstrap downloads them again. Exit 0 when clean, 1 when corruption (or an
//! index entry without its file) was found, 2 on errors.
//!
//! Plain output: one `corrupt<TAB>{digest}<TAB>{path}<TAB>{quarantined_to}` or
//! `missing<TAB>{digest}` line per finding, then `checked<TAB>{blobs}<TAB>{bytes}`. `--json`: the
//! [`VerifyOutcome`](cairn_client::api::VerifyOutcome) document (`checked`, `bytes`, `corrupt`
//! [`digest`, `path`, `quarantined_to`, `actual`], `missing`, `seconds`) plus `daemon` and `clean`.

use cairn_client::api::{self, VerifyOutcome};
use serde::Serialize;

use crate::cli::{Cli, VerifyArgs};
use crate::output::{ExitStatus, Printer};

#[derive(Serialize)]
struct VerifyJson<'a> {
    daemon: String,
    clean: bool,
    #[serde(flatten)]
    outcome: &'a VerifyOutcome,
}

/// Run verify.
pub fn run(cli: &Cli, args: &VerifyArgs, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    let addr = super::daemon_addr(cli);
    let outcome = super::runtime()?.block_on(async {
        let mut client = super::connect_daemon(&addr).await?;
        api::verify(&mut client, args.sample)
            .await
            .map_err(|e| super::explain(e, &addr))
    })?;
    let clean = outcome.is_clean();
    if printer.json() {
        printer.json_value(&VerifyJson {
            daemon: addr.to_string(),
            clean,
            outcome: &outcome,
        })?;
    } else {
        for c in &outcome.corrupt {
            printer.line(&format!(
                "corrupt\t{}\t{}\t{}",
                c.digest, c.path, c.quarantined_to
            ))?;
        }
        for m in &outcome.missing {
            printer.line(&format!("missing\t{m}"))?;
        }
        printer.line(&format!("checked\t{}\t{}", outcome.checked, outcome.bytes))?;
    }
    printer.note(&format!(
        "cairn: verify: checked {} blob(s), {} in {:.1}s: {} corrupt (quarantined), {} missing{}",
        outcome.checked,
        super::human_bytes(outcome.bytes),
        outcome.seconds,
        outcome.corrupt.len(),
        outcome.missing.len(),
        if clean {
            ""
        } else {
            "; the next fetch downloads them again"
        }
    ));
    Ok(if clean {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}
