//! Unit tests of materialization with hand-built trees and a fake CAS directory: layouts, refusal of
//! hostile trees, destination symlinks, blob checks, bootstrap cleaning and the state file.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::sync::{Arc, Mutex};

use cairn_fingerprint::Blake3;
use cairn_fingerprint::tree::{EntryKind, RelPath, Tree, TreeEntry};

use super::*;

/// A fake CAS: blobs named by their BLAKE3 hex in one directory, read-only like the daemon's.
struct Cas {
    dir: tempfile::TempDir,
}

impl Cas {
    fn new() -> Cas {
        Cas {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn put(&self, content: &[u8]) -> Blake3 {
        let d = Blake3::of(content);
        let p = self.dir.path().join(d.to_hex());
        if !p.exists() {
            fs::write(&p, content).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o444)).unwrap();
        }
        d
    }

    fn source(&self) -> DirBlobs {
        DirBlobs::flat(self.dir.path())
    }
}

fn rp(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

/// A tree builder over a CAS.
struct TB<'c> {
    cas: &'c Cas,
    manifest: Vec<RelPath>,
    entries: Vec<TreeEntry>,
}

impl<'c> TB<'c> {
    fn new(cas: &'c Cas, manifest: &[&str]) -> TB<'c> {
        let text: String = manifest.iter().map(|m| format!("{m}\n")).collect();
        let mut tb = TB {
            cas,
            manifest: manifest.iter().map(|m| rp(m)).collect(),
            entries: Vec::new(),
        };
        tb.file("artifact_manifest.txt", text.as_bytes(), 0o644);
        tb
    }

    fn file(&mut self, path: &str, content: &[u8], mode: u32) -> &mut Self {
        let d = self.cas.put(content);
        self.entries.push(TreeEntry {
            path: rp(path),
            kind: EntryKind::File,
            mode,
            size: content.len() as u64,
            blake3: Some(d),
            link_target: None,
        });
        self
    }

    fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.entries.push(TreeEntry {
            path: rp(path),
            kind: EntryKind::Dir,
            mode,
            size: 0,
            blake3: None,
            link_target: None,
        });
        self
    }

    fn link(&mut self, kind: EntryKind, path: &str, target: &str) -> &mut Self {
        self.entries.push(TreeEntry {
            path: rp(path),
            kind,
            mode: 0o777,
            size: 0,
            blake3: None,
            link_target: Some(target.parse().unwrap()),
        });
        self
    }

    fn item(&self, artifact: &str) -> MaterializeItem {
        MaterializeItem {
            artifact: artifact.into(),
            tree: Arc::new(Tree::new(self.manifest.clone(), self.entries.clone())),
        }
    }
}

fn run(
    items: &[MaterializeItem],
    cas: &Cas,
    dest: &Path,
    layout: Layout,
) -> Result<Report, MaterializeError> {
    materialize(
        items,
        &cas.source(),
        dest,
        &Options::new(layout),
        &NoReporter,
    )
}

/// Everything under `root` except the state file: path → description.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            if rel == STATE_FILE {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            if m.file_type().is_symlink() {
                out.insert(
                    rel,
                    format!("link {}", fs::read_link(&p).unwrap().display()),
                );
            } else if m.is_dir() {
                out.insert(rel, format!("dir {mode:o}"));
                walk(root, &p, out);
            } else {
                out.insert(
                    rel,
                    format!(
                        "file {mode:o} {}",
                        String::from_utf8_lossy(&fs::read(&p).unwrap())
                    ),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn refused(r: Result<Report, MaterializeError>) -> Vec<TreeProblem> {
    match r {
        Err(MaterializeError::Refused(p)) => p,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn three_layouts_map_paths_as_therock_does() {
    let cas = Cas::new();
    let mut a = TB::new(&cas, &["x/stage"]);
    a.dir("x/stage/bin", 0o755)
        .file("x/stage/bin/tool", b"#!/bin/sh\n", 0o755)
        .link(EntryKind::Symlink, "x/stage/bin/alias", "tool")
        .link(EntryKind::Hardlink, "x/stage/bin/tool2", "x/stage/bin/tool");
    let a = a.item("x_run_generic");

    let plain = tempfile::tempdir().unwrap();
    run(std::slice::from_ref(&a), &cas, plain.path(), Layout::Plain).unwrap();
    let s = snapshot(plain.path());
    assert_eq!(
        s["artifacts/x_run_generic/artifact_manifest.txt"],
        "file 644 x/stage\n"
    );
    assert_eq!(
        s["artifacts/x_run_generic/x/stage/bin/tool"],
        "file 755 #!/bin/sh\n"
    );
    assert_eq!(s["artifacts/x_run_generic/x/stage/bin/alias"], "link tool");

    let flat = tempfile::tempdir().unwrap();
    run(std::slice::from_ref(&a), &cas, flat.path(), Layout::Flatten).unwrap();
    let s = snapshot(flat.path());
    assert_eq!(
        s.keys().collect::<Vec<_>>(),
        ["bin", "bin/alias", "bin/tool", "bin/tool2"]
    );

    let boot = tempfile::tempdir().unwrap();
    run(&[a], &cas, boot.path(), Layout::Bootstrap).unwrap();
    let s = snapshot(boot.path());
    assert_eq!(
        s.keys().collect::<Vec<_>>(),
        [
            "x",
            "x/stage",
            "x/stage.prebuilt",
            "x/stage/bin",
            "x/stage/bin/alias",
            "x/stage/bin/tool",
            "x/stage/bin/tool2"
        ]
    );
    assert_eq!(s["x/stage.prebuilt"], "file 644 ");
    let t1 = fs::metadata(boot.path().join("x/stage/bin/tool")).unwrap();
    let t2 = fs::metadata(boot.path().join("x/stage/bin/tool2")).unwrap();
    assert_eq!(t1.ino(), t2.ino(), "a tar hard link stays a hard link");
}

#[test]
fn hostile_trees_are_refused_with_every_problem_and_nothing_written() {
    let cas = Cas::new();
    let mut t = TB::new(&cas, &["stage"]);
    t.link(EntryKind::Symlink, "stage/a", "../../x")
        .file("stage/a/y", b"pwned", 0o644)
        .link(EntryKind::Symlink, "stage/abs", "/etc")
        .file("stage/abs/passwd", b"pwned", 0o644)
        .link(EntryKind::Symlink, "stage/in", "sub")
        .dir("stage/sub", 0o755)
        .file("stage/in/z", b"through a symlink", 0o644)
        .link(EntryKind::Hardlink, "stage/h", "stage/sub")
        .link(EntryKind::Hardlink, "stage/h2", "nowhere")
        .file("elsewhere/f", b"outside the manifest", 0o644);
    let dest = tempfile::tempdir().unwrap();
    let problems = refused(run(
        &[t.item("s_lib_generic")],
        &cas,
        dest.path(),
        Layout::Bootstrap,
    ));
    let has = |f: &dyn Fn(&TreeProblem) -> bool| problems.iter().any(f);
    assert!(has(
        &|p| matches!(p, TreeProblem::SymlinkEscape { path, target, .. } if path == "stage/a" && target == "../../x")
    ));
    assert!(has(
        &|p| matches!(p, TreeProblem::SymlinkEscape { path, .. } if path == "stage/abs")
    ));
    assert!(has(
        &|p| matches!(p, TreeProblem::BelowNonDirectory { path, ancestor, .. } if path == "stage/in/z" && ancestor == "stage/in")
    ));
    assert!(has(
        &|p| matches!(p, TreeProblem::BadHardlink { path, .. } if path == "stage/h")
    ));
    assert!(has(
        &|p| matches!(p, TreeProblem::BadHardlink { path, .. } if path == "stage/h2")
    ));
    assert!(has(
        &|p| matches!(p, TreeProblem::OutsideManifest { path, .. } if path == "elsewhere/f")
    ));
    assert!(
        fs::read_dir(dest.path()).unwrap().next().is_none(),
        "nothing may be written"
    );
    let msg = MaterializeError::Refused(problems).to_string();
    assert!(
        msg.contains(
            "symlink `stage/a` in `s_lib_generic` points outside the destination (`../../x`)"
        ),
        "{msg}"
    );
}

#[test]
fn symlink_escape_is_judged_against_the_layout_root() {
    let cas = Cas::new();
    // Inside the archive root, but in plain layout `artifacts/{artifact}` is the root, and flattening
    // strips `s/`, so the same link climbs out of the destination.
    let mut t = TB::new(&cas, &["stage"]);
    t.link(EntryKind::Symlink, "stage/up", "../artifact_manifest.txt");
    let dest = tempfile::tempdir().unwrap();
    run(&[t.item("s_lib_generic")], &cas, dest.path(), Layout::Plain).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let p = refused(run(
        &[t.item("s_lib_generic")],
        &cas,
        dest.path(),
        Layout::Flatten,
    ));
    assert!(matches!(&p[..], [TreeProblem::SymlinkEscape { .. }]));
}

#[test]
fn bad_names_conflicts_and_reserved_paths_are_refused() {
    let cas = Cas::new();
    let t = TB::new(&cas, &["stage"]);
    let dest = tempfile::tempdir().unwrap();
    let p = refused(run(&[t.item("..")], &cas, dest.path(), Layout::Plain));
    assert!(matches!(&p[..], [TreeProblem::BadArtifactName { artifact }] if artifact == ".."));

    let mut a = TB::new(&cas, &["stage"]);
    a.file("stage/x", b"file", 0o644);
    let mut b = TB::new(&cas, &["stage"]);
    b.file("stage/x/y", b"below", 0o644);
    let p = refused(run(
        &[a.item("a_lib_generic"), b.item("b_lib_generic")],
        &cas,
        dest.path(),
        Layout::Bootstrap,
    ));
    assert!(
        matches!(&p[..], [TreeProblem::BelowNonDirectory { ancestor, .. }] if ancestor == "stage/x"),
        "{p:?}"
    );
    let p = refused(run(
        &[b.item("b_lib_generic"), a.item("a_lib_generic")],
        &cas,
        dest.path(),
        Layout::Bootstrap,
    ));
    assert!(
        matches!(&p[..], [TreeProblem::Conflict { path, first, second, .. }] if path == "stage/x" && first == "b_lib_generic" && second == "a_lib_generic"),
        "{p:?}"
    );

    let mut r = TB::new(&cas, &["stage"]);
    r.file("stage/.cairn-state.json", b"{}", 0o644);
    let p = refused(run(
        &[r.item("r_lib_generic")],
        &cas,
        dest.path(),
        Layout::Flatten,
    ));
    assert!(matches!(&p[..], [TreeProblem::Reserved { .. }]));
}

#[test]
fn missing_and_truncated_blobs_are_errors_naming_the_digest() {
    let cas = Cas::new();
    let mut t = TB::new(&cas, &["stage"]);
    t.file("stage/big", &[7u8; 5000], 0o644);
    let digest = Blake3::of(&[7u8; 5000]);
    let blob = cas.dir.path().join(digest.to_hex());
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&blob, [7u8; 100]).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let err = run(
        &[t.item("s_lib_generic")],
        &cas,
        dest.path(),
        Layout::Bootstrap,
    )
    .unwrap_err();
    assert!(
        matches!(&err, MaterializeError::BlobSize { digest: d, expected: 5000, actual: 100, path } if *d == digest && path == "stage/big"),
        "{err:?}"
    );
    assert!(err.to_string().contains(&digest.to_hex()));
    assert!(
        !dest.path().join("stage/big").exists(),
        "a bad blob leaves no file"
    );

    fs::remove_file(&blob).unwrap();
    let err = run(
        &[t.item("s_lib_generic")],
        &cas,
        dest.path(),
        Layout::Bootstrap,
    )
    .unwrap_err();
    assert!(
        matches!(&err, MaterializeError::BlobMissing { digest: d, .. } if *d == digest),
        "{err:?}"
    );
    let leftovers: Vec<_> = fs::read_dir(dest.path().join("stage"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(fsops::TMP_PREFIX))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files are cleaned up: {leftovers:?}"
    );
}

#[test]
fn symlink_in_destination_outside_an_area_is_refused_and_nothing_escapes() {
    let cas = Cas::new();
    let mut t = TB::new(&cas, &["compiler/amd-llvm/stage"]);
    t.file("compiler/amd-llvm/stage/lib/libLLVM.so", b"llvm", 0o755);
    let outside = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    symlink(outside.path(), dest.path().join("compiler")).unwrap();
    let err = run(
        &[t.item("amd-llvm_lib_generic")],
        &cas,
        dest.path(),
        Layout::Bootstrap,
    )
    .unwrap_err();
    assert!(
        matches!(&err, MaterializeError::SymlinkInDestination { path } if path.ends_with("compiler")),
        "{err:?}"
    );
    assert!(err.to_string().contains("refusing to write through it"));
    assert!(
        fs::read_dir(outside.path()).unwrap().next().is_none(),
        "nothing written outside"
    );
    // The refused run left a pending state; it must not make the symlink ours on the next run.
    let again = run(
        &[t.item("amd-llvm_lib_generic")],
        &cas,
        dest.path(),
        Layout::Bootstrap,
    );
    assert!(
        matches!(again, Err(MaterializeError::SymlinkInDestination { .. })),
        "{again:?}"
    );
    assert!(
        fs::symlink_metadata(dest.path().join("compiler"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // Flatten: a directory symlink on the way is refused the same way.
    let dest = tempfile::tempdir().unwrap();
    symlink(outside.path(), dest.path().join("lib")).unwrap();
    let err = run(
        &[t.item("amd-llvm_lib_generic")],
        &cas,
        dest.path(),
        Layout::Flatten,
    )
    .unwrap_err();
    assert!(
        matches!(err, MaterializeError::SymlinkInDestination { .. }),
        "{err:?}"
    );
    assert!(
        fs::read_dir(outside.path()).unwrap().next().is_none(),
        "nothing written outside"
    );
}

#[test]
fn symlinks_in_destination_where_we_write_are_replaced_not_followed() {
    let cas = Cas::new();
    let mut t = TB::new(&cas, &["stage/stage"]);
    t.file("stage/stage/lib/libfoo.so", b"foo", 0o644);
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    fs::create_dir(outside.path().join("lib")).unwrap();

    // The stage dir itself is a symlink out (bootstrap owns it: unlinked, never followed).
    let dest = tempfile::tempdir().unwrap();
    fs::create_dir(dest.path().join("stage")).unwrap();
    symlink(outside.path(), dest.path().join("stage/stage")).unwrap();
    run(
        &[t.item("s_lib_generic")],
        &cas,
        dest.path(),
        Layout::Bootstrap,
    )
    .unwrap();
    assert!(
        fs::symlink_metadata(dest.path().join("stage/stage"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(
        fs::read(dest.path().join("stage/stage/lib/libfoo.so")).unwrap(),
        b"foo"
    );

    // A file path that is a symlink out (flatten, not ours): replaced by the file, target untouched.
    let dest = tempfile::tempdir().unwrap();
    fs::create_dir(dest.path().join("lib")).unwrap();
    symlink(&victim, dest.path().join("lib/libfoo.so")).unwrap();
    run(
        &[t.item("s_lib_generic")],
        &cas,
        dest.path(),
        Layout::Flatten,
    )
    .unwrap();
    assert!(
        fs::symlink_metadata(dest.path().join("lib/libfoo.so"))
            .unwrap()
            .is_file()
    );
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert!(
        fs::read_dir(outside.path().join("lib"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn bootstrap_cleans_foreign_stage_dirs_once_and_shared_relpaths_keep_both_artifacts() {
    let cas = Cas::new();
    let mut lib = TB::new(&cas, &["m/stage"]);
    lib.dir("m/stage/lib", 0o755)
        .file("m/stage/lib/libm.so", b"lib", 0o755);
    let mut dev = TB::new(&cas, &["m/stage"]);
    dev.dir("m/stage/lib", 0o755)
        .file("m/stage/lib/libm.a", b"archive", 0o644)
        .file("m/stage/include/m.h", b"header", 0o644);
    let mut gfx = TB::new(&cas, &["m/stage", "n/stage"]);
    gfx.file("m/stage/lib/kernels/gfx942.co", b"code", 0o644)
        .file("n/stage/x", b"n", 0o644);

    let dest = tempfile::tempdir().unwrap();
    fs::create_dir_all(dest.path().join("m/stage/old")).unwrap();
    fs::write(dest.path().join("m/stage/old/foreign.txt"), b"junk").unwrap();
    fs::write(dest.path().join("m/stage/lib.so"), b"junk").unwrap();
    fs::create_dir_all(dest.path().join("other")).unwrap();
    fs::write(dest.path().join("other/keep.txt"), b"not ours").unwrap();

    let items = [
        lib.item("m_lib_generic"),
        dev.item("m_dev_generic"),
        gfx.item("m_lib_gfx942"),
    ];
    let opts = Options {
        threads: Some(4),
        ..Options::new(Layout::Bootstrap)
    };
    let report = materialize(&items, &cas.source(), dest.path(), &opts, &NoReporter).unwrap();
    assert_eq!(
        report.areas_cleaned, 1,
        "only the pre-existing stage dir is cleaned"
    );
    assert_eq!(report.files_removed, 2);
    let s = snapshot(dest.path());
    let files: Vec<_> = s
        .iter()
        .filter(|(_, v)| v.starts_with("file"))
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        files,
        [
            "m/stage.prebuilt",
            "m/stage/include/m.h",
            "m/stage/lib/kernels/gfx942.co",
            "m/stage/lib/libm.a",
            "m/stage/lib/libm.so",
            "n/stage.prebuilt",
            "n/stage/x",
            "other/keep.txt"
        ]
    );
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
}

impl Reporter for Recorder {
    fn on_start(&self, files: u64, bytes: u64) {
        self.events
            .lock()
            .unwrap()
            .push(format!("start {files} {bytes}"));
    }
    fn on_file_written(&self, bytes: u64) {
        self.events.lock().unwrap().push(format!("written {bytes}"));
    }
    fn on_file_skipped(&self, bytes: u64) {
        self.events.lock().unwrap().push(format!("skipped {bytes}"));
    }
    fn on_artifact_done(&self, artifact: &str) {
        self.events.lock().unwrap().push(format!("done {artifact}"));
    }
}

#[test]
fn reporter_sees_start_every_file_and_every_artifact() {
    let cas = Cas::new();
    let mut a = TB::new(&cas, &["stage"]);
    a.file("stage/one", b"1", 0o644)
        .file("stage/two", b"22", 0o644);
    let empty = TB::new(&cas, &["t/stage"]);
    let rec = Recorder::default();
    let dest = tempfile::tempdir().unwrap();
    let items = [a.item("a_lib_generic"), empty.item("t_dbg_generic")];
    materialize(
        &items,
        &cas.source(),
        dest.path(),
        &Options::new(Layout::Bootstrap),
        &rec,
    )
    .unwrap();
    let mut ev = rec.events.into_inner().unwrap();
    assert_eq!(ev[0], "start 2 3");
    ev.sort();
    assert_eq!(
        ev,
        [
            "done a_lib_generic",
            "done t_dbg_generic",
            "start 2 3",
            "written 1",
            "written 2"
        ]
    );

    let rec = Recorder::default();
    materialize(
        &items,
        &cas.source(),
        dest.path(),
        &Options::new(Layout::Bootstrap),
        &rec,
    )
    .unwrap();
    let mut ev = rec.events.into_inner().unwrap();
    ev.sort();
    assert_eq!(
        ev,
        [
            "done a_lib_generic",
            "done t_dbg_generic",
            "skipped 1",
            "skipped 2",
            "start 2 3"
        ]
    );
}

/// Modes as TheRock's tools leave them: bootstrap and flatten (`ArtifactPopulator`) give the default
/// mode plus the archive's execute bits (`0444` → `0644`, `0700` → `0744` under umask 022); plain
/// (`tarfile.extractall(filter="tar")`) keeps the archive's mode less group/other write.
#[test]
fn modes_follow_therocks_rules_per_layout() {
    use super::plan::file_mode;
    // The rule, under the usual umask.
    assert_eq!(
        super::copy::process_umask(),
        0o022,
        "these expectations assume umask 022"
    );
    assert_eq!(file_mode(Layout::Bootstrap, 0o444), 0o644);
    assert_eq!(file_mode(Layout::Bootstrap, 0o700), 0o744);
    assert_eq!(file_mode(Layout::Flatten, 0o755), 0o755);
    assert_eq!(file_mode(Layout::Plain, 0o444), 0o444);
    assert_eq!(file_mode(Layout::Plain, 0o777), 0o755);
    // And on disk.
    let cas = Cas::new();
    let mut t = TB::new(&cas, &["stage"]);
    t.file("stage/share/x-config-version.cmake", b"cmake", 0o444)
        .file("stage/bin/helper", b"#!/bin/sh\n", 0o700);
    let boot = tempfile::tempdir().unwrap();
    run(
        &[t.item("m_dev_generic")],
        &cas,
        boot.path(),
        Layout::Bootstrap,
    )
    .unwrap();
    let s = snapshot(boot.path());
    assert_eq!(s["stage/share/x-config-version.cmake"], "file 644 cmake");
    assert_eq!(s["stage/bin/helper"], "file 744 #!/bin/sh\n");
    let plain = tempfile::tempdir().unwrap();
    run(
        &[t.item("m_dev_generic")],
        &cas,
        plain.path(),
        Layout::Plain,
    )
    .unwrap();
    let s = snapshot(plain.path());
    assert_eq!(
        s["artifacts/m_dev_generic/stage/share/x-config-version.cmake"],
        "file 444 cmake"
    );
    assert_eq!(
        s["artifacts/m_dev_generic/stage/bin/helper"],
        "file 700 #!/bin/sh\n"
    );
}

#[test]
fn state_file_is_versioned_json_listing_every_path() {
    let cas = Cas::new();
    let mut a = TB::new(&cas, &["stage"]);
    a.file("stage/f", b"x", 0o640)
        .link(EntryKind::Symlink, "stage/l", "f");
    let dest = tempfile::tempdir().unwrap();
    run(
        &[a.item("a_lib_generic")],
        &cas,
        dest.path(),
        Layout::Bootstrap,
    )
    .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(dest.path().join(STATE_FILE)).unwrap()).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["layout"], "bootstrap");
    assert_eq!(v["areas"], serde_json::json!(["stage"]));
    let f = &v["entries"]["stage/f"];
    assert_eq!(f["kind"], "file");
    assert_eq!(f["blake3"], Blake3::of(b"x").to_hex());
    assert_eq!(f["mode"], super::plan::file_mode(Layout::Bootstrap, 0o640));
    assert_eq!(f["stat"]["size"], 1);
    assert_eq!(v["entries"]["stage/l"]["target"], "f");
    assert_eq!(v["entries"]["stage.prebuilt"]["kind"], "marker");
}

#[test]
fn fresh_destination_is_written_in_place_with_exact_modes_and_existing_paths_are_replaced() {
    let cas = Cas::new();
    let mut t = TB::new(&cas, &["stage"]);
    t.file("stage/bin/tool", b"tool", 0o755)
        .file("stage/lib/private", b"secret", 0o600)
        .file("stage/lib/readonly", b"ro", 0o444)
        .file("stage/include/a.h", b"a", 0o644)
        .link(EntryKind::Symlink, "stage/lib/alias", "private");
    let dest = tempfile::tempdir().unwrap();
    run(
        &[t.item("s_lib_generic")],
        &cas,
        dest.path(),
        Layout::Bootstrap,
    )
    .unwrap();
    let snap = snapshot(dest.path());
    // TheRock's bootstrap modes: the default mode plus the archive's execute bits.
    let boot = |m: u32| format!("{:o}", super::plan::file_mode(Layout::Bootstrap, m));
    assert_eq!(snap["stage/bin/tool"], format!("file {} tool", boot(0o755)));
    assert_eq!(
        snap["stage/lib/private"],
        format!("file {} secret", boot(0o600))
    );
    assert_eq!(
        snap["stage/lib/readonly"],
        format!("file {} ro", boot(0o444))
    );
    assert_eq!(snap["stage/include/a.h"], format!("file {} a", boot(0o644)));
    assert_eq!(snap["stage/lib/alias"], "link private");
    assert!(
        snap.keys().all(|k| !k.contains(fsops::TMP_PREFIX)),
        "no temp names left: {snap:?}"
    );

    // A second run over a tree a user edited: the edited and the replaced paths are rewritten
    // (through temp files, atomically), the rest is left alone.
    fs::set_permissions(
        dest.path().join("stage/include/a.h"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    fs::write(dest.path().join("stage/include/a.h"), b"edited").unwrap();
    fs::remove_file(dest.path().join("stage/lib/alias")).unwrap();
    std::os::unix::fs::symlink("elsewhere", dest.path().join("stage/lib/alias")).unwrap();
    let report = run(
        &[t.item("s_lib_generic")],
        &cas,
        dest.path(),
        Layout::Bootstrap,
    )
    .unwrap();
    assert_eq!(report.files_written, 1, "{report:?}");
    assert_eq!(snapshot(dest.path()), snap);
}

#[test]
fn symlinks_are_resolved_through_the_other_symlinks_of_the_tree() {
    let cas = Cas::new();
    // Textually both stay inside: `x` climbs to the destination root, `x/../out` looks like a
    // sibling of `x`. The kernel follows `x` first, so `y` lands in the destination's parent.
    let mut t = TB::new(&cas, &["a/b/stage"]);
    t.link(EntryKind::Symlink, "a/b/stage/x", "../../..").link(
        EntryKind::Symlink,
        "a/b/stage/y",
        "x/../out",
    );
    let dest = tempfile::tempdir().unwrap();
    let p = refused(run(
        &[t.item("a_lib_generic")],
        &cas,
        dest.path(),
        Layout::Bootstrap,
    ));
    assert!(
        matches!(&p[..], [TreeProblem::SymlinkEscape { path, target, .. }] if path == "a/b/stage/y" && target == "x/../out"),
        "{p:?}"
    );
    assert!(fs::read_dir(dest.path()).unwrap().next().is_none());

    // The same pair split over two artifacts of one stage dir, and a chain through three links.
    let mut u = TB::new(&cas, &["a/b/stage"]);
    u.link(EntryKind::Symlink, "a/b/stage/x", "../../..");
    let mut v = TB::new(&cas, &["a/b/stage"]);
    v.link(EntryKind::Symlink, "a/b/stage/l1", "l2/..")
        .link(EntryKind::Symlink, "a/b/stage/l2", "x/..")
        .link(EntryKind::Symlink, "a/b/stage/y", "x/../out");
    let p = refused(run(
        &[u.item("a_lib_generic"), v.item("a_dev_generic")],
        &cas,
        dest.path(),
        Layout::Bootstrap,
    ));
    let escaped: Vec<&str> = p
        .iter()
        .filter_map(|p| match p {
            TreeProblem::SymlinkEscape { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        escaped,
        ["a/b/stage/l1", "a/b/stage/l2", "a/b/stage/y"],
        "{p:?}"
    );

    // Links that resolve inside through other links are fine, and a loop is refused.
    let mut ok = TB::new(&cas, &["a/b/stage"]);
    ok.dir("a/b/stage/lib", 0o755)
        .file("a/b/stage/lib/libx.so.1", b"x", 0o644)
        .link(EntryKind::Symlink, "a/b/stage/lib/libx.so", "libx.so.1")
        .link(EntryKind::Symlink, "a/b/stage/lib64", "lib")
        .link(EntryKind::Symlink, "a/b/stage/l", "lib64/libx.so")
        .link(
            EntryKind::Symlink,
            "a/b/stage/up",
            "../../../a/b/stage/lib64/../l",
        );
    run(
        &[ok.item("a_lib_generic")],
        &cas,
        dest.path(),
        Layout::Bootstrap,
    )
    .unwrap();
    let mut lp = TB::new(&cas, &["a/b/stage"]);
    lp.link(EntryKind::Symlink, "a/b/stage/p", "q")
        .link(EntryKind::Symlink, "a/b/stage/q", "p");
    let dest = tempfile::tempdir().unwrap();
    let p = refused(run(
        &[lp.item("a_lib_generic")],
        &cas,
        dest.path(),
        Layout::Bootstrap,
    ));
    assert_eq!(p.len(), 2, "{p:?}");
}

#[test]
fn relpaths_must_be_stage_dirs_and_never_name_cairns_own_files() {
    let cas = Cas::new();
    for (relpath, why) in [
        ("compiler", "`stage` component"),
        ("third-party-sysdeps", "`stage` component"),
        ("compiler/amd-llvm", "`stage` component"),
        (".cairn-state.json", "cairn's own files"),
        (".cairn-spool/stage", "cairn's own files"),
        ("x/.cairn-tmp.1/stage", "cairn's own files"),
    ] {
        let mut t = TB::new(&cas, &[relpath]);
        t.file(&format!("{relpath}/f"), b"f", 0o644);
        let dest = tempfile::tempdir().unwrap();
        fs::write(dest.path().join("user-file"), b"mine").unwrap();
        let p = refused(run(
            &[t.item("h_lib_generic")],
            &cas,
            dest.path(),
            Layout::Bootstrap,
        ));
        assert!(
            matches!(&p[..], [TreeProblem::BadRelpath { relpath: r, reason, .. }] if r == relpath && reason.contains(why)),
            "{relpath}: {p:?}"
        );
        let msg = MaterializeError::Refused(p).to_string();
        assert!(
            msg.contains(&format!("stage relpath `{relpath}`")) && msg.contains("hint:"),
            "{msg}"
        );
        assert_eq!(
            fs::read_dir(dest.path()).unwrap().count(),
            1,
            "{relpath}: nothing may be written"
        );
    }
    // TheRock's shapes are accepted.
    for relpath in [
        "compiler/amd-llvm/stage",
        "math-libs/BLAS/rocBLAS/stage",
        "third-party/sysdeps/linux/bzip2/build/stage",
    ] {
        let mut t = TB::new(&cas, &[relpath]);
        t.file(&format!("{relpath}/f"), b"f", 0o644);
        let dest = tempfile::tempdir().unwrap();
        run(
            &[t.item("ok_lib_generic")],
            &cas,
            dest.path(),
            Layout::Bootstrap,
        )
        .unwrap();
        assert!(dest.path().join(format!("{relpath}.prebuilt")).is_file());
    }
    // Entries may not use reserved names anywhere either (flatten lands them at the top).
    let mut t = TB::new(&cas, &["s/stage"]);
    t.file("s/stage/.cairn-spool/x", b"x", 0o644);
    let dest = tempfile::tempdir().unwrap();
    let p = refused(run(
        &[t.item("s_lib_generic")],
        &cas,
        dest.path(),
        Layout::Flatten,
    ));
    assert!(matches!(&p[..], [TreeProblem::Reserved { .. }]), "{p:?}");
}

/// A reporter that asks the run to stop after `after` files were written.
struct StopAfter {
    stop: Arc<StopFlag>,
    after: u64,
    written: std::sync::atomic::AtomicU64,
}

impl Reporter for StopAfter {
    fn on_file_written(&self, _bytes: u64) {
        let n = self
            .written
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n + 1 == self.after {
            self.stop.request(libc::SIGTERM);
        }
    }
}

#[test]
fn a_stopped_rebootstrap_unmarks_what_it_touched_and_a_rerun_finishes() {
    let cas = Cas::new();
    let build = |tag: &str, n: usize| {
        let mut a = TB::new(&cas, &["a/stage"]);
        let mut b = TB::new(&cas, &["b/stage"]);
        for i in 0..n {
            a.file(
                &format!("a/stage/f{i}"),
                format!("a{i}{tag}").as_bytes(),
                0o644,
            );
            b.file(&format!("b/stage/f{i}"), format!("b{i}").as_bytes(), 0o644);
        }
        vec![a.item("a_lib_generic"), b.item("b_lib_generic")]
    };
    let dest = tempfile::tempdir().unwrap();
    let one = build("1", 20);
    let opts = Options {
        threads: Some(1),
        ..Options::new(Layout::Bootstrap)
    };
    materialize(&one, &cas.source(), dest.path(), &opts, &NoReporter).unwrap();
    let first = snapshot(dest.path());
    assert!(dest.path().join("a/stage.prebuilt").is_file());

    // Commit 2 changes only `a/stage`; stop after 5 of its 20 files.
    let two = build("2", 20);
    let stop = Arc::new(StopFlag::default());
    let rep = StopAfter {
        stop: stop.clone(),
        after: 5,
        written: Default::default(),
    };
    let opts2 = Options {
        stop: Some(stop),
        ..opts.clone()
    };
    let err = materialize(&two, &cas.source(), dest.path(), &opts2, &rep).unwrap_err();
    assert!(
        matches!(err, MaterializeError::Interrupted { signal, unmarked: 1 } if signal == libc::SIGTERM),
        "{err:?}"
    );
    assert!(
        !dest.path().join("a/stage.prebuilt").exists(),
        "the half-rewritten stage dir must not carry its marker"
    );
    assert!(
        dest.path().join("b/stage.prebuilt").is_file(),
        "the untouched stage dir keeps its marker"
    );
    let now = snapshot(dest.path());
    let b_now: Vec<_> = now.iter().filter(|(k, _)| k.starts_with("b/")).collect();
    let b_first: Vec<_> = first.iter().filter(|(k, _)| k.starts_with("b/")).collect();
    assert_eq!(b_now, b_first);

    // The rerun rewrites only what is left (the state saved the 5 written files) and marks again.
    let report = materialize(&two, &cas.source(), dest.path(), &opts, &NoReporter).unwrap();
    assert_eq!(report.files_written, 15, "{report:?}");
    assert!(dest.path().join("a/stage.prebuilt").is_file());
    let fresh = tempfile::tempdir().unwrap();
    materialize(&two, &cas.source(), fresh.path(), &opts, &NoReporter).unwrap();
    assert_eq!(snapshot(dest.path()), snapshot(fresh.path()));
}

#[test]
fn verify_rewrites_kept_files_and_refuses_corrupt_blobs() {
    let cas = Cas::new();
    let mut t = TB::new(&cas, &["s/stage"]);
    t.file("s/stage/f", b"good content", 0o644)
        .file("s/stage/g", b"other", 0o644);
    let items = [t.item("s_lib_generic")];
    let dest = tempfile::tempdir().unwrap();
    let verify = Options {
        verify: true,
        ..Options::new(Layout::Bootstrap)
    };
    materialize(&items, &cas.source(), dest.path(), &verify, &NoReporter).unwrap();

    // A kept file edited behind cairn's back is rewritten by a plain incremental run (its
    // `lstat` changed), and `--verify` re-hashes the others.
    let f = dest.path().join("s/stage/f");
    fs::write(&f, b"bad content!").unwrap();
    let r = run(&items, &cas, dest.path(), Layout::Bootstrap).unwrap();
    assert_eq!((r.files_written, r.files_skipped_unchanged), (1, 1));
    assert_eq!(fs::read(&f).unwrap(), b"good content");
    let r = materialize(&items, &cas.source(), dest.path(), &verify, &NoReporter).unwrap();
    assert_eq!(
        (r.files_verified, r.files_repaired, r.files_written),
        (2, 0, 0)
    );

    // A corrupt blob (one byte flipped, same size): without --verify it is copied (the fault
    // this option exists for), with --verify the kept bad copy is found and the blob refused.
    let digest = Blake3::of(b"good content");
    let blob = cas.dir.path().join(digest.to_hex());
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&blob, b"good cOntent").unwrap();
    let fresh = tempfile::tempdir().unwrap();
    run(&items, &cas, fresh.path(), Layout::Bootstrap).unwrap();
    assert_eq!(
        fs::read(fresh.path().join("s/stage/f")).unwrap(),
        b"good cOntent"
    );
    let err = materialize(&items, &cas.source(), fresh.path(), &verify, &NoReporter).unwrap_err();
    assert!(
        matches!(&err, MaterializeError::BlobCorrupt { digest: d, path, .. } if *d == digest && path == "s/stage/f"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&digest.to_hex()) && msg.contains("cairnd verify"),
        "{msg}"
    );
    assert!(
        !fresh.path().join("s/stage.prebuilt").exists(),
        "a stage dir holding a bad file loses its marker"
    );
}

/// The cost of checking every blob while copying (`--verify` on a fresh destination hashes each
/// blob before copying it), on a small stage-like dataset: 2,000 files, 64 MiB. Ignored by default
/// (a measurement, not a check); run with
/// `cargo nextest run -p cairn-client --run-ignored only -E 'test(copy_time_hash_cost)' --no-capture`.
/// The figure is in BENCHMARKS.md.
#[test]
#[ignore]
fn copy_time_hash_cost() {
    use std::time::Instant;
    let cas = Cas::new();
    let mut t = TB::new(&cas, &["m/stage"]);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut total = 0u64;
    for i in 0..2000 {
        // Sizes from 1 KiB to ~100 KiB, a few bigger, like a stage's libraries and headers.
        let size = if i % 100 == 0 {
            1 << 20
        } else {
            1024 + (i * 37 % 100) * 512
        };
        let mut buf = vec![0u8; size];
        for b in buf.iter_mut() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            *b = rng as u8;
        }
        total += size as u64;
        t.file(&format!("m/stage/d{}/f{i}", i % 40), &buf, 0o644);
    }
    let items = [t.item("m_lib_generic")];
    let mut times = BTreeMap::new();
    for round in 0..5 {
        for verify in [false, true] {
            let dest = tempfile::tempdir().unwrap();
            let opts = Options {
                verify,
                incremental: false,
                ..Options::new(Layout::Bootstrap)
            };
            let started = Instant::now();
            materialize(&items, &cas.source(), dest.path(), &opts, &NoReporter).unwrap();
            let ms = started.elapsed().as_secs_f64() * 1e3;
            if round > 0 {
                times.entry(verify).or_insert_with(Vec::new).push(ms);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let plain = median(times.get_mut(&false).unwrap());
    let checked = median(times.get_mut(&true).unwrap());
    eprintln!(
        "copy_time_hash_cost: {} files, {:.1} MiB, {} threads: plain {plain:.1} ms, hashing every blob {checked:.1} ms (+{:.0}%)",
        2000,
        total as f64 / (1 << 20) as f64,
        rayon::current_num_threads(),
        (checked / plain - 1.0) * 100.0
    );
}

/// A manifest relpath no member lies under (`core/hrx/stage`) gets its `.prebuilt` marker and no
/// directory, as TheRock's populator writes only the marker (and its parent) for it.
#[test]
fn a_relpath_without_members_gets_only_its_marker() {
    let cas = Cas::new();
    let mut a = TB::new(&cas, &["core/hip/stage", "core/hrx/stage"]);
    a.file("core/hip/stage/lib.so", b"elf", 0o644);
    let a = a.item("core_lib_generic");
    let boot = tempfile::tempdir().unwrap();
    run(&[a], &cas, boot.path(), Layout::Bootstrap).unwrap();
    let s = snapshot(boot.path());
    assert_eq!(
        s.keys().collect::<Vec<_>>(),
        [
            "core",
            "core/hip",
            "core/hip/stage",
            "core/hip/stage.prebuilt",
            "core/hip/stage/lib.so",
            "core/hrx",
            "core/hrx/stage.prebuilt",
        ]
    );
}

/// A foreign stage dir at a relpath without members goes, as TheRock's once-per-relpath clean
/// removes it; only the marker is left.
#[test]
fn a_foreign_stage_dir_at_a_relpath_without_members_is_cleaned() {
    let cas = Cas::new();
    let mut a = TB::new(&cas, &["core/hip/stage", "core/hrx/stage"]);
    a.file("core/hip/stage/lib.so", b"elf", 0o644);
    let a = a.item("core_lib_generic");
    let boot = tempfile::tempdir().unwrap();
    fs::create_dir_all(boot.path().join("core/hrx/stage")).unwrap();
    fs::write(boot.path().join("core/hrx/stage/old.txt"), b"stale").unwrap();
    run(&[a], &cas, boot.path(), Layout::Bootstrap).unwrap();
    let s = snapshot(boot.path());
    assert!(!s.contains_key("core/hrx/stage/old.txt"), "{s:?}");
    assert!(s.contains_key("core/hrx/stage.prebuilt"), "{s:?}");
}
