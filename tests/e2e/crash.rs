//! Crash safety: a `cairnd ingest` child killed with SIGKILL at random points, many times over one
//! store. After every few kills the store is reopened: `verify` must find no corrupt blob and every
//! index entry must resolve (keys and archives to trees, trees to present blobs, blob entries to
//! files of the recorded size).
//!
//! SIGKILL tests process death, not power loss: the page cache survives, so this does not exercise
//! the fsync ordering itself (that is argued in `ingest.rs` and `cas.rs`), but it does exercise every
//! interleaving of "files written / renamed / index committed" a dying process can leave.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_daemon::archive::CreateOptions;
use cairn_daemon::store::{LocalStore, StoreConfig};
use cairn_fingerprint::Compression;
use cairn_testkit::bin_path::bin_path;
use cairn_testkit::datagen::{self, ArtifactSpec, GeneratedArchive, Rng};
use cairn_testkit::storecheck::index_problems;

const ITERATIONS: usize = 40;
const FRESH_ITERATIONS: usize = 30;

fn ingest_cmd(cairnd: &Path, store: &Path, a: &GeneratedArchive) -> Command {
    let mut cmd = Command::new(cairnd);
    cmd.arg("ingest")
        .arg("--store")
        .arg(store)
        .arg(&a.path)
        .arg("--sha256")
        .arg(a.sha256.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Reopen the store and check it; returns every problem found.
fn check(store_dir: &Path) -> Vec<String> {
    let store = LocalStore::open(store_dir, StoreConfig::default())
        .unwrap_or_else(|e| panic!("reopen after a kill: {e}"));
    let report = store.verify().expect("verify");
    let mut problems = index_problems(&store);
    problems.extend(
        report
            .corrupt
            .iter()
            .map(|c| format!("corrupt blob {} at {}", c.digest, c.path.display())),
    );
    problems.extend(
        report
            .missing
            .iter()
            .map(|m| format!("indexed blob {m} missing")),
    );
    problems.extend(report.dangling.iter().cloned());
    problems
}

#[test]
fn sigkill_during_ingest_never_leaves_a_corrupt_or_dangling_index() {
    let tmp = tempfile::tempdir().unwrap();
    let cairnd = bin_path("cairnd");
    let seed: u64 = std::env::var("CAIRN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xC0FFEE);
    eprintln!("crash test seed {seed} (set CAIRN_CRASH_SEED to replay)");

    // Archives that share content (one tree written twice, in two orders and two compressions), so
    // kills also land in ingests that find blobs already present.
    let out = tmp.path().join("out");
    let shared_dir = datagen::generate_artifact_dir(
        &tmp.path().join("artifacts"),
        &ArtifactSpec::new("amd-llvm", "lib", "generic", 2 << 20, seed),
    )
    .unwrap();
    let mut archives: Vec<GeneratedArchive> = vec![
        datagen::archive_artifact_dir(&shared_dir, &out.join("a"), Compression::Zstd).unwrap(),
        datagen::archive_artifact_dir_with(
            &shared_dir,
            &out.join("b"),
            &CreateOptions {
                reverse_order: true,
                ..CreateOptions::new(Compression::Xz)
            },
        )
        .unwrap(),
    ];
    for (i, component) in ["dev", "run"].iter().enumerate() {
        let spec = ArtifactSpec::new(
            "blas",
            component,
            "gfx94X-dcgpu",
            1 << 20,
            seed + 1 + i as u64,
        );
        archives
            .push(datagen::write_archive(&spec, &out.join(component), Compression::Zstd).unwrap());
    }

    // How long an uninterrupted ingest takes here, to spread the kill points over it.
    let scratch: PathBuf = tmp.path().join("scratch");
    let started = Instant::now();
    for a in &archives {
        assert!(ingest_cmd(&cairnd, &scratch, a).status().unwrap().success());
    }
    let per_ingest = started.elapsed() / archives.len() as u32;

    let mut rng = Rng::new(seed);

    // Phase 1: kills while a fresh store is being created (directories, `CACHEDIR.TAG`, the index
    // file). This window is short, so aim at it: kill points spread over how long opening a fresh
    // store takes. (redb leaves an unopenable file when killed while creating it; the index builds
    // it under a temp name for that reason.)
    let probe = tmp.path().join("probe");
    let started = Instant::now();
    let gc = Command::new(&cairnd)
        .arg("gc")
        .arg("--store")
        .arg(&probe)
        .output()
        .unwrap();
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    let open_time = started.elapsed();
    for i in 0..FRESH_ITERATIONS {
        let fresh = tmp.path().join(format!("fresh-{i}"));
        let mut child = ingest_cmd(&cairnd, &fresh, &archives[0]).spawn().unwrap();
        // The index is created first, so aim at the first half.
        std::thread::sleep(Duration::from_micros(
            rng.range(0, open_time.as_micros() as u64 / 2 + 1),
        ));
        let _ = child.kill();
        child.wait().unwrap();
        let problems = check(&fresh);
        assert!(
            problems.is_empty(),
            "after fresh-store kill {i} (seed {seed}): {problems:#?}"
        );
    }

    // Phase 2: many kills over one store that accumulates content.
    let store_dir = tmp.path().join("store");
    let mut killed = 0;
    for i in 0..ITERATIONS {
        let a = &archives[rng.range(0, archives.len() as u64) as usize];
        let mut child = ingest_cmd(&cairnd, &store_dir, a).spawn().unwrap();
        // Kill points from right after exec to the end of a typical first ingest (re-ingests of
        // known content are faster, so some runs finish: that interleaving is worth covering too).
        let max = (per_ingest.as_micros() as u64).max(1000);
        std::thread::sleep(Duration::from_micros(rng.range(0, max)));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if !status.success() {
            killed += 1;
        }
        if i % 6 == 5 || i == ITERATIONS - 1 {
            let problems = check(&store_dir);
            assert!(
                problems.is_empty(),
                "after kill {i} (seed {seed}): {problems:#?}"
            );
        }
    }
    eprintln!("{killed} of {ITERATIONS} ingests were killed before finishing");
    assert!(
        killed > 0,
        "no kill interrupted an ingest; the test exercised nothing"
    );

    // The survivor is a working store: `cairnd verify` is clean, and every archive ingests to completion.
    let verify = Command::new(&cairnd)
        .arg("verify")
        .arg("--store")
        .arg(&store_dir)
        .output()
        .unwrap();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let store = LocalStore::open(&store_dir, StoreConfig::default()).unwrap();
    for a in &archives {
        let outcome = store.ingest_file("final", &a.path, Some(a.sha256)).unwrap();
        assert!(store.has_blobs(&outcome.tree).unwrap());
    }
    assert!(index_problems(&store).is_empty());
    // Whatever the kills left unreferenced is garbage that gc removes, and nothing referenced goes.
    let report = store.gc(u64::MAX).unwrap();
    assert_eq!(report.evicted_blobs, 0);
    assert!(index_problems(&store).is_empty());
    assert!(store.verify().unwrap().is_clean());
}
