//! `cairnd`: the daemon binary. Argument parsing and exit codes only; the work is in the library.
//!
//! Exit status: 0 success; 1 the command ran and found a problem (`verify` found corruption, or a
//! corrupt index it rebuilt);
//! 2 error (bad arguments, I/O, a refused archive).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cairn_daemon::store::{LocalStore, StoreConfig};
use cairn_fingerprint::Sha256;
use clap::{Parser, Subcommand};

/// The per-machine artifact cache daemon for ROCm TheRock CI.
#[derive(Debug, Parser)]
#[command(name = "cairnd", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

/// Store location, shared by every subcommand.
#[derive(Debug, clap::Args)]
struct StoreArgs {
    /// The store directory (default: `$XDG_CACHE_HOME/cairn`).
    #[arg(long, env = "CAIRN_STORE_DIR")]
    store: Option<PathBuf>,
}

impl StoreArgs {
    fn dir(&self) -> anyhow::Result<PathBuf> {
        match &self.store {
            Some(dir) => Ok(dir.clone()),
            None => Ok(cairn_daemon::config::default_store_dir()),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the cache over gRPC on a Unix socket (and optionally TCP) until SIGINT/SIGTERM.
    Serve(cairn_daemon::server::lifecycle::ServeArgs),
    /// Re-hash every blob of a stopped daemon's store; quarantine corrupt ones. Exits 1 when
    /// corruption was found, 2 when the store does not exist or a running cairnd holds it (use
    /// `cairn verify` then).
    Verify {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Move the index aside (`index-v1.redb.corrupt-{time}`) and rebuild it from the CAS: blob files
    /// are re-registered (a sample re-hashed); trees are learned again on the next fetch. Stop the
    /// running `cairnd serve` first. (A corrupt index is also rebuilt automatically at start.)
    Repair {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Evict least-recently-used blobs down to a byte quota and delete unreferenced blob files.
    Gc {
        #[command(flatten)]
        store: StoreArgs,
        /// The quota in bytes (default 0: evict everything not leased).
        #[arg(long, default_value = "0", value_name = "SIZE")]
        max_bytes: cairn_fingerprint::units::ByteSize,
    },
    /// Ingest one archive file into the store (operations and tests).
    #[command(hide = true)]
    Ingest {
        #[command(flatten)]
        store: StoreArgs,
        /// The `.tar.zst` or `.tar.xz` archive.
        archive: PathBuf,
        /// Expected SHA-256 (as in the `.sha256sum` sidecar).
        #[arg(long)]
        sha256: Option<Sha256>,
        /// Key to record the archive under (default: its file name).
        #[arg(long)]
        key: Option<String>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(err) => {
            // Each cause once: many errors already quote their source in their own message.
            let mut text = err.to_string();
            for cause in err.chain().skip(1) {
                let cause = cause.to_string();
                if !text.contains(&cause) {
                    text.push_str(": ");
                    text.push_str(&cause);
                }
            }
            eprintln!("cairnd: error: {text}");
            ExitCode::from(2)
        }
    }
}

fn open(store: &StoreArgs) -> anyhow::Result<std::sync::Arc<LocalStore>> {
    let dir = store.dir()?;
    LocalStore::open(&dir, StoreConfig::default())
        .with_context(|| format!("opening the store at `{}`", dir.display()))
}

/// Open a store that must already exist (`verify`): a mistyped path is an error that names it, not
/// a new empty store that verifies clean; a store a running `cairnd` holds is named as such.
fn open_existing(store: &StoreArgs) -> anyhow::Result<std::sync::Arc<LocalStore>> {
    let dir = store.dir()?;
    if !dir.join(cairn_daemon::store::INDEX_FILE).is_file() {
        let what = if dir.is_dir() {
            "has no Cairn store (no `index-v1.redb`)"
        } else {
            "does not exist"
        };
        anyhow::bail!(
            "store directory `{}` {what}; pass the directory `cairnd serve` uses (`--store` or \
             CAIRN_STORE_DIR)",
            dir.display()
        );
    }
    LocalStore::open(&dir, StoreConfig::default()).map_err(|e| {
        if let cairn_daemon::StoreError::Index(i) = e.root()
            && i.is_locked()
        {
            anyhow::anyhow!(
                "the store at `{}` is in use by a running cairnd: use `cairn verify`, or stop cairnd first",
                dir.display()
            )
        } else {
            anyhow::Error::new(e).context(format!("opening the store at `{}`", dir.display()))
        }
    })
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Serve(serve) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .init();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime.block_on(cairn_daemon::server::lifecycle::serve(serve))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Repair { store } => {
            let dir = store.dir()?;
            let (moved, r) = LocalStore::repair(&dir, StoreConfig::default())
                .with_context(|| format!("repairing the store at `{}`", dir.display()))?;
            println!(
                "index moved aside to `{}` and rebuilt: {} blobs ({} bytes) re-registered, {} re-hashed, \
                 {} corrupt quarantined; trees are learned again on the next fetch",
                moved.display(),
                r.blobs,
                r.bytes,
                r.sampled,
                r.corrupt
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { store } => {
            let store = open_existing(&store)?;
            if let Some((moved, r)) = store.recovered() {
                println!(
                    "index was corrupt: moved aside to `{}` and rebuilt from the CAS ({} blobs re-registered)",
                    moved.display(),
                    r.blobs
                );
            }
            let report = store.verify()?;
            for c in &report.corrupt {
                let actual = c.actual.map_or("unreadable".to_string(), |a| a.to_string());
                println!(
                    "corrupt blob {} at `{}` (content hashes to {actual}); quarantined to `{}`",
                    c.digest,
                    c.path.display(),
                    c.quarantined_to.display()
                );
            }
            for m in &report.missing {
                println!(
                    "missing blob {m} at `{}`; dropped from the index",
                    store.blob_path(m).display()
                );
            }
            for d in &report.dangling {
                println!("dangling index entry: {d}");
            }
            for t in &report.malformed {
                println!(
                    "malformed index entry: tree {t}; dropped (learned again on the next fetch)"
                );
            }
            for s in &report.stray {
                println!("stray file `{}` (not a blob; left alone)", s.display());
            }
            println!(
                "checked {} blobs ({} bytes): {} corrupt, {} missing, {} dangling, {} unreferenced",
                report.checked,
                report.bytes,
                report.corrupt.len(),
                report.missing.len(),
                report.dangling.len(),
                report.orphans
            );
            println!(
                "checked the index: {} malformed trees, {} trees with evicted blobs",
                report.malformed.len(),
                report.incomplete_trees
            );
            Ok(if report.is_clean() && store.recovered().is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Gc { store, max_bytes } => {
            let store = open(&store)?;
            let r = store.gc(max_bytes.as_u64())?;
            println!(
                "evicted {} blobs ({} bytes), removed {} unreferenced files ({} bytes); {} -> {} bytes{}",
                r.evicted_blobs,
                r.evicted_bytes,
                r.orphans_removed,
                r.orphan_bytes,
                r.bytes_before,
                r.bytes_after,
                if r.skipped_leased > 0 {
                    format!(", {} leased blobs kept", r.skipped_leased)
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest {
            store,
            archive,
            sha256,
            key,
        } => {
            let store = open(&store)?;
            let key = key.unwrap_or_else(|| file_name(&archive));
            let out = store.ingest_file(&key, &archive, sha256)?;
            println!(
                "{} sha256={} tree={} files={} compressed={} uncompressed={} new_blobs={} new_bytes={}",
                key,
                out.archive_sha256,
                out.tree_digest,
                out.tree.file_count(),
                out.compressed_bytes,
                out.uncompressed_bytes,
                out.new_blobs,
                out.new_blob_bytes
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
