//! `cairn gc [--max-bytes N]`: evict least-recently-used blobs from the daemon's store down to a
//! quota (default: the daemon's configured one). Blobs leased by running fetches are kept.
//!
//! Plain output: `evicted<TAB>{blobs}<TAB>{bytes}` and `store<TAB>{bytes}`. `--json`: the
//! [`GcOutcome`](cairn_client::api::GcOutcome) document (`evicted_blobs`, `evicted_bytes`,
//! `store_bytes`).

use anyhow::Context;
use cairn_client::api;

use crate::cli::{Cli, GcArgs};
use crate::output::{ExitStatus, Printer};

/// Run gc.
pub fn run(cli: &Cli, args: &GcArgs, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    let quota = args
        .max_bytes
        .as_deref()
        .map(|s| parse_bytes(s).with_context(|| format!("--max-bytes `{s}` is not a byte count")))
        .transpose()?;
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

/// `123`, `10K`, `5M`, `50G`, `1T` (powers of 1024; an optional trailing `B` or `iB`).
fn parse_bytes(s: &str) -> Option<u64> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.char_indices().last()? {
        (i, 'K' | 'k') => (&t[..i], 10),
        (i, 'M' | 'm') => (&t[..i], 20),
        (i, 'G' | 'g') => (&t[..i], 30),
        (i, 'T' | 't') => (&t[..i], 40),
        _ => (t, 0),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts_with_suffixes() {
        assert_eq!(parse_bytes("123"), Some(123));
        assert_eq!(parse_bytes("10K"), Some(10 << 10));
        assert_eq!(parse_bytes("5MiB"), Some(5 << 20));
        assert_eq!(parse_bytes("50G"), Some(50 << 30));
        assert_eq!(parse_bytes("1TB"), Some(1 << 40));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes(""), None);
        assert_eq!(parse_bytes("99999999999T"), None);
    }
}
