//! `cairnd serve --metrics 127.0.0.1:0` end to end: real gRPC traffic (Publish, Resolve, Fetch,
//! Stats over the Unix socket) shows up in the Prometheus text on `/metrics` and in the `/status` JSON,
//! fetched over a plain TCP connection the way a scraper would.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cairn_client::connect::{DaemonAddr, connect};
use cairn_fingerprint::Blake3;
use cairn_proto::v1::{
    ArtifactRequest, FetchRequest, PublishRequest, ResolveRequest, ResolveStatus, StatsRequest,
    fetch_event::Event,
};
use cairn_testkit::bin_path::bin_path;
use cairn_testkit::datagen::{ArtifactSpec, generate_artifact_dir};

const STAGE: &str = "math-libs";
const FAMILY: &str = "gfx94X-dcgpu";

/// A running `cairnd serve` with its metrics address; SIGTERM on drop.
struct Served {
    child: Child,
    socket: PathBuf,
    metrics: String,
}

impl Served {
    fn start(dir: &Path) -> Served {
        let socket = dir.join("run/cairnd.sock");
        let mut child = Command::new(bin_path("cairnd"))
            .arg("serve")
            .arg("--store")
            .arg(dir.join("store"))
            .arg("--local-storage")
            .arg(dir.join("storage"))
            .arg("--socket")
            .arg(&socket)
            .args(["--metrics", "127.0.0.1:0"])
            .env_remove("CAIRN_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The metrics line is printed after the Unix socket is bound: once we see it, both are up.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        let metrics = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!("cairnd exited before announcing its metrics address; stderr:\n{seen}");
            };
            seen.push_str(&line);
            seen.push('\n');
            if let Some(rest) = line.strip_prefix("cairnd: metrics on http://") {
                break rest.strip_suffix("/metrics").unwrap().to_string();
            }
        };
        // Keep draining stderr so the daemon never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Served {
            child,
            socket,
            metrics,
        }
    }

    /// `GET path` over a raw TCP connection: (status code, body).
    fn get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(&self.metrics).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad status line in {head:?}"));
        (code, body.to_string())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of our own unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Samples of a Prometheus text exposition: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn fp(name: &str) -> String {
    Blake3::of(format!("metrics-e2e-{name}").as_bytes()).to_hex()
}

fn resolve_request(artifacts: &[(&str, String)]) -> ResolveRequest {
    ResolveRequest {
        stage: STAGE.into(),
        family: FAMILY.into(),
        platform: "linux".into(),
        artifacts: artifacts
            .iter()
            .map(|(a, f)| ArtifactRequest {
                artifact: a.to_string(),
                fingerprint: f.clone(),
            })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_traffic_shows_in_metrics_and_status() {
    let tmp = tempfile::tempdir().unwrap();
    let build = tmp.path().join("build");
    let specs = [
        ArtifactSpec::new("blas", "lib", FAMILY, 96 << 10, 1),
        ArtifactSpec::new("blas", "dev", "generic", 32 << 10, 2),
        ArtifactSpec::new("rand", "lib", "generic", 48 << 10, 3),
    ];
    for s in &specs {
        generate_artifact_dir(&build.join("artifacts"), s).unwrap();
    }
    let daemon = Served::start(tmp.path());
    let mut client = connect(&DaemonAddr::Unix(daemon.socket.clone()))
        .await
        .unwrap();

    let published = client
        .publish(PublishRequest {
            build_dir: build.display().to_string(),
            stage: STAGE.into(),
            family: FAMILY.into(),
            platform: "linux".into(),
            repo: "ROCm/TheRock".into(),
            workflow: "multi_arch_ci.yml".into(),
            run_id: "4242".into(),
            commit: "ab".repeat(20),
            fingerprints: [("blas", fp("blas")), ("rand", fp("rand"))]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(published.archives.len(), 3);

    let wanted = [("blas", fp("blas")), ("rand", fp("rand"))];
    let found = client
        .resolve(resolve_request(&wanted))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.artifacts.len(), 3, "{found:?}");
    assert!(
        found
            .artifacts
            .iter()
            .all(|a| a.status == ResolveStatus::Found as i32)
    );
    let missing = client
        .resolve(resolve_request(&[("blas", fp("blas-other"))]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        missing
            .artifacts
            .iter()
            .all(|a| a.status == ResolveStatus::Missing as i32)
    );

    let mut stream = client
        .fetch(FetchRequest {
            resolve: Some(resolve_request(&wanted)),
            local_paths: true,
            blob_path_batches: true,
        })
        .await
        .unwrap()
        .into_inner();
    let summary = loop {
        match stream.message().await.unwrap().and_then(|e| e.event) {
            Some(Event::Summary(s)) => break s,
            Some(_) => {}
            None => panic!("fetch stream ended without a summary"),
        }
    };
    // Closing the stream releases the daemon's leases and ends the Fetch request.
    drop(stream);
    assert_eq!((summary.artifacts, summary.from_cas), (3, 3));

    let stats = client.stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!((stats.hits, stats.misses, stats.fetch_requests), (3, 0, 1));
    // Two Resolve calls, and the Fetch resolves once itself.
    assert_eq!(stats.resolve_requests, 3);

    // The Fetch request is recorded when its stream closes, just after we dropped it.
    let fetch_key = format!(
        "cairn_requests_total{{method=\"Fetch\",stage=\"{STAGE}\",family=\"{FAMILY}\",outcome=\"ok\"}}"
    );
    let mut m = HashMap::new();
    for _ in 0..200 {
        let (code, body) = daemon.get("/metrics");
        assert_eq!(code, 200);
        m = samples(&body);
        if m.contains_key(&fetch_key) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let get = |k: &str| -> f64 {
        *m.get(k)
            .unwrap_or_else(|| panic!("no sample `{k}` in /metrics: {m:#?}"))
    };
    let req = |method: &str| {
        format!(
            "cairn_requests_total{{method=\"{method}\",stage=\"{STAGE}\",family=\"{FAMILY}\",outcome=\"ok\"}}"
        )
    };
    assert_eq!(get(&req("Publish")), 1.0);
    assert_eq!(get(&req("Resolve")), 2.0);
    assert_eq!(get(&fetch_key), 1.0);
    assert_eq!(
        get("cairn_request_duration_seconds_count{method=\"Resolve\"}"),
        2.0
    );
    assert_eq!(
        get("cairn_request_duration_seconds_bucket{method=\"Resolve\",le=\"+Inf\"}"),
        2.0
    );
    let served = format!("{{source=\"cas\",stage=\"{STAGE}\",family=\"{FAMILY}\"}}");
    assert_eq!(get(&format!("cairn_served_archives_total{served}")), 3.0);
    assert_eq!(
        get(&format!("cairn_served_bytes_total{served}")),
        summary.bytes as f64
    );
    assert_eq!(get("cairn_cache_hits_total"), 3.0);
    assert_eq!(get("cairn_cache_misses_total"), 0.0);
    assert_eq!(get("cairn_in_flight_fetches"), 0.0);
    assert_eq!(get("cairn_store_blobs"), stats.blobs as f64);
    assert_eq!(get("cairn_store_bytes"), stats.store_bytes as f64);
    assert!(stats.blobs > 0);

    let (code, body) = daemon.get("/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["hits"], 3);
    assert_eq!(status["misses"], 0);
    assert_eq!(status["resolve_requests"], 3);
    assert_eq!(status["fetch_requests"], 1);
    assert_eq!(status["num_blobs"], stats.blobs);
    assert_eq!(status["cache_size_bytes"], stats.store_bytes);
    assert_eq!(status["num_trees"], stats.trees);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        status["store_dir"],
        tmp.path().join("store").display().to_string()
    );
    assert_eq!(status["backends"][0]["bucket"], "*");
    assert_eq!(status["backends"][0]["trusted"], true);

    assert_eq!(daemon.get("/healthz"), (200, "ok\n".to_string()));
    assert_eq!(daemon.get("/nope").0, 404);

    // Blob paths: one `blob_path` event per blob for a client that did not ask for batches (the
    // Python example, older clients), `blob_paths` batches (one per archive) for one that did; the same blobs,
    // each once, with files of the announced sizes.
    let mut deliveries = Vec::new();
    for batches in [false, true] {
        let mut stream = client
            .fetch(FetchRequest {
                resolve: Some(resolve_request(&wanted)),
                local_paths: true,
                blob_path_batches: batches,
            })
            .await
            .unwrap()
            .into_inner();
        let (mut singles, mut batch_events, mut trees, mut paths) = (0, 0, 0, Vec::new());
        loop {
            match stream.message().await.unwrap().and_then(|e| e.event) {
                Some(Event::Tree(_)) => trees += 1,
                Some(Event::BlobPath(p)) => {
                    singles += 1;
                    paths.push(p);
                }
                Some(Event::BlobPaths(b)) => {
                    batch_events += 1;
                    paths.extend(b.paths);
                }
                Some(Event::Summary(_)) => break,
                Some(_) => {}
                None => panic!("fetch stream ended without a summary"),
            }
        }
        for p in &paths {
            assert_eq!(std::fs::metadata(&p.path).unwrap().len(), p.size, "{p:?}");
        }
        let mut digests: Vec<String> = paths.iter().map(|p| p.blake3.clone()).collect();
        digests.sort();
        let unique = digests.len();
        digests.dedup();
        assert_eq!(digests.len(), unique, "each blob once");
        if batches {
            // Each archive's new blobs follow its tree as one batch (they fit one).
            assert_eq!(singles, 0);
            assert!(
                (1..=trees).contains(&batch_events),
                "{unique} paths of {trees} trees in {batch_events} batches"
            );
        } else {
            assert_eq!((singles, batch_events), (unique, 0));
        }
        deliveries.push(digests);
    }
    assert_eq!(deliveries[0], deliveries[1]);
    assert!(!deliveries[0].is_empty());
}
