//! Corruption never reaches a build dir silently: a kept build-dir file changed behind cairn's back
//! (same size, mtime put back) is rewritten by the next incremental bootstrap, and a CAS blob with
//! one byte flipped (same size) is caught by `cairn bootstrap --verify`, which fails naming the blob
//! and leaves the stage dir that needed it without its `.prebuilt` marker.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cairn_fingerprint::Blake3;

use crate::bootstrap::{World, bootstrap_with, expect_code, markers, snapshot, stderr};

/// The first regular file (by path, not hard-linked) below the build dir's stage dirs, and its stage relpath.
fn some_file(dest: &Path) -> (String, String) {
    let relpaths = markers(dest);
    for r in &relpaths {
        let snap = snapshot(dest, &BTreeSet::from([r.clone()]));
        if let Some((p, _)) = snap.iter().find(|(p, d)| {
            let m = std::fs::metadata(dest.join(p)).unwrap();
            // Not a hard link: one rewritten file, one rewritten path.
            d.starts_with('f') && m.len() > 16 && m.nlink() == 1
        }) {
            return (r.clone(), p.clone());
        }
    }
    panic!("no file in {}", dest.display())
}

fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x20;
    std::fs::write(path, &bytes).unwrap();
}

fn blob_path(store: &Path, digest: &Blake3) -> PathBuf {
    let hex = digest.to_hex();
    store.join("cas-v1/blobs").join(&hex[..2]).join(&hex)
}

#[test]
fn corruption_never_reaches_a_build_dir_silently() {
    let world = World::publish_two_runs("local").unwrap();
    let daemon = &world.daemon;
    let src = &world.checkout.root;
    let dest = world.tmp.path().join("build");
    let (out, _) = bootstrap_with(daemon.cairn(), src, &dest, &[]);
    expect_code(&out, 0);
    let (relpath, file) = some_file(&dest);
    let path = dest.join(&file);
    let good = std::fs::read(&path).unwrap();

    // 1. A kept file edited behind cairn's back, same size, its mtime put back.
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    flip_byte(&path);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let (out, json) = bootstrap_with(daemon.cairn(), src, &dest, &[]);
    expect_code(&out, 0);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        good,
        "an edited kept file must be rewritten"
    );
    assert_eq!(json.unwrap()["summary"]["files_written"], 1);

    // 2. One byte flipped in the CAS blob of that file (same size): --verify refuses the blob.
    let digest = Blake3::of(&good);
    let blob = blob_path(&daemon.store_dir(), &digest);
    let mode = std::fs::metadata(&blob).unwrap().permissions().mode();
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    flip_byte(&blob);
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(mode)).unwrap();

    let fresh = world.tmp.path().join("fresh");
    let (out, _) = bootstrap_with(daemon.cairn(), src, &fresh, &["--verify"]);
    expect_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("blob `{digest}`"))
            && err.contains("is corrupt")
            && err.contains("cairnd verify"),
        "{err}"
    );
    assert!(
        !markers(&fresh).contains(&relpath),
        "the stage dir that needed the corrupt blob must not be marked"
    );

    // The kept, good copy in the first build dir passes --verify untouched.
    let (out, json) = bootstrap_with(daemon.cairn(), src, &dest, &["--verify"]);
    expect_code(&out, 0);
    let summary = &json.unwrap()["summary"];
    assert_eq!(summary["files_written"], 0, "{summary}");
    assert_eq!(summary["files_repaired"], 0, "{summary}");
    // Every kept file is re-hashed (a tree hard link shares its target's inode: hashed once).
    let verified = summary["files_verified"].as_u64().unwrap();
    assert!(
        verified > 0 && verified <= summary["files"].as_u64().unwrap(),
        "{summary}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), good);
}

/// The periodic scrub, configured in the config file (`verify_every_secs`, `verify_sample`), finds a
/// blob corrupted behind the daemon's back and quarantines it without anyone asking; the next
/// bootstrap downloads it again and the build dir gets the good bytes.
#[test]
fn the_configured_periodic_scrub_quarantines_a_corrupt_blob_by_itself() {
    use cairn_testkit::daemon::{Daemon, Options};
    let world = World::publish_two_runs("local").unwrap();
    let config = world.tmp.path().join("cairnd.toml");
    std::fs::write(&config, "verify_every_secs = 1\nverify_sample = 1000000\n").unwrap();
    let daemon = Daemon::start_with(
        world.storage.clone(),
        Options {
            args: vec!["--config".into(), config.display().to_string()],
            ..Options::default()
        },
    )
    .unwrap();
    let src = &world.checkout.root;
    let dest = world.tmp.path().join("build");
    let (out, _) = bootstrap_with(daemon.cairn(), src, &dest, &[]);
    expect_code(&out, 0);
    let (_, file) = some_file(&dest);
    let good = std::fs::read(dest.join(&file)).unwrap();
    let blob = blob_path(&daemon.store_dir(), &Blake3::of(&good));
    let mode = std::fs::metadata(&blob).unwrap().permissions().mode();
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    flip_byte(&blob);
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(mode)).unwrap();

    // Bounded wait: the scrub runs every second; 30 s is far beyond one pass over this store.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while blob.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        !blob.exists(),
        "the periodic scrub did not quarantine the corrupt blob; log:\n{}",
        daemon.log()
    );
    let fresh = world.tmp.path().join("fresh");
    let (out, _) = bootstrap_with(daemon.cairn(), src, &fresh, &["--verify"]);
    expect_code(&out, 0);
    assert_eq!(std::fs::read(fresh.join(&file)).unwrap(), good);
}
