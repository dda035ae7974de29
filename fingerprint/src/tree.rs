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

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::Blake3;

/// Name of the first member of every TheRock archive: the list of stage relpaths it contains.
pub const ARTIFACT_MANIFEST: &str = "artifact_manifest.txt";

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

/// A normalized, safe, relative `/`-separated path: no leading `/`, no `.`, `..` or empty components.
///
/// Normalization drops `.` components, repeated and trailing slashes (`./a//b/` → `a/b`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RelPath(String);

impl RelPath {
    /// Validate and normalize `s`.
    pub fn new(s: &str) -> Result<RelPath, RelPathError> {
        if s.contains('\0') || s.contains('\\') {
            return Err(RelPathError::BadChar(s.to_string()));
        }
        if s.starts_with('/') || (s.len() >= 2 && s.as_bytes()[1] == b':') {
            return Err(RelPathError::Absolute(s.to_string()));
        }
        let mut parts = Vec::new();
        for part in s.split('/') {
            match part {
                "" | "." => continue,
                ".." => return Err(RelPathError::ParentDir(s.to_string())),
                p => parts.push(p),
            }
        }
        if parts.is_empty() {
            return Err(RelPathError::Empty);
        }
        Ok(RelPath(parts.join("/")))
    }

    /// The path as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path's components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The parent path, or `None` for a single-component path.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rsplit_once('/').map(|(p, _)| RelPath(p.to_string()))
    }

    /// True when `self` equals `prefix` or lies below it.
    pub fn starts_with(&self, prefix: &RelPath) -> bool {
        self.0 == prefix.0
            || (self.0.starts_with(&prefix.0) && self.0.as_bytes()[prefix.0.len()] == b'/')
    }

    /// Resolve a symlink target written in the directory of `self` and return the path it points
    /// at, or `None` if it escapes the root (absolute, or `..` above the top).
    pub fn resolve_link(&self, target: &str) -> Option<String> {
        if target.starts_with('/') {
            return None;
        }
        let mut stack: Vec<&str> = self.0.split('/').collect();
        stack.pop();
        for part in target.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    stack.pop()?;
                }
                p => stack.push(p),
            }
        }
        Some(stack.join("/"))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RelPath::new(&s).map_err(serde::de::Error::custom)
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

/// One member of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<Blake3>,
    /// Target of a symlink (as written) or hardlink (a tree path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

/// The content of one archive. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Stage relpaths listed by `artifact_manifest.txt`, in the manifest's order.
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
            field(&mut h, m.as_str().as_bytes());
        }
        h.update(&(self.entries.len() as u64).to_le_bytes());
        for e in &self.entries {
            h.update(&[e.kind.tag()]);
            field(&mut h, e.path.as_str().as_bytes());
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
            field(&mut h, e.link_target.as_deref().unwrap_or("").as_bytes());
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
        assert_eq!(RelPath::new("./a//b/").unwrap().as_str(), "a/b");
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
        assert_eq!(p.resolve_link("../x").as_deref(), Some("a/x"));
        assert_eq!(p.resolve_link("../../../x"), None);
        assert_eq!(p.resolve_link("/x"), None);
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
