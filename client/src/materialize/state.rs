//! The materialization state file, `DEST/.cairn-state.json`: what an earlier run wrote, so the next
//! run (a bisect step, a re-bootstrap) rewrites only what changed.
//!
//! Format (version 1, JSON):
//! `{"version":1,"layout":"bootstrap","areas":["compiler/amd-llvm/stage"],"entries":{PATH: RECORD},
//! "sources":{ARCHIVE: RUN_ID}}` (`sources` optional: the run each archive came from)
//! where `PATH` is a destination path and `RECORD` is
//! `{"kind":"file"|"symlink"|"dir"|"marker","blake3"?,"mode"?,"target"?,"stat"?}`.
//! Names are bytes: a destination path that is not UTF-8 is a key of `"entries_hex"` (the hex of its
//! bytes) instead of `"entries"`, and a symlink target that is not UTF-8 is `"target_hex"` instead of
//! `"target"`; a state of UTF-8 names reads and writes exactly as before.
//! `stat` (`dev`, `ino`, `size`, `mtime`, `ctime` as `[seconds, nanoseconds]`) is what `lstat`
//! showed after the run finished. A file is trusted as unchanged only when its record matches the plan
//! *and* its current `lstat` equals `stat`; any write, `chmod` or replacement changes `ctime`, which
//! user space cannot set back, so an edited file is always detected.
//!
//! Crash safety: before mutating anything, a run whose plan adds paths unknown to the state rewrites
//! the state with those paths recorded as `pending` and *without* `stat` (so they are never trusted,
//! never taken as ours to replace, and are removed later if no longer planned). Every write is temp file + `rename`, so a run killed midway leaves a
//! state that the next run converges from. A run stopped by a signal (`StopFlag`) saves that same
//! state plus a fresh record (with `stat`) for every entry it already put in place, so the rerun
//! rewrites only the rest.

use std::collections::BTreeMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use cairn_fingerprint::Blake3;
use cairn_fingerprint::tree::LinkTarget;
use serde::{Deserialize, Serialize};

use super::plan::Node;
use super::{Layout, MaterializeError, STATE_FILE};

/// The current state file version; any other version is ignored (a full rewrite follows).
pub(crate) const STATE_VERSION: u32 = 1;

/// What kind of thing a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RecordKind {
    File,
    Symlink,
    Dir,
    Marker,
}

/// `lstat` fields that change whenever a file's content, mode or identity changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: [i64; 2],
    pub ctime: [i64; 2],
}

impl Stat {
    pub(crate) fn of(m: &Metadata) -> Stat {
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: [m.mtime(), m.mtime_nsec()],
            ctime: [m.ctime(), m.ctime_nsec()],
        }
    }
}

/// One materialized path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub kind: RecordKind,
    pub blake3: Option<Blake3>,
    pub mode: Option<u32>,
    /// A symlink's target, byte-exact.
    pub target: Option<LinkTarget>,
    pub stat: Option<Stat>,
    /// The file is a hard link to its CAS blob ([`super::CopyMode::Hardlink`]); a run in another
    /// copy mode replaces it with a private copy.
    pub cas_link: bool,
    /// Written before a run mutated anything: the run meant to create this path but may have died
    /// first. Such a record makes the path a candidate for stale removal but not ours to replace.
    pub pending: bool,
}

/// A record as the state file has it (`target` or, for bytes that are not UTF-8, `target_hex`).
#[derive(Serialize, Deserialize)]
struct RecordJson {
    kind: RecordKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blake3: Option<Blake3>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_hex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stat: Option<Stat>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    cas_link: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pending: bool,
}

/// The bytes of a name spelled `hex` in a `_hex` field: only a name that is not UTF-8 is.
fn from_hex(hex_form: &str) -> Result<Vec<u8>, String> {
    let bytes = hex::decode(hex_form).map_err(|e| format!("`{hex_form}`: {e}"))?;
    if std::str::from_utf8(&bytes).is_ok() {
        return Err(format!("`{hex_form}` is UTF-8, so not spelled in hex"));
    }
    Ok(bytes)
}

impl Serialize for Record {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (target, target_hex) = match &self.target {
            None => (None, None),
            Some(t) => match t.to_str() {
                Some(t) => (Some(t.to_string()), None),
                None => (None, Some(hex::encode(t.as_bytes()))),
            },
        };
        RecordJson {
            kind: self.kind,
            blake3: self.blake3,
            mode: self.mode,
            target,
            target_hex,
            stat: self.stat,
            cas_link: self.cas_link,
            pending: self.pending,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let r = RecordJson::deserialize(d)?;
        let target = match (r.target, r.target_hex) {
            (None, None) => None,
            (Some(t), None) => Some(t.into_bytes()),
            (None, Some(h)) => Some(from_hex(&h).map_err(D::Error::custom)?),
            (Some(_), Some(_)) => return Err(D::Error::custom("both `target` and `target_hex`")),
        };
        let target = target
            .map(|t| LinkTarget::from_bytes(&t))
            .transpose()
            .map_err(D::Error::custom)?;
        Ok(Record {
            kind: r.kind,
            blake3: r.blake3,
            mode: r.mode,
            target,
            stat: r.stat,
            cas_link: r.cas_link,
            pending: r.pending,
        })
    }
}

impl Record {
    /// The record a planned node produces, without `stat`. Hardlinks record as the file they are.
    pub(crate) fn for_node(node: &Node) -> Record {
        let (kind, blake3, mode, target) = match node {
            Node::Dir { .. } => (RecordKind::Dir, None, None, None),
            Node::File { blake3, mode, .. } | Node::Hardlink { blake3, mode, .. } => {
                (RecordKind::File, Some(*blake3), Some(*mode), None)
            }
            Node::Symlink { target } => (RecordKind::Symlink, None, None, Some(target.clone())),
            Node::Marker { .. } => (RecordKind::Marker, None, None, None),
        };
        Record {
            kind,
            blake3,
            mode,
            target,
            stat: None,
            cas_link: false,
            pending: false,
        }
    }

    /// True when this record says the path already holds exactly `node` and `current` (its `lstat`
    /// now) is what the record saw. A link to the CAS is accepted only when `cas_links_ok`.
    pub(crate) fn proves(&self, node: &Node, current: &Metadata, cas_links_ok: bool) -> bool {
        let Some(stat) = self.stat else { return false };
        if self.cas_link && !cas_links_ok {
            return false;
        }
        let want = Record::for_node(node);
        self.kind == want.kind
            && self.blake3 == want.blake3
            && self.mode == want.mode
            && self.target == want.target
            && current.file_type().is_file()
            && stat == Stat::of(current)
    }
}

/// The whole state file.
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub version: u32,
    pub layout: String,
    /// Areas (stage relpaths or `artifacts/{artifact}`) this state owns.
    pub areas: Vec<String>,
    /// Destination path (bytes) → record.
    pub entries: BTreeMap<Vec<u8>, Record>,
    /// Where each materialized archive came from: `{name}_{component}_{family}` → the run id that
    /// provided it ([`super::Options::sources`]); `cairn push` records these as reused.
    pub sources: BTreeMap<String, String>,
}

/// The state file as written: UTF-8 paths in `entries`, others in `entries_hex`.
#[derive(Serialize)]
struct StateOut<'a> {
    version: u32,
    layout: &'a str,
    areas: &'a [String],
    entries: Entries<'a, true>,
    #[serde(skip_serializing_if = "Entries::is_empty")]
    entries_hex: Entries<'a, false>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    sources: &'a BTreeMap<String, String>,
}

/// The entries whose path is UTF-8 (`UTF8`, keyed by the path) or not (keyed by its hex), in order.
struct Entries<'a, const UTF8: bool>(&'a BTreeMap<Vec<u8>, Record>);

impl<const UTF8: bool> Entries<'_, UTF8> {
    fn key(path: &[u8]) -> Option<String> {
        match (std::str::from_utf8(path), UTF8) {
            (Ok(p), true) => Some(p.to_string()),
            (Err(_), false) => Some(hex::encode(path)),
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        !self.0.keys().any(|k| Self::key(k).is_some())
    }
}

impl<const UTF8: bool> Serialize for Entries<'_, UTF8> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(
            self.0
                .iter()
                .filter_map(|(k, r)| Self::key(k).map(|k| (k, r))),
        )
    }
}

/// The state file as read.
#[derive(Deserialize)]
struct StateIn {
    version: u32,
    layout: String,
    areas: Vec<String>,
    entries: BTreeMap<String, Record>,
    #[serde(default)]
    entries_hex: BTreeMap<String, Record>,
    #[serde(default)]
    sources: BTreeMap<String, String>,
}

impl TryFrom<StateIn> for State {
    type Error = String;
    fn try_from(s: StateIn) -> Result<State, String> {
        let mut entries: BTreeMap<Vec<u8>, Record> = s
            .entries
            .into_iter()
            .map(|(k, r)| (k.into_bytes(), r))
            .collect();
        for (k, r) in s.entries_hex {
            entries.insert(from_hex(&k)?, r);
        }
        Ok(State {
            version: s.version,
            layout: s.layout,
            areas: s.areas,
            entries,
            sources: s.sources,
        })
    }
}

impl State {
    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&StateOut {
            version: self.version,
            layout: &self.layout,
            areas: &self.areas,
            entries: Entries(&self.entries),
            entries_hex: Entries(&self.entries),
            sources: &self.sources,
        })
        .expect("state always serializes")
    }

    fn from_json(bytes: &[u8]) -> Option<State> {
        let raw: StateIn = serde_json::from_slice(bytes).ok()?;
        State::try_from(raw).ok()
    }
}

pub(crate) fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Plain => "plain",
        Layout::Flatten => "flatten",
        Layout::Bootstrap => "bootstrap",
    }
}

impl State {
    pub(crate) fn empty(layout: Layout) -> State {
        State {
            version: STATE_VERSION,
            layout: layout_name(layout).into(),
            areas: Vec::new(),
            entries: BTreeMap::new(),
            sources: BTreeMap::new(),
        }
    }

    /// Load the state of `dest` for `layout`. A missing, unreadable, foreign-version or
    /// other-layout state file is the empty state: correctness never depends on it, only speed.
    pub(crate) fn load(dest: &Path, layout: Layout) -> State {
        let path = dest.join(STATE_FILE);
        let read = || -> io::Result<Vec<u8>> {
            // O_NOFOLLOW: a symlink planted at the state path is not ours to read.
            let mut f = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            Ok(buf)
        };
        match read().ok().and_then(|b| State::from_json(&b)) {
            Some(s) if s.version == STATE_VERSION && s.layout == layout_name(layout) => s,
            _ => State::empty(layout),
        }
    }

    /// Write atomically: temp file, fsync, rename over the old state.
    pub(crate) fn save(&self, dest: &Path) -> Result<(), MaterializeError> {
        let path = dest.join(STATE_FILE);
        // One fixed temp name: runs into `dest` are serialized by the directory lock, and a name
        // left by a killed run is simply reused.
        let tmp = dest.join(format!("{STATE_FILE}.tmp"));
        let io_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| MaterializeError::Io { path: p, source }
        };
        let _ = fs::remove_file(&tmp);
        let bytes = self.to_json();
        let mut f: File = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(&bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symlink(target: &[u8]) -> Record {
        Record::for_node(&Node::Symlink {
            target: LinkTarget::from_bytes(target).unwrap(),
        })
    }

    #[test]
    fn utf8_states_are_written_as_before_and_byte_names_as_hex() {
        let mut s = State::empty(Layout::Bootstrap);
        s.entries.insert(b"a/l".to_vec(), symlink(b"t"));
        assert_eq!(
            String::from_utf8(s.to_json()).unwrap(),
            r#"{"version":1,"layout":"bootstrap","areas":[],"entries":{"a/l":{"kind":"symlink","target":"t"}}}"#
        );
        s.entries.insert(b"a/\xffl".to_vec(), symlink(b"caf\xe9"));
        let json = String::from_utf8(s.to_json()).unwrap();
        assert!(
            json.contains(
                r#""entries_hex":{"612fff6c":{"kind":"symlink","target_hex":"636166e9"}}"#
            ),
            "{json}"
        );
        let back = State::from_json(json.as_bytes()).unwrap();
        assert_eq!(back.entries, s.entries);
        // A UTF-8 name has one spelling; a state that spells it in hex is not ours (empty state).
        assert!(State::from_json(json.replace("612fff6c", "612f6c").as_bytes()).is_none());
    }
}
