//! The fault matrix, end to end: the daemon's service publishes to and fetches from the S3 test server
//! through the fault proxy, which breaks responses the way networks and servers do (resets mid-body,
//! 500/503/SlowDown, truncated bodies under a correct `Content-Length`, stalls beyond the read timeout),
//! and objects are tampered with in the bucket (wrong bytes under a record or a sidecar).
//!
//! Every case checks the same four things: the outcome (success after retries, or an error naming the
//! object), zero corrupt blobs (`verify` clean, no orphan blob files), zero dangling index entries, and
//! that the next request succeeds once the fault is gone. `RELIABILITY.md` reports the matrix.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_daemon::records::{ProducerRecord, RunIdentity};
use cairn_daemon::service::policy::{ArchiveSelector, Policy, Wanted};
use cairn_daemon::service::{ImportRequest, PublishRequest, ResolveRequest, Service, ServiceError};
use cairn_daemon::storage::backends::{Backend, Backends};
use cairn_daemon::storage::{
    DownloadOptions, PutBody, RetryPolicy, S3Storage, Storage, StorageError,
};
use cairn_daemon::store::error::StoreError;
use cairn_daemon::store::{LocalStore, StoreConfig};
use cairn_fingerprint::{Blake3, Compression};
use cairn_testkit::datagen::{ArtifactSpec, generate_artifact_dir};
use cairn_testkit::faultproxy::{Fault, FaultProxy};
use cairn_testkit::s3server::S3Server;
use cairn_testkit::storecheck::index_problems;

/// Retries of every request and resumes of every chunk: quick, so the matrix runs in seconds.
fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        ..RetryPolicy::default()
    }
}

/// The artifacts every case publishes: small, several 64 KiB chunks each, so faults land mid-object.
fn specs() -> Vec<ArtifactSpec> {
    vec![
        ArtifactSpec::new("blas", "lib", "generic", 400 << 10, 11),
        ArtifactSpec::new("blas", "dev", "generic", 120 << 10, 12),
        ArtifactSpec::new("rand", "lib", "generic", 300 << 10, 13),
    ]
}

fn fp(name: &str) -> Blake3 {
    Blake3::of(format!("faults-{name}").as_bytes())
}

fn run(run_id: &str) -> RunIdentity {
    RunIdentity {
        repo: "ROCm/TheRock".into(),
        workflow: "multi_arch_ci.yml".into(),
        run_id: run_id.into(),
        commit: format!("{run_id:0>40}"),
        platform: cairn_fingerprint::Platform::Linux,
        status: cairn_daemon::records::RunStatus::Success,
        head_repo: String::new(),
    }
}

/// One bucket on the S3 test server, a fault proxy in front of it, and a scratch directory.
struct Rig {
    tmp: tempfile::TempDir,
    proxy: FaultProxy,
    /// The bucket reached directly, bypassing the proxy: for tampering and for checking what it holds.
    direct: Arc<S3Storage>,
    /// The bucket reached through the proxy, as the daemon reaches it.
    proxied: Arc<S3Storage>,
}

impl Rig {
    async fn new(s3: &S3Server, test: &str) -> Rig {
        let direct = Arc::new(s3.new_bucket(test).await.unwrap());
        let proxy = FaultProxy::start(s3.endpoint()).await.unwrap();
        let mut config = s3.config_via(&proxy.endpoint(), direct.bucket());
        // Stalls beyond this fail the request (or the body read) as transient.
        config.read_timeout = Duration::from_millis(800);
        // Generous for a loaded 2-core machine, short enough that an unanswered PUT fails quickly.
        config.put_timeout = Duration::from_secs(2);
        config.retry = quick_retry();
        let proxied = Arc::new(S3Storage::connect(config).await);
        Rig {
            tmp: tempfile::tempdir().unwrap(),
            proxy,
            direct,
            proxied,
        }
    }

    /// A daemon service with a fresh, empty store, reaching storage through the proxy.
    fn service(&self, name: &str) -> Arc<Service> {
        let store = LocalStore::open(self.tmp.path().join(name), StoreConfig::default()).unwrap();
        let backends = Backends::from_list(vec![Backend {
            bucket: "*".into(),
            storage: self.proxied.clone(),
            trusted: true,
        }]);
        let download = DownloadOptions {
            chunk_size: 64 << 10,
            concurrency: 2,
            retry: quick_retry(),
        };
        Arc::new(
            Service::new(store, backends, Duration::from_secs(60)).with_download_options(download),
        )
    }

    /// A build directory holding the generated artifacts.
    fn build_dir(&self, name: &str) -> PathBuf {
        let root = self.tmp.path().join(name);
        let artifacts = root.join("artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        for s in specs() {
            generate_artifact_dir(&artifacts, &s).unwrap();
        }
        root
    }

    fn publish_input(&self, run_id: &str) -> PublishRequest {
        PublishRequest {
            build_dir: self.build_dir(&format!("build-{run_id}")),
            stage: "math-libs".into(),
            family: "generic".into(),
            run: run(run_id),
            compression: Compression::Zstd,
            fingerprints: ["blas", "rand"]
                .iter()
                .map(|n| (n.to_string(), fp(n)))
                .collect(),
            reused_from: BTreeMap::new(),
            compression_level: None,
            branch: None,
        }
    }

    /// Publishes run `run_id` through the (clean) proxy.
    async fn publish(&self, run_id: &str) {
        self.service(&format!("publisher-{run_id}"))
            .publish(self.publish_input(run_id))
            .await
            .unwrap();
    }
}

fn resolve_input() -> ResolveRequest {
    ResolveRequest {
        stage: "math-libs".into(),
        family: "gfx94X-dcgpu".into(),
        platform: cairn_fingerprint::Platform::Linux,
        wanted: ["blas", "rand"]
            .iter()
            .map(|n| Wanted {
                selector: ArchiveSelector::parse(n).unwrap(),
                fingerprint: Some(fp(n)),
            })
            .collect(),
        policy: Policy::default(),
        exclude_components: vec![],
    }
}

/// Resolves every wanted artifact and makes each chosen archive local; returns the tree digests.
async fn fetch_all(svc: &Service) -> Result<Vec<Blake3>, ServiceError> {
    let resolved = svc.resolve(&resolve_input()).await?;
    let mut trees = Vec::new();
    for r in &resolved {
        let (candidate, archives) = r
            .chosen
            .as_ref()
            .unwrap_or_else(|| panic!("`{}` not resolved: {:?}", r.selector, r.explanation));
        for a in archives {
            let (local, _lease) = svc.make_local(candidate, a).await?;
            assert_eq!(Some(local.tree_digest), a.tree_digest);
            trees.push(local.tree_digest);
        }
    }
    assert_eq!(trees.len(), specs().len());
    Ok(trees)
}

/// The store holds nothing corrupt, partial or dangling: `verify` is clean, no blob file is outside the
/// index, and every index entry resolves.
fn assert_store_sound(store: &LocalStore, case: &str) {
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{case}: verify: {report:?}");
    assert_eq!(report.orphans, 0, "{case}: blob files outside the index");
    assert!(
        report.stray.is_empty(),
        "{case}: stray files {:?}",
        report.stray
    );
    let problems = index_problems(store);
    assert!(problems.is_empty(), "{case}: {problems:?}");
}

/// After a failed fetch: nothing of the failed archives is in the index.
fn assert_nothing_ingested(store: &LocalStore, case: &str) {
    let stats = store.stats().unwrap();
    assert_eq!(
        (stats.archives, stats.blobs, stats.bytes),
        (0, 0, 0),
        "{case}: a failed fetch left content in the store"
    );
}

/// Every producer record in the bucket (trusted and untrusted areas) names archives, sidecars and tree
/// manifests that exist. Returns the number of records checked.
pub(crate) async fn assert_records_complete(storage: &dyn Storage) -> usize {
    let mut checked = 0;
    for area in ["cairn/fp/", "untrusted/cairn/fp/"] {
        for obj in storage.list(area, None).await.unwrap().objects {
            let bytes = storage.get_bytes(&obj.key).await.unwrap();
            let fp: Blake3 = obj
                .key
                .trim_start_matches("untrusted/")
                .split('/')
                .nth(2)
                .unwrap()
                .parse()
                .unwrap();
            let record = ProducerRecord::parse(&bytes, &obj.key, &fp)
                .unwrap_or_else(|e| panic!("record `{}` does not parse: {e}", obj.key));
            for a in &record.archives {
                for key in [
                    a.key.clone(),
                    format!("{}.sha256sum", a.key),
                    cairn_fingerprint::layout::tree_manifest_key(&a.tree_digest),
                ] {
                    assert!(
                        storage.exists(&key).await.unwrap(),
                        "record `{}` names `{key}`, which does not exist",
                        obj.key
                    );
                }
            }
            checked += 1;
        }
    }
    checked
}

/// Transient faults on every download: each is ridden out by retries and resumes, the content is
/// verified, and the store is sound. One row of the matrix per fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_download_faults_are_ridden_out() {
    let s3 = cairn_testkit::require_s3!();
    let rig = Rig::new(&s3, "transient_download_faults").await;
    rig.publish("7001").await;
    let cases: Vec<(&str, Fault, usize)> = vec![
        ("reset mid-body", Fault::Reset, 3),
        ("truncated body, correct length", Fault::Truncate, 3),
        ("500 InternalError", Fault::Status(500), 2),
        ("503 ServiceUnavailable", Fault::Status(503), 2),
        ("503 SlowDown", Fault::SlowDown, 3),
        (
            "stall mid-body > timeout",
            Fault::Stall(Duration::from_secs(60)),
            1,
        ),
        (
            "stall before headers > timeout",
            Fault::StallHeaders(Duration::from_secs(60)),
            1,
        ),
    ];
    for (i, (case, fault, times)) in cases.into_iter().enumerate() {
        let svc = rig.service(&format!("store-{i}"));
        // Resolve first through a clean proxy (records are cached), so the faults hit archive GETs.
        svc.resolve(&resolve_input()).await.unwrap();
        rig.proxy.reset_counts();
        rig.proxy.inject("GET", times, fault.clone());
        fetch_all(&svc)
            .await
            .unwrap_or_else(|e| panic!("{case}: fetch failed: {e}"));
        assert_eq!(
            rig.proxy.faults_served(),
            times as u64,
            "{case}: every planned fault was hit"
        );
        rig.proxy.clear();
        assert_store_sound(svc.store(), case);
        assert_eq!(svc.store().stats().unwrap().archives, 3, "{case}");
        // The next request is answered from the CAS.
        let gets = rig.proxy.requests("GET");
        fetch_all(&svc).await.unwrap();
        assert_eq!(
            rig.proxy.requests("GET"),
            gets,
            "{case}: CAS hit downloads nothing"
        );
        eprintln!("fault matrix | download | {case} ×{times} | success after retry | verify clean");
    }
}

/// Faults that do not stop: the fetch fails with an error naming the object, within the retry budget;
/// nothing partial is kept; once the fault is gone the same service fetches everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_download_faults_fail_clearly_and_recover() {
    let s3 = cairn_testkit::require_s3!();
    let rig = Rig::new(&s3, "persistent_download_faults").await;
    rig.publish("7002").await;
    let cases: Vec<(&str, Fault)> = vec![
        ("reset mid-body", Fault::Reset),
        ("truncated body, correct length", Fault::Truncate),
        ("500 InternalError", Fault::Status(500)),
        ("503 SlowDown", Fault::SlowDown),
        (
            "stall mid-body > timeout",
            Fault::Stall(Duration::from_secs(60)),
        ),
    ];
    for (i, (case, fault)) in cases.into_iter().enumerate() {
        let svc = rig.service(&format!("store-{i}"));
        svc.resolve(&resolve_input()).await.unwrap();
        rig.proxy.inject_always("GET", fault.clone());
        let err = fetch_all(&svc).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("7002-linux/") && msg.contains(".tar.zst"),
            "{case}: the error names the object: {msg}"
        );
        // A storage outage is a storage error (gRPC `Unavailable`), not a refused archive.
        assert!(
            matches!(err, ServiceError::Storage(StorageError::Exhausted { .. })),
            "{case}: {err:?}"
        );
        assert!(
            msg.contains("after 4 attempts"),
            "{case}: the error says the retry budget ran out: {msg}"
        );
        assert_store_sound(svc.store(), case);
        assert_nothing_ingested(svc.store(), case);
        rig.proxy.clear();
        fetch_all(&svc)
            .await
            .unwrap_or_else(|e| panic!("{case}: fetch after the fault failed: {e}"));
        assert_store_sound(svc.store(), case);
        eprintln!("fault matrix | download | {case} (persistent) | error: {msg} | recovers");
    }
}

/// `bytes` with one byte flipped in the middle: same size, wrong content (bit rot, a bad write).
fn flipped(bytes: &[u8]) -> bytes::Bytes {
    let mut out = bytes.to_vec();
    let mid = out.len() / 2;
    out[mid] ^= 0x5a;
    out.into()
}

/// Whether `err` refuses the archive at `key` as corrupt: its SHA-256 differs from the record's or
/// sidecar's, or (found first, while decoding) its zstd frame checksum fails. Both are `DataLoss`.
fn refused_as_corrupt(err: &ServiceError, key: &str) -> bool {
    let ServiceError::Store(e) = err else {
        return false;
    };
    match e.root() {
        StoreError::Sha256Mismatch { key: k, .. } => k.ends_with(key),
        StoreError::Archive { key: k, source } => {
            k.ends_with(key) && source.to_string().contains("checksum")
        }
        _ => false,
    }
}

/// Wrong bytes under a producer record: the object is corrupted in the bucket (same size), or replaced
/// by another valid archive (other size). The first is refused as corrupt (its zstd frame checksum,
/// or its SHA-256 against the record), the second as data loss naming both sizes; nothing is ingested either way, and restoring
/// the object makes the next fetch succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_archive_is_refused_against_the_record() {
    let s3 = cairn_testkit::require_s3!();
    let rig = Rig::new(&s3, "tampered_archive_record").await;
    rig.publish("7003").await;
    let key = "7003-linux/blas_lib_generic.tar.zst";
    let original = rig.direct.get_bytes(key).await.unwrap();

    rig.direct
        .put(key, PutBody::Bytes(flipped(&original)))
        .await
        .unwrap();
    let svc = rig.service("store");
    let err = fetch_all(&svc).await.unwrap_err();
    assert!(refused_as_corrupt(&err, key), "{err:?}");
    assert_store_sound(svc.store(), "flipped byte");
    assert!(
        svc.store()
            .index()
            .keys()
            .unwrap()
            .iter()
            .all(|(k, _, _)| !k.ends_with(key)),
        "the refused archive is not indexed"
    );
    eprintln!(
        "fault matrix | download | wrong bytes (same size) vs record | error: {err} | recovers"
    );

    // A well-formed archive of other content and size: refused before any of it is trusted.
    let other = rig
        .direct
        .get_bytes("7003-linux/rand_lib_generic.tar.zst")
        .await
        .unwrap();
    assert_ne!(other.len(), original.len());
    rig.direct.put(key, PutBody::Bytes(other)).await.unwrap();
    let svc = rig.service("store-2");
    let err = fetch_all(&svc).await.unwrap_err();
    assert!(
        matches!(&err, ServiceError::DataLoss(m) if m.contains(key) && m.contains(&original.len().to_string())),
        "{err:?}"
    );
    assert_store_sound(svc.store(), "replaced");
    eprintln!(
        "fault matrix | download | other object (other size) vs record | error: {err} | recovers"
    );

    rig.direct.put(key, PutBody::Bytes(original)).await.unwrap();
    fetch_all(&svc).await.unwrap();
    assert_store_sound(svc.store(), "restored");
}

/// Wrong bytes in a run published without Cairn: the `.sha256sum` sidecar is the check. Also a sidecar
/// that is not a digest at all is a clear data-loss error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_archive_is_refused_against_the_sidecar() {
    let s3 = cairn_testkit::require_s3!();
    let rig = Rig::new(&s3, "tampered_archive_sidecar").await;
    // A plain TheRock run: archives and sidecars, no records.
    let out = rig.tmp.path().join("plain");
    let built = rig.build_dir("plain-build");
    let mut keys = Vec::new();
    for s in specs() {
        let a = cairn_testkit::datagen::archive_artifact_dir(
            &built.join("artifacts").join(s.dir_name()),
            &out,
            Compression::Zstd,
        )
        .unwrap();
        let key = format!("7004-linux/{}", s.archive_name(Compression::Zstd));
        rig.direct
            .put(&key, PutBody::File(a.path.clone()))
            .await
            .unwrap();
        rig.direct
            .put(
                &format!("{key}.sha256sum"),
                PutBody::File(a.sha256sum_path.clone()),
            )
            .await
            .unwrap();
        keys.push(key);
    }
    let original = rig.direct.get_bytes(&keys[0]).await.unwrap();
    rig.direct
        .put(&keys[0], PutBody::Bytes(flipped(&original)))
        .await
        .unwrap();

    let svc = rig.service("store");
    // One bad archive does not stop the import: the others are ingested, the bad one reported.
    let (_, ingested, failures) = svc.import(&import_request("7004", true)).await.unwrap();
    assert_eq!(ingested, 2);
    assert_eq!(failures.len(), 1, "{failures:?}");
    let (key, err) = &failures[0];
    assert_eq!(key, &keys[0]);
    assert!(
        err.contains(&keys[0]) && (err.contains("SHA-256") || err.contains("checksum")),
        "{err}"
    );
    assert_store_sound(svc.store(), "tampered vs sidecar");
    eprintln!("fault matrix | import | wrong bytes vs sidecar | error: {err} | recovers");

    // A sidecar that is not a digest: refused as data loss naming the sidecar.
    rig.direct
        .put(&keys[0], PutBody::Bytes(original))
        .await
        .unwrap();
    let sidecar = format!("{}.sha256sum", keys[0]);
    let good_sidecar = rig.direct.get_bytes(&sidecar).await.unwrap();
    rig.direct
        .put(&sidecar, PutBody::Bytes("not a digest\n".into()))
        .await
        .unwrap();
    let (_, _, failures) = svc.import(&import_request("7004", true)).await.unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let err = &failures[0].1;
    assert!(err.contains(&sidecar), "{err}");
    assert_store_sound(svc.store(), "bad sidecar");
    eprintln!("fault matrix | import | malformed sidecar | error: {err} | recovers");

    rig.direct
        .put(&sidecar, PutBody::Bytes(good_sidecar))
        .await
        .unwrap();
    let (_, ingested, failures) = svc.import(&import_request("7004", true)).await.unwrap();
    assert_eq!(ingested, 3);
    assert!(failures.is_empty());
    assert_store_sound(svc.store(), "restored");
}

/// Faults while resolving (LIST and record GETs): transient ones are retried; a persistent one is an
/// error, and it is not cached as "no producer" — the next resolve finds the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_faults_are_retried_and_never_cached_as_misses() {
    let s3 = cairn_testkit::require_s3!();
    let rig = Rig::new(&s3, "resolve_faults").await;
    rig.publish("7005").await;
    let svc = rig.service("store");
    rig.proxy.inject("GET", 2, Fault::SlowDown);
    rig.proxy.inject("GET", 1, Fault::Reset);
    let res = svc.resolve(&resolve_input()).await.unwrap();
    assert!(res.iter().all(|r| r.chosen.is_some()), "{res:?}");
    assert_eq!(rig.proxy.faults_served(), 3);
    eprintln!("fault matrix | resolve | SlowDown ×2 + reset | success after retry | -");

    let svc = rig.service("store-2");
    rig.proxy.inject_always("GET", Fault::Status(503));
    let err = svc.resolve(&resolve_input()).await.unwrap_err();
    assert!(
        matches!(err, ServiceError::Storage(StorageError::Exhausted { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("cairn/fp/"), "{err}");
    rig.proxy.clear();
    let res = svc.resolve(&resolve_input()).await.unwrap();
    assert!(
        res.iter().all(|r| r.chosen.is_some()),
        "a failed LIST must not be remembered as a miss: {res:?}"
    );
    fetch_all(&svc).await.unwrap();
    assert_store_sound(svc.store(), "resolve");
    eprintln!("fault matrix | resolve | 503 (persistent) | error: {err} | recovers");
}

/// Faults while publishing: transient PUT failures are retried; a persistent one fails the publish
/// before any producer record is written; publishing again once the fault is gone completes, and every
/// record then names objects that exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_faults_never_leave_records_without_objects() {
    let s3 = cairn_testkit::require_s3!();
    let rig = Rig::new(&s3, "publish_faults").await;
    let svc = rig.service("publisher");

    rig.proxy.inject("PUT", 2, Fault::Status(500));
    rig.proxy.inject("PUT", 1, Fault::SlowDown);
    svc.publish(rig.publish_input("7006")).await.unwrap();
    assert_eq!(rig.proxy.faults_served(), 3);
    assert_eq!(assert_records_complete(rig.direct.as_ref()).await, 2);
    eprintln!(
        "fault matrix | publish | PUT 500 ×2 + SlowDown | success after retry | records complete"
    );

    for (case, fault) in [
        ("PUT 503 (persistent)", Fault::Status(503)),
        // The proxy forwards the upload, then resets the response mid-head: the server stored the
        // object, the client cannot know. Retries hit the same fault; records are never written.
        (
            "PUT response reset after the upload (persistent)",
            Fault::Reset,
        ),
        (
            "PUT unanswered > timeout (persistent)",
            Fault::StallHeaders(Duration::from_secs(60)),
        ),
    ] {
        rig.proxy.inject_always("PUT", fault);
        let err = svc.publish(rig.publish_input("7007")).await.unwrap_err();
        assert!(
            matches!(err, ServiceError::Storage(StorageError::Exhausted { .. })),
            "{case}: {err:?}"
        );
        assert!(err.to_string().contains("7007-linux/"), "{case}: {err}");
        rig.proxy.clear();
        // Only run 7006's records exist: the failed publish wrote none.
        assert_eq!(
            assert_records_complete(rig.direct.as_ref()).await,
            2,
            "{case}"
        );
        let listed = rig.direct.list("cairn/", None).await.unwrap();
        assert!(
            listed.objects.iter().all(|o| !o.key.contains("7007")),
            "{case}: a record of the failed publish exists"
        );
        assert_store_sound(svc.store(), case);
        eprintln!("fault matrix | publish | {case} | error: {err} | no records written");
    }
    svc.publish(rig.publish_input("7007")).await.unwrap();
    assert_eq!(assert_records_complete(rig.direct.as_ref()).await, 4);
    eprintln!(
        "fault matrix | publish | retry after the persistent faults | success | records complete"
    );
    assert_store_sound(svc.store(), "publish");
}

/// A producer record whose archive was deleted from the bucket (lifecycle expiry, a half-deleted run):
/// the fetch fails as "not found" naming the key, without retries, and the store stays sound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_missing_under_a_record_is_not_found() {
    let s3 = cairn_testkit::require_s3!();
    let rig = Rig::new(&s3, "archive_missing").await;
    rig.publish("7008").await;
    let key = "7008-linux/rand_lib_generic.tar.zst";
    rig.direct
        .client()
        .delete_object()
        .bucket(rig.direct.bucket())
        .key(key)
        .send()
        .await
        .unwrap();
    let svc = rig.service("store");
    let err = fetch_all(&svc).await.unwrap_err();
    assert!(
        matches!(&err, ServiceError::Storage(e) if e.is_not_found()),
        "{err:?}"
    );
    assert!(err.to_string().contains(key), "{err}");
    assert_store_sound(svc.store(), "missing");
    eprintln!("fault matrix | download | object deleted under its record | error: {err} | -");
}

/// An import of run `run_id` of TheRock on Linux.
fn import_request(run_id: &str, ingest: bool) -> ImportRequest {
    ImportRequest {
        run: cairn_fingerprint::layout::RunSpec::new(run_id, cairn_fingerprint::Platform::Linux),
        ingest,
    }
}

/// What `cairn import` prints when cairnd's S3 endpoint cannot serve: a refused connection is the
/// storage's fault, named as such (never "cairnd went away"), and a plain web server that answers 404
/// to everything is "not an S3-compatible server", never "object not found".
#[test]
fn bad_storage_endpoints_are_named_not_blamed_on_the_daemon() {
    use cairn_testkit::daemon::{Daemon, Storage};
    // A port with nothing listening: bind, note, close.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // A web server that is not S3: every request gets a bare 404, for a bounded number of requests.
    let web = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let web_port = web.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for conn in web.incoming().take(64) {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 8192];
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
            );
        }
    });
    let cases = [
        (closed, "storage endpoint", "Connection refused"),
        (
            web_port,
            "does not look like an S3-compatible server",
            "CAIRN_S3_ENDPOINT",
        ),
    ];
    for (port, expect, also) in cases {
        let daemon = Daemon::start(Storage::S3 {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: "therock-ci-artifacts".into(),
        })
        .unwrap();
        let out = daemon
            .cairn()
            .args(["import", "--run-id", "4242"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "port {port}: {stderr}");
        assert!(stderr.contains(expect), "port {port}: {stderr}");
        assert!(stderr.contains(also), "port {port}: {stderr}");
        assert!(!stderr.contains("went away"), "port {port}: {stderr}");
        assert!(!stderr.contains("not found in"), "port {port}: {stderr}");
    }
}
