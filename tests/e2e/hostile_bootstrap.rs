//! Hostile archives that pass the daemon's per-member checks and are refused by `cairn bootstrap`
//! when it plans the build dir: a symlink pair that only escapes when resolved through each other
//! (`stage/x -> ../../..`, `stage/y -> x/../out`; also with names and targets that are not UTF-8),
//! a manifest relpath that is not a stage dir
//! (`compiler`: bootstrap would wipe the user's `compiler/`), and a relpath naming cairn's own state
//! file. Each is pushed by a real `cairn push` from a build dir a CI job could have left, and each
//! bootstrap must fail with exit 2 naming the problem, leaving the user's files and everything outside
//! the build dir untouched.

use std::path::Path;
use std::process::Output;

use cairn_testkit::checkout::Checkout;
use cairn_testkit::ci;
use cairn_testkit::daemon::{Daemon, Storage, scratch_dir};

const ARTIFACT: &str = "amd-llvm_lib_generic";
const RELPATH: &str = "compiler/amd-llvm/stage";

fn out_text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Publish the compiler-runtime job with `tamper` applied to `amd-llvm_lib_generic`'s artifact dir,
/// then bootstrap `math-libs` into a build dir holding a user's file under `compiler/`.
fn publish_and_bootstrap(case: &str, tamper: impl FnOnce(&Path)) -> (Output, tempfile::TempDir) {
    let tmp = scratch_dir(&format!("e2e-hostile-boot-{case}-")).unwrap();
    let storage = Storage::Local(tmp.path().join("storage"));
    let checkout = Checkout::create(&tmp.path().join("src"), ci::TOPOLOGY).unwrap();
    let daemon = Daemon::start(storage).unwrap();
    let fps = ci::produced_fingerprints(&checkout.root, "compiler-runtime", "generic").unwrap();
    let b = tmp.path().join("job");
    ci::write_build_dir(&b, "generic", &fps, None, 8 << 10).unwrap();
    tamper(&b.join("artifacts").join(ARTIFACT));
    let out = daemon
        .cairn()
        .args([
            "--quiet",
            "push",
            "--stage",
            "compiler-runtime",
            "--family",
            "generic",
            "--run-id",
            "3001",
        ])
        .arg("--build-dir")
        .arg(&b)
        .arg("--checkout")
        .arg(&checkout.root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{case}: push: {}", out_text(&out));

    let dest = tmp.path().join("work").join("build");
    std::fs::create_dir_all(dest.join("compiler")).unwrap();
    std::fs::write(dest.join("compiler/user-notes.txt"), b"mine").unwrap();
    let out = daemon
        .cairn()
        .args([
            "bootstrap",
            "--stage",
            "math-libs",
            "--family",
            "gfx94X-dcgpu",
        ])
        .arg("--build-dir")
        .arg(&dest)
        .arg("--checkout")
        .arg(&checkout.root)
        .output()
        .unwrap();
    (out, tmp)
}

#[track_caller]
fn assert_refused(case: &str, out: &Output, tmp: &Path, needles: &[&str]) {
    assert_eq!(out.status.code(), Some(2), "{case}: {}", out_text(out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused to materialize"),
        "{case}: {}",
        out_text(out)
    );
    for n in needles {
        assert!(
            err.contains(n),
            "{case}: stderr lacks `{n}`: {}",
            out_text(out)
        );
    }
    let dest = tmp.join("work").join("build");
    assert_eq!(
        std::fs::read(dest.join("compiler/user-notes.txt")).unwrap(),
        b"mine",
        "{case}: the user's file is gone"
    );
    assert!(
        !dest.join(format!("{RELPATH}.prebuilt")).exists(),
        "{case}: nothing may be marked"
    );
    assert!(
        !tmp.join("work").join("out").exists(),
        "{case}: something was written outside the build dir"
    );
    // The state file, if any, is a plain file: later bootstraps are not bricked.
    let state = dest.join(cairn_client::materialize::STATE_FILE);
    assert!(
        std::fs::symlink_metadata(&state).map_or(true, |m| m.is_file()),
        "{case}: `{}` is not a file",
        state.display()
    );
}

#[test]
fn hostile_archives_past_the_daemon_are_refused_by_bootstrap() {
    // 1. Two symlinks that escape only together.
    let (out, tmp) = publish_and_bootstrap("symlinks", |dir| {
        let stage = dir.join(RELPATH);
        std::os::unix::fs::symlink("../../..", stage.join("x")).unwrap();
        std::os::unix::fs::symlink("x/../out", stage.join("y")).unwrap();
    });
    assert_refused(
        "symlinks",
        &out,
        tmp.path(),
        &[&format!(
            "symlink `{RELPATH}/y` in `{ARTIFACT}` points outside the destination (`x/../out`)"
        )],
    );

    // 1b. The same pair with names and targets that are not UTF-8 (kept byte-exact, so the path
    // rules must hold for their bytes): refused, the bytes shown as `\xNN`.
    let (out, tmp) = publish_and_bootstrap("symlinks-non-utf8", |dir| {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let stage = dir.join(RELPATH);
        std::os::unix::fs::symlink("../../..", stage.join(OsStr::from_bytes(b"x\xff"))).unwrap();
        std::os::unix::fs::symlink(
            OsStr::from_bytes(b"x\xff/../out"),
            stage.join(OsStr::from_bytes(b"y\xfe")),
        )
        .unwrap();
    });
    assert_refused(
        "symlinks-non-utf8",
        &out,
        tmp.path(),
        &[&format!(
            "symlink `{RELPATH}/y\\xfe` in `{ARTIFACT}` points outside the destination \
             (`x\\xff/../out`)"
        )],
    );

    // 2. A relpath that is a whole top-level directory of the build tree.
    let (out, tmp) = publish_and_bootstrap("relpath-compiler", |dir| {
        std::fs::write(dir.join("artifact_manifest.txt"), "compiler\n").unwrap();
    });
    assert_refused(
        "relpath-compiler",
        &out,
        tmp.path(),
        &["stage relpath `compiler`", "`stage` component"],
    );

    // 3. A relpath naming cairn's state file.
    let (out, tmp) = publish_and_bootstrap("relpath-state", |dir| {
        std::fs::rename(dir.join("compiler"), dir.join(".cairn-state.json")).unwrap();
        std::fs::write(dir.join("artifact_manifest.txt"), ".cairn-state.json\n").unwrap();
    });
    assert_refused(
        "relpath-state",
        &out,
        tmp.path(),
        &["stage relpath `.cairn-state.json`", "cairn's own files"],
    );
}
