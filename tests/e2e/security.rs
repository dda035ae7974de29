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
/// artifact are each refused with an error naming the path; nothing is published. The same over
/// TCP, where `cairn` reads the build dir itself with the same reader (`nofollow.rs`).
#[test]
fn push_refuses_symlinked_artifacts_dirs_with_a_clear_error() {
    let f = Fixture::with(Options {
        tcp: true,
        ..Options::default()
    });
    let secret = f.tmp.path().join("secret-dir");
    fs::create_dir(&secret).unwrap();
    fs::write(secret.join("secret.txt"), "root only\n").unwrap();
    let push = |tcp: bool, b: &Path, run: &str| {
        let mut cmd = if tcp {
            f.daemon.cairn_tcp()
        } else {
            f.daemon.cairn()
        };
        cmd.args([
            "push", "--stage", STAGE, "--family", FAMILY, "--run-id", run,
        ])
        .arg("--build-dir")
        .arg(b)
        .arg("--checkout")
        .arg(&f.checkout.root)
        .output()
        .unwrap()
    };

    for (tcp, runs) in [
        (false, ["3003", "3004", "3005"]),
        (true, ["3013", "3014", "3015"]),
    ] {
        let name = |n: &str| format!("build-{n}-{}", if tcp { "tcp" } else { "unix" });
        // `artifacts` itself.
        let b = f.build_dir(&name("a"));
        fs::rename(b.join("artifacts"), b.join("real-artifacts")).unwrap();
        symlink(b.join("real-artifacts"), b.join("artifacts")).unwrap();
        let out = push(tcp, &b, runs[0]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains("artifacts` is a symlink"), "tcp {tcp}: {err}");

        // One artifact dir.
        let b = f.build_dir(&name("b"));
        let first = first_artifact(&b);
        let dir = b.join("artifacts").join(&first);
        fs::rename(&dir, b.join("moved")).unwrap();
        symlink(b.join("moved"), &dir).unwrap();
        let out = push(tcp, &b, runs[1]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains(&first) && err.contains("is a symlink"),
            "tcp {tcp}: {err}"
        );

        // A relpath the artifact's manifest lists, pointing at a directory the user wants read.
        let b = f.build_dir(&name("c"));
        let first = first_artifact(&b);
        let dir = b.join("artifacts").join(&first);
        let manifest = fs::read_to_string(dir.join("artifact_manifest.txt")).unwrap();
        let relpath = manifest.lines().find(|l| !l.is_empty()).unwrap();
        fs::remove_dir_all(dir.join(relpath)).unwrap();
        symlink(&secret, dir.join(relpath)).unwrap();
        let out = push(tcp, &b, runs[2]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains(relpath) && err.contains("is a symlink"),
            "tcp {tcp}: {err}"
        );

        // Nothing of these runs reached storage.
        let published: Vec<_> = tree(&f.storage())
            .into_iter()
            .filter(|p| {
                let s = p.to_string_lossy();
                runs.iter().any(|r| s.contains(r))
            })
            .collect();
        assert!(published.is_empty(), "tcp {tcp}: {published:?}");
    }
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

/// Every file below `dir` (symlinks not followed) by its path relative to `dir`, with its bytes
/// (a symlink's target for a symlink).
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    tree(dir)
        .into_iter()
        .filter_map(|p| {
            let meta = p.symlink_metadata().unwrap();
            let bytes = if meta.is_symlink() {
                fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()
            } else if meta.is_file() {
                fs::read(&p).unwrap()
            } else {
                return None;
            };
            Some((p.strip_prefix(dir).unwrap().to_path_buf(), bytes))
        })
        .collect()
}

/// The stored file whose path ends with `suffix`.
fn stored(storage: &Path, suffix: &str) -> PathBuf {
    tree(storage)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .unwrap_or_else(|| panic!("nothing in storage ends with `{suffix}`"))
}

/// The job manifest's archives of run `run`, without what names the run (keys) or the time.
fn archive_records(storage: &Path, run: &str) -> Vec<serde_json::Value> {
    let path = stored(storage, &format!("{run}-linux/cairn/{STAGE}-{FAMILY}.json"));
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    manifest["archives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let mut a = a.clone();
            a.as_object_mut().unwrap().remove("key");
            a
        })
        .collect()
}

/// Issue 20: a TCP client's push used to be refused ("publish over TCP is not supported"), since the
/// daemon must not read a path a remote client names. Now `cairn push` over TCP reads the build dir
/// itself and streams it (`PublishStream`), and what is published is exactly what a Unix-socket push
/// of the same build dir publishes: the same archive bytes (so SHA-256), tree digests, sizes, counts
/// and fingerprints in the job manifest, the same tree manifests, sidecars and an index page — for
/// artifact dirs (with symlinks and a hard link) and a pre-compressed archive.
#[test]
fn push_over_tcp_streams_exactly_what_a_unix_push_publishes() {
    let f = Fixture::with(Options {
        tcp: true,
        ..Options::default()
    });
    let b = f.build_dir("build");
    // A hard link inside an artifact, and one artifact as TheRock's pre-compressed archive instead
    // of a dir.
    let mut dirs: Vec<String> = fs::read_dir(b.join("artifacts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let linked = b.join("artifacts").join(&dirs[0]);
    let file = tree(&linked)
        .into_iter()
        .find(|p| p.symlink_metadata().unwrap().is_file() && !p.ends_with("artifact_manifest.txt"))
        .unwrap();
    fs::hard_link(&file, file.with_extension("hardlink")).unwrap();
    let packed = b.join("artifacts").join(&dirs[1]);
    let manifest = fs::read_to_string(packed.join("artifact_manifest.txt")).unwrap();
    let relpaths: Vec<&str> = manifest.lines().filter(|l| !l.is_empty()).collect();
    let archive = f.tmp.path().join(format!("{}.tar.zst", dirs[1]));
    cairn_testkit::archives::pack_with_system_tar(&packed, &relpaths, &archive);
    fs::rename(
        &archive,
        b.join("artifacts").join(format!("{}.tar.zst", dirs[1])),
    )
    .unwrap();
    fs::remove_dir_all(&packed).unwrap();

    let push = |mut cmd: Command, run: &str, compression: &str| {
        cmd.args([
            "push",
            "--stage",
            STAGE,
            "--family",
            FAMILY,
            "--run-id",
            run,
            "--compression",
            compression,
        ])
        .arg("--build-dir")
        .arg(&b)
        .arg("--checkout")
        .arg(&f.checkout.root)
        .output()
        .unwrap()
    };
    let mut unix = Vec::new();
    for (compression, unix_run, tcp_run) in [("zstd", "3600", "3601"), ("xz", "3602", "3603")] {
        assert_ok(&push(f.daemon.cairn(), unix_run, compression));
        // Over TCP the daemon refuses to read a build dir, so this push can only have streamed.
        assert_ok(&push(f.daemon.cairn_tcp(), tcp_run, compression));

        unix = archive_records(&f.storage(), unix_run);
        let tcp = archive_records(&f.storage(), tcp_run);
        assert_eq!(unix.len(), dirs.len());
        assert_eq!(unix, tcp, "{compression}: job manifests differ");
        let run_dir = |run: &str| {
            stored(&f.storage(), &format!("{run}-linux/index.html"))
                .parent()
                .unwrap()
                .to_path_buf()
        };
        let strip = |m: BTreeMap<PathBuf, Vec<u8>>| -> BTreeMap<PathBuf, Vec<u8>> {
            m.into_iter()
                .filter(|(p, _)| !p.starts_with("cairn") && !p.ends_with("index.html"))
                .collect()
        };
        let unix_files = strip(contents(&run_dir(unix_run)));
        let tcp_files = strip(contents(&run_dir(tcp_run)));
        assert_eq!(
            unix_files.keys().collect::<Vec<_>>(),
            tcp_files.keys().collect::<Vec<_>>()
        );
        assert!(
            unix_files
                .keys()
                .any(|p| p.to_string_lossy().ends_with(".tar.xz"))
                == (compression == "xz"),
            "{compression}: {:?}",
            unix_files.keys()
        );
        assert!(
            unix_files == tcp_files,
            "{compression}: archives or sidecars differ between the Unix and the TCP push"
        );
    }
    // `cairn copy` over TCP (a record-only publish: no path read) records the TCP run's archives as
    // reused by another run.
    let out = f
        .daemon
        .cairn_tcp()
        .args(["copy", "--source-run-id", "3601", "--run-id", "3650"])
        .args(["--stage", STAGE, "--family", FAMILY])
        .current_dir(&f.checkout.root)
        .output()
        .unwrap();
    assert_ok(&out);
    let copied = archive_records(&f.storage(), "3650");
    assert!(
        !copied.is_empty() && copied.iter().all(|a| a["reused_from_run_id"] == "3601"),
        "{copied:?}"
    );
    // The hard link and the pre-compressed archive took their paths.
    assert!(unix.iter().any(|a| a["artifact"] == dirs[1].as_str()));
    // Nothing of either push is left in the store's scratch dir.
    assert_eq!(
        fs::read_dir(f.daemon.store_dir().join("scratch"))
            .unwrap()
            .count(),
        0
    );
}

/// One member of a hostile streamed artifact, and what the refusal must name.
struct HostileCase {
    what: &'static str,
    member: Vec<u8>,
    expect: &'static [&'static str],
}

/// A TCP client that is not `cairn` streams hostile content (a `../` member, an absolute member, a
/// symlink escaping the archive, a stream cut before its end, an oversized chunk, a build dir path,
/// an artifact it has no fingerprint for): each publish is refused with an error naming the
/// artifact and the member or limit, nothing of the run reaches storage, and the store's
/// scratch dir is left empty.
#[test]
fn hostile_streamed_publishes_are_refused_and_publish_nothing() {
    use cairn_proto::v1 as pb;
    use cairn_proto::v1::publish_stream_request::Part;
    use cairn_testkit::archives::{tar_stream, ustar_file, ustar_member};

    let f = Fixture::with(Options {
        tcp: true,
        ..Options::default()
    });
    let name = f.fps.keys().next().unwrap().clone();
    let artifact = format!("{name}_lib_{FAMILY}");
    let header = |run: &str| pb::PublishRequest {
        stage: STAGE.into(),
        family: FAMILY.into(),
        platform: "linux".into(),
        run_id: run.into(),
        commit: "a".repeat(40),
        fingerprints: f
            .fps
            .iter()
            .map(|(n, fp)| (n.clone(), fp.to_hex()))
            .collect(),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let send = |messages: Vec<Part>| -> Result<pb::PublishResponse, tonic::Status> {
        rt.block_on(async {
            let channel = tonic::transport::Endpoint::from_shared(f.daemon.tcp_addr().unwrap())
                .unwrap()
                .connect()
                .await
                .unwrap();
            let token: tonic::metadata::MetadataValue<_> =
                format!("Bearer {}", f.daemon.tcp_token()).parse().unwrap();
            let mut client = pb::cairn_client::CairnClient::with_interceptor(
                channel,
                move |mut req: tonic::Request<()>| {
                    req.metadata_mut().insert("authorization", token.clone());
                    Ok(req)
                },
            );
            let messages: Vec<pb::PublishStreamRequest> = messages
                .into_iter()
                .map(|p| pb::PublishStreamRequest { part: Some(p) })
                .collect();
            client
                .publish_stream(futures::stream::iter(messages))
                .await
                .map(|r| r.into_inner())
        })
    };
    let manifest = ustar_file("artifact_manifest.txt", b"lib/stage\n");
    let cases = [
        HostileCase {
            what: "a `../` member",
            member: ustar_file("../x", b"x"),
            expect: &["../x", "unsafe path"],
        },
        HostileCase {
            what: "an absolute member",
            member: ustar_file("/tmp/cairn-hostile-x", b"x"),
            expect: &["/tmp/cairn-hostile-x", "unsafe path"],
        },
        HostileCase {
            what: "an escaping symlink",
            member: ustar_member(b"lib/stage/l", b'2', "../../../../etc/passwd", b"", None),
            expect: &["lib/stage/l", "escapes"],
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let run = format!("{}", 3700 + i);
        let tar = tar_stream(&[manifest.clone(), case.member.clone()]);
        let err = send(vec![
            Part::Header(header(&run)),
            Part::Artifact(pb::StreamedArtifact {
                artifact: artifact.clone(),
                precompressed: String::new(),
            }),
            Part::Chunk(tar),
            Part::End(true),
        ])
        .expect_err(case.what);
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{}: {err:?}",
            case.what
        );
        let msg = err.message();
        assert!(msg.contains(&artifact), "{}: {msg}", case.what);
        for e in case.expect {
            assert!(msg.contains(e), "{}: `{e}` not in: {msg}", case.what);
        }
        assert!(
            !tree(&f.storage())
                .iter()
                .any(|p| p.to_string_lossy().contains(&run)),
            "{}: nothing published",
            case.what
        );
    }

    // A stream cut before its `end` (the client failed while reading) publishes nothing.
    let good = tar_stream(&[manifest.clone(), ustar_file("lib/stage/f", b"fine")]);
    let err = send(vec![
        Part::Header(header("3710")),
        Part::Artifact(pb::StreamedArtifact {
            artifact: artifact.clone(),
            precompressed: String::new(),
        }),
        Part::Chunk(good.clone()),
    ])
    .expect_err("a cut stream");
    assert!(err.message().contains("before its `end`"), "{err:?}");
    // A chunk larger than the protocol allows is refused, naming the artifact and the limit.
    let err = send(vec![
        Part::Header(header("3714")),
        Part::Artifact(pb::StreamedArtifact {
            artifact: artifact.clone(),
            precompressed: String::new(),
        }),
        Part::Chunk(vec![0; 5 << 20]),
        Part::End(true),
    ])
    .expect_err("an oversized chunk");
    assert!(
        err.message().contains(&artifact) && err.message().contains("4194304"),
        "{err:?}"
    );
    // A streamed build dir is never a path: a header naming one is refused.
    let mut named = header("3711");
    named.build_dir = "/etc".into();
    let err = send(vec![Part::Header(named), Part::End(true)]).expect_err("a build dir");
    assert!(err.message().contains("names no build dir"), "{err:?}");
    // An artifact the header has no fingerprint for is refused, naming it.
    let err = send(vec![
        Part::Header(header("3712")),
        Part::Artifact(pb::StreamedArtifact {
            artifact: format!("stranger_lib_{FAMILY}"),
            precompressed: String::new(),
        }),
        Part::Chunk(good.clone()),
        Part::End(true),
    ])
    .expect_err("an unwanted artifact");
    assert!(err.message().contains("stranger_lib"), "{err:?}");
    assert!(
        !tree(&f.storage())
            .iter()
            .any(|p| p.to_string_lossy().contains("-linux")),
        "nothing published at all"
    );
    assert_eq!(
        fs::read_dir(f.daemon.store_dir().join("scratch"))
            .unwrap()
            .count(),
        0,
        "the scratch dir is empty"
    );
    // The same client and stream shape publish a sound artifact (so the refusals above are the
    // content's, not the client's).
    send(vec![
        Part::Header(header("3713")),
        Part::Artifact(pb::StreamedArtifact {
            artifact: artifact.clone(),
            precompressed: String::new(),
        }),
        Part::Chunk(good),
        Part::End(true),
    ])
    .expect("a sound streamed artifact publishes");
}
