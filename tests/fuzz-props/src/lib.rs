//! The fuzz targets' properties, each written once. `fuzz/fuzz_targets/{name}.rs` is
//! `fuzz_target!(|data: &[u8]| cairn_fuzz_props::{name}(data))`, and the seeded tests
//! (`tests/e2e/fuzz_seeded.rs`) call the same functions on mutated valid inputs and on every input
//! the fuzzer found (`fuzz/regressions/{name}/`). A property returns normally for any input, or
//! panics: that is the finding.
//!
//! A crate of its own, not a `cairn-testkit` module, because the fuzz crate builds it instrumented
//! with nightly sanitizers: it depends on `cairn-fingerprint` only, plus `cairn-daemon` behind the
//! `daemon` feature for [`tar_ingest`].

use cairn_fingerprint::names::{ArchiveName, ArtifactName};
use cairn_fingerprint::topology::Topology;
use cairn_fingerprint::{Blake3, Tree};

/// Artifact and archive name parsing never panics, and what parses round-trips.
pub fn artifact_name(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = ArtifactName::parse(s) {
        let again = ArtifactName::parse(&name.to_string()).expect("a parsed name re-parses");
        assert_eq!(again, name);
    }
    if let Ok(archive) = ArchiveName::parse(s) {
        assert_eq!(archive.to_string(), s, "an archive name prints as parsed");
    }
}

/// Topology parsing, validation and the graph queries never panic or recurse without bound,
/// whatever the TOML.
pub fn topology(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = Topology::parse(s) else {
        return;
    };
    let _ = t.validate();
    let _ = t.build_order();
    let _ = t.dependency_graph();
    for a in t.artifacts().iter().take(64) {
        let _ = t.artifact_closure(&a.name);
    }
    for s in t.stages().iter().take(16) {
        let _ = t.inbound(&s.name);
        let _ = t.produced(&s.name);
    }
}

/// Tree manifest decoding (`Tree::from_json_verified`) never panics; a tree it accepts re-encodes
/// to the digest it was checked against.
pub fn tree_manifest(data: &[u8]) {
    // Check against the digest of the bytes themselves: accepted only if canonical.
    let digest = Blake3::of(data);
    if let Ok(tree) = Tree::from_json_verified(data, &digest) {
        assert_eq!(tree.digest(), digest);
    }
    // And against an unrelated digest: must never be accepted unless the content matches.
    let other = Blake3::of(b"other");
    if let Ok(tree) = Tree::from_json_verified(data, &other) {
        assert_eq!(tree.digest(), other);
    }
}

/// The archive reader (`read_archive`, what ingest runs) never panics on any input and never hands
/// the sink more bytes than a member declares. The first byte picks the framing (modulo 3): raw zstd
/// (0) or xz (1) bytes, or (2) the rest compressed with zstd here so that mutations reach the tar
/// headers; and (`/ 3`, odd) whether an expected digest is given, with which xz skips its own check
/// of the decoded bytes, so a corrupt stream then reaches the tar reader unchecked.
#[cfg(feature = "daemon")]
pub fn tar_ingest(data: &[u8]) {
    use std::io::Read;

    use cairn_daemon::archive::{Limits, read_archive};
    use cairn_fingerprint::Compression;
    use cairn_fingerprint::tree::RelPath;

    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (bytes, compression) = match mode % 3 {
        0 => (rest.to_vec(), Compression::Zstd),
        1 => (rest.to_vec(), Compression::Xz),
        _ => (
            zstd::encode_all(rest, 1).expect("in-memory zstd"),
            Compression::Zstd,
        ),
    };
    let limits = Limits {
        max_member_size: 1 << 20,
        max_total_size: 4 << 20,
        max_members: 1000,
        max_manifest_size: 64 << 10,
        // Bounded memory: zstd's own default window limit (128 MiB).
        max_zstd_window_log: 27,
    };
    let mut sink = |_: &RelPath, r: &mut dyn Read, size: u64| {
        let mut buf = Vec::new();
        r.take(size + 1).read_to_end(&mut buf)?;
        assert!(
            buf.len() as u64 <= size,
            "the sink got more than the member declared"
        );
        Ok(Blake3::of(&buf))
    };
    // A digest that never matches: the reader decodes everything, then refuses the archive.
    let expected = (mode / 3 % 2 == 1).then_some(cairn_fingerprint::Sha256([0; 32]));
    let _ = read_archive(&bytes[..], compression, expected, &limits, &mut sink);
}
