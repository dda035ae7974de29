//! Soak: a real `cairnd serve` process through tens of thousands of distinct objects and
//! fingerprints (tiny data), checking that its in-flight maps return to empty and its resident
//! memory (`VmRSS` in `/proc/{pid}/status`) to near its baseline.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn_client::connect::{DaemonAddr, connect};
use cairn_fingerprint::{Blake3, Compression};
use cairn_proto::v1::{ArtifactRequest, ImportRequest, ResolveRequest};
use cairn_testkit::daemon::{Daemon, Options, Storage};

/// Distinct objects made local (tiny archives in run listings).
const OBJECTS: usize = 20_000;
/// Distinct fingerprints looked up (nobody produced them: one LIST each).
const FINGERPRINTS: usize = 20_000;
/// Objects per run listing (one `Import` each).
const PER_RUN: usize = 2_000;
/// Fingerprints per `Resolve` request.
const PER_RESOLVE: usize = 1_000;

/// How much resident memory may grow over the soak: what the daemon keeps on purpose is bounded by
/// configuration — redb's page cache at 64 MiB (`store/index.rs`) and the parsed-tree cache at 256 Ki
/// tree entries, ~40 MB (`store/tree_cache.rs`) — and both fill as the index grows (20,000 trees,
/// keys, archives and blobs, 20,000 negative lookups). Anything beyond their sum is memory that
/// grows with every object or fingerprint ever seen, which this test exists to catch. The
/// in-flight maps are checked exactly (empty).
const RSS_GROWTH_BOUND_KIB: u64 = (64 + 40) * 1024;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS in /proc/pid/status")
}

/// `GET /status` from the daemon's metrics listener: (in-flight downloads, in-flight lookups).
fn in_flight(metrics: &str) -> (u64, u64) {
    let mut s = TcpStream::connect(metrics).unwrap();
    write!(
        s,
        "GET /status HTTP/1.1\r\nHost: {metrics}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let body = raw.split_once("\r\n\r\n").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    (
        v["in_flight_downloads"]
            .as_u64()
            .expect("in_flight_downloads"),
        v["in_flight_lookups"].as_u64().expect("in_flight_lookups"),
    )
}

/// Write run listings `{first_run}..` with `PER_RUN` distinct tiny archives each, `count` in all,
/// on two threads.
fn write_runs(bucket: &Path, work: &Path, first_run: usize, count: usize) -> Vec<String> {
    let runs: Vec<usize> = (0..count.div_ceil(PER_RUN))
        .map(|r| first_run + r)
        .collect();
    std::thread::scope(|s| {
        for (t, chunk) in runs.chunks(runs.len().div_ceil(2).max(1)).enumerate() {
            s.spawn(move || {
                let src = work.join(format!("src{first_run}-{t}"));
                std::fs::create_dir_all(src.join("stage")).unwrap();
                std::fs::write(src.join("artifact_manifest.txt"), "stage\n").unwrap();
                for &run in chunk {
                    let prefix = bucket.join(format!("{run}-linux"));
                    std::fs::create_dir_all(&prefix).unwrap();
                    for i in 0..PER_RUN {
                        std::fs::write(src.join("stage/f"), format!("run {run} object {i}"))
                            .unwrap();
                        let archive = prefix.join(format!("art{i}_lib_generic.tar.zst"));
                        cairn_daemon::archive::create_archive(&src, &archive, Compression::Zstd, 1)
                            .unwrap();
                    }
                }
            });
        }
    });
    runs.iter().map(|r| r.to_string()).collect()
}

async fn soak_phase(
    client: &mut cairn_proto::v1::cairn_client::CairnClient<cairn_client::connect::DaemonChannel>,
    runs: &[String],
    fingerprints: std::ops::Range<usize>,
) {
    for run in runs {
        let r = client
            .import(ImportRequest {
                run_id: run.clone(),
                platform: "linux".into(),
                ingest: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.ingested as usize, PER_RUN, "run {run}");
    }
    let fps: Vec<usize> = fingerprints.collect();
    for chunk in fps.chunks(PER_RESOLVE) {
        let r = client
            .resolve(ResolveRequest {
                stage: "math-libs".into(),
                family: "gfx94X-dcgpu".into(),
                platform: "linux".into(),
                artifacts: chunk
                    .iter()
                    .map(|i| ArtifactRequest {
                        artifact: "blas".into(),
                        fingerprint: Blake3::of(format!("soak-fp-{i}").as_bytes()).to_hex(),
                    })
                    .collect(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.artifacts.len(), chunk.len());
    }
}

/// 20,000 distinct objects made local and 20,000 distinct fingerprints looked up through a real
/// daemon, after a warm-up of 2,000 of each: the in-flight maps are empty again and the resident
/// memory is within [`RSS_GROWTH_BOUND_KIB`] of the warm baseline.
#[test]
fn soak_rss_and_in_flight_maps_return_to_baseline_after_20000_objects_and_fingerprints() {
    let started = Instant::now();
    let data = cairn_testkit::daemon::scratch_dir("cairn-soak-").unwrap();
    let bucket = data.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let warm_runs = write_runs(&bucket, data.path(), 1, PER_RUN);
    let soak_runs = write_runs(&bucket, data.path(), 1000, OBJECTS);
    let generated = started.elapsed();

    let daemon = Daemon::start_with(
        Storage::Local(bucket.clone()),
        Options {
            args: vec!["--metrics".into(), "127.0.0.1:0".into()],
            ..Options::default()
        },
    )
    .unwrap();
    let metrics = daemon
        .log()
        .lines()
        .find_map(|l| l.strip_prefix("cairnd: metrics on http://"))
        .and_then(|l| l.strip_suffix("/metrics"))
        .map(str::to_string)
        .expect("metrics address in the daemon's log");
    let pid = daemon.pid().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut client = rt
        .block_on(connect(&DaemonAddr::parse(&daemon.addr())))
        .unwrap();

    rt.block_on(soak_phase(&mut client, &warm_runs, 0..PER_RUN));
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(pid);
    assert_eq!(in_flight(&metrics), (0, 0), "after the warm-up");

    let soak_started = Instant::now();
    rt.block_on(soak_phase(
        &mut client,
        &soak_runs,
        PER_RUN..PER_RUN + FINGERPRINTS,
    ));
    let soak_time = soak_started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib(pid);
    let maps = in_flight(&metrics);
    let stats = daemon.stats().unwrap();
    eprintln!(
        "soak: {OBJECTS} objects + {FINGERPRINTS} fingerprints in {:.1} s (data generated in {:.1} s); \
         VmRSS {before} KiB before, {after} KiB after ({:+} KiB); in-flight maps after: {maps:?}; \
         store: {} blobs, {} trees",
        soak_time.as_secs_f64(),
        generated.as_secs_f64(),
        after as i64 - before as i64,
        stats.blobs,
        stats.trees,
    );
    assert_eq!(
        maps,
        (0, 0),
        "(downloads, lookups) in flight after the soak"
    );
    assert!(
        stats.blobs as usize >= OBJECTS + PER_RUN,
        "every object was made local: {} blobs",
        stats.blobs
    );
    assert!(
        after <= before + RSS_GROWTH_BOUND_KIB,
        "VmRSS grew from {before} KiB to {after} KiB over {OBJECTS} objects and {FINGERPRINTS} \
         fingerprints (bound +{RSS_GROWTH_BOUND_KIB} KiB)"
    );
}
