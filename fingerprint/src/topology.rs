//! The build topology: TheRock's `BUILD_TOPOLOGY.toml` as a typed model, its validation, and the
//! queries CI stages ask of it.
//!
//! Vocabulary (FACTS §1): a **source set** names git submodules and external git sources; a **build
//! stage** is one CI job building some **artifact groups**; a group owns **artifacts**, the unit of
//! packaging. Groups depend on groups (`artifact_group_deps`), artifacts on artifacts
//! (`artifact_deps`).
//!
//! The queries reproduce `build_tools/_therock_utils/build_topology.py` exactly (FACTS §2), including
//! its quirks: [`Topology::inbound`] follows a stage's group deps only one level (their artifacts and
//! those artifacts' `artifact_deps` closure), no query filters by platform, and an unknown dependency
//! name is carried along as a name. Declaration order is kept (the `preserve_order` feature of `toml`),
//! because TheRock's build order and reverse indexes depend on it.
//!
//! [`Topology::validate`] returns every problem at once, each naming the stage, group, artifact or
//! source set at fault; loading never validates, so a broken file can still be inspected.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a topology could not be loaded or a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read.
    #[error("cannot read topology `{path}`: {error}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The I/O error (part of the message: a missing topology is a one-line error).
        error: std::io::Error,
    },
    /// The file is not a TOML document of the expected shape.
    #[error("cannot parse topology `{path}`: {message}")]
    Parse {
        /// The file (or `<string>` for in-memory text).
        path: PathBuf,
        /// The parser's message, on one line.
        message: String,
    },
    /// A stage name that is not in the topology.
    #[error("unknown stage `{0}`")]
    UnknownStage(String),
    /// An artifact group name that is not in the topology.
    #[error("unknown artifact group `{0}`")]
    UnknownGroup(String),
    /// An artifact name that is not in the topology.
    #[error("unknown artifact `{0}`")]
    UnknownArtifact(String),
}

/// Type of a build stage or an artifact group: `generic` (one job) or `per-arch` (one job per GPU
/// family). Any other string is kept so that [`Topology::validate`] can report it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum StageType {
    /// `generic` (the default).
    #[default]
    Generic,
    /// `per-arch`.
    PerArch,
    /// Anything else (invalid).
    Other(String),
}

impl From<String> for StageType {
    fn from(s: String) -> Self {
        match s.as_str() {
            "generic" => StageType::Generic,
            "per-arch" => StageType::PerArch,
            _ => StageType::Other(s),
        }
    }
}

impl From<StageType> for String {
    fn from(t: StageType) -> String {
        t.to_string()
    }
}

impl fmt::Display for StageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StageType::Generic => "generic",
            StageType::PerArch => "per-arch",
            StageType::Other(s) => s,
        })
    }
}

/// Type of an artifact: `target-neutral` (archive family `generic`, one fingerprint for all
/// families) or `target-specific` (built per GPU family). Any other string is kept for validation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ArtifactType {
    /// `target-neutral` (the default).
    #[default]
    TargetNeutral,
    /// `target-specific`.
    TargetSpecific,
    /// Anything else (invalid).
    Other(String),
}

impl From<String> for ArtifactType {
    fn from(s: String) -> Self {
        match s.as_str() {
            "target-neutral" => ArtifactType::TargetNeutral,
            "target-specific" => ArtifactType::TargetSpecific,
            _ => ArtifactType::Other(s),
        }
    }
}

impl From<ArtifactType> for String {
    fn from(t: ArtifactType) -> String {
        t.to_string()
    }
}

impl fmt::Display for ArtifactType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArtifactType::TargetNeutral => "target-neutral",
            ArtifactType::TargetSpecific => "target-specific",
            ArtifactType::Other(s) => s,
        })
    }
}

/// `[metadata]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Schema version (`"2.0"` at TheRock HEAD).
    #[serde(default)]
    pub version: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// One `external_git_sources` entry of a source set. Every field is optional here so that a missing
/// one is a validation problem, not a parse failure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalGitSource {
    /// Source name (kebab-case).
    pub name: Option<String>,
    /// Clone URL.
    pub origin: Option<String>,
    /// Pinned commit.
    pub commit: Option<String>,
    /// Checkout path, relative, under `optional-sources/`.
    pub path: Option<String>,
}

/// `[source_sets.<name>]`: submodules (by `.gitmodules` name) and external sources checked out
/// together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSet {
    /// The table key.
    #[serde(skip_deserializing)]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Git submodule names.
    #[serde(default)]
    pub submodules: Vec<String>,
    /// Externally fetched git repositories.
    #[serde(default)]
    pub external_git_sources: Vec<ExternalGitSource>,
    /// Platforms (`windows`, `linux`) on which this set is not checked out.
    #[serde(default)]
    pub disable_platforms: Vec<String>,
    /// Superproject path prefixes owned by this set (validated, unused by TheRock today).
    #[serde(default)]
    pub path_prefixes: Vec<String>,
}

/// `[build_stages.<name>]`: one CI job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildStage {
    /// The table key.
    #[serde(skip_deserializing)]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Groups built by this stage.
    #[serde(default)]
    pub artifact_groups: Vec<String>,
    /// `generic` or `per-arch`.
    #[serde(default, rename = "type")]
    pub kind: StageType,
}

/// `[artifact_groups.<name>]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactGroup {
    /// The table key.
    #[serde(skip_deserializing)]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// `generic` or `per-arch`.
    #[serde(default, rename = "type")]
    pub kind: StageType,
    /// Groups whose artifacts this group's build needs (followed one level by `inbound`).
    #[serde(default)]
    pub artifact_group_deps: Vec<String>,
    /// Source sets this group is built from.
    #[serde(default)]
    pub source_sets: Vec<String>,
    /// Parsed for completeness; TheRock's parser ignores it on groups.
    #[serde(default)]
    pub disable_platforms: Vec<String>,
}

/// `[artifacts.<name>]`: the unit of packaging, archived per component and family.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The table key.
    #[serde(skip_deserializing)]
    pub name: String,
    /// Free text (not in TheRock's schema, accepted).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The group that owns (and whose stage produces) this artifact.
    pub artifact_group: String,
    /// `target-neutral` or `target-specific`.
    #[serde(default, rename = "type")]
    pub kind: ArtifactType,
    /// Artifacts this one is built against.
    #[serde(default)]
    pub artifact_deps: Vec<String>,
    /// Explicit `THEROCK_ENABLE_<feature_name>`; see [`Artifact::feature_name`].
    #[serde(default)]
    pub feature_name: Option<String>,
    /// Explicit feature group; see [`Artifact::feature_group`].
    #[serde(default)]
    pub feature_group: Option<String>,
    /// `windows` or `linux`; informational only (TheRock filters on nothing with it).
    #[serde(default)]
    pub platform: Option<String>,
    /// Platforms on which the artifact is not built.
    #[serde(default)]
    pub disable_platforms: Vec<String>,
    /// Platform → CMake flag: disabled on that platform unless the flag is set.
    #[serde(default)]
    pub disable_platforms_if_flags_not_set: BTreeMap<String, String>,
    /// Processors (`x86_64`, `aarch64`, `ppc64le`) on which the artifact is not built.
    #[serde(default)]
    pub disable_processors: Vec<String>,
    /// pip arguments needed to build it.
    #[serde(default)]
    pub python_requires: Vec<String>,
    /// kpack split database handlers.
    #[serde(default)]
    pub split_databases: Vec<String>,
    /// Test artifacts built alongside (not validated by TheRock).
    #[serde(default)]
    pub test_artifacts: Vec<String>,
}

impl Artifact {
    /// The CMake feature name: explicit, or the artifact name upper-cased with `-` → `_`.
    pub fn feature_name(&self) -> String {
        self.feature_name
            .clone()
            .unwrap_or_else(|| upper_snake(&self.name))
    }

    /// The CMake feature group: explicit, or the group name upper-cased with `-` → `_`.
    pub fn feature_group(&self) -> String {
        self.feature_group
            .clone()
            .unwrap_or_else(|| upper_snake(&self.artifact_group))
    }

    /// Whether the artifact is built per GPU family.
    pub fn is_target_specific(&self) -> bool {
        self.kind == ArtifactType::TargetSpecific
    }
}

fn upper_snake(s: &str) -> String {
    s.to_uppercase().replace('-', "_")
}

/// Deserialize a TOML table into `(key, value)` pairs in document order.
fn ordered<'de, D, T>(d: D) -> Result<Vec<(String, T)>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
        type Value = Vec<(String, T)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a table")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = map.next_entry::<String, T>()? {
                out.push((k, v));
            }
            Ok(out)
        }
    }
    d.deserialize_map(V(std::marker::PhantomData))
}

#[derive(Deserialize)]
struct RawTopology {
    #[serde(default)]
    metadata: Metadata,
    #[serde(default, deserialize_with = "ordered")]
    source_sets: Vec<(String, SourceSet)>,
    #[serde(default, deserialize_with = "ordered")]
    build_stages: Vec<(String, BuildStage)>,
    #[serde(default, deserialize_with = "ordered")]
    artifact_groups: Vec<(String, ArtifactGroup)>,
    #[serde(default, deserialize_with = "ordered")]
    artifacts: Vec<(String, Artifact)>,
}

/// A parsed `BUILD_TOPOLOGY.toml`, entries in declaration order, with name indexes.
#[derive(Debug, Clone)]
pub struct Topology {
    /// `[metadata]`.
    pub metadata: Metadata,
    source_sets: Vec<SourceSet>,
    stages: Vec<BuildStage>,
    groups: Vec<ArtifactGroup>,
    artifacts: Vec<Artifact>,
    source_set_index: HashMap<String, usize>,
    stage_index: HashMap<String, usize>,
    group_index: HashMap<String, usize>,
    artifact_index: HashMap<String, usize>,
}

fn named<T>(
    entries: Vec<(String, T)>,
    set: impl Fn(&mut T, String),
) -> (Vec<T>, HashMap<String, usize>) {
    let mut index = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (i, (name, mut value)) in entries.into_iter().enumerate() {
        index.insert(name.clone(), i);
        set(&mut value, name);
        out.push(value);
    }
    (out, index)
}

/// Largest topology file [`Topology::load`] reads.
pub const MAX_TOPOLOGY_BYTES: u64 = 4 << 20;

impl Topology {
    /// Read and parse a topology file (no validation; see [`Topology::validate`]).
    ///
    /// At most [`MAX_TOPOLOGY_BYTES`] are read: a larger file (or an endless one, `/dev/zero`) is
    /// refused as soon as the limit is passed, without reading the rest.
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let text = crate::bounded::read_text(path, MAX_TOPOLOGY_BYTES, "a topology", "~32 KiB")
            .map_err(|error| TopologyError::Read {
                path: path.to_path_buf(),
                error,
            })?;
        Self::parse_named(&text, path)
    }

    /// Parse topology text (no validation).
    pub fn parse(text: &str) -> Result<Topology, TopologyError> {
        Self::parse_named(text, Path::new("<string>"))
    }

    fn parse_named(text: &str, path: &Path) -> Result<Topology, TopologyError> {
        let raw: RawTopology = toml::from_str(text).map_err(|e| TopologyError::Parse {
            path: path.to_path_buf(),
            message: e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        })?;
        let (source_sets, source_set_index) = named(raw.source_sets, |v, n| v.name = n);
        let (stages, stage_index) = named(raw.build_stages, |v, n| v.name = n);
        let (groups, group_index) = named(raw.artifact_groups, |v, n| v.name = n);
        let (artifacts, artifact_index) = named(raw.artifacts, |v, n| v.name = n);
        Ok(Topology {
            metadata: raw.metadata,
            source_sets,
            stages,
            groups,
            artifacts,
            source_set_index,
            stage_index,
            group_index,
            artifact_index,
        })
    }

    /// All source sets, in declaration order.
    pub fn source_sets(&self) -> &[SourceSet] {
        &self.source_sets
    }

    /// All build stages, in declaration order.
    pub fn stages(&self) -> &[BuildStage] {
        &self.stages
    }

    /// All artifact groups, in declaration order.
    pub fn groups(&self) -> &[ArtifactGroup] {
        &self.groups
    }

    /// All artifacts, in declaration order.
    pub fn artifacts(&self) -> &[Artifact] {
        &self.artifacts
    }

    /// The source set called `name`, if any.
    pub fn source_set(&self, name: &str) -> Option<&SourceSet> {
        self.source_set_index
            .get(name)
            .map(|&i| &self.source_sets[i])
    }

    /// The stage called `name`.
    pub fn stage(&self, name: &str) -> Result<&BuildStage, TopologyError> {
        self.stage_index
            .get(name)
            .map(|&i| &self.stages[i])
            .ok_or_else(|| TopologyError::UnknownStage(name.to_string()))
    }

    /// The artifact group called `name`.
    pub fn group(&self, name: &str) -> Result<&ArtifactGroup, TopologyError> {
        self.group_index
            .get(name)
            .map(|&i| &self.groups[i])
            .ok_or_else(|| TopologyError::UnknownGroup(name.to_string()))
    }

    /// The artifact called `name`.
    pub fn artifact(&self, name: &str) -> Result<&Artifact, TopologyError> {
        self.artifact_index
            .get(name)
            .map(|&i| &self.artifacts[i])
            .ok_or_else(|| TopologyError::UnknownArtifact(name.to_string()))
    }

    /// The artifacts owned by `group`, in declaration order (empty for an unknown group).
    pub fn artifacts_in_group<'a>(
        &'a self,
        group: &'a str,
    ) -> impl Iterator<Item = &'a Artifact> + 'a {
        self.artifacts
            .iter()
            .filter(move |a| a.artifact_group == group)
    }

    /// `get_produced_artifacts(stage)`: every artifact of every group of the stage.
    pub fn produced(&self, stage: &str) -> Result<BTreeSet<&str>, TopologyError> {
        let stage = self.stage(stage)?;
        Ok(self
            .artifacts
            .iter()
            .filter(|a| stage.artifact_groups.contains(&a.artifact_group))
            .map(|a| a.name.as_str())
            .collect())
    }

    /// `get_inbound_artifacts(stage)`: what a stage job must fetch before building.
    ///
    /// The artifacts of each *direct* `artifact_group_deps` entry of the stage's groups, plus the
    /// transitive `artifact_deps` closure of those and of every produced artifact, minus the
    /// produced artifacts. Group deps are not followed transitively, and nothing is filtered by
    /// platform: that is TheRock's behaviour (FACTS §2, gotcha 9).
    pub fn inbound(&self, stage: &str) -> Result<BTreeSet<&str>, TopologyError> {
        let st = self.stage(stage)?;
        let produced = self.produced(stage)?;
        let mut out: BTreeSet<&str> = BTreeSet::new();
        for group in &st.artifact_groups {
            let Ok(group) = self.group(group) else {
                continue;
            };
            for dep_group in &group.artifact_group_deps {
                for a in self.artifacts_in_group(dep_group) {
                    out.insert(&a.name);
                    self.close_over_deps(&a.name, &mut out);
                }
            }
        }
        for a in self
            .artifacts
            .iter()
            .filter(|a| st.artifact_groups.contains(&a.artifact_group))
        {
            for dep in &a.artifact_deps {
                out.insert(dep);
                self.close_over_deps(dep, &mut out);
            }
        }
        Ok(out.difference(&produced).copied().collect())
    }

    /// Add the transitive `artifact_deps` of `name` to `out` (names are marked before recursing, so
    /// diamonds and cycles terminate; unknown names have no deps).
    fn close_over_deps<'a>(&'a self, name: &str, out: &mut BTreeSet<&'a str>) {
        let Ok(a) = self.artifact(name) else { return };
        for dep in &a.artifact_deps {
            if out.insert(dep) {
                self.close_over_deps(dep, out);
            }
        }
    }

    /// The transitive `artifact_deps` of one artifact (not including itself).
    pub fn artifact_closure(&self, name: &str) -> Result<BTreeSet<&str>, TopologyError> {
        self.artifact(name)?;
        let mut out = BTreeSet::new();
        self.close_over_deps(name, &mut out);
        out.remove(name);
        Ok(out)
    }

    /// `get_build_order()`: stages in dependency order (DFS post-order in declaration order). A stage
    /// depends on every stage listing a group that one of its groups depends on. Cycles are not an
    /// error here (as in TheRock); [`Topology::validate`] reports them.
    pub fn build_order(&self) -> Vec<&str> {
        let deps: Vec<Vec<usize>> = self
            .stages
            .iter()
            .map(|stage| {
                let dep_groups: Vec<&String> = stage
                    .artifact_groups
                    .iter()
                    .filter_map(|g| self.group(g).ok())
                    .flat_map(|g| &g.artifact_group_deps)
                    .collect();
                (0..self.stages.len())
                    .filter(|&j| {
                        self.stages[j]
                            .artifact_groups
                            .iter()
                            .any(|g| dep_groups.contains(&g))
                    })
                    .collect()
            })
            .collect();
        let mut visited = vec![false; self.stages.len()];
        let mut order = Vec::new();
        fn visit(i: usize, deps: &[Vec<usize>], visited: &mut [bool], order: &mut Vec<usize>) {
            if visited[i] {
                return;
            }
            visited[i] = true;
            for &d in &deps[i] {
                visit(d, deps, visited, order);
            }
            order.push(i);
        }
        for i in 0..self.stages.len() {
            visit(i, &deps, &mut visited, &mut order);
        }
        order
            .into_iter()
            .map(|i| self.stages[i].name.as_str())
            .collect()
    }

    /// The stages listing `group`, in declaration order.
    pub fn stages_of_group(&self, group: &str) -> Vec<&str> {
        self.stages
            .iter()
            .filter(|s| s.artifact_groups.iter().any(|g| g == group))
            .map(|s| s.name.as_str())
            .collect()
    }

    /// The stage producing `artifact` (the first stage listing its group; [`Topology::validate`]
    /// reports a group listed by several stages). `None` when no stage lists the group.
    pub fn producing_stage(&self, artifact: &str) -> Result<Option<&str>, TopologyError> {
        let a = self.artifact(artifact)?;
        Ok(self.stages_of_group(&a.artifact_group).into_iter().next())
    }

    /// The source sets an artifact group is built from that are enabled on `platform` (unknown names
    /// skipped, as in `get_source_sets_for_stage`).
    pub fn source_sets_for_group(
        &self,
        group: &str,
        platform: Option<&str>,
    ) -> Result<Vec<&SourceSet>, TopologyError> {
        let group = self.group(group)?;
        Ok(group
            .source_sets
            .iter()
            .filter_map(|s| self.source_set(s))
            .filter(|s| platform.is_none_or(|p| !s.disable_platforms.iter().any(|d| d == p)))
            .collect())
    }

    /// The whole dependency graph, shaped like TheRock's `get_dependency_graph()`.
    pub fn dependency_graph(&self) -> DependencyGraph {
        let mut graph = DependencyGraph::default();
        for stage in &self.stages {
            let produced = self.produced(&stage.name).unwrap_or_default();
            let inbound = self.inbound(&stage.name).unwrap_or_default();
            graph.build_stages.insert(
                stage.name.clone(),
                StageNode {
                    kind: stage.kind.to_string(),
                    artifact_groups: stage.artifact_groups.clone(),
                    inbound_artifacts: inbound.into_iter().map(str::to_string).collect(),
                    produced_artifacts: produced.into_iter().map(str::to_string).collect(),
                },
            );
        }
        for group in &self.groups {
            graph.artifact_groups.insert(
                group.name.clone(),
                GroupNode {
                    kind: group.kind.to_string(),
                    depends_on: group.artifact_group_deps.clone(),
                    artifacts: self
                        .artifacts_in_group(&group.name)
                        .map(|a| a.name.clone())
                        .collect(),
                },
            );
        }
        for a in &self.artifacts {
            graph.artifacts.insert(
                a.name.clone(),
                ArtifactNode {
                    kind: a.kind.to_string(),
                    artifact_group: a.artifact_group.clone(),
                    depends_on: a.artifact_deps.clone(),
                    platform: a.platform.clone(),
                },
            );
        }
        graph
    }

    /// The artifact graph in Graphviz DOT: one cluster per stage, an edge from each artifact to
    /// each of its `artifact_deps`; target-specific artifacts are drawn bold.
    pub fn to_dot(&self) -> String {
        use std::fmt::Write;
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut out = String::from("digraph topology {\n  rankdir=LR;\n  node [shape=box];\n");
        let mut placed = BTreeSet::new();
        for stage in &self.stages {
            let _ = writeln!(
                out,
                "  subgraph {} {{",
                q(&format!("cluster_{}", stage.name))
            );
            let _ = writeln!(
                out,
                "    label={};",
                q(&format!("{} ({})", stage.name, stage.kind))
            );
            for a in self
                .artifacts
                .iter()
                .filter(|a| stage.artifact_groups.contains(&a.artifact_group))
            {
                if placed.insert(a.name.as_str()) {
                    let style = if a.is_target_specific() {
                        " [style=bold]"
                    } else {
                        ""
                    };
                    let _ = writeln!(out, "    {}{style};", q(&a.name));
                }
            }
            out.push_str("  }\n");
        }
        for a in self
            .artifacts
            .iter()
            .filter(|a| !placed.contains(a.name.as_str()))
        {
            let _ = writeln!(out, "  {};", q(&a.name));
        }
        for a in &self.artifacts {
            for dep in &a.artifact_deps {
                let _ = writeln!(out, "  {} -> {};", q(&a.name), q(dep));
            }
        }
        out.push_str("}\n");
        out
    }

    /// Every problem with this topology; empty means valid. Covers TheRock's `validate_topology()`
    /// (naming rules, allowed values, unknown references, cycles, external sources, duplicate
    /// submodule/path-prefix ownership) plus one Cairn rule: a group may be listed by at most one
    /// stage, so every artifact has a single producing stage.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.validate_names(&mut problems);
        self.validate_references(&mut problems);
        for path in find_cycles(
            &self.groups,
            |g| &g.name,
            |g| &g.artifact_group_deps,
            |n| self.group_index.get(n).copied(),
        ) {
            problems.push(Problem::GroupCycle { path });
        }
        for path in find_cycles(
            &self.artifacts,
            |a| &a.name,
            |a| &a.artifact_deps,
            |n| self.artifact_index.get(n).copied(),
        ) {
            problems.push(Problem::ArtifactCycle { path });
        }
        self.validate_sources(&mut problems);
        problems
    }

    fn validate_names(&self, problems: &mut Vec<Problem>) {
        let mut name = |kind: Entity, n: &str| {
            if !is_kebab(n) {
                problems.push(Problem::BadName {
                    kind,
                    name: n.to_string(),
                });
            }
        };
        self.source_sets
            .iter()
            .for_each(|s| name(Entity::SourceSet, &s.name));
        self.stages
            .iter()
            .for_each(|s| name(Entity::Stage, &s.name));
        self.groups
            .iter()
            .for_each(|g| name(Entity::Group, &g.name));
        self.artifacts
            .iter()
            .for_each(|a| name(Entity::Artifact, &a.name));
        for s in &self.source_sets {
            for src in &s.external_git_sources {
                if let Some(n) = &src.name {
                    name(Entity::ExternalSource, n);
                }
            }
        }
        for s in &self.stages {
            if let StageType::Other(v) = &s.kind {
                problems.push(Problem::BadValue {
                    kind: Entity::Stage,
                    name: s.name.clone(),
                    field: "type",
                    value: v.clone(),
                });
            }
        }
        for g in &self.groups {
            if let StageType::Other(v) = &g.kind {
                problems.push(Problem::BadValue {
                    kind: Entity::Group,
                    name: g.name.clone(),
                    field: "type",
                    value: v.clone(),
                });
            }
        }
        let bad = |kind: Entity, name: &str, field: &'static str, value: &str| Problem::BadValue {
            kind,
            name: name.to_string(),
            field,
            value: value.to_string(),
        };
        for s in &self.source_sets {
            for p in s
                .disable_platforms
                .iter()
                .filter(|p| !PLATFORMS.contains(&p.as_str()))
            {
                problems.push(bad(Entity::SourceSet, &s.name, "disable_platforms", p));
            }
        }
        for a in &self.artifacts {
            if let ArtifactType::Other(v) = &a.kind {
                problems.push(bad(Entity::Artifact, &a.name, "type", v));
            }
            for (field, value) in [
                ("feature_name", &a.feature_name),
                ("feature_group", &a.feature_group),
            ] {
                if let Some(v) = value.as_ref().filter(|v| !is_upper_snake(v)) {
                    problems.push(bad(Entity::Artifact, &a.name, field, v));
                }
            }
            if let Some(p) = a
                .platform
                .as_ref()
                .filter(|p| !PLATFORMS.contains(&p.as_str()))
            {
                problems.push(bad(Entity::Artifact, &a.name, "platform", p));
            }
            for p in a
                .disable_platforms
                .iter()
                .filter(|p| !PLATFORMS.contains(&p.as_str()))
            {
                problems.push(bad(Entity::Artifact, &a.name, "disable_platforms", p));
            }
            for (p, flag) in &a.disable_platforms_if_flags_not_set {
                if !PLATFORMS.contains(&p.as_str()) {
                    problems.push(bad(
                        Entity::Artifact,
                        &a.name,
                        "disable_platforms_if_flags_not_set",
                        p,
                    ));
                }
                if !is_upper_snake(flag) {
                    problems.push(bad(
                        Entity::Artifact,
                        &a.name,
                        "disable_platforms_if_flags_not_set",
                        flag,
                    ));
                }
            }
            for p in a
                .disable_processors
                .iter()
                .filter(|p| !PROCESSORS.contains(&p.as_str()))
            {
                problems.push(bad(Entity::Artifact, &a.name, "disable_processors", p));
            }
        }
    }

    fn validate_references(&self, problems: &mut Vec<Problem>) {
        let unknown = |from_kind, from: &str, to_kind, to: &str| Problem::UnknownReference {
            from_kind,
            from: from.to_string(),
            to_kind,
            to: to.to_string(),
        };
        for s in &self.stages {
            for g in s
                .artifact_groups
                .iter()
                .filter(|g| !self.group_index.contains_key(*g))
            {
                problems.push(unknown(Entity::Stage, &s.name, Entity::Group, g));
            }
        }
        for g in &self.groups {
            for d in g
                .artifact_group_deps
                .iter()
                .filter(|d| !self.group_index.contains_key(*d))
            {
                problems.push(unknown(Entity::Group, &g.name, Entity::Group, d));
            }
            for s in g
                .source_sets
                .iter()
                .filter(|s| !self.source_set_index.contains_key(*s))
            {
                problems.push(unknown(Entity::Group, &g.name, Entity::SourceSet, s));
            }
            let stages = self.stages_of_group(&g.name);
            if stages.len() > 1 {
                problems.push(Problem::GroupInSeveralStages {
                    group: g.name.clone(),
                    stages: stages.into_iter().map(str::to_string).collect(),
                });
            }
        }
        for a in &self.artifacts {
            if !self.group_index.contains_key(&a.artifact_group) {
                problems.push(unknown(
                    Entity::Artifact,
                    &a.name,
                    Entity::Group,
                    &a.artifact_group,
                ));
            }
            for d in a
                .artifact_deps
                .iter()
                .filter(|d| !self.artifact_index.contains_key(*d))
            {
                problems.push(unknown(Entity::Artifact, &a.name, Entity::Artifact, d));
            }
        }
    }

    fn validate_sources(&self, problems: &mut Vec<Problem>) {
        let mut submodule_owner: BTreeMap<&str, &str> = BTreeMap::new();
        let mut path_owner: BTreeMap<&str, &str> = BTreeMap::new();
        let mut prefix_owner: BTreeMap<&str, &str> = BTreeMap::new();
        for s in &self.source_sets {
            for sub in &s.submodules {
                match submodule_owner.get(sub.as_str()) {
                    Some(first) if *first != s.name => problems.push(Problem::DuplicateOwnership {
                        what: "submodule",
                        item: sub.clone(),
                        first: first.to_string(),
                        second: s.name.clone(),
                    }),
                    _ => {
                        submodule_owner.insert(sub, &s.name);
                    }
                }
            }
            for (i, src) in s.external_git_sources.iter().enumerate() {
                let label = src.name.clone().unwrap_or_else(|| format!("#{i}"));
                for (field, value) in [
                    ("name", &src.name),
                    ("origin", &src.origin),
                    ("commit", &src.commit),
                    ("path", &src.path),
                ] {
                    if value.as_deref().is_none_or(str::is_empty) {
                        problems.push(Problem::ExternalSource {
                            source_set: s.name.clone(),
                            external: label.clone(),
                            reason: format!("missing `{field}`"),
                        });
                    }
                }
                let Some(path) = src.path.as_deref().filter(|p| !p.is_empty()) else {
                    continue;
                };
                if let Some(reason) = external_path_problem(path) {
                    problems.push(Problem::ExternalSource {
                        source_set: s.name.clone(),
                        external: label.clone(),
                        reason,
                    });
                }
                match path_owner.get(path) {
                    Some(first) => problems.push(Problem::DuplicateOwnership {
                        what: "external source path",
                        item: path.to_string(),
                        first: first.to_string(),
                        second: s.name.clone(),
                    }),
                    None => {
                        path_owner.insert(path, &s.name);
                    }
                }
            }
            for prefix in &s.path_prefixes {
                let trimmed = prefix.trim_end_matches('/');
                let reason = if trimmed.is_empty() {
                    Some("is empty")
                } else if trimmed.starts_with('/') || trimmed.contains(':') {
                    Some("is absolute")
                } else if trimmed.split('/').any(|c| c == "..") {
                    Some("contains `..`")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    problems.push(Problem::BadPathPrefix {
                        source_set: s.name.clone(),
                        prefix: prefix.clone(),
                        reason,
                    });
                    continue;
                }
                match prefix_owner.get(trimmed) {
                    Some(first) if *first != s.name => problems.push(Problem::DuplicateOwnership {
                        what: "path prefix",
                        item: trimmed.to_string(),
                        first: first.to_string(),
                        second: s.name.clone(),
                    }),
                    _ => {
                        prefix_owner.insert(trimmed, &s.name);
                    }
                }
            }
        }
    }
}

/// Allowed platform names.
const PLATFORMS: [&str; 2] = ["windows", "linux"];
/// Allowed processor names.
const PROCESSORS: [&str; 3] = ["x86_64", "aarch64", "ppc64le"];

fn external_path_problem(path: &str) -> Option<String> {
    if path.starts_with('/') || path.starts_with('\\') || path.get(1..2) == Some(":") {
        return Some(format!("path `{path}` must be relative"));
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.contains(&"..") {
        return Some(format!("path `{path}` must not contain `..`"));
    }
    if parts.first() != Some(&"optional-sources") || parts.len() < 2 {
        return Some(format!("path `{path}` must be under `optional-sources/`"));
    }
    None
}

/// `^[a-z0-9]+(-[a-z0-9]+)*$`: names of stages, groups, artifacts, source sets, external sources.
pub fn is_kebab(s: &str) -> bool {
    !s.is_empty()
        && s.split('-').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// `^[A-Z0-9]+(_[A-Z0-9]+)*$`: feature names, feature groups and CMake flags.
pub fn is_upper_snake(s: &str) -> bool {
    !s.is_empty()
        && s.split('_').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
}

/// Every distinct cycle among `nodes` (declaration-order DFS), each as a path that starts and ends
/// at the same node. Unknown dependency names are skipped (reported elsewhere).
fn find_cycles<T>(
    nodes: &[T],
    name: impl Fn(&T) -> &String,
    deps: impl Fn(&T) -> &Vec<String>,
    index: impl Fn(&str) -> Option<usize>,
) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Gray,
        Black,
    }
    let mut color = vec![Color::White; nodes.len()];
    let mut seen: BTreeSet<Vec<usize>> = BTreeSet::new();
    let mut cycles = Vec::new();
    // Iterative DFS: each frame is (node, next dep position); `stack` mirrors the gray path.
    for root in 0..nodes.len() {
        if color[root] != Color::White {
            continue;
        }
        let mut frames: Vec<(usize, usize)> = vec![(root, 0)];
        color[root] = Color::Gray;
        while let Some(top) = frames.last_mut() {
            let (node, pos) = *top;
            let node_deps = deps(&nodes[node]);
            if pos >= node_deps.len() {
                color[node] = Color::Black;
                frames.pop();
                continue;
            }
            top.1 += 1;
            let dep = &node_deps[pos];
            let Some(d) = index(dep) else { continue };
            match color[d] {
                Color::White => {
                    color[d] = Color::Gray;
                    frames.push((d, 0));
                }
                Color::Gray => {
                    let start = frames.iter().position(|&(n, _)| n == d).unwrap_or(0);
                    let cycle: Vec<usize> = frames[start..].iter().map(|&(n, _)| n).collect();
                    // Canonical rotation (smallest index first) so each cycle is reported once.
                    let min = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
                    let canon: Vec<usize> =
                        cycle[min..].iter().chain(&cycle[..min]).copied().collect();
                    if seen.insert(canon) {
                        let mut path: Vec<String> =
                            cycle.iter().map(|&n| name(&nodes[n]).clone()).collect();
                        path.push(name(&nodes[d]).clone());
                        cycles.push(path);
                    }
                }
                Color::Black => {}
            }
        }
    }
    cycles
}

/// Which kind of topology entry a [`Problem`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Entity {
    /// `[build_stages.*]`.
    Stage,
    /// `[artifact_groups.*]`.
    Group,
    /// `[artifacts.*]`.
    Artifact,
    /// `[source_sets.*]`.
    SourceSet,
    /// An `external_git_sources` entry.
    ExternalSource,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Stage => "stage",
            Entity::Group => "artifact group",
            Entity::Artifact => "artifact",
            Entity::SourceSet => "source set",
            Entity::ExternalSource => "external source",
        })
    }
}

/// One validation problem, naming the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A name breaks `^[a-z0-9]+(-[a-z0-9]+)*$`.
    #[error("{kind} `{name}`: name must be lowercase words joined by `-`")]
    BadName {
        /// What is named.
        kind: Entity,
        /// The bad name.
        name: String,
    },
    /// A field has a value outside its allowed set or format.
    #[error("{kind} `{name}`: invalid {field} `{value}`")]
    BadValue {
        /// The entry's kind.
        kind: Entity,
        /// The entry's name.
        name: String,
        /// The field (`type`, `platform`, `feature_name`, ...).
        field: &'static str,
        /// The rejected value.
        value: String,
    },
    /// A reference to an entry that does not exist.
    #[error("{from_kind} `{from}` refers to unknown {to_kind} `{to}`")]
    UnknownReference {
        /// Kind of the referring entry.
        from_kind: Entity,
        /// Name of the referring entry.
        from: String,
        /// Kind of the missing entry.
        to_kind: Entity,
        /// The missing name.
        to: String,
    },
    /// A cycle in `artifact_group_deps`.
    #[error("artifact group `{}` is in a dependency cycle: {}", path[0], arrows(path))]
    GroupCycle {
        /// The cycle, first node repeated at the end.
        path: Vec<String>,
    },
    /// A cycle in `artifact_deps`.
    #[error("artifact `{}` is in a dependency cycle: {}", path[0], arrows(path))]
    ArtifactCycle {
        /// The cycle, first node repeated at the end.
        path: Vec<String>,
    },
    /// An external git source is incomplete or has a bad path.
    #[error("source set `{source_set}`: external source `{external}`: {reason}")]
    ExternalSource {
        /// The owning source set.
        source_set: String,
        /// The source's name (or `#index` when unnamed).
        external: String,
        /// What is wrong.
        reason: String,
    },
    /// A submodule, external source path or path prefix owned by two source sets.
    #[error("{what} `{item}` is owned by source sets `{first}` and `{second}`")]
    DuplicateOwnership {
        /// `submodule`, `external source path` or `path prefix`.
        what: &'static str,
        /// The doubly-owned item.
        item: String,
        /// The first owner.
        first: String,
        /// The second owner.
        second: String,
    },
    /// A path prefix that is empty, absolute or escapes the repository.
    #[error("source set `{source_set}`: path prefix `{prefix}` {reason}")]
    BadPathPrefix {
        /// The owning source set.
        source_set: String,
        /// The prefix as written.
        prefix: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Cairn rule: a group listed by more than one stage has no single producing stage.
    #[error(
        "artifact group `{group}` is listed by several stages: {}",
        ticks(stages)
    )]
    GroupInSeveralStages {
        /// The group.
        group: String,
        /// The stages listing it.
        stages: Vec<String>,
    },
}

fn arrows(path: &[String]) -> String {
    path.iter()
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(" -> ")
}

fn ticks(names: &[String]) -> String {
    names
        .iter()
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// TheRock's `get_dependency_graph()` as a serializable value (`cairn topology graph --json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DependencyGraph {
    /// Stage name → stage node.
    pub build_stages: BTreeMap<String, StageNode>,
    /// Group name → group node.
    pub artifact_groups: BTreeMap<String, GroupNode>,
    /// Artifact name → artifact node.
    pub artifacts: BTreeMap<String, ArtifactNode>,
}

/// A stage in [`DependencyGraph`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StageNode {
    /// `generic` or `per-arch`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Groups built by the stage.
    pub artifact_groups: Vec<String>,
    /// [`Topology::inbound`], sorted.
    pub inbound_artifacts: Vec<String>,
    /// [`Topology::produced`], sorted.
    pub produced_artifacts: Vec<String>,
}

/// A group in [`DependencyGraph`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GroupNode {
    /// `generic` or `per-arch`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `artifact_group_deps`.
    pub depends_on: Vec<String>,
    /// The group's artifacts in declaration order.
    pub artifacts: Vec<String>,
}

/// An artifact in [`DependencyGraph`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ArtifactNode {
    /// `target-neutral` or `target-specific`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The owning group.
    pub artifact_group: String,
    /// `artifact_deps`.
    pub depends_on: Vec<String>,
    /// The informational `platform` field.
    pub platform: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real() -> Topology {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../BUILD_TOPOLOGY.toml");
        Topology::load(&path).expect("the real topology parses")
    }

    fn set(names: &str) -> BTreeSet<&str> {
        names.split_whitespace().collect()
    }

    const SYSDEPS9: &str = "sysdeps-expat sysdeps-gmp sysdeps-hwloc sysdeps-libmnl sysdeps-libnl \
                            sysdeps-libpciaccess sysdeps-mpfr sysdeps-ncurses sysdeps-util-linux";

    #[test]
    fn endless_or_huge_topology_files_are_refused_fast() {
        let started = std::time::Instant::now();
        let err = Topology::load(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/dev/zero"), "{err}");
        assert!(err.contains("larger than 4194304 bytes"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn real_topology_validates_and_has_facts_counts() {
        let t = real();
        assert_eq!(t.validate(), vec![]);
        assert_eq!(t.metadata.version, "2.0");
        assert_eq!(t.source_sets().len(), 12);
        assert_eq!(t.stages().len(), 11);
        assert_eq!(t.groups().len(), 22);
        assert_eq!(t.artifacts().len(), 73);
        let specific = t
            .artifacts()
            .iter()
            .filter(|a| a.is_target_specific())
            .count();
        assert_eq!(specific, 15);
        let per_arch: Vec<_> = t
            .stages()
            .iter()
            .filter(|s| s.kind == StageType::PerArch)
            .map(|s| &s.name)
            .collect();
        assert_eq!(per_arch, ["math-libs"]);
        let per_arch_groups: Vec<_> = t
            .groups()
            .iter()
            .filter(|g| g.kind == StageType::PerArch)
            .map(|g| &g.name)
            .collect();
        assert_eq!(per_arch_groups, ["math-libs", "ml-libs"]);
    }

    #[test]
    fn real_topology_counts_per_stage_match_facts() {
        let t = real();
        // (stage, produced, inbound) from FACTS §1.
        let table = [
            ("compiler-runtime", 36, 0),
            ("wsl-rocdxg", 1, 6),
            ("runtime-tests", 2, 14),
            ("math-libs", 20, 19),
            ("comm-libs", 2, 17),
            ("cv-libs", 1, 16),
            ("storage-libs", 1, 8),
            ("debug-tools", 4, 16),
            ("dctools-core", 1, 14),
            ("profiler-apps", 2, 16),
            ("media-libs", 3, 16),
        ];
        for (stage, produced, inbound) in table {
            assert_eq!(
                t.produced(stage).unwrap().len(),
                produced,
                "produced({stage})"
            );
            assert_eq!(t.inbound(stage).unwrap().len(), inbound, "inbound({stage})");
        }
        let stages: Vec<_> = t.stages().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(stages, table.map(|r| r.0));
    }

    #[test]
    fn real_topology_inbound_sets_match_facts() {
        let t = real();
        let core = "amd-llvm base core-hip core-hipinfo core-kpack core-runtime sysdeps";
        let cases = [
            ("wsl-rocdxg", "amd-llvm base core-hip core-kpack core-runtime sysdeps".to_string()),
            (
                "runtime-tests",
                "amd-llvm base core-amdsmi core-hip core-hipinfo core-kpack core-ocl core-ocl-icd core-runtime \
                 sysdeps sysdeps-hwloc sysdeps-libmnl sysdeps-libnl sysdeps-libpciaccess"
                    .to_string(),
            ),
            (
                "math-libs",
                "amd-llvm aqlprofile base core-amdsmi core-hip core-hipinfo core-kpack core-runtime elfio fftw3 \
                 host-blas host-suite-sparse openmpi rocprofiler-compute rocprofiler-sdk spdlog sysdeps \
                 sysdeps-libmnl sysdeps-libnl"
                    .to_string(),
            ),
            (
                "comm-libs",
                "amd-llvm aqlprofile base core-amdsmi core-hip core-hipinfo core-kpack core-runtime elfio hipify \
                 openmpi rocjitsu rocjitsu-hotswap rocprofiler-sdk sysdeps sysdeps-libmnl sysdeps-libnl"
                    .to_string(),
            ),
            ("cv-libs", format!("{core} {SYSDEPS9}")),
            ("media-libs", format!("{core} {SYSDEPS9}")),
            ("storage-libs", format!("{core} sysdeps-util-linux")),
            ("debug-tools", format!("amd-llvm base core-hip core-kpack core-runtime hipify sysdeps {SYSDEPS9}")),
            (
                "dctools-core",
                "amd-llvm aqlprofile base core-amdsmi core-hip core-kpack core-runtime elfio openmpi \
                 rocprofiler-compute rocprofiler-sdk sysdeps sysdeps-libmnl sysdeps-libnl"
                    .to_string(),
            ),
            (
                "profiler-apps",
                "amd-llvm aqlprofile base core-amdsmi core-hip core-kpack core-runtime elfio hipify openmpi \
                 rocprofiler-compute rocprofiler-sdk spdlog sysdeps sysdeps-libmnl sysdeps-libnl"
                    .to_string(),
            ),
        ];
        for (stage, expected) in &cases {
            assert_eq!(t.inbound(stage).unwrap(), set(expected), "inbound({stage})");
        }
    }

    #[test]
    fn real_topology_queries() {
        let t = real();
        // At HEAD the build order is the declaration order (FACTS §2).
        let decl: Vec<_> = t.stages().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(t.build_order(), decl);
        assert_eq!(
            t.producing_stage("amd-llvm").unwrap(),
            Some("compiler-runtime")
        );
        assert_eq!(
            t.producing_stage("sysdeps-amd-mesa").unwrap(),
            Some("media-libs")
        );
        assert_eq!(t.producing_stage("miopen").unwrap(), Some("math-libs"));
        assert!(
            matches!(t.producing_stage("nope"), Err(TopologyError::UnknownArtifact(n)) if n == "nope")
        );
        assert!(matches!(t.inbound("nope"), Err(TopologyError::UnknownStage(n)) if n == "nope"));
        let a = t.artifact("amd-llvm").unwrap();
        assert_eq!(
            (a.feature_name(), a.feature_group()),
            ("COMPILER".into(), "ALL".into())
        );
        let a = t.artifact("sysdeps-gmp").unwrap();
        assert_eq!(a.feature_name(), "SYSDEPS_GMP");
        assert_eq!(
            t.artifact("core-runtime")
                .unwrap()
                .disable_platforms_if_flags_not_set["windows"],
            "HSA_WINDOWS_SHARED_RUNTIME"
        );
        assert_eq!(
            t.artifact("core-runtime").unwrap().test_artifacts,
            ["core-hiptests", "rocrtst"]
        );
        assert_eq!(
            t.artifact("core-hipinfo").unwrap().platform.as_deref(),
            Some("windows")
        );
        assert_eq!(
            t.artifact_closure("sysdeps-mpfr").unwrap(),
            set("sysdeps-gmp")
        );
        let hrx = &t.source_set("optional-hrx").unwrap().external_git_sources[0];
        assert_eq!(hrx.path.as_deref(), Some("optional-sources/hrx"));
        let graph = t.dependency_graph();
        assert_eq!(graph.build_stages["math-libs"].inbound_artifacts.len(), 19);
        assert_eq!(
            graph.artifact_groups["compiler"].artifacts,
            ["amd-llvm", "hipify"]
        );
        let dot = t.to_dot();
        assert!(dot.starts_with("digraph topology {"));
        assert!(dot.contains("\"hipify\" -> \"amd-llvm\";"));
        assert!(dot.contains("\"blas\" [style=bold];"));
    }

    const BASE: &str = r#"
[source_sets.src]
submodules = ["one"]

[build_stages.first]
artifact_groups = ["g1"]

[build_stages.second]
artifact_groups = ["g2"]

[artifact_groups.g1]
source_sets = ["src"]

[artifact_groups.g2]
artifact_group_deps = ["g1"]

[artifacts.a]
artifact_group = "g1"

[artifacts.b]
artifact_group = "g2"
artifact_deps = ["a"]
"#;

    fn problems(extra: &str) -> Vec<String> {
        let t = Topology::parse(&format!("{BASE}\n{extra}")).expect("parses");
        t.validate().iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn base_fixture_is_valid() {
        assert_eq!(problems(""), Vec::<String>::new());
        let t = Topology::parse(BASE).unwrap();
        assert_eq!(t.build_order(), ["first", "second"]);
        assert_eq!(t.inbound("second").unwrap(), set("a"));
    }

    #[test]
    fn broken_topologies_report_specific_problems() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[artifacts.c]\nartifact_group = \"g2\"\nartifact_deps = [\"d\"]\n[artifacts.d]\nartifact_group = \"g2\"\nartifact_deps = [\"e\"]\n[artifacts.e]\nartifact_group = \"g2\"\nartifact_deps = [\"c\"]\n",
                &["artifact `c` is in a dependency cycle: `c` -> `d` -> `e` -> `c`"],
            ),
            (
                "[artifacts.self]\nartifact_group = \"g1\"\nartifact_deps = [\"self\"]\n",
                &["artifact `self` is in a dependency cycle: `self` -> `self`"],
            ),
            (
                "[artifact_groups.g3]\nartifact_group_deps = [\"g4\"]\n[artifact_groups.g4]\nartifact_group_deps = [\"g3\"]\n",
                &["artifact group `g3` is in a dependency cycle: `g3` -> `g4` -> `g3`"],
            ),
            (
                "[artifacts.c]\nartifact_group = \"nogroup\"\nartifact_deps = [\"ghost\"]\n",
                &[
                    "artifact `c` refers to unknown artifact group `nogroup`",
                    "artifact `c` refers to unknown artifact `ghost`",
                ],
            ),
            (
                "[build_stages.third]\nartifact_groups = [\"g9\"]\n[artifact_groups.g5]\nartifact_group_deps = [\"g8\"]\nsource_sets = [\"nosrc\"]\n",
                &[
                    "stage `third` refers to unknown artifact group `g9`",
                    "artifact group `g5` refers to unknown artifact group `g8`",
                    "artifact group `g5` refers to unknown source set `nosrc`",
                ],
            ),
            (
                "[artifacts.Bad_Name]\nartifact_group = \"g1\"\n[build_stages.-x]\n",
                &[
                    "stage `-x`: name must be lowercase words joined by `-`",
                    "artifact `Bad_Name`: name must be lowercase words joined by `-`",
                ],
            ),
            (
                "[artifacts.c]\nartifact_group = \"g1\"\ntype = \"per-family\"\nfeature_name = \"lower\"\nplatform = \"macos\"\ndisable_processors = [\"riscv\"]\ndisable_platforms_if_flags_not_set = { beos = \"flag\" }\n",
                &[
                    "artifact `c`: invalid type `per-family`",
                    "artifact `c`: invalid feature_name `lower`",
                    "artifact `c`: invalid platform `macos`",
                    "artifact `c`: invalid disable_platforms_if_flags_not_set `beos`",
                    "artifact `c`: invalid disable_platforms_if_flags_not_set `flag`",
                    "artifact `c`: invalid disable_processors `riscv`",
                ],
            ),
            (
                "[source_sets.other]\nsubmodules = [\"one\"]\n",
                &["submodule `one` is owned by source sets `src` and `other`"],
            ),
            (
                "[source_sets.ext]\nexternal_git_sources = [ { name = \"x\", origin = \"o\", commit = \"c\", path = \"/abs\" }, { name = \"y\", origin = \"o\", path = \"optional-sources/../y\" }, { name = \"z\", origin = \"o\", commit = \"c\", path = \"elsewhere/z\" } ]\n[source_sets.ext2]\nexternal_git_sources = [ { name = \"w\", origin = \"o\", commit = \"c\", path = \"optional-sources/w\" }, { name = \"w2\", origin = \"o\", commit = \"c\", path = \"optional-sources/w\" } ]\n",
                &[
                    "source set `ext`: external source `x`: path `/abs` must be relative",
                    "source set `ext`: external source `y`: missing `commit`",
                    "source set `ext`: external source `y`: path `optional-sources/../y` must not contain `..`",
                    "source set `ext`: external source `z`: path `elsewhere/z` must be under `optional-sources/`",
                    "external source path `optional-sources/w` is owned by source sets `ext2` and `ext2`",
                ],
            ),
            (
                "[source_sets.p1]\npath_prefixes = [\"lib/\", \"/abs\", \"\"]\n[source_sets.p2]\npath_prefixes = [\"lib\", \"a/../b\"]\n",
                &[
                    "source set `p1`: path prefix `/abs` is absolute",
                    "source set `p1`: path prefix `` is empty",
                    "path prefix `lib` is owned by source sets `p1` and `p2`",
                    "source set `p2`: path prefix `a/../b` contains `..`",
                ],
            ),
            (
                "[build_stages.again]\nartifact_groups = [\"g1\"]\n",
                &["artifact group `g1` is listed by several stages: `first`, `again`"],
            ),
        ];
        for (extra, expected) in cases {
            let got = problems(extra);
            let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            assert_eq!(got, expected, "for fixture:\n{extra}");
        }
    }

    #[test]
    fn queries_terminate_on_cycles() {
        let t = Topology::parse(&format!(
            "{BASE}\n[artifacts.c]\nartifact_group = \"g2\"\nartifact_deps = [\"d\", \"ghost\"]\n[artifacts.d]\nartifact_group = \"g1\"\nartifact_deps = [\"c\"]\n"
        ))
        .unwrap();
        assert_eq!(t.inbound("second").unwrap(), set("a d ghost"));
        assert_eq!(t.artifact_closure("c").unwrap(), set("d ghost"));
    }

    #[test]
    fn parse_errors_are_typed_and_name_the_file() {
        let err = Topology::parse("[artifacts.a]\ntype = \"target-neutral\"\n").unwrap_err();
        assert!(
            matches!(&err, TopologyError::Parse { message, .. } if message.contains("artifact_group")),
            "{err}"
        );
        let err =
            Topology::parse("[artifacts.a]\nartifact_group = \"g\"\npython_requires = \"pkg\"\n")
                .unwrap_err();
        assert!(matches!(err, TopologyError::Parse { .. }));
        let err = Topology::load(Path::new("/nonexistent/BUILD_TOPOLOGY.toml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read topology `/nonexistent/BUILD_TOPOLOGY.toml`: "),
            "{err}"
        );
    }

    #[test]
    fn naming_rules() {
        for ok in ["a", "amd-llvm", "gfx94x-1", "a1-b2-c3"] {
            assert!(is_kebab(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a--b", "A", "a_b", "a.b"] {
            assert!(!is_kebab(bad), "{bad}");
        }
        for ok in ["CORE", "HOST_MATH", "A1_B2"] {
            assert!(is_upper_snake(ok), "{ok}");
        }
        for bad in ["", "_A", "A_", "A__B", "a", "A-B"] {
            assert!(!is_upper_snake(bad), "{bad}");
        }
    }
}
