//! `cairn bisect run` end to end: a TheRock-shaped checkout whose `rocm-libraries` submodule has 20
//! commits after a good one; a CI run published with Cairn for most of them (three never built),
//! each rebuilding only the math libraries (the compiler and runtime come from the first run); a
//! regression — one file's content in `blas_lib` — enters at a known commit. The test command
//! reads that file in the build dir. The bisect must name exactly that commit, report the skipped
//! commits and what they lacked, leave the repository as it was, and a second bisect over the same
//! range must download nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn_daemon::storage::{LocalStorage, PutBody};
use cairn_testkit::checkout::{Checkout, git};
use cairn_testkit::ci;
use cairn_testkit::daemon::{Daemon, Storage, scratch_dir};
use cairn_testkit::github_mock::{GithubMock, MockRun};
use cairn_testkit::s3server::S3Server;
use serde_json::Value;

const FAMILY: &str = "gfx94X-dcgpu";
/// A generated history: how many `rocm-libraries` commits follow the good one, where the
/// regression enters, and which commits CI never built.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// Commits of `rocm-libraries` after the good one.
    commits: usize,
    /// The commit (1-based, after the good one) whose blas carries the regression.
    regression: usize,
    /// Commits CI never built.
    never_built: &'static [usize],
}

/// The issue's history: 64 submodule commits, each later CI run rebuilding only what changed; CI
/// never built the first probe's (the middle), one the search meets after materializing probes,
/// and one near the end.
const ISSUE: Shape = Shape {
    commits: 64,
    regression: 45,
    never_built: &[32, 39, 58],
};

/// A shorter history for the tests of one feature each: 20 commits; never built: the first
/// probe's (the middle), one just before the regression's neighbourhood, one near the end.
const SHORT: Shape = Shape {
    commits: 20,
    regression: 13,
    never_built: &[10, 11, 17],
};

/// Commits whose CI run was uploaded the way plain TheRock CI does (archives only, no Cairn
/// record): the regression's and the one before it, so only `--github` can tell them apart.
const PLAIN: [usize; 2] = [12, 13];
/// The file the regression changes, relative to the build dir.
const REGRESS_FILE: &str = "math-libs/blas/stage/share/regress.txt";
const BYTES: u64 = 16 << 10;

struct World {
    tmp: tempfile::TempDir,
    checkout: Checkout,
    daemon: Daemon,
    /// `rocm-libraries` commits: `[0]` good, `[k]` the k-th after it.
    sub: Vec<String>,
    /// Superproject commits: `[0]` the one recording the good commit, `[k]` the bump to `sub[k]`.
    sup: Vec<String>,
    /// `CAIRN_GITHUB_API` for `cairn` (the testkit's mock), when a test serves one.
    github_api: Option<String>,
    /// The history's shape.
    shape: Shape,
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("command runs")
}

fn show(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A `git` that never writes the index (a plain `git status` refreshes it), for before/after checks.
fn git_read(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Everything a bisect must leave alone: HEADs, index bytes, status, refs.
fn repo_state(root: &Path) -> Vec<String> {
    let index = std::fs::read(root.join(".git/index")).unwrap();
    vec![
        git_read(root, &["rev-parse", "HEAD"]),
        git_read(&root.join("rocm-libraries"), &["rev-parse", "HEAD"]),
        format!("{:?}", blake3::hash(&index)),
        git_read(
            root,
            &["status", "--porcelain=v2", "--ignore-submodules=none"],
        ),
        git_read(root, &["for-each-ref"]),
        root.join(".git/BISECT_LOG").exists().to_string(),
    ]
}

impl World {
    fn build(shape: Shape) -> World {
        let tmp = scratch_dir("e2e-bisect-").unwrap();
        let storage = Storage::Local(tmp.path().join("storage"));
        World::build_in(shape, tmp, storage, &[], &|_, _| {})
    }

    /// The world over `storage`, the runs of the `plain` commits uploaded the way plain TheRock CI
    /// does: built and pushed on another machine into another bucket, then only their archives and
    /// `.sha256sum` sidecars put under the run's prefix by `upload(key, file)` (no Cairn record).
    fn build_in(
        shape: Shape,
        tmp: tempfile::TempDir,
        storage: Storage,
        plain: &[usize],
        upload: &dyn Fn(&str, &Path),
    ) -> World {
        let checkout = Checkout::create(&tmp.path().join("src"), ci::TOPOLOGY).unwrap();
        let daemon = Daemon::start(storage.clone()).unwrap();
        let side_root = tmp.path().join("side-storage");
        let side =
            (!plain.is_empty()).then(|| Daemon::start(Storage::Local(side_root.clone())).unwrap());
        let sub_head = |c: &Checkout| git(&c.root.join("rocm-libraries"), &["rev-parse", "HEAD"]);
        let mut world = World {
            sub: vec![sub_head(&checkout).unwrap()],
            sup: vec![checkout.head().unwrap()],
            tmp,
            checkout,
            daemon,
            github_api: None,
            shape,
        };
        // The first run builds everything; later runs only the math libraries.
        let fps =
            ci::produced_fingerprints(&world.checkout.root, "compiler-runtime", "generic").unwrap();
        world.push("3000", "compiler-runtime", "generic", &fps, false);
        let fps = ci::produced_fingerprints(&world.checkout.root, "math-libs", FAMILY).unwrap();
        world.push("3000", "math-libs", FAMILY, &fps, false);
        for k in 1..=shape.commits {
            let sup = world
                .checkout
                .bump_submodule("rocm-libraries", &format!("rocm-libraries change {k}"))
                .unwrap();
            world.sup.push(sup);
            world.sub.push(sub_head(&world.checkout).unwrap());
            if shape.never_built.contains(&k) {
                continue;
            }
            let fps = ci::produced_fingerprints(&world.checkout.root, "math-libs", FAMILY).unwrap();
            assert_eq!(
                fps.keys().collect::<Vec<_>>(),
                ["blas", "rand"],
                "math-libs builds blas and rand"
            );
            let run_id = (3000 + k).to_string();
            let regressed = k >= shape.regression;
            match &side {
                Some(side) if plain.contains(&k) => {
                    world.push_with(side, &run_id, "math-libs", FAMILY, &fps, regressed);
                    let prefix = format!("{run_id}-linux");
                    let mut uploaded = 0;
                    for entry in std::fs::read_dir(side_root.join(&prefix)).unwrap() {
                        let path = entry.unwrap().path();
                        let name = path.file_name().unwrap().to_string_lossy().into_owned();
                        if name.contains(".tar.") && path.is_file() {
                            upload(&format!("{prefix}/{name}"), &path);
                            uploaded += 1;
                        }
                    }
                    assert!(uploaded > 0, "run {run_id} uploaded archives");
                }
                _ => world.push(&run_id, "math-libs", FAMILY, &fps, regressed),
            }
        }
        // The publishing daemon holds every archive in its CAS; the developer's machine does not:
        // a fresh daemon over the same storage downloads each archive once.
        world.daemon = Daemon::start(storage).unwrap();
        world
    }

    /// Generate a job's build dir (blas carrying the regression or not) and `cairn push` it.
    fn push(
        &self,
        run_id: &str,
        stage: &str,
        family: &str,
        fps: &BTreeMap<String, cairn_fingerprint::Blake3>,
        regressed: bool,
    ) {
        self.push_with(&self.daemon, run_id, stage, family, fps, regressed);
    }

    /// [`World::push`] through `daemon` (and so into its storage).
    fn push_with(
        &self,
        daemon: &Daemon,
        run_id: &str,
        stage: &str,
        family: &str,
        fps: &BTreeMap<String, cairn_fingerprint::Blake3>,
        regressed: bool,
    ) {
        let b = self.tmp.path().join(format!("build-{run_id}-{stage}"));
        ci::write_build_dir(&b, family, fps, None, BYTES).unwrap();
        if fps.contains_key("blas") {
            let stage_dir = b
                .join("artifacts")
                .join(format!("blas_lib_{family}"))
                .join("math-libs/blas/stage");
            std::fs::set_permissions(&stage_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            let file = stage_dir.join("share/regress.txt");
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, if regressed { "broken\n" } else { "ok\n" }).unwrap();
        }
        let out = run(daemon
            .cairn()
            .args(["--quiet", "push", "--stage", stage, "--family", family])
            .args(["--run-id", run_id, "--build-dir"])
            .arg(&b)
            .arg("--checkout")
            .arg(&self.checkout.root));
        assert!(out.status.success(), "push {run_id}: {}", show(&out));
    }

    /// The test command: good when the regression file says `ok`; logs each call's environment.
    fn script(&self) -> PathBuf {
        let path = self.tmp.path().join("check.sh");
        let calls = self.tmp.path().join("calls.log");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\n\
                 echo \"$CAIRN_BISECT_COMMIT $CAIRN_FAMILY $CAIRN_BUILD_DIR\" >> '{}'\n\
                 grep -qx ok \"$CAIRN_BUILD_DIR/{REGRESS_FILE}\"\n",
                calls.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// `cairn --json bisect run` over the submodule's history (or the superproject's with `None`).
    fn bisect(
        &self,
        submodule: bool,
        build: &Path,
        extra: &[&str],
        cmd: &[&str],
    ) -> (Output, Value) {
        let (good, bad) = if submodule {
            (&self.sub[0], &self.sub[self.shape.commits])
        } else {
            (&self.sup[0], &self.sup[self.shape.commits])
        };
        let mut c = self.daemon.cairn();
        if let Some(api) = &self.github_api {
            c.env("CAIRN_GITHUB_API", api)
                .env("GITHUB_TOKEN", "test-token");
        }
        c.current_dir(self.tmp.path())
            .args(["--json", "bisect", "run", "--good", good, "--bad", bad])
            .args(["--family", FAMILY, "--stage", "ml-libs", "--build-dir"])
            .arg(build)
            .arg("--checkout")
            .arg(&self.checkout.root)
            .args(extra);
        if submodule {
            c.args(["--submodule", "rocm-libraries"]);
        }
        let script = self.script();
        c.arg("--");
        if cmd.is_empty() {
            c.arg(&script);
        } else {
            c.args(cmd);
        }
        let out = run(&mut c);
        // An error prints nothing on stdout; anything printed is one JSON document.
        let json: Value = if out.stdout.is_empty() && !out.status.success() {
            Value::Null
        } else {
            serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("--json output is one document ({e}): {}", show(&out)))
        };
        (out, json)
    }

    fn index_of(&self, commits: &[String], sha: &str) -> usize {
        commits
            .iter()
            .position(|c| c == sha)
            .unwrap_or_else(|| panic!("{sha} is not a commit of the history"))
    }
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn bisect_names_the_first_bad_submodule_commit_skips_unbuilt_ones_and_touches_no_repo() {
    let world = World::build(ISSUE);
    let before = repo_state(&world.checkout.root);
    let build = world.tmp.path().join("bisect-build");

    let (out, report) = world.bisect(true, &build, &[], &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(report["schema"], "cairn-bisect-v1");
    assert_eq!(report["result"]["status"], "first_bad", "{report:#}");
    assert_eq!(
        report["result"]["commit"], world.sub[world.shape.regression],
        "the regression entered at change {}: {report:#}",
        world.shape.regression
    );
    assert_eq!(report["candidates"], world.shape.commits);
    assert_eq!(report["submodule"], "rocm-libraries");
    assert_eq!(report["superproject_head"], world.sup[world.shape.commits]);

    // Skipped probes are reported, each one a commit CI never built, with what it lacked.
    let steps = report["steps"].as_array().unwrap();
    let skipped: Vec<&Value> = steps.iter().filter(|s| s["result"] == "skip").collect();
    assert!(
        !skipped.is_empty(),
        "the first probe is a commit never built: {report:#}"
    );
    assert_eq!(report["skipped"].as_array().unwrap().len(), skipped.len());
    for s in &skipped {
        let k = world.index_of(&world.sub, s["commit"].as_str().unwrap());
        assert!(
            world.shape.never_built.contains(&k),
            "change {k} was built yet skipped: {s:#}"
        );
        let missing: BTreeSet<&str> = s["missing"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["artifact"].as_str().unwrap())
            .collect();
        assert_eq!(missing, BTreeSet::from(["blas", "rand"]), "{s:#}");
        assert_eq!(s["files_written"], 0, "a skipped probe writes nothing");
    }
    // After a materialized probe, a skip also says which input moved the missing fingerprints.
    let explained: Vec<&Value> = skipped
        .iter()
        .flat_map(|s| s["missing"].as_array().unwrap())
        .filter(|m| !m["changed_inputs"].as_array().unwrap().is_empty())
        .collect();
    assert!(!explained.is_empty(), "{report:#}");
    for m in explained {
        assert!(
            strs(&m["changed_inputs"]).contains(&"submodule rocm-libraries".to_string()),
            "{m:#}"
        );
    }
    // Every tested step ran the command with the documented environment.
    let tested: Vec<&Value> = steps.iter().filter(|s| s["result"] != "skip").collect();
    let calls = std::fs::read_to_string(world.tmp.path().join("calls.log")).unwrap();
    assert_eq!(calls.lines().count(), tested.len(), "{calls}");
    for (line, s) in calls.lines().zip(&tested) {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields[0], s["commit"].as_str().unwrap());
        assert_eq!(fields[1], FAMILY);
        assert_eq!(Path::new(fields[2]), build);
    }
    // Each step after the first rewrote only the artifacts that changed.
    let first_files = tested[0]["files_written"].as_u64().unwrap();
    assert!(first_files > 0);
    for s in &tested[1..] {
        assert_eq!(strs(&s["changed"]), ["blas", "rand"], "{s:#}");
        assert!(s["files_written"].as_u64().unwrap() < first_files, "{s:#}");
        assert!(s["files_unchanged"].as_u64().unwrap() > 0, "{s:#}");
    }
    assert!(report["totals"]["downloaded_bytes"].as_u64().unwrap() > 0);
    // The build dir holds the last probe's artifacts, with markers, and the session log.
    assert!(build.join("math-libs/blas/stage.prebuilt").is_file());
    assert!(build.join(".cairn-bisect/session.json").is_file());

    // The repository is exactly as it was: HEADs, index, status, refs, no bisect state.
    assert_eq!(repo_state(&world.checkout.root), before);
    // The session's pin is gone with the session.
    let (_, status) = cairn_json(&world, &["status"]);
    assert!(status["pins"].as_array().unwrap().is_empty(), "{status:#}");

    // The same bisect again: same answer, nothing downloaded (probes and prefetches alike).
    let (out, again) = world.bisect(true, &build, &[], &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(again["result"], report["result"]);
    assert_eq!(again["totals"]["downloaded_bytes"], 0, "{again:#}");
    assert_eq!(again["totals"]["prefetched_bytes"], 0, "{again:#}");

    // `cairn bisect log` prints the last session's report again.
    let out = run(world
        .daemon
        .cairn()
        .args(["--json", "bisect", "log", "--build-dir"])
        .arg(&build));
    assert!(out.status.success(), "{}", show(&out));
    let logged: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(logged["result"], again["result"]);
    assert_eq!(logged["steps"], again["steps"]);
    let out = run(world
        .daemon
        .cairn()
        .args(["bisect", "log", "--build-dir"])
        .arg(&build));
    let table = String::from_utf8_lossy(&out.stdout);
    println!("{table}");
    assert!(
        table.contains(&format!(
            "first bad commit: {}",
            world.sub[world.shape.regression]
        )),
        "{table}"
    );
    assert!(
        table.contains("skipped ") && table.contains("missing `blas`"),
        "{table}"
    );

    // --nearest: unbuilt commits take blas and rand from their newest built ancestor, marked.
    let nearest_build = world.tmp.path().join("nearest-build");
    let (out, near) = world.bisect(true, &nearest_build, &["--nearest"], &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        near["result"]["commit"], world.sub[world.shape.regression],
        "{near:#}"
    );
    let marked: Vec<&Value> = near["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["nearest"].as_array().unwrap().is_empty())
        .collect();
    assert!(!marked.is_empty(), "{near:#}");
    for s in marked {
        let k = world.index_of(&world.sub, s["commit"].as_str().unwrap());
        assert!(world.shape.never_built.contains(&k));
        for n in s["nearest"].as_array().unwrap() {
            let from = world.index_of(&world.sub, n["from_commit"].as_str().unwrap());
            assert!(
                from < k && !world.shape.never_built.contains(&from),
                "{n:#}"
            );
        }
    }
    assert_eq!(repo_state(&world.checkout.root), before);

    // The superproject's own history: the first bad commit is the bump to the regression.
    let sup_build = world.tmp.path().join("superproject-build");
    let (out, sup) = world.bisect(false, &sup_build, &[], &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        sup["result"]["commit"], world.sup[world.shape.regression],
        "{sup:#}"
    );
    assert_eq!(sup["submodule"], Value::Null);
    assert_eq!(repo_state(&world.checkout.root), before);

    // A command exiting 128 or more aborts the bisect (exit 2) at the first tested probe.
    let (out, aborted) = world.bisect(true, &build, &["--no-prefetch"], &["sh", "-c", "exit 130"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(aborted["result"]["status"], "aborted", "{aborted:#}");
    assert_eq!(repo_state(&world.checkout.root), before);
}

#[test]
fn prefetch_warms_a_range_without_materializing() {
    let world = World::build(SHORT);
    let range = format!("{}..{}", world.sub[0], world.sub[world.shape.commits]);
    let out = run(world
        .daemon
        .cairn()
        .args([
            "--json",
            "prefetch",
            "--submodule",
            "rocm-libraries",
            "--commits",
            &range,
        ])
        .args(["--family", FAMILY, "--stage", "ml-libs", "--checkout"])
        .arg(&world.checkout.root));
    assert!(out.status.success(), "{}", show(&out));
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        first["commits"].as_array().unwrap().len(),
        world.shape.commits
    );
    assert_eq!(
        first["missing"].as_object().unwrap().len(),
        world.shape.never_built.len()
    );
    assert!(first["downloaded_bytes"].as_u64().unwrap() > 0, "{first:#}");
    // Warm now: a bisect over the range downloads nothing.
    let build = world.tmp.path().join("warm-build");
    let (out, report) = world.bisect(true, &build, &[], &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        report["result"]["commit"],
        world.sub[world.shape.regression]
    );
    assert_eq!(report["totals"]["downloaded_bytes"], 0, "{report:#}");
    assert_eq!(report["totals"]["prefetched_bytes"], 0, "{report:#}");
}

#[test]
fn sigint_during_a_probe_stops_with_a_consistent_build_dir_and_an_untouched_repo_and_resumes() {
    let world = World::build(SHORT);
    let before = repo_state(&world.checkout.root);
    let build = world.tmp.path().join("interrupted-build");
    let started = world.tmp.path().join("started");
    let script = world.tmp.path().join("slow.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ntouch '{}'\nsleep 2\nexit 0\n",
            started.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let child = world
        .daemon
        .cairn()
        .args(["--json", "bisect", "run", "--submodule", "rocm-libraries"])
        .args([
            "--good",
            &world.sub[0],
            "--bad",
            &world.sub[world.shape.commits],
        ])
        .args(["--family", FAMILY, "--stage", "ml-libs", "--build-dir"])
        .arg(&build)
        .arg("--checkout")
        .arg(&world.checkout.root)
        .arg("--")
        .arg(&script)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the command never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // While the command runs, the session's artifacts are pinned in the daemon.
    let (_, status) = cairn_json(&world, &["status"]);
    let pins = status["pins"].as_array().unwrap();
    assert_eq!(pins.len(), 1, "{status:#}");
    assert!(pins[0]["name"].as_str().unwrap().starts_with("bisect-"));
    assert!(pins[0]["bytes"].as_u64().unwrap() > 0, "{status:#}");
    // A second bisect into the same build dir is refused while this one runs.
    let (out, _) = world.bisect(true, &build, &[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another `cairn bisect` is running"),
        "{}",
        show(&out)
    );
    // SIGINT to cairn alone (a terminal would send it to the command too).
    let kill = run(Command::new("kill").args(["-INT", &child.id().to_string()]));
    assert!(kill.status.success(), "{}", show(&kill));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["result"]["status"], "interrupted", "{report:#}");
    assert_eq!(report["result"]["signal"], 2);
    // The first probe is a commit never built (skipped); the command ran at the second.
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{report:#}");
    assert_eq!(steps[1]["result"], "abort", "{report:#}");
    // The session log says the same, and the build dir holds one complete probe, markers over
    // complete stage dirs only.
    let logged: Value =
        serde_json::from_slice(&std::fs::read(build.join(".cairn-bisect/session.json")).unwrap())
            .unwrap();
    assert_eq!(logged["result"], report["result"]);
    for stage_dir in [
        "math-libs/blas/stage",
        "math-libs/rand/stage",
        "compiler/amd-llvm/stage",
    ] {
        assert!(build.join(stage_dir).is_dir(), "{stage_dir}");
        assert!(
            build.join(format!("{stage_dir}.prebuilt")).is_file(),
            "{stage_dir}"
        );
    }
    assert_eq!(repo_state(&world.checkout.root), before);
    let (_, status) = cairn_json(&world, &["status"]);
    assert!(status["pins"].as_array().unwrap().is_empty(), "{status:#}");

    // --resume continues from the session log: the skip is kept (never probed again), the
    // interrupted probe is probed again, and the answer is the regression.
    let (out, resumed) = world.bisect(true, &build, &["--resume"], &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        resumed["result"]["commit"], world.sub[world.shape.regression],
        "{resumed:#}"
    );
    let again = resumed["steps"].as_array().unwrap();
    assert_eq!(again[..2], steps[..], "the earlier steps head the report");
    let skipped_commit = &steps[0]["commit"];
    assert!(
        again[2..].iter().all(|s| &s["commit"] != skipped_commit),
        "{resumed:#}"
    );
    assert!(again[2..].iter().any(|s| s["commit"] == steps[1]["commit"]));
    // Resuming another bisect's log is refused.
    let (out, _) = world.bisect(false, &build, &["--resume"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is for another bisect"));
    assert_eq!(repo_state(&world.checkout.root), before);
}

/// `cairn --json ARGS` against the world's daemon: exit status and the document.
fn cairn_json(world: &World, args: &[&str]) -> (Output, Value) {
    let out = run(world.daemon.cairn().arg("--json").args(args));
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, json)
}

#[test]
fn pins_hold_a_range_against_gc_across_restarts_until_unpinned() {
    let mut world = World::build(SHORT);
    let range = format!("{}..{}", world.sub[0], world.sub[world.shape.commits]);
    let checkout = world.checkout.root.to_str().unwrap().to_string();
    let (out, pinned) = cairn_json(
        &world,
        &[
            "pin",
            "week",
            "--commits",
            &range,
            "--submodule",
            "rocm-libraries",
            "--family",
            FAMILY,
            "--stage",
            "ml-libs",
            "--checkout",
            &checkout,
            "--ttl",
            "2h",
        ],
    );
    assert!(out.status.success(), "{}", show(&out));
    let bytes = pinned["pin"]["bytes"].as_u64().unwrap();
    assert!(
        bytes > 0 && pinned["pin"]["trees"].as_u64().unwrap() > 0,
        "{pinned:#}"
    );
    assert!(pinned["prefetch"]["downloaded_bytes"].as_u64().unwrap() > 0);

    let status = |world: &World| {
        let (out, s) = cairn_json(world, &["status"]);
        assert!(out.status.success(), "{}", show(&out));
        s
    };
    let gc_all = |world: &World| {
        let (out, g) = cairn_json(world, &["gc", "--max-bytes", "1"]);
        assert!(out.status.success(), "{}", show(&out));
        g["store_bytes"].as_u64().unwrap()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let s = status(&world);
    let pins = s["pins"].as_array().unwrap();
    assert_eq!(pins.len(), 1, "{s:#}");
    assert_eq!(pins[0]["name"], "week");
    let expires = pins[0]["expires_at"].as_u64().unwrap();
    assert!(expires > now + 7000 && expires <= now + 7300, "{s:#}");
    // A gc down to nothing keeps every pinned blob, before and after a restart.
    assert!(gc_all(&world) >= bytes);
    world.daemon.restart().unwrap();
    let s = status(&world);
    assert_eq!(
        s["pins"][0]["name"], "week",
        "pins survive a restart: {s:#}"
    );
    assert_eq!(s["pins"][0]["bytes"], bytes);
    assert!(gc_all(&world) >= bytes);
    // Unpinned, the blobs go.
    let (out, _) = cairn_json(&world, &["unpin", "week"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(status(&world)["pins"].as_array().unwrap().is_empty());
    assert_eq!(gc_all(&world), 0);
    let (out, again) = cairn_json(&world, &["unpin", "week"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(again["removed"], false);
    // A bot's bad name is refused with the rule.
    let (out, _) = cairn_json(
        &world,
        &[
            "pin",
            "a/b",
            "--commits",
            &range,
            "--submodule",
            "rocm-libraries",
            "--family",
            FAMILY,
            "--stage",
            "ml-libs",
            "--checkout",
            &checkout,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pin name"),
        "{}",
        show(&out)
    );
}

#[test]
fn github_mode_takes_a_commits_run_published_without_cairn_by_name_marked_unverified() {
    let test = "bisect-github";
    let tmp = scratch_dir("e2e-bisect-gh-").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // S3 when the test server is configured (as under `scripts/test`), else a local directory.
    let (bucket, backing): (Box<dyn cairn_daemon::storage::Storage>, Storage) =
        match S3Server::from_env(test) {
            Some(s3) => {
                let storage = rt.block_on(s3.new_bucket(test)).unwrap();
                let bucket = storage.config().bucket.clone();
                let endpoint = s3.endpoint().to_string();
                (Box::new(storage), Storage::S3 { endpoint, bucket })
            }
            None => {
                eprintln!("`{test}` runs on a local-directory backend instead");
                let root = tmp.path().join("storage");
                std::fs::create_dir_all(&root).unwrap();
                (
                    Box::new(LocalStorage::new(&root).unwrap()),
                    Storage::Local(root),
                )
            }
        };
    let upload = |key: &str, file: &Path| {
        rt.block_on(bucket.put(key, PutBody::File(file.to_path_buf())))
            .unwrap_or_else(|e| panic!("uploading {key}: {e}"));
    };
    let mut world = World::build_in(SHORT, tmp, backing, &PLAIN, &upload);
    let github = GithubMock::start().unwrap();
    let run_of = |k: usize| (3000 + k) as u64;
    for k in PLAIN {
        github.add_run(
            "ROCm/TheRock",
            "multi_arch_ci.yml",
            MockRun::success(run_of(k), &world.sup[k]),
        );
    }
    world.github_api = Some(github.url());
    let before = repo_state(&world.checkout.root);

    // Without --github the two plain commits are skipped like unbuilt ones: the answer is a range.
    let (out, without) = world.bisect(false, &world.tmp.path().join("build-a"), &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(without["result"]["status"], "ambiguous", "{without:#}");
    assert!(
        github.requests().is_empty(),
        "GitHub is asked only with --github"
    );

    // With --github they take their run's archives by name, and the first bad commit is exact.
    let (out, report) = world.bisect(false, &world.tmp.path().join("build-b"), &["--github"], &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(report["result"]["status"], "first_bad", "{report:#}");
    assert_eq!(
        report["result"]["commit"], world.sup[world.shape.regression],
        "{report:#}"
    );
    let steps = report["steps"].as_array().unwrap();
    let from_github: Vec<&Value> = steps
        .iter()
        .filter(|s| !s["github_run"].is_null())
        .collect();
    let probed: BTreeSet<usize> = from_github
        .iter()
        .map(|s| world.index_of(&world.sup, s["commit"].as_str().unwrap()))
        .collect();
    assert_eq!(probed, BTreeSet::from(PLAIN), "{report:#}");
    for s in &from_github {
        let k = world.index_of(&world.sup, s["commit"].as_str().unwrap());
        assert_eq!(s["github_run"], run_of(k).to_string(), "{s:#}");
        // The run rebuilt the math libraries: those are unverified; the compiler and runtime it
        // did not build still come by exact fingerprint from run 3000.
        assert_eq!(strs(&s["unverified"]), ["blas", "rand"], "{s:#}");
        assert!(s["missing"].as_array().unwrap().is_empty(), "{s:#}");
        assert_ne!(s["result"], "skip", "{s:#}");
    }
    for s in steps.iter().filter(|s| s["github_run"].is_null()) {
        assert!(s.get("unverified").is_none(), "{s:#}");
        let k = world.index_of(&world.sup, s["commit"].as_str().unwrap());
        if s["result"] == "skip" {
            assert!(world.shape.never_built.contains(&k), "{s:#}");
        }
    }
    // GitHub was asked only about commits without Cairn records.
    let asked: Vec<String> = github.requests().into_iter().map(|r| r.path).collect();
    assert!(!asked.is_empty());
    for path in &asked {
        let sha = path
            .split("head_sha=")
            .nth(1)
            .map(|q| q.split('&').next().unwrap());
        if let Some(sha) = sha {
            let k = world.index_of(&world.sup, sha);
            assert!(
                PLAIN.contains(&k) || world.shape.never_built.contains(&k),
                "GitHub asked about commit {k}, which has Cairn records: {path}"
            );
        }
    }
    // The probes the session prefetched while a command ran were warmed the way they are
    // resolved, GitHub's runs included: every built commit's prefetch made its whole artifact
    // set local (without the lookup, a GitHub-only commit's blas and rand were left out).
    let built_prefetches: Vec<(usize, u64)> = report["prefetches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["complete"] == true)
        .map(|p| {
            (
                world.index_of(&world.sup, p["commit"].as_str().unwrap()),
                p["archives"].as_u64().unwrap(),
            )
        })
        .filter(|(k, _)| !world.shape.never_built.contains(k))
        .collect();
    assert!(
        built_prefetches.iter().any(|(k, _)| PLAIN.contains(k)),
        "a commit only GitHub knows was prefetched: {report:#}"
    );
    let full = built_prefetches.iter().map(|(_, a)| *a).max().unwrap();
    for (k, archives) in &built_prefetches {
        assert_eq!(*archives, full, "commit {k}'s prefetch: {report:#}");
    }
    // The table says where the artifacts came from.
    let out = run(world
        .daemon
        .cairn()
        .args(["bisect", "log", "--build-dir"])
        .arg(world.tmp.path().join("build-b")));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!(
            "unverified from run {}: blas, rand",
            run_of(PLAIN[1])
        )),
        "{table}"
    );

    // `cairn prefetch --github` on an empty store warms the whole range, GitHub's runs included:
    // a bisect after it downloads nothing.
    world.daemon = Daemon::start(world.daemon.storage().clone()).unwrap();
    let range = format!("{}..{}", world.sup[0], world.sup[world.shape.commits]);
    let mut c = world.daemon.cairn();
    c.env("CAIRN_GITHUB_API", world.github_api.as_deref().unwrap())
        .env("GITHUB_TOKEN", "test-token")
        .args(["--json", "prefetch", "--github", "--commits", &range])
        .args(["--family", FAMILY, "--stage", "ml-libs", "--checkout"])
        .arg(&world.checkout.root);
    let out = run(&mut c);
    assert!(out.status.success(), "{}", show(&out));
    let warmed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = warmed["github_runs"].as_object().unwrap();
    let taken: BTreeSet<usize> = runs.keys().map(|c| world.index_of(&world.sup, c)).collect();
    assert_eq!(taken, BTreeSet::from(PLAIN), "{warmed:#}");
    for (commit, run_id) in runs {
        assert_eq!(
            run_id.as_str().unwrap(),
            run_of(world.index_of(&world.sup, commit)).to_string()
        );
    }
    let missing: BTreeSet<usize> = warmed["missing"]
        .as_object()
        .unwrap()
        .keys()
        .map(|c| world.index_of(&world.sup, c))
        .collect();
    assert_eq!(
        missing,
        world
            .shape
            .never_built
            .iter()
            .copied()
            .collect::<BTreeSet<_>>(),
        "{warmed:#}"
    );
    let (out, warm) = world.bisect(
        false,
        &world.tmp.path().join("build-c"),
        &["--github", "--no-prefetch"],
        &[],
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        warm["result"]["commit"], world.sup[world.shape.regression],
        "{warm:#}"
    );
    assert_eq!(warm["totals"]["downloaded_bytes"], 0, "{warm:#}");
    assert_eq!(repo_state(&world.checkout.root), before);
}
