//! Security: a root `cairnd` beside users who plant symlinks in their build dirs, a store with
//! planted links, and a damaged index. Real `cairnd` and `cairn` processes, real sockets, a real
//! local storage directory; each test names the finding it covers (RELIABILITY.md, "Security").

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn_fingerprint::Blake3;
use cairn_testkit::bin_path::bin_path;
use cairn_testkit::checkout::Checkout;
use cairn_testkit::ci;
use cairn_testkit::daemon::{Daemon, Options, Storage, scratch_dir};

const STAGE: &str = "compiler-runtime";
const FAMILY: &str = "generic";
const BYTES: u64 = 4 << 10;

/// A daemon over a local storage dir, a checkout, and the fingerprints of one stage.
struct Fixture {
    tmp: tempfile::TempDir,
    checkout: Checkout,
    daemon: Daemon,
    fps: BTreeMap<String, Blake3>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(Options::default())
    }

    fn with(opts: Options) -> Fixture {
        let tmp = scratch_dir("e2e-security-").unwrap();
        let checkout = Checkout::create(&tmp.path().join("src"), ci::TOPOLOGY).unwrap();
        let daemon = Daemon::start_with(Storage::Local(tmp.path().join("storage")), opts).unwrap();
        let fps = ci::produced_fingerprints(&checkout.root, STAGE, FAMILY).unwrap();
        Fixture {
            tmp,
            checkout,
            daemon,
            fps,
        }
    }

    /// A generated build dir `name` for the stage.
    fn build_dir(&self, name: &str) -> PathBuf {
        let b = self.tmp.path().join(name);
        ci::write_build_dir(&b, FAMILY, &self.fps, None, BYTES).unwrap();
        b
    }

    fn storage(&self) -> PathBuf {
        self.tmp.path().join("storage")
    }

    /// `cairn push` of `build_dir` as run `run`.
    fn push(&self, build_dir: &Path, run: &str) -> Output {
        self.daemon
            .cairn()
            .args([
                "push", "--stage", STAGE, "--family", FAMILY, "--run-id", run,
            ])
            .arg("--build-dir")
            .arg(build_dir)
            .arg("--checkout")
            .arg(&self.checkout.root)
            .output()
            .unwrap()
    }
}

/// Every path below `dir` (symlinks not followed), sorted.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.symlink_metadata().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The first artifact dir name of a build dir.
fn first_artifact(build_dir: &Path) -> String {
    let mut names: Vec<String> = fs::read_dir(build_dir.join("artifacts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.remove(0)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
}

/// Finding: a planted `.upload_cache/{archive}.sha256sum -> victim` made the daemon overwrite the
/// victim. Now publish writes nothing in the build dir at all.
#[test]
fn push_never_writes_through_a_planted_sidecar_symlink() {
    let f = Fixture::new();
    let b = f.build_dir("build");
    let victim = f.tmp.path().join("victim-file");
    fs::write(&victim, "precious\n").unwrap();
    let archive = format!("{}.tar.zst", first_artifact(&b));
    fs::create_dir(b.join(".upload_cache")).unwrap();
    symlink(
        &victim,
        b.join(".upload_cache").join(format!("{archive}.sha256sum")),
    )
    .unwrap();
    let before = tree(&b);
    assert_ok(&f.push(&b, "3001"));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(tree(&b), before, "publish wrote nothing in the build dir");
    // What was published is complete: the archive is in storage.
    assert!(
        tree(&f.storage())
            .iter()
            .any(|p| p.file_name().is_some_and(|n| *n == *archive)),
        "{archive} published"
    );
}

/// Finding: `.upload_cache -> DIR` made the daemon create root-owned archives in DIR. Now nothing is
/// created through it.
#[test]
fn push_never_writes_through_a_planted_upload_cache_dir_symlink() {
    let f = Fixture::new();
    let b = f.build_dir("build");
    let outside = f.tmp.path().join("not-the-users");
    fs::create_dir(&outside).unwrap();
    symlink(&outside, b.join(".upload_cache")).unwrap();
    assert_ok(&f.push(&b, "3002"));
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written through the symlink"
    );
    // The per-publish scratch dir under the store is gone afterwards.
    let scratch = f.daemon.store_dir().join("scratch");
    assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0);
}

/// A symlinked `artifacts` dir, a symlinked artifact dir and a symlinked manifest relpath inside an
/// artifact are each refused with an error naming the path; nothing is published.
#[test]
fn push_refuses_symlinked_artifacts_dirs_with_a_clear_error() {
    let f = Fixture::new();
    let secret = f.tmp.path().join("secret-dir");
    fs::create_dir(&secret).unwrap();
    fs::write(secret.join("secret.txt"), "root only\n").unwrap();

    // `artifacts` itself.
    let b = f.build_dir("build-a");
    fs::rename(b.join("artifacts"), b.join("real-artifacts")).unwrap();
    symlink(b.join("real-artifacts"), b.join("artifacts")).unwrap();
    let out = f.push(&b, "3003");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("artifacts` is a symlink"), "{err}");

    // One artifact dir.
    let b = f.build_dir("build-b");
    let first = first_artifact(&b);
    let dir = b.join("artifacts").join(&first);
    fs::rename(&dir, b.join("moved")).unwrap();
    symlink(b.join("moved"), &dir).unwrap();
    let out = f.push(&b, "3004");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&first) && err.contains("is a symlink"),
        "{err}"
    );

    // A relpath the artifact's manifest lists, pointing at a directory the user wants read.
    let b = f.build_dir("build-c");
    let first = first_artifact(&b);
    let dir = b.join("artifacts").join(&first);
    let manifest = fs::read_to_string(dir.join("artifact_manifest.txt")).unwrap();
    let relpath = manifest.lines().find(|l| !l.is_empty()).unwrap();
    fs::remove_dir_all(dir.join(relpath)).unwrap();
    symlink(&secret, dir.join(relpath)).unwrap();
    let out = f.push(&b, "3005");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(relpath) && err.contains("is a symlink"),
        "{err}"
    );

    // Nothing of these runs reached storage.
    let published: Vec<_> = tree(&f.storage())
        .into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            s.contains("3003") || s.contains("3004") || s.contains("3005")
        })
        .collect();
    assert!(published.is_empty(), "{published:?}");
}

/// `cairnd verify --store DIR` (opens the store like `serve`).
fn cairnd_verify(store: &Path) -> Output {
    Command::new(bin_path("cairnd"))
        .arg("verify")
        .arg("--store")
        .arg(store)
        .output()
        .unwrap()
}

/// A fresh store, created by `cairnd` and closed.
fn fresh_store(tmp: &Path) -> PathBuf {
    let store = tmp.join("store");
    // `cairnd verify` refuses a store that does not exist; create it as `cairnd serve` would.
    drop(
        cairn_daemon::store::LocalStore::open(&store, cairn_daemon::store::StoreConfig::default())
            .unwrap(),
    );
    assert_ok(&cairnd_verify(&store));
    store
}

/// Finding: `cas-v1/tmp -> DIR` made startup delete every file in DIR. Now the store refuses to open,
/// naming the path, and DIR is untouched.
#[test]
fn store_tmp_symlink_is_refused_and_its_target_survives() {
    let tmp = scratch_dir("e2e-security-store-").unwrap();
    let store = fresh_store(tmp.path());
    let victim = tmp.path().join("victim-dir");
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("keep.txt"), "keep\n").unwrap();
    fs::remove_dir_all(store.join("cas-v1/tmp")).unwrap();
    symlink(&victim, store.join("cas-v1/tmp")).unwrap();
    let out = cairnd_verify(&store);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cas-v1/tmp") && err.contains("is a symlink"),
        "{err}"
    );
    assert!(err.contains("Move it aside"), "{err}");
    assert_eq!(
        fs::read_to_string(victim.join("keep.txt")).unwrap(),
        "keep\n"
    );
}

/// Finding: a shard directory pointing outside received blob writes. Now the store refuses to open.
#[test]
fn store_shard_symlink_is_refused() {
    let tmp = scratch_dir("e2e-security-store-").unwrap();
    let store = fresh_store(tmp.path());
    let outside = tmp.path().join("outside-shard");
    fs::create_dir(&outside).unwrap();
    let shard = store.join("cas-v1/blobs/ab");
    fs::remove_dir_all(&shard).unwrap();
    symlink(&outside, &shard).unwrap();
    let out = cairnd_verify(&store);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("blobs/ab") && err.contains("is a symlink"),
        "{err}"
    );
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

/// Finding: a dangling `CACHEDIR.TAG` symlink was written through (creating its target). Now the
/// store refuses to open and creates nothing.
#[test]
fn store_dangling_cachedir_tag_symlink_is_refused() {
    let tmp = scratch_dir("e2e-security-store-").unwrap();
    let store = fresh_store(tmp.path());
    let target = tmp.path().join("created-through-the-link");
    fs::remove_file(store.join("CACHEDIR.TAG")).unwrap();
    symlink(&target, store.join("CACHEDIR.TAG")).unwrap();
    let out = cairnd_verify(&store);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("CACHEDIR.TAG") && err.contains("is a symlink"),
        "{err}"
    );
    assert!(!target.exists(), "nothing created through the link");

    // The same for a symlinked index file and quarantine dir.
    fs::remove_file(store.join("CACHEDIR.TAG")).unwrap();
    let index = store.join("index-v1.redb");
    fs::rename(&index, tmp.path().join("index-elsewhere")).unwrap();
    symlink(tmp.path().join("index-elsewhere"), &index).unwrap();
    let err = stderr(&cairnd_verify(&store));
    assert!(
        err.contains("index-v1.redb") && err.contains("is a symlink"),
        "{err}"
    );
    fs::remove_file(&index).unwrap();
    // Put the real index back: `cairnd verify` refuses a directory without one before any check.
    fs::rename(tmp.path().join("index-elsewhere"), &index).unwrap();
    let outside = tmp.path().join("outside-quarantine");
    fs::create_dir(&outside).unwrap();
    symlink(&outside, store.join("quarantine")).unwrap();
    let err = stderr(&cairnd_verify(&store));
    assert!(
        err.contains("quarantine") && err.contains("is a symlink"),
        "{err}"
    );
}

/// uid and gid of `nobody` as this test runs its client: gid 0, so the root daemon's 0660 socket
/// (`--group-access`) is reachable; the build dirs below decide what it may read.
const NOBODY: u32 = 65534;

/// Finding: a root daemon read any build dir a socket user named, with root's rights (a user could
/// publish root's private files). Now the reads use the peer's filesystem identity.
#[test]
fn push_reads_the_build_dir_with_the_callers_rights() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the caller-rights test needs root (it runs its client as nobody)");
        return;
    }
    let f = Fixture::with(Options {
        group_access: true,
        ..Options::default()
    });
    let traversable = |p: &Path| fs::set_permissions(p, fs::Permissions::from_mode(0o750)).unwrap();
    traversable(f.tmp.path());
    traversable(f.daemon.socket().parent().unwrap().parent().unwrap());
    let home = f.tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let push_as_nobody = |b: &Path, run: &str| {
        let mut cmd = f.daemon.cairn();
        cmd.uid(NOBODY)
            .gid(0)
            .env("HOME", &home)
            // The checkout belongs to root: let git read it for nobody.
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "safe.directory")
            .env("GIT_CONFIG_VALUE_0", "*")
            .args([
                "push", "--stage", STAGE, "--family", FAMILY, "--run-id", run,
            ])
            .arg("--build-dir")
            .arg(b)
            .arg("--checkout")
            .arg(&f.checkout.root);
        cmd.output().unwrap()
    };

    // A build dir only root may read: the daemon must not read it for nobody.
    let private = f.build_dir("private-build");
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    let out = push_as_nobody(&private, "3200");
    assert!(
        !out.status.success(),
        "published root's private build dir for nobody"
    );
    let err = stderr(&out);
    assert!(
        err.contains("private-build") && err.contains("ermission denied"),
        "{err}"
    );

    // A build dir nobody may read is published.
    let shared = f.build_dir("shared-build");
    assert_ok(&push_as_nobody(&shared, "3201"));
}

/// A user whose access to a build dir comes from a supplementary group publishes it: a root daemon
/// reads with the peer's groups (`SO_PEERGROUPS`), not only its primary group. The same push without
/// that group is refused, so the group is what grants access.
#[test]
fn push_reads_with_the_callers_supplementary_groups() {
    use std::os::unix::fs::{PermissionsExt, chown};
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the caller-groups test needs root (it runs its client as nobody)");
        return;
    }
    /// A group id no account uses: membership comes only from the client's setgroups below.
    const BUILDERS: u32 = 47_111;
    let f = Fixture::with(Options {
        group_access: true,
        ..Options::default()
    });
    let traversable = |p: &Path| fs::set_permissions(p, fs::Permissions::from_mode(0o750)).unwrap();
    traversable(f.tmp.path());
    traversable(f.daemon.socket().parent().unwrap().parent().unwrap());
    let home = f.tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    // Readable by root and the `BUILDERS` group only.
    let build = f.build_dir("group-build");
    chown(&build, Some(0), Some(BUILDERS)).unwrap();
    fs::set_permissions(&build, fs::Permissions::from_mode(0o750)).unwrap();
    let push_as_nobody = |groups: Vec<libc::gid_t>, run: &str| {
        let mut cmd = f.daemon.cairn();
        cmd.env("HOME", &home)
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "safe.directory")
            .env("GIT_CONFIG_VALUE_0", "*")
            .args([
                "push", "--stage", STAGE, "--family", FAMILY, "--run-id", run,
            ])
            .arg("--build-dir")
            .arg(&build)
            .arg("--checkout")
            .arg(&f.checkout.root);
        // std's `uid()` drops every supplementary group; set groups, gid and uid by hand instead.
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(0) != 0
                    || libc::setuid(NOBODY) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.output().unwrap()
    };
    let out = push_as_nobody(vec![0], "3300");
    assert!(
        !out.status.success(),
        "published a group-only build dir for a user outside the group"
    );
    assert!(
        stderr(&out).contains("ermission denied"),
        "{}",
        stderr(&out)
    );
    assert_ok(&push_as_nobody(vec![0, BUILDERS], "3301"));
}

/// Finding: garbage in a page of `index-v1.redb` made fetches fail for good (or redb panic) while
/// `verify` said clean. Now a corrupt index is moved aside and rebuilt at start, and a bootstrap
/// works again.
#[test]
fn garbage_in_the_index_is_moved_aside_and_rebuilt_at_start() {
    let mut f = Fixture::new();
    let b = f.build_dir("build");
    assert_ok(&f.push(&b, "3300"));
    let bootstrap = |f: &Fixture, dest: &Path| {
        f.daemon
            .cairn()
            .args([
                "bootstrap",
                "--stage",
                "math-libs",
                "--family",
                "gfx94X-dcgpu",
            ])
            .arg("--build-dir")
            .arg(dest)
            .arg("--checkout")
            .arg(&f.checkout.root)
            .output()
            .unwrap()
    };
    let first = f.tmp.path().join("dest-1");
    assert_ok(&bootstrap(&f, &first));

    f.daemon.kill();
    let index = f.daemon.store_dir().join("index-v1.redb");
    let mut bytes = fs::read(&index).unwrap();
    // 4 KiB of garbage over every page after the first (redb's header): whichever pages hold the
    // tables, they are damaged.
    let mut x: u32 = 0x9e37_79b9;
    for b in bytes.iter_mut().skip(4096) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    fs::write(&index, &bytes).unwrap();

    f.daemon.restart().unwrap();
    let log = f.daemon.log();
    assert!(log.contains("index is corrupt"), "{log}");
    assert!(log.contains("index rebuilt from the CAS"), "{log}");
    let moved: Vec<_> = fs::read_dir(f.daemon.store_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("index-v1.redb.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1, "the damaged index is kept aside");

    let second = f.tmp.path().join("dest-2");
    assert_ok(&bootstrap(&f, &second));
    let rel = |root: &Path| -> Vec<PathBuf> {
        tree(root)
            .into_iter()
            .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
            .filter(|p| !p.starts_with(".cairn-state.json"))
            .collect()
    };
    assert_eq!(rel(&first), rel(&second));

    f.daemon.kill();
    let out = cairnd_verify(&f.daemon.store_dir());
    assert_ok(&out);
}

/// `cairnd repair` moves the index aside and rebuilds it on demand; the store keeps serving.
#[test]
fn repair_rebuilds_the_index_on_demand() {
    let mut f = Fixture::new();
    let b = f.build_dir("build");
    assert_ok(&f.push(&b, "3400"));
    f.daemon.kill();
    let out = Command::new(bin_path("cairnd"))
        .arg("repair")
        .arg("--store")
        .arg(f.daemon.store_dir())
        .output()
        .unwrap();
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("moved aside") && stdout.contains("re-registered"),
        "{stdout}"
    );
    assert_ok(&cairnd_verify(&f.daemon.store_dir()));
    f.daemon.restart().unwrap();
}

/// Documents read from storage are bounded: a producer record padded past 1 MiB (still valid JSON)
/// is skipped with a warning naming its key, instead of being read whole and trusted.
#[test]
fn oversized_producer_records_are_not_read() {
    let f = Fixture::new();
    let b = f.build_dir("build");
    assert_ok(&f.push(&b, "3500"));
    let records: Vec<PathBuf> = tree(&f.storage())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/cairn/fp/") && p.is_file())
        .collect();
    assert!(!records.is_empty());
    for r in &records {
        let mut text = fs::read(r).unwrap();
        text.extend(std::iter::repeat_n(b' ', 2 << 20));
        fs::write(r, text).unwrap();
    }
    let out = f
        .daemon
        .cairn()
        .args([
            "resolve",
            "--stage",
            "math-libs",
            "--family",
            "gfx94X-dcgpu",
        ])
        .arg("--checkout")
        .arg(&f.checkout.root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = f.daemon.log();
    assert!(log.contains("more than the 1048576 bytes"), "{log}");
}

/// Finding: over TCP, `push --build-dir PATH` made the daemon read its own filesystem for a remote
/// client. Now a publish over TCP is refused with what to do instead.
#[test]
fn push_over_tcp_is_refused() {
    let f = Fixture::with(Options {
        tcp: true,
        ..Options::default()
    });
    let b = f.build_dir("build");
    let out = f
        .daemon
        .cairn_tcp()
        .args([
            "push", "--stage", STAGE, "--family", FAMILY, "--run-id", "3600",
        ])
        .arg("--build-dir")
        .arg(&b)
        .arg("--checkout")
        .arg(&f.checkout.root)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("publish over TCP is not supported") && err.contains("Unix socket"),
        "{err}"
    );
    assert!(
        !tree(&f.storage())
            .iter()
            .any(|p| p.to_string_lossy().contains("3600")),
        "nothing published"
    );
}
