//! Access and trust: the Unix socket is owner-only; the TCP listener refuses requests without the
//! bearer token (and the daemon refuses to serve TCP without one, unless `--tcp-insecure` on
//! loopback); runs classified as untrusted never write to the trusted area and are never resolved for
//! a trusted request; tokens and storage credentials never appear in logs or error messages.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_client::connect::{DaemonAddr, connect};
use cairn_daemon::records::RunIdentity;
use cairn_daemon::service::policy::{ArchiveSelector, Policy, Wanted};
use cairn_daemon::service::{PublishRequest, ResolveRequest, Service};
use cairn_daemon::storage::backends::{Backend, Backends};
use cairn_daemon::storage::{LocalStorage, Storage as _};
use cairn_daemon::store::{LocalStore, StoreConfig};
use cairn_fingerprint::{Blake3, Compression};
use cairn_proto::v1 as pb;
use cairn_proto::v1::cairn_client::CairnClient;
use cairn_testkit::bin_path::bin_path;
use cairn_testkit::daemon::{Daemon, Options, Storage};
use cairn_testkit::datagen::{ArtifactSpec, generate_artifact_dir};

fn local_daemon(tcp: bool) -> (tempfile::TempDir, Daemon) {
    let bucket = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(
        Storage::Local(bucket.path().to_path_buf()),
        Options {
            tcp,
            ..Options::default()
        },
    )
    .unwrap();
    (bucket, daemon)
}

#[test]
fn unix_socket_is_owner_only() {
    let (_bucket, daemon) = local_daemon(false);
    let mode = std::fs::metadata(daemon.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    daemon.stats().unwrap();
}

/// A raw gRPC client over TCP sending `token` (if any) as the bearer token.
async fn tcp_stats(url: &str, header: Option<&str>) -> Result<pb::StatsResponse, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = CairnClient::new(channel);
    let mut req = tonic::Request::new(pb::StatsRequest {});
    if let Some(h) = header {
        req.metadata_mut()
            .insert("authorization", h.parse().unwrap());
    }
    client.stats(req).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_requires_the_bearer_token() {
    // The handle blocks while the daemon starts; keep that off the runtime's workers.
    let (_bucket, daemon) = tokio::task::block_in_place(|| local_daemon(true));
    let url = daemon.tcp_addr().unwrap();
    let token = daemon.tcp_token();

    for (case, header) in [
        ("no header", None),
        (
            "wrong token",
            Some("Bearer cairn-test-token-wrong-wrong-wrong".to_string()),
        ),
        ("token without scheme", Some(token.clone())),
        ("basic scheme", Some(format!("Basic {token}"))),
        (
            "token prefix",
            Some(format!("Bearer {}", &token[..token.len() - 1])),
        ),
    ] {
        let status = tcp_stats(&url, header.as_deref()).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{case}: {status:?}"
        );
        assert!(
            !status.message().contains(&token),
            "{case}: the refusal echoes the token"
        );
        assert!(
            status.message().contains("token"),
            "{case}: {}",
            status.message()
        );
    }
    tcp_stats(&url, Some(&format!("Bearer {token}")))
        .await
        .unwrap();

    // The client library sends `CAIRN_TOKEN`: the `cairn` CLI works over TCP with it, and without it
    // fails with an authentication error.
    let out = daemon.cairn_tcp().arg("status").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cairn_testkit::daemon::cairn_command(&url)
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("token"), "{stderr}");
    // `--token-file` works too.
    let file = _bucket.path().join("client-token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let out = cairn_testkit::daemon::cairn_command(&url)
        .arg("--token-file")
        .arg(&file)
        .arg("status")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The Unix socket needs no token.
    tokio::task::block_in_place(|| daemon.stats()).unwrap();
    assert!(
        !daemon.log().contains(&token),
        "the daemon logged its token"
    );
}

/// Runs `cairnd serve` with `args` and returns its exit status and stderr once it exits, or `None` if
/// it is still running after it printed that it listens (then it is killed).
fn serve_outcome(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let log = dir.join(format!("serve-{}.log", args.len()));
    let mut cmd = Command::new(bin_path("cairnd"));
    cmd.arg("serve")
        .arg("--store")
        .arg(dir.join("store"))
        .arg("--socket")
        .arg(dir.join("run/cairnd.sock"))
        .arg("--local-storage")
        .arg(dir.join("bucket"))
        .args(args)
        .env_remove("CAIRN_TCP_TOKEN")
        .env_remove("CAIRN_TCP_TOKEN_FILE")
        .env_remove("CAIRN_CONFIG")
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), std::fs::read_to_string(&log).unwrap());
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("listening on http://") {
            let _ = child.kill();
            let _ = child.wait();
            return (None, text);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "cairnd neither exited nor listened: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cairnd_refuses_to_serve_tcp_without_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (code, err) = serve_outcome(dir, &["--tcp", "127.0.0.1:0"], &[]);
    assert!(code.is_some_and(|c| c != 0), "{code:?}: {err}");
    assert!(
        err.contains("without a token") && err.contains("--tcp-token-file"),
        "{err}"
    );

    let (code, err) = serve_outcome(dir, &["--tcp", "0.0.0.0:0", "--tcp-insecure"], &[]);
    assert!(code.is_some_and(|c| c != 0), "{code:?}: {err}");
    assert!(err.contains("only allowed on a loopback"), "{err}");

    let (code, out) = serve_outcome(dir, &["--tcp", "127.0.0.1:0", "--tcp-insecure"], &[]);
    assert_eq!(code, None, "{out}");
    assert!(out.contains("no token (--tcp-insecure)"), "{out}");

    // A world-readable token file is refused, naming the file but not its content.
    let token_file = dir.join("token");
    std::fs::write(&token_file, "a-secret-token-of-some-length\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let tf = token_file.to_str().unwrap();
    let (code, err) = serve_outcome(dir, &["--tcp", "127.0.0.1:0", "--tcp-token-file", tf], &[]);
    assert!(code.is_some_and(|c| c != 0), "{code:?}: {err}");
    assert!(
        err.contains("chmod 600") && !err.contains("a-secret-token"),
        "{err}"
    );
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out) = serve_outcome(dir, &["--tcp", "127.0.0.1:0", "--tcp-token-file", tf], &[]);
    assert_eq!(code, None, "{out}");
    assert!(
        out.contains("bearer token required") && !out.contains("a-secret-token"),
        "{out}"
    );

    // The token from the environment; a short one is refused without being echoed.
    let (code, err) = serve_outcome(
        dir,
        &["--tcp", "127.0.0.1:0"],
        &[("CAIRN_TCP_TOKEN", "short-secret")],
    );
    assert!(code.is_some_and(|c| c != 0), "{code:?}: {err}");
    assert!(!err.contains("short-secret"), "{err}");
}

/// Storage credentials and the TCP token never reach the daemon's log or a client's error message,
/// even at debug level and while storage requests fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_appear_in_logs_or_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let secret = "SECRETkeyMaterial0123456789abcdefSECRET";
    let session = "SESSIONtoken0123456789SESSION";
    let tcp_token = "TCPtoken-0123456789abcdef-TCPtoken";
    let log = dir.join("cairnd.log");
    // An S3 backend nobody answers on: every storage request fails and is logged and reported.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let tcp = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut child = Command::new(bin_path("cairnd"))
        .arg("serve")
        .arg("--store")
        .arg(dir.join("store"))
        .arg("--socket")
        .arg(dir.join("run/cairnd.sock"))
        .arg("--s3-endpoint")
        .arg(&endpoint)
        .arg("--s3-bucket")
        .arg("cairn-creds-test")
        .arg("--tcp")
        .arg(&tcp)
        .env_remove("CAIRN_CONFIG")
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLECAIRNTEST")
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_SESSION_TOKEN", session)
        .env("AWS_REGION", "us-east-1")
        .env("CAIRN_TCP_TOKEN", tcp_token)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let addr = DaemonAddr::Unix(dir.join("run/cairnd.sock"));
    let started = Instant::now();
    let mut client = loop {
        if let Ok(c) = connect(&addr).await {
            break c;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "cairnd exited with {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "cairnd did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut messages = Vec::new();
    let resolve = pb::ResolveRequest {
        stage: "math-libs".into(),
        family: "gfx94X-dcgpu".into(),
        platform: "linux".into(),
        artifacts: vec![pb::ArtifactRequest {
            artifact: "blas".into(),
            fingerprint: Blake3::of(b"x").to_hex(),
        }],
        ..Default::default()
    };
    let err = client.resolve(resolve.clone()).await.unwrap_err();
    messages.push(err.message().to_string());
    let err = client
        .import(pb::ImportRequest {
            run_id: "12345".into(),
            platform: "linux".into(),
            repo: String::new(),
            ingest: true,
        })
        .await
        .unwrap_err();
    messages.push(err.message().to_string());
    // A wrong token over TCP.
    let err = tcp_stats(
        &format!("http://{tcp}"),
        Some("Bearer not-the-token-at-all-no"),
    )
    .await
    .unwrap_err();
    messages.push(err.message().to_string());
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("cairn-creds-test") || text.contains(&endpoint),
        "the log shows storage activity: {text}"
    );
    for m in &messages {
        assert!(!m.is_empty());
    }
    for needle in [secret, session, tcp_token] {
        assert!(!text.contains(needle), "the log contains a credential");
        for m in &messages {
            assert!(
                !m.contains(needle),
                "an error message contains a credential: {m}"
            );
        }
    }
}

fn run(run_id: &str, repo: &str, head_repo: &str) -> RunIdentity {
    RunIdentity {
        repo: repo.into(),
        workflow: "ci.yml".into(),
        run_id: run_id.into(),
        commit: format!("{run_id:0>40}"),
        platform: cairn_fingerprint::Platform::Linux,
        status: cairn_daemon::records::RunStatus::Success,
        head_repo: head_repo.into(),
    }
}

/// Runs classified as untrusted (a fork's PR, another repository) write their producer records and
/// commit entries only under `untrusted/`, never under the trusted `cairn/fp/` or `cairn/commits/`;
/// a trusted request never resolves them, even for a fingerprint only they produced; and a backend
/// configured untrusted never yields trusted producers, wherever its records sit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_writes_never_reach_the_trusted_area() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    let storage = Arc::new(LocalStorage::new(&bucket).unwrap());
    let svc = {
        let store = LocalStore::open(tmp.path().join("store"), StoreConfig::default()).unwrap();
        let backends = Backends::from_list(vec![Backend {
            bucket: "*".into(),
            storage: storage.clone(),
            trusted: true,
        }]);
        Service::new(store, backends, Duration::from_secs(60))
    };
    let build = tmp.path().join("build");
    std::fs::create_dir_all(build.join("artifacts")).unwrap();
    generate_artifact_dir(
        &build.join("artifacts"),
        &ArtifactSpec::new("blas", "lib", "generic", 64 << 10, 3),
    )
    .unwrap();
    let fp = Blake3::of(b"only-untrusted-runs-built-this");
    let input = |r: RunIdentity| PublishRequest {
        build_dir: build.clone(),
        stage: "math-libs".into(),
        family: "generic".into(),
        run: r,
        compression: Compression::Zstd,
        fingerprints: BTreeMap::from([("blas".to_string(), fp)]),
        reused_from: BTreeMap::new(),
        compression_level: None,
        branch: None,
    };
    let fork = svc
        .publish(input(run("900", "ROCm/TheRock", "attacker/TheRock")))
        .await
        .unwrap();
    let external = svc
        .publish(input(run("901", "someone/fork-of-therock", "")))
        .await
        .unwrap();
    assert!(!fork.trusted && !external.trusted);

    let keys: Vec<String> = storage
        .list("", None)
        .await
        .unwrap()
        .objects
        .into_iter()
        .map(|o| o.key)
        .collect();
    let trusted_area: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("cairn/fp/") || k.starts_with("cairn/commits/"))
        .collect();
    assert!(
        trusted_area.is_empty(),
        "untrusted runs wrote {trusted_area:?}"
    );
    let records: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("untrusted/cairn/fp/"))
        .collect();
    assert_eq!(records.len(), 2, "{keys:?}");

    let wanted = vec![Wanted {
        selector: ArchiveSelector::parse("blas").unwrap(),
        fingerprint: Some(fp),
    }];
    let request = |policy: Policy| ResolveRequest {
        stage: "math-libs".into(),
        family: "gfx94X-dcgpu".into(),
        platform: cairn_fingerprint::Platform::Linux,
        wanted: wanted.clone(),
        policy,
        exclude_components: vec![],
    };
    let res = svc.resolve(&request(Policy::default())).await.unwrap();
    assert!(
        res[0].chosen.is_none(),
        "a trusted request resolved {res:?}"
    );
    let res = svc
        .resolve(&request(Policy {
            allow_untrusted: true,
            ..Policy::default()
        }))
        .await
        .unwrap();
    let (c, _) = res[0]
        .chosen
        .as_ref()
        .expect("visible when explicitly allowed");
    assert!(!c.trusted);

    // A record copied into the trusted area of a backend configured untrusted stays untrusted.
    let copy_to = format!("cairn/fp/{fp}/copied.json");
    let body = storage.get_bytes(records[0]).await.unwrap();
    storage
        .put(&copy_to, cairn_daemon::storage::PutBody::Bytes(body))
        .await
        .unwrap();
    let untrusted_backend = {
        let store = LocalStore::open(tmp.path().join("store2"), StoreConfig::default()).unwrap();
        let backends = Backends::from_list(vec![Backend {
            bucket: "*".into(),
            storage: storage.clone(),
            trusted: false,
        }]);
        Service::new(store, backends, Duration::from_secs(60))
    };
    let res = untrusted_backend
        .resolve(&request(Policy::default()))
        .await
        .unwrap();
    assert!(res[0].chosen.is_none(), "{res:?}");
    let _: PathBuf = bucket;
}
