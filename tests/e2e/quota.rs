//! The store's lifecycle under pressure, with real `cairnd serve` and `cairn` processes: a quota
//! smaller than one stage's working set never breaks a fetch (every blob is leased from its ingest's
//! index commit until the client has materialized), the background evictor brings the store back
//! under its quota once the leases drop (no `cairn gc`), and `cairn verify` re-hashes the store of a
//! running daemon, quarantining a corrupt blob that the next bootstrap downloads again.
//!
//! The published world is `bootstrap.rs`'s (two runs of a TheRock-shaped checkout); the stage's
//! working set is measured, not assumed, by a cold bootstrap on a daemon without a quota.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_client::api::QuotaState;
use cairn_client::connect::{DaemonAddr, connect};
use cairn_daemon::store::{LocalStore, StoreConfig};
use cairn_fingerprint::Compression;
use cairn_proto::v1 as pb;
use cairn_testkit::bin_path::bin_path;
use cairn_testkit::daemon::{Daemon, Options};
use cairn_testkit::datagen::{self, ArtifactSpec};

use crate::bootstrap::{FAMILY, STAGE, World, assert_bootstrap_tree, expect_code};

/// How long the background evictor may take to bring the store under its quota after the last
/// client exits (it is woken at once; this bounds a stuck one, it is not a performance claim).
const SETTLE: Duration = Duration::from_secs(30);

/// The archives run 2 rebuilt (the rest of the stage comes from run 1).
fn run2_has() -> BTreeSet<String> {
    ["core-hip", "core-runtime", "blas", "rand"]
        .map(String::from)
        .into()
}

/// A daemon over the world's storage with a quota of `max_bytes`.
fn daemon_with_quota(world: &World, max_bytes: u64) -> Daemon {
    Daemon::start_with(
        world.storage.clone(),
        Options {
            args: vec!["--max-bytes".into(), max_bytes.to_string()],
            ..Options::default()
        },
    )
    .unwrap()
}

/// Bytes a cold bootstrap of the stage leaves in a store without a quota.
fn working_set(world: &World) -> u64 {
    let daemon = Daemon::start(world.storage.clone()).unwrap();
    let dest = world.tmp.path().join("measure");
    let (out, _) = world.bootstrap(&daemon, &dest, &[]);
    expect_code(&out, 0);
    daemon.stats().unwrap().store_bytes
}

/// Poll `Stats` until the store holds at most `quota` bytes and no lease is held; panics after
/// [`SETTLE`]. A fetch's leases drop when the daemon sees its client's stream close, which happens
/// after (not when) the client process exits; an under-quota store can be read before that.
fn wait_settled(daemon: &Daemon, quota: u64, context: &str) -> cairn_client::api::Stats {
    let started = Instant::now();
    loop {
        let s = daemon.stats().unwrap();
        if s.store_bytes <= quota && s.leased_bytes == 0 {
            return s;
        }
        assert!(
            started.elapsed() < SETTLE,
            "{context}: the store stayed over its quota of {quota} bytes or kept leases for \
             {SETTLE:?} after the clients exited (no `cairn gc` was run): {s:?}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 8 concurrent cold bootstraps per quota (0.1×, 0.5×, 1× the stage's working set): every one
/// succeeds with the exact tree, and the store ends at or under its quota.
fn quota_below_working_set_never_breaks_a_fetch(kind: &str) {
    let Some(world) = World::publish_two_runs(kind) else {
        return;
    };
    let expected = world.expected(STAGE, &run2_has());
    let ws = working_set(&world);
    assert!(ws > 0);
    for (label, quota) in [("0.1x", ws / 10), ("0.5x", ws / 2), ("1x", ws)] {
        let daemon = daemon_with_quota(&world, quota);
        let dests: Vec<PathBuf> = (0..8)
            .map(|i| world.tmp.path().join(format!("quota-{label}-{i}")))
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
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut ok = 0;
        let mut failures = Vec::new();
        for child in children {
            let out = child.wait_with_output().unwrap();
            if out.status.success() {
                ok += 1;
            } else {
                failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
            }
        }
        eprintln!(
            "quota {label} ({quota} of {ws} bytes): {ok}/8 bootstraps succeeded{}",
            if failures.is_empty() {
                String::new()
            } else {
                format!(": {}", failures[0])
            }
        );
        assert_eq!(
            ok, 8,
            "quota {label} ({quota} of a {ws}-byte working set): every fetch must succeed; \
             failures:\n{failures:#?}"
        );
        for d in &dests {
            assert_bootstrap_tree(&world, d, &expected);
        }
        // No lease outlives its client (`wait_settled` fails if one does).
        let s = wait_settled(&daemon, quota, label);
        assert_eq!(s.quota_state, QuotaState::UnderQuota, "{s:?}");
    }
}

#[test]
fn quota_below_working_set_never_breaks_a_fetch_s3() {
    quota_below_working_set_never_breaks_a_fetch("s3");
}

#[test]
fn quota_below_working_set_never_breaks_a_fetch_local() {
    quota_below_working_set_never_breaks_a_fetch("local");
}

/// A raw `Fetch` of the stage held open after its summary (as a client still copying would): the
/// store is over its quota by at most the leased bytes and says so; dropping the stream releases the
/// leases and the background evictor brings the store under the quota without any `gc`.
fn over_quota_while_leased_then_back_under(kind: &str) {
    let Some(world) = World::publish_two_runs(kind) else {
        return;
    };
    let ws = working_set(&world);
    let quota = ws / 4;
    let daemon = daemon_with_quota(&world, quota);
    let request = pb::FetchRequest {
        resolve: Some(pb::ResolveRequest {
            stage: STAGE.into(),
            family: FAMILY.into(),
            platform: "linux".into(),
            artifacts: world
                .inbound_fingerprints(STAGE)
                .into_iter()
                .map(|(artifact, fp)| pb::ArtifactRequest {
                    artifact,
                    fingerprint: fp.to_string(),
                })
                .collect(),
            ..Default::default()
        }),
        local_paths: true,
        blob_path_batches: true,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = DaemonAddr::parse(&daemon.addr());
    let stream = rt.block_on(async {
        let mut client = connect(&addr).await.unwrap();
        let mut stream = client.fetch(request).await.unwrap().into_inner();
        loop {
            match stream.message().await.unwrap() {
                Some(pb::FetchEvent {
                    event: Some(pb::fetch_event::Event::Summary(_)),
                }) => break,
                Some(_) => {}
                None => panic!("the stream ended before its summary"),
            }
        }
        (client, stream)
    });
    let held = daemon.stats().unwrap();
    assert!(
        held.store_bytes > quota,
        "the fetch's working set ({ws}) exceeds the quota ({quota}): {held:?}"
    );
    assert!(
        held.store_bytes <= quota + held.leased_bytes,
        "over quota by at most the leased bytes: {held:?}"
    );
    assert_eq!(held.quota_state, QuotaState::OverQuotaLeased, "{held:?}");
    let status = daemon.cairn().args(["--json", "status"]).output().unwrap();
    expect_code(&status, 0);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["quota_state"], "over_quota_leased", "{json}");
    assert!(json["leased_bytes"].as_u64().unwrap() > 0, "{json}");

    drop(stream);
    drop(rt);
    let after = wait_settled(&daemon, quota, "after the stream closed");
    assert!(after.evicted_blobs > 0, "{after:?}");
    assert_eq!(after.quota_state, QuotaState::UnderQuota, "{after:?}");
}

#[test]
fn over_quota_while_leased_then_back_under_without_gc_s3() {
    over_quota_while_leased_then_back_under("s3");
}

#[test]
fn over_quota_while_leased_then_back_under_without_gc_local() {
    over_quota_while_leased_then_back_under("local");
}

/// `cairn verify` run over and over while 8 cold bootstraps fetch through a quota of half the
/// working set (so blobs are ingested, leased and evicted under it): every bootstrap succeeds with
/// the exact tree and no verify reports a healthy blob as corrupt or missing.
fn verify_during_load(kind: &str) {
    let Some(world) = World::publish_two_runs(kind) else {
        return;
    };
    let expected = world.expected(STAGE, &run2_has());
    let ws = working_set(&world);
    let daemon = daemon_with_quota(&world, ws / 2);
    let dests: Vec<PathBuf> = (0..8)
        .map(|i| world.tmp.path().join(format!("verify-load-{i}")))
        .collect();
    let mut children: Vec<_> = dests
        .iter()
        .map(|d| {
            daemon
                .cairn()
                .args(["--quiet", "bootstrap", "--stage", STAGE, "--family", FAMILY])
                .arg("--build-dir")
                .arg(d)
                .arg("--checkout")
                .arg(&world.checkout.root)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let started = Instant::now();
    let mut verifies = 0;
    let mut checked = 0;
    loop {
        let out = daemon.cairn().args(["--json", "verify"]).output().unwrap();
        expect_code(&out, 0);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        checked += json["checked"].as_u64().unwrap();
        verifies += 1;
        if children.iter_mut().all(|c| c.try_wait().unwrap().is_some()) {
            break;
        }
    }
    let ok = children
        .iter_mut()
        .map(|c| c.wait().unwrap())
        .filter(|s| s.success())
        .count();
    eprintln!(
        "verify under load: {verifies} verifies ({checked} blobs re-hashed) during 8 bootstraps \
         in {:?}: {ok}/8 bootstraps succeeded, 0 false corruptions",
        started.elapsed()
    );
    assert_eq!(ok, 8);
    for d in &dests {
        assert_bootstrap_tree(&world, d, &expected);
    }
}

#[test]
fn verify_during_load_finds_nothing_and_breaks_nothing_s3() {
    verify_during_load("s3");
}

#[test]
fn verify_during_load_finds_nothing_and_breaks_nothing_local() {
    verify_during_load("local");
}

/// Every blob file under a store's `cas-v1/blobs/`, largest first.
fn blob_files(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(store.join("cas-v1").join("blobs")).unwrap() {
        let shard = shard.unwrap().path();
        if !shard.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&shard).unwrap() {
            let p = f.unwrap().path();
            if p.file_name().unwrap().len() == 64 {
                out.push(p);
            }
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    out
}

/// Flip one byte of `path` in place (same size), as bit rot would.
fn flip_a_byte(path: &Path) {
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x5a;
    std::fs::write(path, &bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A blob corrupted (same size, one byte flipped) under a running daemon: `cairn verify` finds and
/// quarantines it and exits 1; the next bootstrap downloads it again and produces the exact tree;
/// a second verify is clean.
fn online_verify_quarantines_and_the_next_bootstrap_redownloads(kind: &str) {
    let Some(world) = World::publish_two_runs(kind) else {
        return;
    };
    let expected = world.expected(STAGE, &run2_has());
    let daemon = Daemon::start(world.storage.clone()).unwrap();
    let first = world.tmp.path().join("verify-first");
    let (out, _) = world.bootstrap(&daemon, &first, &[]);
    expect_code(&out, 0);

    let clean = daemon.cairn().args(["--json", "verify"]).output().unwrap();
    expect_code(&clean, 0);
    let json: serde_json::Value = serde_json::from_slice(&clean.stdout).unwrap();
    let blobs = daemon.stats().unwrap().blobs;
    assert_eq!(json["checked"], blobs, "{json}");
    assert_eq!(json["clean"], true);

    let victim = blob_files(&daemon.store_dir())[0].clone();
    let digest = victim.file_name().unwrap().to_string_lossy().into_owned();
    flip_a_byte(&victim);

    let out = daemon.cairn().args(["--json", "verify"]).output().unwrap();
    expect_code(&out, 1);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["clean"], false);
    let corrupt = json["corrupt"].as_array().unwrap();
    assert_eq!(corrupt.len(), 1, "{json}");
    assert_eq!(corrupt[0]["digest"], digest.as_str());
    let quarantined = PathBuf::from(corrupt[0]["quarantined_to"].as_str().unwrap());
    assert!(quarantined.is_file(), "{json}");
    assert!(
        quarantined.starts_with(daemon.store_dir().join("quarantine")),
        "{json}"
    );
    assert!(!victim.exists(), "the corrupt blob left the CAS");

    let before = daemon.stats().unwrap();
    let again = world.tmp.path().join("verify-again");
    let (out, json) = world.bootstrap(&daemon, &again, &[]);
    expect_code(&out, 0);
    assert_bootstrap_tree(&world, &again, &expected);
    let after = daemon.stats().unwrap();
    assert!(
        after.misses > before.misses,
        "the archive holding the quarantined blob is downloaded again: {json:?}"
    );
    assert!(victim.is_file(), "the blob is back, rewritten from storage");

    let out = daemon
        .cairn()
        .args(["verify", "--sample", "3"])
        .output()
        .unwrap();
    expect_code(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.starts_with("checked\t3\t"), "{text}");
    let out = daemon.cairn().arg("verify").output().unwrap();
    expect_code(&out, 0);
}

#[test]
fn online_verify_quarantines_and_the_next_bootstrap_redownloads_s3() {
    online_verify_quarantines_and_the_next_bootstrap_redownloads("s3");
}

#[test]
fn online_verify_quarantines_and_the_next_bootstrap_redownloads_local() {
    online_verify_quarantines_and_the_next_bootstrap_redownloads("local");
}

/// The lease an ingest takes before its index commit travels with its outcome: while the outcome
/// lives, a later ingest's quota eviction cannot take its blobs (the store is then over quota by at
/// most the leased bytes, and says so); once it is dropped — where the ingest used to drop it, before
/// the fetch had leased the tree — the next eviction takes them.
#[test]
fn an_ingest_outcome_keeps_its_blobs_leased_until_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let quota = 100 << 10;
    let store = LocalStore::open(
        tmp.path().join("store"),
        StoreConfig {
            max_bytes: Some(quota),
            ..StoreConfig::default()
        },
    )
    .unwrap();
    let ingest = |i: u64| {
        let spec = ArtifactSpec::new("lease", "lib", &format!("fam{i}"), 256 << 10, 500 + i);
        let a = datagen::write_archive(&spec, &tmp.path().join("out"), Compression::Zstd).unwrap();
        let (outcome, lease) = store
            .ingest_file_leased(&format!("k{i}"), &a.path, None, None)
            .unwrap();
        (outcome, lease)
    };
    let (a, a_lease) = ingest(0);
    let (b, b_lease) = ingest(1);
    assert!(
        store.has_blobs(&a.tree).unwrap(),
        "the second ingest's eviction must spare the blobs the first one's outcome holds"
    );
    assert!(store.has_blobs(&b.tree).unwrap());
    let s = store.stats().unwrap();
    assert!(
        s.bytes > quota && s.bytes <= quota + s.leased_bytes,
        "{s:?}"
    );
    assert_eq!(s.quota_state(), cairn_daemon::QuotaState::OverLeased);

    drop(a_lease);
    drop(b_lease);
    let (c, _c_lease) = ingest(2);
    assert!(
        !store.has_blobs(&a.tree).unwrap(),
        "released, the first ingest's blobs are evicted by the next ingest"
    );
    assert!(store.has_blobs(&c.tree).unwrap());
}

fn cairnd_verify(store: &Path) -> std::process::Output {
    Command::new(bin_path("cairnd"))
        .arg("verify")
        .arg("--store")
        .arg(store)
        .env_remove("CAIRN_STORE_DIR")
        .output()
        .unwrap()
}

/// `cairnd verify` on a path that does not exist: exit 2, the path named, nothing created; on the
/// store of a running daemon: exit 2 and a pointer to `cairn verify` instead of redb's lock message.
#[test]
fn offline_verify_refuses_a_missing_store_and_a_running_daemons() {
    let tmp = cairn_testkit::daemon::scratch_dir("e2e-verify-").unwrap();
    let typo = tmp.path().join("no").join("such-store");
    let out = cairnd_verify(&typo);
    expect_code(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&typo.display().to_string()) && err.contains("does not exist"),
        "{err}"
    );
    assert!(!typo.exists() && !tmp.path().join("no").exists());

    let daemon = Daemon::start(cairn_testkit::daemon::Storage::Local(
        tmp.path().join("storage"),
    ))
    .unwrap();
    let out = cairnd_verify(&daemon.store_dir());
    expect_code(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is in use by a running cairnd: use `cairn verify`, or stop cairnd first"),
        "{err}"
    );
    assert!(!err.contains("Database already open"), "{err}");
}
