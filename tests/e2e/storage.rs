//! Storage backends: one behaviour suite run against the real S3 test server (moto) and the local
//! directory backend, ranged parallel downloads, multipart uploads, and faults injected by a proxy
//! between the client and the server.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_daemon::storage::transfer::{self, DownloadOptions};
use cairn_daemon::storage::{
    LocalStorage, PutBody, PutOutcome, RetryPolicy, S3Storage, Storage, StorageError,
    TransferSnapshot, UploadOptions,
};
use cairn_testkit::faultproxy::{Fault, FaultProxy};
use cairn_testkit::s3server::S3Server;
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// Deterministic, poorly compressible test bytes.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn local() -> (tempfile::TempDir, Arc<LocalStorage>) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(LocalStorage::new(dir.path().join("bucket")).unwrap());
    (dir, storage)
}

async fn s3_bucket(s3: &S3Server, test: &str) -> Arc<S3Storage> {
    Arc::new(s3.new_bucket(test).await.unwrap())
}

async fn read_all(
    storage: Arc<dyn Storage>,
    key: &str,
    opts: &DownloadOptions,
) -> Result<Vec<u8>, StorageError> {
    let dl = transfer::download(storage, key, None, opts).await?;
    let size = dl.size();
    let mut stream = dl.into_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    assert_eq!(
        out.len() as u64,
        size,
        "stream ended without error before the promised size"
    );
    Ok(out)
}

fn keys(objects: &[cairn_daemon::storage::ObjectMeta]) -> Vec<&str> {
    objects.iter().map(|o| o.key.as_str()).collect()
}

/// The behaviour every backend must share.
async fn behaviour_suite(storage: Arc<dyn Storage>) {
    let run = "123-linux";
    let archive = data(300_000, 1);
    storage
        .put(
            &format!("{run}/blas_lib_gfx94X.tar.zst"),
            PutBody::Bytes(archive.clone().into()),
        )
        .await
        .unwrap();
    storage
        .put(
            &format!("{run}/blas_lib_gfx94X.tar.zst.sha256sum"),
            PutBody::Bytes(Bytes::from(sha(&archive))),
        )
        .await
        .unwrap();
    storage
        .put(
            &format!("{run}/logs/blas/build.log"),
            PutBody::Bytes(Bytes::from_static(b"log")),
        )
        .await
        .unwrap();
    storage
        .put(
            &format!("{run}/logs/index.html"),
            PutBody::Bytes(Bytes::from_static(b"<html>")),
        )
        .await
        .unwrap();
    storage
        .put(
            "124-linux/other.tar.zst",
            PutBody::Bytes(Bytes::from_static(b"x")),
        )
        .await
        .unwrap();

    // HEAD: size of an existing object, `None` for a missing one.
    let meta = storage
        .head(&format!("{run}/blas_lib_gfx94X.tar.zst"))
        .await
        .unwrap()
        .expect("object exists");
    assert_eq!(meta.size, archive.len() as u64);
    assert!(
        storage
            .head(&format!("{run}/missing.tar.zst"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !storage
            .exists(&format!("{run}/missing.tar.zst"))
            .await
            .unwrap()
    );

    // Ranged GET returns exactly the range; an empty range is empty; a whole GET is the object.
    let key = format!("{run}/blas_lib_gfx94X.tar.zst");
    let part = cairn_daemon::storage::collect(storage.get_range(&key, 1000..71_000).await.unwrap())
        .await
        .unwrap();
    assert!(
        part[..] == archive[1000..71_000],
        "ranged GET returned other bytes"
    );
    let empty = cairn_daemon::storage::collect(storage.get_range(&key, 5..5).await.unwrap())
        .await
        .unwrap();
    assert!(empty.is_empty());
    let whole = storage.get_bytes(&key).await.unwrap();
    assert_eq!(sha(&whole), sha(&archive));

    // A missing object is NotFound, naming the key.
    let err = storage
        .get_bytes(&format!("{run}/missing.tar.zst"))
        .await
        .unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains("`123-linux/missing.tar.zst`"),
        "{err}"
    );
    let err = match storage
        .get_range(&format!("{run}/missing.tar.zst"), 0..10)
        .await
    {
        Ok(stream) => cairn_daemon::storage::collect(stream).await.unwrap_err(),
        Err(e) => e,
    };
    assert!(err.is_not_found(), "{err}");

    // LIST with a delimiter: objects at the run root, and `logs/` as a common prefix.
    let listing = storage.list(&format!("{run}/"), Some("/")).await.unwrap();
    assert_eq!(
        keys(&listing.objects),
        [
            "123-linux/blas_lib_gfx94X.tar.zst",
            "123-linux/blas_lib_gfx94X.tar.zst.sha256sum"
        ]
    );
    assert_eq!(listing.common_prefixes, ["123-linux/logs/"]);
    assert_eq!(listing.objects[0].size, archive.len() as u64);

    // LIST without a delimiter recurses; a prefix is a string prefix, not a directory.
    let listing = storage.list(run, None).await.unwrap();
    assert_eq!(listing.objects.len(), 4);
    assert!(listing.common_prefixes.is_empty());
    let listing = storage.list("12", Some("/")).await.unwrap();
    assert!(listing.objects.is_empty());
    assert_eq!(listing.common_prefixes, ["123-linux/", "124-linux/"]);
    let listing = storage
        .list(&format!("{run}/blas_lib"), None)
        .await
        .unwrap();
    assert_eq!(listing.objects.len(), 2);
    assert!(
        storage
            .list("999-linux/", Some("/"))
            .await
            .unwrap()
            .objects
            .is_empty()
    );

    // A range past the end of the object is the caller's error: permanent, not "not found".
    let err = match storage.get_range(&key, 0..archive.len() as u64 + 10).await {
        Ok(stream) => cairn_daemon::storage::collect(stream).await.unwrap_err(),
        Err(e) => e,
    };
    assert!(matches!(err, StorageError::Permanent { .. }), "{err:?}");
    assert!(err.to_string().contains("outside the object"), "{err}");

    // PUT of a file, and overwriting an object replaces it whole.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.tar.zst");
    std::fs::write(&file, data(50_000, 2)).unwrap();
    storage.put(&key, PutBody::File(file)).await.unwrap();
    assert_eq!(
        sha(&storage.get_bytes(&key).await.unwrap()),
        sha(&data(50_000, 2))
    );
    assert_eq!(storage.head(&key).await.unwrap().unwrap().size, 50_000);

    // A PUT of a missing file fails naming the file.
    let err = storage
        .put("x", PutBody::File(dir.path().join("nope")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");

    // put_if_absent: created once, then left alone.
    let rec = "cairn/fp/abc/123-linux";
    assert_eq!(
        storage
            .put_if_absent(rec, Bytes::from_static(b"first"))
            .await
            .unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        storage
            .put_if_absent(rec, Bytes::from_static(b"second"))
            .await
            .unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(&storage.get_bytes(rec).await.unwrap()[..], b"first");
}

/// Two writers race for each of several keys: exactly one `Created` per key, and the object is the
/// winner's bytes.
async fn put_if_absent_race(storage: Arc<dyn Storage>) {
    for round in 0..8 {
        let key = format!("cairn/fp/race{round}/1-linux");
        let (a, b) = tokio::join!(
            tokio::spawn({
                let (s, k) = (storage.clone(), key.clone());
                async move { s.put_if_absent(&k, Bytes::from_static(b"writer-a")).await }
            }),
            tokio::spawn({
                let (s, k) = (storage.clone(), key.clone());
                async move { s.put_if_absent(&k, Bytes::from_static(b"writer-b")).await }
            }),
        );
        let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
        let created = [a, b].iter().filter(|o| **o == PutOutcome::Created).count();
        assert_eq!(created, 1, "round {round}: outcomes {a:?} {b:?}");
        let winner: &[u8] = if a == PutOutcome::Created {
            b"writer-a"
        } else {
            b"writer-b"
        };
        assert_eq!(
            &storage.get_bytes(&key).await.unwrap()[..],
            winner,
            "round {round}"
        );
    }
}

/// A multi-MB object downloaded in parallel ranges is byte-identical, each range fetched once.
async fn ranged_download(storage: Arc<dyn Storage>) {
    let body = data(3 << 20, 3);
    storage
        .put("r/big.tar.zst", PutBody::Bytes(body.clone().into()))
        .await
        .unwrap();
    let before = storage.stats().snapshot();
    let opts = DownloadOptions {
        chunk_size: 256 << 10,
        concurrency: 4,
        ..Default::default()
    };
    let got = read_all(storage.clone(), "r/big.tar.zst", &opts)
        .await
        .unwrap();
    assert_eq!(sha(&got), sha(&body));
    let after = storage.stats().snapshot();
    assert_eq!(
        after.get_requests - before.get_requests,
        12,
        "one GET per 256 KiB range"
    );
    assert_eq!(
        after.get_bytes - before.get_bytes,
        body.len() as u64,
        "each byte downloaded once"
    );
}

/// Small documents (records, manifests, sidecars) are read whole and bounded: one within the cap
/// (an empty one included) comes back byte-exact; a larger one is refused as `TooLarge`, naming its
/// size, without its body being read. Returns the requests it took (after, minus before).
async fn capped_documents(storage: Arc<dyn Storage>) -> (TransferSnapshot, TransferSnapshot) {
    let doc = data(3_000, 7);
    let big = data(5_000, 8);
    for (key, body) in [
        ("d/doc.json", doc.clone()),
        ("d/big.json", big),
        ("d/empty.json", Vec::new()),
    ] {
        storage.put(key, PutBody::Bytes(body.into())).await.unwrap();
    }
    let before = storage.stats().snapshot();
    let got = storage.get_bytes_capped("d/doc.json", 4096).await.unwrap();
    assert_eq!(&got[..], &doc[..]);
    let empty = storage
        .get_bytes_capped("d/empty.json", 4096)
        .await
        .unwrap();
    assert!(empty.is_empty());
    let err = storage
        .get_bytes_capped("d/big.json", 4096)
        .await
        .unwrap_err();
    assert!(err.is_too_large(), "{err}");
    assert!(
        err.to_string().contains("5000 bytes, more than the 4096"),
        "{err}"
    );
    let missing = storage
        .get_bytes_capped("d/missing.json", 4096)
        .await
        .unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    (before, storage.stats().snapshot())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_capped_documents() {
    let (_dir, storage) = local();
    capped_documents(storage).await;
}

/// On S3 a document is one GET, no HEAD first (a round trip less per record on every resolve and
/// per sidecar on every cold fetch), and an oversized one's body is not downloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_capped_documents_take_one_get_each() {
    let s3 = cairn_testkit::require_s3!();
    let (before, after) = capped_documents(s3_bucket(&s3, "s3_capped_documents").await).await;
    assert_eq!(after.head_requests - before.head_requests, 0, "{after:?}");
    assert_eq!(
        after.get_requests - before.get_requests,
        4,
        "one GET per document: {after:?}"
    );
    assert_eq!(
        after.get_bytes - before.get_bytes,
        3_000,
        "only the document within the cap is downloaded: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_behaviour() {
    let (_dir, storage) = local();
    behaviour_suite(storage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_behaviour() {
    let s3 = cairn_testkit::require_s3!();
    behaviour_suite(s3_bucket(&s3, "s3_behaviour").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_put_if_absent_race() {
    let (_dir, storage) = local();
    put_if_absent_race(storage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_put_if_absent_race() {
    let s3 = cairn_testkit::require_s3!();
    put_if_absent_race(s3_bucket(&s3, "s3_put_if_absent_race").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_ranged_download() {
    let (_dir, storage) = local();
    ranged_download(storage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_ranged_download() {
    let s3 = cairn_testkit::require_s3!();
    ranged_download(s3_bucket(&s3, "s3_ranged_download").await).await;
}

/// The local backend is TheRock's `--local-staging-dir` layout: `{root}/{key}`, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_layout_is_the_staging_dir() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("staging");
    // Written the way TheRock's LocalDirectoryBackend does, without Cairn.
    std::fs::create_dir_all(root.join("123-linux")).unwrap();
    std::fs::write(root.join("123-linux/base_lib_generic.tar.zst"), b"archive").unwrap();
    std::fs::write(
        root.join("123-linux/base_lib_generic.tar.zst.sha256sum"),
        sha(b"archive"),
    )
    .unwrap();
    let storage = LocalStorage::new(&root).unwrap();
    let listing = storage.list("123-linux/", Some("/")).await.unwrap();
    assert_eq!(
        keys(&listing.objects),
        [
            "123-linux/base_lib_generic.tar.zst",
            "123-linux/base_lib_generic.tar.zst.sha256sum"
        ]
    );
    assert_eq!(
        &storage
            .get_bytes("123-linux/base_lib_generic.tar.zst")
            .await
            .unwrap()[..],
        b"archive"
    );
    // And what Cairn writes lands where TheRock looks.
    storage
        .put(
            "124-linux/blas_lib_gfx94X.tar.zst",
            PutBody::Bytes(Bytes::from_static(b"blas")),
        )
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(root.join("124-linux/blas_lib_gfx94X.tar.zst")).unwrap(),
        b"blas"
    );
    assert_eq!(storage.describe(), format!("file://{}", root.display()));
}

/// Anonymous mode sends unsigned requests (public buckets need no credentials).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_anonymous_reads_are_unsigned() {
    let s3 = cairn_testkit::require_s3!();
    let signed = s3_bucket(&s3, "s3_anonymous_reads_are_unsigned").await;
    signed
        .put(
            "run/a.tar.zst",
            PutBody::Bytes(Bytes::from_static(b"public")),
        )
        .await
        .unwrap();
    // Public like TheRock's CI buckets: anyone may read and list.
    let client = signed.client();
    client
        .put_bucket_acl()
        .bucket(signed.bucket())
        .acl("public-read".into())
        .send()
        .await
        .unwrap();
    client
        .put_object_acl()
        .bucket(signed.bucket())
        .key("run/a.tar.zst")
        .acl("public-read".into())
        .send()
        .await
        .unwrap();
    let proxy = FaultProxy::start(s3.endpoint()).await.unwrap();
    let mut config = s3.config_via(&proxy.endpoint(), signed.bucket());
    config.anonymous = true;
    let anon = S3Storage::connect(config).await;
    assert_eq!(
        &anon.get_bytes("run/a.tar.zst").await.unwrap()[..],
        b"public"
    );
    assert_eq!(
        keys(&anon.list("run/", Some("/")).await.unwrap().objects),
        ["run/a.tar.zst"]
    );
    assert_eq!(proxy.requests("GET"), 2);
    assert_eq!(
        proxy.signed_requests(),
        0,
        "anonymous requests carried an Authorization header"
    );
    // The same through a signed client is signed, so the check above can fail.
    let signed_via_proxy =
        S3Storage::connect(s3.config_via(&proxy.endpoint(), signed.bucket())).await;
    signed_via_proxy.get_bytes("run/a.tar.zst").await.unwrap();
    assert_eq!(proxy.signed_requests(), 1);
}

/// Listing follows continuation tokens: 35 keys in pages of 10 come back whole, in 4 LIST requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_list_pagination() {
    let s3 = cairn_testkit::require_s3!();
    let name = s3_bucket(&s3, "s3_list_pagination")
        .await
        .bucket()
        .to_owned();
    let mut config = s3.config(&name);
    config.list_page_size = Some(10);
    let storage = Arc::new(S3Storage::connect(config).await);
    let (_dir, local) = local();
    let mut expected = Vec::new();
    for i in 0..35 {
        let key = format!("run/a{i:03}.tar.zst");
        storage
            .put(&key, PutBody::Bytes(Bytes::from(vec![b'x'; i])))
            .await
            .unwrap();
        local
            .put(&key, PutBody::Bytes(Bytes::from(vec![b'x'; i])))
            .await
            .unwrap();
        expected.push(key);
    }
    storage
        .put("run/logs/x.log", PutBody::Bytes(Bytes::from_static(b"l")))
        .await
        .unwrap();
    local
        .put("run/logs/x.log", PutBody::Bytes(Bytes::from_static(b"l")))
        .await
        .unwrap();
    let before = storage.stats().snapshot().list_requests;
    let listing = storage.list("run/", Some("/")).await.unwrap();
    assert_eq!(storage.stats().snapshot().list_requests - before, 4);
    assert_eq!(
        keys(&listing.objects),
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(listing.objects[34].size, 34);
    assert_eq!(listing.common_prefixes, ["run/logs/"]);
    // The local directory lists the same objects with the same sizes.
    let local_listing = local.list("run/", Some("/")).await.unwrap();
    assert_eq!(keys(&local_listing.objects), keys(&listing.objects));
    assert_eq!(local_listing.common_prefixes, listing.common_prefixes);
    let sizes =
        |l: &cairn_daemon::storage::Listing| l.objects.iter().map(|o| o.size).collect::<Vec<_>>();
    assert_eq!(sizes(&local_listing), sizes(&listing));
}

/// A file above the multipart threshold is uploaded in parts and reads back byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_multipart_upload() {
    let s3 = cairn_testkit::require_s3!();
    let name = s3_bucket(&s3, "s3_multipart_upload")
        .await
        .bucket()
        .to_owned();
    let mut config = s3.config(&name);
    config.upload = UploadOptions {
        multipart_threshold: 6 << 20,
        part_size: 5 << 20,
        concurrency: 2,
    };
    let storage = Arc::new(S3Storage::connect(config).await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.tar.zst");
    let body = data((11 << 20) + 123, 4);
    std::fs::write(&file, &body).unwrap();
    storage
        .put("run/big.tar.zst", PutBody::File(file))
        .await
        .unwrap();
    let stats = storage.stats().snapshot();
    assert_eq!(stats.put_requests, 5, "create + 3 parts + complete");
    assert_eq!(stats.put_bytes, body.len() as u64);
    assert_eq!(
        storage.head("run/big.tar.zst").await.unwrap().unwrap().size,
        body.len() as u64
    );
    let opts = DownloadOptions {
        chunk_size: 1 << 20,
        concurrency: 4,
        ..Default::default()
    };
    let got = read_all(storage.clone(), "run/big.tar.zst", &opts)
        .await
        .unwrap();
    assert_eq!(sha(&got), sha(&body));
}

/// Reads of a missing bucket say so, instead of "not found" for the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_missing_bucket_is_a_clear_error() {
    let s3 = cairn_testkit::require_s3!();
    let storage = S3Storage::connect(s3.config("cairn-no-such-bucket-anywhere")).await;
    let err = storage.get_bytes("run/a.tar.zst").await.unwrap_err();
    assert!(
        !err.is_not_found() && err.to_string().contains("bucket does not exist"),
        "{err}"
    );
}

// ---- Faults, injected by a proxy between the client and the server.

/// A bucket reached through a fresh fault proxy, with short timeouts and a quick retry budget of 4.
async fn through_proxy(s3: &S3Server, test: &str) -> (FaultProxy, Arc<S3Storage>) {
    let name = s3_bucket(s3, test).await.bucket().to_owned();
    let proxy = FaultProxy::start(s3.endpoint()).await.unwrap();
    let mut config = s3.config_via(&proxy.endpoint(), &name);
    config.read_timeout = Duration::from_millis(1500);
    config.retry = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    (proxy, Arc::new(S3Storage::connect(config).await))
}

fn fault_opts() -> DownloadOptions {
    DownloadOptions {
        chunk_size: 512 << 10,
        concurrency: 3,
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
    }
}

/// Uploads a 2 MiB object through the (clean) proxy and returns its bytes.
async fn seed(storage: &S3Storage) -> Vec<u8> {
    let body = data(2 << 20, 5);
    storage
        .put("run/obj.tar.zst", PutBody::Bytes(body.clone().into()))
        .await
        .unwrap();
    body
}

async fn survives(fault: Fault, times: usize, test: &str) {
    let s3 = cairn_testkit::require_s3!();
    let (proxy, storage) = through_proxy(&s3, test).await;
    let body = seed(&storage).await;
    proxy.inject("GET", times, fault.clone());
    let got = read_all(storage.clone(), "run/obj.tar.zst", &fault_opts())
        .await
        .unwrap();
    assert_eq!(sha(&got), sha(&body), "{fault:?}: bytes differ");
    assert_eq!(
        proxy.faults_served(),
        times as u64,
        "{fault:?}: every planned fault was hit"
    );
    // 4 ranges, plus one extra GET for each fault that was hit.
    assert_eq!(proxy.requests("GET"), 4 + times as u64);
    assert!(storage.stats().snapshot().retries >= times as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_reset_mid_body_resumes() {
    survives(Fault::Reset, 3, "fault_reset_mid_body_resumes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_truncated_body_resumes() {
    survives(Fault::Truncate, 3, "fault_truncated_body_resumes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_500_is_retried() {
    survives(Fault::Status(500), 2, "fault_500_is_retried").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_503_slowdown_is_retried() {
    survives(Fault::SlowDown, 3, "fault_503_slowdown_is_retried").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_stall_mid_body_times_out_and_resumes() {
    survives(
        Fault::Stall(Duration::from_secs(30)),
        1,
        "fault_stall_mid_body_times_out_and_resumes",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_stall_before_headers_times_out_and_retries() {
    survives(
        Fault::StallHeaders(Duration::from_secs(30)),
        1,
        "fault_stall_before_headers_times_out_and_retries",
    )
    .await;
}

/// A server that keeps failing exhausts the budget: a clear error naming the key, no partial data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_persistent_503_fails_after_the_budget() {
    let s3 = cairn_testkit::require_s3!();
    let (proxy, storage) = through_proxy(&s3, "fault_persistent_503_fails_after_the_budget").await;
    seed(&storage).await;
    proxy.inject_always("GET", Fault::Status(503));
    let opts = DownloadOptions {
        concurrency: 1,
        ..fault_opts()
    };
    let err = read_all(storage.clone(), "run/obj.tar.zst", &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Exhausted { attempts: 4, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("`run/obj.tar.zst`") && msg.contains("after 4 attempts"),
        "{msg}"
    );
    // The backend's budget of 4 for the first range's request; the download then stops.
    assert_eq!(proxy.requests("GET"), 4);
}

/// A broken body that keeps breaking exhausts the resume budget of its chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_persistent_resets_fail_after_the_budget() {
    let s3 = cairn_testkit::require_s3!();
    let (proxy, storage) =
        through_proxy(&s3, "fault_persistent_resets_fail_after_the_budget").await;
    seed(&storage).await;
    proxy.inject_always("GET", Fault::Reset);
    let opts = DownloadOptions {
        concurrency: 1,
        ..fault_opts()
    };
    let err = read_all(storage.clone(), "run/obj.tar.zst", &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Exhausted { attempts: 4, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("`run/obj.tar.zst`"), "{err}");
    assert_eq!(
        proxy.requests("GET"),
        4,
        "one chunk, four resumes, then the download stops"
    );
}

/// Failed PUTs are retried: a 503 on a small object and a reset during a multipart upload both end
/// with the object stored whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_put_failures_are_retried() {
    let s3 = cairn_testkit::require_s3!();
    let name = s3_bucket(&s3, "fault_put_failures_are_retried")
        .await
        .bucket()
        .to_owned();
    let proxy = FaultProxy::start(s3.endpoint()).await.unwrap();
    let mut config = s3.config_via(&proxy.endpoint(), &name);
    config.retry = fault_opts().retry;
    config.upload = UploadOptions {
        multipart_threshold: 6 << 20,
        part_size: 5 << 20,
        concurrency: 2,
    };
    let storage = Arc::new(S3Storage::connect(config).await);

    proxy.inject("PUT", 2, Fault::SlowDown);
    storage
        .put("run/small", PutBody::Bytes(Bytes::from_static(b"small")))
        .await
        .unwrap();
    assert_eq!(&storage.get_bytes("run/small").await.unwrap()[..], b"small");
    assert_eq!((proxy.requests("PUT"), proxy.faults_served()), (3, 2));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.tar.zst");
    let body = data((10 << 20) + 7, 6);
    std::fs::write(&file, &body).unwrap();
    proxy.reset_counts();
    // Parts are PUTs: the first one sent is reset after the server stored it, then re-sent.
    proxy.inject("PUT", 1, Fault::Reset);
    storage
        .put("run/big.tar.zst", PutBody::File(file))
        .await
        .unwrap();
    assert_eq!(
        (proxy.requests("PUT"), proxy.faults_served()),
        (4, 1),
        "3 parts + 1 retry"
    );
    let got = read_all(storage.clone(), "run/big.tar.zst", &fault_opts())
        .await
        .unwrap();
    assert_eq!(sha(&got), sha(&body));
}

/// A missing object is "not found" at once: exactly one request reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_404_is_not_retried() {
    let s3 = cairn_testkit::require_s3!();
    let (proxy, storage) = through_proxy(&s3, "fault_404_is_not_retried").await;
    let err = transfer::download(storage.clone(), "run/missing.tar.zst", None, &fault_opts())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!((proxy.requests("HEAD"), proxy.requests("GET")), (1, 0));
    let err = storage.get_bytes("run/missing.tar.zst").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(proxy.requests("GET"), 1);
    assert_eq!(storage.stats().snapshot().retries, 0);
}
