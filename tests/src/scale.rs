//! Scale presets: a whole TheRock-shaped CI run over the real topology's artifacts and components,
//! sized to about 200 MB (`small`), 2 GB (`medium`) or 8 GB (`large`) of file content.
//!
//! Every Linux artifact of the topology is archived per component (`lib`, `dev`, `run`, `test`,
//! `dbg`, `doc`). Target-neutral artifacts get family `generic`; target-specific ones are split the
//! way TheRock's KPACK split leaves them: host parts (`dev`, `doc` and a host `lib`) as `_generic`,
//! device parts (`lib`, `run`, `test`, `dbg`) once per family. Sizes follow a weight table that makes
//! `amd-llvm` and the math libraries dominate, as they do in real runs (FACTS §10).
//!
//! A spec's seed depends only on the run seed and its archive stem, so an archive has the same bytes
//! whatever the topology's order, the scale's other artifacts or the family list.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use cairn_fingerprint::Topology;

use crate::datagen::{ArtifactSpec, Shape};

/// A preset total size for a generated run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scale {
    /// About 200 MB of file content: CI smoke runs.
    Small,
    /// About 2 GB.
    Medium,
    /// About 8 GB.
    Large,
    /// About 2.3 GB in the other data shape ([`Shape::BigFiles`]: few files, large binaries, ≈1.6×
    /// with zstd-3), like `amd-llvm` and `blas`: its bench stage is ~1 GB in ~9k files.
    Bigfile,
}

impl Scale {
    /// Total bytes of file content across the run.
    pub fn total_bytes(self) -> u64 {
        match self {
            Scale::Small => 200_000_000,
            Scale::Medium => 2_000_000_000,
            Scale::Large => 8_000_000_000,
            Scale::Bigfile => 2_300_000_000,
        }
    }

    /// The data shape of the preset.
    pub fn shape(self) -> Shape {
        match self {
            Scale::Bigfile => Shape::BigFiles,
            Scale::Small | Scale::Medium | Scale::Large => Shape::ManyFiles,
        }
    }
}

/// A scale name that is none of `small`, `medium`, `large`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownScale(pub String);

impl fmt::Display for UnknownScale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown scale `{}` (expected `small`, `medium`, `large` or `bigfile`)",
            self.0
        )
    }
}

impl std::error::Error for UnknownScale {}

impl FromStr for Scale {
    type Err = UnknownScale;

    fn from_str(s: &str) -> Result<Scale, UnknownScale> {
        match s {
            "small" => Ok(Scale::Small),
            "medium" => Ok(Scale::Medium),
            "large" => Ok(Scale::Large),
            "bigfile" => Ok(Scale::Bigfile),
            _ => Err(UnknownScale(s.to_string())),
        }
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scale::Small => "small",
            Scale::Medium => "medium",
            Scale::Large => "large",
            Scale::Bigfile => "bigfile",
        })
    }
}

/// Share of an artifact's bytes per component (sums to 100).
const COMPONENT_SHARES: &[(&str, u64)] = &[
    ("lib", 42),
    ("dev", 30),
    ("run", 10),
    ("test", 10),
    ("dbg", 6),
    ("doc", 2),
];

/// Components of a target-specific artifact that are host code, archived once as `_generic`.
const HOST_COMPONENTS: &[&str] = &["lib", "dev", "doc"];
/// Components of a target-specific artifact that are device code, archived once per family.
const DEVICE_COMPONENTS: &[&str] = &["lib", "run", "test", "dbg"];

/// Relative size of an artifact in a real run; unlisted artifacts weigh 1.
fn weight(name: &str) -> u64 {
    match name {
        "amd-llvm" => 120,
        "miopen" | "blas" => 36,
        "composable-kernel" => 20,
        "rccl" | "fft" | "sparse" | "solver" | "prim" | "rand" => 8,
        "core-runtime" | "core-hip" | "hipdnn" | "rocprofiler-sdk" => 6,
        "hiptensor" | "rocwmma" | "rocalution" | "host-blas" | "sysdeps" => 3,
        _ => 1,
    }
}

/// Whether TheRock builds the artifact `name` on Linux (not `platform = "windows"`, not disabled
/// there).
pub fn on_linux(topology: &Topology, name: &str) -> bool {
    topology.artifact(name).is_ok_and(|a| {
        a.platform.as_deref() != Some("windows")
            && !a.disable_platforms.iter().any(|p| p == "linux")
    })
}

/// Every archive of one run: all Linux artifacts of `topology`, every component, target-specific
/// artifacts for each of `families`, about `total_bytes` of content in all.
pub fn run_specs(
    topology: &Topology,
    total_bytes: u64,
    families: &[&str],
    seed: u64,
) -> Vec<ArtifactSpec> {
    // (name, component, family, group, weight in share units)
    let mut parts: Vec<(String, &str, String, String, u64)> = Vec::new();
    for a in topology.artifacts() {
        if !on_linux(topology, &a.name) {
            continue;
        }
        let w = weight(&a.name);
        for (component, share) in COMPONENT_SHARES {
            if !a.is_target_specific() {
                parts.push((
                    a.name.clone(),
                    component,
                    "generic".into(),
                    a.artifact_group.clone(),
                    w * share,
                ));
                continue;
            }
            if HOST_COMPONENTS.contains(component) {
                // The host half of a split `lib` is the smaller one.
                let host = if *component == "lib" {
                    w * share / 4
                } else {
                    w * share
                };
                parts.push((
                    a.name.clone(),
                    component,
                    "generic".into(),
                    a.artifact_group.clone(),
                    host,
                ));
            }
            if DEVICE_COMPONENTS.contains(component) {
                let device = if *component == "lib" {
                    w * share * 3 / 4
                } else {
                    w * share
                };
                for family in families {
                    parts.push((
                        a.name.clone(),
                        component,
                        family.to_string(),
                        a.artifact_group.clone(),
                        device,
                    ));
                }
            }
        }
    }
    let total: u64 = parts.iter().map(|p| p.4).sum::<u64>().max(1);
    parts
        .into_iter()
        .map(|(name, component, family, group, w)| {
            let stem = format!("{name}_{component}_{family}");
            ArtifactSpec {
                seed: spec_seed(seed, &stem),
                bytes: (total_bytes as u128 * w as u128 / total as u128) as u64,
                name,
                component: component.to_string(),
                family,
                group,
                shape: Shape::default(),
            }
        })
        .collect()
}

/// A seed that depends only on the run seed and the archive stem.
fn spec_seed(seed: u64, stem: &str) -> u64 {
    let h = blake3::hash(stem.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The specs a bootstrap of `stage` for `family` fetches: every component of its inbound artifacts,
/// `generic` or `family`.
pub fn stage_inbound<'a>(
    topology: &Topology,
    specs: &'a [ArtifactSpec],
    stage: &str,
    family: &str,
) -> Result<Vec<&'a ArtifactSpec>, cairn_fingerprint::TopologyError> {
    let inbound: BTreeSet<&str> = topology.inbound(stage)?;
    Ok(specs
        .iter()
        .filter(|s| inbound.contains(s.name.as_str()))
        .filter(|s| s.family == "generic" || s.family == family)
        .collect())
}

/// The `_generic` specs `stage` produces: what every per-family job of a per-arch stage uploads
/// again (FACTS §10: 69 names repeated across family jobs, all `_generic`).
pub fn stage_generic_outputs<'a>(
    topology: &Topology,
    specs: &'a [ArtifactSpec],
    stage: &str,
) -> Result<Vec<&'a ArtifactSpec>, cairn_fingerprint::TopologyError> {
    let produced: BTreeSet<&str> = topology.produced(stage)?;
    Ok(specs
        .iter()
        .filter(|s| produced.contains(s.name.as_str()) && s.family == "generic")
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../BUILD_TOPOLOGY.toml");
        Topology::load(&path).expect("the repository's topology loads")
    }

    #[test]
    fn sizes_add_up_and_llvm_dominates() {
        let t = topology();
        let specs = run_specs(&t, Scale::Small.total_bytes(), &["gfx94X-dcgpu"], 1);
        let sum: u64 = specs.iter().map(|s| s.bytes).sum();
        let want = Scale::Small.total_bytes();
        assert!(sum <= want && sum > want * 99 / 100, "sum {sum} vs {want}");
        let llvm: u64 = specs
            .iter()
            .filter(|s| s.name == "amd-llvm")
            .map(|s| s.bytes)
            .sum();
        let biggest_other = specs
            .iter()
            .filter(|s| s.name != "amd-llvm")
            .map(|s| s.bytes)
            .max()
            .unwrap_or(0);
        assert!(llvm > want / 5, "amd-llvm holds {llvm}");
        assert!(
            specs
                .iter()
                .filter(|s| s.name == "amd-llvm")
                .all(|s| s.family == "generic")
        );
        assert!(biggest_other < llvm);
    }

    #[test]
    fn every_linux_artifact_appears_and_windows_only_ones_do_not() {
        let t = topology();
        let specs = run_specs(&t, 1 << 30, &["gfx94X-dcgpu", "gfx110X-all"], 1);
        let names: BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert!(
            !names.contains("core-hipinfo"),
            "core-hipinfo is windows-only"
        );
        assert!(names.contains("amd-llvm") && names.contains("blas"));
        let stems: BTreeSet<String> = specs.iter().map(|s| s.dir_name()).collect();
        assert_eq!(stems.len(), specs.len(), "archive stems are unique");
        assert!(stems.contains("blas_lib_gfx110X-all") && stems.contains("blas_lib_generic"));
        assert!(!stems.contains("blas_test_generic"));
    }

    #[test]
    fn a_spec_does_not_depend_on_the_family_list() {
        let t = topology();
        let one = run_specs(&t, 1 << 30, &["gfx94X-dcgpu"], 7);
        let two = run_specs(&t, 1 << 30, &["gfx94X-dcgpu", "gfx110X-all"], 7);
        let find = |v: &[ArtifactSpec], stem: &str| {
            v.iter().find(|s| s.dir_name() == stem).map(|s| s.seed)
        };
        assert_eq!(
            find(&one, "amd-llvm_lib_generic"),
            find(&two, "amd-llvm_lib_generic")
        );
        assert!(find(&one, "amd-llvm_lib_generic").is_some());
    }

    #[test]
    fn stage_selections_follow_the_topology() {
        let t = topology();
        let specs = run_specs(&t, 1 << 30, &["gfx94X-dcgpu", "gfx110X-all"], 1);
        let inbound = stage_inbound(&t, &specs, "math-libs", "gfx94X-dcgpu").expect("stage");
        assert!(
            inbound
                .iter()
                .any(|s| s.dir_name() == "amd-llvm_lib_generic")
        );
        assert!(inbound.iter().all(|s| s.family != "gfx110X-all"));
        assert!(
            inbound.iter().all(|s| s.name != "blas"),
            "blas is produced, not inbound"
        );
        let generic = stage_generic_outputs(&t, &specs, "math-libs").expect("stage");
        assert!(generic.iter().any(|s| s.dir_name() == "blas_dev_generic"));
        assert!(generic.iter().all(|s| s.family == "generic"));
        assert!(stage_inbound(&t, &specs, "no-such-stage", "x").is_err());
    }

    #[test]
    fn components_of_one_artifact_never_write_the_same_file() {
        // Bootstrap extracts every component into the same stage dir: overlapping files would make
        // the result depend on extraction order.
        let t = topology();
        let specs = run_specs(&t, 64 << 20, &["gfx94X-dcgpu"], 3);
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut seen = std::collections::BTreeMap::new();
        for spec in specs.iter().filter(|s| s.name == "openmpi") {
            let dir = crate::datagen::generate_artifact_dir(tmp.path(), spec).expect("generate");
            let mut stack = vec![dir.join(spec.relpath())];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).expect("read_dir") {
                    let e = e.expect("entry");
                    if e.file_type().expect("type").is_dir() {
                        stack.push(e.path());
                    } else {
                        let rel = e.path().strip_prefix(&dir).expect("below").to_path_buf();
                        let prev = seen.insert(rel.clone(), spec.component.clone());
                        assert!(
                            prev.is_none(),
                            "{} written by {prev:?} and {}",
                            rel.display(),
                            spec.component
                        );
                    }
                }
            }
        }
        assert!(seen.len() > 6, "{} files", seen.len());
    }

    #[test]
    fn scale_names_parse_and_print() {
        for s in [Scale::Small, Scale::Medium, Scale::Large, Scale::Bigfile] {
            assert_eq!(s.to_string().parse::<Scale>(), Ok(s));
        }
        assert_eq!("huge".parse::<Scale>(), Err(UnknownScale("huge".into())));
    }
}
