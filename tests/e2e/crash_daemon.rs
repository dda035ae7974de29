//! Crash safety of the real `cairnd` process: SIGKILL at random points of a publish, a fetch
//! (download + ingest) and an eviction (`Gc`), a bounded number of iterations each. After every kill,
//! with the daemon down, `cairnd verify` is clean; after the restart the interrupted request succeeds;
//! and every producer record in the bucket names objects that exist (publish writes records last).
//!
//! Kill points are random within the measured duration of an uninterrupted request (seeded, printed,
//! so a failure can be replayed with the same seed).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_client::connect::{DaemonAddr, connect};
use cairn_daemon::storage::LocalStorage;
use cairn_fingerprint::Blake3;
use cairn_proto::v1 as pb;
use cairn_testkit::bin_path::bin_path;
use cairn_testkit::daemon::{Daemon, Storage};
use cairn_testkit::datagen::{ArtifactSpec, Rng, generate_artifact_dir};

/// Kills per phase: bounded, so the whole test stays within seconds.
const ITERATIONS: u64 = 4;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn fp(name: &str) -> String {
    Blake3::of(format!("crash-{name}").as_bytes()).to_hex()
}

const NAMES: [&str; 3] = ["blas", "rand", "fft"];

fn build_dir(root: &Path) -> std::path::PathBuf {
    let artifacts = root.join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    for (i, name) in NAMES.iter().enumerate() {
        generate_artifact_dir(
            &artifacts,
            &ArtifactSpec::new(name, "lib", "generic", 1 << 20, 40 + i as u64),
        )
        .unwrap();
    }
    root.to_path_buf()
}

fn publish_request(build_dir: &Path, run_id: &str) -> pb::PublishRequest {
    pb::PublishRequest {
        build_dir: build_dir.display().to_string(),
        stage: "math-libs".into(),
        family: "generic".into(),
        platform: "linux".into(),
        repo: "ROCm/TheRock".into(),
        workflow: "ci.yml".into(),
        run_id: run_id.into(),
        commit: format!("{run_id:0>40}"),
        status: "success".into(),
        compression: "zstd".into(),
        head_repo: String::new(),
        fingerprints: NAMES.iter().map(|n| (n.to_string(), fp(n))).collect(),
        reused_from: HashMap::new(),
        compression_level: None,
        branch: None,
    }
}

fn fetch_request() -> pb::FetchRequest {
    pb::FetchRequest {
        resolve: Some(pb::ResolveRequest {
            stage: "math-libs".into(),
            family: "gfx94X-dcgpu".into(),
            platform: "linux".into(),
            artifacts: NAMES
                .iter()
                .map(|n| pb::ArtifactRequest {
                    artifact: n.to_string(),
                    fingerprint: fp(n),
                })
                .collect(),
            ..Default::default()
        }),
        local_paths: true,
        blob_path_batches: true,
    }
}

/// One request to the daemon, as the test's phases send them.
#[derive(Clone)]
enum Op {
    Publish(Box<pb::PublishRequest>),
    Fetch,
    Gc,
}

/// Sends `op` to the daemon at `addr`; for a fetch, returns the number of trees received.
async fn send(addr: DaemonAddr, op: Op) -> Result<usize, String> {
    let mut client = connect(&addr).await.map_err(|e| e.to_string())?;
    match op {
        Op::Publish(req) => client
            .publish(*req)
            .await
            .map(|_| 0)
            .map_err(|s| s.message().to_string()),
        Op::Gc => client
            .gc(pb::GcRequest { max_bytes: 1 })
            .await
            .map(|_| 0)
            .map_err(|s| s.message().to_string()),
        Op::Fetch => {
            let mut s = client
                .fetch(fetch_request())
                .await
                .map_err(|s| s.message().to_string())?
                .into_inner();
            let mut trees = 0;
            loop {
                match s.message().await.map_err(|s| s.message().to_string())? {
                    Some(pb::FetchEvent {
                        event: Some(pb::fetch_event::Event::Tree(_)),
                    }) => trees += 1,
                    // The daemon keeps the stream open until the client drops it after the summary.
                    Some(pb::FetchEvent {
                        event: Some(pb::fetch_event::Event::Summary(_)),
                    })
                    | None => return Ok(trees),
                    Some(_) => {}
                }
            }
        }
    }
}

/// `cairnd verify` on the (stopped) daemon's store: exit 0 and nothing reported.
fn assert_verify_clean(daemon: &Daemon, context: &str) {
    let out = Command::new(bin_path("cairnd"))
        .arg("verify")
        .arg("--store")
        .arg(daemon.store_dir())
        .env_remove("CAIRN_STORE_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(" 0 corrupt, 0 missing, 0 dangling"),
        "{context}: cairnd verify: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `op` and SIGKILLs the daemon after `delay` (if the request has not finished by then); then,
/// with the daemon down, verifies the store, restarts the daemon and checks the bucket's records.
fn kill_during(
    rt: &tokio::runtime::Runtime,
    daemon: &mut Daemon,
    bucket: &Path,
    op: Op,
    delay: Duration,
    context: &str,
) {
    let addr = DaemonAddr::parse(&daemon.addr());
    let task = rt.spawn(send(addr, op));
    std::thread::sleep(delay);
    daemon.kill();
    // The request either finished before the kill or failed because of it; never a hang.
    let _ = rt.block_on(task).unwrap();
    assert_verify_clean(daemon, context);
    daemon.restart().unwrap();
    let storage = LocalStorage::new(bucket).unwrap();
    rt.block_on(crate::faults::assert_records_complete(&storage));
}

fn timed(rt: &tokio::runtime::Runtime, daemon: &Daemon, op: Op) -> (Duration, usize) {
    let started = Instant::now();
    let n = rt
        .block_on(send(DaemonAddr::parse(&daemon.addr()), op))
        .unwrap();
    (started.elapsed(), n)
}

#[test]
fn sigkill_during_publish_fetch_and_gc_leaves_a_sound_store() {
    let seed = std::env::var("CAIRN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c0de);
    eprintln!("crash_daemon seed {seed} (replay with CAIRN_CRASH_SEED={seed})");
    let mut rng = Rng::new(seed);
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let build = build_dir(&tmp.path().join("build"));

    // --- publish: kill at random points; records never name missing objects; a retry completes.
    let mut publisher = Daemon::start(Storage::Local(bucket.clone())).unwrap();
    let (full, _) = timed(
        &rt,
        &publisher,
        Op::Publish(Box::new(publish_request(&build, "500"))),
    );
    for i in 0..ITERATIONS {
        let run_id = format!("{}", 600 + i);
        let delay = Duration::from_micros(rng.range(0, full.as_micros() as u64 + 1));
        kill_during(
            &rt,
            &mut publisher,
            &bucket,
            Op::Publish(Box::new(publish_request(&build, &run_id))),
            delay,
            &format!("publish {run_id} killed after {delay:?}"),
        );
        // The interrupted publish, retried, completes.
        timed(
            &rt,
            &publisher,
            Op::Publish(Box::new(publish_request(&build, &run_id))),
        );
    }
    let storage = LocalStorage::new(&bucket).unwrap();
    // Every run published one record per artifact name.
    assert_eq!(
        rt.block_on(crate::faults::assert_records_complete(&storage)),
        NAMES.len() * (1 + ITERATIONS as usize)
    );
    drop(publisher);

    // --- fetch: a fresh daemon downloads and ingests; kill it mid-way.
    let mut fetcher = Daemon::start(Storage::Local(bucket.clone())).unwrap();
    let (full, trees) = timed(&rt, &fetcher, Op::Fetch);
    assert_eq!(trees, NAMES.len());
    for i in 0..ITERATIONS {
        // Evict everything so the fetch downloads again.
        timed(&rt, &fetcher, Op::Gc);
        let delay = Duration::from_micros(rng.range(0, full.as_micros() as u64 + 1));
        kill_during(
            &rt,
            &mut fetcher,
            &bucket,
            Op::Fetch,
            delay,
            &format!("fetch {i} killed after {delay:?}"),
        );
        let (_, trees) = timed(&rt, &fetcher, Op::Fetch);
        assert_eq!(trees, NAMES.len(), "fetch after restart {i}");
    }

    // --- eviction: kill during Gc of a full store.
    for i in 0..ITERATIONS {
        timed(&rt, &fetcher, Op::Fetch);
        let (full, _) = timed(&rt, &fetcher, Op::Gc);
        timed(&rt, &fetcher, Op::Fetch);
        let delay = Duration::from_micros(rng.range(0, full.as_micros() as u64 + 1));
        kill_during(
            &rt,
            &mut fetcher,
            &bucket,
            Op::Gc,
            delay,
            &format!("gc {i} killed after {delay:?}"),
        );
        let (_, trees) = timed(&rt, &fetcher, Op::Fetch);
        assert_eq!(trees, NAMES.len(), "fetch after gc restart {i}");
    }
    fetcher.kill();
    assert_verify_clean(&fetcher, "end");
}

/// Every blob file of a store, largest first.
fn blob_files_by_size(store: &Path) -> Vec<(u64, std::path::PathBuf)> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(store.join("cas-v1/blobs")).unwrap() {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let f = f.unwrap();
            out.push((f.metadata().unwrap().len(), f.path()));
        }
    }
    out.sort_by(|a, b| b.cmp(a));
    out
}

/// A power loss after an ingest but before the flusher synced its blobs: what the machine comes back
/// with may be zero-filled, short or missing files under names the index holds. Simulated by a
/// SIGKILL while the flush is far off (`--flush-delay 3600`), then damaging the blob files exactly
/// so. The index lists them as unsynced, so the restart re-hashes them, drops the damaged ones, and
/// the next fetch downloads them again: the power loss costs downloads, never a wrong file. A torn
/// file the index does not name is written over, never adopted.
#[test]
fn power_loss_before_the_flush_costs_downloads_never_a_wrong_file() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let build = build_dir(&tmp.path().join("build"));
    let publisher = Daemon::start(Storage::Local(bucket.clone())).unwrap();
    timed(
        &rt,
        &publisher,
        Op::Publish(Box::new(publish_request(&build, "700"))),
    );
    drop(publisher);

    let opts = cairn_testkit::daemon::Options {
        args: vec!["--flush-delay".into(), "3600".into()],
        ..Default::default()
    };
    let mut fetcher = Daemon::start_with(Storage::Local(bucket.clone()), opts).unwrap();
    let (_, trees) = timed(&rt, &fetcher, Op::Fetch);
    assert_eq!(trees, NAMES.len());
    fetcher.kill();

    let blobs = blob_files_by_size(&fetcher.store_dir());
    assert!(blobs.len() >= 3, "{} blobs", blobs.len());
    let writable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    };
    // Zero-filled at full size (an extent allocated, its data never written), short (half its
    // pages), and gone (the rename never reached the disk).
    let (size, zeroed) = &blobs[0];
    writable(zeroed);
    std::fs::write(zeroed, vec![0u8; *size as usize]).unwrap();
    let (size, short) = &blobs[1];
    writable(short);
    std::fs::OpenOptions::new()
        .write(true)
        .open(short)
        .unwrap()
        .set_len(size / 2)
        .unwrap();
    std::fs::remove_file(&blobs[2].1).unwrap();

    fetcher.restart().unwrap();
    let log = fetcher.log();
    assert!(
        log.contains("not closed cleanly") && log.contains("; 3 were lost or torn"),
        "the restart should re-check the unsynced blobs and drop 3:\n{log}"
    );
    // A torn leftover the index does not name (an ingest that died before its commit leaves such
    // files): the next ingest must write its own copy, never adopt it.
    std::fs::write(zeroed, vec![0u8; blobs[0].0 as usize]).unwrap();
    let (_, trees) = timed(&rt, &fetcher, Op::Fetch);
    assert_eq!(trees, NAMES.len(), "the fetch after the power loss");
    // A graceful stop syncs everything: the next start has nothing to re-check.
    assert!(fetcher.terminate(), "cairnd did not stop on SIGTERM");
    assert_verify_clean(&fetcher, "after the power loss and a re-fetch");
    fetcher.restart().unwrap();
    assert_eq!(
        fetcher.log().matches("not closed cleanly").count(),
        1,
        "a stop by SIGTERM must leave nothing unsynced:\n{}",
        fetcher.log()
    );
}
