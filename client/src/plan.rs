//! Planning a fetch: which artifacts a stage needs (its inbound set, or every artifact without a
//! stage) minus exclusions, fingerprinted at a checkout once per GPU family, as one daemon
//! [`Request`] per family. `bootstrap`, `fetch` and `resolve` all start here; nothing in this module
//! talks to the daemon.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use cairn_fingerprint::names::NameError;
use cairn_fingerprint::{
    Blake3, Component, FingerprintConfig, FingerprintError, Fingerprinter, Platform, Topology,
    TopologyError,
};

use crate::api::{Policy, Request};

/// What to plan. The fields are the selection options of `bootstrap`, `fetch` and `resolve`, and
/// the errors name those options.
#[derive(Debug, Clone)]
pub struct PlanSpec {
    /// The stage whose inbound artifacts are wanted; every artifact when `None`.
    pub stage: Option<String>,
    /// Artifacts not wanted (`--exclude-artifacts`); each must exist in the topology.
    pub exclude_artifacts: Vec<String>,
    /// Components the daemon should leave out (`--exclude-components`); each must be valid.
    pub exclude_components: Vec<String>,
    /// GPU families, one request each; at least one.
    pub families: Vec<String>,
    /// Platform.
    pub platform: Platform,
    /// Build variant fingerprints are computed for.
    pub variant: String,
    /// What the daemon may answer with.
    pub policy: Policy,
}

/// The requests of one command: per family, the artifacts and their fingerprints.
#[derive(Debug, Clone)]
pub struct FetchPlan {
    /// Families, in request order.
    pub families: Vec<String>,
    /// Platform.
    pub platform: Platform,
    /// The checkout's `HEAD` commit.
    pub head: String,
    /// Family → artifact → fingerprint.
    pub fingerprints: BTreeMap<String, BTreeMap<String, Blake3>>,
    /// One request per family.
    pub requests: Vec<Request>,
    /// How many artifacts were fingerprinted per family.
    pub artifacts: usize,
    /// Time spent reading the checkout and fingerprinting.
    pub elapsed: Duration,
}

/// Why a fetch could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The stage is unknown (or the topology cannot answer for it).
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// An excluded artifact is not in the topology.
    #[error("--exclude-artifacts names `{name}`")]
    ExcludedArtifact {
        /// The name given.
        name: String,
        /// The topology's answer.
        #[source]
        source: TopologyError,
    },
    /// An excluded component is not a component.
    #[error("--exclude-components names `{name}`")]
    ExcludedComponent {
        /// The name given.
        name: String,
        /// Why it is not one.
        #[source]
        source: NameError,
    },
    /// No family to fetch for.
    #[error("no GPU family: pass --family or --amdgpu-families")]
    NoFamily,
    /// The checkout could not be read.
    #[error("reading the checkout `{}`", checkout.display())]
    Checkout {
        /// The checkout.
        checkout: PathBuf,
        /// Why.
        #[source]
        source: FingerprintError,
    },
    /// Fingerprinting failed.
    #[error(transparent)]
    Fingerprint(#[from] FingerprintError),
    /// Artifacts by name without a run to take them from.
    #[error(
        "no git checkout to fingerprint: pass --checkout DIR, or --run-id ID to take that run's \
         artifact set by name"
    )]
    NoRunId,
}

/// The artifacts `spec` wants from `topology`: the stage's inbound artifacts (every artifact without
/// a stage) minus the exclusions, in the topology's order, and only target-neutral ones when the
/// sole family is `generic`. Checks the exclusions.
pub fn wanted<'t>(topology: &'t Topology, spec: &PlanSpec) -> Result<Vec<&'t str>, PlanError> {
    let mut names: Vec<&str> = match &spec.stage {
        Some(stage) => topology.inbound(stage)?.into_iter().collect(),
        None => topology
            .artifacts()
            .iter()
            .map(|a| a.name.as_str())
            .collect(),
    };
    for a in &spec.exclude_artifacts {
        topology
            .artifact(a)
            .map_err(|source| PlanError::ExcludedArtifact {
                name: a.clone(),
                source,
            })?;
    }
    names.retain(|n| !spec.exclude_artifacts.iter().any(|a| a == n));
    for c in &spec.exclude_components {
        Component::from_str(c).map_err(|source| PlanError::ExcludedComponent {
            name: c.clone(),
            source,
        })?;
    }
    if spec.families.is_empty() {
        return Err(PlanError::NoFamily);
    }
    // Only the `generic` family (`--generic-only`): target-specific artifacts have no generic
    // archive, so they are not wanted rather than reported missing.
    if spec
        .families
        .iter()
        .all(|f| f == cairn_fingerprint::names::GENERIC)
    {
        names.retain(|n| topology.artifact(n).is_ok_and(|a| !a.is_target_specific()));
    }
    Ok(names)
}

/// Fingerprint the wanted artifacts at `checkout`: one request per family.
pub fn plan(topology: &Topology, checkout: &Path, spec: &PlanSpec) -> Result<FetchPlan, PlanError> {
    let names = wanted(topology, spec)?;
    let config = FingerprintConfig {
        variant: spec.variant.clone(),
        ..FingerprintConfig::default()
    };
    let started = Instant::now();
    let fingerprinter =
        Fingerprinter::new(topology, checkout, config).map_err(|source| PlanError::Checkout {
            checkout: checkout.to_path_buf(),
            source,
        })?;
    let mut fingerprints = BTreeMap::new();
    let mut requests = Vec::new();
    for family in &spec.families {
        let fps = fingerprinter.compute_some(&names, family, spec.platform)?;
        requests.push(Request {
            stage: spec.stage.as_deref().unwrap_or("all").to_string(),
            family: family.clone(),
            platform: spec.platform.to_string(),
            artifacts: fps.iter().map(|(n, fp)| (n.clone(), Some(*fp))).collect(),
            exclude_components: spec.exclude_components.clone(),
            policy: spec.policy.clone(),
        });
        fingerprints.insert(family.clone(), fps);
    }
    Ok(FetchPlan {
        families: spec.families.clone(),
        platform: spec.platform,
        head: fingerprinter.snapshot().head.clone(),
        fingerprints,
        requests,
        artifacts: names.len(),
        elapsed: started.elapsed(),
    })
}

/// [`plan`] over `checkout`, or without one (a plan for a named run outside any checkout,
/// [`crate::checkout::plan_checkout`]) [`plan_by_name`].
pub fn plan_in(
    topology: &Topology,
    checkout: Option<&Path>,
    spec: &PlanSpec,
) -> Result<FetchPlan, PlanError> {
    match checkout {
        Some(checkout) => plan(topology, checkout, spec),
        None => plan_by_name(topology, spec),
    }
}

/// The requests of `--run-id X` without a git checkout: the wanted artifacts by name, no
/// fingerprints, so the daemon answers from run X's artifact set alone (what X built and what it
/// recorded as reused, else X's listing). `head` is empty. `spec.policy.run_id` must be set: without
/// it nothing could answer a request without fingerprints ([`PlanError::NoRunId`]).
pub fn plan_by_name(topology: &Topology, spec: &PlanSpec) -> Result<FetchPlan, PlanError> {
    let names = wanted(topology, spec)?;
    if spec.policy.run_id.is_none() {
        return Err(PlanError::NoRunId);
    }
    let requests = spec
        .families
        .iter()
        .map(|family| Request {
            stage: spec.stage.as_deref().unwrap_or("all").to_string(),
            family: family.clone(),
            platform: spec.platform.to_string(),
            artifacts: names.iter().map(|n| (n.to_string(), None)).collect(),
            exclude_components: spec.exclude_components.clone(),
            policy: spec.policy.clone(),
        })
        .collect();
    Ok(FetchPlan {
        families: spec.families.clone(),
        platform: spec.platform,
        head: String::new(),
        fingerprints: BTreeMap::new(),
        requests,
        artifacts: names.len(),
        elapsed: Duration::ZERO,
    })
}

/// The reuse a job records when it publishes (`cairn push`): every inbound artifact of `stage` that
/// the build dir's last bootstrap took from a run (`sources`, from
/// [`crate::materialize::recorded_sources`]) and that `stage` does not build, as artifact name →
/// run id. Archives whose names do not parse are left out. When components of one artifact came
/// from different runs, the first in name order is recorded.
pub fn reused_inbound(
    topology: &Topology,
    stage: &str,
    sources: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, TopologyError> {
    let inbound = topology.inbound(stage)?;
    let produced = topology.produced(stage)?;
    let mut out = BTreeMap::new();
    for (archive, run_id) in sources {
        let Ok(name) = cairn_fingerprint::ArtifactName::parse(archive) else {
            continue;
        };
        let name = name.name.as_str();
        if inbound.contains(&name) && !produced.contains(&name) {
            out.entry(name.to_string())
                .or_insert_with(|| run_id.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPOLOGY: &str = r#"
[build_stages.compiler]
artifact_groups = ["compiler"]
[build_stages.libs]
artifact_groups = ["libs"]
[artifact_groups.compiler]
[artifact_groups.libs]
artifact_group_deps = ["compiler"]
[artifacts.amd-llvm]
artifact_group = "compiler"
[artifacts.hipcc]
artifact_group = "compiler"
[artifacts.blas]
artifact_group = "libs"
type = "target-specific"
artifact_deps = ["amd-llvm"]
"#;

    fn spec(stage: Option<&str>, exclude: &[&str], families: &[&str]) -> PlanSpec {
        PlanSpec {
            stage: stage.map(str::to_string),
            exclude_artifacts: exclude.iter().map(|s| s.to_string()).collect(),
            exclude_components: Vec::new(),
            families: families.iter().map(|s| s.to_string()).collect(),
            platform: Platform::Linux,
            variant: "release".into(),
            policy: Policy::default(),
        }
    }

    #[test]
    fn a_stage_wants_its_inbound_artifacts_minus_exclusions() {
        let t = Topology::parse(TOPOLOGY).unwrap();
        let s = spec(Some("libs"), &[], &["gfx1151"]);
        assert_eq!(wanted(&t, &s).unwrap(), ["amd-llvm", "hipcc"]);
        let s = spec(Some("libs"), &["hipcc"], &["gfx1151"]);
        assert_eq!(wanted(&t, &s).unwrap(), ["amd-llvm"]);
        let s = spec(None, &["blas"], &["gfx1151"]);
        assert_eq!(wanted(&t, &s).unwrap(), ["amd-llvm", "hipcc"]);
    }

    #[test]
    fn bad_selections_are_refused_before_reading_the_checkout() {
        let t = Topology::parse(TOPOLOGY).unwrap();
        let nowhere = Path::new("/nonexistent/checkout");
        let err = plan(&t, nowhere, &spec(Some("nope"), &[], &["gfx1151"])).unwrap_err();
        assert!(matches!(err, PlanError::Topology(_)), "{err}");
        let err = plan(&t, nowhere, &spec(Some("libs"), &["nope"], &["gfx1151"])).unwrap_err();
        assert_eq!(err.to_string(), "--exclude-artifacts names `nope`");
        let mut s = spec(Some("libs"), &[], &["gfx1151"]);
        s.exclude_components = vec!["nope".into()];
        let err = plan(&t, nowhere, &s).unwrap_err();
        assert_eq!(err.to_string(), "--exclude-components names `nope`");
        let err = plan(&t, nowhere, &spec(Some("libs"), &[], &[])).unwrap_err();
        assert!(matches!(err, PlanError::NoFamily), "{err}");
        let err = plan(&t, nowhere, &spec(Some("libs"), &[], &["gfx1151"])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("reading the checkout `/nonexistent/checkout`"),
            "{err}"
        );
    }

    #[test]
    fn by_name_needs_a_run_id_and_sends_no_fingerprints() {
        let t = Topology::parse(TOPOLOGY).unwrap();
        let mut s = spec(Some("libs"), &[], &["gfx1151"]);
        assert!(matches!(plan_by_name(&t, &s), Err(PlanError::NoRunId)));
        s.policy.run_id = Some("1002".into());
        let p = plan_by_name(&t, &s).unwrap();
        assert_eq!(
            p.requests[0].artifacts,
            [("amd-llvm".to_string(), None), ("hipcc".to_string(), None)]
        );
        assert!(p.head.is_empty() && p.fingerprints.is_empty());
    }
}
