//! `cairn copy`: TheRock's `artifact_manager.py copy` (a setup job taking prebuilt stages over from
//! an earlier run) without copying objects. For every stage and family, one record-only publish:
//! the destination run gets a job manifest `{stage}-{family}` listing the stage's produced archives
//! `built_here: false`, each with the run that built it (copied from the source run's job
//! manifests, reuse chains already resolved there). `--run-id DEST` then yields them, and
//! `cairn diff` shows them carried forward. A source run without Cairn records cannot be recorded:
//! the daemon says so and the command exits 2.
//!
//! `--dry-run` asks the daemon to resolve the stage's produced artifacts in the source run's
//! artifact set (by name) and prints `WOULD-RECORD<TAB>{archive}<TAB>built by run {id}` per archive.
//! Plain output otherwise: the `cairn push` lines (`{key}<TAB>{size}<TAB>{sha256}<TAB>reused from
//! run {id}`); `--json`: `{"published": [<Published>...]}` or, dry, `{"would_record": [...]}`.

use std::collections::BTreeMap;

use anyhow::Context;
use cairn_client::api::{self, Policy, PublishSpec, Request, Status};
use cairn_client::checkout::checkout_dir;
use cairn_fingerprint::{Platform, git};

use crate::cli::{Cli, CopyArgs};
use crate::output::{ExitStatus, Printer};

/// Record the stages' artifacts of `--source-run-id` in `--run-id`.
pub fn run(cli: &Cli, args: &CopyArgs, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    super::refuse_local_staging(args.local_staging_dir.as_deref())?;
    if let Some(src) = &args.source_repository
        && src != &args.repo
    {
        anyhow::bail!(
            "--source-repository `{src}` differs from the destination's `{}`: Cairn records \
             reuse between runs of one repository; fetch the other repository's run with \
             `--run-id {} --run-github-repo {src}` instead",
            args.repo,
            args.source_run_id
        );
    }
    if args.source_run_id == args.run_id {
        anyhow::bail!(
            "--source-run-id and --run-id are both `{}`: a run cannot reuse from itself",
            args.run_id
        );
    }
    let checkout = checkout_dir(None).ok();
    let topology = super::load_topology(&super::topology_path(cli, checkout.as_deref()), printer)?;
    let stages = super::split_list(Some(&args.stage));
    if stages.is_empty() {
        anyhow::bail!("--stage names no stage; give `S` or `S,T`");
    }
    let mut families: Vec<String> = args.family.iter().cloned().collect();
    for f in super::split_list(args.amdgpu_families.as_deref())
        .into_iter()
        .chain(super::split_list(args.amdgpu_targets.as_deref()))
    {
        if !families.contains(&f) {
            families.push(f);
        }
    }
    if families.is_empty() {
        families.push(cairn_fingerprint::names::GENERIC.to_string());
    }
    let platform = args.platform.unwrap_or_else(Platform::host);
    // Stage → its produced artifacts (for `generic`, only the target-neutral ones).
    let mut jobs: Vec<(String, String, Vec<String>)> = Vec::new();
    for stage in &stages {
        let produced = topology.produced(stage)?;
        for family in &families {
            let names: Vec<String> = produced
                .iter()
                .filter(|n| {
                    family != cairn_fingerprint::names::GENERIC
                        || topology.artifact(n).is_ok_and(|a| !a.is_target_specific())
                })
                .map(|n| n.to_string())
                .collect();
            if !names.is_empty() {
                jobs.push((stage.clone(), family.clone(), names));
            }
        }
    }
    let addr = super::daemon_addr(cli);
    let rt = super::runtime()?;
    if args.dry_run {
        return dry_run(args, &jobs, platform, &addr, &rt, printer);
    }
    let commit = match &args.commit {
        Some(c) => c.clone(),
        None => checkout
            .as_deref()
            .and_then(|c| git::rev_parse_commit(c, "HEAD").ok().flatten())
            .unwrap_or_default(),
    };
    let mut published = Vec::new();
    rt.block_on(async {
        let mut client = super::connect_daemon(&addr).await?;
        for (stage, family, names) in &jobs {
            let spec = PublishSpec {
                build_dir: Default::default(),
                stage: stage.clone(),
                family: family.clone(),
                platform: platform.to_string(),
                repo: args.repo.clone(),
                head_repo: String::new(),
                workflow: args.workflow.clone(),
                run_id: args.run_id.clone(),
                commit: commit.clone(),
                status: args.status.clone(),
                compression: String::new(),
                compression_level: None,
                branch: None,
                fingerprints: Vec::new(),
                reused_from: names
                    .iter()
                    .map(|n| (n.clone(), args.source_run_id.clone()))
                    .collect(),
            };
            let p = api::publish(&mut client, &spec)
                .await
                .map_err(|e| super::explain(e, &addr))
                .with_context(|| format!("recording stage `{stage}` ({family})"))?;
            published.push(p);
        }
        anyhow::Ok(())
    })?;
    if printer.json() {
        printer.json_value(&serde_json::json!({ "published": published }))?;
    } else {
        for a in published.iter().flat_map(|p| &p.archives) {
            printer.line(&format!(
                "{}\t{}\t{}\treused from run {}",
                a.key, a.compressed_size, a.sha256, a.reused_from_run_id
            ))?;
        }
    }
    let n: usize = published.iter().map(|p| p.archives.len()).sum();
    printer.note(&format!(
        "cairn: copy {} from run {} to run {}: {n} archive(s) recorded as reused in {} job \
         manifest(s), nothing copied",
        stages.join(","),
        args.source_run_id,
        args.run_id,
        published.len()
    ));
    Ok(ExitStatus::Success)
}

/// `--dry-run`: the source run's artifact set, resolved by name, per stage and family.
fn dry_run(
    args: &CopyArgs,
    jobs: &[(String, String, Vec<String>)],
    platform: Platform,
    addr: &cairn_client::connect::DaemonAddr,
    rt: &tokio::runtime::Runtime,
    printer: &mut Printer,
) -> anyhow::Result<ExitStatus> {
    let mut would: BTreeMap<String, String> = BTreeMap::new();
    let mut missing = Vec::new();
    rt.block_on(async {
        let mut client = super::connect_daemon(addr).await?;
        for (stage, family, names) in jobs {
            let request = Request {
                stage: stage.clone(),
                family: family.clone(),
                platform: platform.to_string(),
                artifacts: names.iter().map(|n| (n.clone(), None)).collect(),
                exclude_components: Vec::new(),
                policy: Policy {
                    run_id: Some(args.source_run_id.clone()),
                    run_repo: Some(args.repo.clone()),
                    ..Policy::default()
                },
            };
            let (resolved, _) = api::resolve(&mut client, &request)
                .await
                .map_err(|e| super::explain(e, addr))?;
            for r in resolved {
                match (&r.status, &r.producer) {
                    (Status::Found, Some(p)) => {
                        would.insert(r.artifact.clone(), p.run_id.clone());
                    }
                    _ => missing.push(r),
                }
            }
        }
        anyhow::Ok(())
    })?;
    if printer.json() {
        printer.json_value(&serde_json::json!({ "would_record": would, "missing": missing }))?;
    } else {
        for (archive, run) in &would {
            printer.line(&format!("WOULD-RECORD\t{archive}\tbuilt by run {run}"))?;
        }
    }
    for m in &missing {
        printer.problem(&super::missing_line(&m.artifact, &m.fingerprint));
    }
    printer.note(&format!(
        "cairn: copy --dry-run: would record {} archive(s) of run {} in run {}; nothing written",
        would.len(),
        args.source_run_id,
        args.run_id
    ));
    Ok(if missing.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}
