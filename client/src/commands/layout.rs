//! `cairn layout`: where a CI run's outputs live, by TheRock's bucket rules.

use cairn_fingerprint::Platform;
use cairn_fingerprint::layout::{BucketRules, GithubRepo, RunOutputRoot, RunSpec, parse_timestamp};
use serde::Serialize;

use crate::cli::LayoutArgs;
use crate::output::{ExitStatus, Printer};

/// The `cairn layout` output (`--json` prints it as one object; plain output as `key: value` lines).
#[derive(Debug, Serialize)]
struct LayoutReport {
    /// The bucket.
    bucket: String,
    /// `""` or `{owner}-{repo}/`.
    external_repo: String,
    /// `{external_repo}{run_id}-{platform}`.
    prefix: String,
    /// `s3://{bucket}/{prefix}`.
    s3_uri: String,
    /// `https://{bucket}.s3.amazonaws.com/{prefix}`.
    https_url: String,
    /// The run id.
    run_id: String,
    /// `linux` or `windows`.
    platform: Platform,
    /// `current` or `legacy`.
    rules: String,
    /// Whether trusted builds may read this run's outputs.
    trusted: bool,
    /// `{prefix}/index.html`.
    index_key: String,
    /// `{prefix}/cairn/`: Cairn's job manifests.
    job_manifests_prefix: String,
}

/// Print the layout of one run.
pub fn run(args: &LayoutArgs, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    let spec = RunSpec {
        run_id: args.run_id.clone(),
        platform: args.platform.unwrap_or_else(Platform::host),
        repo: args.repo.parse::<GithubRepo>()?,
        head_repo: args
            .head_repo
            .as_deref()
            .map(str::parse::<GithubRepo>)
            .transpose()?,
        release_type: args.release_type.clone(),
        updated_at: args
            .updated_at
            .as_deref()
            .map(parse_timestamp)
            .transpose()?,
        rules: if args.legacy_buckets {
            BucketRules::Legacy
        } else {
            BucketRules::Current
        },
    };
    let root = RunOutputRoot::from_run(&spec)?;
    let report = LayoutReport {
        bucket: root.bucket().to_string(),
        external_repo: root.external_repo().to_string(),
        prefix: root.prefix(),
        s3_uri: root.s3_uri(),
        https_url: root.https_url(),
        run_id: root.run_id().to_string(),
        platform: root.platform(),
        rules: spec.rules.to_string(),
        trusted: root.trusted(),
        index_key: root.index_key(),
        job_manifests_prefix: root.job_manifests_prefix(),
    };
    if printer.json() {
        printer.json_value(&report)?;
    } else {
        let rows = [
            ("bucket", report.bucket),
            ("external_repo", report.external_repo),
            ("prefix", report.prefix),
            ("s3_uri", report.s3_uri),
            ("https_url", report.https_url),
            ("run_id", report.run_id),
            ("platform", report.platform.to_string()),
            ("rules", report.rules),
            ("trusted", report.trusted.to_string()),
            ("index_key", report.index_key),
            ("job_manifests_prefix", report.job_manifests_prefix),
        ];
        for (key, value) in rows {
            printer.line(&format!("{key}: {value}"))?;
        }
    }
    Ok(ExitStatus::Success)
}
