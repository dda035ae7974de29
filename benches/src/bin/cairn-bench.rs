//! `cairn-bench`: the Rust half of `benches/e2e.sh` — generate a TheRock-shaped run at a scale,
//! prepare a store, and run the library-level warm bootstrap. Timing is done by the script, so every
//! row of its table is measured the same way (wall clock around one process).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use cairn_benches::s3_server::{S3ServerOptions, serve as serve_s3};
use cairn_benches::{
    GenOptions, generate_run, ingest_all, load_topology, materialize_keys, read_list,
};
use cairn_client::materialize::{CopyMode, Layout};
use cairn_testkit::scale::Scale;
use clap::{Parser, Subcommand};

/// Bench helper for `benches/e2e.sh`.
#[derive(Debug, Parser)]
#[command(name = "cairn-bench")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a whole run (see `cairn_benches::GenSummary` for the layout) and print its summary.
    Gen {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// `small` (~200 MB), `medium` (~2 GB) or `large` (~8 GB) of file content.
        #[arg(long, default_value = "small")]
        scale: Scale,
        /// Explicit total bytes (overrides `--scale`).
        #[arg(long)]
        bytes: Option<u64>,
        /// PRNG seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The topology.
        #[arg(long, default_value = "BUILD_TOPOLOGY.toml")]
        topology: PathBuf,
        /// Stage whose inbound archives are benched.
        #[arg(long, default_value = "math-libs")]
        stage: String,
        /// GPU family.
        #[arg(long, default_value = "gfx94X-dcgpu")]
        family: String,
        /// Skip the `.tar.xz` copies of the stage's archives.
        #[arg(long)]
        no_xz: bool,
    },
    /// Regenerate the exploded artifact dirs of the listed archives under `BUILD/artifacts/` (what a
    /// CI job leaves for `cairn push`); same options as `gen`.
    Dirs {
        /// Build directory.
        #[arg(long)]
        out: PathBuf,
        /// File listing archive names (or stems), one per line.
        #[arg(long)]
        list: PathBuf,
        #[arg(long, default_value = "small")]
        scale: Scale,
        #[arg(long)]
        bytes: Option<u64>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "BUILD_TOPOLOGY.toml")]
        topology: PathBuf,
        #[arg(long, default_value = "gfx94X-dcgpu")]
        family: String,
    },
    /// Create a TheRock-shaped git checkout (superproject + real submodules) for the topology under
    /// `--out`; prints the superproject path.
    Checkout {
        /// Parent directory (created).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "BUILD_TOPOLOGY.toml")]
        topology: PathBuf,
    },
    /// Time the `Resolve` RPC for a stage's inbound artifacts: prints one line per call with its
    /// milliseconds (the first call on a fresh daemon is the cold one).
    Resolve {
        /// Daemon address (`unix:/path` or `http://host:port`).
        #[arg(long)]
        daemon: String,
        #[arg(long)]
        checkout: PathBuf,
        #[arg(long, default_value = "BUILD_TOPOLOGY.toml")]
        topology: PathBuf,
        #[arg(long, default_value = "math-libs")]
        stage: String,
        #[arg(long, default_value = "gfx94X-dcgpu")]
        family: String,
        /// Calls.
        #[arg(long, default_value_t = 5)]
        calls: usize,
    },
    /// Ingest archives into a store (in parallel, keyed by file name); prints new blob bytes.
    Ingest {
        /// Store directory.
        #[arg(long)]
        store: PathBuf,
        /// Archive files.
        archives: Vec<PathBuf>,
    },
    /// Replay the eviction trace (`cairn_benches::trace`) under quotas of a fraction of its working
    /// set, cost-aware and LRU eviction alternately, and print a Markdown table.
    Trace {
        /// Scratch directory for the indexes (a tmpfs is fastest; removed afterwards).
        #[arg(long)]
        work: PathBuf,
        /// Quotas, percent of the working set.
        #[arg(long, value_delimiter = ',', default_value = "25,50,75")]
        quotas: Vec<u32>,
        /// Trace seed.
        #[arg(long, default_value_t = 16)]
        seed: u64,
        /// Cost-aware half-life as a multiple of the quota (the store uses 1).
        #[arg(long, default_value_t = 1.0)]
        half_life: f64,
    },
    /// Serve S3 over a directory on 127.0.0.1 (`cairn_benches::s3_server`) until killed; the
    /// endpoint (`http://127.0.0.1:PORT`) is written to `--endpoint-file` once it listens.
    S3Server {
        /// Directory holding the buckets.
        #[arg(long)]
        root: PathBuf,
        /// File the endpoint is written to.
        #[arg(long)]
        endpoint_file: PathBuf,
        /// Access key requests are signed with.
        #[arg(long, env = "AWS_ACCESS_KEY_ID")]
        access_key: String,
        /// Secret key requests are signed with.
        #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
        secret_key: String,
    },
    /// Materialize archives already in a store into `--dest` (bootstrap layout by default).
    Materialize {
        /// Store directory.
        #[arg(long)]
        store: PathBuf,
        /// File listing the archive keys (file names), one per line.
        #[arg(long)]
        keys: PathBuf,
        /// Destination build directory.
        #[arg(long)]
        dest: PathBuf,
        /// Plain layout (`DEST/artifacts/{artifact}/`) instead of bootstrap.
        #[arg(long)]
        plain: bool,
        /// Hard-link blobs into the tree instead of copying (`cairn bootstrap --hardlink`).
        #[arg(long)]
        hardlink: bool,
    },
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Gen {
            out,
            scale,
            bytes,
            seed,
            topology,
            stage,
            family,
            no_xz,
        } => {
            let topology = load_topology(&topology)?;
            let opts = GenOptions {
                scale,
                bytes,
                seed,
                stage,
                family,
                xz: !no_xz,
            };
            let summary = generate_run(&out, &topology, &opts)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Command::Dirs {
            out,
            list,
            scale,
            bytes,
            seed,
            topology,
            family,
        } => {
            let topology = load_topology(&topology)?;
            let opts = GenOptions {
                scale,
                bytes,
                seed,
                stage: String::new(),
                family,
                xz: false,
            };
            let n = cairn_benches::generate_build_dir(&out, &topology, &opts, &read_list(&list)?)?;
            println!("dirs={n}");
        }
        Command::Checkout { out, topology } => {
            let text = std::fs::read_to_string(&topology)
                .with_context(|| format!("reading `{}`", topology.display()))?;
            let c = cairn_testkit::checkout::Checkout::create(&out, &text)?;
            println!("{}", c.root.display());
        }
        Command::Resolve {
            daemon,
            checkout,
            topology,
            stage,
            family,
            calls,
        } => {
            let topology = load_topology(&topology)?;
            let times =
                cairn_benches::time_resolve(&daemon, &checkout, &topology, &stage, &family, calls)?;
            for (ms, archives) in times {
                println!("{ms:.3} {archives}");
            }
        }
        Command::Trace {
            work,
            quotas,
            seed,
            half_life,
        } => trace(&work, &quotas, seed, half_life)?,
        Command::S3Server {
            root,
            endpoint_file,
            access_key,
            secret_key,
        } => {
            let opts = S3ServerOptions {
                root,
                endpoint_file,
                access_key,
                secret_key,
            };
            tokio::runtime::Runtime::new()?.block_on(serve_s3(&opts))?;
        }
        Command::Ingest { store, archives } => {
            let store = cairn_benches::open_store(&store)?;
            let bytes = ingest_all(&store, &archives)?;
            println!("new_blob_bytes={bytes}");
        }
        Command::Materialize {
            store,
            keys,
            dest,
            plain,
            hardlink,
        } => {
            let store = cairn_benches::open_store(&store)?;
            let keys = read_list(&keys)?;
            let layout = if plain {
                Layout::Plain
            } else {
                Layout::Bootstrap
            };
            let mode = if hardlink {
                CopyMode::Hardlink
            } else {
                CopyMode::Auto
            };
            let r = materialize_keys(&store, &keys, &dest, layout, mode)?;
            println!(
                "artifacts={} files={} bytes={} reflink={} copy_file_range={} read_write={} hardlink={} elapsed_ms={}",
                r.artifacts,
                r.files,
                r.bytes,
                r.copies.reflink,
                r.copies.copy_file_range,
                r.copies.read_write,
                r.copies.hardlink_blob,
                r.elapsed.as_millis()
            );
        }
    }
    Ok(())
}

fn trace(work: &std::path::Path, quotas: &[u32], seed: u64, half_life: f64) -> Result<()> {
    use cairn_benches::trace::{Bound, TraceShape, generate, replay, replay_bound};
    use cairn_daemon::store::score::EvictionPolicy;
    let shape = TraceShape {
        seed,
        ..TraceShape::default()
    };
    let t = generate(&shape);
    let s = &t.summary;
    let gb = |b: u64| b as f64 / 1e9;
    println!(
        "Trace (seed {seed}): {} commits, {} CI runs × {} jobs ({} families), bisect over {} commits \
         ({} probe/prefetch fetches); {} archive fetches of {} distinct archives ({} .tar.xz); {} \
         distinct blobs, working set {:.2} GB; one run fetches {:.2} GB distinct; first downloads \
         (compulsory) {:.2} GB compressed",
        shape.commits,
        s.runs,
        s.ci_jobs / s.runs.max(1),
        shape.families,
        shape.bisect_commits,
        s.bisect_fetches,
        s.accesses,
        s.archives,
        s.xz_archives,
        s.blobs,
        gb(s.working_set),
        gb(s.run_bytes),
        gb(s.compulsory_archive_bytes),
    );
    println!();
    println!(
        "| Quota (of working set) | Policy | Downloads | Re-downloads | Re-downloaded | Decode CPU-s (re-downloads) | Decode CPU-s (all) | Re-downloaded vs LRU | Replay time |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &pct in quotas {
        let quota = s.working_set * u64::from(pct) / 100;
        let mut lru_bytes = None;
        // LRU first, then cost-aware, each on a fresh index: same trace, same run.
        for policy in [EvictionPolicy::Lru, EvictionPolicy::CostAware] {
            let dir = tempfile::Builder::new().prefix("trace-").tempdir_in(work)?;
            let r = replay(&t, dir.path(), quota, policy, half_life)?;
            let vs = match lru_bytes {
                None => {
                    lru_bytes = Some(r.redownloaded_bytes);
                    "—".to_string()
                }
                Some(l) if l > 0 => format!(
                    "{:+.1}%",
                    (r.redownloaded_bytes as f64 / l as f64 - 1.0) * 100.0
                ),
                Some(_) => "n/a".into(),
            };
            println!(
                "| {pct}% ({:.2} GB) | {} | {} | {} | {:.2} GB | {:.1} | {:.1} | {vs} | {:.1} s |",
                gb(quota),
                match policy {
                    EvictionPolicy::Lru => "LRU",
                    EvictionPolicy::CostAware => "cost-aware",
                },
                r.downloads,
                r.redownloads,
                gb(r.redownloaded_bytes),
                r.redownload_decode_secs,
                r.decode_secs,
                r.elapsed_secs,
            );
        }
    }
    println!();
    println!(
        "Headroom, archive granularity (an archive present or not; shared content counted per archive):"
    );
    println!();
    println!("| Quota | LRU re-downloaded | Furthest next use (offline bound) | Bound vs LRU |");
    println!("|---|---|---|---|");
    for &pct in quotas {
        let quota = s.working_set * u64::from(pct) / 100;
        let lru = replay_bound(&t, quota, Bound::Lru);
        let opt = replay_bound(&t, quota, Bound::Furthest);

        let vs = if lru.redownloaded_bytes > 0 {
            format!(
                "{:+.1}%",
                (opt.redownloaded_bytes as f64 / lru.redownloaded_bytes as f64 - 1.0) * 100.0
            )
        } else {
            "n/a".into()
        };
        println!(
            "| {pct}% | {} ({:.2} GB) | {} ({:.2} GB) | {vs} |",
            lru.redownloads,
            gb(lru.redownloaded_bytes),
            opt.redownloads,
            gb(opt.redownloaded_bytes),
        );
    }
    Ok(())
}
