//! The offline `cairn` commands end to end: the real binary, the real topology file, real git
//! repositories; exit codes (0 ok, 1 "no", 2 error), plain and JSON output, one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;

fn topology() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../BUILD_TOPOLOGY.toml")
}

fn cairn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--topology")
        .arg(topology())
        .args(args)
        .output()
        .expect("cairn runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[track_caller]
fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

#[test]
fn validate_real_topology_exits_zero() {
    let o = cairn(&["topology", "validate"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "");
    let o = cairn(&["topology", "validate", "--json"]);
    assert_code(&o, 0);
    assert_eq!(
        serde_json::from_slice::<Vec<String>>(&o.stdout).unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn validate_broken_topology_exits_one_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("BUILD_TOPOLOGY.toml");
    std::fs::write(
        &path,
        "[build_stages.s]\nartifact_groups = [\"g\", \"ghost\"]\n[artifact_groups.g]\n\
         [artifacts.a]\nartifact_group = \"g\"\nartifact_deps = [\"b\"]\n\
         [artifacts.b]\nartifact_group = \"g\"\nartifact_deps = [\"a\"]\n\
         [artifacts.Bad_Name]\nartifact_group = \"g\"\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "--topology",
            path.to_str().unwrap(),
            "topology",
            "validate",
            "--json",
        ])
        .output()
        .unwrap();
    assert_code(&o, 1);
    let problems: Vec<String> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        problems,
        [
            "artifact `Bad_Name`: name must be lowercase words joined by `-`",
            "stage `s` refers to unknown artifact group `ghost`",
            "artifact `a` is in a dependency cycle: `a` -> `b` -> `a`",
        ]
    );
    let err = stderr(&o);
    for p in &problems {
        assert!(err.contains(p.as_str()), "stderr lacks {p}:\n{err}");
    }
}

#[test]
fn listings_are_sorted_lines_or_json_arrays() {
    let o = cairn(&["topology", "stages"]);
    assert_code(&o, 0);
    let lines: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
    assert_eq!(lines.len(), 11);

    let o = cairn(&["topology", "artifacts", "--json"]);
    assert_code(&o, 0);
    assert_eq!(
        serde_json::from_slice::<Vec<String>>(&o.stdout)
            .unwrap()
            .len(),
        73
    );

    let o = cairn(&["topology", "inbound", "--stage", "wsl-rocdxg"]);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        "amd-llvm\nbase\ncore-hip\ncore-kpack\ncore-runtime\nsysdeps\n"
    );

    let o = cairn(&["--json", "topology", "produced", "--stage", "comm-libs"]);
    assert_code(&o, 0);
    assert_eq!(
        serde_json::from_slice::<Vec<String>>(&o.stdout).unwrap(),
        ["rccl", "rocshmem"]
    );

    let o = cairn(&["topology", "order"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).starts_with("compiler-runtime\nwsl-rocdxg\n"),
        "{}",
        stdout(&o)
    );

    let o = cairn(&["topology", "graph"]);
    assert_code(&o, 0);
    assert!(stdout(&o).starts_with("digraph topology {"));
    let o = cairn(&["topology", "graph", "--json"]);
    assert_code(&o, 0);
    let graph: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        graph["build_stages"]["math-libs"]["inbound_artifacts"]
            .as_array()
            .unwrap()
            .len(),
        19
    );
}

#[test]
fn unknown_stage_and_missing_topology_are_one_line_errors() {
    let o = cairn(&["topology", "inbound", "--stage", "no-such-stage"]);
    assert_code(&o, 2);
    assert_eq!(stderr(&o), "cairn: error: unknown stage `no-such-stage`\n");
    assert_eq!(stdout(&o), "");

    let o = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "--topology",
            "/definitely/missing.toml",
            "topology",
            "stages",
        ])
        .output()
        .unwrap();
    assert_code(&o, 2);
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("cairn: error: cannot read topology `/definitely/missing.toml`"),
        "{err}"
    );

    // The default is ./BUILD_TOPOLOGY.toml in the working directory.
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .current_dir(dir.path())
        .args(["topology", "stages"])
        .output()
        .unwrap();
    assert_code(&o, 2);
    assert!(
        stderr(&o).starts_with("cairn: error: cannot read topology `./BUILD_TOPOLOGY.toml`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_arguments_exit_two() {
    let o = cairn(&["topology", "inbound"]);
    assert_code(&o, 2);
    let o = cairn(&["layout", "--run-id", "1", "--platform", "macos"]);
    assert_code(&o, 2);
    let o = cairn(&["no-such-command"]);
    assert_code(&o, 2);
}

#[test]
fn closed_stdout_pipe_exits_zero() {
    // The read end is closed before cairn starts, so its first write fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--topology")
        .arg(topology())
        .args(["topology", "artifacts"])
        .stdout(writer)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct LayoutJson {
    bucket: String,
    external_repo: String,
    prefix: String,
    s3_uri: String,
    https_url: String,
    run_id: String,
    platform: String,
    rules: String,
    trusted: bool,
    index_key: String,
    job_manifests_prefix: String,
}

fn layout(args: &[&str]) -> LayoutJson {
    let mut all = vec!["layout", "--json"];
    all.extend_from_slice(args);
    let o = cairn(&all);
    assert_code(&o, 0);
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn layout_json_follows_bucket_rules() {
    let l = layout(&["--run-id", "12345", "--platform", "linux"]);
    assert_eq!(
        (
            l.bucket.as_str(),
            l.external_repo.as_str(),
            l.prefix.as_str()
        ),
        ("therock-ci-artifacts", "", "12345-linux")
    );
    assert_eq!(l.s3_uri, "s3://therock-ci-artifacts/12345-linux");
    assert_eq!(
        l.https_url,
        "https://therock-ci-artifacts.s3.amazonaws.com/12345-linux"
    );
    assert!(l.trusted);

    let l = layout(&[
        "--run-id",
        "12345",
        "--platform",
        "windows",
        "--head-repo",
        "someone/TheRock",
    ]);
    assert_eq!(
        (
            l.bucket.as_str(),
            l.external_repo.as_str(),
            l.prefix.as_str(),
            l.trusted
        ),
        (
            "therock-ci-artifacts-external",
            "ROCm-TheRock/",
            "ROCm-TheRock/12345-windows",
            false
        )
    );

    let l = layout(&[
        "--run-id",
        "7",
        "--platform",
        "linux",
        "--legacy-buckets",
        "--updated-at",
        "2025-11-11T16:18:48Z",
    ]);
    assert_eq!(
        (l.bucket.as_str(), l.rules.as_str()),
        ("therock-artifacts", "legacy")
    );
    let l = layout(&[
        "--run-id",
        "7",
        "--platform",
        "linux",
        "--legacy-buckets",
        "--updated-at",
        "2025-11-11T16:18:49Z",
    ]);
    assert_eq!(l.bucket, "therock-ci-artifacts");

    let l = layout(&[
        "--run-id",
        "7",
        "--platform",
        "linux",
        "--release-type",
        "nightly-bkc",
    ]);
    assert_eq!(l.bucket, "therock-nightly-artifacts");

    let o = cairn(&["layout", "--run-id", "7", "--release-type", "release"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).starts_with("cairn: error: release type `release` is not allowed"),
        "{}",
        stderr(&o)
    );
    let o = cairn(&["layout", "--run-id", "7", "--repo", "not-a-repo"]);
    assert_code(&o, 2);
    assert_eq!(stderr(&o).lines().count(), 1);

    let o = cairn(&["layout", "--run-id", "7", "--platform", "linux"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).starts_with("bucket: therock-ci-artifacts\nexternal_repo: \nprefix: 7-linux\n"),
        "{}",
        stdout(&o)
    );
}
