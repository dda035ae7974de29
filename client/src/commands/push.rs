//! `cairn push`: publish the artifacts a stage produced in a build dir as (part of) a CI run. The
//! client computes the fingerprints of the stage's produced artifacts from the checkout; the daemon
//! archives `B/artifacts/{name}_{component}_{family}/` for those artifacts, uploads archives,
//! sidecars and tree manifests, then the producer records. Over the Unix socket the daemon reads the
//! build dir with this user's rights; over TCP this client reads it and streams the content
//! (`cairn_client::publish_stream`), since a remote daemon must never read a path a client names.
//!
//! A build dir bootstrapped by Cairn also records reuse: every inbound artifact the job used but
//! did not build goes into the job manifest with `built_here: false` and the run that built it
//! (from the bootstrap's state file), without being uploaded again.
//!
//! Plain output: `{archive key}<TAB>{compressed size}<TAB>{sha256}` per archive, plus
//! `<TAB>reused from run {id}` for a recorded reuse. `--json`: the
//! [`Published`](cairn_client::api::Published) document (`bucket`, `prefix`, `archives[]`,
//! `job_manifest_key`, `trusted`).

use std::time::Instant;

use anyhow::Context;
use cairn_client::api::{self, PublishSpec};
use cairn_client::checkout::checkout_dir;
use cairn_client::connect::DaemonAddr;
use cairn_client::publish_stream;
use cairn_client::{materialize, plan};
use cairn_fingerprint::{FingerprintConfig, Fingerprinter, Platform};

use crate::cli::{Cli, PushArgs};
use crate::output::{ExitStatus, Printer};

/// Publish a build dir.
pub fn run(cli: &Cli, args: &PushArgs, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    let started = Instant::now();
    super::refuse_local_staging(args.local_staging_dir.as_deref())?;
    let branch = api::push_branch(args.branch.clone(), |k| std::env::var(k).ok())?;
    let checkout = checkout_dir(args.checkout.as_deref())?;
    let topology = super::checkout_topology(cli, &checkout, printer)?;
    // TheRock's `--stage all`: what every stage produces (unless a stage is really named `all`).
    let names: Vec<&str> =
        if args.stage == "all" && !topology.stages().iter().any(|s| s.name == "all") {
            topology
                .artifacts()
                .iter()
                .map(|a| a.name.as_str())
                .collect()
        } else {
            topology.produced(&args.stage)?.into_iter().collect()
        };
    let platform = args.platform.unwrap_or_else(Platform::host);
    let config = FingerprintConfig {
        variant: args.variant.clone(),
        ..FingerprintConfig::default()
    };
    let fingerprinter = Fingerprinter::new(&topology, &checkout, config)
        .with_context(|| format!("reading the checkout `{}`", checkout.display()))?;
    let fingerprints = fingerprinter.compute_some(&names, &args.family, platform)?;
    let build_dir = std::fs::canonicalize(&args.build_dir)
        .with_context(|| format!("build dir `{}`", args.build_dir.display()))?;
    // What the job used without building it, from the build dir's last `cairn bootstrap`.
    let reused_from = if names.len() == topology.artifacts().len() && args.stage == "all" {
        Default::default()
    } else {
        plan::reused_inbound(
            &topology,
            &args.stage,
            &materialize::recorded_sources(&build_dir),
        )?
    };
    let spec = PublishSpec {
        build_dir,
        stage: args.stage.clone(),
        family: args.family.clone(),
        platform: platform.to_string(),
        repo: args.repo.clone(),
        head_repo: args.head_repo.clone().unwrap_or_default(),
        workflow: args.workflow.clone(),
        run_id: args.run_id.clone(),
        commit: args
            .commit
            .clone()
            .unwrap_or_else(|| fingerprinter.snapshot().head.clone()),
        status: args.status.clone(),
        compression: args.compression.to_string(),
        compression_level: args.compression_level,
        branch,
        fingerprints: fingerprints.into_iter().collect(),
        reused_from,
    };
    let addr = super::daemon_addr(cli);
    let published = super::runtime()?.block_on(async {
        let mut client = super::connect_daemon(&addr).await?;
        // TCP clients always stream: the daemon never reads a path a remote client names. Over the
        // Unix socket the daemon reads the build dir itself, with this user's rights.
        match addr {
            DaemonAddr::Tcp(_) => publish_stream::publish_streamed(&mut client, &spec).await,
            DaemonAddr::Unix(_) => api::publish(&mut client, &spec).await,
        }
        .map_err(|e| super::explain(e, &addr))
    })?;
    if printer.json() {
        printer.json_value(&published)?;
    } else {
        for a in &published.archives {
            if a.built_here {
                printer.line(&format!("{}\t{}\t{}", a.key, a.compressed_size, a.sha256))?;
            } else {
                printer.line(&format!(
                    "{}\t{}\t{}\treused from run {}",
                    a.key, a.compressed_size, a.sha256, a.reused_from_run_id
                ))?;
            }
        }
    }
    let built: Vec<_> = published.archives.iter().filter(|a| a.built_here).collect();
    let reused = published.archives.len() - built.len();
    let bytes: u64 = built.iter().map(|a| a.compressed_size).sum();
    let files: u64 = built.iter().map(|a| a.files).sum();
    printer.note(&format!(
        "cairn: push {} ({}): {} archive(s), {} file(s), {} compressed to `{}/{}` ({}){}; run {}; {:.2} s",
        args.stage,
        args.family,
        built.len(),
        files,
        super::human_bytes(bytes),
        published.bucket,
        published.prefix,
        if published.trusted { "trusted" } else { "untrusted" },
        if reused > 0 {
            format!("; {reused} reused archive(s) recorded, not uploaded")
        } else {
            String::new()
        },
        args.run_id,
        started.elapsed().as_secs_f64()
    ));
    Ok(ExitStatus::Success)
}
