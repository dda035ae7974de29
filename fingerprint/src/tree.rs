//! Tree manifests: the content of one archive as an ordered list of entries, independent of how the
//! archive was compressed, in which order its members were written, or their mtimes.
//!
//! A [`Tree`] is what ingest records, what `cairn/trees/{digest}` holds in storage, and what the client
//! materializes. Its [`Tree::digest`] is BLAKE3 over a canonical, versioned (`cairn-tree-v1`) encoding
//! of the entries sorted by path, so two archives with the same files in a different member order and
//! with different mtimes have the same tree digest.
//!
//! Paths are [`RelPath`]s: relative, `/`-separated, no `.`/`..`/empty components. Whatever built a
//! `Tree` has already refused hostile paths; code that writes a tree to disk can rely on that.
//!
//! Names are bytes, as on a Unix file system: a path or link target that is not UTF-8 is kept
//! byte-exact, never rewritten with U+FFFD. The digest covers the bytes; the JSON writes a UTF-8 name
//! as `path`/`link_target` (so every tree of UTF-8 names has the JSON and digest it always had) and
//! any other as `path_hex`/`link_target_hex`, the lowercase hex of its bytes. Human output shows the
//! bytes that are not UTF-8 as `\xNN` ([`escape_bytes`]). Manifest relpaths
//! (`artifact_manifest.txt` lines) are text and stay UTF-8.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::Blake3;

/// Name of the first member of every TheRock archive: the list of stage relpaths it contains.
pub const ARTIFACT_MANIFEST: &str = "artifact_manifest.txt";

/// Bytes for human output: UTF-8 as it is, every other byte as `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> EscapedBytes<'_> {
    EscapedBytes(bytes)
}

/// See [`escape_bytes`].
#[derive(Clone, Copy)]
pub struct EscapedBytes<'a>(&'a [u8]);

impl fmt::Display for EscapedBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// Why a path is not a safe relative path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelPathError {
    /// The path is empty.
    #[error("empty path")]
    Empty,
    /// The path starts with `/` (or a Windows drive/UNC prefix).
    #[error("`{0}` is absolute")]
    Absolute(String),
    /// The path has a `..` component.
    #[error("`{0}` contains `..`")]
    ParentDir(String),
    /// The path contains a NUL byte or a backslash, which no TheRock archive uses.
    #[error("`{0}` contains a NUL byte or a backslash")]
    BadChar(String),
}

/// A normalized, safe, relative `/`-separated path: no leading `/`, no `.`, `..` or empty components,
/// no NUL or backslash. Its bytes need not be UTF-8 (see the module docs).
///
/// Normalization drops `.` components, repeated and trailing slashes (`./a//b/` → `a/b`). Paths order
/// by their bytes, which for UTF-8 is the order of the strings.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(Box<[u8]>);

impl RelPath {
    /// Validate and normalize `s`.
    pub fn new(s: &str) -> Result<RelPath, RelPathError> {
        RelPath::from_bytes(s.as_bytes())
    }

    /// Validate and normalize `bytes`, which need not be UTF-8.
    pub fn from_bytes(bytes: &[u8]) -> Result<RelPath, RelPathError> {
        let shown = || escape_bytes(bytes).to_string();
        if bytes.contains(&0) || bytes.contains(&b'\\') {
            return Err(RelPathError::BadChar(shown()));
        }
        if bytes.starts_with(b"/") || (bytes.len() >= 2 && bytes[1] == b':') {
            return Err(RelPathError::Absolute(shown()));
        }
        let mut parts: Vec<&[u8]> = Vec::new();
        for part in bytes.split(|b| *b == b'/') {
            match part {
                b"" | b"." => continue,
                b".." => return Err(RelPathError::ParentDir(shown())),
                p => parts.push(p),
            }
        }
        if parts.is_empty() {
            return Err(RelPathError::Empty);
        }
        Ok(RelPath(parts.join(&b'/').into_boxed_slice()))
    }

    /// The path's bytes, `/`-separated.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path as a string, when it is UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The path as a file system path with exactly these bytes.
    pub fn to_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    /// The path's components.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|b| *b == b'/')
    }

    /// The parent path, or `None` for a single-component path.
    pub fn parent(&self) -> Option<RelPath> {
        let slash = self.0.iter().rposition(|b| *b == b'/')?;
        Some(RelPath(self.0[..slash].into()))
    }

    /// True when `self` equals `prefix` or lies below it.
    pub fn starts_with(&self, prefix: &RelPath) -> bool {
        self.0 == prefix.0
            || (self.0.starts_with(&prefix.0) && self.0.get(prefix.0.len()) == Some(&b'/'))
    }

    /// Resolve a symlink target written in the directory of `self` and return the path it points
    /// at, or `None` if it escapes the root (absolute, or `..` above the top).
    pub fn resolve_link(&self, target: &[u8]) -> Option<Vec<u8>> {
        if target.starts_with(b"/") {
            return None;
        }
        let mut stack: Vec<&[u8]> = self.components().collect();
        stack.pop();
        for part in target.split(|b| *b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    stack.pop()?;
                }
                p => stack.push(p),
            }
        }
        Some(stack.join(&b'/'))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape_bytes(&self.0).fmt(f)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_str() {
            Some(s) => write!(f, "{s:?}"),
            None => write!(f, "b\"{}\"", self.0.escape_ascii()),
        }
    }
}

/// A manifest relpath is text: it serializes as a string, and only a UTF-8 path can.
impl Serialize for RelPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.to_str() {
            Some(text) => s.serialize_str(text),
            None => Err(serde::ser::Error::custom(format!(
                "`{self}` is not UTF-8; only tree entries keep such names (as `path_hex`)"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RelPath::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Why a link target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkTargetError {
    /// The target is empty.
    #[error("empty link target")]
    Empty,
    /// The target contains a NUL byte, which no file system stores in one.
    #[error("link target `{0}` contains a NUL byte")]
    Nul(String),
}

/// The target of a symlink (as written: relative, may climb with `..`; whether it stays inside the
/// tree depends on where the link is, see [`RelPath::resolve_link`]) or of a hard link (a path of
/// the tree). Not empty, no NUL byte; its bytes need not be UTF-8.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkTarget(Box<[u8]>);

impl LinkTarget {
    /// Check `bytes` (not empty, no NUL).
    pub fn from_bytes(bytes: &[u8]) -> Result<LinkTarget, LinkTargetError> {
        if bytes.is_empty() {
            return Err(LinkTargetError::Empty);
        }
        if bytes.contains(&0) {
            return Err(LinkTargetError::Nul(escape_bytes(bytes).to_string()));
        }
        Ok(LinkTarget(bytes.into()))
    }

    /// The target's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The target as a string, when it is UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The target as a file system path with exactly these bytes.
    pub fn to_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }
}

impl From<&RelPath> for LinkTarget {
    fn from(p: &RelPath) -> LinkTarget {
        LinkTarget(p.0.clone())
    }
}

impl std::str::FromStr for LinkTarget {
    type Err = LinkTargetError;
    fn from_str(s: &str) -> Result<LinkTarget, LinkTargetError> {
        LinkTarget::from_bytes(s.as_bytes())
    }
}

impl fmt::Display for LinkTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape_bytes(&self.0).fmt(f)
    }
}

impl fmt::Debug for LinkTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_str() {
            Some(s) => write!(f, "{s:?}"),
            None => write!(f, "b\"{}\"", self.0.escape_ascii()),
        }
    }
}

/// What a tree entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file whose content is the CAS blob `blake3`.
    File,
    /// A directory.
    Dir,
    /// A symbolic link to `link_target` (relative, inside the tree).
    Symlink,
    /// A hard link to the earlier file entry `link_target` (a path in this tree).
    Hardlink,
}

impl EntryKind {
    fn tag(self) -> u8 {
        match self {
            EntryKind::File => b'f',
            EntryKind::Dir => b'd',
            EntryKind::Symlink => b'l',
            EntryKind::Hardlink => b'h',
        }
    }
}

/// One member of a tree. Its JSON is `{"path"|"path_hex", "kind", "mode", "size", "blake3"?,
/// "link_target"|"link_target_hex"?}`: the `_hex` form exactly when the name is not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// Where the entry lives, relative to the extraction root.
    pub path: RelPath,
    /// File, directory, symlink or hardlink.
    pub kind: EntryKind,
    /// Unix permission bits (`0o7777` at most).
    pub mode: u32,
    /// Size in bytes of a file's content (0 for other kinds).
    pub size: u64,
    /// BLAKE3 of a file's content (files only).
    pub blake3: Option<Blake3>,
    /// Target of a symlink (as written) or hardlink (a tree path).
    pub link_target: Option<LinkTarget>,
}

/// A tree entry as its JSON writes it (field order as before names were bytes).
#[derive(Serialize)]
struct EntryOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_hex: Option<String>,
    kind: EntryKind,
    mode: u32,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    blake3: Option<Blake3>,
    #[serde(skip_serializing_if = "Option::is_none")]
    link_target: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    link_target_hex: Option<String>,
}

/// A tree entry as its JSON reads.
#[derive(Deserialize)]
struct EntryIn {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    path_hex: Option<String>,
    kind: EntryKind,
    mode: u32,
    size: u64,
    #[serde(default)]
    blake3: Option<Blake3>,
    #[serde(default)]
    link_target: Option<String>,
    #[serde(default)]
    link_target_hex: Option<String>,
}

/// A name's bytes from exactly one of its text and hex fields; the hex form is only for bytes that
/// are not UTF-8 (one name, one spelling).
fn name_bytes(
    what: &str,
    text: Option<String>,
    hex_form: Option<String>,
) -> Result<Option<Vec<u8>>, String> {
    match (text, hex_form) {
        (None, None) => Ok(None),
        (Some(t), None) => Ok(Some(t.into_bytes())),
        (None, Some(h)) => {
            let bytes = hex::decode(&h).map_err(|e| format!("`{what}_hex` `{h}`: {e}"))?;
            if std::str::from_utf8(&bytes).is_ok() {
                return Err(format!(
                    "`{what}_hex` `{h}` is UTF-8; a UTF-8 name is written as `{what}`"
                ));
            }
            Ok(Some(bytes))
        }
        (Some(_), Some(_)) => Err(format!(
            "an entry has both `{what}` and `{what}_hex`; it must have one"
        )),
    }
}

impl Serialize for TreeEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (path, path_hex) = match self.path.to_str() {
            Some(p) => (Some(p), None),
            None => (None, Some(hex::encode(self.path.as_bytes()))),
        };
        let (link_target, link_target_hex) = match &self.link_target {
            None => (None, None),
            Some(t) => match t.to_str() {
                Some(t) => (Some(t), None),
                None => (None, Some(hex::encode(t.as_bytes()))),
            },
        };
        EntryOut {
            path,
            path_hex,
            kind: self.kind,
            mode: self.mode,
            size: self.size,
            blake3: self.blake3,
            link_target,
            link_target_hex,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for TreeEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let e = EntryIn::deserialize(d)?;
        let path = name_bytes("path", e.path, e.path_hex)
            .map_err(D::Error::custom)?
            .ok_or_else(|| D::Error::custom("an entry has neither `path` nor `path_hex`"))?;
        let path = RelPath::from_bytes(&path).map_err(D::Error::custom)?;
        let link_target = name_bytes("link_target", e.link_target, e.link_target_hex)
            .map_err(D::Error::custom)?
            .map(|t| LinkTarget::from_bytes(&t))
            .transpose()
            .map_err(D::Error::custom)?;
        Ok(TreeEntry {
            path,
            kind: e.kind,
            mode: e.mode,
            size: e.size,
            blake3: e.blake3,
            link_target,
        })
    }
}

/// The content of one archive. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Stage relpaths listed by `artifact_manifest.txt`, in the manifest's order. They are text
    /// (every way a tree is built parses them from UTF-8), and the JSON writes them as strings.
    pub manifest: Vec<RelPath>,
    /// Entries sorted by path (parents before children, as a sort by path gives).
    pub entries: Vec<TreeEntry>,
}

impl Tree {
    /// Build a tree, sorting the entries by path so the digest is independent of member order.
    pub fn new(manifest: Vec<RelPath>, mut entries: Vec<TreeEntry>) -> Tree {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Tree { manifest, entries }
    }

    /// BLAKE3 of the canonical `cairn-tree-v1` encoding: length-prefixed fields, entries in path order.
    pub fn digest(&self) -> Blake3 {
        let mut h = blake3::Hasher::new();
        h.update(b"cairn-tree-v1\0");
        let field = |h: &mut blake3::Hasher, bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        h.update(&(self.manifest.len() as u64).to_le_bytes());
        for m in &self.manifest {
            field(&mut h, m.as_bytes());
        }
        h.update(&(self.entries.len() as u64).to_le_bytes());
        for e in &self.entries {
            h.update(&[e.kind.tag()]);
            field(&mut h, e.path.as_bytes());
            h.update(&e.mode.to_le_bytes());
            h.update(&e.size.to_le_bytes());
            match &e.blake3 {
                Some(d) => {
                    h.update(&[1]);
                    h.update(&d.0);
                }
                None => {
                    h.update(&[0]);
                }
            }
            field(&mut h, e.link_target.as_ref().map_or(&[], |t| t.as_bytes()));
        }
        h.finalize().into()
    }

    /// Total size of file contents.
    pub fn total_size(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .map(|e| e.size)
            .sum()
    }

    /// Number of regular files.
    pub fn file_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .count()
    }

    /// Serialize as the JSON stored at `cairn/trees/{digest}`.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.json_len());
        self.write_json(&mut out)
            .expect("a tree always serializes into memory");
        out
    }

    /// Length of [`Tree::to_json`]'s output, counted without building it: a large tree's JSON is
    /// megabytes, and writing it straight into a buffer of the right size (an index value, a file)
    /// keeps one copy instead of three.
    pub fn json_len(&self) -> usize {
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut count = Count(0);
        self.write_json(&mut count).expect("counting never fails");
        count.0
    }

    /// Write [`Tree::to_json`]'s output to `w`; fails only when `w` does.
    pub fn write_json(&self, w: impl std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer(w, self).map_err(std::io::Error::from)
    }

    /// Parse the stored JSON and check it against the digest it was stored under: a tree read from
    /// outside is trusted only if it hashes to the name it was fetched by.
    pub fn from_json_verified(bytes: &[u8], expected: &Blake3) -> Result<Tree, TreeError> {
        let tree: Tree =
            serde_json::from_slice(bytes).map_err(|e| TreeError::Malformed(e.to_string()))?;
        let mut sorted = tree.clone();
        sorted.entries.sort_by(|a, b| a.path.cmp(&b.path));
        if sorted != tree {
            return Err(TreeError::Malformed(
                "entries are not sorted by path".into(),
            ));
        }
        let actual = tree.digest();
        if &actual != expected {
            return Err(TreeError::DigestMismatch {
                expected: *expected,
                actual,
            });
        }
        Ok(tree)
    }
}

/// Why stored tree bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// Not a valid tree manifest.
    #[error("malformed tree manifest: {0}")]
    Malformed(String),
    /// The manifest does not hash to the digest it was stored under.
    #[error("tree manifest digest mismatch: expected {expected}, computed {actual}")]
    DigestMismatch {
        /// The name it was fetched by.
        expected: Blake3,
        /// What we computed.
        actual: Blake3,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &[u8]) -> TreeEntry {
        TreeEntry {
            path: RelPath::new(path).unwrap(),
            kind: EntryKind::File,
            mode: 0o644,
            size: content.len() as u64,
            blake3: Some(Blake3::of(content)),
            link_target: None,
        }
    }

    #[test]
    fn relpath_rules() {
        assert_eq!(RelPath::new("./a//b/").unwrap().as_bytes(), b"a/b");
        assert!(matches!(
            RelPath::new("/etc/passwd"),
            Err(RelPathError::Absolute(_))
        ));
        assert!(matches!(
            RelPath::new("a/../../b"),
            Err(RelPathError::ParentDir(_))
        ));
        assert!(matches!(RelPath::new("./"), Err(RelPathError::Empty)));
        assert!(matches!(
            RelPath::new("a\\b"),
            Err(RelPathError::BadChar(_))
        ));
        let p = RelPath::new("a/b/c").unwrap();
        assert!(p.starts_with(&RelPath::new("a/b").unwrap()));
        assert!(!p.starts_with(&RelPath::new("a/bc").unwrap()));
        assert_eq!(p.resolve_link(b"../x").as_deref(), Some(&b"a/x"[..]));
        assert_eq!(p.resolve_link(b"../../../x"), None);
        assert_eq!(p.resolve_link(b"/x"), None);
    }

    #[test]
    fn relpath_rules_hold_for_bytes_that_are_not_utf8() {
        let p = RelPath::from_bytes(b"./a//\xff\xfe/b/").unwrap();
        assert_eq!(p.as_bytes(), b"a/\xff\xfe/b");
        assert_eq!(p.to_str(), None);
        assert_eq!(p.to_path().as_os_str().as_bytes(), b"a/\xff\xfe/b");
        assert_eq!(p.to_string(), "a/\\xff\\xfe/b");
        assert_eq!(format!("{p:?}"), r#"b"a/\xff\xfe/b""#);
        assert_eq!(p.parent().unwrap().as_bytes(), b"a/\xff\xfe");
        assert!(p.starts_with(&RelPath::from_bytes(b"a/\xff\xfe").unwrap()));
        assert!(!p.starts_with(&RelPath::from_bytes(b"a/\xff").unwrap()));
        for (bad, want) in [
            (&b"../\xff"[..], "ParentDir"),
            (b"stage/\xff/../../x", "ParentDir"),
            (b"/\xff", "Absolute"),
            (b"\xff\\x", "BadChar"),
            (b"\xff\0", "BadChar"),
        ] {
            let err = RelPath::from_bytes(bad).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{bad:?}: {err:?}");
            // Errors show the bytes, escaped, never U+FFFD.
            assert!(!err.to_string().contains('\u{fffd}'), "{err}");
        }
        assert_eq!(
            RelPath::from_bytes(b"../\xff").unwrap_err().to_string(),
            "`../\\xff` contains `..`"
        );
        // A climbing non-UTF-8 link target is caught like any other.
        let link = RelPath::from_bytes(b"stage/\xff/l").unwrap();
        assert_eq!(
            link.resolve_link(b"../../\xfe").as_deref(),
            Some(&b"\xfe"[..])
        );
        assert_eq!(link.resolve_link(b"../../../\xfe"), None);
    }

    #[test]
    fn link_targets_are_bytes_without_nul() {
        let t = LinkTarget::from_bytes(b"../\xff.so").unwrap();
        assert_eq!(t.as_bytes(), b"../\xff.so");
        assert_eq!(t.to_str(), None);
        assert_eq!(t.to_string(), "../\\xff.so");
        assert_eq!(t.to_path().as_os_str().as_bytes(), b"../\xff.so");
        assert_eq!(LinkTarget::from_bytes(b""), Err(LinkTargetError::Empty));
        assert!(matches!(
            LinkTarget::from_bytes(b"a\0\xff"),
            Err(LinkTargetError::Nul(_))
        ));
        assert_eq!("x.so".parse::<LinkTarget>().unwrap().to_str(), Some("x.so"));
    }

    #[test]
    fn names_that_are_not_utf8_round_trip_through_json_as_hex() {
        let m = vec![RelPath::new("s/stage").unwrap()];
        let mut weird = file("s/stage/a", b"1");
        weird.path = RelPath::from_bytes(b"s/stage/\xff\xfename").unwrap();
        let link = TreeEntry {
            path: RelPath::from_bytes(b"s/stage/l\xe9").unwrap(),
            kind: EntryKind::Symlink,
            mode: 0o777,
            size: 0,
            blake3: None,
            link_target: Some(LinkTarget::from_bytes(b"\xff\xfename").unwrap()),
        };
        let t = Tree::new(m, vec![file("s/stage/b", b"2"), weird, link]);
        let json = String::from_utf8(t.to_json()).unwrap();
        assert!(
            json.contains(r#""path_hex":"732f73746167652ffffe6e616d65""#),
            "{json}"
        );
        assert!(
            json.contains(r#""link_target_hex":"fffe6e616d65""#),
            "{json}"
        );
        assert!(json.contains(r#""path":"s/stage/b""#), "{json}");
        assert!(!json.contains('\u{fffd}'), "{json}");
        let back = Tree::from_json_verified(json.as_bytes(), &t.digest()).unwrap();
        assert_eq!(back, t);
        // The digest covers the bytes: another invalid byte is another tree.
        let mut other = t.clone();
        other.entries[2].link_target = Some(LinkTarget::from_bytes(b"\xfe\xfename").unwrap());
        assert_ne!(other.digest(), t.digest());
    }

    #[test]
    fn malformed_name_fields_are_refused() {
        let entry = |fields: &str| {
            format!(r#"{{"manifest":[],"entries":[{{{fields}"kind":"dir","mode":493,"size":0}}]}}"#)
        };
        for (fields, want) in [
            (
                r#""path":"a","path_hex":"ff","#,
                "both `path` and `path_hex`",
            ),
            ("", "neither `path` nor `path_hex`"),
            (r#""path_hex":"61","#, "is UTF-8"),
            (r#""path_hex":"zz","#, "`path_hex` `zz`"),
            (r#""path_hex":"2e2e2fff","#, "contains `..`"),
            (
                r#""path":"a","link_target":"b","link_target_hex":"ff","#,
                "both `link_target` and `link_target_hex`",
            ),
            (r#""path":"a","link_target_hex":"ff00","#, "NUL"),
        ] {
            let json = entry(fields);
            let err = serde_json::from_str::<Tree>(&json).unwrap_err().to_string();
            assert!(err.contains(want), "{json}: {err}");
        }
    }

    /// A tree of every entry kind, UTF-8 names only: its digest and JSON were computed before
    /// names became bytes, and must never change (every stored tree and manifest names one).
    fn golden_tree() -> Tree {
        let link = |path: &str, kind: EntryKind, target: &str| TreeEntry {
            path: RelPath::new(path).unwrap(),
            kind,
            mode: 0o777,
            size: 0,
            blake3: None,
            link_target: Some(target.parse().unwrap()),
        };
        Tree::new(
            vec![RelPath::new("math-libs/BLAS/stage").unwrap()],
            vec![
                file("artifact_manifest.txt", b"math-libs/BLAS/stage\n"),
                TreeEntry {
                    path: RelPath::new("math-libs/BLAS/stage/lib").unwrap(),
                    kind: EntryKind::Dir,
                    mode: 0o755,
                    size: 0,
                    blake3: None,
                    link_target: None,
                },
                file("math-libs/BLAS/stage/lib/libblas.so.1 é", b"ELF"),
                link(
                    "math-libs/BLAS/stage/lib/libblas.so",
                    EntryKind::Symlink,
                    "libblas.so.1 é",
                ),
                link(
                    "math-libs/BLAS/stage/lib/copy.so",
                    EntryKind::Hardlink,
                    "math-libs/BLAS/stage/lib/libblas.so.1 é",
                ),
            ],
        )
    }

    #[test]
    fn utf8_trees_keep_their_digest_and_json() {
        let t = golden_tree();
        assert_eq!(
            t.digest().to_string(),
            "2927084de2e676493f657124dd337d87f7224f56251b9e1b1004b5011a39b49a"
        );
        assert_eq!(
            String::from_utf8(t.to_json()).unwrap(),
            r#"{"manifest":["math-libs/BLAS/stage"],"entries":[{"path":"artifact_manifest.txt","kind":"file","mode":420,"size":21,"blake3":"9807ab8846bdd09dba6e33e38a4c469c8810e4a587f12a09861173accc60c8f0"},{"path":"math-libs/BLAS/stage/lib","kind":"dir","mode":493,"size":0},{"path":"math-libs/BLAS/stage/lib/copy.so","kind":"hardlink","mode":511,"size":0,"link_target":"math-libs/BLAS/stage/lib/libblas.so.1 é"},{"path":"math-libs/BLAS/stage/lib/libblas.so","kind":"symlink","mode":511,"size":0,"link_target":"libblas.so.1 é"},{"path":"math-libs/BLAS/stage/lib/libblas.so.1 é","kind":"file","mode":420,"size":3,"blake3":"ceb6a209f7cd592ef235cb2c23e12d7f6e39b82b8a86adfffd026131dba4f07e"}]}"#
        );
    }

    #[test]
    fn digest_ignores_member_order_but_not_content() {
        let m = vec![RelPath::new("x/stage").unwrap()];
        let a = Tree::new(
            m.clone(),
            vec![file("x/stage/a", b"1"), file("x/stage/b", b"2")],
        );
        let b = Tree::new(
            m.clone(),
            vec![file("x/stage/b", b"2"), file("x/stage/a", b"1")],
        );
        let c = Tree::new(m, vec![file("x/stage/b", b"3"), file("x/stage/a", b"1")]);
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), c.digest());
        let back = Tree::from_json_verified(&a.to_json(), &a.digest()).unwrap();
        assert_eq!(back, a);
        assert!(matches!(
            Tree::from_json_verified(&a.to_json(), &c.digest()),
            Err(TreeError::DigestMismatch { .. })
        ));
    }
}
