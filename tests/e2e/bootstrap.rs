//! The product end to end: real `cairnd serve` and `cairn` processes over a real Unix socket, a
//! TheRock-shaped git checkout with real submodules, and storage in a local directory or a bucket on
//! the S3 test server (`CAIRN_TEST_S3_ENDPOINT`).
//!
//! Every test publishes two CI runs with `cairn push`: run 1001 builds everything; then one
//! submodule (`rocm-systems`) moves and run 1002 rebuilds only the artifacts whose fingerprints
//! changed. `cairn bootstrap --stage ml-libs` then needs archives from both runs.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn_fingerprint::{Blake3, Compression, Platform, Topology};
use cairn_testkit::checkout::{Checkout, git};
use cairn_testkit::ci;
use cairn_testkit::daemon::{Daemon, Options, Storage, scratch_dir};
use cairn_testkit::s3server::{S3Server, unique_bucket_name};
use cairn_testkit::storecheck::tar_extract;
use serde_json::Value;

pub(crate) const RUN1: &str = "1001";
pub(crate) const RUN2: &str = "1002";
pub(crate) const FAMILY: &str = "gfx94X-dcgpu";
const OTHER_FAMILY: &str = "gfx110X-all";
/// The stage bootstrapped: its inbound set spans both runs and holds target-specific archives.
pub(crate) const STAGE: &str = "ml-libs";
/// Bytes per generated lib/dev archive content (dbg: a quarter).
const ARTIFACT_BYTES: u64 = 24 << 10;

/// Two published runs and the daemon that published them.
pub(crate) struct World {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) checkout: Checkout,
    pub(crate) storage: Storage,
    pub(crate) daemon: Daemon,
    pub(crate) commit1: String,
    pub(crate) commit2: String,
    /// Upload caches of each run's build dirs (where `cairnd` wrote the archives it published).
    uploads: BTreeMap<String, Vec<PathBuf>>,
    /// Every fingerprint some run published.
    published: BTreeSet<Blake3>,
}

pub(crate) fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Storage for a test: a local directory, or a fresh bucket on the S3 test server (`None`: skip).
pub(crate) fn storage(kind: &str, tmp: &Path) -> Option<Storage> {
    if kind == "local" {
        return Some(Storage::Local(tmp.join("storage")));
    }
    // Skips loudly when no S3 test server is configured; fails under CI.
    let test = std::thread::current()
        .name()
        .unwrap_or("bootstrap")
        .to_string();
    let server = S3Server::from_env(&test)?;
    let bucket = unique_bucket_name("e2e-bootstrap");
    let endpoint = server.endpoint().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s3 = cairn_daemon::storage::S3Storage::connect(server.config(&bucket)).await;
        s3.client()
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap_or_else(|e| panic!("creating bucket `{bucket}` on {endpoint}: {e:?}"));
    });
    Some(Storage::S3 { endpoint, bucket })
}

impl World {
    /// Publish run 1 (everything) and run 2 (what a `rocm-systems` bump changed).
    pub(crate) fn publish_two_runs(kind: &str) -> Option<World> {
        let tmp = scratch_dir("e2e-bootstrap-").unwrap();
        let storage = storage(kind, tmp.path())?;
        let checkout = Checkout::create(&tmp.path().join("src"), ci::TOPOLOGY).unwrap();
        let daemon = Daemon::start(storage.clone()).unwrap();
        let mut world = World {
            commit1: checkout.head().unwrap(),
            commit2: String::new(),
            tmp,
            checkout,
            storage,
            daemon,
            uploads: BTreeMap::new(),
            published: BTreeSet::new(),
        };
        let jobs = [
            ("compiler-runtime", "generic"),
            ("math-libs", FAMILY),
            ("math-libs", OTHER_FAMILY),
        ];
        let mut before = BTreeMap::new();
        for (stage, family) in jobs {
            let fps = ci::produced_fingerprints(&world.checkout.root, stage, family).unwrap();
            world.push(RUN1, stage, family, &fps, None);
            before.insert((stage, family), fps);
        }
        world.commit2 = world
            .checkout
            .bump_submodule("rocm-systems", "fix a runtime bug")
            .unwrap();
        for (stage, family) in jobs {
            let fps = ci::produced_fingerprints(&world.checkout.root, stage, family).unwrap();
            let changed = ci::changed(&before[&(stage, family)], &fps);
            if stage == "compiler-runtime" {
                // The bump moves exactly the runtime artifacts; the rest is reused from run 1.
                assert_eq!(
                    changed,
                    BTreeSet::from(["core-hip".to_string(), "core-runtime".to_string()])
                );
            }
            if !changed.is_empty() {
                world.push(RUN2, stage, family, &fps, Some(&changed));
            }
        }
        Some(world)
    }

    /// Generate a job's build dir and `cairn push` it.
    fn push(
        &mut self,
        run: &str,
        stage: &str,
        family: &str,
        fps: &BTreeMap<String, Blake3>,
        only: Option<&BTreeSet<String>>,
    ) {
        let b = self
            .tmp
            .path()
            .join(format!("build-{run}-{stage}-{family}"));
        ci::write_build_dir(&b, family, fps, only, ARTIFACT_BYTES).unwrap();
        run_ok(
            self.daemon
                .cairn()
                .args([
                    "--quiet", "push", "--stage", stage, "--family", family, "--run-id", run,
                ])
                .arg("--build-dir")
                .arg(&b)
                .arg("--checkout")
                .arg(&self.checkout.root),
        );
        // The daemon writes nothing in the build dir: the published archives are read back from
        // storage into one directory per run.
        let published = self.tmp.path().join("published").join(run);
        self.copy_published(run, &published);
        let dirs = self.uploads.entry(run.to_string()).or_default();
        if !dirs.contains(&published) {
            dirs.push(published);
        }
        self.published.extend(
            fps.iter()
                .filter(|(n, _)| only.is_none_or(|o| o.contains(*n)))
                .map(|(_, fp)| *fp),
        );
    }

    /// Copy every archive run `run` published (`…/{run}-linux/*.tar.zst` in storage) into `to`.
    fn copy_published(&self, run: &str, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        let run_dir = format!("{run}-linux/");
        let wanted = |key: &str| key.contains(&run_dir) && key.ends_with(".tar.zst");
        match &self.storage {
            Storage::Local(root) => {
                let mut stack = vec![root.clone()];
                while let Some(dir) = stack.pop() {
                    for e in std::fs::read_dir(&dir).unwrap() {
                        let p = e.unwrap().path();
                        if p.is_dir() {
                            stack.push(p);
                        } else if wanted(&p.to_string_lossy()) {
                            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
                        }
                    }
                }
            }
            Storage::S3 { endpoint, bucket } => {
                use cairn_daemon::storage::Storage as _;
                let server = S3Server::from_env("bootstrap").expect("S3 storage needs the server");
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let s3 = cairn_daemon::storage::S3Storage::connect(
                        server.config_via(endpoint, bucket),
                    )
                    .await;
                    for obj in s3.list("", None).await.unwrap().objects {
                        if wanted(&obj.key) {
                            let bytes = s3.get_bytes(&obj.key).await.unwrap();
                            let name = obj.key.rsplit('/').next().unwrap();
                            std::fs::write(to.join(name), &bytes).unwrap();
                        }
                    }
                });
            }
        }
    }

    /// The local storage directory (local-storage worlds only).
    fn storage_root(&self) -> &Path {
        match &self.storage {
            Storage::Local(root) => root,
            Storage::S3 { .. } => panic!("not a local-storage world"),
        }
    }

    fn topology(&self) -> Topology {
        Topology::parse(ci::TOPOLOGY).unwrap()
    }

    /// The archive file a run published for `artifact` (read back from storage).
    fn archive(&self, run: &str, artifact: &str) -> PathBuf {
        self.uploads[run]
            .iter()
            .map(|d| d.join(format!("{artifact}.tar.zst")))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("run {run} published no `{artifact}`"))
    }

    /// Fingerprints of `stage`'s inbound artifacts at the checkout's HEAD.
    pub(crate) fn inbound_fingerprints(&self, stage: &str) -> BTreeMap<String, Blake3> {
        let topology = self.topology();
        let names: Vec<&str> = topology.inbound(stage).unwrap().into_iter().collect();
        cairn_fingerprint::Fingerprinter::new(
            &topology,
            &self.checkout.root,
            cairn_fingerprint::FingerprintConfig::default(),
        )
        .unwrap()
        .compute_some(&names, FAMILY, Platform::Linux)
        .unwrap()
    }

    /// The archives a bootstrap of `stage` must take at the checkout's current HEAD, with the run
    /// that built each: from run 2 if run 2 rebuilt the artifact, else from run 1.
    pub(crate) fn expected(
        &self,
        stage: &str,
        run2_has: &BTreeSet<String>,
    ) -> BTreeMap<String, String> {
        let topology = self.topology();
        let mut out = BTreeMap::new();
        for name in topology.inbound(stage).unwrap() {
            let fam = ci::archive_family(&topology, name, FAMILY).unwrap();
            for c in ci::COMPONENTS {
                let run = if run2_has.contains(name) { RUN2 } else { RUN1 };
                out.insert(format!("{name}_{c}_{fam}"), run.to_string());
            }
        }
        out
    }

    /// What `tar -x` of `archives` (archive → run) gives, extracted into one fresh directory, and
    /// the union of their manifests' relpaths.
    fn tar_tree(&self, archives: &BTreeMap<String, String>) -> (PathBuf, BTreeSet<String>) {
        let dir = tempfile::Builder::new()
            .prefix("tar-x-")
            .tempdir_in(self.tmp.path())
            .unwrap()
            .keep();
        let mut relpaths = BTreeSet::new();
        for (artifact, run) in archives {
            let archive = self.archive(run, artifact);
            let single = dir.join(".single").join(artifact);
            tar_extract(&archive, Compression::Zstd, &single);
            let manifest = std::fs::read_to_string(single.join("artifact_manifest.txt")).unwrap();
            relpaths.extend(
                manifest
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            );
            tar_extract(&archive, Compression::Zstd, &dir.join("merged"));
        }
        (dir.join("merged"), relpaths)
    }

    /// One `Resolve` of the bootstrapped stage, so the daemon's index knows the producer records.
    fn warm_resolution(&self, daemon: &Daemon) {
        let request = cairn_client::api::Request {
            stage: STAGE.into(),
            family: FAMILY.into(),
            platform: "linux".into(),
            artifacts: self
                .inbound_fingerprints(STAGE)
                .into_iter()
                .map(|(n, fp)| (n, Some(fp)))
                .collect(),
            exclude_components: vec![],
            policy: Default::default(),
        };
        let addr = cairn_client::connect::DaemonAddr::parse(&daemon.addr());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (resolved, runs) = rt.block_on(async {
            let mut client = cairn_client::connect::connect(&addr).await.unwrap();
            cairn_client::api::resolve(&mut client, &request)
                .await
                .unwrap()
        });
        assert!(
            resolved
                .iter()
                .all(|r| r.status == cairn_client::api::Status::Found)
        );
        assert_eq!(runs, [RUN1, RUN2]);
    }

    pub(crate) fn bootstrap(
        &self,
        daemon: &Daemon,
        dest: &Path,
        extra: &[&str],
    ) -> (Output, Option<Value>) {
        bootstrap_with(daemon.cairn(), &self.checkout.root, dest, extra)
    }
}

pub(crate) fn bootstrap_with(
    mut cmd: Command,
    checkout: &Path,
    dest: &Path,
    extra: &[&str],
) -> (Output, Option<Value>) {
    cmd.args(["--json", "bootstrap", "--stage", STAGE]);
    if !extra.contains(&"--amdgpu-families") {
        cmd.args(["--family", FAMILY]);
    }
    let out = cmd
        .arg("--build-dir")
        .arg(dest)
        .arg("--checkout")
        .arg(checkout)
        .args(extra)
        .output()
        .expect("cairn runs");
    let json = serde_json::from_slice(&out.stdout).ok();
    (out, json)
}

/// `cairn resolve` of the stage at `checkout`: plain output unless `json`.
fn resolve_with(mut cmd: Command, checkout: &Path, json: bool) -> (Output, Option<Value>) {
    if json {
        cmd.arg("--json");
    }
    let out = cmd
        .args([
            "resolve",
            "--stage",
            STAGE,
            "--family",
            FAMILY,
            "--checkout",
        ])
        .arg(checkout)
        .output()
        .expect("cairn runs");
    let doc = serde_json::from_slice(&out.stdout).ok();
    (out, doc)
}

#[track_caller]
pub(crate) fn expect_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
}

/// Every entry below `roots` of `dir`: path → `d`, `f {mode} {blake3}` or `l {target}`.
pub(crate) fn snapshot(dir: &Path, roots: &BTreeSet<String>) -> BTreeMap<String, String> {
    fn walk(base: &Path, rel: &str, out: &mut BTreeMap<String, String>) {
        let full = base.join(rel);
        let Ok(m) = std::fs::symlink_metadata(&full) else {
            return;
        };
        let desc = if m.file_type().is_symlink() {
            format!("l {}", std::fs::read_link(&full).unwrap().display())
        } else if m.is_dir() {
            let mut names: Vec<String> = std::fs::read_dir(&full)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for n in names {
                walk(base, &format!("{rel}/{n}"), out);
            }
            "d".to_string()
        } else {
            let bytes = std::fs::read(&full).unwrap();
            format!(
                "f {:o} {}",
                m.permissions().mode() & 0o777,
                Blake3::of(&bytes)
            )
        };
        out.insert(rel.to_string(), desc);
    }
    let mut out = BTreeMap::new();
    for r in roots {
        walk(dir, r, &mut out);
    }
    out
}

/// `(inode, mtime)` of every regular file below `roots`.
fn identities(dir: &Path, roots: &BTreeSet<String>) -> BTreeMap<String, (u64, i64, i64)> {
    snapshot(dir, roots)
        .into_iter()
        .filter(|(_, d)| d.starts_with('f'))
        .map(|(p, _)| {
            let m = std::fs::symlink_metadata(dir.join(&p)).unwrap();
            (p, (m.ino(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

/// The `.prebuilt` markers in a build dir, as relpaths (`a/b/stage.prebuilt` → `a/b/stage`).
pub(crate) fn markers(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            } else if let Some(rel) = p
                .strip_prefix(base)
                .unwrap()
                .to_str()
                .and_then(|s| s.strip_suffix(".prebuilt"))
            {
                assert_eq!(
                    e.metadata().unwrap().len(),
                    0,
                    "marker `{}` is not empty",
                    p.display()
                );
                out.insert(rel.to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// Archive → run id of the FOUND entries of a bootstrap's JSON.
fn found_runs(json: &Value) -> BTreeMap<String, String> {
    json["resolved"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "found")
        .map(|r| {
            (
                r["artifact"].as_str().unwrap().to_string(),
                r["producer"]["run_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Assert `dest` is exactly the bootstrap of `expected`: content equals `tar -x`, one `.prebuilt`
/// marker per manifest relpath and no other, nothing else at the top but the state file.
#[track_caller]
pub(crate) fn assert_bootstrap_tree(
    world: &World,
    dest: &Path,
    expected: &BTreeMap<String, String>,
) {
    let (tar_dir, relpaths) = world.tar_tree(expected);
    assert_eq!(
        snapshot(dest, &relpaths),
        snapshot(&tar_dir, &relpaths),
        "bootstrap tree differs from tar -x of the chosen archives"
    );
    assert_eq!(
        markers(dest),
        relpaths,
        ".prebuilt markers must match the manifest relpaths"
    );
    let top_expected: BTreeSet<String> = relpaths
        .iter()
        .map(|r| r.split('/').next().unwrap().to_string())
        .chain([cairn_client::materialize::STATE_FILE.to_string()])
        .collect();
    let top: BTreeSet<String> = std::fs::read_dir(dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        top, top_expected,
        "unexpected entries at the top of the build dir"
    );
}

/// Resolution across two runs, the tree against `tar -x`, markers, then a warm bootstrap into a
/// fresh directory that downloads nothing.
fn two_runs_resolve_materialize_and_warm(kind: &str) {
    let Some(world) = World::publish_two_runs(kind) else {
        return;
    };
    // A fresh daemon over the same storage: everything comes from storage once.
    let daemon = Daemon::start(world.storage.clone()).unwrap();
    let run2_has: BTreeSet<String> = ["core-hip", "core-runtime", "blas", "rand"]
        .map(String::from)
        .into();
    let expected = world.expected(STAGE, &run2_has);

    // `cairn resolve` gives the same choice and downloads nothing (the cold bootstrap below still
    // takes every archive from storage).
    let (out, json) = resolve_with(daemon.cairn(), &world.checkout.root, true);
    expect_code(&out, 0);
    let json = json.expect("resolve --json prints one document");
    assert_eq!(json["command"], "resolve");
    assert_eq!(found_runs(&json), expected);
    assert!(json["missing"].as_array().unwrap().is_empty());
    assert_eq!(json["runs"], serde_json::json!([RUN1, RUN2]));
    let (out, _) = resolve_with(daemon.cairn(), &world.checkout.root, false);
    expect_code(&out, 0);
    let lines = String::from_utf8(out.stdout).unwrap();
    assert_eq!(lines.lines().count(), expected.len(), "{lines}");
    for (archive, run) in &expected {
        assert!(
            lines.contains(&format!("FOUND\t{archive}\trun {run}\t")),
            "{archive} from run {run}: {lines}"
        );
    }

    let cold = world.tmp.path().join("cold");
    let (out, json) = world.bootstrap(&daemon, &cold, &[]);
    expect_code(&out, 0);
    let json = json.expect("--json prints one document");
    assert_eq!(
        found_runs(&json),
        expected,
        "each archive must come from the run that built it"
    );
    assert!(json["missing"].as_array().unwrap().is_empty());
    // The other family's archives of the same artifacts were not taken.
    assert!(!found_runs(&json).keys().any(|a| a.ends_with(OTHER_FAMILY)));
    let summary = &json["summary"];
    assert_eq!(summary["artifacts"], expected.len());
    assert_eq!(summary["from_storage"], expected.len());
    assert_eq!(summary["runs"], serde_json::json!([RUN1, RUN2]));
    // Cold, into a fresh directory: the client copied blobs while the daemon was downloading and
    // moved those copies into place (with the right content and modes: the tree check below).
    assert!(
        summary["files_prestaged"].as_u64().unwrap() > 0,
        "a cold bootstrap into a fresh directory prestages: {summary}"
    );
    assert!(!cold.join(".cairn-prestage").exists());
    assert_bootstrap_tree(&world, &cold, &expected);
    let text = stderr(&out);
    assert!(
        text.contains("runs: 1001, 1002"),
        "summary on stderr: {text}"
    );

    // Warm: a fresh directory, zero storage downloads.
    let before = daemon.stats().unwrap();
    let warm = world.tmp.path().join("warm");
    let (out, json) = world.bootstrap(&daemon, &warm, &[]);
    expect_code(&out, 0);
    let after = daemon.stats().unwrap();
    assert_eq!(
        after.storage_gets, before.storage_gets,
        "warm bootstrap must not touch storage"
    );
    assert_eq!(after.storage_bytes, before.storage_bytes);
    let json = json.unwrap();
    assert_eq!(json["summary"]["from_storage"], 0);
    assert_eq!(json["summary"]["from_cas"], expected.len());
    assert_eq!(
        json["summary"]["files_prestaged"], 0,
        "nothing to overlap when warm"
    );
    assert_bootstrap_tree(&world, &warm, &expected);
}

#[test]
fn two_runs_resolve_materialize_and_warm_local() {
    two_runs_resolve_materialize_and_warm("local");
}

#[test]
fn two_runs_resolve_materialize_and_warm_s3() {
    two_runs_resolve_materialize_and_warm("s3");
}

/// 8 clients at once on a cold daemon: each storage object is downloaded once (one GET and its
/// bytes per archive, from the daemon's storage counters), and all 8 trees are right.
fn eight_concurrent_clients(kind: &str) {
    let Some(world) = World::publish_two_runs(kind) else {
        return;
    };
    let run2_has: BTreeSet<String> = ["core-hip", "core-runtime", "blas", "rand"]
        .map(String::from)
        .into();
    let expected = world.expected(STAGE, &run2_has);

    // Resolution is warmed by one `Resolve` first: producer-record reads are not single-flight in
    // the daemon (concurrent resolves of one fingerprint each read its records until the index has
    // them), so only archive downloads are compared. Every archive here is smaller than one
    // download chunk: one GET per object.
    let daemon = Daemon::start(world.storage.clone()).unwrap();
    world.warm_resolution(&daemon);
    let before = daemon.stats().unwrap();
    let dests: Vec<PathBuf> = (0..8)
        .map(|i| world.tmp.path().join(format!("concurrent-{i}")))
        .collect();
    let children: Vec<_> = dests
        .iter()
        .map(|d| {
            daemon
                .cairn()
                .args(["--quiet", "bootstrap", "--stage", STAGE, "--family", FAMILY])
                .arg("--build-dir")
                .arg(d)
                .arg("--checkout")
                .arg(&world.checkout.root)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        expect_code(&out, 0);
    }
    let stats = daemon.stats().unwrap();
    let n = expected.len() as u64;
    assert_eq!(
        stats.misses, n,
        "each archive is downloaded by one request; the others wait and hit the CAS"
    );
    assert_eq!(stats.hits + stats.misses, 8 * n);
    assert_eq!(
        stats.storage_gets - before.storage_gets,
        n,
        "one GET per storage object for 8 concurrent clients"
    );
    let archive_bytes: u64 = expected
        .iter()
        .map(|(a, run)| std::fs::metadata(world.archive(run, a)).unwrap().len())
        .sum();
    assert_eq!(stats.storage_bytes - before.storage_bytes, archive_bytes);
    for d in &dests {
        assert_bootstrap_tree(&world, d, &expected);
    }
}

#[test]
fn eight_concurrent_clients_local() {
    eight_concurrent_clients("local");
}

#[test]
fn eight_concurrent_clients_s3() {
    eight_concurrent_clients("s3");
}

/// An artifact whose fingerprint no run published is MISSING (exit 1, listed with the daemon's
/// explanation), never replaced by an older build; everything else is still materialized.
#[test]
fn missing_fingerprint_is_reported_never_substituted() {
    let world = World::publish_two_runs("local").unwrap();
    world
        .checkout
        .bump_submodule("llvm-project", "an unpublished compiler change")
        .unwrap();
    let fps = world.inbound_fingerprints(STAGE);
    let missing: BTreeSet<String> = fps
        .iter()
        .filter(|(_, fp)| !world.published.contains(fp))
        .map(|(n, _)| n.clone())
        .collect();
    assert!(
        missing.contains("amd-llvm") && missing.len() < fps.len(),
        "{missing:?}"
    );

    // `cairn resolve` already tells: exit 1, the same artifacts missing, with explanations.
    let (out, json) = resolve_with(world.daemon.cairn(), &world.checkout.root, true);
    expect_code(&out, 1);
    let resolved_missing: BTreeSet<String> = json.expect("resolve --json")["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(resolved_missing, missing);
    let (out, _) = resolve_with(world.daemon.cairn(), &world.checkout.root, false);
    expect_code(&out, 1);
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .any(|l| l.starts_with("MISSING\tamd-llvm\tno eligible producer")
                && l.matches("MISSING").count() == 1),
        "plain output lists amd-llvm missing, saying MISSING once"
    );

    let dest = world.tmp.path().join("partial");
    let (out, json) = world.bootstrap(&world.daemon, &dest, &[]);
    expect_code(&out, 1);
    let json = json.expect("--json still prints its document");
    let reported: BTreeSet<String> = json["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert!(!m["explanation"].as_array().unwrap().is_empty(), "{m}");
            m["name"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(reported, missing);
    let found = found_runs(&json);
    assert!(
        found
            .keys()
            .all(|a| !missing.contains(a.split('_').next().unwrap()))
    );
    let text = stderr(&out);
    assert!(text.contains("missing: `amd-llvm`"), "{text}");
    // What was found is in place; nothing stands in for the missing artifacts.
    assert_bootstrap_tree(&world, &dest, &found);
    let topology = world.topology();
    for name in &missing {
        let group = &topology.artifact(name).unwrap().artifact_group;
        assert!(
            !dest.join(group).join(name).exists(),
            "`{name}` was substituted"
        );
    }

    // The bootstrap's "no producer" came from cairnd's cache (resolve asked storage first): it says
    // so, and for how long; `--refresh` asks storage again.
    let llvm = json["missing"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "amd-llvm")
        .unwrap()
        .clone();
    let lines: Vec<&str> = llvm["explanation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("cached answer from")
            && l.contains("storage is asked again after")
            && l.contains("--refresh")),
        "{lines:?}"
    );
    let (out, json) = world.bootstrap(&world.daemon, &dest, &["--refresh"]);
    expect_code(&out, 1);
    let explained = json.unwrap()["missing"].to_string();
    assert!(
        !explained.contains("cached answer"),
        "--refresh asks storage: {explained}"
    );

    // A run id with no archives at all says so first, rather than only "no eligible producer".
    let (out, json) = world.bootstrap(
        &world.daemon,
        &world.tmp.path().join("no-such-run"),
        &["--run-id", "777777"],
    );
    expect_code(&out, 1);
    let json = json.unwrap();
    let first = json["missing"][0]["explanation"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        first.starts_with("run 777777 of ROCm/TheRock (linux) has no archives under")
            && first.contains("--run-github-repo"),
        "{first}"
    );
}

/// Re-bootstrapping a build dir after some artifacts changed rewrites only their files: every other
/// file keeps its inode and mtime.
#[test]
fn incremental_rebootstrap_rewrites_only_changed_artifacts() {
    let world = World::publish_two_runs("local").unwrap();
    let dest = world.tmp.path().join("build");
    let (out, json) = world.bootstrap(&world.daemon, &dest, &[]);
    expect_code(&out, 0);
    let first = json.unwrap();

    // Back to commit 1: the runtime artifacts (and the math libraries built on them) change.
    git(&world.checkout.root, &["checkout", "-q", &world.commit1]).unwrap();
    git(&world.checkout.root, &["submodule", "update", "-q"]).unwrap();
    let topology = world.topology();
    let changed: BTreeSet<String> = ["core-hip", "core-runtime", "blas", "rand"]
        .map(String::from)
        .into();
    let relpath = |name: &str| {
        format!(
            "{}/{name}/stage",
            topology.artifact(name).unwrap().artifact_group
        )
    };
    let unchanged_roots: BTreeSet<String> = topology
        .inbound(STAGE)
        .unwrap()
        .into_iter()
        .filter(|n| !changed.contains(*n))
        .map(relpath)
        .collect();
    let changed_roots: BTreeSet<String> = changed.iter().map(|n| relpath(n)).collect();
    let kept_before = identities(&dest, &unchanged_roots);
    let changed_before = identities(&dest, &changed_roots);
    assert!(!kept_before.is_empty() && !changed_before.is_empty());
    // Copies a client killed mid-prestage left behind: an incremental run (which does not
    // prestage) removes them too.
    std::fs::create_dir_all(dest.join(".cairn-prestage")).unwrap();
    std::fs::write(dest.join(".cairn-prestage/leftover"), b"x").unwrap();

    let (out, json) = world.bootstrap(&world.daemon, &dest, &[]);
    expect_code(&out, 0);
    assert!(!dest.join(".cairn-prestage").exists());
    let json = json.unwrap();
    let expected = world.expected(STAGE, &BTreeSet::new());
    assert_eq!(
        found_runs(&json),
        expected,
        "at commit 1 everything comes from run 1"
    );
    assert_bootstrap_tree(&world, &dest, &expected);
    assert_eq!(
        identities(&dest, &unchanged_roots),
        kept_before,
        "unchanged artifacts were rewritten"
    );
    let changed_files = identities(&dest, &changed_roots).len() as u64;
    let summary = &json["summary"];
    let written = summary["files_written"].as_u64().unwrap();
    assert!(
        written > 0 && written <= changed_files,
        "{written} files written, {changed_files} in the changed artifacts"
    );
    assert_eq!(
        summary["files_unchanged"].as_u64().unwrap() + written,
        summary["files"].as_u64().unwrap(),
        "every file is either rewritten or proven unchanged"
    );
    assert!(summary["files_unchanged"].as_u64().unwrap() >= kept_before.len() as u64);
    assert!(first["summary"]["files_written"].as_u64().unwrap() > 0);
}

/// A daemon killed while a fetch waits on storage: the client fails with a clear error (exit 2);
/// a restarted daemon on the same store serves the same bootstrap correctly.
#[test]
fn killed_daemon_fails_the_fetch_clearly_and_a_restart_serves() {
    let world = World::publish_two_runs("local").unwrap();
    let Storage::Local(storage_dir) = world.storage.clone() else {
        unreachable!()
    };
    // Replace one archive object by a FIFO: a fresh daemon's download of it blocks in `open` until
    // it is killed, so the kill lands mid-fetch, deterministically.
    let object = find_file(&storage_dir, "amd-llvm_lib_generic.tar.zst");
    let saved = world.tmp.path().join("saved-object");
    std::fs::rename(&object, &saved).unwrap();
    let status = Command::new("mkfifo").arg(&object).status().unwrap();
    assert!(status.success());

    let mut daemon = Daemon::start(world.storage.clone()).unwrap();
    let dest = world.tmp.path().join("interrupted");
    let child = daemon
        .cairn()
        .args(["bootstrap", "--stage", STAGE, "--family", FAMILY])
        .arg("--build-dir")
        .arg(&dest)
        .arg("--checkout")
        .arg(&world.checkout.root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (by observation, not by time) until the download is stuck on the FIFO.
    while daemon.stats().unwrap().in_flight == 0 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    daemon.kill();
    let out = child.wait_with_output().unwrap();
    expect_code(&out, 2);
    let text = stderr(&out);
    assert!(
        text.contains("cairn: error: cairnd at") && text.contains("went away"),
        "the client must say the daemon went away: {text}"
    );
    assert!(text.contains("`Fetch`"), "{text}");

    std::fs::remove_file(&object).unwrap();
    std::fs::rename(&saved, &object).unwrap();
    daemon.restart().unwrap();
    let (out, json) = world.bootstrap(&daemon, &dest, &[]);
    expect_code(&out, 0);
    let run2_has: BTreeSet<String> = ["core-hip", "core-runtime", "blas", "rand"]
        .map(String::from)
        .into();
    let expected = world.expected(STAGE, &run2_has);
    assert_eq!(found_runs(&json.unwrap()), expected);
    assert_bootstrap_tree(&world, &dest, &expected);
}

/// A remote client (TCP): blobs stream as bytes, are verified and spooled under the destination,
/// and the result is the same tree; the spool is gone afterwards.
#[test]
fn remote_client_streams_blobs_into_the_same_tree() {
    let world = World::publish_two_runs("local").unwrap();
    let daemon = Daemon::start_with(
        world.storage.clone(),
        Options {
            tcp: true,
            ..Options::default()
        },
    )
    .unwrap();
    let dest = world.tmp.path().join("remote");
    let (out, json) = bootstrap_with(daemon.cairn_tcp(), &world.checkout.root, &dest, &[]);
    expect_code(&out, 0);
    let json = json.unwrap();
    let run2_has: BTreeSet<String> = ["core-hip", "core-runtime", "blas", "rand"]
        .map(String::from)
        .into();
    let expected = world.expected(STAGE, &run2_has);
    assert_eq!(found_runs(&json), expected);
    assert!(json["summary"]["received_bytes"].as_u64().unwrap() > 0);
    assert!(!dest.join(cairn_client::fetch::SPOOL_DIR).exists());
    assert_bootstrap_tree(&world, &dest, &expected);

    // Incremental over the network: nothing changed, so no blob is kept.
    let (out, json) = bootstrap_with(daemon.cairn_tcp(), &world.checkout.root, &dest, &[]);
    expect_code(&out, 0);
    let summary = &json.unwrap()["summary"];
    assert_eq!(summary["files_written"], 0);
    assert_eq!(summary["received_bytes"], 0);
}

/// Plain `fetch` extracts each archive to `O/artifacts/{archive}/`, like `tar -x` into that dir;
/// `--exclude-components dbg` and `--exclude-artifacts sysdeps` leave those archives out; `status` reports the daemon; `import`
/// lists a run's archives (exit 1 for a run that has none); `gc` evicts down to a quota.
#[test]
fn fetch_plain_layout_with_excluded_components_and_status() {
    let world = World::publish_two_runs("local").unwrap();
    let out_dir = world.tmp.path().join("out");
    let out = world
        .daemon
        .cairn()
        .args(["--json", "fetch", "--stage", STAGE, "--family", FAMILY])
        .args([
            "--exclude-components",
            "dbg",
            "--exclude-artifacts",
            "sysdeps",
        ])
        .arg("--output-dir")
        .arg(&out_dir)
        .arg("--checkout")
        .arg(&world.checkout.root)
        .output()
        .unwrap();
    expect_code(&out, 0);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run2_has: BTreeSet<String> = ["core-hip", "core-runtime", "blas", "rand"]
        .map(String::from)
        .into();
    let expected: BTreeMap<String, String> = world
        .expected(STAGE, &run2_has)
        .into_iter()
        .filter(|(a, _)| !a.contains("_dbg_") && !a.starts_with("sysdeps_"))
        .collect();
    assert_eq!(found_runs(&json), expected);
    for (artifact, run) in &expected {
        let tar_dir = world.tmp.path().join("plain-tar").join(artifact);
        tar_extract(&world.archive(run, artifact), Compression::Zstd, &tar_dir);
        let root: BTreeSet<String> = [".".to_string()].into();
        assert_eq!(
            snapshot(&out_dir.join("artifacts").join(artifact), &root),
            snapshot(&tar_dir, &root),
            "`{artifact}` differs from tar -x"
        );
    }
    let dirs: BTreeSet<String> = std::fs::read_dir(out_dir.join("artifacts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs, expected.keys().cloned().collect());

    let out = run_ok(world.daemon.cairn().args(["--json", "status"]));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["daemon"], world.daemon.addr());
    assert!(status["blobs"].as_u64().unwrap() > 0);
    assert!(status["fetch_requests"].as_u64().unwrap() >= 1);

    let out = run_ok(world.daemon.cairn().args([
        "--json",
        "import",
        "--run-id",
        RUN1,
        "--platform",
        "linux",
    ]));
    let imported: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run1_archives = world.uploads[RUN1]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tar.zst")
        })
        .count();
    assert_eq!(
        imported["archives"].as_array().unwrap().len(),
        run1_archives
    );
    let out = world
        .daemon
        .cairn()
        .args(["import", "--run-id", "424242", "--platform", "linux"])
        .output()
        .unwrap();
    expect_code(&out, 1);

    let out = run_ok(
        world
            .daemon
            .cairn()
            .args(["--json", "gc", "--max-bytes", "1K"]),
    );
    let gc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(gc["evicted_blobs"].as_u64().unwrap() > 0, "{gc}");
    assert!(gc["store_bytes"].as_u64().unwrap() <= 1024, "{gc}");
}

/// With no daemon, every online command fails with exit 2 and says how to start one.
#[test]
fn unreachable_daemon_is_a_clear_error_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("nobody.sock");
    let out = cairn_testkit::daemon::cairn_command(&socket.display().to_string())
        .arg("status")
        .output()
        .unwrap();
    expect_code(&out, 2);
    let text = stderr(&out);
    assert!(
        text.starts_with("cairn: error: cairnd is not reachable at"),
        "{text}"
    );
    assert!(text.contains("cairnd serve"), "{text}");
}

fn find_file(dir: &Path, name: &str) -> PathBuf {
    fn walk(dir: &Path, name: &str) -> Option<PathBuf> {
        for e in std::fs::read_dir(dir).ok()? {
            let p = e.ok()?.path();
            if p.is_dir() {
                if let Some(f) = walk(&p, name) {
                    return Some(f);
                }
            } else if p.ends_with(name) {
                return Some(p);
            }
        }
        None
    }
    walk(dir, name).unwrap_or_else(|| panic!("`{name}` not found under `{}`", dir.display()))
}

/// `--amdgpu-families "a;b"`: one request per family, each family's target-specific archives,
/// shared `generic` archives once; counts are per materialized archive.
#[test]
fn several_families_in_one_bootstrap() {
    let world = World::publish_two_runs("local").unwrap();
    let daemon = Daemon::start(world.storage.clone()).unwrap();
    let dest = world.tmp.path().join("both");
    let (out, json) = bootstrap_with(
        daemon.cairn(),
        &world.checkout.root,
        &dest,
        &["--amdgpu-families", &format!("{FAMILY};{OTHER_FAMILY}")],
    );
    expect_code(&out, 0);
    let json = json.unwrap();
    let found = found_runs(&json);
    let topology = world.topology();
    let mut expected = BTreeSet::new();
    for name in topology.inbound(STAGE).unwrap() {
        for family in [FAMILY, OTHER_FAMILY] {
            let fam = ci::archive_family(&topology, name, family).unwrap();
            for c in ci::COMPONENTS {
                expected.insert(format!("{name}_{c}_{fam}"));
            }
        }
    }
    assert_eq!(found.keys().cloned().collect::<BTreeSet<_>>(), expected);
    let summary = &json["summary"];
    assert_eq!(summary["artifacts"], expected.len());
    assert_eq!(summary["from_storage"], expected.len());
    assert_eq!(summary["from_cas"], 0);
    assert_eq!(json["families"], serde_json::json!([FAMILY, OTHER_FAMILY]));
}

/// SIGKILL of the client at random points of materialization (a warm bootstrap: the time goes into
/// writing the tree): the daemon keeps serving, and a rerun into the same directory gives exactly the
/// tree `tar -x` gives. Kill points are seeded (`Rng::new(7)`).
#[test]
fn killed_client_mid_materialization_then_rerun_gives_the_exact_tree() {
    use std::time::{Duration, Instant};
    let world = World::publish_two_runs("local").unwrap();
    let daemon = Daemon::start(world.storage.clone()).unwrap();
    let run2_has: BTreeSet<String> = ["core-hip", "core-runtime", "blas", "rand"]
        .map(String::from)
        .into();
    let expected = world.expected(STAGE, &run2_has);
    // Warm the daemon, then measure one warm materialization.
    let (out, _) = world.bootstrap(&daemon, &world.tmp.path().join("cold"), &[]);
    expect_code(&out, 0);
    let started = Instant::now();
    let (out, _) = world.bootstrap(&daemon, &world.tmp.path().join("measure"), &[]);
    expect_code(&out, 0);
    let full = started.elapsed();

    let dest = world.tmp.path().join("killed");
    let mut rng = cairn_testkit::datagen::Rng::new(7);
    for _ in 0..4 {
        let mut child = daemon
            .cairn()
            .args(["--json", "bootstrap", "--stage", STAGE, "--family", FAMILY])
            .arg("--build-dir")
            .arg(&dest)
            .arg("--checkout")
            .arg(&world.checkout.root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(
            rng.range(0, full.as_micros() as u64 + 1),
        ));
        let _ = child.kill();
        let _ = child.wait();
        daemon.stats().expect("the daemon keeps serving");
    }
    let (out, _) = world.bootstrap(&daemon, &dest, &[]);
    expect_code(&out, 0);
    assert_bootstrap_tree(&world, &dest, &expected);
}

/// Jobs of one run publish at once (four families of `ml-libs` in parallel): the run's `index.html`
/// ends up listing every job's archives, none lost to a concurrent rewrite.
#[test]
fn concurrent_jobs_of_one_run_all_reach_its_index_page() {
    let Some(world) = World::publish_two_runs("local") else {
        return;
    };
    let families = ["gfx94X-dcgpu", "gfx110X-all", "gfx1151", "gfx120X-all"];
    let outputs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = families
            .iter()
            .map(|family| {
                let world = &world;
                s.spawn(move || {
                    let fps =
                        ci::produced_fingerprints(&world.checkout.root, STAGE, family).unwrap();
                    let b = world.tmp.path().join(format!("par-{family}"));
                    ci::write_build_dir(&b, family, &fps, None, ARTIFACT_BYTES).unwrap();
                    world
                        .daemon
                        .cairn()
                        .args([
                            "--quiet", "push", "--stage", STAGE, "--family", family, "--run-id",
                            "1010",
                        ])
                        .arg("--build-dir")
                        .arg(&b)
                        .arg("--checkout")
                        .arg(&world.checkout.root)
                        .output()
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outputs {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let page =
        std::fs::read_to_string(find_file(world.storage_root(), "1010-linux/index.html")).unwrap();
    for family in families {
        assert!(
            page.contains(&format!("miopen_lib_{family}.tar.zst</a>")),
            "{family} missing from the index:\n{page}"
        );
    }
}

/// Recorded reuse: a job that bootstrapped its inbound artifacts with Cairn and pushes what it built
/// records every inbound archive it used, `built_here: false` with the run that built it, without
/// uploading it again; its run then diffs as carrying those archives forward (unchanged), not as
/// having removed them.
#[test]
fn push_records_the_bootstrapped_inbound_archives_as_reused() {
    let Some(world) = World::publish_two_runs("local") else {
        return;
    };
    let run2_has: BTreeSet<String> = ["core-hip", "core-runtime", "blas", "rand"]
        .map(String::from)
        .into();
    let expected = world.expected(STAGE, &run2_has);
    let job = world.tmp.path().join("job-1003");
    let (out, _) = world.bootstrap(&world.daemon, &job, &[]);
    expect_code(&out, 0);
    let fps = ci::produced_fingerprints(&world.checkout.root, STAGE, FAMILY).unwrap();
    ci::write_build_dir(&job, FAMILY, &fps, None, ARTIFACT_BYTES).unwrap();
    let out = run_ok(
        world
            .daemon
            .cairn()
            .args([
                "--json", "push", "--stage", STAGE, "--family", FAMILY, "--run-id", "1003",
            ])
            .arg("--build-dir")
            .arg(&job)
            .arg("--checkout")
            .arg(&world.checkout.root),
    );
    let pushed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let archives = pushed["archives"].as_array().unwrap();
    let reused: BTreeMap<String, String> = archives
        .iter()
        .filter(|a| a["built_here"] == false)
        .map(|a| {
            (
                a["artifact"].as_str().unwrap().to_string(),
                a["reused_from_run_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected_reuse: BTreeMap<String, String> = expected
        .iter()
        .map(|(archive, run)| {
            (
                archive.trim_end_matches(".tar.zst").to_string(),
                run.clone(),
            )
        })
        .collect();
    assert_eq!(
        reused, expected_reuse,
        "every inbound archive, with its builder"
    );
    for a in archives.iter().filter(|a| a["built_here"] == false) {
        let key = a["key"].as_str().unwrap();
        assert!(
            !key.contains("1003-linux/"),
            "a reused archive points at its builder's copy, not a new upload: {key}"
        );
    }
    assert!(
        archives.iter().any(|a| a["built_here"] == true),
        "what the job built is uploaded as before"
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("reused archive(s) recorded, not uploaded"),
        "{text}"
    );

    // The diff of run 1002 (which built core-hip, core-runtime, blas, rand) and run 1003 (which
    // reused them): carried forward, so unchanged.
    let out = run_ok(
        world
            .daemon
            .cairn()
            .current_dir(&world.checkout.root)
            .args(["--json", "diff", RUN2, "1003", "--platform", "linux"]),
    );
    let diff: Value = serde_json::from_slice(&out.stdout).unwrap();
    let status: BTreeMap<String, String> = diff["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["artifact"].as_str().unwrap().to_string(),
                a["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (archive, run) in &expected_reuse {
        if run == RUN2 {
            assert_eq!(status[archive], "unchanged", "{archive}: {status:?}");
        }
    }

    // The run's index page lists what the job built and what it reused, with the builder.
    let page = std::fs::read_to_string(find_file(world.storage_root(), "1003-linux/index.html"))
        .expect("push writes the run's index.html");
    for (archive, run) in &expected_reuse {
        assert!(
            page.contains(&format!("{archive}.tar.zst</a>")),
            "{archive}: {page}"
        );
        assert!(page.contains(&format!("<td>run {run}</td>")), "{page}");
    }
    assert!(page.contains("miopen_"), "{page}");

    // `--stage` keeps what the stage builds; `--checkout` names where revisions are resolved.
    let out = run_ok(world.daemon.cairn().args([
        "--json",
        "diff",
        RUN2,
        "1003",
        "--platform",
        "linux",
        "--stage",
        STAGE,
        "--checkout",
        world.checkout.root.to_str().unwrap(),
    ]));
    let diff: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = diff["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["artifact"].as_str().unwrap())
        .collect();
    assert!(!names.is_empty());
    assert!(names.iter().all(|n| n.starts_with("miopen_")), "{names:?}");
}

/// `--run-github-repo` (TheRock's flag): a run of another repository lives under its own prefix
/// (`ROCm-rocm-libraries/3002-linux/`, published without Cairn). `fetch --run-id 3002
/// --run-github-repo ROCm/rocm-libraries` takes its archives; without the flag, run 3002 of TheRock
/// has none and the exact producers are taken instead.
#[test]
fn run_github_repo_pins_a_run_of_another_repository() {
    use cairn_fingerprint::layout::{RunOutputRoot, RunSpec};
    let Some(world) = World::publish_two_runs("local") else {
        return;
    };
    let mut spec = RunSpec::new("3002", cairn_fingerprint::Platform::Linux);
    spec.repo = "ROCm/rocm-libraries".parse().unwrap();
    let prefix = RunOutputRoot::from_run(&spec).unwrap().prefix();
    assert!(prefix.starts_with("ROCm-rocm-libraries/"), "{prefix}");
    // TheRock's CI for rocm-libraries uploaded run 1001's archives and sidecars, nothing of Cairn.
    let from = world.storage_root().join("1001-linux");
    let to = world.storage_root().join(&prefix);
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(&from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
    let fetch = |extra: &[&str]| -> Value {
        let out_dir = world.tmp.path().join(format!("o-{}", extra.len()));
        let out = world
            .daemon
            .cairn()
            .args([
                "--json", "fetch", "--stage", STAGE, "--family", FAMILY, "--run-id", "3002",
            ])
            .args(extra)
            .arg("--output-dir")
            .arg(&out_dir)
            .arg("--checkout")
            .arg(&world.checkout.root)
            .output()
            .unwrap();
        expect_code(&out, 0);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let pinned = found_runs(&fetch(&["--run-github-repo", "ROCm/rocm-libraries"]));
    assert!(!pinned.is_empty());
    assert!(
        pinned.values().all(|r| r == "3002"),
        "every archive from rocm-libraries run 3002: {pinned:?}"
    );
    let default = found_runs(&fetch(&[]));
    assert!(
        default.values().all(|r| r != "3002"),
        "TheRock's run 3002 has no archives: {default:?}"
    );
}

/// Messages that say what to do: `gc` without a quota names `--max-bytes`; a checkout without a
/// topology names `--checkout` and `--topology`.
#[test]
fn errors_name_the_flag_that_fixes_them() {
    let tmp = scratch_dir("e2e-messages-").unwrap();
    let daemon = Daemon::start(Storage::Local(tmp.path().join("storage"))).unwrap();
    let out = daemon.cairn().arg("gc").output().unwrap();
    expect_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("pass `cairn gc --max-bytes SIZE`")
            && err.contains("cairnd serve --max-bytes"),
        "{err}"
    );

    let empty = tmp.path().join("not-therock");
    std::fs::create_dir_all(&empty).unwrap();
    let git = std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(&empty)
        .status()
        .unwrap();
    assert!(git.success());
    let out = daemon
        .cairn()
        .args([
            "bootstrap",
            "--stage",
            STAGE,
            "--family",
            FAMILY,
            "--build-dir",
        ])
        .arg(tmp.path().join("b"))
        .arg("--checkout")
        .arg(&empty)
        .output()
        .unwrap();
    expect_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("cannot read topology")
            && err.contains("--checkout DIR")
            && err.contains("--topology FILE"),
        "{err}"
    );
}

/// TheRock's `fetch --stage all --generic-only`: every artifact of the topology, generic archives only.
#[test]
fn fetch_stage_all_generic_only_takes_every_generic_archive() {
    let Some(world) = World::publish_two_runs("local") else {
        return;
    };
    let out = run_ok(
        world
            .daemon
            .cairn()
            .args([
                "--json",
                "fetch",
                "--stage",
                "all",
                "--generic-only",
                "--output-dir",
            ])
            .arg(world.tmp.path().join("all-generic"))
            .arg("--checkout")
            .arg(&world.checkout.root),
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = found_runs(&json);
    assert!(!found.is_empty());
    assert!(found.keys().all(|a| a.ends_with("_generic")), "{found:?}");
    let topology = world.topology();
    let generic_inbound_of_math = topology.inbound("math-libs").unwrap();
    for name in generic_inbound_of_math {
        assert!(
            found.keys().any(|a| a.starts_with(&format!("{name}_"))),
            "`{name}` (built by an earlier stage) is part of --stage all: {found:?}"
        );
    }
    assert_eq!(json["stage"], "all");
}

/// `--run-id X` is run X's artifact set — what X built plus what X recorded as reused, taken from
/// the run that built it — and needs no git checkout (no fingerprints). A chain: run 1003's
/// math-libs job bootstrapped from 1001 and 1002 and built math-libs; run 1004's ml-libs job
/// bootstrapped `--run-id 1003` from a directory that is no checkout (1003's reuse followed to
/// 1001/1002) and recorded all of it as reused; `bootstrap --run-id 1004`, again without a
/// checkout, gets the exact tree of 1001's, 1002's and 1003's archives.
#[test]
fn run_id_is_the_runs_artifact_set_through_recorded_reuse_without_a_checkout() {
    let Some(mut world) = World::publish_two_runs("local") else {
        return;
    };
    let topology = world.topology();
    // A directory no git repository encloses, with the topology beside it.
    let elsewhere = world.tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let topo_file = elsewhere.join("BUILD_TOPOLOGY.toml");
    std::fs::write(&topo_file, ci::TOPOLOGY).unwrap();
    let ceiling = world.tmp.path().to_path_buf();
    let no_checkout = |daemon: &Daemon| {
        let mut cmd = daemon.cairn();
        cmd.current_dir(&elsewhere)
            .env("GIT_CEILING_DIRECTORIES", &ceiling);
        cmd
    };

    // Run 1003, math-libs job: bootstrapped (with a checkout), built, pushed with its reuse.
    let b3 = world
        .tmp
        .path()
        .join(format!("build-1003-math-libs-{FAMILY}"));
    let out = run_ok(
        world
            .daemon
            .cairn()
            .args([
                "--quiet",
                "bootstrap",
                "--stage",
                "math-libs",
                "--family",
                FAMILY,
            ])
            .arg("--build-dir")
            .arg(&b3)
            .arg("--checkout")
            .arg(&world.checkout.root),
    );
    expect_code(&out, 0);
    let fps = ci::produced_fingerprints(&world.checkout.root, "math-libs", FAMILY).unwrap();
    world.push("1003", "math-libs", FAMILY, &fps, None);

    // Run 1004, ml-libs job: `--run-id 1003` without a checkout.
    let b4 = world
        .tmp
        .path()
        .join(format!("build-1004-{STAGE}-{FAMILY}"));
    let out = no_checkout(&world.daemon)
        .args(["--json", "bootstrap", "--stage", STAGE, "--family", FAMILY])
        .args(["--run-id", "1003", "--build-dir"])
        .arg(&b4)
        .output()
        .unwrap();
    expect_code(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let math: BTreeSet<&str> = topology
        .produced("math-libs")
        .unwrap()
        .into_iter()
        .collect();
    let run2_has: BTreeSet<String> = ["core-hip", "core-runtime"].map(String::from).into();
    let mut expected = world.expected(STAGE, &run2_has);
    for (archive, run) in expected.iter_mut() {
        if math.contains(archive.split('_').next().unwrap()) {
            *run = "1003".to_string();
        }
    }
    assert_eq!(
        found_runs(&doc),
        expected,
        "1003's own build from 1003, its reuse from 1001/1002"
    );
    let reused_expl: Vec<String> = doc["resolved"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["producer"]["run_id"] == RUN1)
        .map(|r| r["explanation"][0].as_str().unwrap().to_string())
        .collect();
    assert!(
        reused_expl
            .iter()
            .all(|e| e.contains("recorded by run 1003 as reused from run 1001")),
        "{reused_expl:?}"
    );
    let fps = ci::produced_fingerprints(&world.checkout.root, STAGE, FAMILY).unwrap();
    world.push("1004", STAGE, FAMILY, &fps, None);

    // `--run-id 1004`, no checkout: run 1004's complete inbound set, from the runs that built it.
    let dest = world.tmp.path().join("from-1004");
    let out = no_checkout(&world.daemon)
        .args(["--json", "bootstrap", "--stage", STAGE, "--family", FAMILY])
        .args(["--run-id", "1004", "--build-dir"])
        .arg(&dest)
        .output()
        .unwrap();
    expect_code(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found_runs(&doc), expected);
    assert_bootstrap_tree(&world, &dest, &expected);
    assert_eq!(doc["checkout_head"], "", "no checkout was read");

    // `resolve` says the same; without --run-id and without a checkout it names both ways out.
    let out = no_checkout(&world.daemon)
        .args(["resolve", "--stage", STAGE, "--family", FAMILY])
        .args(["--run-id", "1004"])
        .output()
        .unwrap();
    expect_code(&out, 0);
    let out = no_checkout(&world.daemon)
        .args(["resolve", "--stage", STAGE, "--family", FAMILY])
        .output()
        .unwrap();
    expect_code(&out, 2);
    assert!(
        stderr(&out).contains("pass --checkout DIR"),
        "{}",
        stderr(&out)
    );
}

/// TheRock's flags with a meaning for Cairn do what TheRock's do: `fetch --bootstrap` is a
/// bootstrap (the compatibility-only knobs change nothing, the download cache dir is not
/// written), `fetch --no-extract` writes nothing, `--local-staging-dir` is refused naming cairnd's
/// flag, `push --compression-level` reaches the daemon, and `copy` records a stage's archives in
/// another run — `--dry-run` lists them first — so that `--run-id` of that run yields them.
#[test]
fn therock_fetch_push_and_copy_flags_do_what_therock_does() {
    let Some(world) = World::publish_two_runs("local") else {
        return;
    };
    let tmp = world.tmp.path();
    let cairn = || {
        let mut c = world.daemon.cairn();
        c.current_dir(&world.checkout.root);
        c
    };
    let run2_has: BTreeSet<String> = ["core-hip", "core-runtime", "blas", "rand"]
        .map(String::from)
        .into();

    // fetch --bootstrap.
    let dest = tmp.join("fetch-bootstrap");
    let cache = tmp.join("download-cache");
    let out = cairn()
        .args([
            "--json",
            "fetch",
            "--stage",
            STAGE,
            "--family",
            FAMILY,
            "--bootstrap",
        ])
        .args(["--download-concurrency", "4", "--extract-concurrency", "2"])
        .args(["--expand-family-to-targets", "--download-cache-dir"])
        .arg(&cache)
        .arg("--output-dir")
        .arg(&dest)
        .output()
        .unwrap();
    expect_code(&out, 0);
    assert_bootstrap_tree(&world, &dest, &world.expected(STAGE, &run2_has));
    assert!(!cache.exists(), "the daemon's store is the download cache");

    // buildctl's `bootstrap --mode enable INCLUDE --exclude ...`: over the build system's stage
    // dirs (`.stage.marker`), the selected one is built (marker removed), CMake re-run.
    let relpaths: Vec<String> = markers(&dest).into_iter().collect();
    for r in &relpaths {
        let stage = dest.join(r);
        let name = stage.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::write(stage.parent().unwrap().join(format!(".{name}.marker")), "").unwrap();
    }
    let fake_cmake = tmp.join("fake-cmake");
    std::fs::write(&fake_cmake, "#!/bin/sh\ntouch \"$1/reconfigured\"\n").unwrap();
    std::fs::set_permissions(&fake_cmake, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dest.join("CMakeCache.txt"),
        format!("CMAKE_COMMAND:INTERNAL={}\n", fake_cmake.display()),
    )
    .unwrap();
    let (keep, build) = (&relpaths[0], &relpaths[1]);
    let out = cairn()
        .args([
            "bootstrap",
            "--stage",
            STAGE,
            "--family",
            FAMILY,
            "--build-dir",
        ])
        .arg(&dest)
        .args([
            "--mode",
            "enable",
            &format!("^{build}$"),
            &format!("^{keep}$"),
        ])
        .args(["--exclude", &format!("^{keep}$")])
        .output()
        .unwrap();
    expect_code(&out, 0);
    assert!(
        stderr(&out).contains(&format!("[X] {build}")),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&format!("[ ] {keep}")),
        "{}",
        stderr(&out)
    );
    assert!(!dest.join(format!("{build}.prebuilt")).exists());
    assert!(dest.join(format!("{keep}.prebuilt")).exists());
    assert!(dest.join("reconfigured").exists(), "CMake re-run");
    let out = cairn()
        .args([
            "bootstrap",
            "--stage",
            STAGE,
            "--family",
            FAMILY,
            "--build-dir",
        ])
        .arg(&dest)
        .arg("--artifact-dir")
        .arg(tmp.join("artifacts"))
        .output()
        .unwrap();
    expect_code(&out, 2);
    assert!(
        stderr(&out).contains("cairn push --build-dir"),
        "{}",
        stderr(&out)
    );

    // fetch --no-extract.
    let dest = tmp.join("no-extract");
    let out = cairn()
        .args([
            "fetch",
            "--stage",
            STAGE,
            "--family",
            FAMILY,
            "--no-extract",
        ])
        .arg("--output-dir")
        .arg(&dest)
        .output()
        .unwrap();
    expect_code(&out, 0);
    let lines = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        lines.lines().filter(|l| l.starts_with("FOUND\t")).count(),
        world.expected(STAGE, &run2_has).len(),
        "{lines}"
    );
    assert!(
        !dest.exists() || std::fs::read_dir(&dest).unwrap().next().is_none(),
        "--no-extract writes nothing to the output dir"
    );

    // --local-staging-dir names what to do instead.
    let out = cairn()
        .args(["fetch", "--family", FAMILY, "--output-dir"])
        .arg(tmp.join("x"))
        .arg("--local-staging-dir")
        .arg(tmp.join("staging"))
        .output()
        .unwrap();
    expect_code(&out, 2);
    assert!(
        stderr(&out).contains("cairnd serve --local-storage"),
        "{}",
        stderr(&out)
    );

    // push --compression-level reaches the daemon, which checks it.
    let fps = ci::produced_fingerprints(&world.checkout.root, STAGE, FAMILY).unwrap();
    let b = tmp.join("push-level");
    ci::write_build_dir(&b, FAMILY, &fps, None, ARTIFACT_BYTES).unwrap();
    let push = |level: &str| {
        cairn()
            .args(["--quiet", "push", "--stage", STAGE, "--family", FAMILY])
            .args(["--run-id", "1030", "--compression-level", level])
            .args(["--compress-concurrency", "2", "--upload-concurrency", "2"])
            .arg("--build-dir")
            .arg(&b)
            .output()
            .unwrap()
    };
    let out = push("30");
    expect_code(&out, 2);
    assert!(
        stderr(&out).contains("compression level 30 is out of range for zstd (1-22)"),
        "{}",
        stderr(&out)
    );
    expect_code(&push("19"), 0);
    // push --stage all: whatever every stage produces that the build dir holds.
    let out = cairn()
        .args(["--json", "push", "--stage", "all", "--family", FAMILY])
        .args(["--run-id", "1031", "--build-dir"])
        .arg(&b)
        .output()
        .unwrap();
    expect_code(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["job_manifest_key"]
            .as_str()
            .unwrap()
            .ends_with(&format!("1031-linux/cairn/all-{FAMILY}.json")),
        "{doc}"
    );
    assert!(!doc["archives"].as_array().unwrap().is_empty());

    // --amdgpu-targets: each target is one more family request.
    let out = cairn()
        .args([
            "--json",
            "fetch",
            "--stage",
            STAGE,
            "--family",
            FAMILY,
            "--no-extract",
        ])
        .args(["--amdgpu-targets", "gfx942,gfx950", "--output-dir"])
        .arg(tmp.join("targets"))
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["families"],
        serde_json::json!([FAMILY, "gfx942", "gfx950"])
    );

    // copy: run 1001's compiler-runtime and math-libs become part of run 1020, nothing copied.
    let copy = |extra: &[&str]| {
        cairn()
            .args(["copy", "--source-run-id", RUN1, "--run-id", "1020"])
            .args([
                "--stage",
                "compiler-runtime,math-libs",
                "--amdgpu-families",
                FAMILY,
            ])
            .args(["--concurrency", "3"])
            .args(extra)
            .output()
            .unwrap()
    };
    let all_from_run1 = world.expected(STAGE, &BTreeSet::new());
    let out = copy(&["--dry-run"]);
    expect_code(&out, 0);
    let dry: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0] == "WOULD-RECORD").then(|| {
                (
                    f[1].to_string(),
                    f[2].trim_start_matches("built by run ").into(),
                )
            })
        })
        .collect();
    // Every archive the two stages build (a superset of what ml-libs needs), with its builder.
    for (archive, run) in &all_from_run1 {
        assert_eq!(dry.get(archive), Some(run), "{dry:?}");
    }
    assert!(dry.values().all(|r| r == RUN1), "{dry:?}");
    assert!(dry.keys().any(|k| k.starts_with("hipify_")), "{dry:?}");
    assert_eq!(
        find_file_opt(world.storage_root(), "1020-linux"),
        None,
        "--dry-run writes nothing"
    );
    let out = copy(&[]);
    expect_code(&out, 0);
    assert!(
        stderr(&out).contains("recorded as reused in 2 job manifest(s), nothing copied"),
        "{}",
        stderr(&out)
    );
    // A source run without Cairn records cannot be recorded: said, nothing written.
    let out = cairn()
        .args(["copy", "--source-run-id", "9999", "--run-id", "1021"])
        .args(["--stage", "math-libs", "--family", FAMILY])
        .output()
        .unwrap();
    expect_code(&out, 2);
    assert!(
        stderr(&out).contains("run(s) 9999 have no Cairn record")
            && stderr(&out).contains("--run-id instead"),
        "{}",
        stderr(&out)
    );
    assert_eq!(find_file_opt(world.storage_root(), "1021-linux"), None);
    let dest = tmp.join("from-1020");
    let (out, doc) = world.bootstrap(&world.daemon, &dest, &["--run-id", "1020"]);
    expect_code(&out, 0);
    assert_eq!(found_runs(&doc.unwrap()), all_from_run1);
    assert_bootstrap_tree(&world, &dest, &all_from_run1);
}

/// The first path under `dir` whose path contains `needle`.
fn find_file_opt(dir: &Path, needle: &str) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()? {
            let p = e.ok()?.path();
            if p.to_string_lossy().contains(needle) {
                return Some(p);
            }
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    None
}

/// `push` takes TheRock's pre-compressed `artifacts/*.tar.zst|.tar.xz` beside artifact dirs: each is
/// published as it is (same bytes, same SHA-256), after ingest checked it; a corrupt one is refused
/// naming the file, and nothing of the job is recorded.
#[test]
fn push_publishes_pre_compressed_archives_as_they_are() {
    use sha2::Digest as _;
    let Some(world) = World::publish_two_runs("local") else {
        return;
    };
    let stage = "compiler-runtime";
    let fps = ci::produced_fingerprints(&world.checkout.root, stage, "generic").unwrap();
    let b = world.tmp.path().join("pre-compressed");
    // amd-llvm as a dir (written by the generator); every other artifact of the stage as the
    // archive run 1001 published.
    let dirs: BTreeSet<String> = ["amd-llvm".to_string()].into();
    ci::write_build_dir(&b, "generic", &fps, Some(&dirs), ARTIFACT_BYTES).unwrap();
    let mut expected_sha = BTreeMap::new();
    for name in fps.keys().filter(|n| !dirs.contains(*n)) {
        for c in ci::COMPONENTS {
            let artifact = format!("{name}_{c}_generic");
            let src = world.archive(RUN1, &artifact);
            let bytes = std::fs::read(&src).unwrap();
            expected_sha.insert(artifact.clone(), hex(&sha2::Sha256::digest(&bytes)));
            std::fs::write(
                b.join("artifacts").join(format!("{artifact}.tar.zst")),
                bytes,
            )
            .unwrap();
        }
    }
    let push = |run: &str| {
        world
            .daemon
            .cairn()
            .args(["--json", "push", "--stage", stage, "--family", "generic"])
            .args(["--run-id", run, "--build-dir"])
            .arg(&b)
            .arg("--checkout")
            .arg(&world.checkout.root)
            .output()
            .unwrap()
    };
    let out = push("1040");
    expect_code(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let published: BTreeMap<String, String> = doc["archives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["artifact"].as_str().unwrap().to_string(),
                a["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (artifact, sha) in &expected_sha {
        assert_eq!(
            published.get(artifact),
            Some(sha),
            "{artifact}: published as it is"
        );
    }
    assert!(
        published.keys().any(|a| a.starts_with("amd-llvm_")),
        "the artifact dir is archived as before: {published:?}"
    );

    // A corrupt pre-compressed archive is refused, naming it.
    let victim = expected_sha.keys().next().unwrap();
    std::fs::write(
        b.join("artifacts").join(format!("{victim}.tar.zst")),
        b"not a zstd stream",
    )
    .unwrap();
    let out = push("1041");
    expect_code(&out, 2);
    assert!(
        stderr(&out).contains(&format!(
            "pre-compressed archive `artifacts/{victim}.tar.zst`"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        find_file_opt(world.storage_root(), "1041-linux/cairn"),
        None
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
