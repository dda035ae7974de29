//! Interrupted re-bootstraps never lie to CMake: a `cairn bootstrap` switching a build dir between
//! two commits (A = run 1, B = what a `rocm-systems` bump rebuilt) is stopped at seeded random points
//! by SIGKILL, SIGINT or SIGTERM (half of the trials anywhere in the command, half during
//! materialization, once the first changing stage dir has lost its marker). After every interruption each stage dir that carries a `.prebuilt`
//! marker must be exactly A's tree or exactly B's tree (compared with reference bootstraps of each),
//! SIGINT/SIGTERM must exit 130/143 saying how many stage dirs were left unmarked, and a rerun must
//! complete the target commit exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_testkit::checkout::git;
use cairn_testkit::daemon::Daemon;

use crate::bootstrap::{
    FAMILY, STAGE, World, assert_bootstrap_tree, bootstrap_with, expect_code, markers, snapshot,
};

/// Trials: each interrupts one switch (A → B or B → A) and then reruns it to completion.
const TRIALS: usize = 60;

/// One commit's checkout, its reference bootstrap and the snapshot of each of its stage dirs.
struct Side {
    checkout: PathBuf,
    relpaths: BTreeSet<String>,
    stage_dirs: BTreeMap<String, BTreeMap<String, String>>,
}

impl Side {
    fn new(daemon: &Daemon, checkout: PathBuf, reference: &Path) -> Side {
        let (out, _) = bootstrap_with(daemon.cairn(), &checkout, reference, &[]);
        expect_code(&out, 0);
        let relpaths = markers(reference);
        let stage_dirs = relpaths
            .iter()
            .map(|r| (r.clone(), snapshot(reference, &BTreeSet::from([r.clone()]))))
            .collect();
        Side {
            checkout,
            relpaths,
            stage_dirs,
        }
    }

    fn spawn(&self, daemon: &Daemon, dest: &Path) -> std::process::Child {
        let mut cmd: Command = daemon.cairn();
        cmd.args(["--json", "bootstrap", "--stage", STAGE, "--family", FAMILY])
            .arg("--build-dir")
            .arg(dest)
            .arg("--checkout")
            .arg(&self.checkout)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// `(path, inode)` of every file below the stage dirs `relpaths` of `dest`.
fn identities(dest: &Path, relpaths: &[String]) -> Vec<(PathBuf, u64)> {
    use std::os::unix::fs::MetadataExt;
    let roots: BTreeSet<String> = relpaths.iter().cloned().collect();
    snapshot(dest, &roots)
        .into_iter()
        .filter(|(_, d)| d.starts_with('f'))
        .map(|(p, _)| {
            let full = dest.join(p);
            let ino = std::fs::symlink_metadata(&full).unwrap().ino();
            (full, ino)
        })
        .collect()
}

/// A changing stage dir lost its marker or had a file replaced (what the run does first, with and
/// without the marker rule).
fn started_changing(dest: &Path, relpaths: &[String], watch: &[(PathBuf, u64)]) -> bool {
    use std::os::unix::fs::MetadataExt;
    relpaths
        .iter()
        .any(|r| !dest.join(format!("{r}.prebuilt")).exists())
        || watch
            .iter()
            .any(|(p, ino)| std::fs::symlink_metadata(p).map_or(true, |m| m.ino() != *ino))
}

#[test]
fn interrupted_rebootstraps_never_leave_a_marker_on_a_mixed_stage_dir() {
    let world = World::publish_two_runs("local").unwrap();
    // The checkout is at commit 2 (B); a copy checked out at commit 1 is A.
    let src_b = world.checkout.root.clone();
    let src_a = world.tmp.path().join("src-a");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&src_b)
        .arg(&src_a)
        .status()
        .unwrap();
    assert!(status.success());
    git(&src_a, &["checkout", "-q", &world.commit1]).unwrap();
    git(&src_a, &["submodule", "update", "-q"]).unwrap();

    let daemon = &world.daemon;
    let a = Side::new(daemon, src_a, &world.tmp.path().join("ref-a"));
    let b = Side::new(daemon, src_b, &world.tmp.path().join("ref-b"));
    let run2_has: BTreeSet<String> = ["core-hip", "core-runtime", "blas", "rand"]
        .map(String::from)
        .into();
    assert_bootstrap_tree(
        &world,
        &world.tmp.path().join("ref-a"),
        &world.expected(STAGE, &BTreeSet::new()),
    );
    assert_bootstrap_tree(
        &world,
        &world.tmp.path().join("ref-b"),
        &world.expected(STAGE, &run2_has),
    );
    let differing: Vec<String> = a
        .stage_dirs
        .iter()
        .filter(|(r, s)| b.stage_dirs.get(*r) != Some(*s))
        .map(|(r, _)| r.clone())
        .collect();
    assert!(
        differing.len() >= 4,
        "A and B must differ in several stage dirs: {differing:?}"
    );

    // How long a whole switch takes: the kill points are drawn from it.
    let dest = world.tmp.path().join("build");
    let (out, _) = bootstrap_with(daemon.cairn(), &a.checkout, &dest, &[]);
    expect_code(&out, 0);
    let started = Instant::now();
    let (out, _) = bootstrap_with(daemon.cairn(), &b.checkout, &dest, &[]);
    expect_code(&out, 0);
    let switch = started.elapsed();

    let mut rng = cairn_testkit::datagen::Rng::new(20261203);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut mixed_unmarked = 0usize;
    // `dest` is at B now; each trial switches to the other side.
    let mut at_b = true;
    for trial in 0..TRIALS {
        let to = if at_b { &a } else { &b };
        let signal = [libc::SIGKILL, libc::SIGINT, libc::SIGTERM][trial % 3];
        let watch = identities(&dest, &differing);
        let child = to.spawn(daemon, &dest);
        if trial % 2 == 0 {
            // Anywhere in the command: fingerprinting, the daemon's answer, materialization.
            std::thread::sleep(Duration::from_micros(
                rng.range(0, switch.as_micros() as u64 + 1),
            ));
        } else {
            // Inside materialization: once the first changing stage dir has lost its marker or one
            // of its files was replaced, at a random point of the next few milliseconds (most of
            // the switch is spent before materialization starts).
            let deadline = Instant::now() + Duration::from_secs(2);
            while !started_changing(&dest, &differing, &watch) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(100));
            }
            std::thread::sleep(Duration::from_micros(rng.range(0, 3_000)));
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let outcome = match (out.status.code(), out.status.signal()) {
            (Some(0), _) => "finished before the signal".to_string(),
            (Some(code), _) if signal != libc::SIGKILL && code == 128 + signal => {
                assert!(
                    err.contains("cairn: interrupted by SIG")
                        && (err.contains("rerun to finish")
                            || err.contains("before the build dir was changed")),
                    "trial {trial}: exit {code} without the interruption message:\n{err}"
                );
                if err.contains("rerun to finish") {
                    format!(
                        "stopped cleanly by signal {signal} during materialization (exit {code})"
                    )
                } else {
                    format!("stopped by signal {signal} before materialization (exit {code})")
                }
            }
            (None, Some(s)) if s == signal => format!("killed by signal {signal}"),
            other => {
                panic!("trial {trial}: unexpected end {other:?} after signal {signal}:\n{err}")
            }
        };
        *outcomes.entry(outcome).or_default() += 1;

        // The invariant: a marker only over a stage dir that is exactly A's or exactly B's.
        let marked = markers(&dest);
        for r in &marked {
            let now = snapshot(&dest, &BTreeSet::from([r.clone()]));
            let is_a = a.stage_dirs.get(r) == Some(&now);
            let is_b = b.stage_dirs.get(r) == Some(&now);
            assert!(
                is_a || is_b,
                "trial {trial} (signal {signal}): `{r}.prebuilt` marks a stage dir that is neither A's nor B's"
            );
        }
        let unmarked_now = to.relpaths.difference(&marked).count();
        if unmarked_now > 0 {
            mixed_unmarked += 1;
        }

        // A rerun completes the target exactly.
        let (out, _) = bootstrap_with(daemon.cairn(), &to.checkout, &dest, &[]);
        expect_code(&out, 0);
        assert_eq!(
            markers(&dest),
            to.relpaths,
            "trial {trial}: markers after the rerun"
        );
        for (r, want) in &to.stage_dirs {
            assert_eq!(
                &snapshot(&dest, &BTreeSet::from([r.clone()])),
                want,
                "trial {trial}: `{r}` after the rerun"
            );
        }
        at_b = !at_b;
    }
    eprintln!(
        "{TRIALS} interrupted switches (switch takes {:.0} ms): {outcomes:?}; {mixed_unmarked} left stage dirs unmarked",
        switch.as_secs_f64() * 1e3
    );
    assert!(
        mixed_unmarked >= TRIALS / 6,
        "too few interruptions landed during materialization ({mixed_unmarked} of {TRIALS}): {outcomes:?}"
    );
}
