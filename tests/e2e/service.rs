//! The daemon's service layer without gRPC: publish generated runs to a local-directory backend,
//! resolve fingerprints across runs (multi-base), make archives local, trust separation.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn_daemon::records::RunIdentity;
use cairn_daemon::service::policy::{ArchiveSelector, Policy, Wanted};
use cairn_daemon::service::{ImportRequest, PublishRequest, ResolveRequest, Service};
use cairn_daemon::storage::backends::{Backend, Backends};
use cairn_daemon::storage::local::LocalStorage;
use cairn_daemon::store::{LocalStore, StoreConfig};
use cairn_fingerprint::{Blake3, Compression};
use cairn_testkit::datagen::{ArtifactSpec, generate_artifact_dir, standard_set};

fn fp(name: &str, version: u8) -> Blake3 {
    Blake3::of(format!("{name}-{version}").as_bytes())
}

fn service(dir: &Path) -> Arc<Service> {
    let store = LocalStore::open(dir.join("store"), StoreConfig::default()).unwrap();
    let storage = Arc::new(LocalStorage::new(dir.join("bucket")).unwrap());
    let backends = Backends::from_list(vec![Backend {
        bucket: "*".into(),
        storage,
        trusted: true,
    }]);
    Arc::new(Service::new(store, backends, Duration::from_secs(60)))
}

fn run(run_id: &str, head_repo: &str) -> RunIdentity {
    RunIdentity {
        repo: "ROCm/TheRock".into(),
        workflow: "multi_arch_ci.yml".into(),
        run_id: run_id.into(),
        commit: format!("{:0>40}", run_id),
        platform: cairn_fingerprint::Platform::Linux,
        status: cairn_daemon::records::RunStatus::Success,
        head_repo: head_repo.into(),
    }
}

fn build_dir(root: &Path, specs: &[ArtifactSpec]) -> std::path::PathBuf {
    let artifacts = root.join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    for s in specs {
        generate_artifact_dir(&artifacts, s).unwrap();
    }
    root.to_path_buf()
}

fn wanted(names: &[(&str, u8)]) -> Vec<Wanted> {
    names
        .iter()
        .map(|(n, v)| Wanted {
            selector: ArchiveSelector::parse(n).unwrap(),
            fingerprint: Some(fp(n, *v)),
        })
        .collect()
}

fn input(wanted: Vec<Wanted>, policy: Policy) -> ResolveRequest {
    ResolveRequest {
        stage: "math-libs".into(),
        family: "gfx94X-dcgpu".into(),
        platform: cairn_fingerprint::Platform::Linux,
        wanted,
        policy,
        exclude_components: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_base_resolution_fetch_and_trust() {
    let tmp = tempfile::tempdir().unwrap();
    let svc = service(tmp.path());
    let specs = standard_set(7, 2 << 20);

    // Run 1 builds everything.
    let b1 = build_dir(&tmp.path().join("b1"), &specs);
    let fps1: BTreeMap<String, Blake3> = ["amd-llvm", "rand", "blas"]
        .iter()
        .map(|n| (n.to_string(), fp(n, 1)))
        .collect();
    let out1 = svc
        .publish(PublishRequest {
            build_dir: b1,
            stage: "math-libs".into(),
            family: "gfx94X-dcgpu".into(),
            run: run("100", ""),
            compression: Compression::Zstd,
            fingerprints: fps1,
            reused_from: BTreeMap::new(),
            compression_level: None,
            branch: None,
        })
        .await
        .unwrap();
    assert_eq!(out1.archives.len(), specs.len());
    assert!(out1.trusted);
    assert_eq!(out1.prefix, "100-linux");

    // Run 2 rebuilds only `blas` (new sources → new fingerprint, new content).
    let blas2: Vec<ArtifactSpec> = specs
        .iter()
        .filter(|s| s.name == "blas")
        .map(|s| ArtifactSpec {
            seed: s.seed + 1000,
            ..s.clone()
        })
        .collect();
    let b2 = build_dir(&tmp.path().join("b2"), &blas2);
    svc.publish(PublishRequest {
        build_dir: b2,
        stage: "math-libs".into(),
        family: "gfx94X-dcgpu".into(),
        run: run("200", ""),
        compression: Compression::Xz,
        fingerprints: [("blas".to_string(), fp("blas", 2))].into(),
        reused_from: BTreeMap::new(),
        compression_level: None,
        branch: None,
    })
    .await
    .unwrap();

    // A fork publishes amd-llvm with the fingerprint a user will ask for: it must not be used by default.
    let b3 = build_dir(&tmp.path().join("b3"), &specs[..1]);
    let out3 = svc
        .publish(PublishRequest {
            build_dir: b3,
            stage: "compiler-runtime".into(),
            family: "generic".into(),
            run: run("300", "someone/TheRock"),
            compression: Compression::Zstd,
            fingerprints: [("amd-llvm".to_string(), fp("amd-llvm", 9))].into(),
            reused_from: BTreeMap::new(),
            compression_level: None,
            branch: None,
        })
        .await
        .unwrap();
    assert!(!out3.trusted);

    // Resolve at "commit 2": amd-llvm and rand from run 100, blas from run 200, a new fp is missing.
    let res = svc
        .resolve(&input(
            wanted(&[("amd-llvm", 1), ("rand", 1), ("blas", 2), ("hipblas", 1)]),
            Policy::default(),
        ))
        .await
        .unwrap();
    let by_name: BTreeMap<_, _> = res.iter().map(|r| (r.selector.to_string(), r)).collect();
    let run_of = |n: &str| {
        by_name[n]
            .chosen
            .as_ref()
            .map(|(c, _)| c.run.run_id.clone())
    };
    assert_eq!(run_of("amd-llvm").as_deref(), Some("100"));
    assert_eq!(run_of("rand").as_deref(), Some("100"));
    assert_eq!(run_of("blas").as_deref(), Some("200"));
    assert_eq!(
        run_of("hipblas"),
        None,
        "a missing fingerprint is never substituted"
    );
    // blas for gfx94X-dcgpu: the family's lib + test and the generic dev, not gfx110X-all.
    let mut blas: Vec<_> = by_name["blas"]
        .chosen
        .as_ref()
        .unwrap()
        .1
        .iter()
        .map(|a| a.artifact.to_string())
        .collect();
    blas.sort();
    assert_eq!(
        blas,
        [
            "blas_dev_generic",
            "blas_lib_gfx94X-dcgpu",
            "blas_test_gfx94X-dcgpu"
        ]
    );

    // The fork's record is invisible by default and visible (untrusted) when allowed.
    let fork = svc
        .resolve(&input(wanted(&[("amd-llvm", 9)]), Policy::default()))
        .await
        .unwrap();
    assert!(fork[0].chosen.is_none());
    let allowed = Policy {
        allow_untrusted: true,
        ..Policy::default()
    };
    let fork = svc
        .resolve(&input(wanted(&[("amd-llvm", 9)]), allowed))
        .await
        .unwrap();
    let (c, _) = fork[0].chosen.as_ref().expect("allowed untrusted producer");
    assert!(!c.trusted);
    assert_eq!(c.run.run_id, "300");

    // Make everything local: the publishing store already holds the content, so no download.
    let gets_before = svc.backends().transfer_totals().get_requests;
    for r in &res {
        if let Some((c, archives)) = &r.chosen {
            for a in archives {
                let (local, _lease) = svc.make_local(c, a).await.unwrap();
                assert!(local.from_cas, "{} should come from the CAS", a.artifact);
                assert_eq!(Some(local.tree_digest), a.tree_digest);
            }
        }
    }
    assert_eq!(svc.backends().transfer_totals().get_requests, gets_before);

    // A second daemon with an empty store downloads each archive once, verifies it and then serves
    // from its CAS.
    let other = {
        let store = LocalStore::open(tmp.path().join("store2"), StoreConfig::default()).unwrap();
        let storage = Arc::new(LocalStorage::new(tmp.path().join("bucket")).unwrap());
        let backends = Backends::from_list(vec![Backend {
            bucket: "*".into(),
            storage,
            trusted: true,
        }]);
        Arc::new(Service::new(store, backends, Duration::from_secs(60)))
    };
    let res2 = other
        .resolve(&input(wanted(&[("blas", 2)]), Policy::default()))
        .await
        .unwrap();
    let (c, archives) = res2[0].chosen.clone().unwrap();
    let gets_after_resolve = other.backends().transfer_totals().get_requests;
    let mut handles = Vec::new();
    for _ in 0..4 {
        for a in archives.clone() {
            let (other, c) = (other.clone(), c.clone());
            handles.push(tokio::spawn(async move {
                other.make_local(&c, &a).await.map(|(l, _)| l)
            }));
        }
    }
    let mut downloaded = 0;
    for h in handles {
        let local = h.await.unwrap().unwrap();
        downloaded += usize::from(!local.from_cas);
    }
    assert_eq!(
        downloaded,
        archives.len(),
        "each archive downloaded exactly once across 4 concurrent requests"
    );
    // One GET per chunk; each object is smaller than a chunk, so one GET each.
    let gets = other.backends().transfer_totals().get_requests - gets_after_resolve;
    assert_eq!(gets as usize, archives.len());
    // Resolving again is answered from the index: no LIST, no GET.
    let lists = other.backends().transfer_totals().list_requests;
    other
        .resolve(&input(wanted(&[("blas", 2)]), Policy::default()))
        .await
        .unwrap();
    assert_eq!(other.backends().transfer_totals().list_requests, lists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_run_fallback_imports_a_plain_therock_run() {
    let tmp = tempfile::tempdir().unwrap();
    let svc = service(tmp.path());
    // A run published without Cairn: archives + sidecars only, laid out like the bucket.
    let specs = standard_set(3, 1 << 20);
    for s in &specs[5..7] {
        upload_plain(tmp.path(), "555-linux", s);
    }
    let (listing, ingested, _) = svc.import(&import_request("555", true)).await.unwrap();
    assert_eq!(listing.archives.len(), 2);
    assert_eq!(ingested, 2);
    let res = svc
        .resolve(&input(
            wanted(&[("rand", 4)]),
            Policy {
                run_id: Some("555".into()),
                ..Policy::default()
            },
        ))
        .await
        .unwrap();
    let (c, archives) = res[0].chosen.as_ref().expect("explicit run fallback");
    assert_eq!(c.run.run_id, "555");
    assert_eq!(archives.len(), 2);
    assert!(res[0].explanation[0].contains("not verified"));
    for a in archives {
        let (local, _) = svc.make_local(c, a).await.unwrap();
        assert!(local.from_cas);
    }
}

/// A run still in progress: the daemon lists it while only the first stage's archives are there,
/// then the next stage uploads more. An artifact missing from the remembered listing makes the
/// daemon list the run again instead of calling it missing; one found there costs no LIST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_run_fallback_lists_a_growing_run_again_on_a_miss() {
    let tmp = tempfile::tempdir().unwrap();
    let svc = service(tmp.path());
    let specs = standard_set(4, 1 << 20);
    let upload = |spec: &ArtifactSpec| upload_plain(tmp.path(), "556-linux", spec);
    let policy = || Policy {
        run_id: Some("556".into()),
        ..Policy::default()
    };
    let lists = || svc.backends().transfer_totals().list_requests;
    // First stage: rand's two archives.
    upload(&specs[5]);
    upload(&specs[6]);
    let res = svc
        .resolve(&input(wanted(&[("rand", 7)]), policy()))
        .await
        .unwrap();
    assert_eq!(
        res[0].chosen.as_ref().expect("rand from the run").1.len(),
        2
    );
    // Answered from the remembered listing: no LIST.
    let before = lists();
    let res = svc
        .resolve(&input(wanted(&[("rand", 7)]), policy()))
        .await
        .unwrap();
    assert!(res[0].chosen.is_some());
    assert_eq!(
        lists(),
        before,
        "a hit in the remembered listing lists nothing"
    );
    // Next stage uploads blas' generic dev archive; the remembered listing does not have it.
    upload(&specs[9]);
    let res = svc
        .resolve(&input(wanted(&[("blas", 7)]), policy()))
        .await
        .unwrap();
    let (c, archives) = res[0]
        .chosen
        .as_ref()
        .expect("blas found after listing again");
    assert_eq!(c.run.run_id, "556");
    assert_eq!(archives.len(), 1);
    assert!(archives[0].key.ends_with("blas_dev_generic.tar.zst"));
    assert!(
        lists() > before,
        "the miss was answered by listing the run again"
    );
    // An explicit import lists the run again: it sees what the run gained.
    upload(&specs[10]);
    let (listing, _, _) = svc.import(&import_request("556", false)).await.unwrap();
    assert_eq!(listing.archives.len(), 4, "{listing:?}");
    // Still absent after listing again: reported missing, never substituted.
    let res = svc
        .resolve(&input(wanted(&[("fft", 7)]), policy()))
        .await
        .unwrap();
    assert!(res[0].chosen.is_none());
}

/// Put `spec`'s archive and sidecar under `{root}/bucket/{prefix}/`, as a run published without Cairn.
fn upload_plain(root: &Path, prefix: &str, spec: &ArtifactSpec) {
    let run_dir = root.join("bucket").join(prefix);
    std::fs::create_dir_all(&run_dir).unwrap();
    let built = build_dir(&root.join("plain"), std::slice::from_ref(spec));
    cairn_testkit::datagen::archive_artifact_dir(
        &built.join("artifacts").join(spec.dir_name()),
        &run_dir,
        Compression::Zstd,
    )
    .unwrap();
}

/// Publish `specs` as `run_id` with one fingerprint for `name`.
async fn publish_one(
    svc: &Service,
    root: &Path,
    run_id: &str,
    specs: &[ArtifactSpec],
    name: &str,
) -> cairn_daemon::service::PublishOutcome {
    svc.publish(PublishRequest {
        build_dir: build_dir(root, specs),
        stage: "math-libs".into(),
        family: "gfx94X-dcgpu".into(),
        run: run(run_id, ""),
        compression: Compression::Zstd,
        fingerprints: [(name.to_string(), fp(name, 1))].into(),
        reused_from: BTreeMap::new(),
        compression_level: None,
        branch: None,
    })
    .await
    .unwrap()
}

/// Publishing round trip on one backend: sidecars verify like `sha256sum -c`, and concurrent publishes of
/// one fingerprint leave exactly one producer record per run, without errors.
async fn publish_round_trip(
    svc: Arc<Service>,
    storage: Arc<dyn cairn_daemon::storage::Storage>,
    tmp: &Path,
) {
    let specs: Vec<ArtifactSpec> = standard_set(11, 1 << 20)
        .into_iter()
        .filter(|s| s.name == "rand")
        .collect();
    let out = publish_one(&svc, &tmp.join("p0"), "700", &specs, "rand").await;
    for a in &out.archives {
        // `sha256sum -c`: the sidecar's first token is the SHA-256 of the object's bytes.
        let sidecar = storage
            .get_bytes(&format!("{}.sha256sum", a.key))
            .await
            .unwrap();
        let text = String::from_utf8(sidecar.to_vec()).unwrap();
        let expected = cairn_fingerprint::names::parse_sha256sum(&text).unwrap();
        let body = storage.get_bytes(&a.key).await.unwrap();
        use sha2::Digest as _;
        let actual = cairn_fingerprint::Sha256(sha2::Sha256::digest(&body).into());
        assert_eq!(expected, actual, "sidecar of `{}`", a.key);
        assert_eq!(a.sha256, actual);
        assert!(
            text.ends_with('\n') && text.trim() == actual.to_hex(),
            "TheRock's bare `hexdigest\\n` form"
        );
        // The tree manifest in storage is verified against its name and matches the archive.
        let tree_key = cairn_fingerprint::layout::tree_manifest_key(&a.tree_digest);
        let tree = cairn_fingerprint::Tree::from_json_verified(
            &storage.get_bytes(&tree_key).await.unwrap(),
            &a.tree_digest,
        )
        .unwrap();
        assert_eq!(tree.file_count() as u64, a.files);
    }

    // Two jobs of the same run publish the same fingerprint at once (content differs: archives are not
    // reproducible), and a second run publishes it too.
    let other: Vec<ArtifactSpec> = specs
        .iter()
        .map(|s| ArtifactSpec {
            seed: s.seed + 1,
            ..s.clone()
        })
        .collect();
    let (p1, p2, p3) = (tmp.join("p1"), tmp.join("p2"), tmp.join("p3"));
    let (a, b, c) = tokio::join!(
        publish_one(&svc, &p1, "800", &specs, "rand"),
        publish_one(&svc, &p2, "800", &other, "rand"),
        publish_one(&svc, &p3, "801", &specs, "rand"),
    );
    assert_eq!(
        (a.prefix.as_str(), b.prefix.as_str(), c.prefix.as_str()),
        ("800-linux", "800-linux", "801-linux")
    );
    let records = storage
        .list(
            &cairn_fingerprint::layout::producer_records_prefix(&fp("rand", 1)),
            None,
        )
        .await
        .unwrap();
    let keys: Vec<_> = records
        .objects
        .iter()
        .map(|o| o.key.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(
        keys,
        ["700-linux", "800-linux", "801-linux"],
        "one record per producing run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_round_trip_local() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalStore::open(tmp.path().join("store"), StoreConfig::default()).unwrap();
    let storage: Arc<dyn cairn_daemon::storage::Storage> =
        Arc::new(LocalStorage::new(tmp.path().join("bucket")).unwrap());
    let backends = Backends::from_list(vec![Backend {
        bucket: "*".into(),
        storage: storage.clone(),
        trusted: true,
    }]);
    let svc = Arc::new(Service::new(store, backends, Duration::from_secs(60)));
    publish_round_trip(svc, storage, tmp.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_round_trip_s3() {
    let server = cairn_testkit::require_s3!();
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalStore::open(tmp.path().join("store"), StoreConfig::default()).unwrap();
    let storage: Arc<dyn cairn_daemon::storage::Storage> =
        Arc::new(server.new_bucket("publish-round-trip").await.unwrap());
    let backends = Backends::from_list(vec![Backend {
        bucket: "*".into(),
        storage: storage.clone(),
        trusted: true,
    }]);
    let svc = Arc::new(Service::new(store, backends, Duration::from_secs(60)));
    publish_round_trip(svc, storage, tmp.path()).await;
}

/// An import of run `run_id` of TheRock on Linux.
fn import_request(run_id: &str, ingest: bool) -> ImportRequest {
    ImportRequest {
        run: cairn_fingerprint::layout::RunSpec::new(run_id, cairn_fingerprint::Platform::Linux),
        ingest,
    }
}

/// The in-flight maps (one download per object, one LIST per fingerprint) hold only work in flight:
/// after thousands of distinct resolves and fetches they are empty again, so a daemon's memory does
/// not grow with every object and fingerprint it has ever seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_maps_are_empty_after_thousands_of_distinct_resolves_and_fetches() {
    let tmp = tempfile::tempdir().unwrap();
    let svc = service(tmp.path());

    // 2000 distinct fingerprints nobody produced, looked up concurrently in one request.
    let wanted: Vec<Wanted> = (0..2000u32)
        .map(|i| Wanted {
            selector: ArchiveSelector::parse("blas").unwrap(),
            fingerprint: Some(Blake3::of(format!("fp-{i}").as_bytes())),
        })
        .collect();
    let res = svc
        .resolve(&input(wanted, Policy::default()))
        .await
        .unwrap();
    assert_eq!(res.len(), 2000);
    assert!(res.iter().all(|r| r.chosen.is_none()));
    assert_eq!(
        svc.in_flight_keys(),
        (0, 0),
        "(downloads, lookups) after the resolves"
    );

    // 1000 distinct objects: a run listing with one tiny archive each, every one made local.
    let prefix = tmp.path().join("bucket").join("4242-linux");
    std::fs::create_dir_all(&prefix).unwrap();
    for i in 0..1000u32 {
        let dir = tmp.path().join("src").join(format!("a{i}"));
        std::fs::create_dir_all(dir.join("stage")).unwrap();
        std::fs::write(dir.join("stage/f"), format!("content {i}")).unwrap();
        std::fs::write(dir.join("artifact_manifest.txt"), "stage\n").unwrap();
        let archive = prefix.join(format!("art{i}_lib_generic.tar.zst"));
        cairn_daemon::archive::create_archive(&dir, &archive, Compression::Zstd, 1).unwrap();
    }
    let (listing, ingested, _) = svc.import(&import_request("4242", true)).await.unwrap();
    assert_eq!((listing.archives.len(), ingested), (1000, 1000));
    assert_eq!(
        svc.in_flight_keys(),
        (0, 0),
        "(downloads, lookups) after the fetches"
    );
}
