//! Names that are not UTF-8 are kept byte-exact, end to end (issue 20 item 7): a file name, a
//! directory name and a symlink target with bytes that are not UTF-8 go from a build dir or a CI's
//! archive through storage (a local dir or S3 on moto), a fresh cairnd's ingest, the tree, the Fetch
//! RPC and the client's materializer into a build dir with exactly their bytes, never U+FFFD.
//!
//! Each test fetches through a second daemon with an empty store, so the archive is downloaded and
//! ingested from storage, and checks both a bootstrap (`cairn bootstrap`, then again incrementally,
//! which reads the `entries_hex` state file back) and a plain `cairn fetch`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn_fingerprint::Blake3;
use cairn_testkit::checkout::Checkout;
use cairn_testkit::ci;
use cairn_testkit::daemon::{Daemon, Options, Storage, scratch_dir};

/// The stage pushed; `BOOTSTRAP_STAGE`'s inbound artifacts are all of its outputs.
const STAGE: &str = "compiler-runtime";
const FAMILY: &str = "generic";
const BOOTSTRAP_STAGE: &str = "math-libs";
const BOOTSTRAP_FAMILY: &str = "gfx94X-dcgpu";
const BYTES: u64 = 4 << 10;
/// The artifact that gets the strange names.
const ARTIFACT: &str = "core-hip_lib_generic";

/// A file name with Latin-1 `é` and two bytes that are never UTF-8.
const FILE: &[u8] = b"caf\xe9-\xff\xfe.bin";
/// A directory name that is not UTF-8, holding a UTF-8 file.
const DIR: &[u8] = b"d\xff";
/// A symlink whose name and target are not UTF-8 (the target is `FILE`).
const LINK: &[u8] = b"l\xfe";

struct Fixture {
    tmp: tempfile::TempDir,
    checkout: Checkout,
    storage: Storage,
    daemon: Daemon,
    fps: BTreeMap<String, Blake3>,
}

impl Fixture {
    fn new(storage: impl FnOnce(&Path) -> Option<Storage>, opts: Options) -> Option<Fixture> {
        let tmp = scratch_dir("e2e-non-utf8-").unwrap();
        let storage = storage(tmp.path())?;
        let checkout = Checkout::create(&tmp.path().join("src"), ci::TOPOLOGY).unwrap();
        let daemon = Daemon::start_with(storage.clone(), opts).unwrap();
        let fps = ci::produced_fingerprints(&checkout.root, STAGE, FAMILY).unwrap();
        Some(Fixture {
            tmp,
            checkout,
            storage,
            daemon,
            fps,
        })
    }

    /// A generated build dir whose `ARTIFACT` holds the strange names; returns it with the
    /// artifact's first stage relpath.
    fn build_dir(&self) -> (PathBuf, String) {
        let b = self.tmp.path().join("build");
        ci::write_build_dir(&b, FAMILY, &self.fps, None, BYTES).unwrap();
        let artifact = b.join("artifacts").join(ARTIFACT);
        let manifest = fs::read_to_string(artifact.join("artifact_manifest.txt")).unwrap();
        let relpath = manifest
            .lines()
            .find(|l| !l.is_empty())
            .unwrap()
            .to_string();
        let stage = artifact.join(&relpath);
        fs::create_dir_all(&stage).unwrap();
        fs::write(
            stage.join(OsStr::from_bytes(FILE)),
            b"bytes named in Latin-1",
        )
        .unwrap();
        fs::create_dir(stage.join(OsStr::from_bytes(DIR))).unwrap();
        fs::write(stage.join(OsStr::from_bytes(DIR)).join("inside.txt"), b"in").unwrap();
        symlink(OsStr::from_bytes(FILE), stage.join(OsStr::from_bytes(LINK))).unwrap();
        (b, relpath)
    }

    /// `cairn push` of `build_dir` through `cairn` (a Unix-socket or a TCP client).
    fn push(&self, mut cairn: Command, build_dir: &Path, run: &str) {
        let out = cairn
            .args([
                "push", "--stage", STAGE, "--family", FAMILY, "--run-id", run,
            ])
            .arg("--build-dir")
            .arg(build_dir)
            .arg("--checkout")
            .arg(&self.checkout.root)
            .output()
            .unwrap();
        assert_ok(&out);
    }

    /// Fetch back through a daemon with an empty store (so from storage), as a bootstrap (twice:
    /// the second run is incremental and reads the state file) and as a plain fetch, and check that
    /// `artifact` (the artifact dir as pushed) came back byte-exact.
    fn assert_fetched_back(&self, artifact: &Path, relpath: &str) {
        let fresh = Daemon::start(self.storage.clone()).unwrap();
        let dest = self.tmp.path().join("bootstrapped");
        for round in ["first", "incremental"] {
            let out = fresh
                .cairn()
                .args(["bootstrap", "--stage", BOOTSTRAP_STAGE])
                .args(["--family", BOOTSTRAP_FAMILY])
                .arg("--build-dir")
                .arg(&dest)
                .arg("--checkout")
                .arg(&self.checkout.root)
                .output()
                .unwrap();
            assert_ok(&out);
            // Bootstrap merges the stage dirs of several artifacts: every path of this one is there
            // with its bytes.
            let want = contents(&artifact.join(relpath));
            let got = contents(&dest.join(relpath));
            for (path, bytes) in &want {
                assert_eq!(
                    got.get(path),
                    Some(bytes),
                    "{round} bootstrap: `{}` differs or is missing",
                    path.escape_ascii()
                );
            }
            assert_strange_names(&dest.join(relpath));
        }
        let state = fs::read(dest.join(".cairn-state.json")).unwrap();
        let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
        let hex_key = |name: &[u8]| hex::encode([relpath.as_bytes(), b"/", name].concat());
        assert!(state["entries_hex"][hex_key(FILE)].is_object(), "{state}");
        assert_eq!(
            state["entries_hex"][hex_key(LINK)]["target_hex"],
            hex::encode(FILE),
            "{state}"
        );

        let out_dir = self.tmp.path().join("fetched");
        let out = fresh
            .cairn()
            .args(["fetch", "--stage", BOOTSTRAP_STAGE])
            .args(["--family", BOOTSTRAP_FAMILY])
            .arg("--output-dir")
            .arg(&out_dir)
            .arg("--checkout")
            .arg(&self.checkout.root)
            .output()
            .unwrap();
        assert_ok(&out);
        let fetched = out_dir.join("artifacts").join(ARTIFACT);
        assert!(
            contents(artifact) == contents(&fetched),
            "plain fetch: `{}` differs from the pushed `{}`",
            fetched.display(),
            artifact.display()
        );
        assert_strange_names(&fetched.join(relpath));
    }
}

/// The strange names are on disk byte-exact, and nothing below `dir` was renamed with U+FFFD.
fn assert_strange_names(dir: &Path) {
    let file = dir.join(OsStr::from_bytes(FILE));
    assert_eq!(fs::read(&file).unwrap(), b"bytes named in Latin-1");
    let link = fs::read_link(dir.join(OsStr::from_bytes(LINK))).unwrap();
    assert_eq!(link.as_os_str().as_bytes(), FILE);
    assert_eq!(
        fs::read(dir.join(OsStr::from_bytes(DIR)).join("inside.txt")).unwrap(),
        b"in"
    );
    let replacement = "\u{fffd}".as_bytes();
    for path in contents(dir).keys() {
        assert!(
            !path.windows(replacement.len()).any(|w| w == replacement),
            "`{}` was rewritten with U+FFFD",
            path.escape_ascii()
        );
    }
}

/// Every path below `dir` (symlinks not followed) as bytes relative to `dir`, with a file's bytes, a
/// symlink's target or nothing for a directory.
fn contents(dir: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = p.symlink_metadata().unwrap();
            let rel = p.strip_prefix(dir).unwrap().as_os_str().as_bytes().to_vec();
            let bytes = if meta.is_symlink() {
                fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()
            } else if meta.is_file() {
                fs::read(&p).unwrap()
            } else {
                stack.push(p);
                Vec::new()
            };
            out.insert(rel, bytes);
        }
    }
    out
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn local(tmp: &Path) -> Option<Storage> {
    Some(Storage::Local(tmp.join("storage")))
}

/// A fresh bucket on the S3 test server (moto); `None` (skip, loudly; a failure under CI) without one.
fn s3(tmp: &Path) -> Option<Storage> {
    crate::bootstrap::storage("s3", tmp)
}

/// TheRock's archive of an artifact dir, as CI writes it and `cairn push` publishes it unchanged:
/// the manifest first, then every member below the stage relpaths in path order, names and link
/// targets as the file system has them (the `tar` crate writes bytes on Unix; GNU long names when
/// needed), zstd-compressed.
fn ci_archive(artifact: &Path, out: &Path) {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder
        .append_path_with_name(
            artifact.join("artifact_manifest.txt"),
            "artifact_manifest.txt",
        )
        .unwrap();
    let manifest = fs::read_to_string(artifact.join("artifact_manifest.txt")).unwrap();
    for relpath in manifest.lines().filter(|l| !l.is_empty()) {
        let mut members: Vec<Vec<u8>> = contents(&artifact.join(relpath)).into_keys().collect();
        members.sort();
        for m in members {
            let name = [relpath.as_bytes(), b"/", &m].concat();
            builder
                .append_path_with_name(
                    artifact.join(OsStr::from_bytes(&name)),
                    OsStr::from_bytes(&name),
                )
                .unwrap();
        }
    }
    let tar = builder.into_inner().unwrap();
    fs::write(out, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
}

/// A CI's own `.tar.zst` (not written by Cairn) with a file, a directory and a symlink target that
/// are not UTF-8, published to S3 as it is by `cairn push`, is ingested from S3 by a fresh daemon and
/// bootstrapped and fetched with exactly those bytes.
#[test]
fn ci_archive_with_non_utf8_names_from_s3_is_fetched_byte_exact() {
    let Some(f) = Fixture::new(s3, Options::default()) else {
        return;
    };
    let (b, relpath) = f.build_dir();
    let artifacts = b.join("artifacts");
    // The artifact leaves the build dir as CI's archive; the dir is kept aside to compare with.
    let original = f.tmp.path().join(ARTIFACT);
    fs::rename(artifacts.join(ARTIFACT), &original).unwrap();
    ci_archive(&original, &artifacts.join(format!("{ARTIFACT}.tar.zst")));
    f.push(f.daemon.cairn(), &b, "7001");
    f.assert_fetched_back(&original, &relpath);
}

/// `cairn push` of a build dir (over the Unix socket: cairnd reads it and writes the archive) keeps
/// the strange names byte-exact in the archive it publishes.
#[test]
fn push_of_non_utf8_names_then_fetch_is_byte_exact() {
    let f = Fixture::new(local, Options::default()).unwrap();
    let (b, relpath) = f.build_dir();
    f.push(f.daemon.cairn(), &b, "7002");
    f.assert_fetched_back(&b.join("artifacts").join(ARTIFACT), &relpath);
}

/// The same over TCP: `cairn` reads the build dir and streams it (`PublishStream`), names as bytes.
#[test]
fn push_over_tcp_of_non_utf8_names_then_fetch_is_byte_exact() {
    let f = Fixture::new(
        local,
        Options {
            tcp: true,
            ..Options::default()
        },
    )
    .unwrap();
    let (b, relpath) = f.build_dir();
    f.push(f.daemon.cairn_tcp(), &b, "7003");
    f.assert_fetched_back(&b.join("artifacts").join(ARTIFACT), &relpath);
}
