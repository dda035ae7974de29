//! Artifact names (`{name}_{component}_{family}`), archive file names (`.tar.zst`, `.tar.xz`),
//! `.sha256sum` sidecars, and GPU families (FACTS §3, §9).
//!
//! TheRock silently skips names it cannot parse; Cairn returns a typed [`NameError`] so the caller
//! decides (a listing skips, a user argument is an error).

use std::fmt;

/// How an archive is compressed: every rule about compressions lives here — the name (`zstd`, `xz`,
/// as `--compression-type` spells it: [`Display`](fmt::Display), [`FromStr`](std::str::FromStr) and,
/// with the `clap` feature, `clap::ValueEnum`), the file extension, TheRock's default level, and which
/// one a reader prefers when a run has both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Compression {
    /// `.tar.zst` (TheRock's default since 2025-12).
    Zstd,
    /// `.tar.xz` (legacy single-stage CI, still accepted).
    Xz,
}

impl Compression {
    /// Every compression, most preferred first: when a run holds an artifact both as `.tar.zst` and
    /// `.tar.xz`, readers take `.tar.zst` (as TheRock's `artifact_manager.py` does).
    pub const PREFERENCE: [Compression; 2] = [Compression::Zstd, Compression::Xz];

    /// The name: `zstd` or `xz`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
        }
    }

    /// The file extension including the leading dot: `.tar.zst` or `.tar.xz`.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Zstd => ".tar.zst",
            Compression::Xz => ".tar.xz",
        }
    }

    /// TheRock's default level: zstd level 3, xz preset 6.
    pub fn default_level(self) -> u32 {
        match self {
            Compression::Zstd => 3,
            Compression::Xz => 6,
        }
    }

    /// Whether a reader takes an archive compressed with `self` over the same artifact compressed
    /// with `other` (earlier in [`Compression::PREFERENCE`]). False for the same compression.
    pub fn preferred_over(self, other: Compression) -> bool {
        let rank = |c: Compression| Compression::PREFERENCE.iter().position(|p| *p == c);
        rank(self) < rank(other)
    }

    /// The compression a file name's extension names, if any.
    pub fn from_file_name(file_name: &str) -> Option<Compression> {
        Compression::PREFERENCE
            .into_iter()
            .find(|c| file_name.ends_with(c.extension()))
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Compression {
    type Err = NameError;

    /// `zstd` or `xz` (as `--compression-type` spells them).
    fn from_str(s: &str) -> Result<Self, NameError> {
        Compression::PREFERENCE
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| NameError::Compression(s.to_string()))
    }
}

/// `--compression zstd|xz` as a clap flag type, spelled exactly as [`Display`](fmt::Display) and
/// [`FromStr`](std::str::FromStr) spell it.
#[cfg(feature = "clap")]
impl clap::ValueEnum for Compression {
    fn value_variants<'a>() -> &'a [Self] {
        &Compression::PREFERENCE
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let help = match self {
            Compression::Zstd => "`.tar.zst`, level 3 (TheRock's default)",
            Compression::Xz => "`.tar.xz`, preset 6 (legacy)",
        };
        Some(clap::builder::PossibleValue::new(self.as_str()).help(help))
    }
}

/// Why a string is not a TheRock name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not `{name}_{component}_{family}` with three non-empty, `_`-free fields.
    #[error(
        "`{0}` is not an artifact name (expected `{{name}}_{{component}}_{{family}}`, no `_` inside a field)"
    )]
    ArtifactName(String),
    /// Not one of `lib run dev dbg doc test`.
    #[error("`{0}` is not an artifact component (expected one of lib, run, dev, dbg, doc, test)")]
    Component(String),
    /// Not `{artifact name}.tar.zst` or `{artifact name}.tar.xz`.
    #[error(
        "`{0}` is not an artifact archive name (expected `{{name}}_{{component}}_{{family}}.tar.zst` or `.tar.xz`)"
    )]
    ArchiveName(String),
    /// Not `zstd` or `xz`.
    #[error("`{0}` is not a compression (expected zstd or xz)")]
    Compression(String),
    /// A `.sha256sum` sidecar that names no SHA-256 digest in any accepted form.
    #[error(
        "sha256sum file does not start with a sha256 digest: `{0}` (expected `HEXDIGEST`, `HEXDIGEST  FILE` or `SHA256 (FILE) = HEXDIGEST`)"
    )]
    Sha256Sum(String),
    /// A GPU family that is neither a known family bundle nor a single `gfx` target.
    #[error(
        "unknown GPU family `{0}` (expected e.g. `gfx94X-dcgpu`, `gfx1151` or `gfx942:xnack+`)"
    )]
    Family(String),
}

/// An artifact component: which part of an artifact's files an archive holds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    /// Shared libraries.
    Lib,
    /// Everything else needed at run time (the catch-all).
    Run,
    /// Headers, static libraries, CMake and pkg-config files.
    Dev,
    /// Split debug info.
    Dbg,
    /// Documentation.
    Doc,
    /// Tests.
    Test,
}

impl Component {
    /// All components in TheRock's `ARTIFACT_COMPONENTS` order.
    pub const ALL: [Component; 6] = [
        Component::Lib,
        Component::Run,
        Component::Dev,
        Component::Dbg,
        Component::Doc,
        Component::Test,
    ];

    /// The component as it appears in names: `lib`, `run`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Lib => "lib",
            Component::Run => "run",
            Component::Dev => "dev",
            Component::Dbg => "dbg",
            Component::Doc => "doc",
            Component::Test => "test",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Component {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Component::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| NameError::Component(s.to_string()))
    }
}

/// `{name}_{component}_{family}`: one component of one artifact for one family, as TheRock names
/// artifact directories (`build/artifacts/{...}/`) and, with an extension, archives.
///
/// No field may contain `_` (TheRock's `^([^_]+)_([^_]+)_([^_]+)$`); the family may contain `:` and
/// `+` (`gfx942:xnack+`). Equality is on the three fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArtifactName {
    /// Topology artifact name, e.g. `amd-llvm`.
    pub name: String,
    /// Component.
    pub component: Component,
    /// `generic` for target-neutral content, else a family bundle or a single target.
    pub family: String,
}

impl ArtifactName {
    /// Build a name, checking the fields as [`ArtifactName::parse`] would.
    pub fn new(name: &str, component: Component, family: &str) -> Result<ArtifactName, NameError> {
        let candidate = format!("{name}_{component}_{family}");
        if !is_field(name) || !is_field(family) {
            return Err(NameError::ArtifactName(candidate));
        }
        Ok(ArtifactName {
            name: name.to_string(),
            component,
            family: family.to_string(),
        })
    }

    /// Parse `{name}_{component}_{family}`.
    pub fn parse(s: &str) -> Result<ArtifactName, NameError> {
        let err = || NameError::ArtifactName(s.to_string());
        let mut fields = s.split('_');
        let (Some(name), Some(component), Some(family), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(err());
        };
        if !is_field(name) || !is_field(family) {
            return Err(err());
        }
        let component = component.parse().map_err(|_| err())?;
        Ok(ArtifactName {
            name: name.to_string(),
            component,
            family: family.to_string(),
        })
    }

    /// Whether this is target-neutral content (`family == "generic"`).
    pub fn is_generic(&self) -> bool {
        self.family == GENERIC
    }

    /// The archive file name with `compression`'s extension.
    pub fn archive(&self, compression: Compression) -> ArchiveName {
        ArchiveName {
            artifact: self.clone(),
            compression,
        }
    }
}

/// A field is non-empty, `_`-free, and free of path separators and whitespace (which TheRock's
/// regex would allow but no real name has and no S3 key should).
fn is_field(s: &str) -> bool {
    !s.is_empty()
        && !s.contains(['_', '/', '\\', '.'])
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl fmt::Display for ArtifactName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}_{}", self.name, self.component, self.family)
    }
}

impl std::str::FromStr for ArtifactName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        ArtifactName::parse(s)
    }
}

impl serde::Serialize for ArtifactName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ArtifactName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An archive file name: `{name}_{component}_{family}.tar.zst` or `.tar.xz`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArchiveName {
    /// The artifact name the file holds.
    pub artifact: ArtifactName,
    /// How it is compressed.
    pub compression: Compression,
}

impl ArchiveName {
    /// Parse a file name (no directory part).
    pub fn parse(file_name: &str) -> Result<ArchiveName, NameError> {
        let err = || NameError::ArchiveName(file_name.to_string());
        let compression = Compression::from_file_name(file_name).ok_or_else(err)?;
        let stem = &file_name[..file_name.len() - compression.extension().len()];
        let artifact = ArtifactName::parse(stem).map_err(|_| err())?;
        Ok(ArchiveName {
            artifact,
            compression,
        })
    }

    /// The `.sha256sum` sidecar's file name: `{archive}.sha256sum`.
    pub fn sha256sum_file_name(&self) -> String {
        format!("{self}{SHA256SUM_SUFFIX}")
    }
}

impl fmt::Display for ArchiveName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.artifact, self.compression.extension())
    }
}

impl std::str::FromStr for ArchiveName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        ArchiveName::parse(s)
    }
}

impl serde::Serialize for ArchiveName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ArchiveName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Suffix of an archive's checksum sidecar.
pub const SHA256SUM_SUFFIX: &str = ".sha256sum";

/// The family of target-neutral content.
pub const GENERIC: &str = "generic";

/// Parse a `.sha256sum` sidecar's text into the digest it names: the one rule for every reader.
///
/// Accepted (hex in either case, normalized to lowercase; surrounding whitespace, so a trailing `\n`
/// or `\r\n`, ignored):
/// - `HEXDIGEST` — what TheRock's `write_hash` and Cairn write;
/// - `HEXDIGEST  FILE` / `HEXDIGEST *FILE` — GNU `sha256sum` in text / binary mode; like
///   `artifact_manager.py`, the first whitespace-separated token is the digest, the rest is ignored;
/// - `\HEXDIGEST  FILE` — GNU `sha256sum`'s escaped line, for a file name holding `\` or a newline;
/// - `SHA256 (FILE) = HEXDIGEST` — BSD style (`sha256sum --tag`, `shasum -a 256 --tag`).
///
/// Only the first line counts (a multi-file listing names the first file's digest, as the first
/// token would). Anything else, an empty file included, is a [`NameError::Sha256Sum`].
pub fn parse_sha256sum(text: &str) -> Result<crate::Sha256, NameError> {
    let err = || NameError::Sha256Sum(text.trim().chars().take(80).collect());
    let line = text.trim_start().lines().next().unwrap_or("").trim_end();
    let token = match line.strip_prefix("SHA256 (") {
        Some(rest) => rest.rsplit_once(") = ").ok_or_else(err)?.1,
        None => {
            let first = line.split_whitespace().next().unwrap_or("");
            first.strip_prefix('\\').unwrap_or(first)
        }
    };
    token.to_ascii_lowercase().parse().map_err(|_| err())
}

/// The base architecture of a family or target: everything before the first `:` (`gfx942:xnack+` →
/// `gfx942`). TheRock compares targets this way, on both sides.
pub fn base_arch(family: &str) -> &str {
    family.split(':').next().unwrap_or(family)
}

/// Whether two families or targets name the same base architecture (case-insensitive, `:suffix`
/// stripped on both sides).
pub fn same_base_arch(a: &str, b: &str) -> bool {
    base_arch(a).eq_ignore_ascii_case(base_arch(b))
}

/// Family bundles and their targets (TheRock's `cmake/therock_amdgpu_targets.cmake`, FACTS §9).
pub const FAMILY_TARGETS: &[(&str, &[&str])] = &[
    ("gfx94X-dcgpu", &["gfx942"]),
    ("gfx950-dcgpu", &["gfx950"]),
    ("gfx110X-all", &["gfx1100", "gfx1101", "gfx1102", "gfx1103"]),
    ("gfx120X-all", &["gfx1200", "gfx1201"]),
    (
        "gfx103X-all",
        &[
            "gfx1030", "gfx1031", "gfx1032", "gfx1033", "gfx1034", "gfx1035", "gfx1036",
        ],
    ),
    ("gfx101X-dgpu", &["gfx1010", "gfx1011", "gfx1012"]),
    ("gfx115X-all", &["gfx1150", "gfx1151", "gfx1152", "gfx1153"]),
    ("gfx125X-dcgpu", &["gfx1250"]),
    (
        "dcgpu-all",
        &["gfx908", "gfx90a", "gfx942", "gfx950", "gfx1250"],
    ),
];

/// Whether `s` is a single GPU target: `gfx` + 3–4 lowercase hex digits, optionally followed by
/// `:feature±` suffixes (`gfx90a`, `gfx1151`, `gfx942:xnack+`).
pub fn is_single_target(s: &str) -> bool {
    let mut parts = s.split(':');
    let arch = parts.next().unwrap_or("");
    let Some(digits) = arch.strip_prefix("gfx") else {
        return false;
    };
    let arch_ok = (3..=4).contains(&digits.len())
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    arch_ok
        && parts.all(|f| {
            let name = f.strip_suffix(['+', '-']).unwrap_or(f);
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// The GPU targets a family stands for: a known bundle expands to its members, a single target to
/// itself. Anything else is an unknown family. `generic` is not a GPU family.
pub fn family_targets(family: &str) -> Result<Vec<String>, NameError> {
    if let Some((_, targets)) = FAMILY_TARGETS.iter().find(|(f, _)| *f == family) {
        return Ok(targets.iter().map(|t| t.to_string()).collect());
    }
    if is_single_target(family) {
        return Ok(vec![family.to_string()]);
    }
    Err(NameError::Family(family.to_string()))
}

/// Whether an archive family belongs to a requested family: `generic` always does; otherwise the
/// base architectures of the archive family and of the requested family or any of its targets must
/// match (as `find_artifacts_for_commit.py` and `artifact_manager.py` filter).
pub fn family_matches(archive_family: &str, requested: &str) -> bool {
    if archive_family == GENERIC || same_base_arch(archive_family, requested) {
        return true;
    }
    family_targets(requested).is_ok_and(|ts| ts.iter().any(|t| same_base_arch(archive_family, t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names_parse_and_format() {
        let ok = [
            (
                "amd-llvm_dev_generic",
                "amd-llvm",
                Component::Dev,
                "generic",
            ),
            (
                "blas_lib_gfx94X-dcgpu",
                "blas",
                Component::Lib,
                "gfx94X-dcgpu",
            ),
            (
                "blas_lib_gfx942:xnack+",
                "blas",
                Component::Lib,
                "gfx942:xnack+",
            ),
            (
                "core-runtime_dbg_generic",
                "core-runtime",
                Component::Dbg,
                "generic",
            ),
            ("rand_test_gfx1151", "rand", Component::Test, "gfx1151"),
            (
                "miopen_doc_gfx110X-all",
                "miopen",
                Component::Doc,
                "gfx110X-all",
            ),
            ("sysdeps_run_generic", "sysdeps", Component::Run, "generic"),
        ];
        for (s, name, component, family) in ok {
            let n = ArtifactName::parse(s).unwrap();
            assert_eq!(
                (n.name.as_str(), n.component, n.family.as_str()),
                (name, component, family),
                "{s}"
            );
            assert_eq!(n.to_string(), s);
            assert_eq!(ArtifactName::new(name, component, family).unwrap(), n);
        }
        let bad = [
            "underscore_name_component_generic",
            "amd-llvm_dev",
            "amd-llvm__generic",
            "_dev_generic",
            "amd-llvm_dev_",
            "amd-llvm_any_generic",
            "amd-llvm_dev_generic_x",
            "",
            "a/b_dev_generic",
        ];
        for s in bad {
            assert_eq!(
                ArtifactName::parse(s),
                Err(NameError::ArtifactName(s.to_string())),
                "{s}"
            );
        }
        assert!(ArtifactName::new("has_underscore", Component::Lib, "generic").is_err());
        assert!(ArtifactName::parse("a_lib_generic").unwrap().is_generic());
    }

    #[test]
    fn archive_names_parse_and_format() {
        let ok = [
            (
                "amd-llvm_dev_generic.tar.zst",
                "amd-llvm_dev_generic",
                Compression::Zstd,
            ),
            (
                "amd-llvm_dev_generic.tar.xz",
                "amd-llvm_dev_generic",
                Compression::Xz,
            ),
            (
                "blas_lib_gfx942:xnack+.tar.zst",
                "blas_lib_gfx942:xnack+",
                Compression::Zstd,
            ),
        ];
        for (file, artifact, compression) in ok {
            let a = ArchiveName::parse(file).unwrap();
            assert_eq!(
                (a.artifact.to_string().as_str(), a.compression),
                (artifact, compression)
            );
            assert_eq!(a.to_string(), file);
            assert_eq!(a.sha256sum_file_name(), format!("{file}.sha256sum"));
        }
        let bad = [
            "underscore_name_component_generic.tar.xz",
            "invalid_name.zip",
            "amd-llvm_dev_generic.tar.gz",
            "amd-llvm_dev_generic.tar.zst.sha256sum",
            "amd-llvm_dev_generic",
            ".tar.zst",
            "index.html",
        ];
        for s in bad {
            assert_eq!(
                ArchiveName::parse(s),
                Err(NameError::ArchiveName(s.to_string())),
                "{s}"
            );
        }
        let n = ArtifactName::parse("base_lib_generic").unwrap();
        assert_eq!(
            n.archive(Compression::Xz).to_string(),
            "base_lib_generic.tar.xz"
        );
        let json = serde_json::to_string(&n.archive(Compression::Zstd)).unwrap();
        assert_eq!(json, "\"base_lib_generic.tar.zst\"");
        assert_eq!(
            serde_json::from_str::<ArchiveName>(&json).unwrap().artifact,
            n
        );
    }

    #[test]
    fn components_round_trip() {
        let all: Vec<String> = Component::ALL.iter().map(|c| c.to_string()).collect();
        assert_eq!(all, ["lib", "run", "dev", "dbg", "doc", "test"]);
        for c in Component::ALL {
            assert_eq!(c.as_str().parse::<Component>().unwrap(), c);
        }
        assert_eq!(
            "any".parse::<Component>(),
            Err(NameError::Component("any".into()))
        );
        assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::Zstd);
        assert!("gz".parse::<Compression>().is_err());
    }

    #[test]
    fn compression_names_extensions_and_levels() {
        let table = [
            (Compression::Zstd, "zstd", ".tar.zst", 3),
            (Compression::Xz, "xz", ".tar.xz", 6),
        ];
        for (c, name, ext, level) in table {
            assert_eq!(c.as_str(), name);
            assert_eq!(c.to_string(), name);
            assert_eq!(name.parse::<Compression>().unwrap(), c);
            assert_eq!(c.extension(), ext);
            assert_eq!(c.default_level(), level);
            assert_eq!(
                Compression::from_file_name(&format!("blas_lib_generic{ext}")),
                Some(c)
            );
        }
        assert_eq!(Compression::PREFERENCE.len(), table.len());
        for bad in ["", "gz", "ZSTD", "zst", " xz", "tar.xz"] {
            assert_eq!(
                bad.parse::<Compression>(),
                Err(NameError::Compression(bad.to_string())),
                "{bad:?}"
            );
        }
        for name in [
            "blas_lib_generic.tar.gz",
            "x.zst",
            "x.xz",
            "x.tar.zst.sha256sum",
        ] {
            assert_eq!(Compression::from_file_name(name), None, "{name}");
        }
    }

    #[test]
    fn zstd_is_preferred_over_xz() {
        assert_eq!(
            Compression::PREFERENCE,
            [Compression::Zstd, Compression::Xz]
        );
        assert!(Compression::Zstd.preferred_over(Compression::Xz));
        assert!(!Compression::Xz.preferred_over(Compression::Zstd));
        for c in Compression::PREFERENCE {
            assert!(!c.preferred_over(c), "{c} is not preferred over itself");
        }
    }

    #[cfg(feature = "clap")]
    #[test]
    fn compression_is_a_clap_value_with_the_same_spelling() {
        use clap::{Parser, ValueEnum};

        #[derive(Parser)]
        struct Args {
            #[arg(long, default_value_t = Compression::Zstd)]
            compression: Compression,
        }
        let names: Vec<String> = Compression::value_variants()
            .iter()
            .map(|c| c.to_possible_value().unwrap().get_name().to_string())
            .collect();
        assert_eq!(names, ["zstd", "xz"]);
        for c in Compression::PREFERENCE {
            let args = Args::try_parse_from(["x", "--compression", c.as_str()]).unwrap();
            assert_eq!(args.compression, c);
        }
        assert_eq!(
            Args::try_parse_from(["x"]).unwrap().compression,
            Compression::Zstd
        );
        let err = Args::try_parse_from(["x", "--compression", "gz"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("zstd") && err.contains("xz"), "{err}");
    }

    #[test]
    fn sha256sum_sidecars() {
        let d = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let upper = d.to_uppercase();
        for text in [
            // TheRock's and Cairn's own: bare digest, with or without a newline.
            format!("{d}\n"),
            d.to_string(),
            format!("{d}\r\n"),
            format!("\n{d}\n\n"),
            // GNU sha256sum, text and binary mode, and whitespace variations.
            format!("{d}  amd-llvm_dev_generic.tar.zst\n"),
            format!("{d} *amd-llvm_dev_generic.tar.zst\n"),
            format!("  {d}\tx\n"),
            // GNU sha256sum's escaped line (a `\\` or newline in the file name).
            format!("\\{d}  odd\\\\name.tar.zst\n"),
            // Uppercase hex is normalized.
            format!("{upper}\n"),
            format!("{upper}  blas_lib_generic.tar.zst\n"),
            // BSD style (`sha256sum --tag`); a name holding `) = ` is fine, the last one counts.
            format!("SHA256 (blas_lib_generic.tar.zst) = {d}\n"),
            format!("SHA256 (a) = b.tar.zst) = {upper}"),
            // Only the first line counts.
            format!("{d}  a.tar.zst\n{}  b.tar.zst\n", "0".repeat(64)),
        ] {
            assert_eq!(parse_sha256sum(&text).unwrap().to_string(), d, "{text:?}");
        }
        for text in [
            String::new(),
            "\n".into(),
            "   \n\t".into(),
            "abc\n".into(),
            d[1..].to_string(),
            format!("{d}0"),
            format!("{}g", &d[1..]),
            format!("sha256:{d}"),
            format!("{d}-x"),
            format!("x  {d}\n"),
            format!("SHA256 (x) {d}"),
            format!("SHA256 (x) = {}", &d[1..]),
            format!("MD5 (x) = {d}"),
            format!("\\\\{d}"),
            format!("garbage\n{d}\n"),
        ] {
            assert!(
                matches!(parse_sha256sum(&text), Err(NameError::Sha256Sum(_))),
                "{text:?}"
            );
        }
        let long = "x".repeat(500);
        let Err(NameError::Sha256Sum(shown)) = parse_sha256sum(&long) else {
            panic!("not a digest");
        };
        assert_eq!(shown.len(), 80, "the error quotes at most 80 characters");
    }

    #[test]
    fn families_and_targets() {
        let cases: &[(&str, &[&str])] = &[
            ("gfx94X-dcgpu", &["gfx942"]),
            ("gfx110X-all", &["gfx1100", "gfx1101", "gfx1102", "gfx1103"]),
            (
                "gfx103X-all",
                &[
                    "gfx1030", "gfx1031", "gfx1032", "gfx1033", "gfx1034", "gfx1035", "gfx1036",
                ],
            ),
            (
                "dcgpu-all",
                &["gfx908", "gfx90a", "gfx942", "gfx950", "gfx1250"],
            ),
            ("gfx1151", &["gfx1151"]),
            ("gfx90a", &["gfx90a"]),
            ("gfx942:xnack+", &["gfx942:xnack+"]),
        ];
        for (family, targets) in cases {
            assert_eq!(
                family_targets(family).unwrap(),
                targets.to_vec(),
                "{family}"
            );
        }
        for bad in [
            "generic", "gfx", "gfx94X", "nvidia", "gfx942:", "gfx12345", "GFX942",
        ] {
            assert_eq!(
                family_targets(bad),
                Err(NameError::Family(bad.to_string())),
                "{bad}"
            );
        }
        assert_eq!(base_arch("gfx942:xnack+"), "gfx942");
        assert_eq!(base_arch("gfx942"), "gfx942");
        assert!(same_base_arch("gfx942:xnack+", "GFX942:xnack-"));
        assert!(family_matches("gfx942", "gfx94X-dcgpu"));
        assert!(family_matches("gfx942:xnack+", "gfx94X-dcgpu"));
        assert!(family_matches("generic", "gfx1151"));
        assert!(family_matches("gfx94X-dcgpu", "gfx94X-dcgpu"));
        assert!(!family_matches("gfx1100", "gfx94X-dcgpu"));
        assert!(!family_matches("gfx950", "gfx94X-dcgpu"));
    }
}
