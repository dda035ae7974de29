//! The `--json` documents of the online commands (`bootstrap`/`fetch`, `resolve`, `status`), and
//! the steps that produce them which are not glue: merging the per-family resolve answers, and the
//! hint an unreachable daemon gets. The CLI prints these documents; the Python package (`python/`)
//! returns the same documents as dataclasses, so both are built here, once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use cairn_fingerprint::Blake3;
use cairn_proto::v1::cairn_client::CairnClient;
use serde::Serialize;

use crate::api::{self, ClientError, Request, Resolved, Stats, Status};
use crate::connect::{DaemonAddr, DaemonChannel};
use crate::fetch::{FetchedTree, Summary};
use crate::materialize::Layout;

/// The `--json` document of `cairn bootstrap` and `cairn fetch`.
///
/// ```json
/// {
///   "command": "bootstrap",              // or "fetch"
///   "stage": "math-libs",                // null for `fetch` without --stage
///   "families": ["gfx94X-dcgpu"],
///   "platform": "linux",
///   "destination": "/abs/build",
///   "layout": "bootstrap",               // "plain" | "flatten"
///   "daemon": "unix:/run/user/1000/cairn/cairnd.sock",
///   "checkout_head": "<commit>",
///   "fingerprints": {"gfx94X-dcgpu": {"amd-llvm": "<64 hex>"}},
///   "resolved": [Resolved],              // every archive found and every artifact missing
///   "missing": [Resolved],               // the missing subset
///   "trees": [FetchedTree],              // what was materialized
///   "summary": Summary
/// }
/// ```
#[derive(Debug, Serialize)]
pub struct FetchJson {
    /// `bootstrap` or `fetch`.
    pub command: &'static str,
    /// The stage, if one was given.
    pub stage: Option<String>,
    /// Families fetched (besides `generic`).
    pub families: Vec<String>,
    /// Platform.
    pub platform: String,
    /// Absolute destination.
    pub destination: PathBuf,
    /// `bootstrap`, `plain` or `flatten`.
    pub layout: &'static str,
    /// Daemon address.
    pub daemon: String,
    /// The checkout's HEAD commit.
    pub checkout_head: String,
    /// Family → artifact → fingerprint.
    pub fingerprints: BTreeMap<String, BTreeMap<String, Blake3>>,
    /// Every archive found and every artifact missing.
    pub resolved: Vec<Resolved>,
    /// The missing subset.
    pub missing: Vec<Resolved>,
    /// The trees materialized.
    pub trees: Vec<FetchedTree>,
    /// Totals.
    pub summary: Summary,
}

/// The `--json` document of `cairn resolve`.
///
/// ```json
/// {
///   "command": "resolve",
///   "stage": "math-libs",
///   "families": ["gfx94X-dcgpu"],
///   "platform": "linux",
///   "daemon": "unix:/run/user/1000/cairn/cairnd.sock",
///   "checkout_head": "<commit>",
///   "fingerprints": {"gfx94X-dcgpu": {"amd-llvm": "<64 hex>"}},
///   "resolved": [Resolved],   // every archive found and every artifact missing, with explanations
///   "missing": [Resolved],    // the missing subset
///   "runs": ["1001", "1002"], // the runs the found archives come from
///   "elapsed_ms": 12
/// }
/// ```
#[derive(Debug, Serialize)]
pub struct ResolveJson {
    /// Always `resolve`.
    pub command: &'static str,
    /// The stage.
    pub stage: String,
    /// Families resolved (besides `generic`).
    pub families: Vec<String>,
    /// Platform.
    pub platform: String,
    /// Daemon address.
    pub daemon: String,
    /// The checkout's HEAD commit.
    pub checkout_head: String,
    /// Family → artifact → fingerprint.
    pub fingerprints: BTreeMap<String, BTreeMap<String, Blake3>>,
    /// Every archive found and every artifact missing.
    pub resolved: Vec<Resolved>,
    /// The missing subset.
    pub missing: Vec<Resolved>,
    /// Runs the found archives come from.
    pub runs: Vec<String>,
    /// Wall time, fingerprinting included.
    pub elapsed_ms: u64,
}

/// The `--json` document of `cairn status`: [`Stats`] plus `daemon` (its address) and `pins`.
#[derive(Debug, Serialize)]
pub struct StatusJson<'a> {
    /// Daemon address.
    pub daemon: String,
    /// The daemon's counters.
    #[serde(flatten)]
    pub stats: &'a Stats,
    /// The daemon's pins.
    pub pins: &'a [crate::api::PinInfo],
}

/// The name of a layout in [`FetchJson::layout`].
pub fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Bootstrap => "bootstrap",
        Layout::Plain => "plain",
        Layout::Flatten => "flatten",
    }
}

/// Resolve every non-empty request (one per family) and merge the answers: a `generic` archive is
/// the answer of every family's request, so it is listed once. Returns the answers in request
/// order and the sorted runs they come from.
pub async fn resolve_all(
    client: &mut CairnClient<DaemonChannel>,
    requests: &[Request],
) -> Result<(Vec<Resolved>, Vec<String>), ClientError> {
    let mut resolved: Vec<Resolved> = Vec::new();
    let mut runs = BTreeSet::new();
    for request in requests.iter().filter(|r| !r.artifacts.is_empty()) {
        let (answer, request_runs) = api::resolve(client, request).await?;
        for r in answer {
            if !resolved.iter().any(|seen| seen.artifact == r.artifact) {
                resolved.push(r);
            }
        }
        runs.extend(request_runs);
    }
    Ok((resolved, runs.into_iter().collect()))
}

/// The missing subset of `resolved`.
pub fn missing(resolved: &[Resolved]) -> Vec<Resolved> {
    resolved
        .iter()
        .filter(|r| r.status == Status::Missing)
        .cloned()
        .collect()
}

/// What to tell the user about an online error: an unreachable or vanished daemon gets a hint how
/// to start it (or rerun); other errors need none.
pub fn hint(err: &ClientError, addr: &DaemonAddr) -> Option<String> {
    match err {
        ClientError::Connect(_) => Some(format!(
            "cairnd is not reachable at `{addr}`; start it with `cairnd serve` \
             (or point --daemon / CAIRN_SOCKET at a running daemon)"
        )),
        ClientError::Lost { .. } => Some(format!(
            "cairnd at `{addr}` went away before the command finished; run it again once \
             `cairnd serve` is back (a rerun completes an interrupted materialization)"
        )),
        _ => None,
    }
}
