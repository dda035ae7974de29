//! The local store: ingest of generated TheRock archives checked against `tar -x`, deduplication,
//! sidecar checks, single-flight, eviction under a lease, verification.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};

use cairn_daemon::archive::CreateOptions;
use cairn_daemon::store::error::StoreError;
use cairn_daemon::store::{IngestOutcome, LocalStore, StoreConfig};
use cairn_fingerprint::tree::EntryKind;
use cairn_fingerprint::{Compression, Sha256};
use cairn_testkit::bin_path::bin_path;
use cairn_testkit::datagen::{self, ArtifactSpec};
use cairn_testkit::storecheck::{blob_files, diff_tree_with_dir, index_problems, tar_extract};

fn open(dir: &Path) -> Arc<LocalStore> {
    LocalStore::open(dir, StoreConfig::default()).expect("open store")
}

/// Ingest real `.tar.zst` and `.tar.xz` archives from the generator (a `lib` artifact with symlink
/// chains, a `run` artifact with a hard link) and compare every entry with what GNU tar extracts from
/// the same archive: paths, kinds, modes, bytes (read from the CAS), symlink targets, hard links.
#[test]
fn ingest_matches_tar_extract_for_zstd_and_xz() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&tmp.path().join("store"));
    let specs = [
        ArtifactSpec::new("blas", "lib", "gfx94X-dcgpu", 2 << 20, 11),
        ArtifactSpec::new("hipcc", "run", "generic", 1 << 20, 12),
    ];
    for spec in &specs {
        for compression in [Compression::Zstd, Compression::Xz] {
            let a = datagen::write_archive(spec, &tmp.path().join("out"), compression).unwrap();
            let key = a.path.file_name().unwrap().to_string_lossy().into_owned();
            let out = store.ingest_file(&key, &a.path, Some(a.sha256)).unwrap();
            assert_eq!(out.archive_sha256, a.sha256);
            assert_eq!(out.compressed_bytes, a.info.compressed_size);
            assert_eq!(out.uncompressed_bytes, a.info.uncompressed_size);
            assert_eq!(out.tree.file_count() as u64, a.info.files);
            assert_eq!(
                out.tree
                    .manifest
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>(),
                [spec.relpath()]
            );
            assert_eq!(
                out.tree.entries[0].path.to_str(),
                Some("artifact_manifest.txt")
            );
            let kinds: Vec<EntryKind> = out.tree.entries.iter().map(|e| e.kind).collect();
            assert!(kinds.contains(&EntryKind::Symlink) && kinds.contains(&EntryKind::Dir));
            if spec.component == "run" {
                assert!(
                    kinds.contains(&EntryKind::Hardlink),
                    "run artifacts carry a hard link"
                );
            }

            let x = tmp
                .path()
                .join(format!("x-{}-{compression}", spec.dir_name()));
            tar_extract(&a.path, compression, &x);
            let problems = diff_tree_with_dir(&store, &out.tree, &x);
            assert!(problems.is_empty(), "{key}: {problems:#?}");

            let known = store.tree_for_key(&key).unwrap().expect("key recorded");
            assert_eq!(known.tree_digest, out.tree_digest);
            assert_eq!(known.archive_sha256, a.sha256);
        }
    }
    // The same content compressed two ways is one tree.
    let stats = store.stats().unwrap();
    assert_eq!(stats.trees, 2);
    assert_eq!(stats.archives, 4);
    assert!(index_problems(&store).is_empty());
}

/// Same spec, same bytes: the generator is deterministic down to the archive's SHA-256.
#[test]
fn generator_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = ArtifactSpec::new("rand", "dev", "generic", 512 << 10, 3);
    let a = datagen::write_archive(&spec, &tmp.path().join("a"), Compression::Zstd).unwrap();
    let b = datagen::write_archive(&spec, &tmp.path().join("b"), Compression::Zstd).unwrap();
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(
        std::fs::read_to_string(&a.sha256sum_path).unwrap(),
        format!("{}\n", a.sha256)
    );
    let other = ArtifactSpec { seed: 4, ..spec };
    let c = datagen::write_archive(&other, &tmp.path().join("c"), Compression::Zstd).unwrap();
    assert_ne!(a.sha256, c.sha256);
}

/// Two archives of the same files with a different member order and different mtimes (so different
/// SHA-256s, as TheRock's per-family `_generic` archives are) have one tree and store each file once.
#[test]
fn same_content_in_different_order_and_mtimes_is_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&tmp.path().join("store"));
    let spec = ArtifactSpec::new("amd-llvm", "lib", "generic", 1 << 20, 21);
    let dir = datagen::generate_artifact_dir(&tmp.path().join("artifacts"), &spec).unwrap();
    let a = datagen::archive_artifact_dir(&dir, &tmp.path().join("a"), Compression::Zstd).unwrap();
    datagen::set_all_mtimes(&dir, datagen::GENERATED_MTIME + 86_400).unwrap();
    let opts = CreateOptions {
        reverse_order: true,
        ..CreateOptions::new(Compression::Zstd)
    };
    let b = datagen::archive_artifact_dir_with(&dir, &tmp.path().join("b"), &opts).unwrap();
    assert_ne!(
        a.sha256, b.sha256,
        "order and mtimes must change the archive bytes"
    );

    let first = store.ingest_file("a", &a.path, Some(a.sha256)).unwrap();
    let after_first = store.stats().unwrap();
    let files_after_first = blob_files(store.root());
    assert!(first.new_blobs > 0 && !first.deduplicated);

    let second = store.ingest_file("b", &b.path, Some(b.sha256)).unwrap();
    assert_eq!(second.tree_digest, first.tree_digest);
    assert_eq!(second.new_blobs, 0);
    assert_eq!(second.new_blob_bytes, 0);
    let after_second = store.stats().unwrap();
    assert_eq!(after_second.bytes, after_first.bytes);
    assert_eq!(after_second.blobs, after_first.blobs);
    assert_eq!(after_second.trees, 1);
    assert_eq!(after_second.archives, 2);
    assert_eq!(blob_files(store.root()), files_after_first);
}

/// A sidecar mismatch rejects the archive: an error naming both digests, no index entry, no blob left.
#[test]
fn sha256_mismatch_rejects_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&tmp.path().join("store"));
    let spec = ArtifactSpec::new("prim", "dev", "generic", 512 << 10, 5);
    let a = datagen::write_archive(&spec, &tmp.path().join("out"), Compression::Zstd).unwrap();
    let wrong: Sha256 = "00".repeat(32).parse().unwrap();
    let err = store.ingest_file("k", &a.path, Some(wrong)).unwrap_err();
    match &err {
        StoreError::Sha256Mismatch {
            expected, actual, ..
        } => {
            assert_eq!(*expected, wrong);
            assert_eq!(*actual, a.sha256);
        }
        other => panic!("expected a sha256 mismatch, got {other}"),
    }
    assert!(err.to_string().contains(&a.sha256.to_string()));
    let stats = store.stats().unwrap();
    assert_eq!(
        (stats.blobs, stats.trees, stats.archives, stats.bytes),
        (0, 0, 0, 0)
    );
    assert_eq!(stats.ingest_failures, 1);
    assert!(store.tree_for_key("k").unwrap().is_none());
    assert!(
        blob_files(store.root()).is_empty(),
        "blobs of a rejected archive are removed"
    );
}

/// The xz check (CRC64) is skipped only where the archive's SHA-256 replaces it. An archive whose
/// last block's CRC64 is damaged is refused without a digest (the decoder's check is the only one),
/// and refused with a digest other than its own; with its own digest (what a producer's sidecar
/// names) it is ingested, and its content is the undamaged archive's, because the damage lies in the
/// check field alone: the decoder did not hash the decoded bytes a second time.
#[test]
fn a_trusted_sha256_replaces_the_xz_check_and_only_it() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = ArtifactSpec::new("blas", "lib", "gfx94X-dcgpu", 1 << 20, 21);
    let a = datagen::write_archive(&spec, &tmp.path().join("out"), Compression::Xz).unwrap();
    let mut bytes = std::fs::read(&a.path).unwrap();
    // The stream footer is CRC32, Backward Size, Stream Flags, `YZ`; the index starts Backward Size
    // bytes before it, and the last block's 8-byte CRC64 ends where the index starts.
    let footer = bytes.len() - 12;
    assert_eq!(&bytes[footer + 10..], b"YZ", "an xz stream footer");
    let backward = u32::from_le_bytes(bytes[footer + 4..footer + 8].try_into().unwrap());
    let index = footer - (backward as usize + 1) * 4;
    assert_eq!(bytes[index], 0, "an xz index indicator");
    bytes[index - 1] ^= 0x5a;
    let damaged = tmp.path().join("damaged.tar.xz");
    std::fs::write(&damaged, &bytes).unwrap();
    let damaged_sha256 = Sha256(<sha2::Sha256 as sha2::Digest>::digest(&bytes).into());

    let store = open(&tmp.path().join("store"));
    let err = store.ingest_file("unchecked", &damaged, None).unwrap_err();
    assert!(matches!(err, StoreError::Archive { .. }), "{err:?}");
    let err = store
        .ingest_file("other-digest", &damaged, Some(a.sha256))
        .unwrap_err();
    assert!(matches!(err, StoreError::Sha256Mismatch { .. }), "{err:?}");
    assert!(blob_files(store.root()).is_empty());

    let covered = store
        .ingest_file("covered", &damaged, Some(damaged_sha256))
        .unwrap();
    let reference = open(&tmp.path().join("reference"))
        .ingest_file("intact", &a.path, Some(a.sha256))
        .unwrap();
    assert_eq!(covered.tree_digest, reference.tree_digest);
    assert!(store.verify().unwrap().is_clean());
}

/// Eight threads ingest the same archive under the same key at once: one ingest runs, all eight get
/// the same result. The leader's reader is held back until the seven others have joined its flight,
/// so the overlap is certain rather than likely.
#[test]
fn eight_concurrent_ingests_of_one_archive_perform_one() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&tmp.path().join("store"));
    let spec = ArtifactSpec::new("fft", "lib", "generic", 1 << 20, 8);
    let a = datagen::write_archive(&spec, &tmp.path().join("out"), Compression::Zstd).unwrap();
    let barrier = Barrier::new(8);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let file = std::fs::File::open(&a.path).unwrap();
                    let gated = Gated {
                        inner: file,
                        store: &store,
                        key: "fft",
                        opened: false,
                    };
                    barrier.wait();
                    store.ingest_reader("fft", Compression::Zstd, gated, Some(a.sha256))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    let stats = store.stats().unwrap();
    assert_eq!(stats.ingests, 1, "one ingest performed");
    assert_eq!(stats.ingests_shared, 7);
    assert_eq!(results.iter().filter(|r| !r.deduplicated).count(), 1);
    for r in &results {
        assert_eq!(r.archive_sha256, a.sha256);
        assert_eq!(r.tree_digest, results[0].tree_digest);
        assert_eq!(r.tree, results[0].tree);
    }
}

/// A reader that, on first read, waits until seven followers wait on the flight of `key`.
struct Gated<'a> {
    inner: std::fs::File,
    store: &'a LocalStore,
    key: &'a str,
    opened: bool,
}

impl std::io::Read for Gated<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.opened {
            while self.store.ingest_followers(self.key) < 7 {
                std::thread::yield_now();
            }
            self.opened = true;
        }
        self.inner.read(buf)
    }
}

/// Twenty-four identical 1 MiB members (under different names) are staged once: the CAS temp dir
/// never holds more than the distinct content plus the member being read, and the tree lists all 24
/// paths with one digest.
#[test]
fn identical_members_use_temp_space_once() {
    use cairn_testkit::archives::{tar_stream, ustar_file, zstd_bytes};
    const MEMBER: usize = 1 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&tmp.path().join("store"));
    let content: Vec<u8> = (0..MEMBER as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let stage = "math-libs/dup/stage";
    let mut members = vec![ustar_file(
        "artifact_manifest.txt",
        format!("{stage}\n").as_bytes(),
    )];
    for i in 0..24 {
        members.push(ustar_file(&format!("{stage}/copy{i:02}.bin"), &content));
    }
    let bytes = zstd_bytes(&tar_stream(&members), 3);
    let temp_dir = tmp.path().join("store/cas-v1/tmp");
    let sampler = TempSampler {
        inner: &bytes[..],
        dir: &temp_dir,
        peak: 0,
    };
    let mut sampler = sampler;
    let out = store
        .ingest_reader("dup", Compression::Zstd, &mut sampler, None)
        .unwrap();
    let files: Vec<_> = out
        .tree
        .entries
        .iter()
        .filter(|e| e.path.as_bytes().ends_with(b".bin"))
        .collect();
    assert_eq!(files.len(), 24);
    assert!(files.iter().all(|e| e.blake3 == files[0].blake3));
    assert!(
        sampler.peak <= 2 * MEMBER as u64,
        "temp space peaked at {} bytes for 24 identical {MEMBER}-byte members",
        sampler.peak
    );
    assert_eq!(
        store.stats().unwrap().blobs,
        2,
        "the manifest and one content blob"
    );
}

/// A reader that measures the bytes in `dir` at every read.
struct TempSampler<'a> {
    inner: &'a [u8],
    dir: &'a Path,
    peak: u64,
}

impl std::io::Read for TempSampler<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Regular files anywhere under the temp dir (each ingest stages in a directory of its own).
        fn files_bytes(dir: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .filter_map(|e| e.ok())
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => files_bytes(&e.path()),
                    Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
                    _ => 0,
                })
                .sum()
        }
        let used = files_bytes(self.dir);
        self.peak = self.peak.max(used);
        self.inner.read(buf)
    }
}

/// The async variant reads from a tokio stream on the blocking pool and agrees with the sync one.
#[test]
fn async_ingest_matches_sync_ingest() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = ArtifactSpec::new("sparse", "lib", "generic", 512 << 10, 9);
    let a = datagen::write_archive(&spec, &tmp.path().join("out"), Compression::Xz).unwrap();
    let sync = open(&tmp.path().join("s1"))
        .ingest_file("k", &a.path, Some(a.sha256))
        .unwrap();
    let store = open(&tmp.path().join("s2"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(async {
        let file = tokio::fs::File::open(&a.path).await.unwrap();
        store
            .ingest_async("k", Compression::Xz, file, Some(a.sha256))
            .await
            .unwrap()
    });
    assert_eq!(out, sync);
}

/// Under a quota, least-recently-used blobs go first, and leased blobs are never evicted.
#[test]
fn eviction_respects_leases_and_recency() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&tmp.path().join("store"));
    let mut outs = Vec::new();
    for (i, name) in ["aaa", "bbb", "ccc"].iter().enumerate() {
        let spec = ArtifactSpec::new(name, "lib", "generic", 256 << 10, 100 + i as u64);
        let a = datagen::write_archive(&spec, &tmp.path().join("out"), Compression::Zstd).unwrap();
        outs.push(store.ingest_file(name, &a.path, None).unwrap());
    }
    let [a, b, c] = [&outs[0], &outs[1], &outs[2]];
    let total = store.stats().unwrap().bytes;

    // Use `a` after `b` and `c` were ingested: `b` is now the least recently used, and a quota just
    // under the total evicts from `b` only.
    drop(store.lease(&a.tree).unwrap());
    let report = store.gc(total - 1).unwrap();
    assert!(report.evicted_blobs > 0 && report.bytes_after < total);
    assert!(
        !store.has_blobs(&b.tree).unwrap(),
        "the least recently used tree goes first"
    );
    assert!(store.has_blobs(&a.tree).unwrap() && store.has_blobs(&c.tree).unwrap());

    // Hold a lease on `c`, then ask for a quota of zero: everything else goes, `c` stays.
    let lease_c = store.lease(&c.tree).unwrap();
    let report = store.gc(0).unwrap();
    assert!(
        report.skipped_leased > 0,
        "the leased tree was a candidate and was spared"
    );
    let c_blobs: std::collections::BTreeSet<_> = c
        .tree
        .entries
        .iter()
        .filter_map(|e| e.blake3.map(|d| (d, e.size)))
        .collect();
    assert_eq!(
        report.bytes_after,
        c_blobs.iter().map(|(_, s)| s).sum::<u64>()
    );
    assert!(store.has_blobs(&c.tree).unwrap(), "leased blobs survive");
    assert!(!store.has_blobs(&a.tree).unwrap());
    for e in c.tree.entries.iter().filter(|e| e.kind == EntryKind::File) {
        let path = store
            .blob_file(&e.blake3.unwrap())
            .expect("leased blob still served");
        assert!(path.is_file());
    }
    assert_eq!(store.stats().unwrap().leased_blobs as usize, c_blobs.len());

    // Released, everything can go.
    drop(lease_c);
    let report = store.gc(0).unwrap();
    assert_eq!(report.bytes_after, 0);
    assert!(!store.has_blobs(&c.tree).unwrap());
    assert!(blob_files(store.root()).is_empty());
    // Trees are facts and stay: a later ingest or fetch can refill their blobs.
    assert!(store.tree(&c.tree_digest).unwrap().is_some());
    let stats = store.stats().unwrap();
    assert_eq!((stats.bytes, stats.blobs), (0, 0));
    assert!(stats.evicted_bytes >= total);
}

/// `Stats` taken while evictions run is one snapshot: the bytes the index no longer holds are
/// exactly the evicted bytes it reports (nothing else removes blobs here). The CI run of stop 25 saw
/// the store under its quota with 0 evictions, read between an eviction's index commit and its count.
#[test]
fn stats_never_show_bytes_gone_without_the_eviction_that_took_them() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&tmp.path().join("store"));
    for (i, name) in ["aaa", "bbb", "ccc", "ddd"].iter().enumerate() {
        let spec = ArtifactSpec::new(name, "lib", "generic", 1 << 20, 60 + i as u64);
        let a = datagen::write_archive(&spec, &tmp.path().join("out"), Compression::Zstd).unwrap();
        store.ingest_file(name, &a.path, None).unwrap();
    }
    let start = store.stats().unwrap();
    assert!(start.blobs >= 40, "enough blobs for many steps: {start:?}");
    let total = start.bytes;

    let evictor = {
        let store = store.clone();
        std::thread::spawn(move || {
            // Down to nothing in 40 steps, each removing some blob files after its index commit.
            for step in (0..40u64).rev() {
                store.gc(total * step / 40).unwrap();
            }
        })
    };
    let mut snapshots = 0u32;
    while !evictor.is_finished() {
        let s = store.stats().unwrap();
        assert_eq!(
            s.bytes + s.evicted_bytes,
            total,
            "snapshot {snapshots}: bytes gone from the index are the evicted bytes: {s:?}"
        );
        snapshots += 1;
    }
    evictor.join().unwrap();
    let end = store.stats().unwrap();
    assert_eq!((end.bytes, end.evicted_bytes), (0, total), "{end:?}");
}

/// Cost-aware eviction through the real store (ingest, lease, `gc` and the background evictor's
/// bounded step): of two archives used alike, the `.tar.xz` one (≈ 11× the decode cost of zstd) is
/// kept although it is the older, and an archive fetched four times outranks a newer one fetched
/// once; LRU, on the same histories, evicts the older archive first.
#[test]
fn cost_aware_eviction_keeps_costly_and_reused_archives_that_lru_would_evict() {
    use cairn_daemon::store::score::EvictionPolicy;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let xz_spec = ArtifactSpec::new("hipfft", "lib", "generic", 256 << 10, 41);
    let zst_spec = ArtifactSpec::new("rocfft", "lib", "generic", 256 << 10, 42);
    let xz = datagen::write_archive(&xz_spec, &out, Compression::Xz).unwrap();
    let zst = datagen::write_archive(&zst_spec, &out, Compression::Zstd).unwrap();
    let run = |policy: EvictionPolicy, name: &str| {
        let config = StoreConfig {
            max_bytes: Some(u64::MAX / 2),
            eviction: policy,
            ..StoreConfig::default()
        };
        let store = LocalStore::open(tmp.path().join(name), config).unwrap();
        // The xz archive first, the zstd one after: each fetched (ingest + lease) once.
        let a = store.ingest_file("xz", &xz.path, None).unwrap();
        drop(store.lease(&a.tree).unwrap());
        let b = store.ingest_file("zst", &zst.path, None).unwrap();
        drop(store.lease(&b.tree).unwrap());
        let total = store.stats().unwrap().bytes;
        // Evict about half: one archive's worth.
        store.gc(total - total / 3).unwrap();
        (
            store.has_blobs(&a.tree).unwrap(),
            store.has_blobs(&b.tree).unwrap(),
        )
    };
    assert_eq!(
        run(EvictionPolicy::CostAware, "cost"),
        (true, false),
        "cost-aware keeps the older xz archive and evicts the zstd one"
    );
    assert_eq!(
        run(EvictionPolicy::Lru, "lru"),
        (false, true),
        "LRU evicts the older (xz) archive"
    );

    // The background evictor's bounded step ranks the same way: of two zstd archives, the older
    // one fetched four times outranks the newer one fetched once, so a step limited to the newer
    // one's blob count takes exactly those (LRU would take the older).
    let config = StoreConfig {
        max_bytes: Some(1),
        ..StoreConfig::default()
    };
    let store = LocalStore::open(tmp.path().join("step"), config).unwrap();
    store.set_background_eviction(true);
    let reused = datagen::write_archive(&xz_spec, &out, Compression::Zstd).unwrap();
    let a = store.ingest_file("reused", &reused.path, None).unwrap();
    for _ in 0..4 {
        drop(store.lease(&a.tree).unwrap());
    }
    let b = store.ingest_file("zst", &zst.path, None).unwrap();
    drop(store.lease(&b.tree).unwrap());
    let blobs_of = |o: &IngestOutcome| {
        o.tree
            .entries
            .iter()
            .filter_map(|e| e.blake3)
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert!(blobs_of(&a).is_disjoint(&blobs_of(&b)));
    let r = store.evict_step(blobs_of(&b).len(), false).unwrap();
    assert_eq!(r.evicted_blobs as usize, blobs_of(&b).len());
    assert!(!store.has_blobs(&b.tree).unwrap(), "the zstd archive went");
    assert!(
        store.has_blobs(&a.tree).unwrap(),
        "the older xz archive stayed"
    );
}

/// An older build of an artifact goes before current builds once a newer build of the same artifact
/// has been ingested, however often it was used and however costly its archive: CI jobs want the
/// newest builds; a bisect's old ones are leased while it runs. Without build versions (an archive
/// from a local run) the same history keeps the old build.
#[test]
fn superseded_builds_are_evicted_before_current_ones() {
    use cairn_daemon::store::index::Version;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let old = datagen::write_archive(
        &ArtifactSpec::new("blas", "lib", "gfx94X-dcgpu", 256 << 10, 61),
        &out.join("old"),
        Compression::Xz,
    )
    .unwrap();
    let new = datagen::write_archive(
        &ArtifactSpec::new("blas", "lib", "gfx94X-dcgpu", 256 << 10, 62),
        &out.join("new"),
        Compression::Zstd,
    )
    .unwrap();
    let other = datagen::write_archive(
        &ArtifactSpec::new("fft", "lib", "gfx94X-dcgpu", 256 << 10, 63),
        &out.join("other"),
        Compression::Zstd,
    )
    .unwrap();
    let blas = Version::lineage_of("blas_lib_gfx94X-dcgpu");
    let fft = Version::lineage_of("fft_lib_gfx94X-dcgpu");
    let run = |name: &str, versioned: bool| {
        let store = LocalStore::open(tmp.path().join(name), StoreConfig::default()).unwrap();
        let version = |lineage, generation| {
            versioned.then_some(Version {
                lineage,
                generation,
            })
        };
        let ingest = |key: &str, path: &Path, v: Option<Version>| {
            let file = std::fs::File::open(path).unwrap();
            let compression = Compression::from_file_name(&path.to_string_lossy()).unwrap();
            store
                .ingest_reader_leased(key, compression, file, None, v)
                .unwrap()
                .0
        };
        // The old xz build, used by four jobs; then the newer build of the same artifact and another
        // artifact's build, each used once.
        let a = ingest("old", &old.path, version(blas, 100));
        for _ in 0..4 {
            drop(store.lease(&a.tree).unwrap());
        }
        let b = ingest("new", &new.path, version(blas, 200));
        drop(store.lease(&b.tree).unwrap());
        let c = ingest("other", &other.path, version(fft, 150));
        drop(store.lease(&c.tree).unwrap());
        // Evict what only the old build holds (builds of one artifact share some files).
        let blobs = |o: &IngestOutcome| -> std::collections::BTreeMap<_, u64> {
            o.tree
                .entries
                .iter()
                .filter_map(|e| e.blake3.map(|d| (d, e.size)))
                .collect()
        };
        let (newer, others) = (blobs(&b), blobs(&c));
        let only_old: u64 = blobs(&a)
            .iter()
            .filter(|(d, _)| !newer.contains_key(*d) && !others.contains_key(*d))
            .map(|(_, size)| size)
            .sum();
        let total = store.stats().unwrap().bytes;
        store.gc(total - only_old).unwrap();
        [&a, &b, &c].map(|o| store.has_blobs(&o.tree).unwrap())
    };
    assert_eq!(
        run("versioned", true),
        [false, true, true],
        "the superseded build goes, the current builds stay"
    );
    let [old_kept, new_kept, _] = run("unversioned", false);
    assert!(
        old_kept && !new_kept,
        "without versions the reused, costly old build stays and the newer build goes"
    );
}

/// A quota set at open is enforced after each ingest; the just-ingested tree is kept.
#[test]
fn quota_is_enforced_after_ingest() {
    let tmp = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        max_bytes: Some(400 << 10),
        ..StoreConfig::default()
    };
    let store = LocalStore::open(tmp.path().join("store"), config).unwrap();
    let mut last = None;
    for i in 0..3u64 {
        let spec = ArtifactSpec::new("quota", "lib", &format!("fam{i}"), 256 << 10, 200 + i);
        let a = datagen::write_archive(&spec, &tmp.path().join("out"), Compression::Zstd).unwrap();
        last = Some(store.ingest_file(&format!("k{i}"), &a.path, None).unwrap());
        assert!(store.stats().unwrap().bytes <= 400 << 10);
    }
    assert!(store.has_blobs(&last.unwrap().tree).unwrap());
    assert!(store.stats().unwrap().evicted_blobs > 0);
}

/// `cairnd verify` finds a corrupted blob, reports its digest and path, quarantines it, exits 1; the
/// blob is no longer served; a second run is clean and exits 0. `cairnd gc` then empties the store.
#[test]
fn verify_quarantines_corrupt_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let store_dir = tmp.path().join("store");
    let spec = ArtifactSpec::new("miopen", "lib", "generic", 512 << 10, 31);
    let a = datagen::write_archive(&spec, &tmp.path().join("out"), Compression::Zstd).unwrap();
    let (victim, tree) = {
        let store = open(&store_dir);
        let out = store.ingest_file("k", &a.path, Some(a.sha256)).unwrap();
        let victim = out
            .tree
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .max_by_key(|e| e.size)
            .unwrap();
        (victim.blake3.unwrap(), out.tree.clone())
    };
    let cairnd = bin_path("cairnd");
    let clean = Command::new(&cairnd)
        .arg("verify")
        .arg("--store")
        .arg(&store_dir)
        .output()
        .unwrap();
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );

    // Flip one byte in place, keeping the size: only a re-hash can tell.
    let path = store_dir
        .join("cas-v1/blobs")
        .join(&victim.to_hex()[..2])
        .join(victim.to_hex());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::write(&path, &bytes).unwrap();

    let bad = Command::new(&cairnd)
        .arg("verify")
        .arg("--store")
        .arg(&store_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&victim.to_hex()), "{stdout}");
    assert!(stdout.contains(&path.display().to_string()), "{stdout}");
    assert!(!path.exists(), "corrupt blob moved away");
    assert_eq!(
        std::fs::read_dir(store_dir.join("quarantine"))
            .unwrap()
            .count(),
        1
    );

    let again = Command::new(&cairnd)
        .arg("verify")
        .arg("--store")
        .arg(&store_dir)
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    {
        let store = open(&store_dir);
        assert!(
            store.blob_file(&victim).is_err(),
            "a quarantined blob is never served"
        );
        assert!(!store.has_blobs(&tree).unwrap());
        // Re-ingesting the archive repairs the store.
        store.ingest_file("k", &a.path, Some(a.sha256)).unwrap();
        assert!(store.has_blobs(&tree).unwrap());
        assert!(index_problems(&store).is_empty());
    }
    let gc = Command::new(&cairnd)
        .args(["gc", "--max-bytes", "0", "--store"])
        .arg(&store_dir)
        .output()
        .unwrap();
    assert_eq!(
        gc.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    assert!(blob_files(&store_dir).is_empty());
}

/// A store under `dir` holding one ingested 256 KiB archive generated from `seed`.
fn store_with_one_archive(dir: &Path, seed: u64) -> (Arc<LocalStore>, IngestOutcome) {
    let store = open(&dir.join("store"));
    let spec = ArtifactSpec::new("rccl", "lib", "generic", 256 << 10, seed);
    let a = datagen::write_archive(&spec, &dir.join("out"), Compression::Zstd).unwrap();
    let out = store.ingest_file("k", &a.path, None).unwrap();
    (store, out)
}

/// A blob whose size no longer matches the index is caught by the cheap check when its path is handed
/// out, quarantined, and not served.
#[test]
fn blob_file_refuses_a_truncated_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, out) = store_with_one_archive(tmp.path(), 41);
    let e = out
        .tree
        .entries
        .iter()
        .find(|e| e.kind == EntryKind::File && e.size > 10)
        .unwrap();
    let digest = e.blake3.unwrap();
    let path = store.blob_path(&digest);
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"short").unwrap();
    let err = store.blob_file(&digest).unwrap_err();
    assert!(matches!(err, StoreError::BlobUnavailable { .. }), "{err}");
    assert!(!path.exists());
    assert!(!store.has_blobs(&out.tree).unwrap());
}

/// The batched lookup a Fetch uses gives every path of a healthy batch, in order, and refuses a batch
/// holding a missing or truncated blob, naming it and quarantining only that one.
#[test]
fn blob_files_answers_a_batch_and_quarantines_only_the_bad_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, out) = store_with_one_archive(tmp.path(), 43);
    let mut digests: Vec<_> = out
        .tree
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File && e.size > 10)
        .filter_map(|e| e.blake3)
        .collect();
    digests.sort();
    digests.dedup();
    assert!(
        digests.len() >= 3,
        "the generated artifact has several files"
    );
    let paths = store.blob_files(&digests).unwrap();
    let expected: Vec<_> = digests.iter().map(|d| store.blob_path(d)).collect();
    assert_eq!(paths, expected);

    let victim = digests[1];
    let path = store.blob_path(&victim);
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"short").unwrap();
    match store.blob_files(&digests).unwrap_err() {
        StoreError::BlobUnavailable { digest, .. } => assert_eq!(digest, victim),
        other => panic!("unexpected error: {other}"),
    }
    assert!(!path.exists(), "the truncated blob is quarantined");
    // The others are untouched and still served.
    let others: Vec<_> = digests.iter().copied().filter(|d| *d != victim).collect();
    assert_eq!(store.blob_files(&others).unwrap().len(), others.len());
    // A blob the index never knew is refused without touching anything.
    let unknown = cairn_fingerprint::Blake3::of(b"never stored");
    assert!(matches!(
        store.blob_files(&[unknown]),
        Err(StoreError::BlobUnavailable { .. })
    ));
}

/// What TheRock's `fileset_tool.py` writes — Python `tarfile`, PAX format, hard links as `LNKTYPE`,
/// `os.walk` member order — is accepted: as `.tar.xz` straight from `tarfile` (preset 6), and as
/// `.tar.zst` compressed by the zstd CLI with `--long=31` (a window larger than zstd's default
/// decoder limit). Both match `tar -x` of the same archive.
#[test]
fn python_tarfile_archives_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&tmp.path().join("store"));
    let spec = ArtifactSpec::new("hipblaslt", "run", "gfx94X-dcgpu", 1 << 20, 51);
    let dir = datagen::generate_artifact_dir(&tmp.path().join("artifacts"), &spec).unwrap();
    let script = r#"
import os, sys, tarfile
src, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
with tarfile.open(out, mode) as tf:
    tf.add(os.path.join(src, "artifact_manifest.txt"), arcname="artifact_manifest.txt")
    for rel in open(os.path.join(src, "artifact_manifest.txt")).read().splitlines():
        if not rel:
            continue
        for root, dirs, files in os.walk(os.path.join(src, rel)):
            for name in dirs + files:
                p = os.path.join(root, name)
                tf.add(p, arcname=os.path.relpath(p, src), recursive=False)
"#;
    let xz = tmp.path().join(spec.archive_name(Compression::Xz));
    let tar = tmp.path().join(format!("{}.tar", spec.dir_name()));
    for (out, mode) in [(&xz, "w:xz"), (&tar, "w")] {
        let status = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&dir)
            .arg(out)
            .arg(mode)
            .status()
            .unwrap();
        assert!(status.success(), "python3 tarfile failed");
    }
    let zst = tmp.path().join(spec.archive_name(Compression::Zstd));
    // Through a pipe, so zstd cannot shrink the window to the input size.
    let status = Command::new("zstd")
        .args(["-q", "-3", "--long=31", "-c"])
        .stdin(std::fs::File::open(&tar).unwrap())
        .stdout(std::fs::File::create(&zst).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "zstd failed");
    let plain = Command::new("zstd")
        .args(["-q", "-t"])
        .arg(&zst)
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "the frame needs a window beyond zstd's default limit"
    );

    let mut trees = Vec::new();
    for (path, compression) in [(&xz, Compression::Xz), (&zst, Compression::Zstd)] {
        let key = path.file_name().unwrap().to_string_lossy().into_owned();
        let out = store.ingest_file(&key, path, None).unwrap();
        assert!(
            out.tree
                .entries
                .iter()
                .any(|e| e.kind == EntryKind::Hardlink),
            "tarfile wrote LNKTYPE"
        );
        let x = tmp.path().join(format!("x-{compression}"));
        tar_extract(path, compression, &x);
        let problems = diff_tree_with_dir(&store, &out.tree, &x);
        assert!(problems.is_empty(), "{key}: {problems:#?}");
        trees.push(out.tree_digest);
    }
    // And the same content written by our own writer is the same tree.
    let ours =
        datagen::archive_artifact_dir(&dir, &tmp.path().join("ours"), Compression::Zstd).unwrap();
    let out = store
        .ingest_file("ours", &ours.path, Some(ours.sha256))
        .unwrap();
    assert_eq!(trees, [out.tree_digest, out.tree_digest]);
}
