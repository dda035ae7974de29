//! `cairn pin NAME --commits A..B` and `cairn unpin NAME`: prefetch a range of commits' artifacts
//! and hold them in the daemon's store against eviction under a name, until removed or expired
//! (glue over [`cairn_client::bisect::prefetch`] and the `Pin`/`Unpin` calls of
//! [`cairn_client::api`]).
//!
//! Plain output: `key<TAB>value` lines. `--json`: `{"pin": {name, trees, blobs, bytes,
//! expires_at}, "prefetch": PrefetchOutcome}` for `pin`, `{"name", "removed"}` for `unpin`.
//! `unpin` exits 1 when there was no such pin.

use cairn_client::api::{self, PinInfo};
use cairn_client::bisect::prefetch::{PrefetchOutcome, parse_range, parse_ttl, prefetch_commits};
use serde::Serialize;

use crate::cli::{Cli, PinArgs, UnpinArgs};
use crate::output::{ExitStatus, Printer};

#[derive(Serialize)]
struct PinJson<'a> {
    pin: &'a PinInfo,
    prefetch: &'a PrefetchOutcome,
}

/// `cairn pin`.
pub fn pin(cli: &Cli, args: &PinArgs, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    let Some((from, to)) = parse_range(&args.commits) else {
        anyhow::bail!(
            "--commits `{}` is not a range; write A..B (first-parent commits after A up to B)",
            args.commits
        );
    };
    let ttl = parse_ttl(&args.ttl).map_err(|e| anyhow::anyhow!("--ttl {e}"))?;
    let mut history = super::bisect_history(cli, &args.history, printer)?;
    let exclude = super::history_excluded_components(&args.history)?;
    let github = super::github_lookup(&args.github, &history)?;
    let addr = super::daemon_addr(cli);
    let (out, pin) = super::runtime()?.block_on(async {
        let mut client = super::connect_daemon(&addr).await?;
        let out = prefetch_commits(
            &mut client,
            &mut history,
            from,
            to,
            &exclude,
            github.as_ref(),
        )
        .await
        .map_err(|e| match e {
            cairn_client::bisect::BisectError::Client(c) => super::explain(c, &addr),
            other => anyhow::Error::new(other),
        })?;
        let pin = api::pin(&mut client, &args.name, &out.trees, ttl)
            .await
            .map_err(|e| super::explain(e, &addr))?;
        anyhow::Ok((out, pin))
    })?;
    if printer.json() {
        printer.json_value(&PinJson {
            pin: &pin,
            prefetch: &out,
        })?;
    } else {
        for (k, v) in [
            ("pin", pin.name.clone()),
            ("commits", out.commits.len().to_string()),
            ("trees", pin.trees.to_string()),
            (
                "held",
                format!("{} in {} blob(s)", super::human_bytes(pin.bytes), pin.blobs),
            ),
            ("downloaded bytes", super::human_bytes(out.downloaded_bytes)),
            ("expires (unix)", pin.expires_at.to_string()),
        ] {
            printer.line(&format!("{k}\t{v}"))?;
        }
    }
    Ok(ExitStatus::Success)
}

/// `cairn unpin`.
pub fn unpin(cli: &Cli, args: &UnpinArgs, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    let addr = super::daemon_addr(cli);
    let removed = super::runtime()?.block_on(async {
        let mut client = super::connect_daemon(&addr).await?;
        api::unpin(&mut client, &args.name)
            .await
            .map_err(|e| super::explain(e, &addr))
    })?;
    if printer.json() {
        printer.json_value(&serde_json::json!({"name": args.name, "removed": removed}))?;
    } else if removed {
        printer.line(&format!("unpinned\t{}", args.name))?;
    } else {
        printer.problem(&format!("no pin named `{}`", args.name));
    }
    Ok(if removed {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}
