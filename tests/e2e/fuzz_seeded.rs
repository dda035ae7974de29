//! The fuzz targets' properties (`fuzz/fuzz_targets/`) as deterministic tests in the normal suite:
//! seeded mutations of valid inputs (names, the real topology, a tree manifest, archives) plus every
//! input the fuzzer found and we fixed (`fuzz/regressions/{target}/`). The properties themselves
//! (never panic, what parses round-trips, the archive reader never hands a sink more than a member
//! declares) are the same functions the fuzz targets call, in `cairn-fuzz-props`.

use std::io::Read;
use std::path::{Path, PathBuf};

use cairn_fingerprint::{Compression, Tree};
use cairn_fuzz_props::{artifact_name, tar_ingest, topology, tree_manifest};
use cairn_testkit::datagen::{ArtifactSpec, Rng, write_archive};

/// `seed` mutated `n` times: byte flips, insertions, deletions, truncation, splices of itself.
fn mutations(seed: &[u8], n: usize, rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let mut m = seed.to_vec();
            for _ in 0..rng.range(1, 8) {
                let len = m.len().max(1) as u64;
                let at = rng.range(0, len) as usize;
                match rng.range(0, 6) {
                    0 if !m.is_empty() => {
                        let i = at.min(m.len() - 1);
                        m[i] ^= 1 << rng.range(0, 8);
                    }
                    1 => m.insert(at.min(m.len()), rng.range(0, 256) as u8),
                    2 if !m.is_empty() => {
                        m.remove(at.min(m.len() - 1));
                    }
                    3 => m.truncate(at),
                    4 => {
                        let from = rng.range(0, len) as usize;
                        let chunk: Vec<u8> = seed[from.min(seed.len())..]
                            .iter()
                            .take(32)
                            .copied()
                            .collect();
                        let at = at.min(m.len());
                        m.splice(at..at, chunk);
                    }
                    _ if !m.is_empty() => {
                        // A byte that often matters to parsers.
                        let special = [b'_', b'.', b'/', b'[', b']', b'"', b'=', 0, 0xff, b'\n'];
                        let i = at.min(m.len() - 1);
                        m[i] = special[rng.range(0, special.len() as u64) as usize];
                    }
                    _ => {}
                }
            }
            m
        })
        .collect()
}

fn random_bytes(n: usize, max_len: u64, rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let mut b = vec![0u8; rng.range(0, max_len) as usize];
            rng.fill(&mut b);
            b
        })
        .collect()
}

/// The checked-in inputs of one target.
fn regressions(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().path())
                .filter(|p| p.is_file())
                .map(|p| {
                    let b = std::fs::read(&p).unwrap();
                    (p, b)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn fuzz_artifact_names_seeded() {
    let mut rng = Rng::new(1);
    for (_, input) in regressions("artifact_name") {
        artifact_name(&input);
    }
    for seed in [
        &b"amd-llvm_lib_generic"[..],
        b"blas_test_gfx94X-dcgpu",
        b"rand_dev_gfx1151",
        b"blas_lib_gfx110X-all.tar.zst",
        b"core-hip_run_generic.tar.xz",
    ] {
        for m in mutations(seed, 2000, &mut rng) {
            artifact_name(&m);
        }
    }
    for b in random_bytes(2000, 64, &mut rng) {
        artifact_name(&b);
    }
}

#[test]
fn fuzz_topology_seeded() {
    let mut rng = Rng::new(2);
    for (_, input) in regressions("topology") {
        topology(&input);
    }
    let real = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../BUILD_TOPOLOGY.toml"))
        .unwrap();
    topology(&real);
    for m in mutations(&real, 300, &mut rng) {
        topology(&m);
    }
}

#[test]
fn fuzz_tree_manifests_seeded() {
    let mut rng = Rng::new(3);
    for (_, input) in regressions("tree_manifest") {
        tree_manifest(&input);
    }
    let tmp = tempfile::tempdir().unwrap();
    let a = write_archive(
        &ArtifactSpec::new("blas", "lib", "generic", 64 << 10, 1),
        tmp.path(),
        Compression::Zstd,
    )
    .unwrap();
    let store = cairn_daemon::store::LocalStore::open(
        tmp.path().join("store"),
        cairn_daemon::store::StoreConfig::default(),
    )
    .unwrap();
    let tree = store.ingest_file("blas", &a.path, None).unwrap().tree;
    let json = tree.to_json();
    tree_manifest(&json);
    assert!(Tree::from_json_verified(&json, &tree.digest()).is_ok());
    for m in mutations(&json, 1000, &mut rng) {
        tree_manifest(&m);
    }
}

#[test]
fn fuzz_tar_ingest_seeded() {
    let mut rng = Rng::new(4);
    for (_, input) in regressions("tar_ingest") {
        tar_ingest(&input);
    }
    let tmp = tempfile::tempdir().unwrap();
    let a = write_archive(
        &ArtifactSpec::new("blas", "lib", "generic", 16 << 10, 1),
        tmp.path(),
        Compression::Zstd,
    )
    .unwrap();
    let compressed = std::fs::read(&a.path).unwrap();
    let mut raw = Vec::new();
    zstd::stream::read::Decoder::new(&compressed[..])
        .unwrap()
        .read_to_end(&mut raw)
        .unwrap();
    // Mode 2: mutate the tar itself (compressed by the harness); mode 0: the compressed stream.
    for m in mutations(&raw, 150, &mut rng) {
        let mut input = vec![2u8];
        input.extend(m);
        tar_ingest(&input);
    }
    for m in mutations(&compressed, 150, &mut rng) {
        let mut input = vec![0u8];
        input.extend(m);
        tar_ingest(&input);
    }
    // xz: mode 1 with its check, mode 4 without (an expected digest replaces it), so a damaged
    // stream reaches the tar reader unchecked.
    let xz = write_archive(
        &ArtifactSpec::new("blas", "lib", "generic", 16 << 10, 2),
        tmp.path(),
        Compression::Xz,
    )
    .unwrap();
    let xz = std::fs::read(&xz.path).unwrap();
    for m in mutations(&xz, 100, &mut rng) {
        for mode in [1u8, 4] {
            let mut input = vec![mode];
            input.extend(&m);
            tar_ingest(&input);
        }
    }
    // The hostile corpus, through the same harness.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hostile");
    for e in std::fs::read_dir(fixtures).unwrap() {
        let p = e.unwrap().path();
        let mode = if p.to_string_lossy().ends_with(".tar.xz") {
            1
        } else {
            0
        };
        let mut input = vec![mode];
        input.extend(std::fs::read(&p).unwrap());
        tar_ingest(&input);
    }
}
