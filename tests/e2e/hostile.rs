//! Hostile archives: each one is refused with its own error naming the offending member, and the store
//! is left exactly as it was (same index counts, same blob files).
//!
//! The tar streams are written byte by byte (ustar headers, GNU base-256 sizes) because the `tar`
//! crate's builder refuses most of these on purpose.

use std::path::Path;

use cairn_daemon::archive::ArchiveError;
use cairn_daemon::store::error::StoreError;
use cairn_daemon::store::{LocalStore, StoreConfig};
use cairn_fingerprint::Compression;
use cairn_fingerprint::tree::RelPathError;
use cairn_testkit::archives::{tar_stream, ustar_file as file, ustar_member, zstd_bytes};
use cairn_testkit::datagen::{self, ArtifactSpec};
use cairn_testkit::storecheck::{blob_files, index_problems};

const STAGE: &str = "math-libs/evil/stage";

/// One raw ustar member ([`ustar_member`]) named by a string.
fn member(name: &str, typeflag: u8, link: &str, data: &[u8], size: Option<u64>) -> Vec<u8> {
    ustar_member(name.as_bytes(), typeflag, link, data, size)
}

fn manifest(lines: &str) -> Vec<u8> {
    file("artifact_manifest.txt", lines.as_bytes())
}

/// A zstd-compressed tar of `members` (end-of-archive blocks appended).
fn archive(members: &[Vec<u8>]) -> Vec<u8> {
    zstd_bytes(&tar_stream(members), 3)
}

/// The usual start: the manifest, then a file with content unique to the case, so the refusal comes
/// after this ingest has already written a blob (which must not survive).
fn prefix(case: &str) -> Vec<Vec<u8>> {
    vec![
        manifest(&format!("{STAGE}\n")),
        file(
            &format!("{STAGE}/ok.txt"),
            format!("content unique to {case}").as_bytes(),
        ),
    ]
}

fn with(case: &str, bad: Vec<Vec<u8>>) -> Vec<u8> {
    let mut m = prefix(case);
    m.extend(bad);
    archive(&m)
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    blobs: u64,
    bytes: u64,
    trees: u64,
    archives: u64,
    files: Vec<std::path::PathBuf>,
}

fn snapshot(store: &LocalStore) -> Snapshot {
    let s = store.stats().unwrap();
    Snapshot {
        blobs: s.blobs,
        bytes: s.bytes,
        trees: s.trees,
        archives: s.archives,
        files: blob_files(store.root()),
    }
}

type Check = fn(&ArchiveError) -> bool;

#[test]
fn hostile_archives_are_refused_and_leave_the_store_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalStore::open(tmp.path().join("store"), StoreConfig::default()).unwrap();
    // A store with content, so "unchanged" means something.
    let good = datagen::write_archive(
        &ArtifactSpec::new("good", "lib", "generic", 256 << 10, 1),
        &tmp.path().join("out"),
        Compression::Zstd,
    )
    .unwrap();
    store
        .ingest_file("good", &good.path, Some(good.sha256))
        .unwrap();
    let before = snapshot(&store);

    let s = STAGE;
    let full = archive(&prefix("truncated"));
    let cases: Vec<(&str, Vec<u8>, &str, Check)> = vec![
        ("empty", archive(&[]), "", |e| {
            matches!(e, ArchiveError::Empty)
        }),
        (
            "manifest-not-first",
            archive(&[
                file(&format!("{s}/a.txt"), b"a"),
                manifest(&format!("{s}\n")),
            ]),
            "a.txt",
            |e| matches!(e, ArchiveError::ManifestNotFirst { .. }),
        ),
        (
            "manifest-is-a-directory",
            archive(&[member("artifact_manifest.txt/", b'5', "", b"", None)]),
            "artifact_manifest.txt",
            |e| matches!(e, ArchiveError::ManifestNotFirst { .. }),
        ),
        (
            "manifest-lists-parent",
            archive(&[manifest("../../etc\n")]),
            "../../etc",
            |e| matches!(e, ArchiveError::BadManifest { .. }),
        ),
        (
            "absolute-path",
            with("absolute", vec![file("/etc/cron.d/evil", b"x")]),
            "/etc/cron.d/evil",
            |e| {
                matches!(
                    e,
                    ArchiveError::UnsafePath {
                        reason: RelPathError::Absolute(_),
                        ..
                    }
                )
            },
        ),
        (
            "dot-dot",
            with(
                "dotdot",
                vec![file(&format!("{s}/../../../../../tmp/evil"), b"x")],
            ),
            "../../../../../tmp/evil",
            |e| {
                matches!(
                    e,
                    ArchiveError::UnsafePath {
                        reason: RelPathError::ParentDir(_),
                        ..
                    }
                )
            },
        ),
        (
            "outside-manifest",
            with("outside", vec![file("math-libs/other/stage/x", b"x")]),
            "math-libs/other/stage/x",
            |e| matches!(e, ArchiveError::NotInManifest { .. }),
        ),
        (
            "the-relpath-itself",
            with(
                "relpath",
                vec![member(&format!("{s}/"), b'5', "", b"", None)],
            ),
            s,
            |e| matches!(e, ArchiveError::NotInManifest { .. }),
        ),
        (
            "symlink-escapes-upwards",
            with(
                "symlink-up",
                vec![member(
                    &format!("{s}/lib/up"),
                    b'2',
                    "../../../../../../etc",
                    b"",
                    None,
                )],
            ),
            "lib/up",
            |e| matches!(e, ArchiveError::LinkEscapes { .. }),
        ),
        (
            "symlink-absolute",
            with(
                "symlink-abs",
                vec![member(
                    &format!("{s}/passwd"),
                    b'2',
                    "/etc/passwd",
                    b"",
                    None,
                )],
            ),
            "/etc/passwd",
            |e| matches!(e, ArchiveError::LinkEscapes { .. }),
        ),
        (
            "hardlink-absolute",
            with(
                "hardlink-abs",
                vec![member(
                    &format!("{s}/shadow"),
                    b'1',
                    "/etc/shadow",
                    b"",
                    None,
                )],
            ),
            "/etc/shadow",
            |e| matches!(e, ArchiveError::BadHardlink { .. }),
        ),
        (
            "hardlink-to-nothing",
            with(
                "hardlink-none",
                vec![member(
                    &format!("{s}/h"),
                    b'1',
                    &format!("{s}/later"),
                    b"",
                    None,
                )],
            ),
            "later",
            |e| matches!(e, ArchiveError::BadHardlink { .. }),
        ),
        (
            "character-device",
            with(
                "chardev",
                vec![member(&format!("{s}/null"), b'3', "", b"", None)],
            ),
            "null",
            |e| matches!(e, ArchiveError::UnsupportedType { kind, .. } if kind == "character device"),
        ),
        (
            "block-device",
            with(
                "blockdev",
                vec![member(&format!("{s}/sda"), b'4', "", b"", None)],
            ),
            "sda",
            |e| matches!(e, ArchiveError::UnsupportedType { kind, .. } if kind == "block device"),
        ),
        (
            "fifo",
            with(
                "fifo",
                vec![member(&format!("{s}/pipe"), b'6', "", b"", None)],
            ),
            "pipe",
            |e| matches!(e, ArchiveError::UnsupportedType { kind, .. } if kind == "FIFO"),
        ),
        (
            "absurd-size",
            with(
                "absurd",
                vec![member(&format!("{s}/huge"), b'0', "", b"", Some(1 << 50))],
            ),
            "huge",
            |e| matches!(e, ArchiveError::TooLarge { size, .. } if *size == 1 << 50),
        ),
        (
            "duplicate",
            with("duplicate", vec![file(&format!("{s}/ok.txt"), b"again")]),
            "ok.txt",
            |e| matches!(e, ArchiveError::Duplicate { .. }),
        ),
        (
            "beneath-a-symlink",
            with(
                "beneath",
                vec![
                    member(&format!("{s}/dir"), b'2', "real", b"", None),
                    file(&format!("{s}/dir/file"), b"x"),
                ],
            ),
            "dir/file",
            |e| matches!(e, ArchiveError::BeneathNonDirectory { .. }),
        ),
        (
            "truncated-stream",
            full[..full.len() / 2].to_vec(),
            "",
            |e| matches!(e, ArchiveError::Read(_) | ArchiveError::ReadMember { .. }),
        ),
        // Names and link targets that are not UTF-8 are kept byte-exact, and every path rule holds
        // for their bytes: a climbing one is refused like any other, shown with `\xNN`.
        (
            "non-utf8-name-climbs",
            with(
                "non-utf8-name-climbs",
                vec![ustar_member(b"../\xff", b'0', "", b"x", None)],
            ),
            "../\\xff",
            |e| {
                matches!(
                    e,
                    ArchiveError::UnsafePath {
                        reason: RelPathError::ParentDir(_),
                        ..
                    }
                )
            },
        ),
        (
            "non-utf8-name-climbs-back",
            with(
                "non-utf8-name-climbs-back",
                vec![ustar_member(
                    &[format!("{s}/").as_bytes(), b"\xff/../../x"].concat(),
                    b'0',
                    "",
                    b"x",
                    None,
                )],
            ),
            "stage/\\xff/../../x",
            |e| {
                matches!(
                    e,
                    ArchiveError::UnsafePath {
                        reason: RelPathError::ParentDir(_),
                        ..
                    }
                )
            },
        ),
        (
            "non-utf8-link-target-climbs",
            with(
                "non-utf8-link-target-climbs",
                vec![ustar_member(
                    format!("{s}/l\u{e9}").as_bytes(),
                    b'2',
                    b"../../../../caf\xe9.txt",
                    b"",
                    None,
                )],
            ),
            "../../../../caf\\xe9.txt",
            |e| matches!(e, ArchiveError::LinkEscapes { .. }),
        ),
        (
            "not-zstd",
            b"this is not a zstd stream at all".to_vec(),
            "",
            |e| matches!(e, ArchiveError::Read(_)),
        ),
    ];

    for (name, bytes, needle, check) in cases {
        let path = tmp.path().join(format!("{name}.tar.zst"));
        std::fs::write(&path, &bytes).unwrap();
        let err = store.ingest_file(name, &path, None).expect_err(name);
        let StoreError::Archive { source, key } = &err else {
            panic!("{name}: expected an archive error, got: {err}");
        };
        assert_eq!(key, name);
        assert!(check(source), "{name}: wrong error: {source:?}");
        assert!(
            err.to_string().contains(needle),
            "{name}: message does not name `{needle}`: {err}"
        );
        assert_eq!(snapshot(&store), before, "{name}: the store changed");
        assert!(
            store.tree_for_key(name).unwrap().is_none(),
            "{name}: key recorded"
        );
    }
    assert!(index_problems(&store).is_empty());
    assert!(
        Path::new(&tmp.path().join("store/cas-v1/tmp"))
            .read_dir()
            .unwrap()
            .next()
            .is_none()
    );
}

/// Limits apply to what the archive declares: a member over `max_member_size` or a total over
/// `max_total_size` is refused before its bytes are stored.
#[test]
fn limits_are_configurable() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::default();
    config.limits.max_member_size = 1000;
    config.limits.max_total_size = 1500;
    config.limits.max_members = 5;
    let store = LocalStore::open(tmp.path().join("store"), config).unwrap();
    let s = STAGE;
    let cases: Vec<(&str, Vec<u8>, Check)> = vec![
        (
            "member",
            with("m", vec![file(&format!("{s}/big"), &[7u8; 1001])]),
            |e| matches!(e, ArchiveError::TooLarge { limit: 1000, .. }),
        ),
        (
            "total",
            with(
                "t",
                vec![
                    file(&format!("{s}/a"), &[1u8; 800]),
                    file(&format!("{s}/b"), &[2u8; 800]),
                ],
            ),
            |e| matches!(e, ArchiveError::TotalTooLarge { limit: 1500, .. }),
        ),
        (
            "members",
            with(
                "n",
                (0..6).map(|i| file(&format!("{s}/f{i}"), b"x")).collect(),
            ),
            |e| matches!(e, ArchiveError::TooManyMembers { limit: 5 }),
        ),
    ];
    for (name, bytes, check) in cases {
        let path = tmp.path().join(format!("{name}.tar.zst"));
        std::fs::write(&path, &bytes).unwrap();
        let err = store.ingest_file(name, &path, None).expect_err(name);
        let StoreError::Archive { source, .. } = &err else {
            panic!("{name}: {err}")
        };
        assert!(check(source), "{name}: wrong error: {source:?}");
    }
    assert!(blob_files(store.root()).is_empty());
}

/// A PAX global header (`g`) carries defaults, not a member: one before the manifest is skipped, not
/// mistaken for the first member.
#[test]
fn pax_global_header_before_the_manifest_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalStore::open(tmp.path().join("store"), StoreConfig::default()).unwrap();
    let record = b"21 comment=made by a\n";
    let mut members = vec![member("pax_global_header", b'g', "", record, None)];
    members.extend(prefix("pax"));
    let path = tmp.path().join("pax.tar.zst");
    std::fs::write(&path, archive(&members)).unwrap();
    let out = store.ingest_file("pax", &path, None).unwrap();
    let paths: Vec<&str> = out
        .tree
        .entries
        .iter()
        .map(|e| e.path.to_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["artifact_manifest.txt", "math-libs/evil/stage/ok.txt"]
    );
}
