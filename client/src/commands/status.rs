//! `cairn status`: the daemon's store usage and counters.
//!
//! Plain output: `key<TAB>value` lines. `--json`: the [`Stats`](cairn_client::api::Stats) document
//! (`store_bytes`, `blobs`, `max_bytes`, `trees`, `hits`, `misses`, `storage_gets`,
//! `storage_bytes`, `in_flight`, `ingests`, `evicted_blobs`, `evicted_bytes`, `resolve_requests`,
//! `fetch_requests`, `leased_bytes`, `leased_blobs`, `quota_state` — `no_quota`, `under_quota`,
//! `over_quota_leased` (over only by what running fetches hold leased; back under when they end),
//! `over_quota`, or `unknown` from an older daemon) plus `daemon` (its address) and `pins` (each
//! `{name, trees, blobs, bytes, expires_at}`, `expires_at` in Unix seconds; plain output: one
//! `pin NAME` line each, with its expiry in RFC 3339) and `warmup` (`enabled`, `branches`,
//! `last_poll`, `last_run` — branch → newest run warmed —, `prefetched_bytes`,
//! `prefetched_archives`, `already_local_archives`, `skipped_quota_archives`, `hits`,
//! `wasted_bytes`, `polls`, `last_error`; see `docs/warmup.md`).

use cairn_client::api;
use cairn_client::documents::StatusJson;

use crate::cli::Cli;
use crate::output::{ExitStatus, Printer};

/// Print the daemon's stats.
pub fn run(cli: &Cli, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    let addr = super::daemon_addr(cli);
    let (stats, pins) = super::runtime()?.block_on(async {
        let mut client = super::connect_daemon(&addr).await?;
        api::stats_and_pins(&mut client)
            .await
            .map_err(|e| super::explain(e, &addr))
    })?;
    if printer.json() {
        printer.json_value(&StatusJson {
            daemon: addr.to_string(),
            stats: &stats,
            pins: &pins,
        })?;
        return Ok(ExitStatus::Success);
    }
    let quota = if stats.max_bytes == 0 {
        "none".to_string()
    } else {
        super::human_bytes(stats.max_bytes)
    };
    let lines = [
        ("daemon", addr.to_string()),
        (
            "store",
            format!(
                "{} in {} blob(s), quota {quota}",
                super::human_bytes(stats.store_bytes),
                stats.blobs
            ),
        ),
        ("trees", stats.trees.to_string()),
        ("archives from cache (hits)", stats.hits.to_string()),
        ("archives downloaded (misses)", stats.misses.to_string()),
        ("storage GETs", stats.storage_gets.to_string()),
        ("storage bytes", super::human_bytes(stats.storage_bytes)),
        ("downloads in flight", stats.in_flight.to_string()),
        ("ingests", stats.ingests.to_string()),
        (
            "evicted",
            format!(
                "{} blob(s), {}",
                stats.evicted_blobs,
                super::human_bytes(stats.evicted_bytes)
            ),
        ),
        ("resolve requests", stats.resolve_requests.to_string()),
        ("fetch requests", stats.fetch_requests.to_string()),
        (
            "leased",
            format!(
                "{} in {} blob(s)",
                super::human_bytes(stats.leased_bytes),
                stats.leased_blobs
            ),
        ),
        ("quota state", stats.quota_state.as_str().to_string()),
    ];
    for (k, v) in lines {
        printer.line(&format!("{k}\t{v}"))?;
    }
    let w = &stats.warmup;
    if w.enabled {
        let warm = [
            ("warm-up", format!("following {}", w.branches.join(", "))),
            (
                "warm-up last poll",
                if w.last_poll.is_empty() {
                    "none yet".to_string()
                } else {
                    w.last_poll.clone()
                },
            ),
            (
                "warm-up prefetched",
                format!(
                    "{} in {} archive(s); {} already local, {} skipped for the quota",
                    super::human_bytes(w.prefetched_bytes),
                    w.prefetched_archives,
                    w.already_local_archives,
                    w.skipped_quota_archives
                ),
            ),
            (
                "warm-up hits",
                format!(
                    "{} fetch(es) served from prefetched archives; {} evicted unused",
                    w.hits,
                    super::human_bytes(w.wasted_bytes)
                ),
            ),
        ];
        for (k, v) in warm {
            printer.line(&format!("{k}\t{v}"))?;
        }
        for (branch, run) in &w.last_run {
            printer.line(&format!("warm-up run\t{branch}: run {run}"))?;
        }
        if !w.last_error.is_empty() {
            printer.line(&format!("warm-up last error\t{}", w.last_error))?;
        }
    } else {
        printer.line("warm-up\toff (enable with [warmup] in cairnd's config)")?;
    }
    for p in &pins {
        let expires = time::OffsetDateTime::from_unix_timestamp(p.expires_at as i64)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| p.expires_at.to_string());
        printer.line(&format!(
            "pin {}\t{} in {} blob(s) of {} tree(s), expires {expires}",
            p.name,
            super::human_bytes(p.bytes),
            p.blobs,
            p.trees
        ))?;
    }
    Ok(ExitStatus::Success)
}
