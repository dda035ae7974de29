//! Simulated TheRock CI runs for end-to-end tests and the demo: a small TheRock-shaped topology
//! ([`TOPOLOGY`]: three stages, nine artifacts, real submodules), and build directories holding what
//! a stage's job would leave in `build/artifacts/` at a given checkout.
//!
//! Artifact contents are a pure function of the artifact's fingerprint (the seed), so a rebuilt
//! artifact differs from its previous build exactly when its fingerprint changed, as in real CI.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use cairn_fingerprint::{Blake3, FingerprintConfig, Fingerprinter, Platform, Topology};

use crate::datagen::{ArtifactSpec, generate_artifact_dir};

/// A reduced TheRock topology: `compiler-runtime` (generic) builds sysdeps, base, the compiler and
/// the HIP runtime; `math-libs` (per-arch) builds target-specific blas and rand on top of them;
/// `ml-libs` (per-arch) builds miopen on top of blas. `math-libs`' inbound set is the whole
/// `compiler-runtime` output, `ml-libs` needs target-specific archives too.
pub const TOPOLOGY: &str = r#"
[source_sets.base]
submodules = ["rocm-cmake"]
[source_sets.compilers]
submodules = ["llvm-project", "hipify"]
[source_sets.rocm-systems]
submodules = ["rocm-systems"]
[source_sets.rocm-libraries]
submodules = ["rocm-libraries"]

[build_stages.compiler-runtime]
description = "Compiler and runtimes"
artifact_groups = ["third-party-sysdeps", "base", "compiler", "core-runtime", "hip-runtime"]
[build_stages.math-libs]
description = "Math libraries, per GPU family"
type = "per-arch"
artifact_groups = ["math-libs"]
[build_stages.ml-libs]
description = "ML libraries, per GPU family"
type = "per-arch"
artifact_groups = ["ml-libs"]

[artifact_groups.third-party-sysdeps]
[artifact_groups.base]
source_sets = ["base"]
[artifact_groups.compiler]
artifact_group_deps = ["base"]
source_sets = ["compilers"]
[artifact_groups.core-runtime]
artifact_group_deps = ["base"]
source_sets = ["rocm-systems"]
[artifact_groups.hip-runtime]
artifact_group_deps = ["core-runtime", "compiler"]
source_sets = ["rocm-systems"]
[artifact_groups.math-libs]
type = "per-arch"
artifact_group_deps = ["hip-runtime"]
source_sets = ["rocm-libraries"]
[artifact_groups.ml-libs]
type = "per-arch"
artifact_group_deps = ["math-libs"]
source_sets = ["rocm-libraries"]

[artifacts.sysdeps]
artifact_group = "third-party-sysdeps"
[artifacts.base]
artifact_group = "base"
artifact_deps = ["sysdeps"]
[artifacts.amd-llvm]
artifact_group = "compiler"
artifact_deps = ["sysdeps"]
[artifacts.hipify]
artifact_group = "compiler"
artifact_deps = ["amd-llvm"]
[artifacts.core-runtime]
artifact_group = "core-runtime"
artifact_deps = ["base", "sysdeps"]
[artifacts.core-hip]
artifact_group = "hip-runtime"
artifact_deps = ["core-runtime", "amd-llvm"]
[artifacts.blas]
artifact_group = "math-libs"
type = "target-specific"
artifact_deps = ["core-hip"]
[artifacts.rand]
artifact_group = "math-libs"
type = "target-specific"
artifact_deps = ["core-hip"]
[artifacts.miopen]
artifact_group = "ml-libs"
type = "target-specific"
artifact_deps = ["blas"]
"#;

/// Components every generated artifact has (`dbg` lets tests exercise `--exclude-components`).
pub const COMPONENTS: [&str; 3] = ["lib", "dev", "dbg"];

/// Fingerprints of `stage`'s produced artifacts at `checkout` for `family`.
pub fn produced_fingerprints(
    checkout: &Path,
    stage: &str,
    family: &str,
) -> Result<BTreeMap<String, Blake3>> {
    let topology = Topology::parse(TOPOLOGY).context("parsing the test topology")?;
    produced_fingerprints_in(&topology, checkout, stage, family)
}

/// [`produced_fingerprints`] under another topology (e.g. TheRock's real one).
pub fn produced_fingerprints_in(
    topology: &Topology,
    checkout: &Path,
    stage: &str,
    family: &str,
) -> Result<BTreeMap<String, Blake3>> {
    let names: Vec<&str> = topology.produced(stage)?.into_iter().collect();
    let fp = Fingerprinter::new(topology, checkout, FingerprintConfig::default())?;
    Ok(fp.compute_some(&names, family, Platform::Linux)?)
}

/// The archive families of `artifact` in a job for `family`: `generic` for target-neutral
/// artifacts, the job's family for target-specific ones.
pub fn archive_family(topology: &Topology, artifact: &str, family: &str) -> Result<String> {
    Ok(if topology.artifact(artifact)?.is_target_specific() {
        family.to_string()
    } else {
        "generic".to_string()
    })
}

/// Write what a stage's job for `family` leaves in `build_dir/artifacts/` when it builds the
/// artifacts of `fingerprints` (the stage's produced artifacts) (all of them, or only those in `only`): per artifact, one directory
/// per component of about `bytes` bytes, its content seeded by the fingerprint. Returns the
/// directory names written.
pub fn write_build_dir(
    build_dir: &Path,
    family: &str,
    fingerprints: &BTreeMap<String, Blake3>,
    only: Option<&BTreeSet<String>>,
    bytes: u64,
) -> Result<Vec<String>> {
    let topology = Topology::parse(TOPOLOGY)?;
    write_build_dir_in(&topology, build_dir, family, fingerprints, only, bytes)
}

/// [`write_build_dir`] under another topology (e.g. TheRock's real one).
pub fn write_build_dir_in(
    topology: &Topology,
    build_dir: &Path,
    family: &str,
    fingerprints: &BTreeMap<String, Blake3>,
    only: Option<&BTreeSet<String>>,
    bytes: u64,
) -> Result<Vec<String>> {
    let artifacts = build_dir.join("artifacts");
    std::fs::create_dir_all(&artifacts)?;
    let mut written = Vec::new();
    for (name, fp) in fingerprints {
        if only.is_some_and(|o| !o.contains(name)) {
            continue;
        }
        let artifact = topology.artifact(name)?;
        let seed = u64::from_le_bytes(fp.0[..8].try_into().expect("8 bytes"));
        for (i, component) in COMPONENTS.iter().enumerate() {
            let spec = ArtifactSpec {
                name: name.clone(),
                component: component.to_string(),
                family: archive_family(topology, name, family)?,
                group: artifact.artifact_group.clone(),
                // dbg archives are small, as in TheRock's split debug info of tiny test builds.
                bytes: if *component == "dbg" {
                    bytes / 4
                } else {
                    bytes
                },
                seed: seed.wrapping_add(i as u64),
                shape: Default::default(),
            };
            generate_artifact_dir(&artifacts, &spec)
                .with_context(|| format!("generating `{}`", spec.dir_name()))?;
            written.push(spec.dir_name());
        }
    }
    Ok(written)
}

/// The artifacts whose fingerprints differ between two maps (or are new).
pub fn changed(
    before: &BTreeMap<String, Blake3>,
    after: &BTreeMap<String, Blake3>,
) -> BTreeSet<String> {
    after
        .iter()
        .filter(|(n, fp)| before.get(*n) != Some(fp))
        .map(|(n, _)| n.clone())
        .collect()
}
