//! TheRock's artifact archive format, both ways: reading a `.tar.zst`/`.tar.xz` into a [`Tree`] while
//! handing each file's bytes to a sink, and writing an artifact directory as a TheRock-compatible
//! archive with its `.sha256sum` sidecar.
//!
//! The format (FACTS §3): a tar stream, no top-level directory, whose first member is
//! `artifact_manifest.txt` (the stage relpaths, one per line); every other member lies strictly below
//! one of those relpaths. Files, directories, symlinks and hard links only.
//!
//! Reading is one streaming pass over a sync [`Read`]: the compressed bytes are teed through SHA-256
//! (for the sidecar check) on their way into the decompressor, so the archive is never held in memory
//! and never read twice. Every member is checked before its bytes are used, and a hostile member
//! (absolute or `..` path, link escaping the root, device or FIFO, outside the manifest, absurd size,
//! duplicate, beneath a non-directory) fails the whole archive with an [`ArchiveError`] naming it.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use cairn_fingerprint::artifact_dir::{self, ArtifactDirError};
use cairn_fingerprint::tree::{
    ARTIFACT_MANIFEST, EntryKind, LinkTarget, RelPath, RelPathError, Tree, TreeEntry, escape_bytes,
};
use cairn_fingerprint::{Blake3, Compression, Sha256};
use sha2::Digest as _;

use crate::buildtree::Dir;

/// Why an archive was refused, or could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The compressed stream or a tar header could not be read (corrupt, truncated, not a tar).
    #[error("reading archive: {0}")]
    Read(io::Error),
    /// A member's content could not be read (truncated or corrupt stream).
    #[error("reading member `{entry}`: {source}")]
    ReadMember {
        /// The member.
        entry: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A member's content was read but could not be stored.
    #[error("storing member `{entry}`: {source}")]
    Store {
        /// The member.
        entry: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The archive's SHA-256 is not the one the caller expected (its `.sha256sum` sidecar or record).
    #[error("sha256 mismatch: expected {expected}, computed {actual}")]
    Sha256Mismatch {
        /// The digest the caller trusts.
        expected: Sha256,
        /// What we computed over the bytes we read.
        actual: Sha256,
    },
    /// The archive has no members at all.
    #[error("archive is empty; `artifact_manifest.txt` must be its first member")]
    Empty,
    /// The first member is not `artifact_manifest.txt`.
    #[error("first member is `{first}`; `artifact_manifest.txt` must come first")]
    ManifestNotFirst {
        /// What came first.
        first: String,
    },
    /// `artifact_manifest.txt` is not UTF-8 or lists an unsafe path.
    #[error("`artifact_manifest.txt` line `{line}` is not a safe relative path: {reason}")]
    BadManifest {
        /// The offending line.
        line: String,
        /// Why.
        reason: String,
    },
    /// A member's path is absolute, contains `..`, or is otherwise unsafe.
    #[error("member `{entry}` has an unsafe path: {reason}")]
    UnsafePath {
        /// The member as named in the archive.
        entry: String,
        /// Why.
        reason: RelPathError,
    },
    /// A member lies outside every relpath `artifact_manifest.txt` lists.
    #[error("member `{entry}` is not under any path listed in `artifact_manifest.txt`")]
    NotInManifest {
        /// The member.
        entry: String,
    },
    /// A symlink whose target resolves outside the archive root.
    #[error("symlink `{entry}` -> `{target}` escapes the archive root")]
    LinkEscapes {
        /// The symlink.
        entry: String,
        /// Its target as written.
        target: String,
    },
    /// A hard link that does not name an earlier regular file of the archive.
    #[error(
        "hard link `{entry}` -> `{target}` does not name an earlier regular file in the archive"
    )]
    BadHardlink {
        /// The hard link.
        entry: String,
        /// Its target as written.
        target: String,
    },
    /// A device, FIFO, sparse file or unknown member type.
    #[error("member `{entry}` is a {kind}, which artifacts may not contain")]
    UnsupportedType {
        /// The member.
        entry: String,
        /// What it is.
        kind: String,
    },
    /// A member declares more bytes than the limit.
    #[error("member `{entry}` declares {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The member.
        entry: String,
        /// Its declared size.
        size: u64,
        /// The limit ([`Limits`]).
        limit: u64,
    },
    /// The members together declare more bytes than the limit.
    #[error("archive content exceeds the limit of {limit} bytes at member `{entry}`")]
    TotalTooLarge {
        /// The member that crossed the limit.
        entry: String,
        /// The limit.
        limit: u64,
    },
    /// More members than the limit.
    #[error("archive has more than {limit} members")]
    TooManyMembers {
        /// The limit.
        limit: u64,
    },
    /// The same path appears twice.
    #[error("member `{entry}` appears more than once")]
    Duplicate {
        /// The member.
        entry: String,
    },
    /// A member lies beneath a file or symlink, so writing it would go through a link.
    #[error("member `{entry}` lies beneath `{ancestor}`, which is not a directory")]
    BeneathNonDirectory {
        /// The member.
        entry: String,
        /// The non-directory ancestor.
        ancestor: String,
    },
    /// Writing an archive: an artifact directory or output file could not be read or written.
    #[error("`{path}`: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Bounds on what an archive may declare, so a hostile header cannot make the store allocate, write or
/// wait without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single member (default 64 GiB; TheRock's largest files are a few GiB).
    pub max_member_size: u64,
    /// Largest sum of member sizes (default 1 TiB; the largest known archive holds ~25 GB).
    pub max_total_size: u64,
    /// Most members (default 4 million).
    pub max_members: u64,
    /// Largest `artifact_manifest.txt` (default 1 MiB; real ones are a few hundred bytes).
    pub max_manifest_size: u64,
    /// Largest zstd window, as a power of two (default 31: archives written with `--long`). The
    /// decoder allocates up to this window per ingest whatever the archive's size, so a 174-byte
    /// hostile frame can claim 2 GiB (found by the `tar_ingest` fuzzer); 27 (128 MiB, zstd's own
    /// default) bounds that where long-window archives are not expected.
    pub max_zstd_window_log: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_member_size: 64 << 30,
            max_total_size: 1 << 40,
            max_members: 4_000_000,
            max_manifest_size: 1 << 20,
            max_zstd_window_log: 31,
        }
    }
}

/// What reading an archive produced.
#[derive(Debug, Clone)]
pub struct ReadSummary {
    /// SHA-256 of the compressed bytes (what the `.sha256sum` sidecar names).
    pub sha256: Sha256,
    /// Length of the compressed stream.
    pub compressed_bytes: u64,
    /// Sum of regular files' sizes.
    pub uncompressed_bytes: u64,
    /// The archive's content.
    pub tree: Tree,
}

/// Receives each regular file's bytes: `(path, content, size) -> BLAKE3 of the content`.
///
/// It must read exactly `size` bytes; an error of its own is reported as [`ArchiveError::Store`], an
/// error or early end of `content` as [`ArchiveError::ReadMember`].
pub type FileSink<'a> = dyn FnMut(&RelPath, &mut dyn Read, u64) -> io::Result<Blake3> + 'a;

/// Read one archive from `src` in a single pass: validate every member, hand file contents to `sink`,
/// and return the tree with the archive's SHA-256. `src` is read to its end, so the digest covers every
/// byte even when the tar stream ends before the compressed stream does.
///
/// With an `expected` digest the archive is refused ([`ArchiveError::Sha256Mismatch`]) unless its
/// SHA-256 is that one, and the codec's own check of the decoded bytes (xz's CRC64 per block) is
/// skipped: the SHA-256 already covers every byte the decoder reads, so each byte is hashed once.
/// The caller must keep nothing `sink` received until this returns `Ok` (the store stages blobs and
/// publishes them after). Without one, the codec's check is the only integrity check and is kept.
pub fn read_archive(
    src: impl Read,
    compression: Compression,
    expected: Option<Sha256>,
    limits: &Limits,
    sink: &mut FileSink<'_>,
) -> Result<ReadSummary, ArchiveError> {
    let mut tee = HashingReader::new(src);
    let (tree, uncompressed_bytes) = {
        let mut decoder: Box<dyn Read + '_> = match compression {
            Compression::Zstd => {
                let mut d =
                    zstd::stream::read::Decoder::new(&mut tee).map_err(ArchiveError::Read)?;
                // Accept archives written with `--long` (windows up to 2 GiB by default) as the zstd
                // CLI does when told; zstd's own default limit (128 MiB) would refuse them.
                d.window_log_max(limits.max_zstd_window_log)
                    .map_err(ArchiveError::Read)?;
                Box::new(d)
            }
            Compression::Xz => {
                let stream = xz_decoder(XzCheck::for_expected(expected.as_ref()))
                    .map_err(|e| ArchiveError::Read(e.into()))?;
                Box::new(liblzma::read::XzDecoder::new_stream(&mut tee, stream))
            }
        };
        let read = read_tar(&mut decoder, limits, sink)?;
        // Decode to the end of the compressed stream: the zstd frame checksum and the xz check and
        // index sit after the tar's last block, and only a decoder that reaches them verifies them.
        io::copy(&mut decoder, &mut io::sink()).map_err(ArchiveError::Read)?;
        read
    };
    io::copy(&mut tee, &mut io::sink()).map_err(ArchiveError::Read)?;
    let sha256 = Sha256(tee.hasher.finalize().into());
    if let Some(expected) = expected
        && expected != sha256
    {
        return Err(ArchiveError::Sha256Mismatch {
            expected,
            actual: sha256,
        });
    }
    Ok(ReadSummary {
        sha256,
        compressed_bytes: tee.count,
        uncompressed_bytes,
        tree,
    })
}

/// Whether the xz decoder verifies each block's check (CRC64 in TheRock's archives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XzCheck {
    Verify,
    /// The archive's SHA-256 is compared with a trusted digest instead (see [`read_archive`]).
    CoveredBySha256,
}

impl XzCheck {
    fn for_expected(expected: Option<&Sha256>) -> Self {
        match expected {
            Some(_) => XzCheck::CoveredBySha256,
            None => XzCheck::Verify,
        }
    }
}

/// A multi-threaded xz decoder: it decodes blocks in parallel when the stream has several blocks with
/// sizes in their headers (what multi-threaded `xz -T` writes) and falls back to one thread otherwise
/// (what Python's `tarfile` writes).
fn xz_decoder(check: XzCheck) -> Result<liblzma::stream::Stream, liblzma::stream::Error> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let flags = match check {
        XzCheck::Verify => 0,
        XzCheck::CoveredBySha256 => liblzma::stream::IGNORE_CHECK,
    };
    liblzma::stream::MtStreamBuilder::new()
        .threads(threads)
        .memlimit_threading(1 << 30)
        .memlimit_stop(u64::MAX)
        .flags(flags)
        .decoder()
}

/// A member name for messages: names are bytes, shown with `\xNN` where they are not UTF-8.
fn shown(bytes: &[u8]) -> String {
    escape_bytes(bytes).to_string()
}

fn read_tar(
    decoded: impl Read,
    limits: &Limits,
    sink: &mut FileSink<'_>,
) -> Result<(Tree, u64), ArchiveError> {
    let mut archive = tar::Archive::new(decoded);
    // PAX global headers ('g') carry defaults, not members; `tar` yields them as entries.
    let mut entries_iter = archive.entries().map_err(ArchiveError::Read)?.filter(|e| {
        !e.as_ref()
            .is_ok_and(|e| e.header().entry_type().is_pax_global_extensions())
    });

    // The first member: the manifest.
    let mut first = match entries_iter.next() {
        None => return Err(ArchiveError::Empty),
        Some(e) => e.map_err(ArchiveError::Read)?,
    };
    let first_name = shown(&first.path_bytes());
    let is_manifest = first.header().entry_type().is_file()
        && RelPath::from_bytes(&first.path_bytes())
            .is_ok_and(|p| p.as_bytes() == ARTIFACT_MANIFEST.as_bytes());
    if !is_manifest {
        return Err(ArchiveError::ManifestNotFirst { first: first_name });
    }
    let manifest_size = first.size();
    if manifest_size > limits.max_manifest_size {
        return Err(ArchiveError::TooLarge {
            entry: first_name,
            size: manifest_size,
            limit: limits.max_manifest_size,
        });
    }
    let mut manifest_bytes = Vec::with_capacity(manifest_size as usize);
    first
        .read_to_end(&mut manifest_bytes)
        .map_err(|source| ArchiveError::ReadMember {
            entry: first_name.clone(),
            source,
        })?;
    let manifest = parse_manifest(&manifest_bytes)?;
    let manifest_path = RelPath::new(ARTIFACT_MANIFEST).expect("a constant safe path");
    let manifest_mode = first.header().mode().map_err(ArchiveError::Read)? & 0o7777;
    let digest = sink(
        &manifest_path,
        &mut &manifest_bytes[..],
        manifest_bytes.len() as u64,
    )
    .map_err(|source| ArchiveError::Store {
        entry: first_name.clone(),
        source,
    })?;
    drop(first);

    let mut entries = vec![TreeEntry {
        path: manifest_path.clone(),
        kind: EntryKind::File,
        mode: manifest_mode,
        size: manifest_bytes.len() as u64,
        blake3: Some(digest),
        link_target: None,
    }];
    let mut seen: HashSet<RelPath> = HashSet::from([manifest_path]);
    let mut files: HashSet<RelPath> = HashSet::new();
    let mut total = manifest_bytes.len() as u64;

    for entry in entries_iter {
        let mut entry = entry.map_err(ArchiveError::Read)?;
        if entries.len() as u64 >= limits.max_members {
            return Err(ArchiveError::TooManyMembers {
                limit: limits.max_members,
            });
        }
        // Names are bytes, kept exactly (UTF-8 or not); `name` shows them in messages.
        let name_bytes = entry.path_bytes().into_owned();
        let name = shown(&name_bytes);
        let path = RelPath::from_bytes(&name_bytes).map_err(|reason| ArchiveError::UnsafePath {
            entry: name.clone(),
            reason,
        })?;
        if !manifest.iter().any(|r| path.starts_with(r) && &path != r) {
            return Err(ArchiveError::NotInManifest { entry: name });
        }
        if !seen.insert(path.clone()) {
            return Err(ArchiveError::Duplicate { entry: name });
        }
        let header = entry.header();
        let mode = header.mode().map_err(ArchiveError::Read)? & 0o7777;
        let kind = header.entry_type();
        let tree_entry = if kind.is_file() || kind.is_contiguous() {
            let size = entry.size();
            if size > limits.max_member_size {
                return Err(ArchiveError::TooLarge {
                    entry: name,
                    size,
                    limit: limits.max_member_size,
                });
            }
            total = total.saturating_add(size);
            if total > limits.max_total_size {
                return Err(ArchiveError::TotalTooLarge {
                    entry: name,
                    limit: limits.max_total_size,
                });
            }
            let mut tracked = TrackingReader {
                inner: &mut entry,
                count: 0,
                failed: false,
            };
            let digest = match sink(&path, &mut tracked, size) {
                Ok(d) => d,
                Err(source) if tracked.failed || tracked.count < size => {
                    return Err(ArchiveError::ReadMember {
                        entry: name,
                        source,
                    });
                }
                Err(source) => {
                    return Err(ArchiveError::Store {
                        entry: name,
                        source,
                    });
                }
            };
            files.insert(path.clone());
            TreeEntry {
                path,
                kind: EntryKind::File,
                mode,
                size,
                blake3: Some(digest),
                link_target: None,
            }
        } else if kind.is_dir() {
            TreeEntry {
                path,
                kind: EntryKind::Dir,
                mode,
                size: 0,
                blake3: None,
                link_target: None,
            }
        } else if kind.is_symlink() {
            let target = link_target(&entry);
            let checked = LinkTarget::from_bytes(&target)
                .ok()
                .filter(|t| path.resolve_link(t.as_bytes()).is_some());
            let Some(target) = checked else {
                return Err(ArchiveError::LinkEscapes {
                    entry: name,
                    target: shown(&target),
                });
            };
            TreeEntry {
                path,
                kind: EntryKind::Symlink,
                mode,
                size: 0,
                blake3: None,
                link_target: Some(target),
            }
        } else if kind.is_hard_link() {
            let target = link_target(&entry);
            let resolved = RelPath::from_bytes(&target)
                .ok()
                .filter(|t| files.contains(t));
            let Some(resolved) = resolved else {
                return Err(ArchiveError::BadHardlink {
                    entry: name,
                    target: shown(&target),
                });
            };
            TreeEntry {
                path,
                kind: EntryKind::Hardlink,
                mode,
                size: 0,
                blake3: None,
                link_target: Some(LinkTarget::from(&resolved)),
            }
        } else {
            let what = if kind.is_character_special() {
                "character device".to_string()
            } else if kind.is_block_special() {
                "block device".to_string()
            } else if kind.is_fifo() {
                "FIFO".to_string()
            } else if kind.is_gnu_sparse() {
                "sparse file".to_string()
            } else {
                format!("tar entry of type `{}`", kind.as_byte() as char)
            };
            return Err(ArchiveError::UnsupportedType {
                entry: name,
                kind: what,
            });
        };
        entries.push(tree_entry);
    }

    // A member beneath a symlink or file would be written through the link on extraction.
    let kinds: HashMap<&[u8], EntryKind> = entries
        .iter()
        .map(|e| (e.path.as_bytes(), e.kind))
        .collect();
    for e in &entries {
        let mut p = e.path.as_bytes();
        while let Some(slash) = p.iter().rposition(|b| *b == b'/') {
            let parent = &p[..slash];
            if let Some(kind) = kinds.get(parent)
                && *kind != EntryKind::Dir
            {
                return Err(ArchiveError::BeneathNonDirectory {
                    entry: e.path.to_string(),
                    ancestor: shown(parent),
                });
            }
            p = parent;
        }
    }

    let uncompressed = entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .map(|e| e.size)
        .sum();
    Ok((Tree::new(manifest, entries), uncompressed))
}

/// A link member's target, its bytes as written: UTF-8 or not, it is kept exactly (a target
/// rewritten with U+FFFD would point somewhere else).
fn link_target<R: Read>(entry: &tar::Entry<'_, R>) -> Vec<u8> {
    entry
        .link_name_bytes()
        .map(|b| b.into_owned())
        .unwrap_or_default()
}

/// Parse `artifact_manifest.txt` (`cairn_fingerprint::artifact_dir::parse_manifest`).
pub fn parse_manifest(bytes: &[u8]) -> Result<Vec<RelPath>, ArchiveError> {
    artifact_dir::parse_manifest(bytes).map_err(ArchiveError::from)
}

/// Tees everything read through SHA-256 and counts it.
struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    count: u64,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: sha2::Sha256::new(),
            count: 0,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Remembers whether the member's reader failed, so a sink error can be attributed to reading or to
/// storing.
struct TrackingReader<'a> {
    inner: &'a mut dyn Read,
    count: u64,
    failed: bool,
}

impl Read for TrackingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.count += n as u64;
                Ok(n)
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Writing

/// What [`create_archive`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// SHA-256 of the archive file.
    pub sha256: Sha256,
    /// Size of the archive file.
    pub compressed_size: u64,
    /// Sum of the regular files' sizes (TheRock's `uncompressed_size`).
    pub uncompressed_size: u64,
    /// Number of regular files, `artifact_manifest.txt` included.
    pub files: u64,
}

/// How [`create_archive_with`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateOptions {
    /// zstd or xz.
    pub compression: Compression,
    /// Compression level (zstd 1–22, xz 0–9).
    pub level: u32,
    /// Write the members after the manifest in reverse path order (tests: a different member order
    /// must not change the tree digest).
    pub reverse_order: bool,
}

impl CreateOptions {
    /// TheRock's defaults: zstd level 3, xz preset 6.
    pub fn new(compression: Compression) -> CreateOptions {
        CreateOptions {
            compression,
            level: compression.default_level(),
            reverse_order: false,
        }
    }
}

/// Write `artifact_dir` (an exploded artifact: `artifact_manifest.txt` plus the relpaths it lists) as
/// a TheRock-compatible archive at `out_path`: manifest first, no top-level directory, members in path
/// order. The file is written to a temp name next to `out_path`, fsynced and renamed.
pub fn create_archive(
    artifact_dir: &Path,
    out_path: &Path,
    compression: Compression,
    level: u32,
) -> Result<ArchiveInfo, ArchiveError> {
    create_archive_with(
        artifact_dir,
        out_path,
        &CreateOptions {
            compression,
            level,
            reverse_order: false,
        },
    )
}

/// [`create_archive`] with all options. `artifact_dir` itself must be a directory, not a symlink to
/// one; nothing below it is followed either (see [`write_archive`]).
pub fn create_archive_with(
    artifact_dir: &Path,
    out_path: &Path,
    opts: &CreateOptions,
) -> Result<ArchiveInfo, ArchiveError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ArchiveError::Io { path, source }
    };
    let dir = Dir::open(artifact_dir).map_err(io_err(artifact_dir))?;
    let out_dir = out_path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".cairn-archive-")
        .tempfile_in(out_dir)
        .map_err(io_err(out_dir))?;
    let info = write_archive(&dir, tmp.as_file(), opts)?;
    tmp.as_file().sync_all().map_err(io_err(out_path))?;
    tmp.persist(out_path).map_err(|e| ArchiveError::Io {
        path: out_path.to_path_buf(),
        source: e.error,
    })?;
    Ok(info)
}

/// Longest `artifact_manifest.txt` publish reads.
pub const MAX_ARTIFACT_MANIFEST: u64 = artifact_dir::MAX_ARTIFACT_MANIFEST;

/// Write the artifact directory `artifact` as an archive into `out` (from its current position):
/// TheRock's tar stream (`cairn_fingerprint::artifact_dir::write_artifact_tar`, which reads every
/// path without following symlinks) through a [`Compressor`]. The caller chooses whose rights the
/// reads use (`buildtree::par_map_as`) and where `out` lives.
pub fn write_archive(
    artifact: &Dir,
    out: &File,
    opts: &CreateOptions,
) -> Result<ArchiveInfo, ArchiveError> {
    let compressor = Compressor::new(out, opts, artifact.path())?;
    let (compressor, summary) =
        artifact_dir::write_artifact_tar(artifact, compressor, opts.reverse_order)?;
    let (sha256, compressed_size) = compressor.finish()?;
    Ok(ArchiveInfo {
        sha256,
        compressed_size,
        uncompressed_size: summary.uncompressed_size,
        files: summary.files,
    })
}

/// Compresses a tar stream into a file as publish does (zstd with its frame checksum, or
/// multi-threaded xz with CRC64, at the options' level), hashing and counting the compressed bytes:
/// the same uncompressed stream always gives the same archive, whether cairnd read the artifact dir
/// ([`write_archive`]) or a client streamed it.
pub struct Compressor {
    encoder: Box<dyn FinishWrite>,
    path: PathBuf,
}

impl Compressor {
    /// A compressor writing into `out` from its current position; `path` names it in errors.
    pub fn new(out: &File, opts: &CreateOptions, path: &Path) -> Result<Compressor, ArchiveError> {
        let io_err = |source| ArchiveError::Io {
            path: path.to_path_buf(),
            source,
        };
        let counting = HashingWriter {
            inner: io::BufWriter::with_capacity(1 << 20, out.try_clone().map_err(io_err)?),
            hasher: sha2::Sha256::new(),
            count: 0,
        };
        let encoder: Box<dyn FinishWrite> = match opts.compression {
            Compression::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(counting, opts.level as i32)
                    .map_err(io_err)?;
                // The frame checksum (as the `zstd` CLI writes by default) lets a reader without the
                // sidecar still detect corrupt bytes: a flipped byte in a raw block decodes silently.
                encoder.include_checksum(true).map_err(io_err)?;
                Box::new(encoder)
            }
            Compression::Xz => {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
                let stream = liblzma::stream::MtStreamBuilder::new()
                    .preset(opts.level)
                    .threads(threads)
                    .check(liblzma::stream::Check::Crc64)
                    .encoder()
                    .map_err(|e| io_err(e.into()))?;
                Box::new(liblzma::write::XzEncoder::new_stream(counting, stream))
            }
        };
        Ok(Compressor {
            encoder,
            path: path.to_path_buf(),
        })
    }

    /// End the compressed stream and flush it: the archive's SHA-256 and size.
    pub fn finish(self) -> Result<(Sha256, u64), ArchiveError> {
        let path = self.path;
        let counting = self
            .encoder
            .finish_write()
            .map_err(|source| ArchiveError::Io {
                path: path.clone(),
                source,
            })?;
        let sha256 = Sha256(counting.hasher.finalize().into());
        let compressed_size = counting.count;
        counting.inner.into_inner().map_err(|e| ArchiveError::Io {
            path,
            source: e.into_error(),
        })?;
        Ok((sha256, compressed_size))
    }
}

impl Write for Compressor {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.encoder.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.encoder.flush()
    }
}

impl From<ArtifactDirError> for ArchiveError {
    fn from(e: ArtifactDirError) -> ArchiveError {
        match e {
            ArtifactDirError::BadManifest { line, reason } => {
                ArchiveError::BadManifest { line, reason }
            }
            ArtifactDirError::UnsupportedType { entry, kind } => {
                ArchiveError::UnsupportedType { entry, kind }
            }
            // Listing errors (`write_artifact_tar` never returns them), named by their path.
            ArtifactDirError::SymlinkedArtifact { ref path, .. } => ArchiveError::Io {
                path: path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
            },
            ArtifactDirError::NoneWanted { ref artifacts, .. } => ArchiveError::Io {
                path: artifacts.clone(),
                source: io::Error::new(io::ErrorKind::NotFound, e.to_string()),
            },
            ArtifactDirError::Io { path, source } => ArchiveError::Io { path, source },
        }
    }
}

/// Counts and hashes the compressed bytes on their way to the file.
struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// An encoder that can be finished through a trait object.
trait FinishWrite: Write {
    fn finish_write(self: Box<Self>) -> io::Result<HashingWriter<io::BufWriter<File>>>;
}

impl FinishWrite for zstd::stream::write::Encoder<'static, HashingWriter<io::BufWriter<File>>> {
    fn finish_write(self: Box<Self>) -> io::Result<HashingWriter<io::BufWriter<File>>> {
        (*self).finish()
    }
}

impl FinishWrite for liblzma::write::XzEncoder<HashingWriter<io::BufWriter<File>>> {
    fn finish_write(self: Box<Self>) -> io::Result<HashingWriter<io::BufWriter<File>>> {
        (*self).finish()
    }
}

// ---------------------------------------------------------------------------------------------------
// Sidecars

/// `{archive}.sha256sum`, the sidecar's path.
pub fn sha256sum_path(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_owned();
    name.push(".sha256sum");
    PathBuf::from(name)
}

/// Write the `.sha256sum` sidecar next to `archive`: bare `hexdigest\n`, as TheRock's `write_hash`.
pub fn write_sha256sum(archive: &Path, sha256: &Sha256) -> io::Result<PathBuf> {
    let path = sha256sum_path(archive);
    fs::write(&path, format!("{sha256}\n"))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecars_are_bare_digests_that_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("blas_lib_generic.tar.zst");
        let digest: Sha256 = "ab".repeat(32).parse().unwrap();
        let path = write_sha256sum(&archive, &digest).unwrap();
        assert_eq!(path, dir.path().join("blas_lib_generic.tar.zst.sha256sum"));
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{digest}\n"));
        // What is written is what the one sidecar parser reads back.
        assert_eq!(
            cairn_fingerprint::names::parse_sha256sum(&fs::read_to_string(&path).unwrap()).unwrap(),
            digest
        );
    }
}
