//! `cairn._native`: the Rust half of the `cairn` Python package. Every function runs the same
//! library code as the `cairn` command (`cairn_fingerprint`, `cairn_client`, its `documents`) and
//! returns what `cairn --json` would print, as a JSON string the pure-Python layer
//! (`python/cairn/`) turns into dataclasses. Nothing here decides anything the CLI does not.
//!
//! Errors cross as instances of the exception classes of `cairn.errors` (`CairnError`,
//! `DaemonUnavailable`, `MissingArtifacts`, `InvalidTopology`), built from a [`Failure`] once the
//! GIL is held again; messages are the CLI's (error, then one `caused by:` line per source).
//! Every call that reads a checkout or talks to the daemon releases the GIL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use cairn_client::api::{self, ClientError, Policy, PublishSpec};
use cairn_client::checkout::{checkout_dir, plan_checkout};
use cairn_client::connect::{self, DaemonAddr, DaemonChannel};
use cairn_client::documents::{self, FetchJson, ResolveJson, StatusJson};
use cairn_client::fetch::{self as fetching, Summary, Transfer};
use cairn_client::github::{self, GithubClient};
use cairn_client::history::report::Query;
use cairn_client::history::{Criteria, FindReport, Sources, commits, search};
use cairn_client::materialize::{CopyMode, Layout, NoReporter, Options, StopFlag};
use cairn_client::plan::{self, FetchPlan, PlanSpec};
use cairn_fingerprint::layout::{BucketRules, GithubRepo, RunSpec, parse_timestamp};
use cairn_fingerprint::names::GENERIC;
use cairn_fingerprint::{
    ByteSize, Compression, FingerprintConfig, Fingerprinter, Platform, Topology,
};
use cairn_proto::v1::cairn_client::CairnClient;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// Why a call failed, in the terms of `cairn.errors`; carried out of the GIL-free section.
enum Failure {
    /// `CairnError`: anything else (bad input, I/O, a daemon refusal).
    Cairn(String),
    /// `DaemonUnavailable`: not reachable, or gone during the call.
    Daemon(String),
    /// `MissingArtifacts`: the JSON document whose `missing` lists them.
    Missing(String, String),
    /// `InvalidTopology`: every problem.
    Topology(String, Vec<String>),
}

impl Failure {
    /// An error and its sources, as `cairn` prints them.
    fn of(err: &(dyn std::error::Error + 'static)) -> Failure {
        Failure::Cairn(chain(err))
    }

    fn into_pyerr(self, py: Python<'_>) -> PyErr {
        let make = || -> PyResult<PyErr> {
            let errors = py.import("cairn.errors")?;
            let value = match self {
                Failure::Cairn(m) => errors.getattr("CairnError")?.call1((m,))?,
                Failure::Daemon(m) => errors.getattr("DaemonUnavailable")?.call1((m,))?,
                Failure::Missing(m, doc) => errors
                    .getattr("MissingArtifacts")?
                    .call1((m, PyString::new(py, &doc)))?,
                Failure::Topology(m, problems) => {
                    errors.getattr("InvalidTopology")?.call1((m, problems))?
                }
            };
            Ok(PyErr::from_value(value))
        };
        make().unwrap_or_else(|e| e)
    }
}

/// `error` then `  caused by: …` per source: the CLI's rendering.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        out.push_str("\n  caused by: ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// A daemon error: unreachable or vanished daemons get the CLI's hint and `DaemonUnavailable`.
fn daemon_failure(err: ClientError, addr: &DaemonAddr) -> Failure {
    match documents::hint(&err, addr) {
        Some(hint) => Failure::Daemon(format!("{hint}\n  caused by: {}", chain(&err))),
        None => Failure::of(&err),
    }
}

type Outcome<T> = Result<T, Failure>;

/// Run `f` without the GIL and turn a [`Failure`] into the matching Python exception.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> Outcome<T> + Send) -> PyResult<T> {
    py.detach(f).map_err(|e| e.into_pyerr(py))
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Outcome<String> {
    serde_json::to_string(value).map_err(|e| Failure::of(&e))
}

fn platform(p: Option<&str>) -> Outcome<Platform> {
    match p {
        None => Ok(Platform::host()),
        Some(p) => p.parse().map_err(|e| Failure::of(&e)),
    }
}

/// The daemon address: `daemon`, else `$CAIRN_SOCKET`, else the default socket (the CLI's rule).
fn daemon_addr(daemon: Option<&str>) -> DaemonAddr {
    let env = std::env::var("CAIRN_SOCKET").ok();
    match daemon.or(env.as_deref()) {
        Some(s) if !s.is_empty() => DaemonAddr::parse(s),
        _ => DaemonAddr::Unix(connect::default_socket()),
    }
}

fn runtime() -> Outcome<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::Cairn(format!("starting the async runtime: {e}")))
}

async fn connect_daemon(addr: &DaemonAddr) -> Outcome<CairnClient<DaemonChannel>> {
    connect::connect(addr)
        .await
        .map_err(|e| daemon_failure(ClientError::from(e), addr))
}

/// The checkout (explicit, else the git top level of the current directory).
fn checkout(explicit: Option<&str>) -> Outcome<PathBuf> {
    checkout_dir(explicit.map(Path::new)).map_err(|e| Failure::of(&e))
}

/// The topology rule of every `cairn` command: `topology` when given, else the checkout's own
/// `BUILD_TOPOLOGY.toml`; an invalid one is refused with every problem.
fn checked_topology(topology: Option<&str>, checkout: &Path) -> Outcome<Topology> {
    let path = topology
        .map(PathBuf::from)
        .unwrap_or_else(|| checkout.join("BUILD_TOPOLOGY.toml"));
    let t = Topology::load(&path).map_err(|e| Failure::of(&e))?;
    let problems: Vec<String> = t.validate().iter().map(ToString::to_string).collect();
    if problems.is_empty() {
        return Ok(t);
    }
    Err(Failure::Topology(
        format!(
            "topology `{}` is invalid ({} problem(s)): {}; fix it, or pass topology= or checkout= \
             naming a valid one",
            path.display(),
            problems.len(),
            problems.join("; ")
        ),
        problems,
    ))
}

fn config(variant: &str) -> FingerprintConfig {
    FingerprintConfig {
        variant: variant.to_string(),
        ..FingerprintConfig::default()
    }
}

/// `cairn fingerprint --json`: artifact → fingerprint for `family`. With `stage`, its inbound and
/// produced artifacts; else `artifacts`, else every artifact.
#[pyfunction]
#[pyo3(signature = (family, checkout=None, stage=None, artifacts=None, platform=None, variant="release", topology=None))]
#[allow(clippy::too_many_arguments)]
fn fingerprints(
    py: Python<'_>,
    family: String,
    checkout: Option<String>,
    stage: Option<String>,
    artifacts: Option<Vec<String>>,
    platform: Option<String>,
    variant: &str,
    topology: Option<String>,
) -> PyResult<String> {
    let variant = variant.to_string();
    detached(py, move || {
        let checkout = self::checkout(checkout.as_deref())?;
        cairn_fingerprint::git::toplevel(&checkout).map_err(|e| Failure::of(&e))?;
        let t = checked_topology(topology.as_deref(), &checkout)?;
        let platform = self::platform(platform.as_deref())?;
        let names: Vec<&str> = match (&stage, &artifacts) {
            (Some(stage), _) => {
                let mut names = t.inbound(stage).map_err(|e| Failure::of(&e))?;
                names.extend(t.produced(stage).map_err(|e| Failure::of(&e))?);
                names.into_iter().collect()
            }
            (None, Some(a)) => a.iter().map(String::as_str).collect(),
            (None, None) => t.artifacts().iter().map(|a| a.name.as_str()).collect(),
        };
        let f = Fingerprinter::new(&t, &checkout, config(&variant)).map_err(|e| Failure::of(&e))?;
        let fps = f
            .compute_some(&names, &family, platform)
            .map_err(|e| Failure::of(&e))?;
        to_json(&fps)
    })
}

/// `cairn fingerprint explain --json`: every input of one artifact's fingerprint.
#[pyfunction]
#[pyo3(signature = (artifact, family, checkout=None, platform=None, variant="release", topology=None))]
fn explain(
    py: Python<'_>,
    artifact: String,
    family: String,
    checkout: Option<String>,
    platform: Option<String>,
    variant: &str,
    topology: Option<String>,
) -> PyResult<String> {
    let variant = variant.to_string();
    detached(py, move || {
        let checkout = self::checkout(checkout.as_deref())?;
        cairn_fingerprint::git::toplevel(&checkout).map_err(|e| Failure::of(&e))?;
        let t = checked_topology(topology.as_deref(), &checkout)?;
        let platform = self::platform(platform.as_deref())?;
        let f = Fingerprinter::new(&t, &checkout, config(&variant)).map_err(|e| Failure::of(&e))?;
        let e = f
            .explain(&artifact, &family, platform)
            .map_err(|e| Failure::of(&e))?;
        to_json(&e)
    })
}

/// `BUILD_TOPOLOGY.toml`, loaded (not validated: [`PyTopology::validate`] lists the problems).
#[pyclass(name = "Topology", module = "cairn._native", frozen)]
struct PyTopology {
    inner: Topology,
    path: PathBuf,
}

#[pymethods]
impl PyTopology {
    #[new]
    fn new(path: PathBuf) -> PyResult<PyTopology> {
        let inner = Topology::load(&path).map_err(|e| PyValueError::new_err(chain(&e)))?;
        Ok(PyTopology { inner, path })
    }

    /// The file.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Build stages, in declaration order.
    #[getter]
    fn stages(&self) -> Vec<String> {
        self.inner.stages().iter().map(|s| s.name.clone()).collect()
    }

    /// Artifact groups, in declaration order.
    #[getter]
    fn artifact_groups(&self) -> Vec<String> {
        self.inner.groups().iter().map(|g| g.name.clone()).collect()
    }

    /// Artifacts, in declaration order.
    #[getter]
    fn artifacts(&self) -> Vec<String> {
        self.inner
            .artifacts()
            .iter()
            .map(|a| a.name.clone())
            .collect()
    }

    /// TheRock's `get_inbound_artifacts(stage)`, sorted.
    fn inbound(&self, stage: &str) -> PyResult<Vec<String>> {
        self.inner
            .inbound(stage)
            .map(|s| s.into_iter().map(str::to_string).collect())
            .map_err(|e| PyValueError::new_err(chain(&e)))
    }

    /// TheRock's `get_produced_artifacts(stage)`, sorted.
    fn produced(&self, stage: &str) -> PyResult<Vec<String>> {
        self.inner
            .produced(stage)
            .map(|s| s.into_iter().map(str::to_string).collect())
            .map_err(|e| PyValueError::new_err(chain(&e)))
    }

    /// TheRock's `get_build_order()`.
    fn build_order(&self) -> Vec<String> {
        self.inner
            .build_order()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// Every problem, as `cairn topology validate` prints them (empty: valid).
    fn validate(&self) -> Vec<String> {
        self.inner
            .validate()
            .iter()
            .map(ToString::to_string)
            .collect()
    }
}

/// TheRock's `RunOutputRoot`: `cairn layout`'s bucket rules as a JSON object.
#[pyfunction]
#[pyo3(signature = (run_id, platform=None, github_repository="ROCm/TheRock", head_repository=None, release_type=None, updated_at=None, legacy=false))]
fn run_output_root(
    run_id: &str,
    platform: Option<&str>,
    github_repository: &str,
    head_repository: Option<&str>,
    release_type: Option<&str>,
    updated_at: Option<&str>,
    legacy: bool,
) -> PyResult<String> {
    let value_err = |e: &(dyn std::error::Error + 'static)| PyValueError::new_err(chain(e));
    let platform = match platform {
        None => Platform::host(),
        Some(p) => p.parse().map_err(|e| value_err(&e))?,
    };
    let spec = RunSpec {
        run_id: run_id.to_string(),
        platform,
        repo: github_repository
            .parse::<GithubRepo>()
            .map_err(|e| value_err(&e))?,
        head_repo: head_repository
            .map(str::parse::<GithubRepo>)
            .transpose()
            .map_err(|e| value_err(&e))?,
        release_type: release_type.map(str::to_string),
        updated_at: updated_at
            .map(parse_timestamp)
            .transpose()
            .map_err(|e| value_err(&e))?,
        rules: if legacy {
            BucketRules::Legacy
        } else {
            BucketRules::Current
        },
    };
    let root = cairn_fingerprint::RunOutputRoot::from_run(&spec).map_err(|e| value_err(&e))?;
    Ok(serde_json::json!({
        "bucket": root.bucket(),
        "external_repo": root.external_repo(),
        "run_id": root.run_id(),
        "platform": root.platform().as_str(),
        "trusted": root.trusted(),
    })
    .to_string())
}

/// The selection of `resolve`, `fetch` and `bootstrap` (the CLI's `SelectArgs`).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct Select {
    checkout: Option<String>,
    topology: Option<String>,
    families: Vec<String>,
    platform: Option<String>,
    variant: String,
    exclude_artifacts: Vec<String>,
    exclude_components: Vec<String>,
    run_id: Option<String>,
    allow_untrusted: bool,
    allow_failed: bool,
}

impl Select {
    /// [`plan::plan`] over the checkout's topology: the CLI's `fetch_plan`.
    // `..Policy::default()`: policy fields this package does not expose yet keep the CLI's defaults.
    #[allow(clippy::needless_update)]
    fn plan(&self, stage: Option<&str>) -> Outcome<FetchPlan> {
        // A `run_id` needs no checkout: without one, the run's artifact set is asked for by name.
        let checkout = plan_checkout(
            self.checkout.as_deref().map(Path::new),
            self.run_id.as_deref(),
        )
        .map_err(|e| Failure::of(&e))?;
        let topology = checked_topology(
            self.topology.as_deref(),
            checkout.as_deref().unwrap_or(Path::new(".")),
        )?;
        let spec = PlanSpec {
            stage: stage.map(str::to_string),
            exclude_artifacts: self.exclude_artifacts.clone(),
            exclude_components: self.exclude_components.clone(),
            families: self.families.clone(),
            platform: platform(self.platform.as_deref())?,
            variant: self.variant.clone(),
            policy: Policy {
                allow_untrusted: self.allow_untrusted,
                allow_failed: self.allow_failed,
                run_id: self.run_id.clone(),
                ..Policy::default()
            },
        };
        plan::plan_in(&topology, checkout.as_deref(), &spec).map_err(|e| Failure::of(&e))
    }
}

/// `cairn resolve --json`.
#[pyfunction]
#[pyo3(signature = (daemon, stage, select))]
fn resolve(
    py: Python<'_>,
    daemon: Option<String>,
    stage: String,
    select: Select,
) -> PyResult<String> {
    detached(py, move || {
        let started = Instant::now();
        let plan = select.plan(Some(&stage))?;
        let addr = daemon_addr(daemon.as_deref());
        let (resolved, runs) = runtime()?.block_on(async {
            let mut client = connect_daemon(&addr).await?;
            documents::resolve_all(&mut client, &plan.requests)
                .await
                .map_err(|e| daemon_failure(e, &addr))
        })?;
        to_json(&ResolveJson {
            command: "resolve",
            stage,
            families: plan.families.clone(),
            platform: plan.platform.to_string(),
            daemon: addr.to_string(),
            checkout_head: plan.head.clone(),
            fingerprints: plan.fingerprints.clone(),
            missing: documents::missing(&resolved),
            resolved,
            runs,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    })
}

/// How `fetch`/`bootstrap` write (the CLI's `WriteArgs` and layout flags).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct Write {
    layout: String,
    hardlink: bool,
    full: bool,
    verify: bool,
    allow_missing: bool,
}

/// `cairn bootstrap --json` / `cairn fetch --json`: plan, fetch and materialize through the same
/// library code as the CLI. Missing artifacts raise `MissingArtifacts` (carrying the document)
/// after everything found was materialized, unless `allow_missing`.
///
/// The work runs on its own thread while this one waits without the GIL and checks for Python
/// signals: on `KeyboardInterrupt` the materializer is asked to stop, as `cairn` does on SIGINT
/// (at the next file boundary, state saved, no `.prebuilt` marker over an unfinished stage dir, or
/// before its first change), and the interrupt is raised once it has stopped.
#[pyfunction]
#[pyo3(signature = (daemon, stage, destination, select, write))]
fn fetch(
    py: Python<'_>,
    daemon: Option<String>,
    stage: Option<String>,
    destination: PathBuf,
    select: Select,
    write: Write,
) -> PyResult<String> {
    let stop = Arc::new(StopFlag::default());
    let worker_stop = stop.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("cairn-fetch".into())
        .spawn(move || {
            let _ = tx.send(fetch_blocking(
                daemon,
                stage,
                destination,
                select,
                write,
                worker_stop,
            ));
        })
        .map_err(|e| Failure::Cairn(format!("starting the fetch thread: {e}")).into_pyerr(py))?;
    let mut interrupt: Option<PyErr> = None;
    let mut rx = rx;
    let outcome = loop {
        // The receiver is `Send` but not `Sync`: move it into the GIL-free closure and back.
        let (received, back) =
            py.detach(move || (rx.recv_timeout(std::time::Duration::from_millis(50)), rx));
        rx = back;
        match received {
            Ok(outcome) => break outcome,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break Err(Failure::Cairn("the fetch thread panicked".into()));
            }
        }
        if interrupt.is_none()
            && let Err(e) = py.check_signals()
        {
            stop.request(libc::SIGINT);
            interrupt = Some(e);
        }
    };
    match interrupt {
        Some(e) => Err(e),
        None => outcome.map_err(|f| f.into_pyerr(py)),
    }
}

/// The work of [`fetch`], on its own thread.
fn fetch_blocking(
    daemon: Option<String>,
    stage: Option<String>,
    destination: PathBuf,
    select: Select,
    write: Write,
    stop: Arc<StopFlag>,
) -> Outcome<String> {
    {
        let started = Instant::now();
        let (command, layout) = match write.layout.as_str() {
            "bootstrap" => ("bootstrap", Layout::Bootstrap),
            "plain" => ("fetch", Layout::Plain),
            "flatten" => ("fetch", Layout::Flatten),
            other => {
                return Err(Failure::Cairn(format!(
                    "unknown layout `{other}` (expected bootstrap, plain or flatten)"
                )));
            }
        };
        let opts = Options {
            copy_mode: if write.hardlink {
                CopyMode::Hardlink
            } else {
                CopyMode::Auto
            },
            incremental: !write.full,
            verify: write.verify,
            stop: Some(stop),
            ..Options::new(layout)
        };
        let plan = select.plan(stage.as_deref())?;
        std::fs::create_dir_all(&destination)
            .map_err(|e| Failure::Cairn(format!("creating `{}`: {e}", destination.display())))?;
        let dest = std::path::absolute(&destination)
            .map_err(|e| Failure::Cairn(format!("`{}`: {e}", destination.display())))?;
        let addr = daemon_addr(daemon.as_deref());
        let asked: usize = plan.requests.iter().map(|r| r.artifacts.len()).sum();
        let outcome = if asked == 0 {
            None
        } else {
            Some(runtime()?.block_on(async {
                let mut client = connect_daemon(&addr).await?;
                fetching::fetch(
                    &mut client,
                    &plan.requests,
                    &dest,
                    &opts,
                    Transfer::for_addr(&addr),
                    Arc::new(NoReporter),
                )
                .await
                .map_err(|e| daemon_failure(e, &addr))
            })?)
        };
        let summary = Summary::of(outcome.as_ref(), started.elapsed());
        let (resolved, trees) = outcome.map(|o| (o.resolved, o.trees)).unwrap_or_default();
        let missing = documents::missing(&resolved);
        let doc = FetchJson {
            command,
            stage: stage.clone(),
            families: plan.families.clone(),
            platform: plan.platform.to_string(),
            destination: dest.clone(),
            layout: documents::layout_name(layout),
            daemon: addr.to_string(),
            checkout_head: plan.head.clone(),
            fingerprints: plan.fingerprints.clone(),
            resolved,
            missing: missing.clone(),
            trees,
            summary,
        };
        let json = to_json(&doc)?;
        if !missing.is_empty() && !write.allow_missing {
            let names: Vec<String> = missing
                .iter()
                .map(|m| format!("`{}` (fingerprint {})", m.artifact, m.fingerprint))
                .collect();
            return Err(Failure::Missing(
                format!(
                    "{command}: {} artifact(s) have no acceptable producer: {}",
                    missing.len(),
                    names.join(", ")
                ),
                json,
            ));
        }
        Ok(json)
    }
}

/// `cairn push --json`: publish the artifacts `stage` produced in `build_dir` as part of a run.
#[pyfunction]
#[pyo3(signature = (daemon, stage, family, build_dir, run_id, checkout=None, topology=None, platform=None, variant="release", repo="ROCm/TheRock", head_repo=None, workflow="", commit=None, status="success", compression="zstd"))]
#[allow(clippy::too_many_arguments)]
fn push(
    py: Python<'_>,
    daemon: Option<String>,
    stage: String,
    family: String,
    build_dir: PathBuf,
    run_id: String,
    checkout: Option<String>,
    topology: Option<String>,
    platform: Option<String>,
    variant: &str,
    repo: &str,
    head_repo: Option<String>,
    workflow: &str,
    commit: Option<String>,
    status: &str,
    compression: &str,
) -> PyResult<String> {
    let (variant, repo, workflow, status) = (
        variant.to_string(),
        repo.to_string(),
        workflow.to_string(),
        status.to_string(),
    );
    let compression = compression.to_string();
    detached(py, move || {
        let checkout = self::checkout(checkout.as_deref())?;
        let t = checked_topology(topology.as_deref(), &checkout)?;
        let names: Vec<&str> = t
            .produced(&stage)
            .map_err(|e| Failure::of(&e))?
            .into_iter()
            .collect();
        let platform = self::platform(platform.as_deref())?;
        let compression: Compression = compression.parse().map_err(|e| Failure::of(&e))?;
        let f = Fingerprinter::new(&t, &checkout, config(&variant)).map_err(|e| {
            Failure::Cairn(format!(
                "reading the checkout `{}`\n  caused by: {}",
                checkout.display(),
                chain(&e)
            ))
        })?;
        let fps = f
            .compute_some(&names, &family, platform)
            .map_err(|e| Failure::of(&e))?;
        let build_dir = std::fs::canonicalize(&build_dir)
            .map_err(|e| Failure::Cairn(format!("build dir `{}`: {e}", build_dir.display())))?;
        // As `cairn push`: what the job used without building it, from its last bootstrap.
        let reused_from = cairn_client::plan::reused_inbound(
            &t,
            &stage,
            &cairn_client::materialize::recorded_sources(&build_dir),
        )
        .map_err(|e| Failure::of(&e))?;
        let spec = PublishSpec {
            build_dir,
            stage,
            family,
            platform: platform.to_string(),
            repo,
            head_repo: head_repo.unwrap_or_default(),
            workflow,
            run_id,
            commit: commit.unwrap_or_else(|| f.snapshot().head.clone()),
            status,
            compression: compression.to_string(),
            compression_level: None,
            branch: api::push_branch(None, |k| std::env::var(k).ok())
                .map_err(|e| Failure::of(&e))?,
            fingerprints: fps.into_iter().collect(),
            reused_from,
        };
        let addr = daemon_addr(daemon.as_deref());
        let published = runtime()?.block_on(async {
            let mut client = connect_daemon(&addr).await?;
            api::publish(&mut client, &spec)
                .await
                .map_err(|e| daemon_failure(e, &addr))
        })?;
        to_json(&published)
    })
}

/// `cairn import --json`: list (and with `ingest`, download) a run published without Cairn.
#[pyfunction]
#[pyo3(signature = (daemon, run_id, platform=None, repo=None, ingest=false))]
fn import_run(
    py: Python<'_>,
    daemon: Option<String>,
    run_id: String,
    platform: Option<String>,
    repo: Option<String>,
    ingest: bool,
) -> PyResult<String> {
    detached(py, move || {
        let platform = self::platform(platform.as_deref())?.to_string();
        let addr = daemon_addr(daemon.as_deref());
        let imported = runtime()?.block_on(async {
            let mut client = connect_daemon(&addr).await?;
            api::import(
                &mut client,
                &run_id,
                &platform,
                repo.as_deref().unwrap_or_default(),
                ingest,
            )
            .await
            .map_err(|e| match e {
                ClientError::Rpc {
                    code: tonic::Code::NotFound,
                    message,
                    ..
                } => Failure::Cairn(message),
                e => daemon_failure(e, &addr),
            })
        })?;
        to_json(&imported)
    })
}

/// `cairn status --json`.
#[pyfunction]
#[pyo3(signature = (daemon))]
fn status(py: Python<'_>, daemon: Option<String>) -> PyResult<String> {
    detached(py, move || {
        let addr = daemon_addr(daemon.as_deref());
        let (stats, pins) = runtime()?.block_on(async {
            let mut client = connect_daemon(&addr).await?;
            api::stats_and_pins(&mut client)
                .await
                .map_err(|e| daemon_failure(e, &addr))
        })?;
        to_json(&StatusJson {
            daemon: addr.to_string(),
            stats: &stats,
            pins: &pins,
        })
    })
}

/// `cairn gc --json [--max-bytes N]` (`max_bytes` in the CLI's grammar: `50G`, `1.5GiB`, bytes).
#[pyfunction]
#[pyo3(signature = (daemon, max_bytes=None))]
fn gc(py: Python<'_>, daemon: Option<String>, max_bytes: Option<String>) -> PyResult<String> {
    detached(py, move || {
        let quota = max_bytes
            .as_deref()
            .map(|s| s.parse::<ByteSize>().map(|b| b.as_u64()))
            .transpose()
            .map_err(|e| Failure::of(&e))?;
        let addr = daemon_addr(daemon.as_deref());
        let outcome = runtime()?.block_on(async {
            let mut client = connect_daemon(&addr).await?;
            api::gc(&mut client, quota)
                .await
                .map_err(|e| daemon_failure(e, &addr))
        })?;
        to_json(&outcome)
    })
}

/// `cairn find --json --commit C --family F...`: Cairn's commit index first, then GitHub (unless
/// `offline`), the same lookup as the CLI (`cairn_client::history::search::find_commit`).
#[pyfunction]
#[pyo3(signature = (daemon, commit, repo, families, workflow=None, platform=None, checkout=None, offline=false, require_successful_run=false, allow_untrusted=false))]
#[allow(clippy::too_many_arguments)]
fn find(
    py: Python<'_>,
    daemon: Option<String>,
    commit: String,
    repo: Option<String>,
    families: Vec<String>,
    workflow: Option<String>,
    platform: Option<String>,
    checkout: Option<String>,
    offline: bool,
    require_successful_run: bool,
    allow_untrusted: bool,
) -> PyResult<String> {
    detached(py, move || {
        let dir = checkout
            .map(PathBuf::from)
            .unwrap_or_else(|| checkout_dir(None).unwrap_or_else(|_| PathBuf::from(".")));
        let repo = match repo {
            Some(r) => r.parse::<GithubRepo>().map_err(|e| {
                Failure::Cairn(format!("invalid repo `{r}` (expected OWNER/REPO): {e}"))
            })?,
            None => github::detect_repo(&dir).unwrap_or_else(GithubRepo::the_rock),
        };
        for f in families.iter().filter(|f| *f != GENERIC) {
            cairn_fingerprint::names::family_targets(f)
                .map_err(|e| Failure::Cairn(format!("invalid family `{f}`: {}", chain(&e))))?;
        }
        let criteria = Criteria {
            workflow: workflow
                .clone()
                .unwrap_or_else(|| github::default_workflow(&repo).to_string()),
            repo,
            platform: self::platform(platform.as_deref())?,
            families,
            stage: None,
            needed: Vec::new(),
            // As `cairn find` for a commit: successful runs only (the flag is then the default).
            eligibility: cairn_client::history::Eligibility::for_query(
                false,
                require_successful_run,
                false,
                false,
            ),
            require_single: false,
            allow_untrusted,
            offline,
            workflow_explicit: workflow.is_some(),
        };
        let commit = commits::resolve_commit(&commit, &dir).map_err(|e| Failure::of(&e))?;
        let addr = daemon_addr(daemon.as_deref());
        let report = runtime()?.block_on(async {
            let daemon = connect_daemon(&addr).await?;
            let github = if offline {
                None
            } else {
                Some(GithubClient::from_env().map_err(|e| Failure::of(&e))?)
            };
            let mut sources = Sources { daemon, github };
            let mut rejected = Vec::new();
            let eval = search::find_commit(&mut sources, &criteria, &commit, &mut rejected)
                .await
                .map_err(|e| Failure::of(&e))?;
            let query = Query::new(&criteria, Some(commit.clone()), None);
            Ok(FindReport::new(
                query,
                Some(commit),
                eval,
                rejected,
                None,
                None,
            ))
        })?;
        to_json(&report)
    })
}

/// The module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PyTopology>()?;
    m.add_function(wrap_pyfunction!(fingerprints, m)?)?;
    m.add_function(wrap_pyfunction!(explain, m)?)?;
    m.add_function(wrap_pyfunction!(run_output_root, m)?)?;
    m.add_function(wrap_pyfunction!(resolve, m)?)?;
    m.add_function(wrap_pyfunction!(fetch, m)?)?;
    m.add_function(wrap_pyfunction!(push, m)?)?;
    m.add_function(wrap_pyfunction!(import_run, m)?)?;
    m.add_function(wrap_pyfunction!(status, m)?)?;
    m.add_function(wrap_pyfunction!(gc, m)?)?;
    m.add_function(wrap_pyfunction!(find, m)?)?;
    Ok(())
}
