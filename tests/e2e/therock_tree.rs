//! A Cairn bootstrap leaves exactly the tree TheRock's `artifact_manager.py fetch --bootstrap` leaves,
//! compared with a checked-in listing made by TheRock's rules: `tests/fixtures/therock-bootstrap.txt`.
//!
//! The run is a plain TheRock run (archives and `.sha256sum` sidecars in a local staging dir, no
//! Cairn records) holding the six inbound artifacts of `wsl-rocdxg`, `generic` only. One archive is
//! made by hand to carry what the rules are about: file modes 0444, 0640, 0700 and 0755 (TheRock
//! writes the umask's default plus the archive's execute bits), a symlink, a tar hard link, an empty
//! directory, and a second manifest relpath without members (TheRock writes only its marker). The
//! other five are generated (`datagen`). Both sides run under umask 022.
//!
//! To make the listing again (after a deliberate change of the generated data), run this test with
//! `CAIRN_THEROCK_ARCHIVES_OUT=DIR`, which also copies the run there, then TheRock's rules over it:
//! `python3 benches/baseline_fetch.py fetch --local-staging-dir DIR --prefix 9001-linux --names
//! DIR/names.txt --output-dir OUT` under `umask 022`, and `python3 tests/fixtures/list_tree.py OUT`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use cairn_fingerprint::Compression;
use cairn_testkit::daemon::{Daemon, Storage};
use cairn_testkit::datagen::{self, ArtifactSpec, GENERATED_MTIME};
use sha2::Digest as _;

const RUN: &str = "9001";
const STAGE: &str = "wsl-rocdxg";
const GENERATED: [&str; 5] = [
    "amd-llvm",
    "core-hip",
    "core-kpack",
    "core-runtime",
    "sysdeps",
];

/// The hand-made `base_lib_generic` artifact dir under `root`.
fn base_artifact(root: &Path) -> std::path::PathBuf {
    let dir = root.join("base_lib_generic");
    let stage = dir.join("base/base/stage");
    let file = |rel: &str, content: &[u8], mode: u32| {
        let p = stage.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    file("bin/tool", b"#!/bin/sh\necho tool\n", 0o700);
    file("bin/run", b"#!/bin/sh\necho run\n", 0o755);
    file("share/doc/README", b"read only\n", 0o444);
    file("include/base.h", b"int base(void);\n", 0o640);
    file("lib/libbase.so.1.0", b"\x7fELF not really\n", 0o755);
    std::os::unix::fs::symlink("libbase.so.1.0", stage.join("lib/libbase.so")).unwrap();
    fs::hard_link(stage.join("bin/tool"), stage.join("bin/tool-alias")).unwrap();
    fs::create_dir_all(stage.join("share/empty")).unwrap();
    // A second relpath with no members: TheRock writes its marker and nothing else.
    fs::write(
        dir.join("artifact_manifest.txt"),
        "base/base/stage\nbase/nomembers/stage\n",
    )
    .unwrap();
    datagen::set_all_mtimes(&dir, GENERATED_MTIME).unwrap();
    dir
}

/// `path type mode nlink detail` per entry below `root` (sorted; `detail` is the SHA-256 of a
/// file, the target of a symlink, `-` for a directory), Cairn's state file left out: the format of
/// `tests/fixtures/list_tree.py`.
fn listing(root: &Path) -> String {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeSet<String>) {
        for e in fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let rel = rel.join(e.file_name());
            let name = rel.to_string_lossy().into_owned();
            if name == ".cairn-state.json" {
                continue;
            }
            let m = fs::symlink_metadata(root.join(&rel)).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            let (kind, detail) = if m.file_type().is_symlink() {
                let t = fs::read_link(root.join(&rel)).unwrap();
                ("l", t.to_string_lossy().into_owned())
            } else if m.is_dir() {
                walk(root, &rel, out);
                ("d", "-".to_string())
            } else {
                let bytes = fs::read(root.join(&rel)).unwrap();
                let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
                ("f", cairn_fingerprint::Sha256(digest).to_hex())
            };
            let nlink = if m.is_dir() { 0 } else { m.nlink() };
            out.insert(format!("{name} {kind} {mode:o} {nlink} {detail}"));
        }
    }
    let mut lines = BTreeSet::new();
    walk(root, Path::new(""), &mut lines);
    lines.into_iter().fold(String::new(), |mut s, l| {
        let _ = writeln!(s, "{l}");
        s
    })
}

#[test]
fn bootstrap_leaves_the_tree_therocks_fetch_leaves() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("staging");
    let run_dir = bucket.join(format!("{RUN}-linux"));
    fs::create_dir_all(&run_dir).unwrap();
    let work = tmp.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let mut names = vec![
        datagen::archive_artifact_dir(&base_artifact(&work), &run_dir, Compression::Zstd).unwrap(),
    ];
    for (i, name) in GENERATED.iter().enumerate() {
        let spec = ArtifactSpec::new(name, "lib", "generic", 48 << 10, 90 + i as u64);
        let dir = datagen::generate_artifact_dir(&work, &spec).unwrap();
        names.push(datagen::archive_artifact_dir(&dir, &run_dir, Compression::Zstd).unwrap());
    }
    if let Some(out) = std::env::var_os("CAIRN_THEROCK_ARCHIVES_OUT") {
        let out = Path::new(&out).join(format!("{RUN}-linux"));
        fs::create_dir_all(&out).unwrap();
        let mut list = String::new();
        for a in &names {
            for p in [&a.path, &a.sha256sum_path] {
                fs::copy(p, out.join(p.file_name().unwrap())).unwrap();
            }
            let _ = writeln!(list, "{}", a.path.file_name().unwrap().to_string_lossy());
        }
        fs::write(out.parent().unwrap().join("names.txt"), list).unwrap();
    }

    let daemon = Daemon::start(Storage::Local(bucket.clone())).unwrap();
    let build = tmp.path().join("build");
    let topology = Path::new(env!("CARGO_MANIFEST_DIR")).join("../BUILD_TOPOLOGY.toml");
    let cairn = daemon.cairn();
    // TheRock's listing was made under umask 022; run `cairn` under the same one.
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("umask 022 && exec \"$0\" \"$@\"")
        .arg(cairn.get_program())
        .args(cairn.get_args())
        .args(["--topology"])
        .arg(&topology)
        .args([
            "bootstrap",
            "--stage",
            STAGE,
            "--generic-only",
            "--run-id",
            RUN,
        ])
        .arg("--build-dir")
        .arg(&build)
        .current_dir(tmp.path());
    for (k, v) in cairn.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "cairn bootstrap: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    let expected = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/therock-bootstrap.txt"),
    )
    .unwrap();
    let actual = listing(&build);
    assert_eq!(
        actual, expected,
        "the bootstrapped tree differs from TheRock's (left: Cairn, right: the checked-in listing)"
    );
}
