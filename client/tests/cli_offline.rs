//! The offline `cairn` commands end to end: the real binary, the real topology file, real git
//! repositories; exit codes (0 ok, 1 "no", 2 error), plain and JSON output, one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn_test_helpers::gitrepo::GitRepo;
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

const SMALL_TOPOLOGY: &str = r#"
[source_sets.s-a]
submodules = ["alpha"]
[build_stages.first]
artifact_groups = ["g-base"]
[build_stages.math]
type = "per-arch"
artifact_groups = ["g-math"]
[artifact_groups.g-base]
source_sets = ["s-a"]
[artifact_groups.g-math]
type = "per-arch"
artifact_group_deps = ["g-base"]
[artifacts.a1]
artifact_group = "g-base"
[artifacts.m1]
artifact_group = "g-math"
type = "target-specific"
artifact_deps = ["a1"]
[artifacts.m2]
artifact_group = "g-math"
artifact_deps = ["m1"]
"#;

/// A superproject with one submodule and the small topology at its root.
fn small_checkout(dir: &Path) -> PathBuf {
    let up = GitRepo::init(dir.join("upstream/alpha"));
    up.write("src.txt", "alpha\n").commit_all("init");
    let root = GitRepo::init(dir.join("TheRock"));
    root.write("BUILD_TOPOLOGY.toml", SMALL_TOPOLOGY)
        .add_submodule(&up.path, "alpha")
        .commit_all("init");
    root.path
}

fn cairn_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("cairn runs")
}

#[test]
fn fingerprint_prints_artifact_to_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let root = small_checkout(dir.path());
    let checkout = root.to_str().unwrap();

    let o = cairn_in(
        &root,
        &[
            "fingerprint",
            "--checkout",
            checkout,
            "--family",
            "gfx94X-dcgpu",
            "--platform",
            "linux",
            "--json",
        ],
    );
    assert_code(&o, 0);
    let all: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        all.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a1", "m1", "m2"]
    );
    assert!(all.values().all(|v| {
        v.len() == 64
            && v.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    }));

    // Plain output: `name<TAB>fingerprint`, sorted; a stage gives its inbound and produced artifacts.
    let o = cairn_in(
        &root,
        &[
            "fingerprint",
            "--checkout",
            checkout,
            "--family",
            "gfx1151",
            "--platform",
            "linux",
            "--stage",
            "math",
        ],
    );
    assert_code(&o, 0);
    let lines: Vec<(String, String)> = stdout(&o)
        .lines()
        .map(|l| {
            let (a, b) = l.split_once('\t').unwrap();
            (a.to_string(), b.to_string())
        })
        .collect();
    assert_eq!(
        lines.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>(),
        ["a1", "m1", "m2"]
    );
    // Target-neutral equal across families, target-specific not.
    assert_eq!(lines[0].1, all["a1"]);
    assert_ne!(lines[1].1, all["m1"]);
    assert_eq!(lines[2].1, all["m2"]);

    let o = cairn_in(
        &root,
        &[
            "fingerprint",
            "--checkout",
            checkout,
            "--family",
            "gfx1151",
            "--platform",
            "linux",
            "--artifact",
            "a1",
            "--json",
        ],
    );
    assert_code(&o, 0);
    let one: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one["a1"], all["a1"]);
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainJson {
    artifact: String,
    family: String,
    platform: String,
    scheme: String,
    fingerprint: String,
    inputs: Vec<InputJson>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputJson {
    kind: String,
    name: String,
    value: String,
}

#[test]
fn fingerprint_explain_lists_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let root = small_checkout(dir.path());
    let checkout = root.to_str().unwrap();
    let o = cairn_in(
        &root,
        &[
            "fingerprint",
            "--checkout",
            checkout,
            "--family",
            "gfx94X-dcgpu",
            "--platform",
            "linux",
            "--json",
        ],
    );
    let all: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&o.stdout).unwrap();

    let o = cairn_in(
        &root,
        &[
            "fingerprint",
            "explain",
            "--checkout",
            checkout,
            "--artifact",
            "m1",
            "--family",
            "gfx94X-dcgpu",
            "--platform",
            "linux",
            "--json",
        ],
    );
    assert_code(&o, 0);
    let e: ExplainJson = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (e.artifact.as_str(), e.family.as_str(), e.platform.as_str()),
        ("m1", "gfx94X-dcgpu", "linux")
    );
    assert_eq!(e.scheme, "cairn-fp-v1");
    assert_eq!(e.fingerprint, all["m1"]);
    let dep = e
        .inputs
        .iter()
        .find(|i| i.kind == "dep" && i.name == "a1")
        .unwrap();
    assert_eq!(dep.value, all["a1"]);
    assert!(
        e.inputs
            .iter()
            .any(|i| i.kind == "targets" && i.value == "gfx942")
    );

    let o = cairn_in(
        &root,
        &[
            "fingerprint",
            "explain",
            "--checkout",
            checkout,
            "--artifact",
            "a1",
            "--family",
            "gfx94X-dcgpu",
            "--platform",
            "linux",
        ],
    );
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.starts_with(&format!("a1\t{}\t", all["a1"])), "{out}");
    assert!(out.contains("\n  submodule\talpha\t"), "{out}");
}

#[test]
fn fingerprint_errors_are_one_line_and_exit_two() {
    let dir = tempfile::tempdir().unwrap();
    let root = small_checkout(dir.path());
    let checkout = root.to_str().unwrap();
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["fingerprint", "--checkout", plain.to_str().unwrap(), "--family", "gfx1151"],
            format!("cairn: error: checkout `{}` is not a git repository\n", plain.display()),
        ),
        (
            vec!["fingerprint", "--checkout", checkout, "--family", "gfx1151", "--stage", "nope"],
            "cairn: error: unknown stage `nope`\n".to_string(),
        ),
        (
            vec!["fingerprint", "--checkout", checkout, "--family", "gfx1151", "--artifact", "nope"],
            "cairn: error: unknown artifact `nope`\n".to_string(),
        ),
        (
            vec!["fingerprint", "--checkout", checkout, "--family", "radeon"],
            "cairn: error: unknown GPU family `radeon` (expected e.g. `gfx94X-dcgpu`, `gfx1151` or `gfx942:xnack+`)\n".to_string(),
        ),
        (
            vec!["fingerprint", "explain", "--checkout", checkout, "--family", "gfx1151", "--artifact", "nope"],
            "cairn: error: unknown artifact `nope`\n".to_string(),
        ),
    ];
    for (args, expected) in cases {
        let o = cairn_in(&root, &args);
        assert_code(&o, 2);
        assert_eq!(stderr(&o), expected, "{args:?}");
        assert_eq!(stdout(&o), "");
    }
    // Missing required arguments are usage errors (exit 2 too).
    let o = cairn_in(&root, &["fingerprint", "--family", "gfx1151"]);
    assert_code(&o, 2);
}

/// Every query, not only `validate`, refuses an invalid topology: exit 1, every problem on stderr,
/// nothing on stdout (an answer from a topology naming what does not exist would be wrong).
#[test]
fn queries_on_an_invalid_topology_exit_one_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("BUILD_TOPOLOGY.toml");
    std::fs::write(
        &path,
        "[build_stages.s]\nartifact_groups = [\"g\", \"ghost\"]\n[artifact_groups.g]\n\
         [artifacts.a]\nartifact_group = \"g\"\n",
    )
    .unwrap();
    for query in [
        &["topology", "inbound", "--stage", "s"][..],
        &["topology", "artifacts"][..],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("--topology")
            .arg(&path)
            .args(query)
            .output()
            .unwrap();
        assert_code(&o, 1);
        assert_eq!(stdout(&o), "", "{query:?}");
        let err = stderr(&o);
        assert!(
            err.contains("stage `s` refers to unknown artifact group `ghost`"),
            "{query:?}: {err}"
        );
        assert!(err.contains("is invalid"), "{query:?}: {err}");
    }
}

/// `cairn fingerprint --checkout DIR` reads DIR's own topology wherever it runs from, as the online
/// commands do: run from a directory holding another `BUILD_TOPOLOGY.toml`, it answers the same.
#[test]
fn fingerprint_reads_the_checkouts_topology_from_any_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = small_checkout(dir.path());
    let checkout = root.to_str().unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(
        elsewhere.join("BUILD_TOPOLOGY.toml"),
        "[build_stages.other]\nartifact_groups = [\"x\"]\n[artifact_groups.x]\n\
         [artifacts.zzz]\nartifact_group = \"x\"\n",
    )
    .unwrap();
    let args = [
        "fingerprint",
        "--checkout",
        checkout,
        "--family",
        "gfx94X-dcgpu",
        "--platform",
        "linux",
        "--json",
    ];
    let at_root = cairn_in(&root, &args);
    let from_elsewhere = cairn_in(&elsewhere, &args);
    assert_code(&at_root, 0);
    assert_code(&from_elsewhere, 0);
    assert_eq!(stdout(&from_elsewhere), stdout(&at_root));
}

/// `find_artifacts_for_commit.py`'s flag names work on `cairn find` (docs/therock-compatibility.md).
#[test]
fn find_accepts_find_artifacts_for_commit_flag_names() {
    let o = cairn(&["find", "--help"]);
    assert_code(&o, 0);
    let help = stdout(&o);
    for flag in ["--commit", "--amdgpu-family", "--platform", "--run-id"] {
        assert!(
            help.contains(flag),
            "`cairn find --help` lacks {flag}:\n{help}"
        );
    }
}
