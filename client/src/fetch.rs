//! Fetch: one or more `Fetch` RPCs turned into a materialized destination.
//!
//! Per request (one stage's artifacts for one family) the daemon streams `resolved`, `progress`
//! events while it makes archives local, one `tree` per archive, then each unique blob once — as a
//! CAS path on the same machine ([`Transfer::LocalPaths`]) or as bytes ([`Transfer::Stream`]) — and
//! a `summary`. After the summary the daemon keeps the blobs leased until the stream is closed, so
//! every stream stays open until [`materialize`](crate::materialize::materialize) has finished.
//!
//! Nothing the daemon sends is trusted blindly: every tree must hash to the digest it was announced
//! with, and streamed blobs are hashed as they are written to a spool directory under the destination
//! and refused unless they hash to their name. A remote client spools only the blobs the destination's
//! state file cannot prove present (an incremental re-bootstrap writes only what changed).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::connect::DaemonChannel;
use cairn_fingerprint::Blake3;
use cairn_fingerprint::tree::{EntryKind, LinkTarget, RelPath, Tree, TreeEntry, escape_bytes};
use cairn_proto::v1::cairn_client::CairnClient;
use cairn_proto::v1::{self as pb, fetch_event::Event};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::api::{ClientError, Request, Resolved, Status};
use crate::connect::DaemonAddr;
use crate::materialize::prestage::{PRESTAGE_DIR, Prestager};
use crate::materialize::{
    self, BlobSource, CopyMode, DirBlobs, MaterializeItem, NoReporter, Options, Report, Reporter,
};

/// Name of the spool directory (under the destination) that receives streamed blobs.
pub const SPOOL_DIR: &str = ".cairn-spool";

/// How blob contents reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// Same machine: the daemon sends CAS paths and the client copies from them.
    LocalPaths,
    /// Remote: the daemon streams blob bytes.
    Stream,
}

impl Transfer {
    /// CAS paths over a Unix socket (necessarily the same machine), bytes over TCP.
    pub fn for_addr(addr: &DaemonAddr) -> Transfer {
        match addr {
            DaemonAddr::Unix(_) => Transfer::LocalPaths,
            DaemonAddr::Tcp(_) => Transfer::Stream,
        }
    }
}

/// Progress of a fetch, on top of materialization progress. Called from the async task (fetch
/// events) and from worker threads (materialization).
pub trait FetchReporter: Reporter + Send {
    /// The daemon resolved one request.
    fn on_resolved(&self, _resolved: &[Resolved]) {}
    /// The daemon made archive number `done` of `total` local, downloading `downloaded_bytes`
    /// compressed bytes for it (0: it came from the cache).
    fn on_archive_ready(&self, _artifact: &str, _done: u64, _total: u64, _downloaded_bytes: u64) {}
    /// Blob bytes received over the stream.
    fn on_blob_bytes(&self, _bytes: u64) {}
}

impl FetchReporter for NoReporter {}

/// One archive's tree as fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FetchedTree {
    /// `{name}_{component}_{family}`.
    pub artifact: String,
    /// Tree digest (verified).
    pub tree_digest: String,
    /// `cas` when the daemon had every blob, `storage` when it downloaded the archive.
    pub source: String,
    /// The run the archive came from.
    pub run_id: String,
    /// Regular files.
    pub files: u64,
    /// Bytes of regular files.
    pub bytes: u64,
}

/// The daemon's summaries, added over all requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DaemonTotals {
    /// Archives served.
    pub artifacts: u64,
    /// Regular files in them.
    pub files: u64,
    /// Bytes of regular files in them.
    pub bytes: u64,
    /// Archives served from the CAS.
    pub from_cas: u64,
    /// Archives the daemon downloaded.
    pub from_storage: u64,
    /// Compressed bytes the daemon downloaded.
    pub storage_bytes: u64,
    /// Runs the archives came from, sorted.
    pub runs: Vec<String>,
    /// Daemon time, summed over requests.
    pub elapsed_ms: u64,
}

impl DaemonTotals {
    fn add(&mut self, s: &pb::FetchSummary) {
        self.artifacts += u64::from(s.artifacts);
        self.files += s.files;
        self.bytes += s.bytes;
        self.from_cas += u64::from(s.from_cas);
        self.from_storage += u64::from(s.from_storage);
        self.storage_bytes += s.storage_bytes;
        self.runs.extend(s.runs.iter().cloned());
        self.runs.sort();
        self.runs.dedup();
        self.elapsed_ms += s.elapsed_ms;
    }
}

/// What a fetch did.
#[derive(Debug, Clone)]
pub struct FetchOutcome {
    /// Every resolved archive and every missing artifact, over all requests.
    pub resolved: Vec<Resolved>,
    /// The trees materialized (an archive asked for by several requests appears once).
    pub trees: Vec<FetchedTree>,
    /// The daemon's summaries.
    pub daemon: DaemonTotals,
    /// Blob bytes received over the stream (0 with [`Transfer::LocalPaths`]).
    pub received_bytes: u64,
    /// Blobs received over the stream.
    pub received_blobs: u64,
    /// What materialization did.
    pub report: Report,
}

impl FetchOutcome {
    /// The artifacts no acceptable producer has.
    pub fn missing(&self) -> impl Iterator<Item = &Resolved> {
        self.resolved.iter().filter(|r| r.status == Status::Missing)
    }
}

/// Totals of one `bootstrap`/`fetch` (also printed on stderr).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Archives materialized.
    pub artifacts: usize,
    /// Artifacts missing.
    pub missing: usize,
    /// Regular files in the destination's trees.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Files written by this run.
    pub files_written: u64,
    /// Bytes written by this run.
    pub bytes_written: u64,
    /// Of the files written, those moved into place from a copy made while the daemon was still
    /// downloading (a cold fetch into a fresh destination on the daemon's machine).
    pub files_prestaged: u64,
    /// Files left untouched because an earlier run wrote them and they are unchanged.
    pub files_unchanged: u64,
    /// Stale files removed.
    pub files_removed: u64,
    /// Kept files re-hashed (`--verify`).
    pub files_verified: u64,
    /// Kept files whose content did not match and that were rewritten (`--verify`).
    pub files_repaired: u64,
    /// Archives the daemon served from its cache.
    pub from_cas: u64,
    /// Archives the daemon downloaded from storage.
    pub from_storage: u64,
    /// Compressed bytes the daemon downloaded.
    pub storage_bytes: u64,
    /// Blob bytes received over the network (remote daemons only).
    pub received_bytes: u64,
    /// Runs the archives came from.
    pub runs: Vec<String>,
    /// Wall time of the command, fingerprints included.
    pub elapsed_ms: u64,
}

impl Summary {
    /// The totals of `outcome` (`None`: nothing was asked for), with the command's wall time.
    pub fn of(outcome: Option<&FetchOutcome>, elapsed: std::time::Duration) -> Summary {
        let Some(o) = outcome else {
            return Summary {
                elapsed_ms: elapsed.as_millis() as u64,
                ..Summary::default()
            };
        };
        Summary {
            artifacts: o.trees.len(),
            missing: o.missing().count(),
            files: o.report.files,
            bytes: o.report.bytes,
            files_written: o.report.files_written,
            bytes_written: o.report.bytes_written,
            files_prestaged: o.report.copies.prestaged,
            files_unchanged: o.report.files_skipped_unchanged,
            files_removed: o.report.files_removed,
            files_verified: o.report.files_verified,
            files_repaired: o.report.files_repaired,
            // Per materialized archive (an archive several family requests share counts once).
            from_cas: o.trees.iter().filter(|t| t.source == "cas").count() as u64,
            from_storage: o.trees.iter().filter(|t| t.source == "storage").count() as u64,
            storage_bytes: o.daemon.storage_bytes,
            received_bytes: o.received_bytes,
            runs: o.daemon.runs.clone(),
            elapsed_ms: elapsed.as_millis() as u64,
        }
    }
}

/// Fetch `requests` and materialize everything found into `dest` under `opts`. Missing artifacts
/// are reported in the outcome, not as an error: what was found is materialized anyway.
pub async fn fetch(
    client: &mut CairnClient<DaemonChannel>,
    requests: &[Request],
    dest: &Path,
    opts: &Options,
    transfer: Transfer,
    reporter: Arc<dyn FetchReporter>,
) -> Result<FetchOutcome, ClientError> {
    let mut run = FetchRun {
        dest: dest.to_path_buf(),
        opts: opts.clone(),
        reporter: reporter.clone(),
        items: Vec::new(),
        trees: Vec::new(),
        seen: HashSet::new(),
        pending: Vec::new(),
        verifying: Vec::new(),
        paths: HashMap::new(),
        spool: None,
        // Same machine, fresh destination: copy the blobs of downloaded archives while the daemon
        // is still working on the others (`materialize/prestage.rs`). Best effort: without it the
        // copies are simply made later.
        prestager: (transfer == Transfer::LocalPaths
            && !opts.verify
            && opts.copy_mode != CopyMode::Hardlink
            && materialize::is_fresh(dest, opts))
        .then(|| Prestager::start(dest).ok())
        .flatten(),
        cold: HashMap::new(),
    };
    if run.prestager.is_none() {
        // Copies a killed run left behind (a prestager replaces them itself when it starts).
        let _ = fs::remove_dir_all(dest.join(PRESTAGE_DIR));
    }
    let mut resolved = Vec::new();
    let mut daemon = DaemonTotals::default();
    // Kept open until materialization is done: the daemon holds its leases until they close.
    let mut streams = Vec::with_capacity(requests.len());
    for request in requests {
        let req = pb::FetchRequest {
            resolve: Some(request.to_pb()),
            local_paths: transfer == Transfer::LocalPaths,
            blob_path_batches: true,
        };
        let mut stream = client
            .fetch(req)
            .await
            .map_err(|s| ClientError::from_status("Fetch", s))?
            .into_inner();
        let mut needed: Option<HashSet<Blake3>> = None;
        loop {
            let event = stream
                .message()
                .await
                .map_err(|s| ClientError::from_status("Fetch", s))?
                .ok_or_else(|| ClientError::Lost {
                    rpc: "Fetch",
                    message: "the stream ended before its summary".into(),
                })?;
            match event.event {
                None => {}
                Some(Event::Resolved(r)) => {
                    let rs: Vec<Resolved> = r.artifacts.into_iter().map(Resolved::from).collect();
                    reporter.on_resolved(&rs);
                    resolved.extend(rs);
                }
                Some(Event::Progress(p)) => reporter.on_archive_ready(
                    &p.artifact,
                    p.bytes_done,
                    p.bytes_total,
                    p.downloaded_bytes,
                ),
                Some(Event::Tree(t)) => {
                    run.note_cold(&t);
                    run.pending.push(t)
                }
                Some(Event::BlobPath(b)) => run.add_path(b)?,
                Some(Event::BlobPaths(batch)) => {
                    // Each archive's tree comes before its blobs: verify trees while paths stream in.
                    run.start_absorbing();
                    for b in batch.paths {
                        run.add_path(b)?;
                    }
                }
                Some(Event::BlobChunk(chunk)) => {
                    if transfer != Transfer::Stream {
                        return Err(protocol(
                            "blob bytes arrived although CAS paths were asked for",
                        ));
                    }
                    if needed.is_none() {
                        run.absorb_trees().await?;
                        needed = Some(run.blobs_needed().await?);
                    }
                    let spool = match &mut run.spool {
                        Some(s) => s,
                        None => run.spool.insert(Spool::start(&run.dest)?),
                    };
                    let n = chunk.data.len() as u64;
                    spool
                        .chunk(chunk, needed.as_ref().expect("set above"))
                        .await?;
                    reporter.on_blob_bytes(n);
                }
                Some(Event::Summary(s)) => {
                    daemon.add(&s);
                    break;
                }
            }
        }
        run.absorb_trees().await?;
        streams.push(stream);
    }
    let (received_bytes, received_blobs) = match run.spool.as_mut() {
        Some(s) => s.finish().await?,
        None => (0, 0),
    };
    let spool_dir = run.spool.as_ref().map(|s| s.dir.clone());
    // The state file remembers where each archive came from (`cairn push` records it as reuse).
    run.opts.sources = resolved
        .iter()
        .filter_map(|r| Some((r.artifact.clone(), r.producer.as_ref()?.run_id.clone())))
        .collect();
    let report = run.materialize(spool_dir.clone()).await;
    drop(streams);
    if let Some(dir) = spool_dir {
        let _ = tokio::task::spawn_blocking(move || fs::remove_dir_all(dir)).await;
    }
    Ok(FetchOutcome {
        resolved,
        trees: run.trees,
        daemon,
        received_bytes,
        received_blobs,
        report: report?,
    })
}

/// What a [`warm`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Warmed {
    /// Every resolved archive and every missing artifact.
    pub resolved: Vec<Resolved>,
    /// The daemon's summaries (`storage_bytes`: what it downloaded).
    pub daemon: DaemonTotals,
    /// The tree digests of the archives made local (what a pin holds).
    pub trees: Vec<Blake3>,
}

/// Prefetch: have the daemon make the archives of `requests` local (download and ingest what its
/// store lacks) without materializing anything. Each request is one `Fetch` stream asking for CAS
/// paths, read to its summary and closed (the paths are not used, so this also warms a daemon
/// reached over TCP); missing artifacts are reported, not an error.
pub async fn warm(
    client: &mut CairnClient<DaemonChannel>,
    requests: &[Request],
) -> Result<Warmed, ClientError> {
    let mut warmed = Warmed::default();
    for request in requests {
        if request.artifacts.is_empty() {
            continue;
        }
        let req = pb::FetchRequest {
            resolve: Some(request.to_pb()),
            local_paths: true,
            blob_path_batches: true,
        };
        let mut stream = client
            .fetch(req)
            .await
            .map_err(|s| ClientError::from_status("Fetch", s))?
            .into_inner();
        loop {
            let event = stream
                .message()
                .await
                .map_err(|s| ClientError::from_status("Fetch", s))?
                .ok_or_else(|| ClientError::Lost {
                    rpc: "Fetch",
                    message: "the stream ended before its summary".into(),
                })?;
            match event.event {
                Some(Event::Resolved(r)) => warmed
                    .resolved
                    .extend(r.artifacts.into_iter().map(Resolved::from)),
                Some(Event::Tree(t)) => {
                    if let Ok(d) = t.tree_digest.parse() {
                        warmed.trees.push(d);
                    }
                }
                Some(Event::Summary(s)) => {
                    warmed.daemon.add(&s);
                    break;
                }
                _ => {}
            }
        }
    }
    Ok(warmed)
}

fn protocol(detail: impl Into<String>) -> ClientError {
    ClientError::Protocol {
        rpc: "Fetch",
        detail: detail.into(),
    }
}

fn parse_digest(hex: &str) -> Result<Blake3, ClientError> {
    hex.parse()
        .map_err(|e| protocol(format!("bad digest `{hex}`: {e}")))
}

fn join_error(e: tokio::task::JoinError) -> ClientError {
    protocol(format!("a worker task failed: {e}"))
}

/// A wire tree checked against its digest, ready to materialize.
type Verified = (MaterializeItem, FetchedTree);

/// The state of one fetch across its streams.
struct FetchRun {
    dest: PathBuf,
    opts: Options,
    reporter: Arc<dyn FetchReporter>,
    items: Vec<MaterializeItem>,
    trees: Vec<FetchedTree>,
    /// Archives already taken (generic archives come once per family request).
    seen: HashSet<String>,
    /// Trees received but not yet verified.
    pending: Vec<pb::ArtifactTree>,
    /// Verifications under way, in arrival order.
    verifying: Vec<tokio::task::JoinHandle<Result<Vec<Verified>, ClientError>>>,
    /// CAS paths (same machine).
    paths: HashMap<Blake3, PathBuf>,
    spool: Option<Spool>,
    /// Copies blobs of downloaded archives early (fresh destinations on this machine).
    prestager: Option<Prestager>,
    /// Blobs of downloaded archives, with their sizes: the ones worth prestaging.
    cold: HashMap<Blake3, u64>,
}

impl FetchRun {
    /// Remember where a blob lives; start copying it when its archive was downloaded.
    fn add_path(&mut self, b: pb::BlobPath) -> Result<(), ClientError> {
        let digest = parse_digest(&b.blake3)?;
        let path = PathBuf::from(b.path);
        if let Some(p) = self.prestager.as_mut()
            && let Some(size) = self.cold.get(&digest)
        {
            p.submit(digest, path.clone(), *size);
        }
        self.paths.insert(digest, path);
        Ok(())
    }

    /// Note the blobs of a tree the daemon downloaded (not served from its cache): copying them
    /// early pays off, since the daemon still has work to do.
    fn note_cold(&mut self, t: &pb::ArtifactTree) {
        if self.prestager.is_none() || t.source != "storage" {
            return;
        }
        for e in &t.entries {
            if e.kind == "file"
                && let Ok(d) = e.blake3.parse::<Blake3>()
            {
                self.cold.insert(d, e.size);
            }
        }
    }

    /// Start verifying the pending trees on a blocking thread (hashing: off the runtime threads);
    /// [`FetchRun::absorb_trees`] collects the result.
    fn start_absorbing(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        self.verifying.push(tokio::task::spawn_blocking(move || {
            pending
                .into_iter()
                .map(tree_from_pb)
                .collect::<Result<Vec<_>, _>>()
        }));
    }

    /// Verify the pending trees and keep the new ones, in the order they arrived.
    async fn absorb_trees(&mut self) -> Result<(), ClientError> {
        self.start_absorbing();
        for task in std::mem::take(&mut self.verifying) {
            let converted = task.await.map_err(join_error)??;
            self.keep(converted);
        }
        Ok(())
    }

    /// Keep the trees of archives not taken yet: a `generic` archive comes once per family request.
    fn keep(&mut self, converted: Vec<Verified>) {
        for (item, info) in converted {
            if self.seen.insert(item.artifact.clone()) {
                self.items.push(item);
                self.trees.push(info);
            }
        }
    }

    /// The blobs the destination lacks for the trees known so far.
    async fn blobs_needed(&self) -> Result<HashSet<Blake3>, ClientError> {
        let items = self.items.clone();
        let dest = self.dest.clone();
        let opts = self.opts.clone();
        let needed =
            tokio::task::spawn_blocking(move || materialize::blobs_needed(&items, &dest, &opts))
                .await
                .map_err(join_error)??;
        Ok(needed.into_iter().collect())
    }

    async fn materialize(&mut self, spool: Option<PathBuf>) -> Result<Report, ClientError> {
        let items = self.items.clone();
        let dest = self.dest.clone();
        let opts = self.opts.clone();
        let reporter = self.reporter.clone();
        let paths = std::mem::take(&mut self.paths);
        let prestager = self.prestager.take();
        let report = tokio::task::spawn_blocking(move || {
            let reporter: &dyn Reporter = &*reporter;
            match (spool, prestager) {
                (Some(dir), _) => {
                    let blobs = DirBlobs::flat(dir);
                    materialize::materialize(
                        &items,
                        &blobs as &dyn BlobSource,
                        &dest,
                        &opts,
                        reporter,
                    )
                }
                (None, Some(prestager)) => {
                    let blobs = prestager.finish(paths);
                    materialize::materialize(&items, &blobs, &dest, &opts, reporter)
                }
                (None, None) => materialize::materialize(&items, &paths, &dest, &opts, reporter),
            }
        })
        .await
        .map_err(join_error)??;
        Ok(report)
    }
}

/// A wire tree as a verified [`Tree`]: entries must be well formed and hash to the announced digest.
pub fn tree_from_pb(t: pb::ArtifactTree) -> Result<(MaterializeItem, FetchedTree), ClientError> {
    let bad = |what: String| protocol(format!("tree of `{}`: {what}", t.artifact));
    let rel = |s: &str| RelPath::new(s).map_err(|e| bad(format!("path `{s}`: {e}")));
    let manifest = t
        .manifest
        .iter()
        .map(|m| rel(m))
        .collect::<Result<Vec<_>, _>>()?;
    let mut entries = Vec::with_capacity(t.entries.len());
    for e in &t.entries {
        // A name that is not UTF-8 comes byte-exact in the `_bytes` field, with the string empty;
        // one spelling per name, as in the tree JSON.
        let path_bytes = match (e.path.is_empty(), e.path_bytes.is_empty()) {
            (false, true) => e.path.as_bytes(),
            (true, false) if std::str::from_utf8(&e.path_bytes).is_err() => &e.path_bytes[..],
            _ => {
                return Err(bad(format!(
                    "entry `{}` (`path_bytes` `{}`) needs exactly one of `path` and `path_bytes`, \
                     the latter only for a name that is not UTF-8",
                    e.path,
                    escape_bytes(&e.path_bytes)
                )));
            }
        };
        let path = RelPath::from_bytes(path_bytes)
            .map_err(|err| bad(format!("path `{}`: {err}", escape_bytes(path_bytes))))?;
        let link_target = match (e.link_target.is_empty(), e.link_target_bytes.is_empty()) {
            (true, true) => None,
            (false, true) => Some(e.link_target.as_bytes()),
            (true, false) if std::str::from_utf8(&e.link_target_bytes).is_err() => {
                Some(&e.link_target_bytes[..])
            }
            _ => {
                return Err(bad(format!(
                    "entry `{path}` needs at most one of `link_target` and `link_target_bytes`, \
                     the latter only for a target that is not UTF-8"
                )));
            }
        };
        let link_target = link_target
            .map(LinkTarget::from_bytes)
            .transpose()
            .map_err(|err| bad(format!("entry `{path}`: {err}")))?;
        let kind = match e.kind.as_str() {
            "file" => EntryKind::File,
            "dir" => EntryKind::Dir,
            "symlink" => EntryKind::Symlink,
            "hardlink" => EntryKind::Hardlink,
            other => {
                return Err(bad(format!("entry `{path}` has unknown kind `{other}`")));
            }
        };
        let blake3 = if e.blake3.is_empty() {
            None
        } else {
            Some(
                e.blake3
                    .parse()
                    .map_err(|err| bad(format!("entry `{path}`: {err}")))?,
            )
        };
        entries.push(TreeEntry {
            path,
            kind,
            mode: e.mode,
            size: e.size,
            blake3,
            link_target,
        });
    }
    let tree = Tree::new(manifest, entries);
    let expected: Blake3 = t
        .tree_digest
        .parse()
        .map_err(|err| bad(format!("tree digest: {err}")))?;
    let actual = tree.digest();
    if actual != expected {
        return Err(ClientError::TreeDigest {
            artifact: t.artifact,
            expected,
            actual,
        });
    }
    let info = FetchedTree {
        artifact: t.artifact.clone(),
        tree_digest: t.tree_digest,
        source: t.source,
        run_id: t.run_id,
        files: tree.file_count() as u64,
        bytes: tree.total_size(),
    };
    Ok((
        MaterializeItem {
            artifact: t.artifact,
            tree: Arc::new(tree),
        },
        info,
    ))
}

/// A chunk bound for the spool writer.
struct SpoolChunk {
    digest: Blake3,
    offset: u64,
    data: Vec<u8>,
    last: bool,
}

/// Receives streamed blobs into `{dest}/.cairn-spool/{hex}`: a writer thread appends and hashes
/// while the next chunks arrive; a blob gets its name only once its bytes hash to it.
struct Spool {
    dir: PathBuf,
    tx: Option<mpsc::Sender<SpoolChunk>>,
    writer: Option<tokio::task::JoinHandle<Result<(u64, u64), ClientError>>>,
    /// The blob whose chunks are arriving, and whether they are kept.
    current: Option<(Blake3, bool)>,
    /// Blobs already kept (requests of several families send shared blobs again).
    kept: HashSet<Blake3>,
}

impl Spool {
    fn start(dest: &Path) -> Result<Spool, ClientError> {
        let dir = dest.join(SPOOL_DIR);
        let io = |source| ClientError::Io {
            path: dir.clone(),
            source,
        };
        // A spool left by a killed run holds nothing we can trust without rehashing: start over.
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io)?;
        }
        fs::create_dir_all(&dir).map_err(io)?;
        let (tx, rx) = mpsc::channel(8);
        let writer_dir = dir.clone();
        let writer = tokio::task::spawn_blocking(move || write_spool(&writer_dir, rx));
        Ok(Spool {
            dir,
            tx: Some(tx),
            writer: Some(writer),
            current: None,
            kept: HashSet::new(),
        })
    }

    async fn chunk(
        &mut self,
        chunk: pb::BlobChunk,
        needed: &HashSet<Blake3>,
    ) -> Result<(), ClientError> {
        let digest = parse_digest(&chunk.blake3)?;
        let keep = match self.current {
            Some((d, keep)) if d == digest => keep,
            _ => {
                if chunk.offset != 0 {
                    return Err(protocol(format!(
                        "blob {digest} starts at offset {}",
                        chunk.offset
                    )));
                }
                needed.contains(&digest) && self.kept.insert(digest)
            }
        };
        self.current = (!chunk.last).then_some((digest, keep));
        if !keep {
            return Ok(());
        }
        let msg = SpoolChunk {
            digest,
            offset: chunk.offset,
            data: chunk.data,
            last: chunk.last,
        };
        let sent = match &self.tx {
            Some(tx) => tx.send(msg).await.is_ok(),
            None => false,
        };
        if !sent {
            // The writer stopped: its result says why.
            self.finish().await?;
            return Err(protocol("the spool writer stopped"));
        }
        Ok(())
    }

    /// Wait for the writer; returns bytes and blobs kept.
    async fn finish(&mut self) -> Result<(u64, u64), ClientError> {
        if let Some((d, true)) = self.current {
            return Err(protocol(format!("blob {d} ended without its last chunk")));
        }
        self.tx = None;
        match self.writer.take() {
            Some(w) => w.await.map_err(join_error)?,
            None => Ok((0, 0)),
        }
    }
}

/// The spool writer (a blocking thread): one blob at a time, in order.
fn write_spool(dir: &Path, mut rx: mpsc::Receiver<SpoolChunk>) -> Result<(u64, u64), ClientError> {
    struct Open {
        digest: Blake3,
        file: fs::File,
        tmp: PathBuf,
        hasher: blake3::Hasher,
        written: u64,
    }
    let mut open: Option<Open> = None;
    let (mut bytes, mut blobs) = (0u64, 0u64);
    while let Some(c) = rx.blocking_recv() {
        let o = match &mut open {
            Some(o) if o.digest == c.digest => o,
            _ => {
                let tmp = dir.join(format!("{}.part", c.digest.to_hex()));
                let file = fs::File::create(&tmp).map_err(|source| ClientError::Io {
                    path: tmp.clone(),
                    source,
                })?;
                open.insert(Open {
                    digest: c.digest,
                    file,
                    tmp,
                    hasher: blake3::Hasher::new(),
                    written: 0,
                })
            }
        };
        if c.offset != o.written {
            return Err(protocol(format!(
                "blob {}: chunk at offset {} after {} bytes",
                c.digest, c.offset, o.written
            )));
        }
        o.file
            .write_all(&c.data)
            .map_err(|source| ClientError::Io {
                path: o.tmp.clone(),
                source,
            })?;
        o.hasher.update(&c.data);
        o.written += c.data.len() as u64;
        if c.last {
            let o = open.take().expect("open above");
            let actual = Blake3(*o.hasher.finalize().as_bytes());
            if actual != o.digest {
                let _ = fs::remove_file(&o.tmp);
                return Err(ClientError::BlobDigest {
                    expected: o.digest,
                    actual,
                });
            }
            drop(o.file);
            let dest = dir.join(o.digest.to_hex());
            fs::rename(&o.tmp, &dest).map_err(|source| ClientError::Io { path: dest, source })?;
            bytes += o.written;
            blobs += 1;
        }
    }
    Ok((bytes, blobs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire_tree(entries: Vec<pb::TreeEntry>, digest: Option<&str>) -> pb::ArtifactTree {
        let tree = Tree::new(
            vec![RelPath::new("math-libs/foo/stage").unwrap()],
            entries
                .iter()
                .map(|e| TreeEntry {
                    path: if e.path_bytes.is_empty() {
                        RelPath::new(&e.path).unwrap()
                    } else {
                        RelPath::from_bytes(&e.path_bytes).unwrap()
                    },
                    kind: match e.kind.as_str() {
                        "file" => EntryKind::File,
                        "dir" => EntryKind::Dir,
                        _ => EntryKind::Symlink,
                    },
                    mode: e.mode,
                    size: e.size,
                    blake3: (!e.blake3.is_empty()).then(|| e.blake3.parse().unwrap()),
                    link_target: if e.link_target_bytes.is_empty() {
                        (!e.link_target.is_empty()).then(|| e.link_target.parse().unwrap())
                    } else {
                        Some(LinkTarget::from_bytes(&e.link_target_bytes).unwrap())
                    },
                })
                .collect(),
        );
        pb::ArtifactTree {
            artifact: "foo_lib_generic".into(),
            tree_digest: digest.map_or_else(|| tree.digest().to_hex(), str::to_string),
            manifest: vec!["math-libs/foo/stage".into()],
            entries,
            source: "cas".into(),
            run_id: "7".into(),
        }
    }

    fn file(path: &str, content: &[u8]) -> pb::TreeEntry {
        pb::TreeEntry {
            path: path.into(),
            kind: "file".into(),
            mode: 0o644,
            size: content.len() as u64,
            blake3: Blake3::of(content).to_hex(),
            link_target: String::new(),
            ..Default::default()
        }
    }

    #[test]
    fn wire_trees_are_verified_against_their_digest() {
        let entries = vec![
            file("math-libs/foo/stage/lib/libfoo.so", b"elf"),
            pb::TreeEntry {
                path: "math-libs/foo/stage/lib/libfoo.so.1".into(),
                kind: "symlink".into(),
                mode: 0o777,
                size: 0,
                blake3: String::new(),
                link_target: "libfoo.so".into(),
                ..Default::default()
            },
        ];
        let (item, info) = tree_from_pb(wire_tree(entries.clone(), None)).unwrap();
        assert_eq!(item.tree.entries.len(), 2);
        assert_eq!((info.files, info.bytes, info.run_id.as_str()), (1, 3, "7"));

        let wrong = Blake3::of(b"something else").to_hex();
        let err = tree_from_pb(wire_tree(entries, Some(&wrong))).unwrap_err();
        assert!(matches!(err, ClientError::TreeDigest { .. }), "{err}");
    }

    #[test]
    fn hostile_wire_paths_are_refused() {
        let mut t = wire_tree(vec![file("math-libs/foo/stage/a", b"a")], None);
        t.entries[0].path = "../../etc/passwd".into();
        let err = tree_from_pb(t).unwrap_err();
        assert!(err.to_string().contains("../../etc/passwd"), "{err}");
    }

    #[test]
    fn non_utf8_wire_names_are_kept_as_bytes_and_hostile_ones_refused() {
        let link = pb::TreeEntry {
            path_bytes: b"math-libs/foo/stage/l\xfe".to_vec(),
            kind: "symlink".into(),
            mode: 0o777,
            link_target_bytes: b"caf\xe9".to_vec(),
            ..Default::default()
        };
        let (item, _) = tree_from_pb(wire_tree(vec![link.clone()], None)).unwrap();
        let e = &item.tree.entries[0];
        assert_eq!(e.path.as_bytes(), b"math-libs/foo/stage/l\xfe");
        assert_eq!(
            e.link_target.as_ref().map(|t| t.as_bytes()),
            Some(&b"caf\xe9"[..])
        );

        let refused = |edit: fn(&mut pb::TreeEntry), needle: &str| {
            let mut t = wire_tree(vec![link.clone()], None);
            edit(&mut t.entries[0]);
            let err = tree_from_pb(t).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        };
        refused(
            |e| e.path_bytes = b"../\xff".to_vec(),
            "`../\\xff` contains `..`",
        );
        refused(
            |e| e.path_bytes = b"math-libs/foo/stage/\xff/../../x".to_vec(),
            "contains `..`",
        );
        refused(
            |e| e.path = "math-libs/foo/stage/l".into(),
            "exactly one of",
        );
        // A UTF-8 name has one spelling: the string field.
        refused(
            |e| e.path_bytes = b"math-libs/foo/stage/l".to_vec(),
            "exactly one of",
        );
        refused(|e| e.link_target = "x".into(), "at most one of");
    }

    fn chunk(digest: &Blake3, offset: u64, data: &[u8], last: bool) -> pb::BlobChunk {
        pb::BlobChunk {
            blake3: digest.to_hex(),
            offset,
            data: data.to_vec(),
            last,
        }
    }

    #[tokio::test]
    async fn spool_keeps_needed_blobs_that_hash_to_their_name() {
        let dest = tempfile::tempdir().unwrap();
        let a = Blake3::of(b"hello world");
        let b = Blake3::of(b"unneeded");
        let needed: HashSet<Blake3> = [a].into();
        let mut spool = Spool::start(dest.path()).unwrap();
        spool
            .chunk(chunk(&a, 0, b"hello ", false), &needed)
            .await
            .unwrap();
        spool
            .chunk(chunk(&a, 6, b"world", false), &needed)
            .await
            .unwrap();
        spool
            .chunk(chunk(&a, 11, b"", true), &needed)
            .await
            .unwrap();
        spool
            .chunk(chunk(&b, 0, b"unneeded", true), &needed)
            .await
            .unwrap();
        // Sent again by a second request: kept once.
        spool
            .chunk(chunk(&a, 0, b"hello world", true), &needed)
            .await
            .unwrap();
        assert_eq!(spool.finish().await.unwrap(), (11, 1));
        let dir = dest.path().join(SPOOL_DIR);
        assert_eq!(fs::read(dir.join(a.to_hex())).unwrap(), b"hello world");
        assert!(!dir.join(b.to_hex()).exists());
    }

    #[tokio::test]
    async fn spool_refuses_bytes_that_do_not_hash_to_the_blob_name() {
        let dest = tempfile::tempdir().unwrap();
        let a = Blake3::of(b"the real content");
        let needed: HashSet<Blake3> = [a].into();
        let mut spool = Spool::start(dest.path()).unwrap();
        spool
            .chunk(chunk(&a, 0, b"forged content!!", true), &needed)
            .await
            .unwrap();
        let err = spool.finish().await.unwrap_err();
        assert!(
            matches!(err, ClientError::BlobDigest { expected, .. } if expected == a),
            "{err}"
        );
        assert!(!dest.path().join(SPOOL_DIR).join(a.to_hex()).exists());
    }

    #[tokio::test]
    async fn spool_refuses_gaps() {
        let dest = tempfile::tempdir().unwrap();
        let a = Blake3::of(b"abcdef");
        let needed: HashSet<Blake3> = [a].into();
        let mut spool = Spool::start(dest.path()).unwrap();
        spool
            .chunk(chunk(&a, 0, b"abc", false), &needed)
            .await
            .unwrap();
        spool.chunk(chunk(&a, 4, b"ef", true), &needed).await.ok();
        let err = spool.finish().await.unwrap_err();
        assert!(err.to_string().contains("offset 4"), "{err}");
    }

    #[test]
    fn summary_counts_archives_by_source_and_keeps_the_wall_time() {
        let elapsed = std::time::Duration::from_millis(1500);
        let none = Summary::of(None, elapsed);
        assert_eq!((none.artifacts, none.elapsed_ms), (0, 1500));
        let tree = |artifact: &str, source: &str| FetchedTree {
            artifact: artifact.into(),
            tree_digest: String::new(),
            source: source.into(),
            run_id: "7".into(),
            files: 1,
            bytes: 1,
        };
        let missing = Resolved {
            artifact: "gone".into(),
            name: "gone".into(),
            component: String::new(),
            family: String::new(),
            fingerprint: String::new(),
            status: Status::Missing,
            producer: None,
            tree_digest: String::new(),
            explanation: Vec::new(),
        };
        let outcome = FetchOutcome {
            resolved: vec![missing],
            trees: vec![
                tree("a_lib_generic", "cas"),
                tree("b_lib_generic", "storage"),
                tree("c_lib_generic", "cas"),
            ],
            daemon: DaemonTotals {
                storage_bytes: 42,
                runs: vec!["7".into()],
                ..DaemonTotals::default()
            },
            received_bytes: 9,
            received_blobs: 1,
            report: Report {
                files_written: 3,
                ..Report::default()
            },
        };
        let s = Summary::of(Some(&outcome), elapsed);
        assert_eq!((s.artifacts, s.missing), (3, 1));
        assert_eq!((s.from_cas, s.from_storage, s.storage_bytes), (2, 1, 42));
        assert_eq!((s.files_written, s.received_bytes), (3, 9));
        assert_eq!(s.runs, ["7"]);
    }
}
