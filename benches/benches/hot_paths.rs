//! criterion micro-benchmarks of Cairn's hot paths, each reporting throughput:
//!
//! - `hash`: BLAKE3 (the CAS key) vs SHA-256 (TheRock's sidecar) over 1 MiB, one core;
//! - `ingest`: a TheRock-shaped `.tar.zst` into a fresh CAS (decompress, hash, write blobs, index);
//! - `materialize`: one artifact tree from the CAS into a fresh build dir vs `cp -a` of the same tree;
//! - `fingerprint`: every artifact of the real topology from a TheRock-shaped git checkout.
//!
//! Sample counts and times are kept small so `cargo bench -p cairn-benches` finishes in minutes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_benches::{materialize_keys, open_store};
use cairn_client::materialize::{CopyMode, Layout};
use cairn_fingerprint::{Compression, FingerprintConfig, Fingerprinter, Platform, Topology};
use cairn_testkit::checkout::Checkout;
use cairn_testkit::datagen::{self, ArtifactSpec, Rng};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sha2::Digest;

fn topology_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../BUILD_TOPOLOGY.toml")
}

fn hashing(c: &mut Criterion) {
    let mut buf = vec![0u8; 1 << 20];
    Rng::new(1).fill(&mut buf);
    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("blake3_1MiB", |b| b.iter(|| blake3::hash(&buf)));
    g.bench_function("sha256_1MiB", |b| b.iter(|| sha2::Sha256::digest(&buf)));
    g.finish();
}

/// A 24 MiB `lib` artifact (a few large libraries, many small files) as a directory and a `.tar.zst`.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    archive: PathBuf,
    bytes: u64,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spec = ArtifactSpec::new("blas", "lib", "generic", 24 << 20, 7);
    let dir = datagen::generate_artifact_dir(&tmp.path().join("dirs"), &spec).expect("generate");
    let a = datagen::archive_artifact_dir(&dir, &tmp.path().join("archives"), Compression::Zstd)
        .expect("archive");
    Fixture {
        root: tmp.path().to_path_buf(),
        dir,
        archive: a.path,
        bytes: a.info.uncompressed_size,
        _tmp: tmp,
    }
}

fn ingest(c: &mut Criterion) {
    let f = fixture();
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Bytes(f.bytes));
    g.bench_function("tar_zst_24MiB_into_fresh_cas", |b| {
        b.iter_batched(
            || tempfile::tempdir_in(&f.root).expect("store dir"),
            |store_dir| {
                let store = open_store(store_dir.path()).expect("store");
                store
                    .ingest_file("a.tar.zst", &f.archive, None)
                    .expect("ingest");
                store_dir
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn materialize(c: &mut Criterion) {
    let f = fixture();
    let store_dir = f.root.join("store");
    let store = open_store(&store_dir).expect("store");
    store
        .ingest_file("a.tar.zst", &f.archive, None)
        .expect("ingest");
    let keys = vec!["a.tar.zst".to_string()];
    let mut g = c.benchmark_group("materialize");
    g.throughput(Throughput::Bytes(f.bytes));
    g.bench_function("bootstrap_from_cas_24MiB", |b| {
        b.iter_batched(
            || tempfile::tempdir_in(&f.root).expect("dest"),
            |dest| {
                materialize_keys(
                    &store,
                    &keys,
                    &dest.path().join("build"),
                    Layout::Bootstrap,
                    CopyMode::Auto,
                )
                .expect("materialize");
                dest
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("cp_a_same_tree_24MiB", |b| {
        b.iter_batched(
            || tempfile::tempdir_in(&f.root).expect("dest"),
            |dest| {
                let ok = Command::new("cp")
                    .arg("-a")
                    .arg(&f.dir)
                    .arg(dest.path().join("build"))
                    .status()
                    .expect("cp runs")
                    .success();
                assert!(ok, "cp -a failed");
                dest
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn fingerprint(c: &mut Criterion) {
    let text = std::fs::read_to_string(topology_path()).expect("topology");
    let topology = Topology::parse(&text).expect("topology parses");
    let tmp = tempfile::tempdir().expect("tempdir");
    let checkout = Checkout::create(tmp.path(), &text).expect("checkout");
    let mut g = c.benchmark_group("fingerprint");
    g.throughput(Throughput::Elements(topology.artifacts().len() as u64));
    g.bench_function("whole_topology_from_checkout", |b| {
        b.iter(|| {
            let fp = Fingerprinter::new(&topology, &checkout.root, FingerprintConfig::default())
                .expect("fingerprinter");
            fp.compute("gfx94X-dcgpu", Platform::Linux)
                .expect("fingerprints")
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = hot_paths;
    config = config();
    targets = hashing, ingest, materialize, fingerprint
}
criterion_main!(hot_paths);
