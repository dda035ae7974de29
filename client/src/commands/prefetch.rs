//! `cairn prefetch --commits A..B`: have the daemon make the artifacts of every first-parent commit
//! after A up to B local, materializing nothing (glue over [`cairn_client::bisect::prefetch`]).
//!
//! Best effort: artifacts no run produced are listed on stderr and do not fail the command (a
//! commit CI never built is normal in a range). Plain output: one `key<TAB>value` line each;
//! `--json`: the [`PrefetchOutcome`] document (`commits`, `artifacts`, `archives`,
//! `from_storage`, `downloaded_bytes`, `missing`, `github_runs`). With `--github`, a commit
//! without Cairn records takes its CI run's artifacts as `cairn bisect run --github` would.

use cairn_client::bisect::prefetch::{PrefetchOutcome, parse_range, prefetch_commits};

use crate::cli::{Cli, PrefetchArgs};
use crate::output::{ExitStatus, Printer};

/// `cairn prefetch`.
pub fn run(cli: &Cli, args: &PrefetchArgs, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    let Some((from, to)) = parse_range(&args.commits) else {
        anyhow::bail!(
            "--commits `{}` is not a range; write A..B (first-parent commits after A up to B)",
            args.commits
        );
    };
    let mut history = super::bisect_history(cli, &args.history, printer)?;
    let exclude = super::history_excluded_components(&args.history)?;
    let github = super::github_lookup(&args.github, &history)?;
    let addr = super::daemon_addr(cli);
    let out: PrefetchOutcome = super::runtime()?.block_on(async {
        let mut client = super::connect_daemon(&addr).await?;
        prefetch_commits(
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
        })
    })?;
    for (commit, missing) in &out.missing {
        let names: Vec<&str> = missing.iter().map(|m| m.artifact.as_str()).collect();
        printer.problem(&format!(
            "missing at {}: {}",
            &commit[..commit.len().min(12)],
            names.join(", ")
        ));
    }
    if printer.json() {
        printer.json_value(&out)?;
    } else {
        for (k, v) in [
            ("commits", out.commits.len().to_string()),
            ("artifacts", out.artifacts.to_string()),
            ("archives", out.archives.to_string()),
            ("downloaded archives", out.from_storage.to_string()),
            ("downloaded bytes", super::human_bytes(out.downloaded_bytes)),
            (
                "commits with missing artifacts",
                out.missing.len().to_string(),
            ),
            (
                "commits from GitHub runs",
                out.github_runs.len().to_string(),
            ),
        ] {
            printer.line(&format!("{k}\t{v}"))?;
        }
    }
    Ok(ExitStatus::Success)
}
