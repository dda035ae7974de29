//! `cairn-demo-data`: the data side of `scripts/demo` and of the Python tests — a TheRock-shaped git
//! checkout over the small topology of [`cairn_testkit::ci`] (or any topology file, e.g. TheRock's
//! real one), build dirs as a stage's CI job would leave them under the checkout's own topology,
//! submodule bumps between runs, and the GitHub REST stand-in for processes (the Python tests).
//! Deterministic: artifact contents are seeded by fingerprints.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use cairn_fingerprint::{Blake3, Topology};
use cairn_testkit::checkout::Checkout;
use cairn_testkit::ci;
use cairn_testkit::github_mock::{GithubMock, MockRun};
use clap::{Parser, Subcommand};

/// Demo data for cairn: checkout, build dirs, submodule bumps.
#[derive(Debug, Parser)]
#[command(name = "cairn-demo-data")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create `DIR/TheRock` (superproject with real submodules) and `DIR/upstream/*`; print the
    /// superproject path.
    Checkout {
        /// The directory to create them in.
        dir: PathBuf,
        /// The topology to check in [default: the small test topology of `cairn_testkit::ci`].
        #[arg(long)]
        topology: Option<PathBuf>,
    },
    /// Commit a change upstream of SUBMODULE and move the superproject to it; print the new HEAD.
    Bump {
        /// The directory given to `checkout`.
        dir: PathBuf,
        /// The submodule (e.g. `rocm-systems`).
        submodule: String,
    },
    /// Write `OUT/artifacts/` as STAGE's job for FAMILY would at the checkout's HEAD (under the
    /// checkout's `BUILD_TOPOLOGY.toml`); print the artifact directories written, one per line.
    BuildDir {
        /// The superproject.
        #[arg(long)]
        checkout: PathBuf,
        /// The stage.
        #[arg(long)]
        stage: String,
        /// The GPU family of the job (`generic` for generic stages).
        #[arg(long)]
        family: String,
        /// The build dir to fill.
        #[arg(long)]
        out: PathBuf,
        /// Only rebuild artifacts whose fingerprints differ from this file's (an earlier run).
        #[arg(long)]
        since: Option<PathBuf>,
        /// Save this job's fingerprints here (for a later `--since`).
        #[arg(long)]
        save: Option<PathBuf>,
        /// Bytes of content per lib/dev archive.
        #[arg(long, default_value_t = 256 << 10)]
        bytes: u64,
    },
    /// Serve the GitHub REST stand-in of the tests (`cairn_testkit::github_mock`) on 127.0.0.1:
    /// print its base URL (for `CAIRN_GITHUB_API`), then serve until stdin closes.
    GithubMock {
        /// A successful workflow run to serve, `OWNER/REPO:WORKFLOW:RUN_ID:HEAD_SHA` (repeatable).
        #[arg(long = "run")]
        runs: Vec<String>,
    },
}

fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Checkout { dir, topology } => {
            let text = match &topology {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading `{}`", path.display()))?,
                None => ci::TOPOLOGY.to_string(),
            };
            let c = Checkout::create(&dir, &text)?;
            println!("{}", c.root.display());
        }
        Command::Bump { dir, submodule } => {
            let root = dir.join("TheRock");
            let text = std::fs::read_to_string(root.join("BUILD_TOPOLOGY.toml"))
                .context("reading the checkout's BUILD_TOPOLOGY.toml")?;
            let c = Checkout {
                root,
                upstreams: dir.join("upstream"),
                submodules: cairn_testkit::checkout::topology_submodules(&text)?,
            };
            println!(
                "{}",
                c.bump_submodule(&submodule, &format!("demo change in {submodule}"))?
            );
        }
        Command::BuildDir {
            checkout,
            stage,
            family,
            out,
            since,
            save,
            bytes,
        } => {
            let path = checkout.join("BUILD_TOPOLOGY.toml");
            let topology = Topology::load(&path)?;
            let fps = ci::produced_fingerprints_in(&topology, &checkout, &stage, &family)?;
            let only = match since {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading `{}`", path.display()))?;
                    let before: BTreeMap<String, Blake3> = serde_json::from_str(&text)
                        .with_context(|| format!("parsing `{}`", path.display()))?;
                    Some(ci::changed(&before, &fps))
                }
                None => None,
            };
            if let Some(path) = save {
                std::fs::write(&path, serde_json::to_vec_pretty(&fps)?)
                    .with_context(|| format!("writing `{}`", path.display()))?;
            }
            for dir in ci::write_build_dir_in(&topology, &out, &family, &fps, only.as_ref(), bytes)?
            {
                println!("{dir}");
            }
        }
        Command::GithubMock { runs } => {
            let mock = GithubMock::start()?;
            for spec in &runs {
                let parts: Vec<&str> = spec.split(':').collect();
                let [repo, workflow, id, sha] = parts[..] else {
                    anyhow::bail!("--run `{spec}`: expected OWNER/REPO:WORKFLOW:RUN_ID:HEAD_SHA");
                };
                let id: u64 = id
                    .parse()
                    .with_context(|| format!("--run `{spec}`: run id `{id}`"))?;
                mock.add_run(repo, workflow, MockRun::success(id, sha));
            }
            println!("{}", mock.url());
            std::io::stdout().flush()?;
            // Serve until the parent closes our stdin (or kills us).
            std::io::copy(&mut std::io::stdin(), &mut std::io::sink())?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-demo-data: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
