//! The materialization state file, `DEST/.cairn-state.json`: what an earlier run wrote, so the next
//! run (a bisect step, a re-bootstrap) rewrites only what changed.
//!
//! Format (version 1, JSON):
//! `{"version":1,"layout":"bootstrap","areas":["compiler/amd-llvm/stage"],"entries":{PATH: RECORD},
//! "sources":{ARCHIVE: RUN_ID}}` (`sources` optional: the run each archive came from)
//! where `PATH` is a destination path and `RECORD` is
//! `{"kind":"file"|"symlink"|"dir"|"marker","blake3"?,"mode"?,"target"?,"stat"?}`.
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub kind: RecordKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<Blake3>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<Stat>,
    /// The file is a hard link to its CAS blob ([`super::CopyMode::Hardlink`]); a run in another
    /// copy mode replaces it with a private copy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cas_link: bool,
    /// Written before a run mutated anything: the run meant to create this path but may have died
    /// first. Such a record makes the path a candidate for stale removal but not ours to replace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub version: u32,
    pub layout: String,
    /// Areas (stage relpaths or `artifacts/{artifact}`) this state owns.
    pub areas: Vec<String>,
    pub entries: BTreeMap<String, Record>,
    /// Where each materialized archive came from: `{name}_{component}_{family}` → the run id that
    /// provided it ([`super::Options::sources`]); `cairn push` records these as reused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, String>,
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
        match read()
            .ok()
            .and_then(|b| serde_json::from_slice::<State>(&b).ok())
        {
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
        let bytes = serde_json::to_vec(self).expect("state always serializes");
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
