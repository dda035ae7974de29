//! Materialization against real archives: TheRock-shaped artifact directories are packed with the
//! system `tar` + `zstd` (manifest first, no top-level directory), read into a tree and a blob
//! directory with the `tar`/`zstd` crates, materialized, and compared with `tar -x` of the same
//! archives. Also: every copy path serially and in parallel, incremental re-bootstrap, and
//! convergence after a run that died midway.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cairn_client::materialize::{
    BlobSource, CopyMode, DirBlobs, Layout, MaterializeError, MaterializeItem, NoReporter, Options,
    Report, STATE_FILE, blobs_needed, materialize,
};
use cairn_fingerprint::Blake3;
use cairn_fingerprint::tree::{EntryKind, RelPath, Tree, TreeEntry};
use cairn_test_helpers::archives::{pack_with_system_tar, untar_with_system_tar};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------------------------------------
// Generator: a TheRock-shaped exploded artifact directory.

/// Content that compresses somewhat, like real binaries: runs of a repeated word and random bytes.
fn content(rng: &mut StdRng, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size);
    while v.len() < size {
        if rng.random_bool(0.5) {
            let word: [u8; 8] = rng.random();
            for _ in 0..rng.random_range(1..64) {
                v.extend_from_slice(&word);
            }
        } else {
            let mut chunk = vec![0u8; rng.random_range(1..512)];
            rng.fill(&mut chunk[..]);
            v.extend_from_slice(&chunk);
        }
    }
    v.truncate(size);
    v
}

/// Write an exploded artifact under `dir`: `artifact_manifest.txt` plus, per relpath, a few
/// directories, files of assorted sizes (empty, tiny, larger than the copy buffer), modes, a symlink
/// and a hard link. `tag` makes file names distinct between artifacts sharing a relpath.
fn gen_artifact(dir: &Path, relpaths: &[&str], tag: &str, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    fs::create_dir_all(dir).unwrap();
    let manifest: String = relpaths.iter().map(|r| format!("{r}\n")).collect();
    fs::write(dir.join("artifact_manifest.txt"), manifest).unwrap();
    for r in relpaths {
        let stage = dir.join(r);
        for sub in [
            "lib",
            "bin",
            "include",
            "share/doc",
            &format!("lib/{tag}-priv"),
        ] {
            fs::create_dir_all(stage.join(sub)).unwrap();
        }
        let sizes = [0usize, 1, 100, 4096, 70_000, 300_000, 1_100_000];
        for i in 0..14 {
            let size = sizes[i % sizes.len()];
            let private = format!("lib/{tag}-priv");
            let sub = ["lib", "include", "share/doc", &private][i % 4];
            let p = stage.join(sub).join(format!("{tag}-{i}.dat"));
            fs::write(&p, content(&mut rng, size)).unwrap();
            let mode = [0o644, 0o600, 0o755, 0o444][i % 4];
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        }
        let tool = stage.join(format!("bin/{tag}-tool"));
        fs::write(&tool, content(&mut rng, 5000)).unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        fs::hard_link(&tool, stage.join(format!("bin/{tag}-tool-alias"))).unwrap();
        let so = format!("lib/lib{tag}.so");
        fs::write(stage.join(format!("{so}.1.2")), content(&mut rng, 20_000)).unwrap();
        symlink(format!("lib{tag}.so.1.2"), stage.join(&so)).unwrap();
        symlink(
            format!("../lib/lib{tag}.so"),
            stage.join(format!("bin/{tag}-link")),
        )
        .unwrap();
        fs::set_permissions(
            stage.join(format!("lib/{tag}-priv")),
            fs::Permissions::from_mode(0o750),
        )
        .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny ingest: archive → tree + blob files named by BLAKE3 (read-only, like the daemon's CAS).

struct HashingWriter {
    file: File,
    hasher: blake3::Hasher,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn read_archive(archive: &Path, blobs: &Path) -> Tree {
    fs::create_dir_all(blobs).unwrap();
    let mut ar =
        tar::Archive::new(zstd::stream::read::Decoder::new(File::open(archive).unwrap()).unwrap());
    let mut manifest = Vec::new();
    let mut entries = Vec::new();
    for (n, entry) in ar.entries().unwrap().enumerate() {
        let mut entry = entry.unwrap();
        let raw = entry.path().unwrap().to_str().unwrap().to_string();
        let path = RelPath::new(&raw).unwrap();
        let header = entry.header().clone();
        let mode = header.mode().unwrap() & 0o7777;
        let link = || entry_link(&header);
        let e = match header.entry_type() {
            tar::EntryType::Regular => {
                let tmp = blobs.join(format!("tmp-{n}"));
                let mut w = HashingWriter {
                    file: File::create(&tmp).unwrap(),
                    hasher: blake3::Hasher::new(),
                };
                let size = io::copy(&mut entry, &mut w).unwrap();
                let digest = Blake3(*w.hasher.finalize().as_bytes());
                let blob = blobs.join(digest.to_hex());
                fs::set_permissions(&tmp, fs::Permissions::from_mode(0o444)).unwrap();
                fs::rename(&tmp, &blob).unwrap();
                if n == 0 {
                    assert_eq!(
                        raw, "artifact_manifest.txt",
                        "manifest must be the first member"
                    );
                    let text = fs::read_to_string(&blob).unwrap();
                    manifest = text
                        .lines()
                        .filter(|l| !l.is_empty())
                        .map(|l| RelPath::new(l).unwrap())
                        .collect();
                }
                TreeEntry {
                    path,
                    kind: EntryKind::File,
                    mode,
                    size,
                    blake3: Some(digest),
                    link_target: None,
                }
            }
            tar::EntryType::Directory => TreeEntry {
                path,
                kind: EntryKind::Dir,
                mode,
                size: 0,
                blake3: None,
                link_target: None,
            },
            tar::EntryType::Symlink => TreeEntry {
                path,
                kind: EntryKind::Symlink,
                mode,
                size: 0,
                blake3: None,
                link_target: Some(link().parse().unwrap()),
            },
            tar::EntryType::Link => TreeEntry {
                path,
                kind: EntryKind::Hardlink,
                mode,
                size: 0,
                blake3: None,
                link_target: Some(link().parse().unwrap()),
            },
            other => panic!("unexpected member type {other:?}"),
        };
        entries.push(e);
    }
    Tree::new(manifest, entries)
}

fn entry_link(h: &tar::Header) -> String {
    h.link_name()
        .unwrap()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Fixtures and comparison.

/// One generated artifact: its name, relpaths, archive and parsed tree.
struct Art {
    name: String,
    relpaths: Vec<String>,
    archive: PathBuf,
    tree: Arc<Tree>,
}

struct World {
    tmp: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        World {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn blobs(&self) -> PathBuf {
        self.tmp.path().join("blobs")
    }

    fn art(&self, name: &str, relpaths: &[&str], seed: u64) -> Art {
        let tag = name.replace('_', "-");
        let dir = self.tmp.path().join("src").join(format!("{name}-{seed}"));
        gen_artifact(&dir, relpaths, &tag, seed);
        self.pack_art(name, relpaths, &dir, &format!("{name}-{seed}"))
    }

    fn pack_art(&self, name: &str, relpaths: &[&str], dir: &Path, key: &str) -> Art {
        let archive = self.tmp.path().join(format!("{key}.tar.zst"));
        pack_with_system_tar(dir, relpaths, &archive);
        let tree = Arc::new(read_archive(&archive, &self.blobs()));
        Art {
            name: name.into(),
            relpaths: relpaths.iter().map(|s| s.to_string()).collect(),
            archive,
            tree,
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        let _ = fs::create_dir_all(&p);
        p
    }
}

fn items(arts: &[&Art]) -> Vec<MaterializeItem> {
    arts.iter()
        .map(|a| MaterializeItem {
            artifact: a.name.clone(),
            tree: a.tree.clone(),
        })
        .collect()
}

fn untar(archive: &Path, into: &Path) {
    untar_with_system_tar(archive, "zstd -d", into);
}

/// What `tar -x` gives for `layout`.
fn expected(arts: &[&Art], layout: Layout, into: &Path) {
    fs::create_dir_all(into).unwrap();
    for a in arts {
        match layout {
            Layout::Plain => untar(&a.archive, &into.join("artifacts").join(&a.name)),
            Layout::Bootstrap => {
                untar(&a.archive, into);
                fs::remove_file(into.join("artifact_manifest.txt")).unwrap();
                for r in &a.relpaths {
                    fs::create_dir_all(into.join(r)).unwrap();
                    File::create(into.join(format!("{r}.prebuilt"))).unwrap();
                }
            }
            Layout::Flatten => {
                let tmp = into.with_extension(format!("x-{}", a.name));
                untar(&a.archive, &tmp);
                for r in &a.relpaths {
                    let ok = Command::new("cp")
                        .arg("-a")
                        .arg(tmp.join(r).join("."))
                        .arg(into)
                        .status()
                        .unwrap();
                    assert!(ok.success());
                }
            }
        }
    }
    if layout != Layout::Plain {
        populator_modes(into);
    }
}

/// The modes TheRock's `ArtifactPopulator` (bootstrap, flatten) leaves where `tar -x` kept the
/// archive's: files get the default mode (0666 less the umask) plus their execute bits, directories
/// the default `mkdir` mode.
fn populator_modes(dir: &Path) {
    let umask = fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        .unwrap();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_symlink() {
            continue;
        }
        let mode = if m.is_dir() {
            populator_modes(&p);
            0o777 & !umask
        } else {
            (0o666 & !umask) | (m.permissions().mode() & 0o111)
        };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// Path → kind, mode and content digest (or link target), state file excluded. `exec_only`
/// compares only the execute bits of files (hard links to blobs carry the blob's mode).
fn snapshot(root: &Path, exec_only: bool) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, exec_only: bool, out: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            if rel == STATE_FILE {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            let v = if m.file_type().is_symlink() {
                format!("symlink -> {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                walk(root, &p, exec_only, out);
                format!("dir {mode:o}")
            } else {
                let mode = if exec_only { mode & 0o111 } else { mode };
                format!(
                    "file {mode:o} {}",
                    Blake3::of(&fs::read(&p).unwrap()).to_hex()
                )
            };
            out.insert(rel, v);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, exec_only, &mut out);
    out
}

fn assert_same_tree(expected: &Path, actual: &Path, exec_only: bool) {
    let e = snapshot(expected, exec_only);
    let a = snapshot(actual, exec_only);
    for (k, v) in &e {
        assert_eq!(
            a.get(k),
            Some(v),
            "`{k}` differs (expected from tar -x vs materialized)"
        );
    }
    for k in a.keys() {
        assert!(e.contains_key(k), "`{k}` materialized but not in tar -x");
    }
    assert!(e.len() > 10, "the comparison covers a real tree");
}

/// (inode, mtime) of every regular file.
fn identities(root: &Path) -> HashMap<String, (u64, i64, i64)> {
    snapshot(root, false)
        .into_iter()
        .filter(|(_, v)| v.starts_with("file"))
        .map(|(k, _)| {
            let m = fs::symlink_metadata(root.join(&k)).unwrap();
            (k, (m.ino(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

fn run(arts: &[&Art], w: &World, dest: &Path, opts: &Options) -> Result<Report, MaterializeError> {
    materialize(
        &items(arts),
        &DirBlobs::flat(w.blobs()),
        dest,
        opts,
        &NoReporter,
    )
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn every_layout_is_byte_identical_to_tar_x() {
    let w = World::new();
    let lib = w.art("amd-llvm_lib_generic", &["compiler/amd-llvm/stage"], 1);
    let dev = w.art("amd-llvm_dev_generic", &["compiler/amd-llvm/stage"], 2);
    let blas = w.art(
        "blas_lib_gfx942",
        &[
            "math-libs/BLAS/rocBLAS/stage",
            "math-libs/BLAS/hipBLAS/stage",
        ],
        3,
    );
    let arts = [&lib, &dev, &blas];
    for layout in [Layout::Plain, Layout::Flatten, Layout::Bootstrap] {
        let name = format!("{layout:?}").to_lowercase();
        let exp = w.dir(&format!("expected-{name}"));
        expected(&arts, layout, &exp);
        let dest = w.dir(&format!("dest-{name}"));
        let report = run(&arts, &w, &dest, &Options::new(layout)).unwrap();
        assert_same_tree(&exp, &dest, false);
        assert_eq!(report.artifacts, 3);
        assert_eq!(report.files_written, report.files);
        assert_eq!(report.files_skipped_unchanged, 0);
        // Tree hard links stay hard links.
        let tool = dest.join(match layout {
            Layout::Plain => {
                "artifacts/amd-llvm_lib_generic/compiler/amd-llvm/stage/bin/amd-llvm-lib-generic-tool"
            }
            Layout::Flatten => "bin/amd-llvm-lib-generic-tool",
            Layout::Bootstrap => "compiler/amd-llvm/stage/bin/amd-llvm-lib-generic-tool",
        });
        let alias = tool.with_file_name("amd-llvm-lib-generic-tool-alias");
        assert_eq!(
            fs::metadata(&tool).unwrap().ino(),
            fs::metadata(&alias).unwrap().ino()
        );
        if layout == Layout::Bootstrap {
            let markers: Vec<_> = snapshot(&dest, false)
                .into_keys()
                .filter(|k| k.ends_with(".prebuilt"))
                .collect();
            assert_eq!(
                markers,
                [
                    "compiler/amd-llvm/stage.prebuilt",
                    "math-libs/BLAS/hipBLAS/stage.prebuilt",
                    "math-libs/BLAS/rocBLAS/stage.prebuilt"
                ]
            );
        }
    }
}

#[test]
fn every_copy_path_serial_and_parallel_gives_identical_trees() {
    let w = World::new();
    let lib = w.art("rand_lib_generic", &["math-libs/rocRAND/stage"], 11);
    let gfx = w.art("rand_lib_gfx942", &["math-libs/rocRAND/stage"], 12);
    let arts = [&lib, &gfx];
    let exp = w.dir("expected");
    expected(&arts, Layout::Bootstrap, &exp);

    let auto = run(&arts, &w, &w.dir("probe"), &Options::new(Layout::Bootstrap)).unwrap();
    let reflink_works = auto.copies.reflink > 0;
    for mode in [
        CopyMode::Auto,
        CopyMode::Reflink,
        CopyMode::CopyFileRange,
        CopyMode::ReadWrite,
        CopyMode::Hardlink,
    ] {
        for threads in [1, 4] {
            let dest = w.dir(&format!("dest-{mode:?}-{threads}"));
            let opts = Options {
                copy_mode: mode,
                threads: Some(threads),
                ..Options::new(Layout::Bootstrap)
            };
            let report = match run(&arts, &w, &dest, &opts) {
                Err(MaterializeError::Unsupported {
                    method: "reflink", ..
                }) if mode == CopyMode::Reflink => {
                    assert!(
                        !reflink_works,
                        "auto reflinked, so forced reflink must work"
                    );
                    continue;
                }
                other => other.unwrap(),
            };
            assert_same_tree(&exp, &dest, mode == CopyMode::Hardlink);
            let c = report.copies;
            let non_empty_copies = c.reflink + c.copy_file_range + c.read_write + c.hardlink_blob;
            assert_eq!(
                non_empty_copies + c.hardlink_tree,
                report.files_written,
                "{mode:?}: {c:?}"
            );
            match mode {
                CopyMode::Auto => assert_eq!(c.hardlink_blob, 0),
                CopyMode::Reflink => assert_eq!(c.reflink, non_empty_copies),
                CopyMode::CopyFileRange => assert_eq!(c.copy_file_range, non_empty_copies),
                CopyMode::ReadWrite => assert_eq!(c.read_write, non_empty_copies),
                CopyMode::Hardlink => {
                    assert!(c.hardlink_blob > 0, "{c:?}");
                    // Executables need a mode the read-only blobs lack: those are copied.
                    assert!(c.copy_file_range + c.read_write + c.reflink > 0, "{c:?}");
                    let f = dest.join("math-libs/rocRAND/stage/lib/rand-lib-generic-0.dat");
                    let digest = Blake3::of(&fs::read(&f).unwrap());
                    let blob = w.blobs().join(digest.to_hex());
                    assert_eq!(
                        fs::metadata(&f).unwrap().ino(),
                        fs::metadata(blob).unwrap().ino()
                    );
                }
            }
        }
    }
}

#[test]
fn bootstrap_into_a_foreign_stage_dir_cleans_it_once() {
    let w = World::new();
    let lib = w.art("hip_lib_generic", &["core/clr/stage"], 21);
    let dev = w.art("hip_dev_generic", &["core/clr/stage"], 22);
    let gfx = w.art("hip_lib_gfx1100", &["core/clr/stage"], 23);
    let arts = [&lib, &dev, &gfx];
    let exp = w.dir("expected");
    expected(&arts, Layout::Bootstrap, &exp);
    let dest = w.dir("dest");
    fs::create_dir_all(dest.join("core/clr/stage/lib/stale")).unwrap();
    fs::write(dest.join("core/clr/stage/lib/stale/old.so"), b"old build").unwrap();
    let opts = Options {
        threads: Some(4),
        ..Options::new(Layout::Bootstrap)
    };
    let report = run(&arts, &w, &dest, &opts).unwrap();
    assert_eq!(report.areas_cleaned, 1);
    assert_eq!(report.files_removed, 1);
    assert_same_tree(&exp, &dest, false);
}

/// Set a file's mtime back to `(sec, nsec)` — what a careless tool might do after editing.
fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    ];
    // SAFETY: a valid C string and two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(r, 0);
}

#[test]
fn incremental_rebootstrap_rewrites_only_what_changed() {
    let w = World::new();
    let lib = w.art("amd-llvm_lib_generic", &["compiler/amd-llvm/stage"], 31);
    let dev = w.art("amd-llvm_dev_generic", &["compiler/amd-llvm/stage"], 32);
    let other = w.art("rocprim_dev_generic", &["math-libs/rocPRIM/stage"], 33);
    // The artifact that changes between the runs: one file edited, one added, one deleted.
    let dir = w.tmp.path().join("blas-src");
    gen_artifact(&dir, &["math-libs/BLAS/rocBLAS/stage"], "blas", 34);
    let blas1 = w.pack_art(
        "blas_lib_gfx942",
        &["math-libs/BLAS/rocBLAS/stage"],
        &dir,
        "blas1",
    );
    let stage = dir.join("math-libs/BLAS/rocBLAS/stage");
    fs::set_permissions(
        stage.join("include/blas-1.dat"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    fs::write(stage.join("include/blas-1.dat"), b"changed").unwrap();
    fs::write(stage.join("lib/blas-new.dat"), b"new file").unwrap();
    fs::remove_file(stage.join("share/doc/blas-2.dat")).unwrap();
    let blas2 = w.pack_art(
        "blas_lib_gfx942",
        &["math-libs/BLAS/rocBLAS/stage"],
        &dir,
        "blas2",
    );

    let dest = w.dir("dest");
    let first = run(
        &[&lib, &dev, &other, &blas1],
        &w,
        &dest,
        &Options::new(Layout::Bootstrap),
    )
    .unwrap();
    assert_eq!(first.files_written, first.files);
    let before = identities(&dest);
    let marker = |r: &str| {
        let m = fs::metadata(dest.join(format!("{r}.prebuilt"))).unwrap();
        (m.ino(), m.mtime_nsec(), m.mtime())
    };
    let llvm_marker = marker("compiler/amd-llvm/stage");
    let prim_marker = marker("math-libs/rocPRIM/stage");
    let blas_marker = marker("math-libs/BLAS/rocBLAS/stage");

    // The user edits a file in place (same inode, same size) and puts its mtime back: only ctime
    // still gives it away.
    let edited = "compiler/amd-llvm/stage/lib/amd-llvm-lib-generic-4.dat";
    let (_, sec, nsec) = before[edited];
    let mut bytes = fs::read(dest.join(edited)).unwrap();
    bytes.iter_mut().take(100).for_each(|b| *b = !*b);
    fs::OpenOptions::new()
        .write(true)
        .open(dest.join(edited))
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    set_mtime(&dest.join(edited), sec, nsec);
    assert_eq!(
        fs::metadata(dest.join(edited)).unwrap().ino(),
        before[edited].0
    );
    // And drops a stray file into a stage dir we own.
    fs::write(dest.join("compiler/amd-llvm/stage/lib/stray.o"), b"stray").unwrap();

    let arts = [&lib, &dev, &other, &blas2];
    // A remote client would fetch only the blobs of the three files to rewrite.
    let digest_of = |a: &Art, p: &str| {
        a.tree
            .entries
            .iter()
            .find(|e| e.path.to_str() == Some(p))
            .unwrap()
            .blake3
            .unwrap()
    };
    let mut want = vec![
        digest_of(&blas2, "math-libs/BLAS/rocBLAS/stage/include/blas-1.dat"),
        digest_of(&blas2, "math-libs/BLAS/rocBLAS/stage/lib/blas-new.dat"),
        digest_of(&lib, edited),
    ];
    want.sort();
    let needed = blobs_needed(&items(&arts), &dest, &Options::new(Layout::Bootstrap)).unwrap();
    assert_eq!(needed, want);
    let second = run(&arts, &w, &dest, &Options::new(Layout::Bootstrap)).unwrap();
    let exp = w.dir("expected");
    expected(&arts, Layout::Bootstrap, &exp);
    assert_same_tree(&exp, &dest, false);
    assert_eq!(
        second.files_written, 3,
        "changed + added + hand-edited: {second:?}"
    );
    assert_eq!(
        second.files_removed, 2,
        "deleted from the tree + stray: {second:?}"
    );
    assert_eq!(second.files_skipped_unchanged, second.files - 3);
    assert_eq!(second.areas_cleaned, 0, "our own stage dirs are not wiped");
    let after = identities(&dest);
    let rewritten = ["math-libs/BLAS/rocBLAS/stage/include/blas-1.dat", edited];
    for (path, id) in &before {
        if rewritten.contains(&path.as_str())
            || path.ends_with(".prebuilt")
            || path.ends_with("blas-2.dat")
        {
            continue;
        }
        assert_eq!(
            after.get(path),
            Some(id),
            "`{path}` must be untouched (same inode and mtime)"
        );
    }
    for p in rewritten {
        assert_ne!(after[p].0, before[p].0, "`{p}` rewritten");
    }
    assert_eq!(
        marker("math-libs/rocPRIM/stage"),
        prim_marker,
        "an unchanged stage keeps its marker"
    );
    assert_ne!(
        marker("math-libs/BLAS/rocBLAS/stage"),
        blas_marker,
        "a changed stage's marker is rewritten"
    );
    assert_ne!(marker("compiler/amd-llvm/stage"), llvm_marker);

    let needed = blobs_needed(&items(&arts), &dest, &Options::new(Layout::Bootstrap)).unwrap();
    assert!(needed.is_empty(), "{needed:?}");
    let third = run(&arts, &w, &dest, &Options::new(Layout::Bootstrap)).unwrap();
    assert_eq!(
        (
            third.files_written,
            third.files_removed,
            third.symlinks_written
        ),
        (0, 0, 0),
        "{third:?}"
    );
    assert_eq!(identities(&dest), after);

    // Not incremental: everything is rewritten, the result is the same.
    let opts = Options {
        incremental: false,
        ..Options::new(Layout::Bootstrap)
    };
    let full = run(&arts, &w, &dest, &opts).unwrap();
    assert_eq!(full.files_written, full.files);
    assert_same_tree(&exp, &dest, false);
}

/// A blob source that has lost some blobs, so a run fails midway.
struct Lossy {
    inner: DirBlobs,
    lost: Vec<Blake3>,
}

impl BlobSource for Lossy {
    fn blob_path(&self, d: &Blake3) -> Option<PathBuf> {
        if self.lost.contains(d) {
            None
        } else {
            self.inner.blob_path(d)
        }
    }
}

#[test]
fn a_run_that_dies_midway_leaves_a_destination_the_next_run_converges_from() {
    let w = World::new();
    let a = w.art("fft_lib_generic", &["math-libs/rocFFT/stage"], 41);
    let b = w.art("sparse_lib_generic", &["math-libs/rocSPARSE/stage"], 42);
    // The largest file of `b` goes missing, so the parallel write phase fails partway.
    let lost = b
        .tree
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .max_by_key(|e| e.size)
        .unwrap();
    let lossy = Lossy {
        inner: DirBlobs::flat(w.blobs()),
        lost: vec![lost.blake3.unwrap()],
    };

    for layout in [Layout::Flatten, Layout::Bootstrap, Layout::Plain] {
        let name = format!("{layout:?}");
        let dest = w.dir(&format!("dest-{name}"));
        run(&[&a], &w, &dest, &Options::new(layout)).unwrap();
        let err = materialize(
            &items(&[&a, &b]),
            &lossy,
            &dest,
            &Options::new(layout),
            &NoReporter,
        )
        .unwrap_err();
        assert!(
            matches!(err, MaterializeError::BlobMissing { .. }),
            "{err:?}"
        );
        // Back to `a` alone: whatever the failed run wrote for `b` must go.
        let report = run(&[&a], &w, &dest, &Options::new(layout)).unwrap();
        let exp = w.dir(&format!("expected-{name}"));
        expected(&[&a], layout, &exp);
        assert_same_tree(&exp, &dest, false);
        assert!(report.files_removed > 0, "{layout:?}: {report:?}");
        // And forward to `a` + `b`.
        run(&[&a, &b], &w, &dest, &Options::new(layout)).unwrap();
        let exp = w.dir(&format!("expected2-{name}"));
        expected(&[&a, &b], layout, &exp);
        assert_same_tree(&exp, &dest, false);
    }
}

#[test]
fn hostile_destination_symlinks_never_let_a_write_escape() {
    let w = World::new();
    let a = w.art("llvm_lib_generic", &["compiler/amd-llvm/stage"], 51);
    let outside = w.dir("outside");
    fs::write(outside.join("victim"), b"precious").unwrap();

    // A pre-existing symlink above the stage dir pointing outside: refused, nothing written there.
    let dest = w.dir("dest1");
    fs::create_dir(dest.join("compiler")).unwrap();
    symlink(&outside, dest.join("compiler/amd-llvm")).unwrap();
    let err = run(&[&a], &w, &dest, &Options::new(Layout::Bootstrap)).unwrap_err();
    assert!(
        matches!(&err, MaterializeError::SymlinkInDestination { path } if path.ends_with("compiler/amd-llvm")),
        "{err}"
    );

    // Symlinks inside the stage dir (ours to replace) pointing outside: replaced, never followed.
    let dest = w.dir("dest2");
    let stage = dest.join("compiler/amd-llvm/stage");
    fs::create_dir_all(&stage).unwrap();
    symlink(&outside, stage.join("lib")).unwrap();
    symlink(outside.join("victim"), stage.join("bin")).unwrap();
    run(&[&a], &w, &dest, &Options::new(Layout::Bootstrap)).unwrap();
    let exp = w.dir("expected");
    expected(&[&a], Layout::Bootstrap, &exp);
    assert_same_tree(&exp, &dest, false);

    let outside_now: Vec<_> = fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside_now, ["victim"]);
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"precious");
}

#[test]
fn plain_layout_replaces_foreign_artifact_dirs_and_keeps_others() {
    let w = World::new();
    let a = w.art("base_run_generic", &["base/stage"], 61);
    let dest = w.dir("dest");
    fs::create_dir_all(dest.join("artifacts/base_run_generic/junk")).unwrap();
    fs::write(dest.join("artifacts/base_run_generic/junk/x"), b"x").unwrap();
    fs::create_dir_all(dest.join("artifacts/other_lib_generic")).unwrap();
    fs::write(dest.join("artifacts/other_lib_generic/keep"), b"keep").unwrap();
    let report = run(&[&a], &w, &dest, &Options::new(Layout::Plain)).unwrap();
    assert_eq!(report.areas_cleaned, 1);
    let exp = w.dir("expected");
    expected(&[&a], Layout::Plain, &exp);
    fs::create_dir_all(exp.join("artifacts/other_lib_generic")).unwrap();
    fs::write(exp.join("artifacts/other_lib_generic/keep"), b"keep").unwrap();
    assert_same_tree(&exp, &dest, false);
}

#[test]
fn reading_a_generated_archive_gives_a_therock_shaped_tree() {
    let w = World::new();
    let a = w.art(
        "zlib_lib_generic",
        &["third-party/sysdeps/linux/zlib/build/stage"],
        71,
    );
    assert_eq!(
        a.tree
            .entries
            .iter()
            .filter(|e| e.path.to_str() == Some("artifact_manifest.txt"))
            .count(),
        1
    );
    assert!(a.tree.entries.iter().any(|e| e.kind == EntryKind::Hardlink));
    assert!(a.tree.entries.iter().any(|e| e.kind == EntryKind::Symlink));
    assert!(a.tree.entries.iter().any(|e| e.size > 1_000_000));
    // No member for the relpath dir itself or its parents.
    assert!(
        !a.tree
            .entries
            .iter()
            .any(|e| e.path.to_str() == Some("third-party"))
    );
    let mut raw = Vec::new();
    zstd::stream::read::Decoder::new(File::open(&a.archive).unwrap())
        .unwrap()
        .read_to_end(&mut raw)
        .unwrap();
    assert_eq!(&raw[..21], b"artifact_manifest.txt");
}

/// Every blob still hashes to its name.
fn assert_cas_intact(blobs: &Path) {
    for e in fs::read_dir(blobs).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(
            Blake3::of(&fs::read(&p).unwrap()).to_hex(),
            name,
            "blob `{name}` was written through"
        );
    }
}

#[test]
fn hardlink_mode_never_writes_through_to_the_cas_and_copy_mode_unshares() {
    let w = World::new();
    let relpaths = ["math-libs/rocSOLVER/stage"];
    let dir = w.tmp.path().join("solver-src");
    gen_artifact(&dir, &relpaths, "solver", 81);
    let v1 = w.pack_art("solver_lib_generic", &relpaths, &dir, "v1");
    let changed = "math-libs/rocSOLVER/stage/lib/solver-4.dat";
    fs::write(dir.join(changed), b"new content").unwrap();
    let v2 = w.pack_art("solver_lib_generic", &relpaths, &dir, "v2");

    let dest = w.dir("dest");
    let linked = Options {
        copy_mode: CopyMode::Hardlink,
        ..Options::new(Layout::Bootstrap)
    };
    let first = run(&[&v1], &w, &dest, &linked).unwrap();
    assert!(first.copies.hardlink_blob > 0);
    let shares_blob = |p: &str| {
        let m = fs::metadata(dest.join(p)).unwrap();
        let blob = w
            .blobs()
            .join(Blake3::of(&fs::read(dest.join(p)).unwrap()).to_hex());
        m.ino() == fs::metadata(blob).unwrap().ino()
    };
    assert!(shares_blob(changed));
    let second = run(&[&v2], &w, &dest, &linked).unwrap();
    assert_eq!(second.files_written, 1, "{second:?}");
    assert!(shares_blob(changed));
    assert_cas_intact(&w.blobs());

    // A copy-mode run replaces every CAS link with a private copy, once.
    let copies = run(&[&v2], &w, &dest, &Options::new(Layout::Bootstrap)).unwrap();
    assert_eq!(
        copies.files_written, first.copies.hardlink_blob,
        "{copies:?}"
    );
    let files: Vec<String> = snapshot(&dest, false)
        .into_iter()
        .filter(|(_, v)| v.starts_with("file"))
        .map(|(k, _)| k)
        .collect();
    assert!(
        files
            .iter()
            .filter(|f| !f.ends_with(".prebuilt"))
            .all(|f| !shares_blob(f))
    );
    let again = run(&[&v2], &w, &dest, &Options::new(Layout::Bootstrap)).unwrap();
    assert_eq!(again.files_written, 0, "{again:?}");
    let exp = w.dir("expected");
    expected(&[&v2], Layout::Bootstrap, &exp);
    assert_same_tree(&exp, &dest, false);
    assert_cas_intact(&w.blobs());
}

/// Many small files below one relpath, so a killed run is caught in the middle of its writes.
fn gen_many(dir: &Path, relpath: &str, n: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("artifact_manifest.txt"), format!("{relpath}\n")).unwrap();
    for i in 0..n {
        let d = dir.join(relpath).join(format!("d{}", i % 23));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("f{i}.bin")), content(&mut rng, 20_000)).unwrap();
        if i % 50 == 0 {
            symlink(format!("f{i}.bin"), d.join(format!("l{i}"))).unwrap();
        }
    }
}

/// Child half of `killed_runs_converge`: when the parent re-executes this test binary with
/// `CAIRN_MAT_CHILD` set, materialize the trees it names (serially, to be slow) and exit; in a
/// normal test run it has nothing to do.
#[test]
fn child_materialize() {
    let Ok(spec) = std::env::var("CAIRN_MAT_CHILD") else {
        return;
    };
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let layout = match spec["layout"].as_str().unwrap() {
        "Flatten" => Layout::Flatten,
        "Bootstrap" => Layout::Bootstrap,
        _ => Layout::Plain,
    };
    let items: Vec<MaterializeItem> = spec["trees"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| MaterializeItem {
            artifact: t[0].as_str().unwrap().into(),
            tree: Arc::new(
                serde_json::from_slice(&fs::read(t[1].as_str().unwrap()).unwrap()).unwrap(),
            ),
        })
        .collect();
    let opts = Options {
        threads: Some(1),
        copy_mode: CopyMode::ReadWrite,
        ..Options::new(layout)
    };
    let blobs = DirBlobs::flat(spec["blobs"].as_str().unwrap());
    materialize(
        &items,
        &blobs,
        Path::new(spec["dest"].as_str().unwrap()),
        &opts,
        &NoReporter,
    )
    .unwrap();
}

#[test]
fn killed_runs_converge() {
    let w = World::new();
    let a = w.art("core_run_generic", &["core/stage"], 91);
    let dir = w.tmp.path().join("many-src");
    gen_many(&dir, "math-libs/many/stage", 1500, 92);
    let big = w.pack_art("many_lib_generic", &["math-libs/many/stage"], &dir, "many");
    let tree_file = |art: &Art| {
        let p = w.tmp.path().join(format!("{}.tree.json", art.name));
        fs::write(&p, art.tree.to_json()).unwrap();
        p.to_str().unwrap().to_string()
    };
    let trees = serde_json::json!([[a.name, tree_file(&a)], [big.name, tree_file(&big)]]);
    let mut rng = StdRng::seed_from_u64(93);
    let mut killed_midway = 0;
    for layout in [Layout::Flatten, Layout::Bootstrap, Layout::Plain] {
        let dest = w.dir(&format!("dest-{layout:?}"));
        for _ in 0..4 {
            run(&[&a], &w, &dest, &Options::new(layout)).unwrap();
            let spec = serde_json::json!({
                "layout": format!("{layout:?}"),
                "trees": trees,
                "blobs": w.blobs(),
                "dest": dest,
            });
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "child_materialize",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("CAIRN_MAT_CHILD", spec.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(rng.random_range(20..400)));
            let _ = child.kill(); // SIGKILL
            let status = child.wait().unwrap();
            if !status.success() {
                killed_midway += 1;
            }
            // Back to `a` alone: everything the killed run wrote for `big` must go.
            run(&[&a], &w, &dest, &Options::new(layout)).unwrap();
            let exp = w.dir(&format!("expected-{layout:?}"));
            expected(&[&a], layout, &exp);
            assert_same_tree(&exp, &dest, false);
        }
        run(&[&a, &big], &w, &dest, &Options::new(layout)).unwrap();
        let exp = w.dir(&format!("expected-both-{layout:?}"));
        expected(&[&a, &big], layout, &exp);
        assert_same_tree(&exp, &dest, false);
    }
    assert!(
        killed_midway > 0,
        "at least one child must have been killed before finishing"
    );
}
