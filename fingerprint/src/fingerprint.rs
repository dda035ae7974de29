//! Source fingerprints (`cairn-fp-v1`): a BLAKE3 name for *what an artifact was built from*, so an
//! artifact of any run with the same fingerprint can be reused (DESIGN §3).
//!
//! An artifact's fingerprint hashes its **own inputs** and the fingerprints of its direct
//! `artifact_deps` (a Merkle DAG, so a change reaches every dependent and nothing else):
//! - `scheme`: `cairn-fp-v1`;
//! - `topology-entry`: the artifact's own `[artifacts.*]` entry, and `group`: its group's name,
//!   type and source sets;
//! - `platform`, and for target-specific artifacts `family`, `targets` and `variant`;
//! - `global-input`: configured key/value build inputs ([`FingerprintConfig::global_inputs`]);
//! - `superproject-path`: a digest of the `HEAD` blobs under each configured superproject path
//!   (global, per group, and each used submodule's patch directories), gitlinks excluded so a
//!   submodule only counts for the groups that use it;
//! - `submodule` / `nested-submodule`: the commit checked out in each submodule of the group's
//!   source sets (enabled on the platform); `external-source`: origin and pinned commit;
//! - `dirty`: each changed file under any of those paths, by content (a local edit never matches a
//!   CI build of pristine source);
//! - `dep`: each direct dependency's fingerprint.
//!
//! Each input is `(kind, name, value)` with a short string value; the fingerprint is BLAKE3 over
//! the scheme tag and the length-prefixed fields of every input in order. [`Explanation`] lists the
//! same inputs, so `cairn fingerprint explain` shows exactly what was hashed. No input holds an
//! absolute path, a user, a host or a time: two clones at different paths agree.
//!
//! Target-neutral artifacts are fingerprinted in the *neutral* context: no family input, and any
//! target-specific dependency is taken in its neutral form too (its own inputs without family,
//! targets and variant). So `miopenprovider` (neutral, depending on target-specific `miopen`) has one
//! fingerprint for every family yet still changes when `miopen`'s sources do — which matches
//! TheRock, where every family job uploads the same `_generic` archive name.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Blake3;
use crate::git::{GitError, GitSnapshot, is_under};
use crate::layout::Platform;
use crate::names::{GENERIC, NameError, family_targets};
use crate::topology::{Artifact, Topology};

/// The encoding version, hashed first into every fingerprint.
pub const SCHEME: &str = "cairn-fp-v1";

/// Why fingerprints could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    /// The checkout could not be read.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The topology has validation problems (cycles or unknown references would make fingerprints
    /// meaningless).
    #[error("topology is invalid ({count} problem(s)), first: {first}")]
    InvalidTopology {
        /// How many problems `validate()` found.
        count: usize,
        /// The first one.
        first: String,
    },
    /// An artifact name that is not in the topology.
    #[error("unknown artifact `{0}`")]
    UnknownArtifact(String),
    /// A family that is neither `generic`, a known family nor a single target.
    #[error(transparent)]
    Family(#[from] NameError),
}

/// What besides the checkout goes into fingerprints. [`FingerprintConfig::default`] is TheRock's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FingerprintConfig {
    /// Superproject paths (files or directories) hashed into every artifact.
    pub global_paths: Vec<String>,
    /// Superproject paths per artifact group. A group missing here uses a directory named like
    /// the group (absent directories hash as `absent`).
    pub group_paths: BTreeMap<String, Vec<String>>,
    /// Roots of patch trees laid out as `{root}/{anything}/{submodule name}/` (TheRock's
    /// `patches/amd-mainline/<name>/*.patch`); each is hashed into the users of that submodule.
    pub patch_roots: Vec<String>,
    /// Extra build inputs (compiler image, global flags), hashed into every artifact.
    pub global_inputs: BTreeMap<String, String>,
    /// Build variant hashed into target-specific artifacts (`release`, `asan`, `tsan`, ...).
    pub variant: String,
}

impl Default for FingerprintConfig {
    /// TheRock's layout: top-level CMake and build tooling for everything, one source directory per
    /// group (`compiler/`, `core/`, `math-libs/`, ...), patches under `patches/`.
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let groups: &[(&str, &[&str])] = &[
            ("third-party-sysdeps", &["third-party/sysdeps"]),
            // Conservative: third-party libraries live beside sysdeps under `third-party/`.
            ("third-party-libs", &["third-party"]),
            ("base", &["base"]),
            ("compiler", &["compiler"]),
            ("core-runtime", &["core"]),
            ("core-amdsmi", &["core"]),
            ("hip-runtime", &["core"]),
            ("opencl-runtime", &["core"]),
            ("kfdtest", &["core"]),
            ("runtime-tests", &["core"]),
            ("wsl-rocdxg", &["core"]),
            ("rocjitsu", &["core"]),
            ("profiler-core", &["profiler"]),
            ("profiler-apps", &["profiler"]),
            ("debug-tools", &["debug-tools"]),
            ("dctools-core", &["dctools"]),
            ("comm-libs", &["comm-libs"]),
            ("math-libs", &["math-libs"]),
            ("ml-libs", &["ml-libs"]),
            (
                "media-libs",
                &["media-libs", "third-party/sysdeps/linux/amd-mesa"],
            ),
        ];
        FingerprintConfig {
            global_paths: s(&[
                "CMakeLists.txt",
                "cmake",
                "version.json",
                "build_tools/fileset_tool.py",
                "build_tools/_therock_utils",
            ]),
            group_paths: groups.iter().map(|(g, p)| (g.to_string(), s(p))).collect(),
            patch_roots: s(&["patches"]),
            global_inputs: BTreeMap::new(),
            variant: "release".to_string(),
        }
    }
}

/// One input of a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// What kind of input (`scheme`, `topology-entry`, `submodule`, `dirty`, `dep`, ...).
    pub kind: String,
    /// Which one (artifact, path, submodule name, key).
    pub name: String,
    /// Its value: a commit, a digest, or a literal.
    pub value: String,
}

/// Every input of one artifact's fingerprint, in hashing order (`cairn fingerprint explain`).
///
/// JSON: `{"artifact", "family", "platform", "scheme", "fingerprint", "inputs": [{"kind", "name",
/// "value"}]}`; `family` is `generic` for target-neutral artifacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// The artifact.
    pub artifact: String,
    /// The family the fingerprint is for (`generic` in the neutral context).
    pub family: String,
    /// The platform.
    pub platform: Platform,
    /// [`SCHEME`].
    pub scheme: String,
    /// The fingerprint.
    pub fingerprint: Blake3,
    /// The inputs, in hashing order.
    pub inputs: Vec<Input>,
}

/// Hash inputs the `cairn-fp-v1` way: the scheme tag, then each field length-prefixed (u64 LE) so
/// no two input lists share an encoding.
fn digest_inputs(inputs: &[Input]) -> Blake3 {
    let mut h = blake3::Hasher::new();
    h.update(SCHEME.as_bytes());
    h.update(&[0]);
    for input in inputs {
        for field in [&input.kind, &input.name, &input.value] {
            h.update(&(field.len() as u64).to_le_bytes());
            h.update(field.as_bytes());
        }
    }
    h.finalize().into()
}

/// The family context an artifact is fingerprinted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Context<'f> {
    /// No family: target-neutral artifacts, and target-specific ones as seen by neutral dependents.
    Neutral,
    /// One GPU family (target-specific artifacts only).
    Family(&'f str),
}

/// Computes fingerprints for one checkout: reads git once in [`Fingerprinter::new`], then answers
/// any number of [`compute`](Fingerprinter::compute) and [`explain`](Fingerprinter::explain) calls
/// without further I/O.
#[derive(Debug)]
pub struct Fingerprinter<'t> {
    topology: &'t Topology,
    snapshot: GitSnapshot,
    config: FingerprintConfig,
    /// Digest of the `HEAD` blobs under a superproject path, memoized per path.
    path_digests: RefCell<HashMap<String, String>>,
}

impl<'t> Fingerprinter<'t> {
    /// Read `checkout` (the superproject, submodules checked out) for `topology`, which must
    /// validate.
    pub fn new(
        topology: &'t Topology,
        checkout: &Path,
        config: FingerprintConfig,
    ) -> Result<Self, FingerprintError> {
        let problems = topology.validate();
        if let Some(first) = problems.first() {
            return Err(FingerprintError::InvalidTopology {
                count: problems.len(),
                first: first.to_string(),
            });
        }
        let snapshot = GitSnapshot::read(checkout)?;
        Self::from_snapshot(topology, snapshot, config)
    }

    /// Fingerprints of a snapshot read (or derived) elsewhere: a commit not checked out
    /// ([`GitSnapshot::at_commit`]), or a tree with a submodule moved
    /// ([`GitSnapshot::with_gitlink`]). `topology` must validate.
    pub fn from_snapshot(
        topology: &'t Topology,
        snapshot: GitSnapshot,
        config: FingerprintConfig,
    ) -> Result<Self, FingerprintError> {
        let problems = topology.validate();
        if let Some(first) = problems.first() {
            return Err(FingerprintError::InvalidTopology {
                count: problems.len(),
                first: first.to_string(),
            });
        }
        Ok(Fingerprinter {
            topology,
            snapshot,
            config,
            path_digests: RefCell::new(HashMap::new()),
        })
    }

    /// What was read from the checkout.
    pub fn snapshot(&self) -> &GitSnapshot {
        &self.snapshot
    }

    /// Fingerprints of every artifact for `family` on `platform` (target-neutral ones are the
    /// same for every family). `family` is a GPU family or target, or `generic` for the neutral
    /// form of everything.
    pub fn compute(
        &self,
        family: &str,
        platform: Platform,
    ) -> Result<BTreeMap<String, Blake3>, FingerprintError> {
        let names: Vec<&str> = self
            .topology
            .artifacts()
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        self.compute_some(&names, family, platform)
    }

    /// Fingerprints of the named artifacts only.
    pub fn compute_some(
        &self,
        artifacts: &[&str],
        family: &str,
        platform: Platform,
    ) -> Result<BTreeMap<String, Blake3>, FingerprintError> {
        check_family(family)?;
        let mut memo = HashMap::new();
        let mut out = BTreeMap::new();
        for name in artifacts {
            let artifact = self.artifact(name)?;
            let ctx = context_for(artifact, family);
            out.insert(
                artifact.name.clone(),
                self.fingerprint(artifact, ctx, platform, &mut memo)?,
            );
        }
        Ok(out)
    }

    /// Every input of one artifact's fingerprint.
    pub fn explain(
        &self,
        artifact: &str,
        family: &str,
        platform: Platform,
    ) -> Result<Explanation, FingerprintError> {
        check_family(family)?;
        let a = self.artifact(artifact)?;
        let ctx = context_for(a, family);
        let mut memo = HashMap::new();
        let inputs = self.inputs(a, ctx, platform, &mut memo)?;
        Ok(Explanation {
            artifact: a.name.clone(),
            family: match ctx {
                Context::Neutral => GENERIC.to_string(),
                Context::Family(f) => f.to_string(),
            },
            platform,
            scheme: SCHEME.to_string(),
            fingerprint: digest_inputs(&inputs),
            inputs,
        })
    }

    fn artifact(&self, name: &str) -> Result<&'t Artifact, FingerprintError> {
        self.topology
            .artifact(name)
            .map_err(|_| FingerprintError::UnknownArtifact(name.to_string()))
    }

    fn fingerprint<'f>(
        &self,
        artifact: &'t Artifact,
        ctx: Context<'f>,
        platform: Platform,
        memo: &mut HashMap<(&'t str, Context<'f>), Blake3>,
    ) -> Result<Blake3, FingerprintError> {
        if let Some(fp) = memo.get(&(artifact.name.as_str(), ctx)) {
            return Ok(*fp);
        }
        let fp = digest_inputs(&self.inputs(artifact, ctx, platform, memo)?);
        memo.insert((artifact.name.as_str(), ctx), fp);
        Ok(fp)
    }

    /// The inputs of `artifact` in context `ctx`, in hashing order. Recursion over `artifact_deps`
    /// terminates because the topology validated (no cycles).
    fn inputs<'f>(
        &self,
        artifact: &'t Artifact,
        ctx: Context<'f>,
        platform: Platform,
        memo: &mut HashMap<(&'t str, Context<'f>), Blake3>,
    ) -> Result<Vec<Input>, FingerprintError> {
        let input = |kind: &str, name: &str, value: String| Input {
            kind: kind.into(),
            name: name.into(),
            value,
        };
        let mut inputs = vec![input("scheme", SCHEME, SCHEME.to_string())];
        let entry = serde_json::to_vec(artifact).unwrap_or_default();
        inputs.push(input(
            "topology-entry",
            &artifact.name,
            Blake3::of(&entry).to_hex(),
        ));
        let group = self
            .topology
            .group(&artifact.artifact_group)
            .map_err(|_| FingerprintError::UnknownArtifact(artifact.name.clone()))?;
        inputs.push(input(
            "group",
            &group.name,
            format!(
                "type={};source_sets={}",
                group.kind,
                group.source_sets.join(",")
            ),
        ));
        inputs.push(input("platform", "platform", platform.to_string()));
        if let Context::Family(family) = ctx {
            inputs.push(input("family", "family", family.to_string()));
            inputs.push(input(
                "targets",
                "targets",
                family_targets(family)?.join(","),
            ));
            inputs.push(input("variant", "variant", self.config.variant.clone()));
        }
        for (key, value) in &self.config.global_inputs {
            inputs.push(input("global-input", key, value.clone()));
        }

        // Superproject paths: global, the group's, and the patch directories of used submodules.
        let mut paths: Vec<String> = self.config.global_paths.clone();
        match self.config.group_paths.get(&group.name) {
            Some(p) => paths.extend(p.iter().cloned()),
            None => paths.push(group.name.clone()),
        }
        let source_sets = self
            .topology
            .source_sets_for_group(&group.name, Some(platform.as_str()))
            .unwrap_or_default();
        let mut submodule_names: Vec<&str> = source_sets
            .iter()
            .flat_map(|s| s.submodules.iter().map(String::as_str))
            .collect();
        submodule_names.sort_unstable();
        submodule_names.dedup();
        for name in &submodule_names {
            paths.extend(self.patch_dirs(name));
        }
        paths.sort();
        paths.dedup();
        for path in &paths {
            inputs.push(input("superproject-path", path, self.path_digest(path)));
        }

        // Submodules and external sources.
        let mut source_roots: Vec<&str> = Vec::new();
        for name in &submodule_names {
            match self.snapshot.submodules.get(*name) {
                Some(sub) => {
                    inputs.push(input(
                        "submodule",
                        name,
                        sub.commit.clone().unwrap_or_else(|| "absent".into()),
                    ));
                    for (path, commit) in &sub.nested {
                        inputs.push(input("nested-submodule", path, commit.clone()));
                    }
                    source_roots.push(&sub.path);
                }
                None => inputs.push(input("submodule", name, "absent".into())),
            }
        }
        let mut externals: Vec<(String, String)> = source_sets
            .iter()
            .flat_map(|s| &s.external_git_sources)
            .map(|e| {
                let name = e.name.clone().unwrap_or_default();
                let value = format!(
                    "{}@{}",
                    e.origin.as_deref().unwrap_or(""),
                    e.commit.as_deref().unwrap_or("")
                );
                (name, value)
            })
            .collect();
        externals.sort();
        externals.dedup();
        for (name, value) in externals {
            inputs.push(input("external-source", &name, value));
        }

        // Dirty files under any input path: superproject paths (not inside a submodule) and the
        // used submodules' trees.
        for (path, content) in &self.snapshot.dirty {
            let in_submodule = self.snapshot.submodule_of(path);
            let counts = match in_submodule {
                Some(sub) => source_roots.contains(&sub.path.as_str()),
                None => paths.iter().any(|p| is_under(path, p)),
            };
            if counts {
                inputs.push(input("dirty", path, content.to_string()));
            }
        }

        // Dependencies: a target-specific dep keeps the family only if this artifact has one.
        let mut deps: Vec<&str> = artifact.artifact_deps.iter().map(String::as_str).collect();
        deps.sort_unstable();
        deps.dedup();
        for dep in deps {
            let dep_artifact = self.artifact(dep)?;
            let dep_ctx = if dep_artifact.is_target_specific() {
                ctx
            } else {
                Context::Neutral
            };
            let fp = self.fingerprint(dep_artifact, dep_ctx, platform, memo)?;
            inputs.push(input("dep", dep, fp.to_hex()));
        }
        Ok(inputs)
    }

    /// `{root}/*/{submodule}` directories present in `HEAD`.
    fn patch_dirs(&self, submodule: &str) -> Vec<String> {
        let mut out = Vec::new();
        for root in &self.config.patch_roots {
            let prefix = format!("{}/", root.trim_end_matches('/'));
            for path in self
                .snapshot
                .tree
                .range(prefix.clone()..)
                .map(|(p, _)| p)
                .take_while(|p| p.starts_with(&prefix))
            {
                let mut parts = path[prefix.len()..].split('/');
                if let (Some(series), Some(name), Some(_file)) =
                    (parts.next(), parts.next(), parts.next())
                    && name == submodule
                {
                    out.push(format!("{prefix}{series}/{name}"));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// BLAKE3 over `path\0mode\0oid\n` of every `HEAD` blob at or under `path` (gitlinks excluded),
    /// or `absent`.
    fn path_digest(&self, path: &str) -> String {
        if let Some(d) = self.path_digests.borrow().get(path) {
            return d.clone();
        }
        let path = path.trim_end_matches('/');
        let mut h = blake3::Hasher::new();
        let mut any = false;
        for (p, item) in self.snapshot.tree.range(path.to_string()..) {
            if !p.starts_with(path) {
                break;
            }
            if !is_under(p, path) || item.is_gitlink() {
                continue;
            }
            any = true;
            for field in [p.as_str(), item.mode.as_str(), item.oid.as_str()] {
                h.update(&(field.len() as u64).to_le_bytes());
                h.update(field.as_bytes());
            }
        }
        let digest = if any {
            Blake3::from(h.finalize()).to_hex()
        } else {
            "absent".to_string()
        };
        self.path_digests
            .borrow_mut()
            .insert(path.to_string(), digest.clone());
        digest
    }
}

fn check_family(family: &str) -> Result<(), FingerprintError> {
    if family != GENERIC {
        family_targets(family)?;
    }
    Ok(())
}

fn context_for<'f>(artifact: &Artifact, family: &'f str) -> Context<'f> {
    if artifact.is_target_specific() && family != GENERIC {
        Context::Family(family)
    } else {
        Context::Neutral
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use cairn_test_helpers::gitrepo::{git, write_file as write};

    use super::*;

    const TOPOLOGY: &str = r#"
[source_sets.s-a]
submodules = ["alpha"]
[source_sets.s-b]
submodules = ["beta"]
[source_sets.s-c]
submodules = ["gamma"]
external_git_sources = [ { name = "ext", origin = "https://example.invalid/ext.git", commit = "0123", path = "optional-sources/ext" } ]

[build_stages.first]
artifact_groups = ["g-base", "g-mid", "g-other"]
[build_stages.math]
type = "per-arch"
artifact_groups = ["g-math"]

[artifact_groups.g-base]
source_sets = ["s-a"]
[artifact_groups.g-mid]
artifact_group_deps = ["g-base"]
source_sets = ["s-b"]
[artifact_groups.g-other]
[artifact_groups.g-math]
type = "per-arch"
artifact_group_deps = ["g-mid"]
source_sets = ["s-c"]

[artifacts.a1]
artifact_group = "g-base"
[artifacts.b1]
artifact_group = "g-mid"
artifact_deps = ["a1"]
[artifacts.b2]
artifact_group = "g-mid"
[artifacts.d1]
artifact_group = "g-other"
[artifacts.c1]
artifact_group = "g-math"
type = "target-specific"
artifact_deps = ["b1"]
[artifacts.c2]
artifact_group = "g-math"
artifact_deps = ["c1"]
"#;

    /// A superproject with three submodules (alpha, beta, gamma; the first nested one level deep
    /// at `deps/alpha` to check name → path mapping), a global file and a per-group directory.
    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        upstream: PathBuf,
        topology: Topology,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let upstream = dir.path().join("upstream");
            for sub in ["alpha", "beta", "gamma"] {
                let up = upstream.join(sub);
                write(&up.join("src.txt"), &format!("{sub} v1\n"));
                git(&up, &["init", "-q"]);
                git(&up, &["add", "-A"]);
                git(&up, &["commit", "-q", "-m", "v1"]);
            }
            let root = dir.path().join("work/TheRock");
            write(&root.join("BUILD_TOPOLOGY.toml"), TOPOLOGY);
            write(&root.join("CMakeLists.txt"), "project(x)\n");
            write(&root.join("mid/CMakeLists.txt"), "# g-mid\n");
            write(&root.join("g-base/CMakeLists.txt"), "# g-base\n");
            write(
                &root.join("patches/amd-mainline/gamma/0001-fix.patch"),
                "--- a\n+++ b\n",
            );
            git(&root, &["init", "-q"]);
            for (name, path) in [
                ("alpha", "deps/alpha"),
                ("beta", "beta"),
                ("gamma", "gamma"),
            ] {
                let url = upstream.join(name);
                git(
                    &root,
                    &[
                        "submodule",
                        "add",
                        "-q",
                        "--name",
                        name,
                        url.to_str().unwrap(),
                        path,
                    ],
                );
            }
            git(&root, &["add", "-A"]);
            git(&root, &["commit", "-q", "-m", "superproject"]);
            Fixture {
                _dir: dir,
                root,
                upstream,
                topology: Topology::parse(TOPOLOGY).unwrap(),
            }
        }

        fn config() -> FingerprintConfig {
            FingerprintConfig {
                global_paths: vec!["CMakeLists.txt".into()],
                group_paths: [("g-mid".to_string(), vec!["mid".to_string()])].into(),
                ..FingerprintConfig::default()
            }
        }

        fn compute_at(&self, root: &Path, family: &str) -> BTreeMap<String, Blake3> {
            Fingerprinter::new(&self.topology, root, Self::config())
                .unwrap()
                .compute(family, Platform::Linux)
                .unwrap()
        }

        fn compute(&self, family: &str) -> BTreeMap<String, Blake3> {
            self.compute_at(&self.root, family)
        }

        /// Commit a change upstream and move the superproject's submodule to it.
        fn bump(&self, name: &str, path: &str) {
            let up = self.upstream.join(name);
            write(&up.join("src.txt"), &format!("{name} v2\n"));
            git(&up, &["commit", "-q", "-am", "v2"]);
            git(&self.root.join(path), &["pull", "-q", "origin", "main"]);
            git(&self.root, &["commit", "-q", "-am", "bump"]);
        }
    }

    fn changed(
        before: &BTreeMap<String, Blake3>,
        after: &BTreeMap<String, Blake3>,
    ) -> BTreeSet<String> {
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            after.keys().collect::<Vec<_>>()
        );
        before
            .iter()
            .filter(|(k, v)| after[*k] != **v)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn set(names: &str) -> BTreeSet<String> {
        names.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn clones_at_different_paths_agree() {
        let f = Fixture::new();
        let original = f.compute("gfx94X-dcgpu");
        assert_eq!(original.len(), 6);
        for dest in ["elsewhere/one", "a/much/deeper/path/two"] {
            let dest = f._dir.path().join(dest);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            git(
                dest.parent().unwrap(),
                &[
                    "clone",
                    "-q",
                    "--recurse-submodules",
                    f.root.to_str().unwrap(),
                    dest.to_str().unwrap(),
                ],
            );
            assert_eq!(
                f.compute_at(&dest, "gfx94X-dcgpu"),
                original,
                "clone at {}",
                dest.display()
            );
        }
        // A partial checkout (TheRock CI clones only the submodules a stage needs) agrees too: an
        // uninitialized submodule counts as the commit `HEAD` records for it.
        let partial = f._dir.path().join("partial/TheRock");
        std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
        git(
            partial.parent().unwrap(),
            &[
                "clone",
                "-q",
                f.root.to_str().unwrap(),
                partial.to_str().unwrap(),
            ],
        );
        git(&partial, &["submodule", "update", "-q", "--init", "beta"]);
        assert!(!partial.join("gamma/src.txt").exists());
        assert_eq!(
            f.compute_at(&partial, "gfx94X-dcgpu"),
            original,
            "partial clone"
        );
        // Deterministic across runs, and the format is 64 lowercase hex.
        assert_eq!(f.compute("gfx94X-dcgpu"), original);
        assert!(original.values().all(|fp| fp.to_hex().len() == 64));
    }

    #[test]
    fn moving_a_submodule_changes_its_users_and_their_dependents_only() {
        let f = Fixture::new();
        let before_a = f.compute("gfx94X-dcgpu");
        let before_b = f.compute("gfx1151");
        f.bump("beta", "beta");
        // g-mid uses beta: b1, b2; c1 depends on b1, c2 on c1.
        assert_eq!(
            changed(&before_a, &f.compute("gfx94X-dcgpu")),
            set("b1 b2 c1 c2")
        );
        assert_eq!(
            changed(&before_b, &f.compute("gfx1151")),
            set("b1 b2 c1 c2")
        );

        let before = f.compute("gfx94X-dcgpu");
        f.bump("alpha", "deps/alpha");
        assert_eq!(
            changed(&before, &f.compute("gfx94X-dcgpu")),
            set("a1 b1 c1 c2")
        );

        let before = f.compute("gfx94X-dcgpu");
        f.bump("gamma", "gamma");
        assert_eq!(changed(&before, &f.compute("gfx94X-dcgpu")), set("c1 c2"));

        // Checking out another commit in a submodule without committing the superproject counts
        // too: fingerprints follow what is checked out, i.e. what would be built.
        let before = f.compute("gfx94X-dcgpu");
        git(&f.root.join("beta"), &["checkout", "-q", "HEAD~1"]);
        assert_eq!(
            changed(&before, &f.compute("gfx94X-dcgpu")),
            set("b1 b2 c1 c2")
        );
    }

    #[test]
    fn commits_and_moved_gitlinks_fingerprint_without_a_checkout() {
        let f = Fixture::new();
        let fp_of = |snapshot: GitSnapshot| {
            Fingerprinter::from_snapshot(&f.topology, snapshot, Fixture::config())
                .unwrap()
                .compute("gfx94X-dcgpu", Platform::Linux)
                .unwrap()
        };
        let first = f.compute("gfx94X-dcgpu");
        let old_beta = git(&f.root.join("beta"), &["rev-parse", "HEAD"]);
        f.bump("beta", "beta");
        let second = f.compute("gfx94X-dcgpu");
        let head = git(&f.root, &["rev-parse", "HEAD"]);
        let status = git(&f.root, &["status", "--porcelain"]);

        // An older commit's tree, read without checking it out, is what that commit checked out.
        assert_eq!(
            fp_of(GitSnapshot::at_commit(&f.root, "HEAD~1").unwrap()),
            first
        );
        assert_eq!(
            fp_of(GitSnapshot::at_commit(&f.root, "HEAD").unwrap()),
            second
        );
        // HEAD with beta's gitlink put back (by path or by name) is the first commit again.
        let at_head = GitSnapshot::at_commit(&f.root, "HEAD").unwrap();
        assert_eq!(
            fp_of(at_head.with_gitlink("beta", &old_beta).unwrap()),
            first
        );
        let moved_alpha = at_head.with_gitlink("alpha", "0123abcd").unwrap();
        assert_eq!(
            moved_alpha.submodules["alpha"].commit.as_deref(),
            Some("0123abcd")
        );
        assert_eq!(moved_alpha.tree["deps/alpha"].oid, "0123abcd");
        assert!(matches!(
            at_head.with_gitlink("mid", "0123abcd"),
            Err(GitError::NotASubmodule { .. })
        ));
        assert!(matches!(
            GitSnapshot::at_commit(&f.root, "no-such-rev"),
            Err(GitError::UnknownRevision { .. })
        ));
        // Nothing was checked out.
        assert_eq!(git(&f.root, &["rev-parse", "HEAD"]), head);
        assert_eq!(git(&f.root, &["status", "--porcelain"]), status);
    }

    #[test]
    fn dirty_edits_are_hashed_by_content() {
        let f = Fixture::new();
        let clean = f.compute("gfx94X-dcgpu");

        // An unstaged edit inside a submodule.
        let file = f.root.join("deps/alpha/src.txt");
        std::fs::write(&file, "alpha local edit\n").unwrap();
        let edited = f.compute("gfx94X-dcgpu");
        assert_eq!(changed(&clean, &edited), set("a1 b1 c1 c2"));
        // A different edit is a different fingerprint; reverting restores the clean one.
        std::fs::write(&file, "alpha another edit\n").unwrap();
        assert_eq!(
            changed(&edited, &f.compute("gfx94X-dcgpu")),
            set("a1 b1 c1 c2")
        );
        std::fs::write(&file, "alpha v1\n").unwrap();
        assert_eq!(f.compute("gfx94X-dcgpu"), clean);

        // An untracked file in a group's superproject directory.
        write(&f.root.join("mid/new.cmake"), "# new\n");
        assert_eq!(
            changed(&clean, &f.compute("gfx94X-dcgpu")),
            set("b1 b2 c1 c2")
        );
        std::fs::remove_file(f.root.join("mid/new.cmake")).unwrap();

        // A staged edit of a global path changes everything.
        std::fs::write(f.root.join("CMakeLists.txt"), "project(y)\n").unwrap();
        git(&f.root, &["add", "CMakeLists.txt"]);
        assert_eq!(
            changed(&clean, &f.compute("gfx94X-dcgpu")),
            set("a1 b1 b2 c1 c2 d1")
        );
        git(&f.root, &["reset", "-q", "--hard"]);
        assert_eq!(f.compute("gfx94X-dcgpu"), clean);

        // A file outside every input path changes nothing.
        write(&f.root.join("docs/notes.md"), "notes\n");
        assert_eq!(f.compute("gfx94X-dcgpu"), clean);
    }

    #[test]
    fn committed_superproject_changes_reach_the_right_groups() {
        let f = Fixture::new();
        let clean = f.compute("gfx94X-dcgpu");
        write(
            &f.root.join("patches/amd-mainline/gamma/0002-more.patch"),
            "+more\n",
        );
        git(&f.root, &["add", "-A"]);
        git(&f.root, &["commit", "-q", "-m", "patch gamma"]);
        let patched = f.compute("gfx94X-dcgpu");
        assert_eq!(changed(&clean, &patched), set("c1 c2"));
        write(&f.root.join("g-base/extra.cmake"), "# base\n");
        git(&f.root, &["add", "-A"]);
        git(&f.root, &["commit", "-q", "-m", "base"]);
        assert_eq!(
            changed(&patched, &f.compute("gfx94X-dcgpu")),
            set("a1 b1 c1 c2")
        );
    }

    #[test]
    fn target_neutral_equal_across_families_target_specific_not() {
        let f = Fixture::new();
        let a = f.compute("gfx94X-dcgpu");
        let b = f.compute("gfx1151");
        let generic = f.compute("generic");
        assert_eq!(changed(&a, &b), set("c1"));
        assert_eq!(changed(&a, &generic), set("c1"));
        assert_eq!(changed(&b, &generic), set("c1"));
        // A family bundle and a single target are different families.
        assert_eq!(changed(&a, &f.compute("gfx942")), set("c1"));
        // The variant is hashed into target-specific artifacts only.
        let fp = Fingerprinter::new(
            &f.topology,
            &f.root,
            FingerprintConfig {
                variant: "asan".into(),
                ..Fixture::config()
            },
        )
        .unwrap();
        assert_eq!(
            changed(&a, &fp.compute("gfx94X-dcgpu", Platform::Linux).unwrap()),
            set("c1")
        );
        // The platform is hashed into everything.
        let fp = Fingerprinter::new(&f.topology, &f.root, Fixture::config()).unwrap();
        assert_eq!(
            changed(&a, &fp.compute("gfx94X-dcgpu", Platform::Windows).unwrap()),
            set("a1 b1 b2 c1 c2 d1")
        );
    }

    #[test]
    fn explain_lists_every_input() {
        let f = Fixture::new();
        let fp = Fingerprinter::new(&f.topology, &f.root, Fixture::config()).unwrap();
        let all = fp.compute("gfx94X-dcgpu", Platform::Linux).unwrap();
        let e = fp.explain("c1", "gfx94X-dcgpu", Platform::Linux).unwrap();
        assert_eq!(e.fingerprint, all["c1"]);
        assert_eq!(e.family, "gfx94X-dcgpu");
        let find = |kind: &str, name: &str| {
            e.inputs
                .iter()
                .find(|i| i.kind == kind && i.name == name)
                .map(|i| i.value.clone())
        };
        assert_eq!(find("scheme", SCHEME).as_deref(), Some(SCHEME));
        assert_eq!(find("family", "family").as_deref(), Some("gfx94X-dcgpu"));
        assert_eq!(find("targets", "targets").as_deref(), Some("gfx942"));
        assert_eq!(find("variant", "variant").as_deref(), Some("release"));
        assert_eq!(find("platform", "platform").as_deref(), Some("linux"));
        assert_eq!(
            find("submodule", "gamma"),
            Some(git(&f.root.join("gamma"), &["rev-parse", "HEAD"]))
        );
        assert_eq!(find("dep", "b1"), Some(all["b1"].to_hex()));
        assert_eq!(
            find("external-source", "ext").as_deref(),
            Some("https://example.invalid/ext.git@0123")
        );
        assert!(
            find("superproject-path", "patches/amd-mainline/gamma").is_some_and(|v| v != "absent")
        );
        assert_eq!(
            find("superproject-path", "g-math").as_deref(),
            Some("absent")
        );
        assert!(find("superproject-path", "CMakeLists.txt").is_some());
        // A target-neutral artifact is explained in the neutral context, whatever the family.
        let e = fp.explain("c2", "gfx1151", Platform::Linux).unwrap();
        assert_eq!((e.family.as_str(), e.fingerprint), ("generic", all["c2"]));
        assert!(e.inputs.iter().all(|i| i.kind != "family"));
        // Dirty files show up by path.
        std::fs::write(f.root.join("gamma/src.txt"), "edited\n").unwrap();
        let fp = Fingerprinter::new(&f.topology, &f.root, Fixture::config()).unwrap();
        let e = fp.explain("c1", "gfx94X-dcgpu", Platform::Linux).unwrap();
        let dirty: Vec<_> = e
            .inputs
            .iter()
            .filter(|i| i.kind == "dirty")
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(dirty, ["gamma/src.txt"]);
        assert!(
            e.inputs
                .iter()
                .all(|i| !i.value.contains(f.root.to_str().unwrap()))
        );
    }

    #[test]
    fn errors_name_the_offending_input() {
        let f = Fixture::new();
        let topology = &f.topology;
        let plain = f._dir.path().join("plain");
        std::fs::create_dir_all(&plain).unwrap();
        let err = Fingerprinter::new(topology, &plain, Fixture::config()).unwrap_err();
        assert!(
            matches!(&err, FingerprintError::Git(GitError::NotARepository(p)) if *p == plain),
            "{err}"
        );
        let missing = f._dir.path().join("missing");
        let err = Fingerprinter::new(topology, &missing, Fixture::config()).unwrap_err();
        assert!(
            matches!(&err, FingerprintError::Git(GitError::NotADirectory(_))),
            "{err}"
        );
        let err = Fingerprinter::new(topology, &f.root.join("mid"), Fixture::config()).unwrap_err();
        assert!(
            matches!(&err, FingerprintError::Git(GitError::NotTopLevel { .. })),
            "{err}"
        );
        let empty = f._dir.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        git(&empty, &["init", "-q"]);
        let err = Fingerprinter::new(topology, &empty, Fixture::config()).unwrap_err();
        assert!(
            matches!(&err, FingerprintError::Git(GitError::NoCommit(_))),
            "{err}"
        );

        let fp = Fingerprinter::new(topology, &f.root, Fixture::config()).unwrap();
        let err = fp.compute("gfx9000-bogus", Platform::Linux).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown GPU family `gfx9000-bogus` (expected e.g. `gfx94X-dcgpu`, `gfx1151` or `gfx942:xnack+`)"
        );
        let err = fp.explain("nope", "gfx1151", Platform::Linux).unwrap_err();
        assert_eq!(err.to_string(), "unknown artifact `nope`");

        let broken = Topology::parse("[artifacts.a]\nartifact_group = \"nowhere\"\n").unwrap();
        let err = Fingerprinter::new(&broken, &f.root, Fixture::config()).unwrap_err();
        assert!(matches!(
            err,
            FingerprintError::InvalidTopology { count: 1, .. }
        ));
    }

    #[test]
    fn therock_topology_fingerprints_from_a_therock_shaped_checkout() {
        // The real topology over a checkout with one submodule per name it lists (path = name).
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../BUILD_TOPOLOGY.toml"),
        )
        .unwrap();
        let topology = Topology::parse(&text).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("TheRock");
        std::fs::create_dir_all(&root).unwrap();
        git(&root, &["init", "-q"]);
        let mut names: Vec<&str> = topology
            .source_sets()
            .iter()
            .flat_map(|s| s.submodules.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        for name in &names {
            let up = dir.path().join("up").join(name);
            write(&up.join("README"), name);
            git(&up, &["init", "-q"]);
            git(&up, &["add", "-A"]);
            git(&up, &["commit", "-q", "-m", "init"]);
            git(
                &root,
                &["submodule", "add", "-q", up.to_str().unwrap(), name],
            );
        }
        write(&root.join("BUILD_TOPOLOGY.toml"), &text);
        git(&root, &["add", "-A"]);
        git(&root, &["commit", "-q", "-m", "init"]);
        let fp = Fingerprinter::new(&topology, &root, FingerprintConfig::default()).unwrap();
        let a = fp.compute("gfx94X-dcgpu", Platform::Linux).unwrap();
        let b = fp.compute("gfx1151", Platform::Linux).unwrap();
        assert_eq!(a.len(), 73);
        let differing: BTreeSet<&str> = a
            .keys()
            .filter(|k| a[*k] != b[*k])
            .map(String::as_str)
            .collect();
        let specific: BTreeSet<&str> = topology
            .artifacts()
            .iter()
            .filter(|a| a.is_target_specific())
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(differing, specific);
        assert_eq!(fp.snapshot().submodules.len(), names.len());
    }
}

#[cfg(test)]
mod encoding_tests {
    use super::*;

    fn input(kind: &str, name: &str, value: &str) -> Input {
        Input {
            kind: kind.into(),
            name: name.into(),
            value: value.into(),
        }
    }

    /// The `cairn-fp-v1` encoding is frozen: changing it must come with a new scheme tag, because
    /// fingerprints are stored in buckets and compared across Cairn versions.
    #[test]
    fn encoding_is_frozen_and_unambiguous() {
        let inputs = [
            input("scheme", SCHEME, SCHEME),
            input("submodule", "alpha", "0123"),
        ];
        assert_eq!(
            digest_inputs(&inputs).to_hex(),
            "3a464d07242c09a0c6fe6658e9b71076ca4467cdb5b07bdc2c8ee9278970ddc6"
        );
        // Moving a byte between fields changes the digest (length prefixes).
        let a = [input("ab", "c", "")];
        let b = [input("a", "bc", "")];
        assert_ne!(digest_inputs(&a), digest_inputs(&b));
    }
}
