//! `cairn find` and `cairn diff` end to end: a real `cairnd serve` over a real storage backend (S3 at
//! `CAIRN_TEST_S3_ENDPOINT`, else a local directory), runs published through Cairn and runs uploaded
//! the way plain TheRock CI does (archives only), the GitHub REST API served by the testkit's mock,
//! and real git histories. Output is checked through `--json` documents parsed into structs declared
//! here with `deny_unknown_fields`, so any schema change is deliberate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use bytes::Bytes;
use cairn_client::connect::{DaemonAddr, connect};
use cairn_daemon::storage::{LocalStorage, PutBody, Storage};
use cairn_fingerprint::Compression;
use cairn_proto::v1 as pb;
use cairn_testkit::checkout::{Checkout, git};
use cairn_testkit::daemon::{Daemon, Storage as Backing, cairn_command, scratch_dir};
use cairn_testkit::datagen::{self, ArtifactSpec};
use cairn_testkit::github_mock::{GithubMock, MockRun};
use cairn_testkit::s3server::S3Server;
use serde::Deserialize;

const WORKFLOW: &str = "multi_arch_ci.yml";
const REPO: &str = "ROCm/TheRock";

// ----- the JSON contract, declared independently of the client's types -----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct FindJson {
    schema: String,
    status: String,
    query: QueryJson,
    commit: Option<String>,
    results: Vec<ResultJson>,
    missing: Vec<String>,
    rejected: Vec<RejectedJson>,
    baseline: Option<BaselineJson>,
    fingerprints: Option<Vec<FingerprintJson>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct QueryJson {
    commit: Option<String>,
    run_id: Option<String>,
    repo: String,
    workflow: String,
    platform: String,
    families: Vec<String>,
    stage: Option<String>,
    require_successful_run: bool,
    allow_incomplete: bool,
    allow_failed: bool,
    require_single_run: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ResultJson {
    family: String,
    commit: String,
    commit_url: String,
    repo: String,
    external_repo: String,
    platform: String,
    workflow: String,
    run_id: String,
    run_status: String,
    run_conclusion: Option<String>,
    run_url: Option<String>,
    source: String,
    trusted: bool,
    bucket: String,
    s3_path: String,
    s3_uri: String,
    index_url: String,
    artifact_count: usize,
    artifacts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectedJson {
    commit: String,
    run_id: Option<String>,
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaselineJson {
    requested_commit: String,
    commit: Option<String>,
    distance: Option<usize>,
    merge_base: Option<String>,
    examined: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FingerprintJson {
    artifact: String,
    fingerprint: String,
    producer_run_id: Option<String>,
    producer_commit: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct DiffJson {
    schema: String,
    before: SideJson,
    after: SideJson,
    artifacts: Vec<ArtifactDiffJson>,
    totals: DiffTotalsJson,
    notes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct SideJson {
    spec: String,
    run_id: String,
    commit: Option<String>,
    platform: String,
    bucket: String,
    prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArtifactDiffJson {
    artifact: String,
    status: String,
    basis: String,
    before: u64,
    after: u64,
    change: i64,
    compressed_before: Option<u64>,
    compressed_after: Option<u64>,
    files: Vec<FileDiffJson>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDiffJson {
    path: String,
    before: Option<u64>,
    after: Option<u64>,
    change: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffTotalsJson {
    files: TotalsJson,
    compressed: TotalsJson,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TotalsJson {
    before: u64,
    after: u64,
    change: i64,
}

// ----- fixture -----

/// A daemon over a fresh storage backend, the GitHub mock, and a runtime for direct RPCs.
struct Fixture {
    tmp: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    daemon: Daemon,
    /// The same storage the daemon serves, for uploading runs the way plain TheRock CI does.
    storage: Arc<dyn Storage>,
    github: GithubMock,
}

impl Fixture {
    /// S3 when the test server is configured (a loud notice otherwise, a failure under CI), else a
    /// local directory: the tests run either way.
    fn start(test: &str) -> Fixture {
        let tmp = scratch_dir("cairn-find-").unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (storage, backing): (Arc<dyn Storage>, Backing) = match S3Server::from_env(test) {
            Some(s3) => {
                let storage = rt.block_on(s3.new_bucket(test)).unwrap();
                let bucket = storage.config().bucket.clone();
                (
                    Arc::new(storage),
                    Backing::S3 {
                        endpoint: s3.endpoint().to_string(),
                        bucket,
                    },
                )
            }
            None => {
                eprintln!("`{test}` runs on a local-directory backend instead");
                let root = tmp.path().join("bucket");
                std::fs::create_dir_all(&root).unwrap();
                (
                    Arc::new(LocalStorage::new(&root).unwrap()),
                    Backing::Local(root),
                )
            }
        };
        Fixture {
            daemon: Daemon::start(backing).unwrap(),
            tmp,
            rt,
            storage,
            github: GithubMock::start().unwrap(),
        }
    }

    /// Replace the daemon by one with an empty store over the same storage (another machine).
    fn another_machine(&mut self) {
        self.daemon = Daemon::start(self.daemon.storage().clone()).unwrap();
    }

    /// The daemon's address for direct gRPC calls.
    fn addr(&self) -> DaemonAddr {
        DaemonAddr::parse(&self.daemon.addr())
    }

    /// Run `cairn` with the daemon, the mock and a token; in `cwd` (default: the temp dir, which is
    /// not a git checkout, so the repository defaults to ROCm/TheRock).
    fn cairn_in(&self, cwd: &Path, args: &[&str]) -> Output {
        cairn_command(&self.daemon.addr())
            .args(args)
            .current_dir(cwd)
            .env("CAIRN_GITHUB_API", self.github.url())
            .env("GITHUB_TOKEN", "test-token")
            .env_remove("CAIRN_CONFIG")
            .output()
            .expect("running cairn")
    }

    fn cairn(&self, args: &[&str]) -> Output {
        self.cairn_in(self.tmp.path(), args)
    }

    /// `cairn ... --json` that must exit with `code`; its JSON document.
    fn json<T: serde::de::DeserializeOwned>(&self, args: &[&str], code: i32) -> T {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cairn(&all);
        assert_eq!(
            out.status.code(),
            Some(code),
            "cairn {args:?}:\n{}",
            show(&out)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("cairn {args:?}: {e}\n{}", show(&out)))
    }

    /// Publish one successful job through Cairn (job manifest, producer records, commit index, tree
    /// manifests).
    fn publish(
        &self,
        run_id: &str,
        commit: &str,
        stage: &str,
        family: &str,
        specs: &[ArtifactSpec],
        fingerprints: &BTreeMap<String, String>,
    ) -> pb::PublishResponse {
        self.publish_with_status(
            run_id,
            commit,
            stage,
            family,
            specs,
            fingerprints,
            "success",
        )
    }

    /// [`Fixture::publish`] for a run in `status` (`in_progress`, `failure`, ...).
    #[allow(clippy::too_many_arguments)]
    fn publish_with_status(
        &self,
        run_id: &str,
        commit: &str,
        stage: &str,
        family: &str,
        specs: &[ArtifactSpec],
        fingerprints: &BTreeMap<String, String>,
        status: &str,
    ) -> pb::PublishResponse {
        let build = self
            .tmp
            .path()
            .join("builds")
            .join(format!("{run_id}-{stage}-{family}"));
        let artifacts = build.join("artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        let mut fps = BTreeMap::new();
        for s in specs {
            datagen::generate_artifact_dir(&artifacts, s).unwrap();
            let fp = fingerprints.get(&s.name).cloned().unwrap_or_else(|| {
                blake3::hash(format!("{}@{run_id}", s.name).as_bytes())
                    .to_hex()
                    .to_string()
            });
            fps.insert(s.name.clone(), fp);
        }
        let req = pb::PublishRequest {
            build_dir: build.to_string_lossy().into_owned(),
            stage: stage.into(),
            family: family.into(),
            platform: "linux".into(),
            repo: REPO.into(),
            workflow: WORKFLOW.into(),
            run_id: run_id.into(),
            commit: commit.into(),
            status: status.into(),
            compression: "zstd".into(),
            head_repo: String::new(),
            fingerprints: fps.into_iter().collect(),
            reused_from: Default::default(),
            compression_level: None,
            branch: None,
        };
        self.rt.block_on(async {
            let mut client = connect(&self.addr()).await.unwrap();
            client.publish(req).await.unwrap().into_inner()
        })
    }

    /// Upload archives (and sidecars) under `prefix` the way TheRock's CI does: no Cairn records.
    fn upload_plain(&self, prefix: &str, specs: &[ArtifactSpec]) {
        let out = self.tmp.path().join("plain").join(prefix);
        for s in specs {
            let a = datagen::write_archive(s, &out, Compression::Zstd).unwrap();
            let name = s.archive_name(Compression::Zstd);
            self.rt.block_on(async {
                self.storage
                    .put(&format!("{prefix}/{name}"), PutBody::File(a.path.clone()))
                    .await
                    .unwrap();
                self.storage
                    .put(
                        &format!("{prefix}/{name}.sha256sum"),
                        PutBody::Bytes(Bytes::from(format!("{}\n", a.sha256))),
                    )
                    .await
                    .unwrap();
            });
        }
    }

    /// Every regular file of an archive in storage with its size, read with `tar` (the ground truth
    /// a diff must match).
    fn archive_files(&self, key: &str) -> BTreeMap<String, u64> {
        let bytes = self
            .rt
            .block_on(async { self.storage.get_bytes(key).await })
            .unwrap();
        let decoder = zstd::stream::read::Decoder::new(&bytes[..]).unwrap();
        let mut archive = tar::Archive::new(decoder);
        let mut out = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            if entry.header().entry_type().is_file() {
                let path = entry.path().unwrap().to_string_lossy().into_owned();
                out.insert(path, entry.header().size().unwrap());
            }
        }
        out
    }
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A 40-hex commit id derived from a label (for runs that need no real git history).
fn sha(label: &str) -> String {
    blake3::hash(label.as_bytes()).to_hex()[..40].to_string()
}

fn spec(name: &str, component: &str, family: &str, kib: u64, seed: u64) -> ArtifactSpec {
    ArtifactSpec::new(name, component, family, kib << 10, seed)
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn no_fps() -> BTreeMap<String, String> {
    BTreeMap::new()
}

// ----- find -----

#[test]
fn find_uses_cairn_records_first_then_github_for_runs_without_them() {
    let f = Fixture::start("find_uses_cairn_records_first_then_github_for_runs_without_them");
    let c1 = sha("c1");
    f.publish(
        "500",
        &c1,
        "math-libs",
        "gfx94X-dcgpu",
        &[
            spec("blas", "lib", "gfx94X-dcgpu", 64, 1),
            spec("blas", "dev", "generic", 32, 2),
        ],
        &no_fps(),
    );
    let found: FindJson = f.json(
        &[
            "find",
            "--commit",
            &c1,
            "--family",
            "gfx94X-dcgpu",
            "--platform",
            "linux",
        ],
        0,
    );
    assert_eq!(found.schema, "cairn-find-v1");
    assert_eq!(found.status, "found");
    assert_eq!(found.commit.as_deref(), Some(c1.as_str()));
    assert_eq!(found.results.len(), 1);
    let r = &found.results[0];
    assert_eq!(
        (r.run_id.as_str(), r.source.as_str(), r.family.as_str()),
        ("500", "cairn", "gfx94X-dcgpu")
    );
    assert_eq!(
        r.artifacts,
        ["blas_dev_generic.tar.zst", "blas_lib_gfx94X-dcgpu.tar.zst"]
    );
    assert_eq!(r.artifact_count, 2);
    assert_eq!(r.bucket, "therock-ci-artifacts");
    assert_eq!(r.s3_uri, "s3://therock-ci-artifacts/500-linux");
    assert_eq!(
        r.index_url,
        "https://therock-ci-artifacts.s3.amazonaws.com/500-linux/index.html"
    );
    assert_eq!(
        r.run_url.as_deref(),
        Some("https://github.com/ROCm/TheRock/actions/runs/500")
    );
    assert_eq!(
        (r.run_status.as_str(), r.run_conclusion.as_deref()),
        ("completed", Some("success"))
    );
    assert!(r.trusted);
    assert_eq!(r.workflow, WORKFLOW);
    assert!(
        f.github.requests().is_empty(),
        "Cairn's records were enough; GitHub must not be asked: {:?}",
        f.github.requests()
    );

    // Human output names every field.
    let out = f.cairn(&[
        "find",
        "--commit",
        &c1,
        "--family",
        "gfx94X-dcgpu",
        "--platform",
        "linux",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for (field, value) in [
        ("commit", c1.as_str()),
        ("repo", REPO),
        ("workflow", WORKFLOW),
        ("run id", "500"),
        ("status", "completed/success"),
        (
            "run url",
            "https://github.com/ROCm/TheRock/actions/runs/500",
        ),
        ("platform", "linux"),
        ("family", "gfx94X-dcgpu"),
        ("bucket", "therock-ci-artifacts"),
        ("s3 path", "s3://therock-ci-artifacts/500-linux"),
        (
            "index url",
            "https://therock-ci-artifacts.s3.amazonaws.com/500-linux/index.html",
        ),
        ("artifacts", "2"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(field) && l.trim_end().ends_with(value)),
            "no `{field}: {value}` line in\n{text}"
        );
    }

    // A commit whose runs were published without Cairn: GitHub names the runs, the daemon lists
    // their prefixes. The newer run holds nothing and is rejected with a reason.
    let c2 = sha("c2");
    f.upload_plain(
        "501-linux",
        &[
            spec("blas", "lib", "gfx942", 48, 3),
            spec("blas", "lib", "generic", 16, 4),
        ],
    );
    f.github.add_run(REPO, WORKFLOW, MockRun::success(501, &c2));
    f.github.add_run(REPO, WORKFLOW, MockRun::success(502, &c2));
    let found: FindJson = f.json(
        &[
            "find",
            "--commit",
            &c2,
            "--artifact-group",
            "gfx94X-dcgpu",
            "--platform",
            "linux",
        ],
        0,
    );
    let r = &found.results[0];
    assert_eq!((r.run_id.as_str(), r.source.as_str()), ("501", "github"));
    assert_eq!(
        r.artifacts,
        ["blas_lib_generic.tar.zst", "blas_lib_gfx942.tar.zst"]
    );
    assert_eq!(r.commit, c2);
    assert!(
        found
            .rejected
            .iter()
            .any(|x| x.run_id.as_deref() == Some("502") && x.reason.contains("no archives")),
        "{:?}",
        found.rejected
    );
    let requests = f.github.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.path.contains(&format!("head_sha={c2}"))
                && r.authorization.as_deref() == Some("Bearer test-token")),
        "{requests:?}"
    );

    // A family nobody built: exit 1, JSON says not_found and what is missing.
    let missing: FindJson = f.json(
        &[
            "find",
            "--commit",
            &c2,
            "--family",
            "gfx110X-all",
            "--platform",
            "linux",
        ],
        1,
    );
    assert_eq!(missing.status, "not_found");
    assert_eq!(missing.missing, ["gfx110X-all"]);
    assert!(missing.results.is_empty());
    let out = f.cairn(&["find", "--commit", &c2, "--family", "gfx110X-all"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no matching artifacts found for commit"),
        "{}",
        show(&out)
    );
}

#[test]
fn find_reads_every_page_of_github_runs() {
    let f = Fixture::start("find_reads_every_page_of_github_runs");
    let c = sha("paged");
    // 150 runs of one commit: only the oldest (last page at 100 per page) holds archives.
    for id in 3000..3150 {
        f.github.add_run(REPO, WORKFLOW, MockRun::success(id, &c));
    }
    f.upload_plain("3000-linux", &[spec("rand", "lib", "generic", 16, 9)]);
    let found: FindJson = f.json(&["find", "--commit", &c, "--platform", "linux"], 0);
    assert_eq!(found.results[0].run_id, "3000");
    assert_eq!(found.results[0].family, "*");
    let pages: Vec<String> = f
        .github
        .requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p.contains("/actions/workflows/multi_arch_ci.yml/runs"))
        .collect();
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert!(pages[0].contains("per_page=100"), "{pages:?}");
    assert!(pages[1].contains("page=2"), "{pages:?}");
    assert_eq!(found.rejected.len(), 149);
}

#[test]
fn github_rate_limit_is_a_clear_error_and_offline_skips_github() {
    let f = Fixture::start("github_rate_limit_is_a_clear_error_and_offline_skips_github");
    f.github.set_rate_limited(Some(1_900_000_000));
    let c = sha("limited");
    let out = f.cairn(&["find", "--commit", &c, "--platform", "linux"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cairn: error:"), "{err}");
    assert!(err.contains("github api rate limit exceeded"), "{err}");
    assert!(err.contains("resets at 2030-03-17T17:46:40Z"), "{err}");
    assert!(err.contains("GITHUB_TOKEN"), "{err}");

    // Offline: Cairn's records only; nothing there means "not found", not an error.
    let before = f.github.requests().len();
    let out = f.cairn(&["find", "--commit", &c, "--platform", "linux", "--offline"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(f.github.requests().len(), before);
}

#[test]
fn find_exit_codes_for_bad_input_and_unreachable_daemon() {
    let f = Fixture::start("find_exit_codes_for_bad_input_and_unreachable_daemon");
    // Not a SHA and not in a git checkout.
    let out = f.cairn(&["find", "--commit", "not-a-commit"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`not-a-commit`"));
    // Neither --commit nor --run-id.
    let out = f.cairn(&["find"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    // An unknown family.
    let out = f.cairn(&["find", "--commit", &sha("x"), "--family", "nonsense"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    // No daemon.
    let nobody = format!("unix:{}", f.tmp.path().join("nobody.sock").display());
    let out = cairn_command(&nobody)
        .args(["find", "--commit", &sha("x")])
        .current_dir(f.tmp.path())
        .env("CAIRN_GITHUB_API", f.github.url())
        .env("GITHUB_TOKEN", "t")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect to cairnd"));
    // No GitHub: the error says what answers without it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = cairn_command(&f.daemon.addr())
        .args(["find", "--commit", &sha("x"), "--platform", "linux"])
        .current_dir(f.tmp.path())
        .env("CAIRN_GITHUB_API", format!("http://127.0.0.1:{closed}"))
        .env("GITHUB_TOKEN", "t")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hint: GitHub is not reachable from here: `--offline` answers from Cairn's records alone")
            && err.contains("CAIRN_GITHUB_API"),
        "{err}"
    );
}

#[test]
fn find_by_run_id_from_cairn_manifests_or_github() {
    let f = Fixture::start("find_by_run_id_from_cairn_manifests_or_github");
    let c1 = sha("r1");
    f.publish(
        "700",
        &c1,
        "compiler",
        "generic",
        &[spec("llvm", "lib", "generic", 32, 11)],
        &no_fps(),
    );
    let found: FindJson = f.json(&["find", "--run-id", "700", "--platform", "linux"], 0);
    assert_eq!(found.commit.as_deref(), Some(c1.as_str()));
    assert_eq!(found.results[0].source, "cairn");
    assert_eq!(found.results[0].artifacts, ["llvm_lib_generic.tar.zst"]);
    assert!(f.github.requests().is_empty());

    let c2 = sha("r2");
    f.upload_plain("701-linux", &[spec("llvm", "lib", "generic", 32, 12)]);
    f.github
        .add_run(REPO, WORKFLOW, MockRun::concluded(701, &c2, "failure"));
    let found: FindJson = f.json(&["find", "--run-id", "701", "--platform", "linux"], 0);
    assert_eq!(found.commit.as_deref(), Some(c2.as_str()));
    assert_eq!(found.results[0].source, "github");
    assert_eq!(found.results[0].run_conclusion.as_deref(), Some("failure"));
    let rejected: FindJson = f.json(
        &[
            "find",
            "--run-id",
            "701",
            "--platform",
            "linux",
            "--require-successful-run",
        ],
        1,
    );
    assert!(rejected.rejected[0].reason.contains("completed/failure"));

    let none: FindJson = f.json(&["find", "--run-id", "799", "--platform", "linux"], 1);
    assert_eq!(none.status, "not_found");
}

/// The issue's case: the newest run of a commit is still in progress with one archive, an older run
/// of the same commit succeeded with all of them. `find` takes the successful run, `-v` names the
/// run passed over and why, `--allow-incomplete` takes the newer run (marked by its status), and a
/// failed run needs `--allow-failed`. Cairn's records and GitHub's runs follow the same rule.
#[test]
fn find_takes_successful_runs_unless_incomplete_or_failed_ones_are_allowed() {
    let f = Fixture::start("find_eligibility");
    let c = sha("elig");
    let all = [
        spec("blas", "lib", "gfx942", 32, 21),
        spec("fft", "lib", "gfx942", 32, 22),
        spec("rand", "lib", "gfx942", 32, 23),
    ];
    f.publish("1101", &c, "math-libs", "gfx942", &all, &no_fps());
    f.publish_with_status(
        "1102",
        &c,
        "math-libs",
        "gfx942",
        &all[..1],
        &no_fps(),
        "in_progress",
    );
    let query = [
        "find",
        "--commit",
        &c,
        "--family",
        "gfx942",
        "--platform",
        "linux",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = query.iter().map(|s| s.to_string()).collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    let found: FindJson = f.json(&strs(&with(&["--offline"])), 0);
    assert_eq!(found.results.len(), 1);
    assert_eq!(found.results[0].run_id, "1101");
    assert_eq!(found.results[0].artifact_count, 3);
    assert!(found.query.require_successful_run && !found.query.allow_incomplete);
    let passed = found
        .rejected
        .iter()
        .find(|r| r.run_id.as_deref() == Some("1102"))
        .expect("the newer run is listed as passed over");
    assert!(
        passed.reason.contains("--allow-incomplete"),
        "{}",
        passed.reason
    );

    let text = f.cairn(&strs(&with(&["--offline", "-v"])));
    let stdout = String::from_utf8_lossy(&text.stdout);
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert!(text.status.success(), "{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("run 1102: run is in_progress, not completed"),
        "-v lists the run passed over:\n{stdout}\n{stderr}"
    );
    let quiet = f.cairn(&strs(&with(&["--offline"])));
    assert!(
        !String::from_utf8_lossy(&quiet.stdout).contains("run 1102"),
        "without -v an answer does not list the runs passed over"
    );

    let allowed: FindJson = f.json(&strs(&with(&["--offline", "--allow-incomplete"])), 0);
    assert_eq!(allowed.results[0].run_id, "1102");
    assert_eq!(allowed.results[0].run_status, "in_progress");

    // GitHub's runs: a newer failed run is passed over unless --allow-failed.
    let c2 = sha("elig-gh");
    f.upload_plain("1201-linux", &all);
    f.upload_plain("1202-linux", &all[..1]);
    f.github
        .add_run(REPO, WORKFLOW, MockRun::success(1201, &c2));
    f.github
        .add_run(REPO, WORKFLOW, MockRun::concluded(1202, &c2, "failure"));
    let gh = [
        "find",
        "--commit",
        &c2,
        "--family",
        "gfx942",
        "--platform",
        "linux",
    ];
    let found: FindJson = f.json(&gh, 0);
    assert_eq!(found.results[0].run_id, "1201");
    assert!(
        found
            .rejected
            .iter()
            .any(|r| r.run_id.as_deref() == Some("1202") && r.reason.contains("--allow-failed")),
        "{:?}",
        found.rejected
    );
    let mut gh_failed = gh.to_vec();
    gh_failed.push("--allow-failed");
    let found: FindJson = f.json(&gh_failed, 0);
    assert_eq!(found.results[0].run_id, "1202");
    assert_eq!(found.results[0].run_conclusion.as_deref(), Some("failure"));
}

// ----- baseline search over a real git history -----

const TOPOLOGY: &str = r#"
[source_sets.s-base]
submodules = ["base-src"]
[source_sets.s-llvm]
submodules = ["llvm-src"]
[source_sets.s-math]
submodules = ["math-src"]

[build_stages.foundation]
artifact_groups = ["g-base"]
[build_stages.compiler]
artifact_groups = ["g-llvm"]
[build_stages.math-libs]
type = "per-arch"
artifact_groups = ["g-math"]

[artifact_groups.g-base]
source_sets = ["s-base"]
[artifact_groups.g-llvm]
artifact_group_deps = ["g-base"]
source_sets = ["s-llvm"]
[artifact_groups.g-math]
type = "per-arch"
artifact_group_deps = ["g-llvm"]
source_sets = ["s-math"]

[artifacts.base]
artifact_group = "g-base"
[artifacts.llvm]
artifact_group = "g-llvm"
artifact_deps = ["base"]
[artifacts.blas]
artifact_group = "g-math"
type = "target-specific"
artifact_deps = ["llvm"]
"#;

/// The issue's case: run 1001 built `base` and run 1002 built `llvm` at the same commit, each with the
/// commit's exact fingerprint. Together they cover math-libs: `find --stage` says found (exit 0), the
/// table names both producers, and `--fallback` stops at that commit; only `--require-single-run`
/// asks for one run holding everything (exit 1). The verdict, the exit code and the table agree.
#[test]
fn find_stage_coverage_is_multi_run() {
    let f = Fixture::start("find_stage_coverage_is_multi_run");
    let co = Checkout::create(&f.tmp.path().join("src"), TOPOLOGY).unwrap();
    let topo = co.root.join("BUILD_TOPOLOGY.toml");
    let topo = topo.to_str().unwrap().to_string();
    let root = co.root.to_str().unwrap().to_string();
    let out = f.cairn(&[
        "fingerprint",
        "--topology",
        &topo,
        "--checkout",
        &root,
        "--family",
        "gfx94X-dcgpu",
        "--platform",
        "linux",
        "--artifact",
        "base",
        "--artifact",
        "llvm",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let fps: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
    let c = co.head().unwrap();
    f.publish(
        "1001",
        &c,
        "foundation",
        "generic",
        &[spec("base", "lib", "generic", 16, 31)],
        &fps,
    );
    f.publish(
        "1002",
        &c,
        "compiler",
        "generic",
        &[spec("llvm", "lib", "generic", 32, 32)],
        &fps,
    );
    let query = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "find",
            "--commit",
            &c,
            "--stage",
            "math-libs",
            "--family",
            "gfx94X-dcgpu",
            "--platform",
            "linux",
            "--offline",
            "--topology",
            &topo,
            "--checkout",
            &root,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    let found: FindJson = f.json(&strs(&query(&[])), 0);
    assert_eq!(found.status, "found");
    let runs: BTreeSet<&str> = found.results.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(runs, BTreeSet::from(["1001", "1002"]));
    let table = found.fingerprints.as_ref().expect("the inbound table");
    let producer = |name: &str| {
        table
            .iter()
            .find(|x| x.artifact == name)
            .and_then(|x| x.producer_run_id.clone())
    };
    assert_eq!(producer("base").as_deref(), Some("1001"));
    assert_eq!(producer("llvm").as_deref(), Some("1002"));

    let baseline: FindJson = f.json(&strs(&query(&["--fallback"])), 0);
    let b = baseline.baseline.as_ref().unwrap();
    assert_eq!(
        (b.commit.as_deref(), b.distance),
        (Some(c.as_str()), Some(0))
    );

    let single: FindJson = f.json(&strs(&query(&["--require-single-run"])), 1);
    assert_eq!(single.status, "not_found");
}

#[test]
fn fallback_walks_a_real_history_to_the_newest_complete_commit() {
    let f = Fixture::start("fallback_walks_a_real_history_to_the_newest_complete_commit");
    let co = Checkout::create(&f.tmp.path().join("src"), TOPOLOGY).unwrap();
    let topo = co.root.join("BUILD_TOPOLOGY.toml");
    let topo = topo.to_str().unwrap();
    let root = co.root.to_str().unwrap().to_string();
    let fingerprints = |f: &Fixture| -> BTreeMap<String, String> {
        let out = f.cairn(&[
            "fingerprint",
            "--topology",
            topo,
            "--checkout",
            &root,
            "--family",
            "gfx94X-dcgpu",
            "--platform",
            "linux",
            "--artifact",
            "base",
            "--artifact",
            "llvm",
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let inbound = |seed: u64| {
        vec![
            spec("base", "lib", "generic", 16, seed),
            spec("llvm", "lib", "generic", 32, seed + 1),
        ]
    };

    // c0: a complete Cairn run with the real fingerprints of this commit.
    let c0 = co.head().unwrap();
    let fp0 = fingerprints(&f);
    f.publish("100", &c0, "compiler", "generic", &inbound(1), &fp0);
    // c1: a complete run published without Cairn.
    let c1 = co.bump_submodule("math-src", "math 2").unwrap();
    f.upload_plain(
        "101-linux",
        &[
            spec("base", "lib", "generic", 16, 3),
            spec("llvm", "lib", "generic", 32, 4),
        ],
    );
    f.github.add_run(REPO, WORKFLOW, MockRun::success(101, &c1));
    // c2: llvm changes; a complete run published without Cairn.
    let c2 = co.bump_submodule("llvm-src", "llvm 2").unwrap();
    f.upload_plain(
        "102-linux",
        &[
            spec("base", "lib", "generic", 16, 5),
            spec("llvm", "lib", "generic", 32, 6),
            spec("blas", "lib", "gfx942", 32, 7),
        ],
    );
    f.github.add_run(REPO, WORKFLOW, MockRun::success(102, &c2));
    // c3: a Cairn run missing llvm, and a complete GitHub run that failed.
    let c3 = co.bump_submodule("math-src", "math 3").unwrap();
    f.publish(
        "103",
        &c3,
        "foundation",
        "generic",
        &[spec("base", "lib", "generic", 16, 8)],
        &no_fps(),
    );
    f.upload_plain("104-linux", &inbound(9));
    f.github
        .add_run(REPO, WORKFLOW, MockRun::concluded(104, &c3, "failure"));
    // c4 (HEAD of main): no run at all.
    let c4 = co.bump_submodule("math-src", "math 4").unwrap();

    let report: FindJson = f.json(
        &[
            "find",
            "--commit",
            &c4,
            "--fallback",
            "--stage",
            "math-libs",
            "--family",
            "gfx94X-dcgpu",
            "--require-successful-run",
            "--platform",
            "linux",
            "--topology",
            topo,
            "--checkout",
            &root,
        ],
        0,
    );
    let b = report.baseline.as_ref().unwrap();
    assert_eq!(b.requested_commit, c4);
    assert_eq!(b.commit.as_deref(), Some(c2.as_str()));
    assert_eq!(b.distance, Some(2));
    assert_eq!(b.merge_base, None);
    assert_eq!(b.examined, 3);
    assert_eq!(report.commit.as_deref(), Some(c2.as_str()));
    assert_eq!(report.results[0].run_id, "102");
    assert_eq!(report.results[0].source, "github");
    // Why each newer candidate was rejected.
    let why = |commit: &str, run: Option<&str>| -> String {
        report
            .rejected
            .iter()
            .filter(|r| r.commit == commit && r.run_id.as_deref() == run)
            .map(|r| r.reason.clone())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    assert!(
        why(&c4, None).contains("no run with archives"),
        "{:?}",
        report.rejected
    );
    assert!(
        why(&c3, Some("104")).contains("completed/failure"),
        "{:?}",
        report.rejected
    );
    assert!(
        why(&c3, Some("103")).contains("missing llvm"),
        "{:?}",
        report.rejected
    );
    // Fingerprints at HEAD: base is unchanged since c0 (run 100 built it); llvm changed at c2 and
    // no run published it with Cairn since.
    let fps = report.fingerprints.as_ref().unwrap();
    let base = fps.iter().find(|x| x.artifact == "base").unwrap();
    assert_eq!(base.fingerprint, fp0["base"]);
    assert_eq!(base.producer_run_id.as_deref(), Some("100"));
    assert_eq!(base.producer_commit.as_deref(), Some(c0.as_str()));
    let llvm = fps.iter().find(|x| x.artifact == "llvm").unwrap();
    assert_ne!(llvm.fingerprint, fp0["llvm"]);
    assert_eq!(llvm.producer_run_id, None);

    // Human output names the baseline and the rejections.
    let out = f.cairn(&[
        "find",
        "--commit",
        &c4,
        "--fallback",
        "--stage",
        "math-libs",
        "--family",
        "gfx94X-dcgpu",
        "--require-successful-run",
        "--platform",
        "linux",
        "--topology",
        topo,
        "--checkout",
        &root,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("Baseline: {c2}")), "{text}");
    assert!(text.contains(&format!("rejected {c3} run 104")), "{text}");

    // A local branch off c1: the search continues from the merge-base with main.
    git(&co.root, &["checkout", "-q", "-b", "feature", &c1]).unwrap();
    std::fs::write(co.root.join("LOCAL.md"), "local change\n").unwrap();
    git(&co.root, &["add", "-A"]).unwrap();
    git(&co.root, &["commit", "-q", "-m", "local"]).unwrap();
    let local = co.head().unwrap();
    let report: FindJson = f.json(
        &[
            "find",
            "--commit",
            "feature",
            "--fallback",
            "--stage",
            "compiler",
            "--platform",
            "linux",
            "--topology",
            topo,
            "--checkout",
            &root,
        ],
        0,
    );
    let b = report.baseline.as_ref().unwrap();
    assert_eq!(b.requested_commit, local);
    assert_eq!(b.merge_base.as_deref(), Some(c1.as_str()));
    assert_eq!(b.commit.as_deref(), Some(c1.as_str()));
    assert_eq!(b.distance, Some(1));
    assert_eq!(report.results[0].run_id, "101");

    // Bounded: within one commit of HEAD there is no complete run.
    let report: FindJson = f.json(
        &[
            "find",
            "--commit",
            &c4,
            "--fallback",
            "--max-commits",
            "2",
            "--stage",
            "math-libs",
            "--family",
            "gfx94X-dcgpu",
            "--require-successful-run",
            "--platform",
            "linux",
            "--topology",
            topo,
            "--checkout",
            &root,
        ],
        1,
    );
    let b = report.baseline.as_ref().unwrap();
    assert_eq!((b.commit.as_deref(), b.examined), (None, 2));

    // Without the commit in a local checkout, the history comes from GitHub's commit listing.
    for (sha, parent) in [(&c4, &c3), (&c3, &c2), (&c2, &c1), (&c1, &c0)] {
        f.github.add_commit(REPO, sha, &[parent]);
    }
    f.github.add_commit(REPO, &c0, &[]);
    let report: FindJson = f.json(
        &[
            "find",
            "--commit",
            &c4,
            "--fallback",
            "--family",
            "gfx94X-dcgpu",
            "--require-successful-run",
            "--platform",
            "linux",
        ],
        0,
    );
    assert_eq!(
        report.baseline.unwrap().commit.as_deref(),
        Some(c2.as_str())
    );
    assert!(
        f.github
            .requests()
            .iter()
            .any(|r| r.path.contains(&format!("/commits?sha={c4}")))
    );

    // GitHub unreachable: --fallback still walks the local history, over Cairn's records alone
    // (run 103 at c3 has what `compiler` needs; the GitHub-only runs are not seen), and says so.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = cairn_command(&f.daemon.addr())
        .args([
            "--json",
            "find",
            "--commit",
            &c4,
            "--fallback",
            "--stage",
            "compiler",
        ])
        .args([
            "--platform",
            "linux",
            "--topology",
            topo,
            "--checkout",
            &root,
        ])
        .current_dir(f.tmp.path())
        .env("CAIRN_GITHUB_API", format!("http://127.0.0.1:{closed}"))
        .env("GITHUB_TOKEN", "t")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report: FindJson = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report.baseline.as_ref().unwrap().commit.as_deref(),
        Some(c3.as_str())
    );
    assert_eq!(report.results[0].run_id, "103");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GitHub is not reachable")
            && err.contains("as --offline does")
            && err.contains("CAIRN_GITHUB_API"),
        "{err}"
    );
}

// ----- diff -----

#[test]
fn diff_between_published_runs_matches_the_archives() {
    let f = Fixture::start("diff_between_published_runs_matches_the_archives");
    let (d1, d2) = (sha("d1"), sha("d2"));
    f.publish(
        "600",
        &d1,
        "math-libs",
        "gfx94X-dcgpu",
        &[
            spec("blas", "lib", "gfx94X-dcgpu", 256, 21),
            spec("blas", "dev", "generic", 64, 22),
            spec("base", "lib", "generic", 32, 23),
        ],
        &no_fps(),
    );
    f.publish(
        "601",
        &d2,
        "math-libs",
        "gfx94X-dcgpu",
        &[
            spec("blas", "lib", "gfx94X-dcgpu", 384, 24),
            spec("blas", "dev", "generic", 64, 22),
            spec("fft", "lib", "gfx94X-dcgpu", 96, 25),
        ],
        &no_fps(),
    );
    // An archive each run holds without a Cairn manifest: compared on compressed sizes.
    f.upload_plain("600-linux", &[spec("extra", "lib", "generic", 16, 26)]);
    f.upload_plain("601-linux", &[spec("extra", "lib", "generic", 48, 27)]);

    let report: DiffJson = f.json(&["diff", &d1, &d2, "--platform", "linux"], 0);
    assert_eq!(report.schema, "cairn-diff-v1");
    assert_eq!(
        (report.before.run_id.as_str(), report.after.run_id.as_str()),
        ("600", "601")
    );
    assert_eq!(report.before.commit.as_deref(), Some(d1.as_str()));

    // Ground truth: the files actually in the archives.
    let files =
        |run: &str, artifact: &str| f.archive_files(&format!("{run}-linux/{artifact}.tar.zst"));
    // Every regular file counts, `artifact_manifest.txt` included: it is a member like any other.
    let total = |m: &BTreeMap<String, u64>| -> u64 { m.values().sum() };
    let by_name: BTreeMap<&str, &ArtifactDiffJson> = report
        .artifacts
        .iter()
        .map(|a| (a.artifact.as_str(), a))
        .collect();
    let blas = by_name["blas_lib_gfx94X-dcgpu"];
    let (before, after) = (
        files("600", "blas_lib_gfx94X-dcgpu"),
        files("601", "blas_lib_gfx94X-dcgpu"),
    );
    assert_eq!(blas.basis, "files");
    assert_eq!(blas.status, "changed");
    assert_eq!(blas.before, total(&before));
    assert_eq!(blas.after, total(&after));
    assert_eq!(blas.change, total(&after) as i64 - total(&before) as i64);
    for fd in &blas.files {
        assert_eq!(fd.before, before.get(&fd.path).copied(), "{}", fd.path);
        assert_eq!(fd.after, after.get(&fd.path).copied(), "{}", fd.path);
        assert_eq!(
            fd.change,
            fd.after.unwrap_or(0) as i64 - fd.before.unwrap_or(0) as i64
        );
    }
    // Every file whose size differs is listed, and only those.
    let changed: usize = before
        .keys()
        .chain(after.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|p| before.get(*p) != after.get(*p))
        .count();
    assert_eq!(blas.files.len(), changed);
    assert!(
        blas.files
            .windows(2)
            .all(|w| w[0].change.unsigned_abs() >= w[1].change.unsigned_abs())
    );

    let dev = by_name["blas_dev_generic"];
    assert_eq!((dev.status.as_str(), dev.change), ("unchanged", 0));
    assert_eq!(dev.before, total(&files("600", "blas_dev_generic")));
    let fft = by_name["fft_lib_gfx94X-dcgpu"];
    assert_eq!((fft.status.as_str(), fft.before), ("added", 0));
    assert_eq!(fft.after, total(&files("601", "fft_lib_gfx94X-dcgpu")));
    let base = by_name["base_lib_generic"];
    assert_eq!((base.status.as_str(), base.after), ("removed", 0));

    // Without manifests: compressed object sizes, with a note.
    let extra = by_name["extra_lib_generic"];
    assert_eq!(extra.basis, "compressed");
    let size = |key: &str| {
        f.rt.block_on(async { f.storage.get_bytes(key).await })
            .unwrap()
            .len() as u64
    };
    assert_eq!(extra.before, size("600-linux/extra_lib_generic.tar.zst"));
    assert_eq!(extra.compressed_before, Some(extra.before));
    assert_eq!(extra.after, size("601-linux/extra_lib_generic.tar.zst"));
    assert!(extra.files.is_empty());
    assert!(
        report.notes.iter().any(|n| n.contains("compressed")),
        "{:?}",
        report.notes
    );

    // Sorted by absolute change; totals add up.
    assert!(
        report
            .artifacts
            .windows(2)
            .all(|w| w[0].change.unsigned_abs() >= w[1].change.unsigned_abs())
    );
    let on_files: Vec<&ArtifactDiffJson> = report
        .artifacts
        .iter()
        .filter(|a| a.basis == "files")
        .collect();
    assert_eq!(
        report.totals.files.before,
        on_files.iter().map(|a| a.before).sum::<u64>()
    );
    assert_eq!(
        report.totals.files.after,
        on_files.iter().map(|a| a.after).sum::<u64>()
    );
    assert_eq!(
        report.totals.files.change,
        report.totals.files.after as i64 - report.totals.files.before as i64
    );
    assert_eq!(
        report.totals.compressed.after,
        report
            .artifacts
            .iter()
            .map(|a| a.compressed_after.unwrap_or(0))
            .sum::<u64>()
    );
    assert!(f.github.requests().is_empty());

    // Run ids work too, and human output shows the table.
    let out = f.cairn(&["diff", "600", "601", "--platform", "linux"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("blas_lib_gfx94X-dcgpu"), "{text}");
    assert!(text.contains("total (files)"), "{text}");

    // A side without runs: exit 1.
    let out = f.cairn(&[
        "diff",
        &d1,
        &sha("nothing"),
        "--platform",
        "linux",
        "--offline",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
}

// ----- the gRPC surface: trust separation and tree manifests read from storage -----

#[test]
fn run_trees_use_verified_manifests_without_downloads_and_untrusted_runs_stay_apart() {
    let mut f = Fixture::start(
        "run_trees_use_verified_manifests_without_downloads_and_untrusted_runs_stay_apart",
    );
    let e1 = sha("e1");
    let published = f.publish(
        "900",
        &e1,
        "math-libs",
        "gfx94X-dcgpu",
        &[
            spec("blas", "lib", "gfx94X-dcgpu", 96, 31),
            spec("blas", "dev", "generic", 48, 32),
        ],
        &no_fps(),
    );
    let digest_of = |artifact: &str| {
        published
            .archives
            .iter()
            .find(|a| a.artifact == artifact)
            .unwrap()
            .clone()
    };
    let (lib, dev) = (
        digest_of("blas_lib_gfx94X-dcgpu"),
        digest_of("blas_dev_generic"),
    );
    // Another machine: nothing local. One tree manifest in storage is corrupt.
    f.another_machine();
    f.rt.block_on(async {
        f.storage
            .put(
                &format!("cairn/trees/{}", dev.tree_digest),
                PutBody::Bytes(Bytes::from_static(b"{\"manifest\":[],\"entries\":[]}")),
            )
            .await
            .unwrap()
    });
    let (trees, stats) = f.rt.block_on(async {
        let mut c = connect(&f.addr()).await.unwrap();
        let trees = c
            .run_trees(pb::RunTreesRequest {
                run_id: "900".into(),
                platform: "linux".into(),
                repo: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let stats = c.stats(pb::StatsRequest {}).await.unwrap().into_inner();
        (trees, stats)
    });
    assert_eq!(trees.prefix, "900-linux");
    assert_eq!(trees.run.as_ref().unwrap().commit, e1);
    let info = |artifact: &str| {
        trees
            .archives
            .iter()
            .find(|a| a.artifact == artifact)
            .unwrap()
    };
    let l = info("blas_lib_gfx94X-dcgpu");
    assert_eq!(
        (l.source.as_str(), l.tree_digest.as_str()),
        ("manifest", lib.tree_digest.as_str())
    );
    assert_eq!(l.uncompressed_size, lib.uncompressed_size);
    assert_eq!(
        l.entries
            .iter()
            .filter(|e| e.kind == "file")
            .map(|e| e.size)
            .sum::<u64>(),
        lib.uncompressed_size
    );
    let d = info("blas_dev_generic");
    assert_eq!((d.source.as_str(), d.tree_digest.as_str()), ("job", ""));
    assert!(d.entries.is_empty());
    assert_eq!(d.uncompressed_size, dev.uncompressed_size);
    assert!(
        trees
            .notes
            .iter()
            .any(|n| n.contains("blas_dev_generic") && n.contains("digest")),
        "{:?}",
        trees.notes
    );
    assert_eq!(stats.ingests, 0, "sizes must not need archive downloads");

    // A fork's run lands in the external bucket's untrusted area: invisible unless asked for.
    let e2 = sha("e2");
    let build = f.tmp.path().join("fork-build");
    datagen::generate_artifact_dir(
        &build.join("artifacts"),
        &spec("blas", "lib", "gfx94X-dcgpu", 16, 33),
    )
    .unwrap();
    f.rt.block_on(async {
        let mut c = connect(&f.addr()).await.unwrap();
        c.publish(pb::PublishRequest {
            build_dir: build.to_string_lossy().into_owned(),
            stage: "math-libs".into(),
            family: "gfx94X-dcgpu".into(),
            platform: "linux".into(),
            repo: REPO.into(),
            workflow: WORKFLOW.into(),
            run_id: "901".into(),
            commit: e2.clone(),
            status: "success".into(),
            compression: "zstd".into(),
            head_repo: "someone/TheRock".into(),
            fingerprints: [("blas".to_string(), "ab".repeat(32))]
                .into_iter()
                .collect(),
            reused_from: Default::default(),
            compression_level: None,
            branch: None,
        })
        .await
        .unwrap();
    });
    // A malformed commit index entry is skipped; the other runs of the commit still show.
    f.rt.block_on(async {
        f.storage
            .put(
                &format!("cairn/commits/{e1}/899-linux/math-libs-gfx94X-dcgpu.json"),
                PutBody::Bytes(Bytes::from_static(b"not json")),
            )
            .await
            .unwrap()
    });
    let runs = f.rt.block_on(async {
        let mut c = connect(&f.addr()).await.unwrap();
        c.find_runs(pb::FindRunsRequest {
            commit: e1.clone(),
            repo: String::new(),
            platform: "linux".into(),
            allow_untrusted: true,
        })
        .await
        .unwrap()
        .into_inner()
        .runs
    });
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].run_id, "900");
    assert!(runs[0].trusted);
    assert_eq!(
        runs[0]
            .jobs
            .iter()
            .map(|j| (j.stage.as_str(), j.family.as_str()))
            .collect::<Vec<_>>(),
        [("math-libs", "gfx94X-dcgpu")]
    );

    let hidden: FindJson = f.json(
        &["find", "--commit", &e2, "--platform", "linux", "--offline"],
        1,
    );
    assert!(hidden.results.is_empty());
    let shown: FindJson = f.json(
        &[
            "find",
            "--commit",
            &e2,
            "--platform",
            "linux",
            "--offline",
            "--allow-untrusted",
        ],
        0,
    );
    let r = &shown.results[0];
    assert!(!r.trusted);
    assert_eq!(r.bucket, "therock-ci-artifacts-external");
    assert_eq!(r.external_repo, "ROCm-TheRock/");
    assert_eq!(r.s3_path, "ROCm-TheRock/901-linux");
    assert_eq!(r.artifacts, ["blas_lib_gfx94X-dcgpu.tar.zst"]);
}
