//! Command-line arguments (clap derive): what the user typed, checked for shape but not yet
//! interpreted. `commands/` turns them into work.
//!
//! `Command` is an enum of top-level subcommands; the offline ones (`topology`, `layout`,
//! `fingerprint`) need no daemon. Online subcommands join the enum without touching these.

use std::path::PathBuf;

use cairn_fingerprint::Platform;
use clap::{Args, Parser, Subcommand};

/// cairn: content-addressed artifact cache client for TheRock's multi-stage CI.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, max_term_width = 100)]
pub struct Cli {
    /// Print one JSON document on stdout instead of human output.
    #[arg(long, global = true)]
    pub json: bool,

    /// The build topology file.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value = "./BUILD_TOPOLOGY.toml"
    )]
    pub topology: PathBuf,

    /// Print nothing on stderr but errors and problems.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print more detail on stderr (repeatable).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Where cairnd listens: a Unix socket path (`unix:/path` or `/path`) or `http://host:port`
    /// [default: $XDG_RUNTIME_DIR/cairn/cairnd.sock].
    #[arg(long, global = true, value_name = "ADDR", env = "CAIRN_SOCKET")]
    pub daemon: Option<String>,

    /// File holding the bearer token of a TCP daemon (`$CAIRN_TOKEN` may hold the token itself).
    #[arg(long, global = true, value_name = "FILE", env = "CAIRN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Whether `--topology` was given on the command line (online commands otherwise read the
    /// checkout's own `BUILD_TOPOLOGY.toml`). Set by `main`, not by clap.
    #[arg(skip)]
    pub topology_explicit: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check and query the build topology (offline).
    Topology {
        /// The query.
        #[command(subcommand)]
        command: TopologyCommand,
    },
    /// Where a CI run's outputs live: bucket, prefix, URIs (offline).
    Layout(LayoutArgs),
    /// Source fingerprints of artifacts at a git checkout (offline).
    Fingerprint(FingerprintArgs),
    /// Which CI run holds artifacts for a commit (Cairn's records, then GitHub); `--fallback` walks
    /// back to the newest baseline commit with everything needed.
    Find(FindArgs),
    /// Size changes per artifact and per file between two commits or runs.
    Diff(DiffArgs),
    /// Fill a build dir with a stage's inbound artifacts, TheRock bootstrap style (`.prebuilt`
    /// markers), from whichever runs produced them.
    Bootstrap(BootstrapArgs),
    /// Extract artifacts to `O/artifacts/{name}_{component}_{family}/` (or merged with --flatten).
    Fetch(FetchArgs),
    /// Which run each inbound artifact of a stage would come from, and why (downloads nothing).
    Resolve(ResolveArgs),
    /// Publish the artifacts a stage produced in a build dir as (part of) a CI run.
    Push(PushArgs),
    /// Import a run published without Cairn (list its archives once; --ingest downloads them).
    Import(ImportArgs),
    /// Make stages' artifacts of one run part of another run (TheRock's `artifact_manager.py
    /// copy`): recorded as reused in the destination's job manifests, nothing copied.
    Copy(CopyArgs),
    /// Find the first bad commit of TheRock or of one submodule by testing CI-built artifacts at
    /// each step (incremental, prefetched); the repository is never checked out or changed.
    Bisect {
        /// What to do.
        #[command(subcommand)]
        command: BisectCommand,
    },
    /// Make the artifacts of a range of commits local in the daemon's store (nothing is
    /// materialized), e.g. to warm a host before a bisect or a wave of CI jobs.
    Prefetch(PrefetchArgs),
    /// Prefetch a range of commits' artifacts and pin them in the daemon's store (eviction keeps
    /// them) until `cairn unpin` or the expiry; pins survive daemon restarts (`cairn status` lists
    /// them).
    Pin(PinArgs),
    /// Remove a pin.
    Unpin(UnpinArgs),
    /// Show the daemon's store usage and counters.
    Status,
    /// Evict least-recently-used blobs from the daemon's store down to a quota.
    Gc(GcArgs),
    /// Have the running daemon re-hash its store (all blobs, or a random sample) and quarantine
    /// corrupt blobs, which the next fetch downloads again; exit 1 when any was found.
    Verify(VerifyArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(CompletionsArgs),
}

/// `cairn completions SHELL`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Which artifacts to fetch and from which producers (shared by `bootstrap`, `fetch` and `resolve`).
#[derive(Debug, Args)]
pub struct SelectArgs {
    /// The GPU family (e.g. gfx94X-dcgpu); `generic` archives always come along.
    #[arg(
        long,
        value_name = "F",
        required_unless_present_any = ["amdgpu_families", "amdgpu_targets", "generic_only"]
    )]
    pub family: Option<String>,
    /// Only generic (host) artifacts, no GPU family's (TheRock's flag).
    #[arg(long, conflicts_with_all = ["family", "amdgpu_families"])]
    pub generic_only: bool,
    /// More GPU families, `;`-separated as TheRock spells them ("gfx94X-dcgpu;gfx110X-all").
    #[arg(long, value_name = "A;B")]
    pub amdgpu_families: Option<String>,
    /// Individual GPU targets (`,`-separated, e.g. gfx942), each requested like a family: for
    /// KPACK-split archives named per target (TheRock's flag).
    #[arg(long, value_name = "T,U", conflicts_with = "generic_only")]
    pub amdgpu_targets: Option<String>,
    /// TheRock's flag to also look for a family's per-target (KPACK-split) archives. Always on in
    /// Cairn: a family request matches its targets' archives (`blas_lib_gfx942` for
    /// gfx94X-dcgpu); accepted for compatibility.
    #[arg(long)]
    pub expand_family_to_targets: bool,
    /// TheRock's "the run of the checkout's HEAD commit": Cairn's default without --run-id
    /// (every artifact from the run(s) that built exactly the checkout's fingerprints).
    #[arg(long, conflicts_with = "run_id")]
    pub find_matching_commit: bool,
    /// TheRock's local storage directory instead of S3. cairnd's storage is its configuration
    /// (`cairnd serve --local-storage DIR`, `CAIRN_LOCAL_STORAGE`), so this is refused with that
    /// hint.
    #[arg(long, value_name = "DIR")]
    pub local_staging_dir: Option<PathBuf>,
    /// The platform (default: this machine's).
    #[arg(long, value_name = "linux|windows")]
    pub platform: Option<Platform>,
    /// The git checkout fingerprints are computed from [default: the current git repository].
    #[arg(long, value_name = "DIR")]
    pub checkout: Option<PathBuf>,
    /// Leave out these components (`,`-separated: lib, run, dev, dbg, doc, test).
    #[arg(long, value_name = "A,B")]
    pub exclude_components: Option<String>,
    /// Leave out these artifacts (`,`-separated topology names).
    #[arg(long, value_name = "A,B")]
    pub exclude_artifacts: Option<String>,
    /// The build variant hashed into target-specific artifacts.
    #[arg(long, value_name = "V", default_value = "release")]
    pub variant: String,
    /// Use this run's artifact set: what the run uploaded (its producer with the exact
    /// fingerprint, else its archives by name, also for runs published without Cairn), plus what
    /// its job manifests record as reused, taken from the run that built it (reuse chains
    /// followed). Needs no git checkout: outside one, artifacts are asked for by name (--topology
    /// names the topology).
    #[arg(long, value_name = "ID", value_parser = non_empty_run_id)]
    pub run_id: Option<String>,
    /// The repository `--run-id` belongs to (TheRock's flag), e.g. ROCm/rocm-libraries: its runs
    /// live under their own prefix (`ROCm-rocm-libraries/{run}-{platform}/`) [default: ROCm/TheRock].
    #[arg(long, value_name = "OWNER/REPO", requires = "run_id")]
    pub run_github_repo: Option<String>,
    /// Accept producers from forks and developer machines.
    #[arg(long)]
    pub allow_untrusted: bool,
    /// Accept producers from runs that did not succeed.
    #[arg(long)]
    pub allow_failed: bool,
    /// Ask storage again for artifacts cairnd remembers as having no producer (it caches that
    /// answer for a minute by default).
    #[arg(long)]
    pub refresh: bool,
}

/// How `bootstrap` and `fetch` write the destination.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// Hard-link files to the daemon's CAS instead of copying (faster; a build that edits files in
    /// place would corrupt the cache, so only for read-only use).
    #[arg(long)]
    pub hardlink: bool,
    /// Ignore the state of an earlier materialization and rewrite every file.
    #[arg(long)]
    pub full: bool,
    /// Re-hash (BLAKE3) every file kept from an earlier run and rewrite those whose content does not
    /// match, and check every blob before copying it (a corrupt blob fails the run, naming it).
    #[arg(long)]
    pub verify: bool,
}

/// `cairn bootstrap`.
#[derive(Debug, Args)]
pub struct BootstrapArgs {
    /// The stage to bootstrap: its inbound artifacts are fetched.
    #[arg(long, value_name = "S")]
    pub stage: String,
    /// The build directory to fill (`B/{relpath}/...` plus `B/{relpath}.prebuilt`).
    #[arg(long, value_name = "B")]
    pub build_dir: PathBuf,
    /// Artifacts and producers.
    #[command(flatten)]
    pub select: SelectArgs,
    /// How the build dir is written.
    #[command(flatten)]
    pub write: WriteArgs,
    /// TheRock's `buildctl.py bootstrap --artifact-dir` (bootstrap from a local directory of
    /// artifacts). Refused with the Cairn route: `cairn push` that build's artifacts, then
    /// bootstrap, which finds them by fingerprint.
    #[arg(long, value_name = "DIR")]
    pub artifact_dir: Option<PathBuf>,
    /// After bootstrapping, as `buildctl.py enable|disable`: over the build system's stage dirs
    /// (`.*stage.marker`), `enable` builds those matching INCLUDE (all if none) and no --exclude
    /// (their `.prebuilt` marker removed) and keeps the rest prebuilt; `disable` keeps all
    /// prebuilt. CMake is re-run when a marker changed.
    #[arg(long, value_enum)]
    pub mode: Option<PrebuiltMode>,
    /// Regular expressions of stage dirs (paths relative to the build dir) --mode applies to.
    #[arg(value_name = "INCLUDE", requires = "mode")]
    pub include: Vec<String>,
    /// Regular expressions of stage dirs --mode leaves prebuilt.
    #[arg(long, value_name = "REGEX", num_args = 1.., requires = "mode")]
    pub exclude: Vec<String>,
    /// With --mode: re-run CMake even if no marker changed.
    #[arg(long, requires = "mode")]
    pub force_reconfigure: bool,
}

/// `cairn bootstrap --mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrebuiltMode {
    /// Build the selected stage dirs.
    Enable,
    /// Keep every stage dir prebuilt.
    Disable,
}

/// `cairn resolve`.
#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The stage whose inbound artifacts are resolved.
    #[arg(long, value_name = "S")]
    pub stage: String,
    /// Artifacts and producers.
    #[command(flatten)]
    pub select: SelectArgs,
}

/// `cairn fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Fetch this stage's inbound artifacts [default: every artifact of the topology].
    #[arg(long, value_name = "S")]
    pub stage: Option<String>,
    /// Where to extract.
    #[arg(long, value_name = "O")]
    pub output_dir: PathBuf,
    /// Merge every stage dir into O instead of `O/artifacts/{name}_{component}_{family}/`.
    #[arg(long, conflicts_with = "bootstrap")]
    pub flatten: bool,
    /// Bootstrap O as a build dir (`O/{relpath}/...` plus `.prebuilt` markers), as `cairn
    /// bootstrap --build-dir O` does (TheRock's `fetch --bootstrap`).
    #[arg(long)]
    pub bootstrap: bool,
    /// Download only: make the archives local in cairnd's store (its shared download cache),
    /// write nothing to O.
    #[arg(long, conflicts_with_all = ["flatten", "bootstrap"])]
    pub no_extract: bool,
    /// TheRock's kept-archives directory. Cairn keeps every downloaded archive in cairnd's store
    /// (shared by all fetches, bounded by its quota) and writes no archive files; accepted for
    /// compatibility, the directory is not written.
    #[arg(long, value_name = "DIR")]
    pub download_cache_dir: Option<PathBuf>,
    /// TheRock's download parallelism. cairnd schedules downloads for all its clients at once
    /// (parallel ranged GETs, one download per archive); accepted for compatibility.
    #[arg(long, value_name = "N")]
    pub download_concurrency: Option<usize>,
    /// TheRock's extraction parallelism. Cairn materializes on all cores; accepted for
    /// compatibility.
    #[arg(long, value_name = "N")]
    pub extract_concurrency: Option<usize>,
    /// Artifacts and producers.
    #[command(flatten)]
    pub select: SelectArgs,
    /// How the output dir is written.
    #[command(flatten)]
    pub write: WriteArgs,
}

/// `cairn push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The stage the build dir built: its produced artifacts are published.
    #[arg(long, value_name = "S")]
    pub stage: String,
    /// The job's GPU family.
    #[arg(long, value_name = "F")]
    pub family: String,
    /// The build dir holding `artifacts/{name}_{component}_{family}/` (readable by cairnd).
    #[arg(long, value_name = "B")]
    pub build_dir: PathBuf,
    /// The workflow run id.
    #[arg(long, value_name = "ID", value_parser = non_empty_run_id)]
    pub run_id: String,
    /// The platform (default: this machine's).
    #[arg(long, value_name = "linux|windows")]
    pub platform: Option<Platform>,
    /// The repository the workflow ran in.
    #[arg(
        long,
        visible_alias = "run-github-repo",
        value_name = "OWNER/REPO",
        default_value = "ROCm/TheRock"
    )]
    pub repo: String,
    /// The pull request's head repository; differing from --repo means a fork (untrusted).
    #[arg(long, value_name = "OWNER/REPO")]
    pub head_repo: Option<String>,
    /// The workflow name.
    #[arg(long, value_name = "NAME", default_value = "")]
    pub workflow: String,
    /// The commit built [default: the checkout's HEAD].
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// The run's status.
    #[arg(long, value_name = "S", default_value = "success")]
    pub status: String,
    /// Archive compression.
    #[arg(
        long,
        visible_alias = "compression-type",
        value_enum,
        default_value_t = cairn_fingerprint::Compression::Zstd
    )]
    pub compression: cairn_fingerprint::Compression,
    /// Compression level (zstd 1-22, xz 0-9) [default: 3 for zstd, 6 for xz, as TheRock].
    #[arg(long, value_name = "N")]
    pub compression_level: Option<u32>,
    /// The branch the run built: cairnd also files a branch feed entry, which daemons with
    /// warm-up follow [default: $CAIRN_BRANCH, else $GITHUB_REF_NAME when $GITHUB_REF_TYPE is
    /// `branch`; neither: no feed entry].
    #[arg(long, value_name = "NAME")]
    pub branch: Option<String>,
    /// TheRock's compression parallelism. cairnd compresses on its own threads; accepted for
    /// compatibility.
    #[arg(long, value_name = "N")]
    pub compress_concurrency: Option<usize>,
    /// TheRock's upload parallelism. cairnd schedules uploads; accepted for compatibility.
    #[arg(long, value_name = "N")]
    pub upload_concurrency: Option<usize>,
    /// TheRock's local storage directory instead of S3; refused with a hint (cairnd's storage is
    /// its configuration: `cairnd serve --local-storage DIR`).
    #[arg(long, value_name = "DIR")]
    pub local_staging_dir: Option<PathBuf>,
    /// The git checkout fingerprints are computed from [default: the current git repository].
    #[arg(long, value_name = "DIR")]
    pub checkout: Option<PathBuf>,
    /// The build variant hashed into target-specific artifacts.
    #[arg(long, value_name = "V", default_value = "release")]
    pub variant: String,
}

/// `cairn copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The stage(s) whose produced artifacts the destination run takes over (`,`-separated, as
    /// TheRock's `copy --stage a,b`).
    #[arg(long, value_name = "S,T")]
    pub stage: String,
    /// The run the artifacts come from (its Cairn job manifests name them).
    #[arg(long, value_name = "ID", value_parser = non_empty_run_id)]
    pub source_run_id: String,
    /// The repository of --source-run-id [default: the destination's]. Reuse is recorded within
    /// one repository, so a different one is refused.
    #[arg(long, value_name = "OWNER/REPO")]
    pub source_repository: Option<String>,
    /// The destination run.
    #[arg(long, value_name = "ID", value_parser = non_empty_run_id)]
    pub run_id: String,
    /// The repository both runs belong to.
    #[arg(
        long,
        visible_alias = "run-github-repo",
        value_name = "OWNER/REPO",
        default_value = "ROCm/TheRock"
    )]
    pub repo: String,
    /// The platform (default: this machine's).
    #[arg(long, value_name = "linux|windows")]
    pub platform: Option<Platform>,
    /// GPU family; one job manifest per stage and family [default: generic only, as TheRock].
    #[arg(long, value_name = "F")]
    pub family: Option<String>,
    /// More GPU families, `;`-separated as TheRock spells them.
    #[arg(long, value_name = "A;B")]
    pub amdgpu_families: Option<String>,
    /// Individual GPU targets (`,`-separated), each recorded like a family.
    #[arg(long, value_name = "T,U")]
    pub amdgpu_targets: Option<String>,
    /// Only generic (host) artifacts.
    #[arg(long, conflicts_with_all = ["family", "amdgpu_families", "amdgpu_targets"])]
    pub generic_only: bool,
    /// Always on in Cairn (a family's records include its per-target archives); accepted for
    /// compatibility.
    #[arg(long)]
    pub expand_family_to_targets: bool,
    /// The destination's workflow name.
    #[arg(long, value_name = "NAME", default_value = "")]
    pub workflow: String,
    /// The destination run's commit [default: the current checkout's HEAD, if any].
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// The destination run's status.
    #[arg(long, value_name = "S", default_value = "success")]
    pub status: String,
    /// TheRock's copy parallelism. Nothing is copied (one job manifest per stage and family);
    /// accepted for compatibility.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Print what would be recorded (each archive and the run that built it); write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// TheRock's local storage directory; refused with a hint (cairnd's storage is its
    /// configuration: `cairnd serve --local-storage DIR`).
    #[arg(long, value_name = "DIR")]
    pub local_staging_dir: Option<PathBuf>,
}

/// `cairn import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The workflow run id.
    #[arg(long, value_name = "ID", value_parser = non_empty_run_id)]
    pub run_id: String,
    /// The platform (default: this machine's).
    #[arg(long, value_name = "linux|windows")]
    pub platform: Option<Platform>,
    /// The repository the workflow ran in [default: ROCm/TheRock].
    #[arg(long, visible_alias = "run-github-repo", value_name = "OWNER/REPO")]
    pub repo: Option<String>,
    /// Download and ingest every archive now instead of on first use.
    #[arg(long)]
    pub ingest: bool,
}

/// `cairn bisect ...`.
#[derive(Debug, Subcommand)]
pub enum BisectCommand {
    /// Bisect between --good and --bad: at each probe, materialize the commit's artifacts into the
    /// build dir and run the command after `--` (exit 0 good, 125 skip, 1-127 bad, else abort).
    Run(Box<BisectRunArgs>),
    /// Print the report of the last bisect in a build dir (its session log).
    Log(BisectLogArgs),
}

/// Which history, and which artifacts per commit (shared by `bisect run` and `prefetch`).
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Bisect this submodule's history (path or name, e.g. rocm-libraries) with the superproject
    /// fixed at HEAD [default: the superproject's own history].
    #[arg(long, value_name = "PATH")]
    pub submodule: Option<String>,
    /// The GPU family.
    #[arg(long, value_name = "F")]
    pub family: String,
    /// Test with this stage's inbound artifacts.
    #[arg(long, value_name = "S", required_unless_present = "artifacts")]
    pub stage: Option<String>,
    /// Test with these artifacts (`,`-separated topology names) instead of a stage's.
    #[arg(long, value_name = "A,B", conflicts_with = "stage")]
    pub artifacts: Option<String>,
    /// The superproject checkout [default: the current git repository].
    #[arg(long, value_name = "DIR")]
    pub checkout: Option<PathBuf>,
    /// The platform (default: this machine's).
    #[arg(long, value_name = "linux|windows")]
    pub platform: Option<Platform>,
    /// The build variant hashed into target-specific artifacts.
    #[arg(long, value_name = "V", default_value = "release")]
    pub variant: String,
    /// Leave out these components (`,`-separated: lib, run, dev, dbg, doc, test).
    #[arg(long, value_name = "A,B")]
    pub exclude_components: Option<String>,
}

/// `--github` for commits without Cairn records (shared by `bisect run`, `prefetch` and `pin`).
#[derive(Debug, Args)]
pub struct GithubArgs {
    /// For a commit without Cairn records, look its CI run up on GitHub (by head_sha, as `cairn
    /// find` does) and take that run's artifacts by name, marked unverified in the report
    /// (CAIRN_GITHUB_API, GITHUB_TOKEN).
    #[arg(long)]
    pub github: bool,
    /// With --github: the repository whose workflow runs built the commits [default: the
    /// repository's `origin` on GitHub, else ROCm/TheRock for the superproject].
    #[arg(long, value_name = "OWNER/REPO", requires = "github")]
    pub github_repo: Option<String>,
    /// With --github: the workflow file whose runs count [default: TheRock's CI workflow of that
    /// repository].
    #[arg(long, value_name = "FILE", requires = "github")]
    pub workflow: Option<String>,
}

/// `cairn bisect run`.
#[derive(Debug, Args)]
pub struct BisectRunArgs {
    /// A commit without the regression (of the submodule with --submodule).
    #[arg(long, value_name = "G")]
    pub good: String,
    /// A commit with the regression; --good must be a first-parent ancestor.
    #[arg(long, value_name = "B")]
    pub bad: String,
    /// Which history and artifacts.
    #[command(flatten)]
    pub history: HistoryArgs,
    /// The build dir every probe is materialized into (bootstrap layout, incremental).
    #[arg(long, value_name = "D")]
    pub build_dir: PathBuf,
    /// Let an artifact missing at a commit come from the newest ancestor commit that has it
    /// (marked in the report) instead of skipping the commit.
    #[arg(long)]
    pub nearest: bool,
    /// Do not prefetch the next probes while the command runs.
    #[arg(long)]
    pub no_prefetch: bool,
    /// Runs published without Cairn.
    #[command(flatten)]
    pub github: GithubArgs,
    /// Continue the bisect the build dir's session log records (e.g. after Ctrl-C): its good,
    /// bad and skip verdicts are kept, the rest is probed.
    #[arg(long)]
    pub resume: bool,
    /// The test, run in the current directory with CAIRN_BISECT_COMMIT, CAIRN_BUILD_DIR and
    /// CAIRN_FAMILY set.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

/// `cairn bisect log`.
#[derive(Debug, Args)]
pub struct BisectLogArgs {
    /// The build dir of the bisect.
    #[arg(long, value_name = "D")]
    pub build_dir: PathBuf,
}

/// `cairn prefetch`.
#[derive(Debug, Args)]
pub struct PrefetchArgs {
    /// The commits: first-parent commits after A up to B (of the submodule with --submodule).
    #[arg(long, value_name = "A..B")]
    pub commits: String,
    /// Which history and artifacts.
    #[command(flatten)]
    pub history: HistoryArgs,
    /// Runs published without Cairn.
    #[command(flatten)]
    pub github: GithubArgs,
}

/// `cairn pin`.
#[derive(Debug, Args)]
pub struct PinArgs {
    /// The pin's name (letters, digits, `-`, `_`, `.`); pinning an existing name adds to it.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The commits: first-parent commits after A up to B (of the submodule with --submodule).
    #[arg(long, value_name = "A..B")]
    pub commits: String,
    /// Which history and artifacts.
    #[command(flatten)]
    pub history: HistoryArgs,
    /// Runs published without Cairn.
    #[command(flatten)]
    pub github: GithubArgs,
    /// How long the pin holds: seconds, or with s, m, h, d (`2h`, `7d`).
    #[arg(long, value_name = "DURATION", default_value = "1d")]
    pub ttl: String,
}

/// `cairn unpin`.
#[derive(Debug, Args)]
pub struct UnpinArgs {
    /// The pin's name.
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// `cairn gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// The quota to evict down to, in bytes or with a K/M/G/T suffix [default: the daemon's].
    #[arg(long, value_name = "SIZE")]
    pub max_bytes: Option<cairn_fingerprint::ByteSize>,
}

/// `cairn verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Re-hash a random sample of N blobs instead of all (a cheap periodic scrub).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub sample: Option<u64>,
}

/// `cairn topology ...`.
#[derive(Debug, Subcommand)]
pub enum TopologyCommand {
    /// Check the topology; exit 1 and list every problem on stderr if it is invalid.
    Validate,
    /// List the build stages.
    Stages,
    /// List the artifact groups.
    Groups,
    /// List the artifacts.
    Artifacts,
    /// List the artifacts a stage must fetch before it builds.
    Inbound(StageArg),
    /// List the artifacts a stage builds.
    Produced(StageArg),
    /// List the stages in build order (dependencies first).
    Order,
    /// Print the artifact dependency graph as Graphviz DOT (`--json`: TheRock's graph object).
    Graph,
}

/// `--stage S`.
#[derive(Debug, Args)]
pub struct StageArg {
    /// The build stage.
    #[arg(long, value_name = "S")]
    pub stage: String,
}

/// `cairn layout ...`.
#[derive(Debug, Args)]
pub struct LayoutArgs {
    /// The workflow run id.
    #[arg(long, value_name = "ID", value_parser = non_empty_run_id)]
    pub run_id: String,
    /// The platform the run built for (default: this machine's).
    #[arg(long, value_name = "linux|windows")]
    pub platform: Option<Platform>,
    /// The repository the workflow ran in.
    #[arg(
        long,
        visible_alias = "run-github-repo",
        value_name = "OWNER/REPO",
        default_value = "ROCm/TheRock"
    )]
    pub repo: String,
    /// The pull request's head repository; differing from --repo means a fork.
    #[arg(long, value_name = "OWNER/REPO")]
    pub head_repo: Option<String>,
    /// The release type (ci, dev, dev-bkc, nightly, nightly-bkc, prerelease).
    #[arg(long, value_name = "T")]
    pub release_type: Option<String>,
    /// The run's `updated_at` (RFC 3339); decides the legacy bucket with --legacy-buckets.
    #[arg(long, value_name = "RFC3339")]
    pub updated_at: Option<String>,
    /// Apply the bucket rules in force before 2026-04 (legacy `therock-artifacts*` buckets).
    #[arg(long)]
    pub legacy_buckets: bool,
}

/// `cairn fingerprint ...`: fingerprints of artifacts, or `explain` for one.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct FingerprintArgs {
    /// `explain`.
    #[command(subcommand)]
    pub command: Option<FingerprintCommand>,
    /// Which checkout, family and artifacts.
    #[command(flatten)]
    pub select: FingerprintSelect,
}

/// The arguments of `cairn fingerprint`.
#[derive(Debug, Args)]
pub struct FingerprintSelect {
    /// The git checkout (TheRock superproject with its submodules).
    #[arg(long, value_name = "DIR", required = true)]
    pub checkout: Option<PathBuf>,
    /// The GPU family (e.g. gfx94X-dcgpu, gfx1151).
    #[arg(long, value_name = "F", required = true)]
    pub family: Option<String>,
    /// The platform (default: this machine's).
    #[arg(long, value_name = "linux|windows")]
    pub platform: Option<Platform>,
    /// Only the inbound and produced artifacts of this stage.
    #[arg(long, value_name = "S", conflicts_with = "artifact")]
    pub stage: Option<String>,
    /// Only these artifacts (repeatable).
    #[arg(long, value_name = "A")]
    pub artifact: Vec<String>,
    /// The build variant hashed into target-specific artifacts (release, asan, tsan, ...).
    #[arg(long, value_name = "V", default_value = "release")]
    pub variant: String,
}

/// `cairn fingerprint explain`.
#[derive(Debug, Subcommand)]
pub enum FingerprintCommand {
    /// List every input of one artifact's fingerprint and its hash.
    Explain(ExplainArgs),
}

/// The arguments of `cairn fingerprint explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The git checkout.
    #[arg(long, value_name = "DIR")]
    pub checkout: PathBuf,
    /// The artifact.
    #[arg(long, value_name = "A")]
    pub artifact: String,
    /// The GPU family.
    #[arg(long, value_name = "F")]
    pub family: String,
    /// The platform (default: this machine's).
    #[arg(long, value_name = "linux|windows")]
    pub platform: Option<Platform>,
    /// The build variant.
    #[arg(long, value_name = "V", default_value = "release")]
    pub variant: String,
}

/// `cairn find`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["commit", "run_id"])))]
pub struct FindArgs {
    /// The commit (a full SHA, or any revision of the local checkout).
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// One workflow run instead of a commit.
    #[arg(long, value_name = "ID", value_parser = non_empty_run_id)]
    pub run_id: Option<String>,
    /// The repository [default: from the checkout's `origin` remote, else ROCm/TheRock].
    #[arg(long, value_name = "OWNER/REPO")]
    pub repo: Option<String>,
    /// The workflow file [default: multi_arch_ci.yml; therock-ci.yml for rocm-libraries/rocm-systems].
    #[arg(long, value_name = "FILE")]
    pub workflow: Option<String>,
    /// The platform (default: this machine's).
    #[arg(long, value_name = "linux|windows")]
    pub platform: Option<Platform>,
    /// GPU families (artifact groups) that must be present; without it any archive counts.
    /// `--amdgpu-family` is `find_artifacts_for_commit.py`'s name for it.
    #[arg(
        long = "family",
        visible_aliases = ["artifact-group", "amdgpu-family"],
        value_name = "G",
        num_args = 1..
    )]
    pub families: Vec<String>,
    /// Only runs that completed successfully count. The default for a commit; with --run-id it
    /// refuses that run unless it succeeded.
    #[arg(long, conflicts_with_all = ["allow_incomplete", "allow_failed"])]
    pub require_successful_run: bool,
    /// Also take runs that have not completed yet (queued, in progress), marked by their status.
    #[arg(long)]
    pub allow_incomplete: bool,
    /// Also take runs that completed without success (failure, cancelled), marked by their status.
    #[arg(long)]
    pub allow_failed: bool,
    /// Every family must come from one run (default: newest run per family).
    #[arg(long)]
    pub require_single_run: bool,
    /// Also consider runs recorded in the untrusted area (forks, developer machines).
    #[arg(long)]
    pub allow_untrusted: bool,
    /// Use Cairn's records only; never ask GitHub.
    #[arg(long)]
    pub offline: bool,
    /// Walk back from the commit to the newest commit with complete artifacts.
    #[arg(long, conflicts_with = "run_id")]
    pub fallback: bool,
    /// Commits examined at most by --fallback (including the commit itself).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub max_commits: usize,
    /// The main branch local branches are compared with (merge-base).
    #[arg(long, value_name = "BRANCH", default_value = "main")]
    pub main_branch: String,
    /// Require every inbound artifact of this stage (for the families given).
    #[arg(long, value_name = "S")]
    pub stage: Option<String>,
    /// The git checkout for revisions and --fallback history [default: the current directory];
    /// given explicitly with --stage, also the fingerprints of the stage's inbound artifacts.
    #[arg(long, value_name = "DIR")]
    pub checkout: Option<PathBuf>,
    /// The build variant hashed into target-specific fingerprints.
    #[arg(long, value_name = "V", default_value = "release")]
    pub variant: String,
}

/// `cairn diff A B`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The "before" side: a commit SHA (its newest run) or a run id.
    #[arg(value_name = "A")]
    pub before: String,
    /// The "after" side: a commit SHA (its newest run) or a run id.
    #[arg(value_name = "B")]
    pub after: String,
    /// The repository [default: from the checkout's `origin` remote, else ROCm/TheRock].
    #[arg(long, value_name = "OWNER/REPO")]
    pub repo: Option<String>,
    /// The workflow file used to find runs of a commit on GitHub.
    #[arg(long, value_name = "FILE")]
    pub workflow: Option<String>,
    /// The platform (default: this machine's).
    #[arg(long, value_name = "linux|windows")]
    pub platform: Option<Platform>,
    /// Only archives of these families (and `generic`).
    #[arg(long = "family", visible_alias = "artifact-group", value_name = "G", num_args = 1..)]
    pub families: Vec<String>,
    /// For a commit side, also take a run that has not completed yet.
    #[arg(long)]
    pub allow_incomplete: bool,
    /// For a commit side, also take a run that completed without success.
    #[arg(long)]
    pub allow_failed: bool,
    /// Use Cairn's records only; never ask GitHub.
    #[arg(long)]
    pub offline: bool,
    /// Per-file lines shown per artifact in human output (all with --json).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub files: usize,
    /// Only the artifacts this stage builds (from the checkout's topology).
    #[arg(long, value_name = "S")]
    pub stage: Option<String>,
    /// The git checkout revisions are resolved in [default: the current directory].
    #[arg(long, value_name = "DIR")]
    pub checkout: Option<PathBuf>,
}

/// `--run-id` values: an empty one would silently mean "no run" (the wire's empty field), so it is
/// refused where it is typed.
fn non_empty_run_id(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err(
            "a run id must not be empty: pass the workflow run id (e.g. 1234567890), \
                    or leave the flag out"
                .into(),
        );
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn empty_run_id_is_an_error_naming_the_flag() {
        use clap::Parser;
        for args in [
            &["cairn", "bootstrap", "--stage", "s", "--run-id", ""][..],
            &["cairn", "import", "--run-id", " "][..],
        ] {
            let err = super::Cli::try_parse_from(args).unwrap_err().to_string();
            assert!(err.contains("--run-id"), "{err}");
            assert!(err.contains("must not be empty"), "{err}");
        }
    }
}
