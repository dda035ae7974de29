//! Commands: each turns parsed arguments into work and output, returning an [`ExitStatus`].
//! One module per top-level subcommand; the dispatcher below is the only `match` over [`Command`].

mod bisect;
mod completions;
mod copy;
mod diff;
mod fetch;
mod find;
mod fingerprint;
mod gc;
mod import;
mod layout;
mod pin;
mod prefetch;
mod push;
mod resolve;
mod status;
mod topology;
mod verify;

use std::path::{Path, PathBuf};

use anyhow::Context;
use cairn_client::api::{ClientError, Policy};
use cairn_client::bisect::github::GithubLookup;
use cairn_client::bisect::{History, HistorySpec, Selection, Subject};
use cairn_client::checkout::{checkout_dir, plan_checkout};
use cairn_client::connect::DaemonChannel;
use cairn_client::connect::{self, DaemonAddr};
use cairn_client::documents;
use cairn_client::github::{self, GithubClient};
use cairn_client::history::Sources;
use cairn_client::plan::{self, FetchPlan, PlanSpec};
use cairn_fingerprint::layout::GithubRepo;
use cairn_fingerprint::{Platform, Topology};
use cairn_proto::v1::cairn_client::CairnClient;

use crate::cli::{Cli, Command, GithubArgs, HistoryArgs, SelectArgs};
use crate::output::{ExitStatus, Printer};

/// Run the command `cli` names.
pub fn run(cli: &Cli, printer: &mut Printer) -> anyhow::Result<ExitStatus> {
    match &cli.command {
        Command::Topology { command } => topology::run(&topology_path(cli, None), command, printer),
        Command::Layout(args) => layout::run(args, printer),
        Command::Fingerprint(args) => fingerprint::run(cli, args, printer),
        Command::Find(args) => find::run(cli, args, printer),
        Command::Diff(args) => diff::run(cli, args, printer),
        Command::Bootstrap(args) => fetch::bootstrap(cli, args, printer),
        Command::Fetch(args) => fetch::fetch(cli, args, printer),
        Command::Resolve(args) => resolve::run(cli, args, printer),
        Command::Push(args) => push::run(cli, args, printer),
        Command::Import(args) => import::run(cli, args, printer),
        Command::Copy(args) => copy::run(cli, args, printer),
        Command::Bisect { command } => bisect::run(cli, command, printer),
        Command::Prefetch(args) => prefetch::run(cli, args, printer),
        Command::Pin(args) => pin::pin(cli, args, printer),
        Command::Unpin(args) => pin::unpin(cli, args, printer),
        Command::Status => status::run(cli, printer),
        Command::Gc(args) => gc::run(cli, args, printer),
        Command::Verify(args) => verify::run(cli, args, printer),
        Command::Completions(args) => completions::run(args, printer),
    }
}

/// The daemon address: `--daemon` / `$CAIRN_SOCKET`, else the default socket.
fn daemon_addr(cli: &Cli) -> DaemonAddr {
    match cli.daemon.as_deref() {
        Some(s) if !s.is_empty() => DaemonAddr::parse(s),
        _ => DaemonAddr::Unix(connect::default_socket()),
    }
}

/// A runtime for one online command: two workers suffice for one client; file work runs on the
/// blocking pool and rayon.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Connect, or fail with a hint how to start the daemon.
async fn connect_daemon(addr: &DaemonAddr) -> anyhow::Result<CairnClient<DaemonChannel>> {
    connect::connect(addr)
        .await
        .map_err(|e| explain(ClientError::from(e), addr))
}

/// An online error for the user: unreachable or vanished daemons get a hint
/// ([`documents::hint`]).
fn explain(err: ClientError, addr: &DaemonAddr) -> anyhow::Error {
    match documents::hint(&err, addr) {
        Some(hint) => anyhow::Error::new(err).context(hint),
        None => anyhow::Error::new(err),
    }
}

/// The checkout of `find` and `diff`: [`checkout_dir`], else the current directory (a full SHA or a
/// run id needs no checkout; the decision is written down at [`checkout_dir`]).
fn checkout_or_cwd(explicit: Option<&Path>) -> PathBuf {
    checkout_dir(explicit).unwrap_or_else(|_| PathBuf::from("."))
}

/// `--repo`, else the checkout's `origin`, else `ROCm/TheRock`.
fn repo_arg(explicit: Option<&str>, dir: &Path) -> anyhow::Result<GithubRepo> {
    match explicit {
        Some(r) => r
            .parse()
            .with_context(|| format!("invalid --repo `{r}` (expected OWNER/REPO)")),
        None => Ok(github::detect_repo(dir).unwrap_or_else(GithubRepo::the_rock)),
    }
}

/// The history sources of `find` and `diff`: the daemon (`--daemon`, `$CAIRN_SOCKET`, else the
/// default socket) and GitHub unless offline.
async fn history_sources(cli: &Cli, offline: bool) -> anyhow::Result<Sources> {
    let daemon = connect_daemon(&daemon_addr(cli)).await?;
    let github = if offline {
        None
    } else {
        Some(GithubClient::from_env()?)
    };
    Ok(Sources { daemon, github })
}

/// The one topology rule, for every command, offline or online: `--topology` when given on the
/// command line; else the checkout's own `BUILD_TOPOLOGY.toml` — `checkout` when the command names
/// one, else the git top level of the current directory, else the current directory. Fingerprints
/// must match the sources they describe, so no command reads one topology and another checkout.
fn topology_path(cli: &Cli, checkout: Option<&Path>) -> PathBuf {
    if cli.topology_explicit {
        return cli.topology.clone();
    }
    let dir = match checkout {
        Some(c) => c.to_path_buf(),
        None => checkout_or_cwd(None),
    };
    dir.join("BUILD_TOPOLOGY.toml")
}

/// The topology of a command that reads a checkout ([`topology_path`]), checked.
fn checkout_topology(
    cli: &Cli,
    checkout: &Path,
    printer: &mut Printer,
) -> anyhow::Result<Topology> {
    load_topology(&topology_path(cli, Some(checkout)), printer)
}

/// A command stopped on an invalid topology: every problem was printed on stderr; `cairn` exits 1
/// (the answer is "no"), as `cairn topology validate` does.
#[derive(Debug, thiserror::Error)]
#[error(
    "topology `{path}` is invalid ({count} problem(s) above); fix it, or point --topology or \
     --checkout at a valid one (`cairn topology validate` lists the problems)"
)]
pub struct InvalidTopology {
    /// The file.
    pub path: String,
    /// How many problems it has.
    pub count: usize,
}

/// The plan of `bootstrap`, `fetch` and `resolve`: the checkout, its topology, then
/// [`plan::plan`] over the selection options (`--family` first, then `--amdgpu-families`).
fn fetch_plan(
    cli: &Cli,
    stage: Option<&str>,
    select: &SelectArgs,
    printer: &mut Printer,
) -> anyhow::Result<FetchPlan> {
    refuse_local_staging(select.local_staging_dir.as_deref())?;
    // `--run-id` needs no checkout: without one, the run's artifact set is asked for by name.
    let checkout = plan_checkout(select.checkout.as_deref(), select.run_id.as_deref())?;
    let topology = match &checkout {
        Some(c) => checkout_topology(cli, c, printer)?,
        None => load_topology(&topology_path(cli, None), printer)?,
    };
    // TheRock's `--stage all` (its default): every artifact, unless a stage is really named `all`.
    let stage = stage.filter(|s| *s != "all" || topology.stages().iter().any(|t| t.name == *s));
    let mut families: Vec<String> = select.family.iter().cloned().collect();
    if select.generic_only {
        // TheRock's `--generic-only`: host artifacts only.
        families = vec![cairn_fingerprint::names::GENERIC.to_string()];
    }
    // TheRock's `--amdgpu-targets` (`,`-separated): each target is requested like a family.
    for f in split_list(select.amdgpu_families.as_deref())
        .into_iter()
        .chain(split_list(select.amdgpu_targets.as_deref()))
    {
        if !families.contains(&f) {
            families.push(f);
        }
    }
    let spec = PlanSpec {
        stage: stage.map(str::to_string),
        exclude_artifacts: split_list(select.exclude_artifacts.as_deref()),
        exclude_components: split_list(select.exclude_components.as_deref()),
        families,
        platform: select.platform.unwrap_or_else(Platform::host),
        variant: select.variant.clone(),
        policy: Policy {
            allow_untrusted: select.allow_untrusted,
            allow_failed: select.allow_failed,
            run_id: select.run_id.clone(),
            run_repo: select.run_github_repo.clone(),
            refresh: select.refresh,
        },
    };
    let plan = plan::plan_in(&topology, checkout.as_deref(), &spec)?;
    if checkout.is_none() {
        printer
            .detail("no git checkout: asking for the run's artifact set by name (no fingerprints)");
        return Ok(plan);
    }
    printer.detail(&format!(
        "{} artifact(s) x {} family(ies) fingerprinted at {} in {:.1?}",
        plan.artifacts,
        plan.families.len(),
        plan.head,
        plan.elapsed
    ));
    Ok(plan)
}

/// The history of `bisect run` and `prefetch`: the checkout ([`checkout_dir`]), the superproject's
/// or a submodule's commits, and the topology: `--topology` when given; in submodule mode the
/// checkout's own (the superproject is fixed at HEAD); else each superproject commit's own
/// `BUILD_TOPOLOGY.toml`, since a topology change between commits changes fingerprints.
fn bisect_history(cli: &Cli, args: &HistoryArgs, printer: &mut Printer) -> anyhow::Result<History> {
    let checkout = checkout_dir(args.checkout.as_deref())?;
    let subject = match &args.submodule {
        Some(s) => Subject::Submodule(s.clone()),
        None => Subject::Superproject,
    };
    let topology = if cli.topology_explicit || args.submodule.is_some() {
        Some(checkout_topology(cli, &checkout, printer)?)
    } else {
        None
    };
    let selection = match (&args.stage, &args.artifacts) {
        (Some(stage), _) => Selection::Stage(stage.clone()),
        (None, list) => {
            let names = split_list(list.as_deref());
            if names.is_empty() {
                anyhow::bail!("--artifacts names no artifact; give `A,B` or use --stage");
            }
            Selection::Artifacts(names)
        }
    };
    Ok(History::open(HistorySpec {
        checkout,
        subject,
        topology,
        family: args.family.clone(),
        platform: args.platform.unwrap_or_else(Platform::host),
        variant: args.variant.clone(),
        selection,
    })?)
}

/// `--github`: the client from the environment, the repository (`--github-repo`, else the history's
/// repository's `origin`, else ROCm/TheRock for the superproject) and its workflow; `None` without
/// `--github`.
fn github_lookup(args: &GithubArgs, history: &History) -> anyhow::Result<Option<GithubLookup>> {
    if !args.github {
        return Ok(None);
    }
    let repo = match (&args.github_repo, history.submodule()) {
        (Some(r), _) => r
            .parse()
            .with_context(|| format!("invalid --github-repo `{r}` (expected OWNER/REPO)"))?,
        (None, sub) => match (github::detect_repo(history.repo()), sub) {
            (Some(r), _) => r,
            (None, None) => GithubRepo::the_rock(),
            (None, Some(sub)) => anyhow::bail!(
                "--github: the submodule `{sub}` has no GitHub `origin` to look its commits' CI \
                 runs up in; give --github-repo OWNER/REPO (e.g. ROCm/rocm-libraries)"
            ),
        },
    };
    let workflow = args
        .workflow
        .clone()
        .unwrap_or_else(|| github::default_workflow(&repo).to_string());
    Ok(Some(GithubLookup {
        client: GithubClient::from_env()?,
        repo,
        workflow,
        allow_untrusted: false,
    }))
}

/// `--exclude-components` of `bisect run`, `prefetch` and `pin`, each checked to be a component.
fn history_excluded_components(args: &HistoryArgs) -> anyhow::Result<Vec<String>> {
    let names = split_list(args.exclude_components.as_deref());
    for c in &names {
        <cairn_fingerprint::Component as std::str::FromStr>::from_str(c)
            .with_context(|| format!("--exclude-components names `{c}`"))?;
    }
    Ok(names)
}

/// TheRock's `--local-staging-dir` (a local directory instead of S3): where artifacts live is
/// cairnd's configuration, not a client flag, so it is refused, naming the daemon's flag.
fn refuse_local_staging(dir: Option<&Path>) -> anyhow::Result<()> {
    match dir {
        None => Ok(()),
        Some(d) => anyhow::bail!(
            "--local-staging-dir `{}`: cairn reads and writes storage through cairnd, whose \
             storage is its configuration; start it with `cairnd serve --local-storage {}` (or \
             CAIRN_LOCAL_STORAGE) and leave this flag out",
            d.display(),
            d.display()
        ),
    }
}

/// The first line of a MISSING artifact's report; a request by name (`--run-id` without a
/// checkout) has no fingerprint to show.
fn missing_line(artifact: &str, fingerprint: &str) -> String {
    if fingerprint.is_empty() {
        format!("missing: `{artifact}` has no acceptable producer")
    } else {
        format!("missing: `{artifact}` (fingerprint {fingerprint}) has no acceptable producer")
    }
}

/// `12.3 MiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `,`- or `;`-separated list, blanks dropped.
fn split_list(s: Option<&str>) -> Vec<String> {
    s.unwrap_or_default()
        .split([',', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Load the topology named by `--topology`. The library error names the file and the cause on
/// one line, so a missing or malformed file is a one-line error.
/// Load and validate the topology at `path`: an invalid one is an [`InvalidTopology`] error after
/// every problem is printed, so no query answers from a topology that names what does not exist.
fn load_topology(path: &Path, printer: &mut Printer) -> anyhow::Result<Topology> {
    let topology = load_unchecked(path, printer)?;
    let problems = topology.validate();
    if !problems.is_empty() {
        for p in &problems {
            printer.problem(&p.to_string());
        }
        return Err(InvalidTopology {
            path: path.display().to_string(),
            count: problems.len(),
        }
        .into());
    }
    Ok(topology)
}

/// Load the topology at `path` without validating it (`cairn topology validate` reports the
/// problems itself).
fn load_unchecked(path: &Path, printer: &mut Printer) -> anyhow::Result<Topology> {
    let topology = Topology::load(path).map_err(|e| {
        let missing = matches!(
            &e,
            cairn_fingerprint::TopologyError::Read { error, .. }
                if error.kind() == std::io::ErrorKind::NotFound
        );
        if missing {
            // One line: the error, then what to do.
            anyhow::anyhow!(
                "{e}; hint: pass --checkout DIR (a TheRock checkout, whose BUILD_TOPOLOGY.toml \
                 is read) or --topology FILE"
            )
        } else {
            anyhow::Error::new(e)
        }
    })?;
    printer.detail(&format!(
        "topology `{}`: {} stages, {} artifacts",
        path.display(),
        topology.stages().len(),
        topology.artifacts().len()
    ));
    Ok(topology)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_picks_a_unit() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn lists_split_on_commas_and_semicolons() {
        assert_eq!(split_list(Some("a, b;c;;")), ["a", "b", "c"]);
        assert!(split_list(None).is_empty());
    }
}
