//! One materialization run: the prepare, write and finish phases described in the module docs of
//! `materialize`, sharing the plan, the previous state and the counters of the run.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use cairn_fingerprint::Blake3;
use rayon::prelude::*;

use super::copy::{Copier, Method};
use super::fsops;
use super::plan::{self, Node, Plan};
use super::state::{self, Record, Stat, State};
use super::{
    BlobSource, CopyMode, Layout, MaterializeError, MaterializeItem, Options, Report, Reporter,
    STATE_FILE,
};

/// Take an exclusive `flock` on the destination directory for the whole run: two runs into one
/// destination (two CI steps, a user and a script) are serialized instead of interleaving their
/// cleaning and writing. Released when the returned handle is dropped.
fn lock_dir(dest: &Path) -> Result<fs::File, MaterializeError> {
    let dir = fs::File::open(dest).map_err(io_at(dest))?;
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&dir), libc::LOCK_EX) } == 0 {
            return Ok(dir);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(MaterializeError::Io {
                path: dest.to_path_buf(),
                source: e,
            });
        }
    }
}

/// `dest` holds nothing but this module's own files (the state file, its temp name, write temps,
/// the prestage directory), i.e. it is a fresh destination.
fn only_own_files(dest: &Path) -> Result<bool, MaterializeError> {
    for entry in fs::read_dir(dest).map_err(io_at(dest))? {
        let name = entry.map_err(io_at(dest))?.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with(STATE_FILE)
            && !name.starts_with(fsops::TMP_PREFIX)
            && name != super::prestage::PRESTAGE_DIR
        {
            return Ok(false);
        }
    }
    Ok(true)
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> MaterializeError + '_ {
    move |source| MaterializeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the write phase did for one entry.
#[derive(Default)]
struct Outcome {
    written: bool,
    method: Option<Method>,
}

/// The state of one run, shared by its phases.
pub(super) struct Run<'a> {
    items: &'a [MaterializeItem],
    blobs: &'a dyn BlobSource,
    dest: &'a Path,
    opts: &'a Options,
    reporter: &'a dyn Reporter,
    start: Instant,
    plan: Plan,
    old: State,
    /// Per area: something inside changed in this run, so its `.prebuilt` marker is (re)written,
    /// which tells TheRock's CMake that the prebuilt stage changed.
    area_changed: Vec<AtomicBool>,
    /// Per area: its `.prebuilt` marker was removed (durably) in this run, before the first change
    /// of its content. The lock makes every other writer of the area wait until that is done.
    unmarked: Vec<Mutex<bool>>,
    /// Per planned entry (plan order): in place in this run (written, or proven unchanged), so an
    /// interrupted run can record it in the state file.
    done: Vec<AtomicBool>,
    files_verified: AtomicU64,
    files_repaired: AtomicU64,
    /// Per item: planned non-directories not yet in place, for `on_artifact_done`.
    remaining: Vec<AtomicUsize>,
    /// Per item: it owns no non-directory (empty, or entirely replaced by later items), so it is
    /// reported done at the end.
    empty_items: Vec<bool>,
    files_removed: AtomicU64,
    areas_cleaned: usize,
}

impl<'a> Run<'a> {
    pub(super) fn new(
        items: &'a [MaterializeItem],
        blobs: &'a dyn BlobSource,
        dest: &'a Path,
        opts: &'a Options,
        reporter: &'a dyn Reporter,
    ) -> Result<Run<'a>, MaterializeError> {
        let start = Instant::now();
        let plan = Plan::build(items, opts.layout).map_err(MaterializeError::Refused)?;
        let area_changed = plan.areas.iter().map(|_| AtomicBool::new(false)).collect();
        let unmarked = plan.areas.iter().map(|_| Mutex::new(false)).collect();
        let done = plan
            .entries
            .iter()
            .map(|_| AtomicBool::new(false))
            .collect();
        let remaining: Vec<AtomicUsize> = items.iter().map(|_| AtomicUsize::new(0)).collect();
        for p in plan.entries.values() {
            if matches!(
                p.node,
                Node::File { .. } | Node::Symlink { .. } | Node::Hardlink { .. }
            ) {
                remaining[p.artifact].fetch_add(1, Ordering::Relaxed);
            }
        }
        let empty_items = remaining
            .iter()
            .map(|r| r.load(Ordering::Relaxed) == 0)
            .collect();
        Ok(Run {
            empty_items,
            items,
            blobs,
            dest,
            opts,
            reporter,
            start,
            plan,
            old: State::empty(opts.layout),
            area_changed,
            unmarked,
            done,
            files_verified: AtomicU64::new(0),
            files_repaired: AtomicU64::new(0),
            remaining,
            files_removed: AtomicU64::new(0),
            areas_cleaned: 0,
        })
    }

    /// The file system path of destination path `p`, byte-exact.
    fn full(&self, p: impl AsRef<[u8]>) -> PathBuf {
        self.dest.join(OsStr::from_bytes(p.as_ref()))
    }

    /// Called before anything inside `area` changes: the first call removes the area's
    /// `.prebuilt` marker and makes that removal durable (fsync of its directory), so no instant,
    /// crash or power cut shows a marker over a half-rewritten stage dir. The marker is written
    /// back by `write_markers` once the stage dir is complete.
    fn touch(&self, area: Option<usize>) -> Result<(), MaterializeError> {
        let Some(a) = area else { return Ok(()) };
        self.area_changed[a].store(true, Ordering::Relaxed);
        if self.opts.layout != Layout::Bootstrap {
            return Ok(());
        }
        let mut unmarked = self.unmarked[a].lock().unwrap_or_else(|e| e.into_inner());
        if !*unmarked {
            unmark(&self.full(marker_path(&self.plan.areas[a])))?;
            *unmarked = true;
        }
        Ok(())
    }

    /// Fail with `Interrupted` when a stop was requested.
    fn check_stop(&self) -> Result<(), MaterializeError> {
        match self.opts.stop.as_ref().and_then(|s| s.requested()) {
            Some(signal) => Err(MaterializeError::Interrupted {
                signal,
                unmarked: 0,
            }),
            None => Ok(()),
        }
    }

    pub(super) fn run(mut self) -> Result<Report, MaterializeError> {
        fs::create_dir_all(self.dest).map_err(io_at(self.dest))?;
        if !fs::metadata(self.dest).map_err(io_at(self.dest))?.is_dir() {
            return Err(MaterializeError::NotADirectory {
                path: self.dest.to_path_buf(),
            });
        }
        let _lock = lock_dir(self.dest)?;
        if let Some(stop) = &self.opts.stop {
            stop.start();
        }
        self.check_stop()?;
        if self.opts.incremental {
            self.old = State::load(self.dest, self.opts.layout);
        }
        self.save_pending_state()?;

        let (files, bytes) =
            self.plan
                .entries
                .values()
                .fold((0u64, 0u64), |(f, b), p| match p.node {
                    Node::File { size, .. } => (f + 1, b + size),
                    Node::Hardlink { .. } => (f + 1, b),
                    _ => (f, b),
                });
        self.reporter.on_start(files, bytes);

        let (outcomes, link_outcomes) = match self.mutate() {
            Ok(o) => o,
            Err(MaterializeError::Interrupted { signal, .. }) => {
                // Stopped at a file boundary: keep what was done for the rerun.
                self.save_partial_state()?;
                return Err(MaterializeError::Interrupted {
                    signal,
                    unmarked: self.count_unmarked(),
                });
            }
            Err(e) => return Err(e),
        };
        self.finish_dirs()?;
        self.write_markers()?;
        for (i, empty) in self.empty_items.iter().enumerate() {
            if *empty {
                self.reporter.on_artifact_done(&self.items[i].artifact);
            }
        }
        self.save_final_state()?;

        let mut report = Report {
            artifacts: self.items.len(),
            files,
            bytes,
            files_removed: self.files_removed.load(Ordering::Relaxed),
            files_verified: self.files_verified.load(Ordering::Relaxed),
            files_repaired: self.files_repaired.load(Ordering::Relaxed),
            areas_cleaned: self.areas_cleaned,
            ..Report::default()
        };
        let entries: Vec<_> = self.plan.entries.values().collect();
        for (o, p) in outcomes.iter().chain(link_outcomes.iter()) {
            let planned = entries[*p];
            match &planned.node {
                Node::Symlink { .. } if o.written => report.symlinks_written += 1,
                Node::File { size, .. } | Node::Hardlink { size, .. } => {
                    if o.written {
                        report.files_written += 1;
                        if matches!(
                            o.method,
                            Some(Method::Reflink | Method::CopyFileRange | Method::ReadWrite)
                        ) {
                            report.bytes_written += size;
                        }
                    } else {
                        report.files_skipped_unchanged += 1;
                    }
                }
                _ => {}
            }
            match o.method {
                Some(Method::Reflink) => report.copies.reflink += 1,
                Some(Method::CopyFileRange) => report.copies.copy_file_range += 1,
                Some(Method::ReadWrite) => report.copies.read_write += 1,
                Some(Method::HardlinkBlob) => report.copies.hardlink_blob += 1,
                Some(Method::Prestaged) => report.copies.prestaged += 1,
                None if o.written && matches!(planned.node, Node::Hardlink { .. }) => {
                    report.copies.hardlink_tree += 1
                }
                None => {}
            }
        }
        report.elapsed = self.start.elapsed();
        Ok(report)
    }

    /// Phases 2 and 3, the ones that change the destination; each stops at an entry boundary when a
    /// stop is requested.
    #[allow(clippy::type_complexity)]
    fn mutate(
        &mut self,
    ) -> Result<(Vec<(Outcome, usize)>, Vec<(Outcome, usize)>), MaterializeError> {
        self.unmark_dropped_areas()?;
        let metas = self.prepare()?;
        self.remove_stale()?;
        let outcomes = self.write_files(&metas)?;
        let link_outcomes = self.write_hardlinks(&metas)?;
        Ok((outcomes, link_outcomes))
    }

    /// Areas of the previous run that this plan drops lose their marker before any of their
    /// content is removed (`remove_stale` removes children before the marker otherwise).
    fn unmark_dropped_areas(&self) -> Result<(), MaterializeError> {
        if self.opts.layout != Layout::Bootstrap {
            return Ok(());
        }
        for area in &self.old.areas {
            if !self.plan.areas.contains(area) {
                unmark(&self.full(marker_path(area)))?;
            }
        }
        Ok(())
    }

    /// Stage dirs of this plan without a marker now.
    fn count_unmarked(&self) -> usize {
        if self.opts.layout != Layout::Bootstrap {
            return 0;
        }
        self.plan
            .areas
            .iter()
            .filter(|a| {
                !fsops::lstat(&self.full(marker_path(a)))
                    .ok()
                    .flatten()
                    .is_some_and(|m| m.is_file())
            })
            .count()
    }

    /// The state after an interrupted run: the previous state with this run's paths added as
    /// pending (as `save_pending_state` wrote them), and a fresh record for every entry this run
    /// put in place, so the rerun rewrites only what is left.
    fn save_partial_state(&self) -> Result<(), MaterializeError> {
        let mut s = self.old.clone();
        for (i, (k, p)) in self.plan.entries.iter().enumerate() {
            if self.done[i].load(Ordering::Acquire) {
                s.entries.insert(k.clone(), self.record_now(k, p)?);
            } else {
                s.entries.entry(k.clone()).or_insert_with(|| Record {
                    pending: true,
                    ..Record::for_node(&p.node)
                });
            }
        }
        for a in &self.plan.areas {
            if !s.areas.contains(a) {
                s.areas.push(a.clone());
            }
        }
        s.save(self.dest)
    }

    /// The record of a planned path as it is on disk now.
    fn record_now(&self, path: &[u8], planned: &plan::Planned) -> Result<Record, MaterializeError> {
        let mut rec = Record::for_node(&planned.node);
        if let Node::File { blake3, .. } | Node::Hardlink { blake3, .. } = &planned.node {
            let full = self.full(path);
            let m = fs::symlink_metadata(&full).map_err(io_at(&full))?;
            rec.stat = Some(Stat::of(&m));
            // Shares its inode with the blob (hard-link mode, or a tree link to such a
            // file): remembered so a later copy-mode run replaces it.
            rec.cas_link = m.nlink() > 1
                && self
                    .blobs
                    .blob_path(blake3)
                    .and_then(|b| fs::symlink_metadata(b).ok())
                    .is_some_and(|b| b.dev() == m.dev() && b.ino() == m.ino());
        }
        Ok(rec)
    }

    /// Before mutating anything, make sure the state file lists every path this run may create,
    /// without `stat`, so a run killed midway leaves nothing the next run does not know about.
    fn save_pending_state(&self) -> Result<(), MaterializeError> {
        let unknown_path = self
            .plan
            .entries
            .keys()
            .any(|k| !self.old.entries.contains_key(k));
        let unknown_area = self.plan.areas.iter().any(|a| !self.old.areas.contains(a));
        if !unknown_path && !unknown_area && self.opts.incremental {
            return Ok(());
        }
        let mut s = self.old.clone();
        for (k, p) in &self.plan.entries {
            s.entries.entry(k.clone()).or_insert_with(|| Record {
                pending: true,
                ..Record::for_node(&p.node)
            });
        }
        for a in &self.plan.areas {
            if !s.areas.contains(a) {
                s.areas.push(a.clone());
            }
        }
        s.save(self.dest)
    }

    /// Phase 2: serial, parents before children. Creates directories, cleans areas, clears
    /// directories that stand where files go; returns each planned path's `lstat` (in plan order)
    /// for the write phase.
    fn prepare(&mut self) -> Result<Vec<Option<fs::Metadata>>, MaterializeError> {
        let owned: HashSet<&[u8]> = self.old.areas.iter().map(|a| a.as_bytes()).collect();
        let area_roots: std::collections::HashMap<&[u8], usize> = self
            .plan
            .areas
            .iter()
            .enumerate()
            .map(|(i, a)| (a.as_bytes(), i))
            .collect();
        self.remove_temp_files(self.dest, b"")?;
        // Directories this run created, so empty before their children: a child's `lstat` can
        // only say "absent" and is skipped (on a fresh destination, that is every `lstat`).
        let mut fresh: HashSet<&[u8]> = HashSet::new();
        let dest_fresh = self.old.entries.is_empty() && only_own_files(self.dest)?;
        let mut metas = Vec::with_capacity(self.plan.entries.len());
        let mut cleaned = 0;
        let mut removed = 0u64;
        for (path, planned) in &self.plan.entries {
            self.check_stop()?;
            let full = self.full(path);
            let parent_fresh = match plan::split_parent(path) {
                Some((parent, _)) => fresh.contains(parent),
                None => dest_fresh,
            };
            let mut meta = if parent_fresh {
                None
            } else {
                fsops::lstat(&full).map_err(io_at(&full))?
            };
            // We may replace what is here if it is inside an area or an earlier run wrote it.
            let ours =
                planned.area.is_some() || self.old.entries.get(path).is_some_and(|r| !r.pending);
            let area_root = area_roots.get(path.as_slice()).copied();
            if planned.node.is_dir() {
                match &meta {
                    Some(m) if m.is_dir() => {
                        if m.permissions().mode() & 0o700 != 0o700 {
                            self.touch(planned.area)?;
                        }
                        fsops::make_dir_writable(&full, m).map_err(io_at(&full))?;
                        if let Some(a) = area_root {
                            if owned.contains(path.as_slice()) {
                                removed += self.remove_strays(&full, path, a)?;
                            } else {
                                // TheRock's once-per-relpath clean: foreign content goes, before
                                // any file of this relpath is written.
                                self.touch(Some(a))?;
                                removed += fsops::remove_any(&full).map_err(io_at(&full))?;
                                fs::create_dir(&full).map_err(io_at(&full))?;
                                fresh.insert(path.as_slice());
                                cleaned += 1;
                            }
                        } else if planned.area.is_none() {
                            self.remove_temp_files(&full, path)?;
                        }
                    }
                    Some(m) => {
                        if !ours {
                            return Err(if m.file_type().is_symlink() {
                                MaterializeError::SymlinkInDestination { path: full }
                            } else {
                                MaterializeError::NotADirectory { path: full }
                            });
                        }
                        self.touch(planned.area)?;
                        removed += fsops::remove_any(&full).map_err(io_at(&full))?;
                        fs::create_dir(&full).map_err(io_at(&full))?;
                        fresh.insert(path.as_slice());
                    }
                    None => {
                        self.touch(planned.area)?;
                        fs::create_dir(&full).map_err(io_at(&full))?;
                        fresh.insert(path.as_slice());
                    }
                }
                metas.push(None);
            } else {
                if meta.as_ref().is_some_and(|m| m.is_dir()) {
                    if !ours {
                        return Err(MaterializeError::DirectoryInTheWay { path: full });
                    }
                    self.touch(planned.area)?;
                    removed += fsops::remove_any(&full).map_err(io_at(&full))?;
                    meta = None;
                }
                metas.push(meta);
            }
        }
        // A stage relpath no member lies under is not planned (TheRock writes only its marker),
        // but TheRock's once-per-relpath clean still removes what stands there. Its parents are
        // real directories by now (checked or created above), and `remove_any` follows nothing.
        for (area, area_path) in self.plan.areas.iter().enumerate() {
            if self.plan.entries.contains_key(area_path.as_bytes()) {
                continue;
            }
            let full = self.full(area_path);
            if fsops::lstat(&full).map_err(io_at(&full))?.is_some() {
                self.touch(Some(area))?;
                removed += fsops::remove_any(&full).map_err(io_at(&full))?;
                cleaned += 1;
            }
        }
        self.areas_cleaned = cleaned;
        self.files_removed.fetch_add(removed, Ordering::Relaxed);
        Ok(metas)
    }

    /// In an area we wrote before, remove whatever the plan no longer has (including the temp
    /// files of a run that died), and directories standing where non-directories go. The
    /// remaining paths are checked by the rest of the prepare phase.
    fn remove_strays(&self, dir: &Path, rel: &[u8], area: usize) -> Result<u64, MaterializeError> {
        let mut removed = 0;
        for entry in fs::read_dir(dir).map_err(io_at(dir))? {
            let entry = entry.map_err(io_at(dir))?;
            let path = entry.path();
            let ft = entry.file_type().map_err(io_at(&path))?;
            let child = plan::join(rel, entry.file_name().as_bytes());
            match self.plan.entries.get(&child) {
                Some(p) if p.node.is_dir() && ft.is_dir() => {
                    let m = fs::symlink_metadata(&path).map_err(io_at(&path))?;
                    if m.permissions().mode() & 0o700 != 0o700 {
                        self.touch(Some(area))?;
                    }
                    fsops::make_dir_writable(&path, &m).map_err(io_at(&path))?;
                    removed += self.remove_strays(&path, &child, area)?;
                }
                Some(p) if p.node.is_dir() || !ft.is_dir() => {}
                _ => {
                    self.check_stop()?;
                    self.touch(Some(area))?;
                    removed += fsops::remove_any(&path).map_err(io_at(&path))?;
                }
            }
        }
        Ok(removed)
    }

    /// Outside areas nothing walks the tree, so drop the temp files a killed run left in this
    /// directory (inside areas `remove_strays` takes them with everything else unplanned).
    fn remove_temp_files(&self, dir: &Path, rel: &[u8]) -> Result<(), MaterializeError> {
        for entry in fs::read_dir(dir).map_err(io_at(dir))? {
            let entry = entry.map_err(io_at(dir))?;
            let name = entry.file_name();
            let name = name.as_bytes();
            let child = if rel.is_empty() {
                name.to_vec()
            } else {
                plan::join(rel, name)
            };
            let planned = self.plan.entries.contains_key(&child);
            if name.starts_with(fsops::TMP_PREFIX.as_bytes()) && !planned {
                let path = entry.path();
                fsops::remove_any(&path).map_err(io_at(&path))?;
            }
        }
        Ok(())
    }

    /// Remove what an earlier run wrote that is no longer planned (areas were handled by
    /// `remove_strays`). Children go before parents; nothing below a symlink is touched.
    fn remove_stale(&self) -> Result<(), MaterializeError> {
        let mut removed = 0;
        let mut verified: HashSet<&[u8]> = HashSet::new();
        for (path, rec) in self.old.entries.iter().rev() {
            if self.plan.entries.contains_key(path) || self.plan.area_of(path).is_some() {
                continue;
            }
            self.check_stop()?;
            // Every ancestor must still be a real directory, or the path is not the one we wrote.
            let mut safe = true;
            for off in (0..path.len()).filter(|&k| path[k] == b'/') {
                let anc = &path[..off];
                if verified.contains(anc) {
                    continue;
                }
                let full = self.full(anc);
                match fsops::lstat(&full).map_err(io_at(&full))? {
                    Some(m) if m.is_dir() => {
                        verified.insert(anc);
                    }
                    _ => {
                        safe = false;
                        break;
                    }
                }
            }
            if !safe {
                continue;
            }
            let full = self.full(path);
            let Some(m) = fsops::lstat(&full).map_err(io_at(&full))? else {
                continue;
            };
            match rec.kind {
                state::RecordKind::Dir => {
                    if m.is_dir() {
                        // A killed run may have left temp files here; anything else that keeps
                        // it from being empty is someone else's: keep it then.
                        self.remove_temp_files(&full, path)?;
                        let _ = fs::remove_dir(&full);
                    }
                }
                kind => {
                    if !m.is_dir() {
                        fs::remove_file(&full).map_err(io_at(&full))?;
                        if kind == state::RecordKind::File {
                            removed += 1;
                        }
                    }
                }
            }
        }
        self.files_removed.fetch_add(removed, Ordering::Relaxed);
        Ok(())
    }

    fn entry_done(&self, artifact: usize) {
        if self.remaining[artifact].fetch_sub(1, Ordering::AcqRel) == 1 {
            self.reporter
                .on_artifact_done(&self.items[artifact].artifact);
        }
    }

    /// Write `tmp` to its final name, removing the temp file when that fails.
    fn rename_into_place(tmp: &Path, full: &Path) -> Result<(), MaterializeError> {
        fs::rename(tmp, full).map_err(|e| {
            let _ = fs::remove_file(tmp);
            MaterializeError::Io {
                path: full.to_path_buf(),
                source: e,
            }
        })
    }

    /// Write one file from its blob. A path that was absent in the prepare phase is created in
    /// place (`O_EXCL`): nothing can be half-replaced there, and the state file already lists it as
    /// pending, so a run killed midway leaves a file the next run rewrites. Anything else goes
    /// through a temp file renamed over the destination, so it is replaced atomically.
    fn write_blob(
        &self,
        path: &[u8],
        blake3: &Blake3,
        size: u64,
        mode: u32,
        absent: bool,
        copier: &Copier,
    ) -> Result<Method, MaterializeError> {
        let full = self.full(path);
        let blob = self
            .blobs
            .blob_path(blake3)
            .ok_or_else(|| MaterializeError::BlobMissing {
                digest: *blake3,
                path: plan::shown(path),
            })?;
        if self.opts.verify {
            // Nothing is copied from a blob that does not hash to its name.
            let actual = hash_file(&blob).map_err(io_at(&blob))?;
            if actual != *blake3 {
                return Err(MaterializeError::BlobCorrupt {
                    digest: *blake3,
                    blob,
                    path: plan::shown(path),
                    actual,
                });
            }
        }
        // A copy made while the daemon was still downloading: give it its mode and move it in
        // (atomically, like any replacement). Never in verify mode (the copy was not hashed) or
        // hard-link mode (the file must then share the blob's inode).
        if !self.opts.verify
            && self.opts.copy_mode != CopyMode::Hardlink
            && let Some(copy) = self.blobs.take_copy(blake3)
        {
            let moved = fs::set_permissions(&copy, fs::Permissions::from_mode(mode))
                .map_err(io_at(&copy))
                .and_then(|()| Self::rename_into_place(&copy, &full));
            if moved.is_ok() {
                return Ok(Method::Prestaged);
            }
            let _ = fs::remove_file(&copy);
        }
        if absent {
            match copier.write(&blob, blake3, size, mode, &full, &plan::shown(path)) {
                // Something appeared since the prepare phase: replace it the atomic way.
                Err(MaterializeError::Io { source, .. })
                    if source.kind() == io::ErrorKind::AlreadyExists => {}
                other => return other,
            }
        }
        let tmp = fsops::tmp_path(&full);
        let method = copier
            .write(&blob, blake3, size, mode, &tmp, &plan::shown(path))
            .inspect_err(|_| {
                let _ = fs::remove_file(&tmp);
            })?;
        Self::rename_into_place(&tmp, &full)?;
        Ok(method)
    }

    /// Phase 3a (parallel): files and symlinks. Returns outcomes with their index in plan order.
    fn write_files(
        &self,
        metas: &[Option<fs::Metadata>],
    ) -> Result<Vec<(Outcome, usize)>, MaterializeError> {
        let copier = Copier::new(self.opts.copy_mode);
        let work: Vec<(usize, &Vec<u8>, &plan::Planned)> = self
            .plan
            .entries
            .iter()
            .enumerate()
            .filter(|(_, (_, p))| matches!(p.node, Node::File { .. } | Node::Symlink { .. }))
            .map(|(i, (k, p))| (i, k, p))
            .collect();
        work.par_iter()
            .map(|&(i, path, planned)| {
                self.check_stop()?;
                let meta = metas[i].as_ref();
                let outcome = match &planned.node {
                    Node::File { blake3, size, mode } => {
                        let proven = meta.is_some_and(|m| {
                            self.old.entries.get(path).is_some_and(|r| {
                                r.proves(
                                    &planned.node,
                                    m,
                                    self.opts.copy_mode == CopyMode::Hardlink,
                                )
                            })
                        });
                        let proven = proven && self.still_holds(path, blake3)?;
                        if proven {
                            self.reporter.on_file_skipped(*size);
                            Outcome::default()
                        } else {
                            self.touch(planned.area)?;
                            let method = self.write_blob(
                                path,
                                blake3,
                                *size,
                                *mode,
                                meta.is_none(),
                                &copier,
                            )?;
                            self.reporter.on_file_written(*size);
                            Outcome {
                                written: true,
                                method: Some(method),
                            }
                        }
                    }
                    Node::Symlink { target } => {
                        let full = self.full(path);
                        let same = meta.is_some_and(|m| m.file_type().is_symlink())
                            && fs::read_link(&full).is_ok_and(|t| t == target.to_path());
                        if same {
                            Outcome::default()
                        } else {
                            self.touch(planned.area)?;
                            // Created in place when absent (as files are), else replaced atomically.
                            let direct = meta.is_none()
                                && match std::os::unix::fs::symlink(target.to_path(), &full) {
                                    Ok(()) => true,
                                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                                    Err(e) => return Err(io_at(&full)(e)),
                                };
                            if !direct {
                                let tmp = fsops::tmp_path(&full);
                                std::os::unix::fs::symlink(target.to_path(), &tmp)
                                    .map_err(io_at(&tmp))?;
                                Self::rename_into_place(&tmp, &full)?;
                            }
                            Outcome {
                                written: true,
                                method: None,
                            }
                        }
                    }
                    _ => unreachable!("filtered to files and symlinks"),
                };
                self.done[i].store(true, Ordering::Release);
                self.entry_done(planned.artifact);
                Ok((outcome, i))
            })
            .collect()
    }

    /// Phase 3b (parallel): hard links inside the tree, now that their targets exist. A link whose
    /// target ended up holding other content (a later artifact replaced it) is written as a copy.
    fn write_hardlinks(
        &self,
        metas: &[Option<fs::Metadata>],
    ) -> Result<Vec<(Outcome, usize)>, MaterializeError> {
        let copier = Copier::new(self.opts.copy_mode);
        let work: Vec<(usize, &Vec<u8>, &plan::Planned)> = self
            .plan
            .entries
            .iter()
            .enumerate()
            .filter(|(_, (_, p))| matches!(p.node, Node::Hardlink { .. }))
            .map(|(i, (k, p))| (i, k, p))
            .collect();
        work.par_iter()
            .map(|&(i, path, planned)| {
                self.check_stop()?;
                let Node::Hardlink {
                    target,
                    blake3,
                    size,
                    mode,
                } = &planned.node
                else {
                    unreachable!()
                };
                let full = self.full(path);
                let linkable = matches!(
                    self.plan.entries.get(target).map(|t| &t.node),
                    Some(Node::File { blake3: b, mode: m, .. }) if b == blake3 && m == mode
                );
                let outcome = if linkable {
                    let target_full = self.full(target);
                    let tm = fs::symlink_metadata(&target_full).map_err(io_at(&target_full))?;
                    // Already a link to the (unchanged) target: a rewritten target has a new inode.
                    let same = metas[i]
                        .as_ref()
                        .is_some_and(|m| m.dev() == tm.dev() && m.ino() == tm.ino());
                    if same {
                        self.reporter.on_file_skipped(*size);
                        Outcome::default()
                    } else {
                        self.touch(planned.area)?;
                        let tmp = fsops::tmp_path(&full);
                        fs::hard_link(&target_full, &tmp).map_err(io_at(&tmp))?;
                        Self::rename_into_place(&tmp, &full)?;
                        self.reporter.on_file_written(*size);
                        Outcome {
                            written: true,
                            method: None,
                        }
                    }
                } else {
                    let proven = metas[i].as_ref().is_some_and(|m| {
                        self.old.entries.get(path).is_some_and(|r| {
                            r.proves(&planned.node, m, self.opts.copy_mode == CopyMode::Hardlink)
                        })
                    });
                    let proven = proven && self.still_holds(path, blake3)?;
                    if proven {
                        self.reporter.on_file_skipped(*size);
                        Outcome::default()
                    } else {
                        self.touch(planned.area)?;
                        let absent = metas[i].is_none();
                        let method =
                            self.write_blob(path, blake3, *size, *mode, absent, &copier)?;
                        self.reporter.on_file_written(*size);
                        Outcome {
                            written: true,
                            method: Some(method),
                        }
                    }
                };
                self.done[i].store(true, Ordering::Release);
                self.entry_done(planned.artifact);
                Ok((outcome, i))
            })
            .collect()
    }

    /// A file the state file proves unchanged still holds `blake3`: always true unless `--verify`
    /// asked to re-hash it; a mismatch (changed behind our back without a trace in `lstat`, or
    /// copied from a corrupt blob by an earlier run) is counted and the file rewritten.
    fn still_holds(&self, path: &[u8], blake3: &Blake3) -> Result<bool, MaterializeError> {
        if !self.opts.verify {
            return Ok(true);
        }
        self.files_verified.fetch_add(1, Ordering::Relaxed);
        let full = self.full(path);
        if hash_file(&full).map_err(io_at(&full))? == *blake3 {
            return Ok(true);
        }
        self.files_repaired.fetch_add(1, Ordering::Relaxed);
        Ok(false)
    }

    /// Phase 4a: directory modes from the trees, deepest first (a read-only directory is restored
    /// only after everything below it is written).
    fn finish_dirs(&self) -> Result<(), MaterializeError> {
        for (path, planned) in self.plan.entries.iter().rev() {
            if let Node::Dir { mode: Some(mode) } = planned.node {
                let full = self.full(path);
                let m = fs::symlink_metadata(&full).map_err(io_at(&full))?;
                if m.permissions().mode() & 0o7777 != mode {
                    self.touch(planned.area)?;
                    fs::set_permissions(&full, fs::Permissions::from_mode(mode))
                        .map_err(io_at(&full))?;
                }
            }
        }
        Ok(())
    }

    /// Phase 4b: `{relpath}.prebuilt` markers, written after their stage dir is complete; rewritten
    /// (new mtime) when the stage dir changed, left alone otherwise so CMake sees no change.
    fn write_markers(&self) -> Result<(), MaterializeError> {
        for (path, planned) in &self.plan.entries {
            let Node::Marker { area } = planned.node else {
                continue;
            };
            let full = self.full(path);
            let present = fsops::lstat(&full)
                .map_err(io_at(&full))?
                .is_some_and(|m| m.is_file() && m.len() == 0);
            if present && !self.area_changed[area].load(Ordering::Relaxed) {
                continue;
            }
            let tmp = fsops::tmp_path(&full);
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(io_at(&tmp))?;
            Self::rename_into_place(&tmp, &full)?;
        }
        Ok(())
    }

    /// Phase 4c: the state file, with the `lstat` of every file as it is now (after all links and
    /// modes, which change `ctime`).
    fn save_final_state(&self) -> Result<(), MaterializeError> {
        let entries: Vec<(Vec<u8>, Record)> = self
            .plan
            .entries
            .par_iter()
            .map(|(path, planned)| Ok((path.clone(), self.record_now(path, planned)?)))
            .collect::<Result<_, MaterializeError>>()?;
        let state = State {
            version: state::STATE_VERSION,
            layout: state::layout_name(self.opts.layout).into(),
            areas: self.plan.areas.clone(),
            entries: entries.into_iter().collect(),
            sources: self.opts.sources.clone(),
        };
        state.save(self.dest)
    }
}

/// `{area}.prebuilt`, the marker of a stage relpath (bootstrap layout).
fn marker_path(area: &str) -> String {
    format!("{area}.prebuilt")
}

/// Remove a `.prebuilt` marker if present and make the removal durable (fsync of its directory)
/// before returning, so the content changes that follow can never be seen under the old marker.
fn unmark(marker: &Path) -> Result<(), MaterializeError> {
    match fsops::lstat(marker).map_err(io_at(marker))? {
        Some(m) if !m.is_dir() => {
            fs::remove_file(marker).map_err(io_at(marker))?;
            if let Some(dir) = marker.parent() {
                fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io_at(dir))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// BLAKE3 of a file's content (read with a large buffer; no memory map, so a file truncated under
/// us is an error, not a signal).
pub(super) fn hash_file(path: &Path) -> io::Result<Blake3> {
    let f = fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(io::BufReader::with_capacity(256 << 10, f))?;
    Ok(hasher.finalize().into())
}
