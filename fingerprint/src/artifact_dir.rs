//! A build dir's artifacts as publish reads them, written once for `cairnd` and `cairn`: which
//! entries of `artifacts/` are published ([`list_artifacts`]), TheRock's `artifact_manifest.txt`
//! ([`parse_manifest`]), and an artifact dir as an uncompressed tar stream ([`write_artifact_tar`]),
//! every path read through [`Dir`] (descriptor-relative, no symlink followed).
//!
//! `cairnd` compresses this stream into the archive it publishes when it reads the build dir itself
//! (a Unix-socket publish, with the caller's rights); `cairn` writes the same stream onto the wire when
//! it publishes over TCP (`PublishStream`), and `cairnd` compresses it the same way, so the archive is
//! byte-identical whichever way its bytes came.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::names::{ArchiveName, ArtifactName, Compression};
use crate::nofollow::Dir;
use crate::tree::{ARTIFACT_MANIFEST, RelPath, escape_bytes};

/// Why an artifact dir could not be listed or written as a tar stream.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactDirError {
    /// `artifact_manifest.txt` is not UTF-8 or lists an unsafe path. (Names below its relpaths may
    /// be any bytes: they are archived byte-exact.)
    #[error("`artifact_manifest.txt` line `{line}` is not a safe relative path: {reason}")]
    BadManifest {
        /// The offending line.
        line: String,
        /// Why.
        reason: String,
    },
    /// A device, FIFO or socket.
    #[error("member `{entry}` is a {kind}, which artifacts may not contain")]
    UnsupportedType {
        /// The member.
        entry: String,
        /// What it is.
        kind: String,
    },
    /// A wanted artifact dir or pre-compressed archive is a symlink.
    #[error(
        "artifact {what} `{path}` is a symlink; publish never follows symlinks in the build dir: \
         make it a real {real}"
    )]
    SymlinkedArtifact {
        /// `dir` or `archive`.
        what: &'static str,
        /// The entry.
        path: PathBuf,
        /// `directory` or `file`.
        real: &'static str,
    },
    /// No entry of `artifacts/` is one of the artifacts to publish.
    #[error(
        "no artifact directory under `{artifacts}` matches the {wanted} artifact(s) to publish"
    )]
    NoneWanted {
        /// The `artifacts/` dir.
        artifacts: PathBuf,
        /// How many artifact names were wanted.
        wanted: usize,
    },
    /// A file or directory could not be read, or the stream could not be written.
    #[error("`{path}`: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Longest `artifact_manifest.txt` publish reads.
pub const MAX_ARTIFACT_MANIFEST: u64 = 1 << 20;

/// Parse `artifact_manifest.txt`: one relpath per line, empty lines skipped (as TheRock's readers do).
pub fn parse_manifest(bytes: &[u8]) -> Result<Vec<RelPath>, ArtifactDirError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ArtifactDirError::BadManifest {
        line: String::from_utf8_lossy(bytes)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        reason: "not UTF-8".into(),
    })?;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let path = RelPath::new(line).map_err(|e| ArtifactDirError::BadManifest {
            line: line.to_string(),
            reason: e.to_string(),
        })?;
        out.push(path);
    }
    Ok(out)
}

/// Where an artifact to publish comes from in `{build_dir}/artifacts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactSource {
    /// `{name}_{component}_{family}/`: archived by the publisher.
    Dir,
    /// A pre-compressed `{name}_{component}_{family}.tar.zst|.tar.xz` (as TheRock's push takes
    /// them): published as it is, after ingest checked it.
    Archive(Compression),
}

/// One entry of `artifacts/` to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedArtifact {
    /// The entry's file name in `artifacts/`.
    pub entry: OsString,
    /// The artifact.
    pub name: ArtifactName,
    /// Dir or pre-compressed archive.
    pub source: ArtifactSource,
}

/// The artifact dirs and pre-compressed archives of `artifacts` whose artifact name part `wanted`
/// accepts, sorted by artifact, one per artifact: a directory wins over an archive of the same
/// artifact (it is what the build just wrote); of two archives, `.tar.zst` wins, as when fetching.
/// A wanted entry that is a symlink is refused; other entries are ignored.
pub fn list_artifacts(
    artifacts: &Dir,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Vec<ListedArtifact>, ArtifactDirError> {
    let io_err = |path: PathBuf| move |source| ArtifactDirError::Io { path, source };
    let mut found: BTreeMap<String, ListedArtifact> = BTreeMap::new();
    for entry in artifacts
        .names()
        .map_err(io_err(artifacts.path().to_path_buf()))?
    {
        let Some(file_name) = entry.to_str() else {
            continue;
        };
        // `{name}_{component}_{family}/`, or TheRock's pre-compressed `….tar.zst|.tar.xz`.
        let (name, archive) = match ArchiveName::parse(file_name) {
            Ok(a) => (a.artifact, Some(a.compression)),
            Err(_) => match ArtifactName::parse(file_name) {
                Ok(n) => (n, None),
                Err(_) => continue,
            },
        };
        if !wanted(&name.name) {
            continue;
        }
        let path = artifacts.path().join(&entry);
        let meta = artifacts.metadata(&entry).map_err(io_err(path.clone()))?;
        if meta.file_type().is_symlink() {
            let (what, real) = match archive {
                Some(_) => ("archive", "file"),
                None => ("dir", "directory"),
            };
            return Err(ArtifactDirError::SymlinkedArtifact { what, path, real });
        }
        let source = match archive {
            None if meta.is_dir() => ArtifactSource::Dir,
            Some(c) if meta.is_file() => ArtifactSource::Archive(c),
            _ => continue,
        };
        let better = match (found.get(&name.to_string()).map(|f| f.source), source) {
            (None, _) => true,
            (Some(ArtifactSource::Dir), _) => false,
            (Some(ArtifactSource::Archive(_)), ArtifactSource::Dir) => true,
            (Some(ArtifactSource::Archive(old)), ArtifactSource::Archive(new)) => {
                new.preferred_over(old)
            }
        };
        if better {
            found.insert(
                name.to_string(),
                ListedArtifact {
                    entry: entry.clone(),
                    name,
                    source,
                },
            );
        }
    }
    Ok(found.into_values().collect())
}

/// What [`write_artifact_tar`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TarSummary {
    /// Number of regular files, `artifact_manifest.txt` included.
    pub files: u64,
    /// Sum of the regular files' sizes (TheRock's `uncompressed_size`).
    pub uncompressed_size: u64,
}

/// Write the artifact dir `artifact` (`artifact_manifest.txt` plus the relpaths it lists) into `out`
/// as TheRock's uncompressed tar stream: the manifest first, no top-level directory, members in
/// path order (reversed after the manifest with `reverse_order`, for tests), GNU headers with mode
/// and mtime but no owner (the same tree gives the same bytes on every machine); a second path to an
/// inode already written becomes a hard link to the first, as Python's `tarfile` does. Returns `out`
/// after the end-of-archive blocks.
///
/// Every path is opened relative to `artifact` without following symlinks ([`Dir`]): a symlink in
/// the artifact is written as a symlink, a manifest relpath that is (or passes through) a symlink is
/// refused, and only regular files are read.
pub fn write_artifact_tar<W: Write>(
    artifact: &Dir,
    out: W,
    reverse_order: bool,
) -> Result<(W, TarSummary), ArtifactDirError> {
    let io_err = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| ArtifactDirError::Io { path, source }
    };
    let out_path = artifact.path();
    let manifest_file = artifact.path().join(ARTIFACT_MANIFEST);
    let manifest_handle = artifact
        .open_file(OsStr::new(ARTIFACT_MANIFEST))
        .map_err(io_err(&manifest_file))?;
    let manifest_meta = manifest_handle.metadata().map_err(io_err(&manifest_file))?;
    let mut manifest_bytes = Vec::new();
    manifest_handle
        .take(MAX_ARTIFACT_MANIFEST + 1)
        .read_to_end(&mut manifest_bytes)
        .map_err(io_err(&manifest_file))?;
    if manifest_bytes.len() as u64 > MAX_ARTIFACT_MANIFEST {
        return Err(ArtifactDirError::Io {
            path: manifest_file,
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("longer than {MAX_ARTIFACT_MANIFEST} bytes"),
            ),
        });
    }
    let manifest = parse_manifest(&manifest_bytes)?;

    // Collect members first (small: paths and metadata) so the order can be chosen.
    // Arcnames are bytes: a name that is not UTF-8 is archived exactly as the file system has it.
    let mut members: Vec<(Vec<u8>, fs::Metadata)> = Vec::new();
    for relpath in &manifest {
        let dir = match artifact.open_rel(relpath.as_bytes()) {
            Ok(dir) => dir,
            // A relpath this artifact does not have (or that is a file) contributes nothing.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                continue;
            }
            Err(e) => return Err(io_err(&artifact.path().join(relpath.to_path()))(e)),
        };
        walk(&dir, relpath.as_bytes(), &mut members)?;
    }
    if reverse_order {
        members.reverse();
    }

    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);

    let mut files = 0u64;
    let mut uncompressed = 0u64;
    let mut header = header_for(
        &manifest_meta,
        tar::EntryType::Regular,
        manifest_bytes.len() as u64,
    );
    builder
        .append_data(&mut header, ARTIFACT_MANIFEST, &manifest_bytes[..])
        .map_err(io_err(out_path))?;
    files += 1;
    uncompressed += manifest_bytes.len() as u64;

    // Hard links: a second path to an inode already written becomes a link to the first arcname.
    let mut inodes: HashMap<(u64, u64), &Path> = HashMap::new();
    // Members come in path order, so consecutive files mostly share their parent: keep it open.
    let mut parent: Option<(&[u8], Dir)> = None;
    for (arcname_bytes, meta) in &members {
        let arcname = Path::new(OsStr::from_bytes(arcname_bytes));
        let path = &artifact.path().join(arcname);
        let slash = arcname_bytes
            .iter()
            .rposition(|b| *b == b'/')
            .expect("members lie below a relpath");
        let (parent_rel, name) = (&arcname_bytes[..slash], &arcname_bytes[slash + 1..]);
        let name = OsStr::from_bytes(name);
        if !meta.file_type().is_dir() && parent.as_ref().is_none_or(|(rel, _)| *rel != parent_rel) {
            let dir = artifact.open_rel(parent_rel).map_err(io_err(path))?;
            parent = Some((parent_rel, dir));
        }
        let ft = meta.file_type();
        if ft.is_dir() {
            let mut h = header_for(meta, tar::EntryType::Directory, 0);
            builder
                .append_data(&mut h, arcname, io::empty())
                .map_err(io_err(path))?;
        } else if ft.is_symlink() {
            let (_, dir) = parent.as_ref().expect("opened above");
            // The target's bytes as they are, UTF-8 or not.
            let target = dir.read_link(name).map_err(io_err(path))?;
            let mut h = header_for(meta, tar::EntryType::Symlink, 0);
            builder
                .append_link(&mut h, arcname, &target)
                .map_err(io_err(path))?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = inodes.get(&(meta.dev(), meta.ino())) {
                    let mut h = header_for(meta, tar::EntryType::Link, 0);
                    builder
                        .append_link(&mut h, arcname, first)
                        .map_err(io_err(path))?;
                    continue;
                }
                inodes.insert((meta.dev(), meta.ino()), arcname);
            }
            let (_, dir) = parent.as_ref().expect("opened above");
            let file = dir.open_file(name).map_err(io_err(path))?;
            // The open file's own metadata: it may have changed since the walk.
            let meta = file.metadata().map_err(io_err(path))?;
            let mut h = header_for(&meta, tar::EntryType::Regular, meta.len());
            builder
                .append_data(
                    &mut h,
                    arcname,
                    BufReader::with_capacity(1 << 20, file.take(meta.len())),
                )
                .map_err(io_err(path))?;
            files += 1;
            uncompressed += meta.len();
        } else {
            return Err(ArtifactDirError::UnsupportedType {
                entry: escape_bytes(arcname_bytes).to_string(),
                kind: "special file".into(),
            });
        }
    }
    let out = builder.into_inner().map_err(io_err(out_path))?;
    Ok((
        out,
        TarSummary {
            files,
            uncompressed_size: uncompressed,
        },
    ))
}

/// A tar header with the entry's mode and mtime, but no owner: archives written on different machines
/// from the same tree are byte-identical.
fn header_for(meta: &fs::Metadata, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size);
    h
}

/// Every entry below `dir` in path order, with arcnames `{prefix}/{subpath}` (bytes: a name need not
/// be UTF-8); subdirectories are opened relative to `dir` without following symlinks, and symlinks
/// are listed, not followed.
fn walk(
    dir: &Dir,
    prefix: &[u8],
    out: &mut Vec<(Vec<u8>, fs::Metadata)>,
) -> Result<(), ArtifactDirError> {
    let io_err = |path: PathBuf| move |source| ArtifactDirError::Io { path, source };
    let mut names: Vec<OsString> = dir.names().map_err(io_err(dir.path().to_path_buf()))?;
    names.sort();
    for name in names {
        let arcname = [prefix, b"/", name.as_bytes()].concat();
        let meta = dir
            .metadata(&name)
            .map_err(io_err(dir.path().join(&name)))?;
        let is_dir = meta.is_dir();
        out.push((arcname.clone(), meta));
        if is_dir {
            let child = dir
                .open_dir(&name)
                .map_err(io_err(dir.path().join(&name)))?;
            walk(&child, &arcname, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lines_are_normalized_and_empty_lines_skipped() {
        let m = parse_manifest(b"a/b/stage\n\n./c/stage/\r\n").unwrap();
        let m: Vec<&str> = m.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(m, ["a/b/stage", "c/stage"]);
        assert!(matches!(
            parse_manifest(b"/abs\n"),
            Err(ArtifactDirError::BadManifest { .. })
        ));
        assert!(matches!(
            parse_manifest(b"\xff\n"),
            Err(ArtifactDirError::BadManifest { .. })
        ));
    }
}
