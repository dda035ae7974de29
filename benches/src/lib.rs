//! Bench helpers shared by the `cairn-bench` binary (driven by `benches/e2e.sh`) and the criterion
//! micro-benchmarks: generating a whole TheRock-shaped run at a [`Scale`], and materializing trees
//! straight from a [`LocalStore`] (the warm-bootstrap path without the RPC hop).

pub mod s3_server;
pub mod trace;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use cairn_client::materialize::{self, BlobSource, Layout, MaterializeItem, NoReporter, Options};
use cairn_daemon::archive::CreateOptions;
use cairn_daemon::store::{LocalStore, StoreConfig};
use cairn_fingerprint::{Blake3, Compression, Topology};
use cairn_testkit::datagen::{self, ArtifactSpec, GENERATED_MTIME};
use cairn_testkit::scale::{self, Scale};
use rayon::prelude::*;

/// How many per-family jobs republish the same `_generic` content in the dedup bench.
pub const REPUBLISH_JOBS: usize = 4;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Total size preset.
    pub scale: Scale,
    /// Explicit total bytes (overrides the preset's).
    pub bytes: Option<u64>,
    /// PRNG seed.
    pub seed: u64,
    /// Stage whose inbound archives the benches bootstrap.
    pub stage: String,
    /// GPU family of the bench (target-specific artifacts are generated for it).
    pub family: String,
    /// Also write `.tar.xz` archives of the stage's inbound artifacts.
    pub xz: bool,
}

/// What [`generate_run`] wrote under its output directory:
///
/// - `run/`: every archive of the run as `.tar.zst` + `.sha256sum`;
/// - `xz/`: the stage's inbound archives as `.tar.xz` + `.sha256sum` (when asked);
/// - `republish/job{1..4}/`: the stage's `_generic` outputs archived by each family job (different
///   mtimes and member order, hence different SHA-256, same files);
/// - `stage-zst.txt`, `stage-xz.txt`, `republish.txt`: archive file names, one per line;
/// - `summary.json`: this struct.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GenSummary {
    /// Scale name.
    pub scale: String,
    /// Seed.
    pub seed: u64,
    /// Bench stage and family.
    pub stage: String,
    /// Bench family.
    pub family: String,
    /// Archives in `run/`.
    pub run_archives: usize,
    /// Sum of file contents across the run.
    pub run_uncompressed: u64,
    /// Sum of `.tar.zst` sizes across the run.
    pub run_compressed: u64,
    /// Files across the run.
    pub run_files: u64,
    /// Inbound archives of the stage.
    pub stage_archives: usize,
    /// Their content bytes.
    pub stage_uncompressed: u64,
    /// Their `.tar.zst` bytes.
    pub stage_zst: u64,
    /// Their `.tar.xz` bytes (0 when not generated).
    pub stage_xz: u64,
    /// Their file count.
    pub stage_files: u64,
    /// The largest `.tar.zst` of the run (file name).
    pub largest_archive: String,
    /// Its content bytes.
    pub largest_uncompressed: u64,
    /// A `.tar.zst` of about a tenth of the largest one's size (RSS comparison).
    pub tenth_archive: String,
    /// Its content bytes.
    pub tenth_uncompressed: u64,
    /// `_generic` archives per republishing job.
    pub republish_archives: usize,
    /// Their content bytes (one job's worth).
    pub republish_uncompressed: u64,
}

/// One generated archive (zstd), with flags for where else it went.
struct Made {
    stem: String,
    file: String,
    uncompressed: u64,
    compressed: u64,
    files: u64,
    xz: u64,
    in_stage: bool,
    republished: bool,
}

/// Load the topology at `path`.
pub fn load_topology(path: &Path) -> Result<Topology> {
    Topology::load(path).with_context(|| format!("loading the topology `{}`", path.display()))
}

/// Generate a whole run under `out` (see [`GenSummary`] for the layout). Archives are generated one
/// artifact at a time in parallel and their exploded directories deleted at once, so the disk holds
/// the archives plus at most one directory per worker.
pub fn generate_run(out: &Path, topology: &Topology, opts: &GenOptions) -> Result<GenSummary> {
    let total = opts.bytes.unwrap_or(opts.scale.total_bytes());
    let mut specs = scale::run_specs(topology, total, &[opts.family.as_str()], opts.seed);
    for s in &mut specs {
        s.shape = opts.scale.shape();
    }
    let inbound: Vec<String> = scale::stage_inbound(topology, &specs, &opts.stage, &opts.family)?
        .iter()
        .map(|s| s.dir_name())
        .collect();
    let generic: Vec<String> = scale::stage_generic_outputs(topology, &specs, &opts.stage)?
        .iter()
        .map(|s| s.dir_name())
        .collect();
    if inbound.is_empty() {
        bail!("stage `{}` has no inbound archives to bench", opts.stage);
    }
    let run_dir = out.join("run");
    let xz_dir = out.join("xz");
    let work = out.join(".work");
    for d in [&run_dir, &xz_dir, &work] {
        fs::create_dir_all(d).with_context(|| format!("creating `{}`", d.display()))?;
    }
    // Largest first: the big ones start early and the small ones fill the gaps.
    let mut order: Vec<&ArtifactSpec> = specs.iter().collect();
    order.sort_by_key(|s| std::cmp::Reverse(s.bytes));
    let made: Vec<Made> = order
        .par_iter()
        .map(|spec| -> Result<Made> {
            let stem = spec.dir_name();
            let in_stage = inbound.contains(&stem);
            let republished = generic.contains(&stem);
            let tmp = tempfile::tempdir_in(&work)?;
            let dir = datagen::generate_artifact_dir(tmp.path(), spec)
                .with_context(|| format!("generating `{stem}`"))?;
            let zst = datagen::archive_artifact_dir(&dir, &run_dir, Compression::Zstd)
                .with_context(|| format!("archiving `{stem}`"))?;
            let mut xz = 0;
            if in_stage && opts.xz {
                xz = datagen::archive_artifact_dir(&dir, &xz_dir, Compression::Xz)
                    .with_context(|| format!("archiving `{stem}` as xz"))?
                    .info
                    .compressed_size;
            }
            if republished {
                for job in 1..=REPUBLISH_JOBS {
                    // Each job's build leaves other mtimes, and scandir order differs: same files,
                    // different archive bytes (FACTS §10: every `_generic` sha256 differs per job).
                    datagen::set_all_mtimes(&dir, GENERATED_MTIME + 3600 * job as i64)?;
                    let mut o = CreateOptions::new(Compression::Zstd);
                    o.reverse_order = job % 2 == 0;
                    datagen::archive_artifact_dir_with(
                        &dir,
                        &out.join("republish").join(format!("job{job}")),
                        &o,
                    )?;
                }
            }
            Ok(Made {
                file: zst
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                stem,
                uncompressed: zst.info.uncompressed_size,
                compressed: zst.info.compressed_size,
                files: zst.info.files,
                xz,
                in_stage,
                republished,
            })
        })
        .collect::<Result<_>>()?;
    let _ = fs::remove_dir_all(&work);

    let mut made = made;
    made.sort_by(|a, b| a.stem.cmp(&b.stem));
    let write_list = |name: &str, items: Vec<String>| -> Result<()> {
        let mut f = fs::File::create(out.join(name))?;
        for i in items {
            writeln!(f, "{i}")?;
        }
        Ok(())
    };
    let stage: Vec<&Made> = made.iter().filter(|m| m.in_stage).collect();
    write_list(
        "stage-zst.txt",
        stage.iter().map(|m| m.file.clone()).collect(),
    )?;
    if opts.xz {
        write_list(
            "stage-xz.txt",
            stage.iter().map(|m| format!("{}.tar.xz", m.stem)).collect(),
        )?;
    }
    let rep: Vec<&Made> = made.iter().filter(|m| m.republished).collect();
    write_list(
        "republish.txt",
        rep.iter().map(|m| m.file.clone()).collect(),
    )?;

    let largest = made
        .iter()
        .max_by_key(|m| m.uncompressed)
        .context("no archives")?;
    let tenth = made
        .iter()
        .min_by_key(|m| m.uncompressed.abs_diff(largest.uncompressed / 10))
        .context("no archives")?;
    let summary = GenSummary {
        scale: opts.scale.to_string(),
        seed: opts.seed,
        stage: opts.stage.clone(),
        family: opts.family.clone(),
        run_archives: made.len(),
        run_uncompressed: made.iter().map(|m| m.uncompressed).sum(),
        run_compressed: made.iter().map(|m| m.compressed).sum(),
        run_files: made.iter().map(|m| m.files).sum(),
        stage_archives: stage.len(),
        stage_uncompressed: stage.iter().map(|m| m.uncompressed).sum(),
        stage_zst: stage.iter().map(|m| m.compressed).sum(),
        stage_xz: stage.iter().map(|m| m.xz).sum(),
        stage_files: stage.iter().map(|m| m.files).sum(),
        largest_archive: largest.file.clone(),
        largest_uncompressed: largest.uncompressed,
        tenth_archive: tenth.file.clone(),
        tenth_uncompressed: tenth.uncompressed,
        republish_archives: rep.len(),
        republish_uncompressed: rep.iter().map(|m| m.uncompressed).sum(),
    };
    fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(summary)
}

/// Regenerate, under `build_dir/artifacts/`, the exploded directories of the archives named in
/// `stems` (archive names or stems) exactly as [`generate_run`] generated them: what a CI job's build
/// leaves for `cairn push`. Returns how many directories were written.
pub fn generate_build_dir(
    build_dir: &Path,
    topology: &Topology,
    opts: &GenOptions,
    stems: &[String],
) -> Result<usize> {
    let total = opts.bytes.unwrap_or(opts.scale.total_bytes());
    let mut specs = scale::run_specs(topology, total, &[opts.family.as_str()], opts.seed);
    for s in &mut specs {
        s.shape = opts.scale.shape();
    }
    let wanted: std::collections::BTreeSet<&str> = stems
        .iter()
        .map(|s| s.split('.').next().unwrap_or(s))
        .collect();
    let chosen: Vec<&ArtifactSpec> = specs
        .iter()
        .filter(|s| wanted.contains(s.dir_name().as_str()))
        .collect();
    if chosen.len() != wanted.len() {
        bail!(
            "{} of {} names are not archives of this run",
            wanted.len() - chosen.len(),
            wanted.len()
        );
    }
    let artifacts = build_dir.join("artifacts");
    fs::create_dir_all(&artifacts)?;
    chosen.par_iter().try_for_each(|spec| -> Result<()> {
        datagen::generate_artifact_dir(&artifacts, spec)
            .with_context(|| format!("generating `{}`", spec.dir_name()))?;
        Ok(())
    })?;
    Ok(chosen.len())
}

/// A [`BlobSource`] reading blobs straight from a local store's CAS.
#[derive(Debug, Clone)]
pub struct StoreBlobs(pub Arc<LocalStore>);

impl BlobSource for StoreBlobs {
    fn blob_path(&self, digest: &Blake3) -> Option<PathBuf> {
        Some(self.0.blob_path(digest))
    }
}

/// Open the store at `dir` with no quota.
pub fn open_store(dir: &Path) -> Result<Arc<LocalStore>> {
    LocalStore::open(dir, StoreConfig::default())
        .with_context(|| format!("opening the store at `{}`", dir.display()))
}

/// Ingest archive files (keyed by file name, verified against their `.sha256sum`) in parallel.
/// Returns the bytes of new blobs written.
pub fn ingest_all(store: &LocalStore, archives: &[PathBuf]) -> Result<u64> {
    archives
        .par_iter()
        .map(|path| -> Result<u64> {
            let key = file_name(path);
            let sidecar = cairn_daemon::archive::sha256sum_path(path);
            let expected = fs::read_to_string(&sidecar)
                .ok()
                .and_then(|t| cairn_fingerprint::names::parse_sha256sum(&t).ok());
            let out = store
                .ingest_file(&key, path, expected)
                .with_context(|| format!("ingesting `{}`", path.display()))?;
            Ok(out.new_blob_bytes)
        })
        .sum()
}

/// Materialize the archives recorded under `keys` from `store` into `dest` in `layout`, copying
/// blobs (`copy_mode` `Auto`: reflink where the filesystem can) or hard-linking them.
pub fn materialize_keys(
    store: &Arc<LocalStore>,
    keys: &[String],
    dest: &Path,
    layout: Layout,
    copy_mode: materialize::CopyMode,
) -> Result<materialize::Report> {
    let items = keys
        .iter()
        .map(|key| -> Result<MaterializeItem> {
            let known = store
                .tree_for_key(key)?
                .with_context(|| format!("archive `{key}` is not in the store"))?;
            Ok(MaterializeItem {
                artifact: key.split('.').next().unwrap_or(key).to_string(),
                tree: known.tree,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let report = materialize::materialize(
        &items,
        &StoreBlobs(store.clone()),
        dest,
        &Options {
            copy_mode,
            ..Options::new(layout)
        },
        &NoReporter,
    )?;
    Ok(report)
}

/// The file name of `path` as a string.
pub fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Read a list file (one name per line, blank lines ignored).
pub fn read_list(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading `{}`", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Call the `Resolve` RPC `calls` times for the inbound artifacts of `stage` at `checkout` (family
/// `family`, Linux) and return each call's milliseconds and the number of archives it found a
/// producer for. The
/// fingerprints are computed once, before the first call: only the daemon's work is timed.
pub fn time_resolve(
    daemon: &str,
    checkout: &Path,
    topology: &Topology,
    stage: &str,
    family: &str,
    calls: usize,
) -> Result<Vec<(f64, usize)>> {
    use cairn_client::api::{self, Policy, Request};
    use cairn_fingerprint::{FingerprintConfig, Fingerprinter, Platform};

    // Windows-only artifacts (core-hipinfo) have no Linux producer; TheRock's Linux fetch skips them.
    let names: Vec<&str> = topology
        .inbound(stage)?
        .into_iter()
        .filter(|n| scale::on_linux(topology, n))
        .collect();
    let fp = Fingerprinter::new(topology, checkout, FingerprintConfig::default())?;
    let fps = fp.compute_some(&names, family, Platform::Linux)?;
    let request = Request {
        stage: stage.to_string(),
        family: family.to_string(),
        platform: "linux".to_string(),
        artifacts: fps.into_iter().map(|(n, fp)| (n, Some(fp))).collect(),
        exclude_components: Vec::new(),
        policy: Policy::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let addr = cairn_client::connect::DaemonAddr::parse(daemon);
        let mut client = cairn_client::connect::connect(&addr).await?;
        let mut out = Vec::with_capacity(calls);
        for _ in 0..calls {
            let start = std::time::Instant::now();
            let (resolved, _runs) = api::resolve(&mut client, &request).await?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            out.push((ms, resolved.iter().filter(|r| r.producer.is_some()).count()));
        }
        Ok(out)
    })
}
