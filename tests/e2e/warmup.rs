//! Predictive warm-up end to end: a publisher `cairnd` pushes a run with `--branch main`; a second
//! `cairnd` (its own store, the same storage) with `[warmup]` following that branch makes the
//! inbound archives of `ml-libs` local with no client request, and a following `cairn bootstrap`
//! against it downloads nothing. Also: warm-up is off by default, it fills at most 90% of the quota
//! (never evicting for it), and the branch feed entry is written by a push over the Unix socket and
//! over TCP alike. Local storage and S3 (moto).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_client::api::Stats;
use cairn_testkit::checkout::Checkout;
use cairn_testkit::ci;
use cairn_testkit::daemon::{Daemon, Options, Storage, scratch_dir};

use super::bootstrap::{expect_code, run_ok, storage};

const FAMILY: &str = "gfx94X-dcgpu";
const STAGE: &str = "ml-libs";
const RUN: &str = "3001";
/// Content bytes per generated lib/dev archive (dbg: a quarter).
const ARTIFACT_BYTES: u64 = 24 << 10;
/// How long warm-up may take to show up in a daemon's stats (a bound, not a performance claim).
const WAIT: Duration = Duration::from_secs(60);

/// A checkout, storage, and a publisher daemon that pushed run [`RUN`] of branch `main`:
/// `compiler-runtime` (generic) and `math-libs` for [`FAMILY`], everything `ml-libs` takes in.
struct Published {
    tmp: tempfile::TempDir,
    checkout: Checkout,
    storage: Storage,
    publisher: Daemon,
}

impl Published {
    fn new(kind: &str, publisher_opts: Options) -> Option<Published> {
        let tmp = scratch_dir("e2e-warmup-").unwrap();
        let storage = storage(kind, tmp.path())?;
        let checkout = Checkout::create(&tmp.path().join("src"), ci::TOPOLOGY).unwrap();
        let publisher = Daemon::start_with(storage.clone(), publisher_opts).unwrap();
        std::fs::write(tmp.path().join("topology.toml"), ci::TOPOLOGY).unwrap();
        Some(Published {
            tmp,
            checkout,
            storage,
            publisher,
        })
    }

    /// Push every job of the run with `cairn` (`cmd` picks the Unix socket or TCP).
    fn push_run(&self, run: &str, branch: Option<&str>, tcp: bool) {
        self.push_run_with(run, branch, tcp, &[]);
    }

    /// [`Published::push_run`] with more `cairn push` arguments.
    fn push_run_with(&self, run: &str, branch: Option<&str>, tcp: bool, extra: &[&str]) {
        for (stage, family) in [("compiler-runtime", "generic"), ("math-libs", FAMILY)] {
            let fps = ci::produced_fingerprints(&self.checkout.root, stage, family).unwrap();
            let b = self
                .tmp
                .path()
                .join(format!("build-{run}-{stage}-{family}"));
            ci::write_build_dir(&b, family, &fps, None, ARTIFACT_BYTES).unwrap();
            let mut cmd = if tcp {
                self.publisher.cairn_tcp()
            } else {
                self.publisher.cairn()
            };
            for var in ["CAIRN_BRANCH", "GITHUB_REF_TYPE", "GITHUB_REF_NAME"] {
                cmd.env_remove(var);
            }
            cmd.args([
                "--quiet", "push", "--stage", stage, "--family", family, "--run-id", run,
            ])
            .arg("--build-dir")
            .arg(&b)
            .arg("--checkout")
            .arg(&self.checkout.root);
            if let Some(branch) = branch {
                cmd.args(["--branch", branch]);
            }
            cmd.args(extra);
            run_ok(&mut cmd);
        }
    }

    /// A config file with `[warmup]` following `ROCm/TheRock:main` (`enabled`), every 0.2 s.
    fn warmup_config(&self, enabled: bool) -> PathBuf {
        let path = self
            .tmp
            .path()
            .join(format!("cairnd-warmup-{enabled}.toml"));
        std::fs::write(
            &path,
            format!(
                "[warmup]\nenabled = {enabled}\nbranches = [\"ROCm/TheRock:main\"]\n\
                 stages = [\"{STAGE}\"]\nfamilies = [\"{FAMILY}\"]\ninterval = 0.2\n\
                 topology = \"{}\"\n",
                self.tmp.path().join("topology.toml").display()
            ),
        )
        .unwrap();
        path
    }

    /// A second daemon (its own store) over the same storage, with `config` and `args`.
    fn follower(&self, config: Option<&Path>, args: &[&str]) -> Daemon {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if let Some(c) = config {
            all.extend(["--config".to_string(), c.display().to_string()]);
        }
        Daemon::start_with(
            self.storage.clone(),
            Options {
                args: all,
                ..Options::default()
            },
        )
        .unwrap()
    }

    /// `cairn --json bootstrap --stage ml-libs` into `dest` through `daemon`.
    fn bootstrap(&self, daemon: &Daemon, dest: &Path) -> serde_json::Value {
        let out = daemon
            .cairn()
            .args(["--json", "bootstrap", "--stage", STAGE, "--family", FAMILY])
            .arg("--build-dir")
            .arg(dest)
            .arg("--checkout")
            .arg(&self.checkout.root)
            .output()
            .unwrap();
        expect_code(&out, 0);
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Poll `daemon`'s stats until `done` holds (panics after [`WAIT`], with the daemon's log).
fn wait_for(daemon: &Daemon, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
    let started = Instant::now();
    loop {
        let s = daemon.stats().unwrap();
        if done(&s) {
            return s;
        }
        assert!(
            started.elapsed() < WAIT,
            "{what}: not within {WAIT:?}; stats: {s:?}\nlog:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every file and symlink under `dir` (path → content digest or target), `.cairn-*` excepted.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if rel.starts_with(".cairn-") {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                out.insert(
                    rel,
                    format!("l {}", std::fs::read_link(&p).unwrap().display()),
                );
            } else if m.is_dir() {
                stack.push(p);
            } else {
                let digest = blake3::hash(&std::fs::read(&p).unwrap())
                    .to_hex()
                    .to_string();
                out.insert(rel, format!("f {digest}"));
            }
        }
    }
    out
}

fn warms_a_pushed_run_without_a_client_request(kind: &str) {
    let Some(world) = Published::new(kind, Options::default()) else {
        return;
    };
    let config = world.warmup_config(true);
    let follower = world.follower(Some(&config), &["--metrics", "127.0.0.1:0"]);
    world.push_run(RUN, Some("main"), false);

    // No client request: the follower's warm-up alone makes the archives local, every archive
    // `ml-libs` takes in (the jobs land one after the other; each poll takes what is there).
    let topology = cairn_fingerprint::Topology::parse(ci::TOPOLOGY).unwrap();
    let inbound = (topology.inbound(STAGE).unwrap().len() * ci::COMPONENTS.len()) as u64;
    let warmed = wait_for(&follower, "warm-up prefetches the pushed run", |s| {
        s.warmup.last_run.values().any(|r| r == RUN) && s.warmup.prefetched_archives >= inbound
    });
    assert_eq!(warmed.warmup.prefetched_archives, inbound);
    assert!(warmed.warmup.prefetched_bytes > 0);
    assert!(warmed.warmup.enabled);
    assert_eq!(warmed.warmup.branches, ["ROCm/TheRock:main"]);
    assert!(!warmed.warmup.last_poll.is_empty());
    assert_eq!(warmed.fetch_requests, 0, "no client asked for anything");

    // A job that starts now finds everything warm: nothing is downloaded.
    let before = follower.stats().unwrap();
    let dest = world.tmp.path().join("warm-job");
    let json = world.bootstrap(&follower, &dest);
    let after = follower.stats().unwrap();
    let summary = &json["summary"];
    assert!(json["missing"].as_array().unwrap().is_empty(), "{json}");
    assert_eq!(summary["from_storage"], 0, "{summary}");
    assert_eq!(summary["storage_bytes"], 0, "{summary}");
    assert!(summary["from_cas"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(after.misses, before.misses, "no archive was downloaded");
    assert_eq!(
        after.warmup.hits,
        summary["from_cas"].as_u64().unwrap(),
        "every archive the job took was served from warm-up's prefetch"
    );
    // The files are right: the same tree as a bootstrap through the publisher, which built them.
    let reference = world.tmp.path().join("reference-job");
    world.bootstrap(&world.publisher, &reference);
    let got = tree(&dest);
    assert!(!got.is_empty());
    assert_eq!(got, tree(&reference));
    assert!(follower.log().contains("warm-up prefetched"));

    // Prometheus and `/status` say the same.
    let metrics = http_get(&follower, "/metrics");
    for (name, value) in [
        (
            "cairn_warmup_prefetched_bytes_total",
            after.warmup.prefetched_bytes,
        ),
        (
            "cairn_warmup_prefetched_archives_total",
            after.warmup.prefetched_archives,
        ),
        ("cairn_warmup_hits_total", after.warmup.hits),
        ("cairn_warmup_wasted_bytes_total", 0),
    ] {
        assert!(
            metrics.lines().any(|l| l == format!("{name} {value}")),
            "`{name} {value}` in:\n{metrics}"
        );
    }
    let status: serde_json::Value = serde_json::from_str(&http_get(&follower, "/status")).unwrap();
    assert_eq!(status["warmup"]["enabled"], true);
    assert_eq!(status["warmup"]["last_run"]["ROCm/TheRock:main"], RUN);
    assert_eq!(status["warmup"]["hits"], after.warmup.hits);
}

/// `GET path` from the daemon's metrics listener (address from its log): the body.
fn http_get(daemon: &Daemon, path: &str) -> String {
    use std::io::{Read, Write};
    let log = daemon.log();
    let addr = log
        .lines()
        .find_map(|l| l.strip_prefix("cairnd: metrics on http://"))
        .and_then(|r| r.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"));
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.contains(" 200 "), "{head}");
    body.to_string()
}

#[test]
fn warmup_local_storage_warms_a_pushed_run_and_the_next_bootstrap_downloads_nothing() {
    warms_a_pushed_run_without_a_client_request("local");
}

#[test]
fn warmup_s3_warms_a_pushed_run_and_the_next_bootstrap_downloads_nothing() {
    warms_a_pushed_run_without_a_client_request("s3");
}

#[test]
fn warmup_is_off_by_default() {
    let world = Published::new("local", Options::default()).unwrap();
    // No config at all, and a config naming a branch but not enabling warm-up.
    let bare = world.follower(None, &[]);
    let config = world.warmup_config(false);
    let disabled = world.follower(Some(&config), &[]);
    world.push_run(RUN, Some("main"), false);
    // Many intervals of the enabled case (0.2 s).
    std::thread::sleep(Duration::from_secs(3));
    for d in [&bare, &disabled] {
        let s = d.stats().unwrap();
        assert!(!s.warmup.enabled, "{s:?}");
        assert_eq!(s.warmup.polls, 0);
        assert_eq!(s.warmup.prefetched_bytes, 0);
        assert_eq!(s.store_bytes, 0, "nothing was fetched: {s:?}");
        assert_eq!(s.trees, 0);
        let out = d.cairn().arg("status").output().unwrap();
        expect_code(&out, 0);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("warm-up\toff"), "{text}");
    }
}

#[test]
fn warmup_fills_at_most_90_percent_of_the_quota_and_never_evicts_for_it() {
    let world = Published::new("local", Options::default()).unwrap();
    world.push_run(RUN, Some("main"), false);
    // `ml-libs` takes in ~430 KiB of content; the quota holds less than half of it.
    let quota: u64 = 200 << 10;
    let line = quota * 9 / 10;
    let config = world.warmup_config(true);
    let follower = world.follower(Some(&config), &["--max-bytes", &quota.to_string()]);
    let started = Instant::now();
    let mut max_seen = 0;
    let mut polls_done = None;
    while started.elapsed() < WAIT {
        let s = follower.stats().unwrap();
        max_seen = max_seen.max(s.store_bytes);
        assert!(
            s.store_bytes <= line,
            "warm-up filled past 90% of the quota: {s:?}"
        );
        if s.warmup.polls >= 3 {
            polls_done = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = polls_done.unwrap_or_else(|| panic!("3 polls within {WAIT:?}:\n{}", follower.log()));
    assert!(
        s.warmup.prefetched_archives > 0,
        "what fits is prefetched: {s:?}"
    );
    assert!(
        s.warmup.skipped_quota_archives > 0,
        "what does not fit is skipped: {s:?}"
    );
    assert_eq!(s.evicted_blobs, 0, "warm-up never evicts: {s:?}");
    assert!(max_seen <= line && s.store_bytes <= quota);
    let out = follower.cairn().arg("status").output().unwrap();
    expect_code(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("skipped for the quota"), "{text}");

    // Prefetched blobs evicted before any client used them are counted as wasted.
    assert_eq!(s.warmup.wasted_bytes, 0);
    run_ok(follower.cairn().args(["gc", "--max-bytes", "1"]));
    let polls = s.warmup.polls;
    let s = wait_for(&follower, "evicted prefetches count as wasted", |s| {
        s.warmup.polls > polls + 1
    });
    assert!(s.warmup.wasted_bytes > 0, "{s:?}");
    assert!(s.store_bytes <= line, "{s:?}");
}

/// The branch feed entries below `cairn/branches/rocm/therock/{branch}/` of a local storage root.
fn feed_entries(root: &Path, branch: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("cairn/branches/rocm/therock").join(branch)];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                out.push(serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap());
            }
        }
    }
    out
}

#[test]
fn warmup_feed_entry_is_written_by_a_push_over_the_unix_socket_and_over_tcp() {
    let world = Published::new(
        "local",
        Options {
            tcp: true,
            ..Options::default()
        },
    )
    .unwrap();
    let Storage::Local(root) = world.storage.clone() else {
        unreachable!()
    };
    world.push_run("4001", Some("main"), false);
    world.push_run("4002", Some("release/7.0"), true);
    world.push_run("4003", None, false);
    let main = feed_entries(&root, "main");
    assert_eq!(main.len(), 2, "one entry per job: {main:?}");
    for e in &main {
        assert_eq!(e["branch"], "main");
        assert_eq!(e["run"]["run_id"], "4001");
        assert_eq!(e["run"]["commit"], world.checkout.head().unwrap());
    }
    let release = feed_entries(&root, "release%2F7.0");
    assert_eq!(release.len(), 2, "over TCP too: {release:?}");
    assert!(release.iter().all(|e| e["run"]["run_id"] == "4002"));
    assert!(
        !format!("{main:?}{release:?}").contains("4003"),
        "a push without a branch files no feed entry"
    );
    // A branch name that could escape its prefix is refused before anything is read.
    let mut cmd: Command = world.publisher.cairn();
    let out = cmd
        .args([
            "push",
            "--stage",
            "math-libs",
            "--family",
            FAMILY,
            "--run-id",
            "4004",
        ])
        .args([
            "--branch",
            "main/../x",
            "--build-dir",
            "/nonexistent",
            "--checkout",
        ])
        .arg(&world.checkout.root)
        .output()
        .unwrap();
    expect_code(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("branch"), "{err}");
}

#[test]
fn warmup_never_follows_an_untrusted_run_of_the_branch() {
    let world = Published::new("local", Options::default()).unwrap();
    let Storage::Local(root) = world.storage.clone() else {
        unreachable!()
    };
    let config = world.warmup_config(true);
    let follower = world.follower(Some(&config), &[]);
    // A fork's run names `main` too: its feed entry goes to the untrusted area.
    world.push_run_with(
        RUN,
        Some("main"),
        false,
        &["--head-repo", "someone/TheRock"],
    );
    let untrusted = feed_entries(&root.join("untrusted"), "main");
    assert_eq!(
        untrusted.len(),
        2,
        "the fork's entries are filed, untrusted"
    );
    assert!(
        feed_entries(&root, "main").is_empty(),
        "nothing in the trusted feed"
    );
    let polls = follower.stats().unwrap().warmup.polls;
    let s = wait_for(&follower, "three more polls", |s| {
        s.warmup.polls >= polls + 3
    });
    assert_eq!(s.warmup.prefetched_archives, 0, "{s:?}");
    assert!(s.warmup.last_run.is_empty(), "{s:?}");
    assert_eq!(s.store_bytes, 0);
}
