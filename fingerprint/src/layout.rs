//! The run-output layout: which bucket a CI run writes to and where each of its files lives
//! (FACTS §4–5), plus the keys Cairn adds beside TheRock's (DESIGN §4).
//!
//! A [`RunOutputRoot`] is TheRock's `WorkflowOutputRoot`: a bucket, an `external_repo` prefix
//! (`""` or `{owner}-{repo}/`) and `{run_id}-{platform}`. Its root prefix is
//! `{external_repo}{run_id}-{platform}`; archives and their `.sha256sum` sidecars sit directly under
//! it. [`RunSpec`] describes a workflow run; [`RunOutputRoot::from_run`] applies the bucket rules:
//! [`BucketRules::Current`] (TheRock HEAD) by default, or [`BucketRules::Legacy`] (the rules in force
//! until 2026-04-07, including the 2025-11-11 cutover from the `therock-artifacts*` buckets) to read
//! old runs.
//!
//! Cairn's own objects:
//! - job manifest `{prefix}/cairn/{stage}-{family}.json` (inside the run, immutable with it);
//! - producer record `cairn/fp/{fingerprint}/{run_id}-{platform}` (bucket level: one LIST on
//!   `cairn/fp/{fingerprint}/` finds every producer);
//! - tree manifest `cairn/trees/{tree_digest}`;
//! - commit index entry `cairn/commits/{commit}/{run_id}-{platform}/{stage}-{family}.json`.
//!
//! Untrusted runs (forks, external repositories) land in TheRock's external bucket, so Cairn's
//! bucket-level records of untrusted producers never share a bucket with trusted ones. A backend
//! may still serve both, so the producer records and commit index entries of an untrusted run are
//! filed under the [`Area::Untrusted`] prefix `untrusted/` ([`in_area`], [`RunOutputRoot::area`]),
//! which a reader lists only when it allows untrusted producers ([`Area::readable`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Blake3;

/// Why a run's layout cannot be determined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Not `linux` or `windows`.
    #[error("unknown platform `{0}` (expected linux or windows)")]
    Platform(String),
    /// Not `OWNER/REPO`.
    #[error("`{0}` is not a GitHub repository (expected OWNER/REPO)")]
    Repo(String),
    /// Empty or containing `/` or whitespace.
    #[error("`{0}` is not a run id (expected a non-empty id without `/` or whitespace)")]
    RunId(String),
    /// A release type outside the allowlist of the selected rules.
    #[error(
        "release type `{value}` is not allowed with {rules} bucket rules (expected one of {allowed})"
    )]
    ReleaseType {
        /// The rejected release type.
        value: String,
        /// `current` or `legacy`.
        rules: BucketRules,
        /// The allowlist, comma-separated.
        allowed: String,
    },
    /// Not an RFC 3339 timestamp.
    #[error("`{0}` is not an RFC 3339 timestamp (expected e.g. 2025-11-11T16:18:48Z)")]
    Timestamp(String),
    /// Not a 40- or 64-character lowercase hex commit id.
    #[error("`{0}` is not a git commit id (expected 40 or 64 lowercase hex characters)")]
    Commit(String),
    /// A stage or family that cannot be part of a key.
    #[error("`{0}` cannot be used in an object key (empty, or contains `/` or whitespace)")]
    KeyPart(String),
    /// Not a branch name Cairn files a feed under.
    #[error(
        "`{0}` is not a usable branch name (expected letters, digits and `._-/`, at most 200 \
         characters, no empty component, no `.` or `..` component, not starting with `-`); pass \
         --branch NAME or set CAIRN_BRANCH"
    )]
    Branch(String),
}

/// The platform a run built for: the `{platform}` in `{run_id}-{platform}`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// `linux`.
    Linux,
    /// `windows`.
    Windows,
}

impl Platform {
    /// The platform this binary runs on (TheRock's `platform.system().lower()`; anything that is not
    /// Windows counts as Linux).
    pub fn host() -> Platform {
        if cfg!(windows) {
            Platform::Windows
        } else {
            Platform::Linux
        }
    }

    /// `linux` or `windows`.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Linux => "linux",
            Platform::Windows => "windows",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = LayoutError;
    fn from_str(s: &str) -> Result<Self, LayoutError> {
        match s {
            "linux" => Ok(Platform::Linux),
            "windows" => Ok(Platform::Windows),
            _ => Err(LayoutError::Platform(s.to_string())),
        }
    }
}

/// A GitHub repository, `OWNER/REPO`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GithubRepo {
    /// The owner (user or organization).
    pub owner: String,
    /// The repository name.
    pub name: String,
}

impl GithubRepo {
    /// TheRock's own repository, the default everywhere.
    pub fn the_rock() -> GithubRepo {
        GithubRepo {
            owner: "ROCm".into(),
            name: "TheRock".into(),
        }
    }

    /// `{owner}-{name}/`: the `external_repo` prefix this repository's runs get in shared buckets.
    pub fn external_prefix(&self) -> String {
        format!("{}-{}/", self.owner, self.name)
    }
}

impl fmt::Display for GithubRepo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

impl FromStr for GithubRepo {
    type Err = LayoutError;
    fn from_str(s: &str) -> Result<Self, LayoutError> {
        let ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        match s.split_once('/') {
            Some((owner, name)) if ok(owner) && ok(name) => Ok(GithubRepo {
                owner: owner.to_string(),
                name: name.to_string(),
            }),
            _ => Err(LayoutError::Repo(s.to_string())),
        }
    }
}

/// Which bucket-selection rules to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BucketRules {
    /// TheRock HEAD (`s3_buckets.py`): `external_repo` only in the external CI bucket.
    #[default]
    Current,
    /// The rules before `bc40c5fa2` (2026-04-07): `external_repo` for every non-TheRock or fork
    /// run, and the `therock-artifacts*` buckets for runs last updated at or before the cutover.
    Legacy,
}

impl fmt::Display for BucketRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BucketRules::Current => "current",
            BucketRules::Legacy => "legacy",
        })
    }
}

/// Release types the current rules accept.
pub const RELEASE_TYPES: [&str; 6] = [
    "ci",
    "dev",
    "dev-bkc",
    "nightly",
    "nightly-bkc",
    "prerelease",
];
/// Release types the legacy rules accept (besides none, which means CI).
pub const LEGACY_RELEASE_TYPES: [&str; 3] = ["dev", "nightly", "prerelease"];

/// CI bucket for trusted runs.
pub const CI_BUCKET: &str = "therock-ci-artifacts";
/// CI bucket for forks and other repositories.
pub const CI_EXTERNAL_BUCKET: &str = "therock-ci-artifacts-external";
/// Pre-cutover bucket for trusted runs.
pub const LEGACY_BUCKET: &str = "therock-artifacts";
/// Pre-cutover bucket for forks and other repositories.
pub const LEGACY_EXTERNAL_BUCKET: &str = "therock-artifacts-external";
/// Legacy bucket of `ROCm/therock-releases-internal`.
pub const LEGACY_INTERNAL_BUCKET: &str = "therock-artifacts-internal";

/// Runs whose `updated_at` is at or before this instant used the `therock-artifacts*` buckets
/// (legacy rules only; the comparison is inclusive, on `updated_at`, not `created_at`).
pub const LEGACY_CUTOVER: OffsetDateTime = time::macros::datetime!(2025-11-11 16:18:48 UTC);

/// Parse an RFC 3339 timestamp such as GitHub's `updated_at` (`2025-11-11T16:18:48Z`).
pub fn parse_timestamp(s: &str) -> Result<OffsetDateTime, LayoutError> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| LayoutError::Timestamp(s.to_string()))
}

/// What is known about a workflow run: enough to pick its bucket and prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// The workflow run id (or `local`).
    pub run_id: String,
    /// The platform the run built for.
    pub platform: Platform,
    /// The repository the workflow ran in (the *base* repository of a pull request).
    pub repo: GithubRepo,
    /// The pull request's head repository; a value different from `repo` marks a fork.
    pub head_repo: Option<GithubRepo>,
    /// `RELEASE_TYPE`; `None` means `ci`.
    pub release_type: Option<String>,
    /// The run's `updated_at` (legacy rules only).
    pub updated_at: Option<OffsetDateTime>,
    /// Which rules to apply.
    pub rules: BucketRules,
}

impl RunSpec {
    /// A CI run of `ROCm/TheRock` under the current rules.
    pub fn new(run_id: &str, platform: Platform) -> RunSpec {
        RunSpec {
            run_id: run_id.to_string(),
            platform,
            repo: GithubRepo::the_rock(),
            head_repo: None,
            release_type: None,
            updated_at: None,
            rules: BucketRules::Current,
        }
    }

    /// Whether the run came from a fork (head repository differs from the base repository).
    pub fn is_fork(&self) -> bool {
        self.head_repo.as_ref().is_some_and(|h| *h != self.repo)
    }
}

/// Where one run's outputs live: TheRock's `WorkflowOutputRoot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutputRoot {
    bucket: String,
    external_repo: String,
    run_id: String,
    platform: Platform,
    trusted: bool,
}

impl RunOutputRoot {
    /// Apply the bucket rules to a run.
    pub fn from_run(spec: &RunSpec) -> Result<RunOutputRoot, LayoutError> {
        check_run_id(&spec.run_id)?;
        let fork = spec.is_fork();
        let is_the_rock = spec.repo == GithubRepo::the_rock();
        let (bucket, external_repo) = match spec.rules {
            BucketRules::Current => {
                let rt = spec.release_type.as_deref().unwrap_or("ci");
                let bucket = match rt {
                    "ci" if fork || !is_the_rock => CI_EXTERNAL_BUCKET.to_string(),
                    "ci" => CI_BUCKET.to_string(),
                    "dev-bkc" => "therock-dev-artifacts".to_string(),
                    "nightly-bkc" => "therock-nightly-artifacts".to_string(),
                    rt if RELEASE_TYPES.contains(&rt) => format!("therock-{rt}-artifacts"),
                    rt => return Err(release_type_error(rt, BucketRules::Current, &RELEASE_TYPES)),
                };
                let external = if bucket == CI_EXTERNAL_BUCKET {
                    spec.repo.external_prefix()
                } else {
                    String::new()
                };
                (bucket, external)
            }
            BucketRules::Legacy => {
                let external = if is_the_rock && !fork {
                    String::new()
                } else {
                    spec.repo.external_prefix()
                };
                let before_cutover = spec.updated_at.is_some_and(|t| t <= LEGACY_CUTOVER);
                let bucket = match spec.release_type.as_deref().filter(|rt| *rt != "ci") {
                    Some(rt) if LEGACY_RELEASE_TYPES.contains(&rt) => {
                        format!("therock-{rt}-artifacts")
                    }
                    Some(rt) => {
                        return Err(release_type_error(
                            rt,
                            BucketRules::Legacy,
                            &LEGACY_RELEASE_TYPES,
                        ));
                    }
                    None if external.is_empty() => (if before_cutover {
                        LEGACY_BUCKET
                    } else {
                        CI_BUCKET
                    })
                    .to_string(),
                    None if !fork
                        && spec.repo.owner == "ROCm"
                        && spec.repo.name == "therock-releases-internal" =>
                    {
                        LEGACY_INTERNAL_BUCKET.to_string()
                    }
                    None => (if before_cutover {
                        LEGACY_EXTERNAL_BUCKET
                    } else {
                        CI_EXTERNAL_BUCKET
                    })
                    .to_string(),
                };
                (bucket, external)
            }
        };
        let trusted = !fork && bucket != CI_EXTERNAL_BUCKET && bucket != LEGACY_EXTERNAL_BUCKET;
        Ok(RunOutputRoot {
            bucket,
            external_repo,
            run_id: spec.run_id.clone(),
            platform: spec.platform,
            trusted,
        })
    }

    /// A run in a local staging directory (TheRock's `for_local`): bucket `local`, no
    /// `external_repo`. Local output comes from a developer machine, so it is untrusted.
    pub fn for_local(run_id: &str, platform: Platform) -> Result<RunOutputRoot, LayoutError> {
        RunOutputRoot::new("local", "", run_id, platform, false)
    }

    /// A root with explicit parts (for tests and for buckets outside TheRock's rules).
    /// `external_repo` must be empty or end with `/`.
    pub fn new(
        bucket: &str,
        external_repo: &str,
        run_id: &str,
        platform: Platform,
        trusted: bool,
    ) -> Result<RunOutputRoot, LayoutError> {
        check_run_id(run_id)?;
        if !(external_repo.is_empty()
            || external_repo.ends_with('/') && external_repo.matches('/').count() == 1)
        {
            return Err(LayoutError::Repo(external_repo.to_string()));
        }
        Ok(RunOutputRoot {
            bucket: bucket.to_string(),
            external_repo: external_repo.to_string(),
            run_id: run_id.to_string(),
            platform,
            trusted,
        })
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `""` or `{owner}-{repo}/`.
    pub fn external_repo(&self) -> &str {
        &self.external_repo
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The platform.
    pub fn platform(&self) -> Platform {
        self.platform
    }

    /// Whether trusted builds may read what this run wrote: false for forks, for the external
    /// buckets, and for local output.
    pub fn trusted(&self) -> bool {
        self.trusted
    }

    /// `{run_id}-{platform}`: the run's identity inside a bucket, also used in Cairn's bucket-level
    /// keys.
    pub fn run_key(&self) -> String {
        format!("{}-{}", self.run_id, self.platform)
    }

    /// The root prefix, `{external_repo}{run_id}-{platform}` (no trailing `/`; list with
    /// `{prefix}/` and delimiter `/` to stay exact, FACTS gotcha 8).
    pub fn prefix(&self) -> String {
        format!("{}{}", self.external_repo, self.run_key())
    }

    /// `s3://{bucket}/{prefix}`.
    pub fn s3_uri(&self) -> String {
        self.s3_uri_of(&self.prefix())
    }

    /// `https://{bucket}.s3.amazonaws.com/{prefix}`.
    pub fn https_url(&self) -> String {
        self.https_url_of(&self.prefix())
    }

    /// `s3://{bucket}/{key}` for any key in this bucket.
    pub fn s3_uri_of(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// `https://{bucket}.s3.amazonaws.com/{key}`, percent-encoding everything but unreserved
    /// characters and `/` (S3 would read a literal `+`, as in `gfx942:xnack+`, as a space).
    pub fn https_url_of(&self, key: &str) -> String {
        let mut out = format!("https://{}.s3.amazonaws.com/", self.bucket);
        for b in key.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// `{root}/{prefix}`: the run's directory in a local staging tree.
    pub fn local_path(&self, root: &Path) -> PathBuf {
        root.join(self.prefix())
    }

    /// `{prefix}/{file_name}`: an archive (or any file at the run root).
    pub fn artifact_key(&self, file_name: &str) -> String {
        format!("{}/{file_name}", self.prefix())
    }

    /// `{prefix}/{file_name}.sha256sum`: an archive's checksum sidecar.
    pub fn sha256sum_key(&self, archive_file_name: &str) -> String {
        format!(
            "{}/{archive_file_name}{}",
            self.prefix(),
            crate::names::SHA256SUM_SUFFIX
        )
    }

    /// `{prefix}/index.html`: the server-side artifact index (multi-arch CI).
    pub fn index_key(&self) -> String {
        format!("{}/index.html", self.prefix())
    }

    /// `{prefix}/index-{artifact_group}.html`: the per-group index of single-stage CI.
    pub fn legacy_index_key(&self, artifact_group: &str) -> String {
        format!("{}/index-{artifact_group}.html", self.prefix())
    }

    /// `{prefix}/logs/{stage}/` or `{prefix}/logs/{stage}/{family}/`.
    pub fn logs_prefix(&self, stage: &str, family: Option<&str>) -> String {
        match family {
            Some(f) => format!("{}/logs/{stage}/{f}/", self.prefix()),
            None => format!("{}/logs/{stage}/", self.prefix()),
        }
    }

    /// `{prefix}/logs/index.html`.
    pub fn logs_index_key(&self) -> String {
        format!("{}/logs/index.html", self.prefix())
    }

    /// `{prefix}/manifests/{artifact_group}/therock_manifest.json`, or
    /// `{prefix}/manifests/therock_manifest.json` without a group.
    pub fn manifest_key(&self, artifact_group: Option<&str>) -> String {
        match artifact_group {
            Some(g) => format!("{}/manifests/{g}/therock_manifest.json", self.prefix()),
            None => format!("{}/manifests/therock_manifest.json", self.prefix()),
        }
    }

    /// `{prefix}/manifests/index.html`.
    pub fn manifests_index_key(&self) -> String {
        format!("{}/manifests/index.html", self.prefix())
    }

    /// Cairn's job manifest: `{prefix}/cairn/{stage}-{family}.json`.
    pub fn job_manifest_key(&self, stage: &str, family: &str) -> Result<String, LayoutError> {
        check_key_part(stage)?;
        check_key_part(family)?;
        Ok(format!("{}/cairn/{stage}-{family}.json", self.prefix()))
    }

    /// `{prefix}/cairn/`: where this run's job manifests are listed.
    pub fn job_manifests_prefix(&self) -> String {
        format!("{}/cairn/", self.prefix())
    }

    /// Cairn's producer record of this run for one fingerprint: `cairn/fp/{fingerprint}/{run_id}-{platform}`
    /// (bucket level, so one LIST on [`producer_records_prefix`] finds every producer).
    pub fn producer_record_key(&self, fingerprint: &Blake3) -> String {
        format!("{}{}", producer_records_prefix(fingerprint), self.run_key())
    }

    /// The directory of this run's commit index entries: `cairn/commits/{commit}/{run_id}-{platform}`
    /// (each job files one [`RunOutputRoot::commit_entry_key`] below it).
    pub fn commit_index_key(&self, commit: &str) -> Result<String, LayoutError> {
        Ok(format!(
            "{}{}",
            commit_index_prefix(commit)?,
            self.run_key()
        ))
    }

    /// Cairn's commit index entry of one job of this run:
    /// `cairn/commits/{commit}/{run_id}-{platform}/{stage}-{family}.json` (in the trusted area;
    /// file it with [`in_area`]`(self.area(), ..)`).
    pub fn commit_entry_key(
        &self,
        commit: &str,
        stage: &str,
        family: &str,
    ) -> Result<String, LayoutError> {
        check_key_part(stage)?;
        check_key_part(family)?;
        Ok(format!(
            "{}/{stage}-{family}.json",
            self.commit_index_key(commit)?
        ))
    }

    /// The area this run's producer records and commit index entries are filed in:
    /// [`Area::Trusted`] when [`RunOutputRoot::trusted`], else [`Area::Untrusted`].
    pub fn area(&self) -> Area {
        if self.trusted {
            Area::Trusted
        } else {
            Area::Untrusted
        }
    }
}

/// The key prefix of the untrusted area: `untrusted/`.
pub const UNTRUSTED_AREA: &str = "untrusted/";

/// Where in a backend Cairn's bucket-level records (producer records, commit index entries) of a
/// run are filed: trusted runs' at the keys this module names, untrusted runs' under `untrusted/`.
/// Run outputs (archives, job manifests) and tree manifests are never moved into an area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Area {
    /// Records of trusted runs: the keys as named (`cairn/fp/...`, `cairn/commits/...`).
    Trusted,
    /// Records of untrusted runs (forks, external repositories, local output): `untrusted/{key}`.
    Untrusted,
}

impl Area {
    /// Both areas, trusted first.
    pub const ALL: [Area; 2] = [Area::Trusted, Area::Untrusted];

    /// The key prefix: `""` or [`UNTRUSTED_AREA`].
    pub fn prefix(self) -> &'static str {
        match self {
            Area::Trusted => "",
            Area::Untrusted => UNTRUSTED_AREA,
        }
    }

    /// The areas a reader lists: the trusted one, plus the untrusted one when it allows untrusted
    /// producers. Trusted first, so a trusted producer is seen first.
    pub fn readable(allow_untrusted: bool) -> &'static [Area] {
        if allow_untrusted {
            &[Area::Trusted, Area::Untrusted]
        } else {
            &[Area::Trusted]
        }
    }

    /// Split a stored key into its area and the key within the area (`untrusted/cairn/fp/x` →
    /// `(Untrusted, "cairn/fp/x")`).
    pub fn split_key(key: &str) -> (Area, &str) {
        match key.strip_prefix(UNTRUSTED_AREA) {
            Some(rest) => (Area::Untrusted, rest),
            None => (Area::Trusted, key),
        }
    }

    /// `{area}cairn/fp/{fingerprint}/`: LIST this to find the producers of a fingerprint filed in
    /// this area.
    pub fn producer_records_prefix(self, fingerprint: &Blake3) -> String {
        in_area(self, &producer_records_prefix(fingerprint))
    }

    /// `{area}cairn/commits/{commit}/`: LIST this to find the runs of a commit filed in this area.
    pub fn commit_index_prefix(self, commit: &str) -> Result<String, LayoutError> {
        Ok(in_area(self, &commit_index_prefix(commit)?))
    }
}

/// `key` filed in `area`: `{area prefix}{key}` (`cairn/fp/x/1-linux` → `untrusted/cairn/fp/x/1-linux`
/// in the untrusted area, unchanged in the trusted one).
pub fn in_area(area: Area, key: &str) -> String {
    format!("{}{key}", area.prefix())
}

/// Check a branch name for the branch feed: ASCII letters, digits and `._-/`, at most 200
/// characters, components separated by single `/`, none empty, `.` or `..`, not starting with `-`.
pub fn check_branch(branch: &str) -> Result<(), LayoutError> {
    let ok = !branch.is_empty()
        && branch.len() <= 200
        && !branch.starts_with('-')
        && branch
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
        && branch
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(LayoutError::Branch(branch.to_string()))
    }
}

/// `cairn/branches/{owner}/{repo}/{branch}/` (owner and repo lowercased, `/` in the branch spelled
/// `%2F`, so one branch's prefix never contains another's): LIST it to follow a branch. Below it,
/// one directory per inverted day, newest first ([`branch_feed_key`]).
pub fn branch_feed_prefix(repo: &GithubRepo, branch: &str) -> Result<String, LayoutError> {
    check_branch(branch)?;
    Ok(format!(
        "cairn/branches/{}/{}/{}/",
        repo.owner.to_ascii_lowercase(),
        repo.name.to_ascii_lowercase(),
        branch.replace('/', "%2F")
    ))
}

/// Largest value of a branch feed key's inverted day (`{inv-day}` = this minus the Unix day).
pub const FEED_DAY_MAX: u64 = 9_999_999_999;
/// Largest value of a branch feed key's inverted time (`{inv-ms}` = this minus Unix milliseconds).
pub const FEED_MS_MAX: u64 = 99_999_999_999_999;

/// One job's branch feed entry:
/// `cairn/branches/{owner}/{repo}/{branch}/{inv-day}/{inv-ms}-{run_id}-{platform}.json`, where
/// `inv-day` = [`FEED_DAY_MAX`] − the Unix day and `inv-ms` = [`FEED_MS_MAX`] − the Unix time in ms,
/// zero-padded, so a lexicographic LIST (S3's order) returns the newest day and entry first.
pub fn branch_feed_key(
    repo: &GithubRepo,
    branch: &str,
    unix_ms: u64,
    run_id: &str,
    platform: Platform,
) -> Result<String, LayoutError> {
    check_run_id(run_id)?;
    let day = unix_ms / 86_400_000;
    Ok(format!(
        "{}{:010}/{:014}-{run_id}-{platform}.json",
        branch_feed_prefix(repo, branch)?,
        FEED_DAY_MAX.saturating_sub(day),
        FEED_MS_MAX.saturating_sub(unix_ms),
    ))
}

/// `cairn/fp/{fingerprint}/`: LIST this prefix to find every run that produced a fingerprint.
pub fn producer_records_prefix(fingerprint: &Blake3) -> String {
    format!("cairn/fp/{fingerprint}/")
}

/// `cairn/trees/{tree_digest}`: a tree manifest (bucket level, shared by every run).
pub fn tree_manifest_key(tree_digest: &Blake3) -> String {
    format!("cairn/trees/{tree_digest}")
}

/// `cairn/commits/{commit}/`: LIST this prefix to find the runs of one commit.
pub fn commit_index_prefix(commit: &str) -> Result<String, LayoutError> {
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if !(commit.len() == 40 || commit.len() == 64) || !commit.bytes().all(hex) {
        return Err(LayoutError::Commit(commit.to_string()));
    }
    Ok(format!("cairn/commits/{commit}/"))
}

fn check_run_id(run_id: &str) -> Result<(), LayoutError> {
    check_key_part(run_id).map_err(|_| LayoutError::RunId(run_id.to_string()))
}

fn check_key_part(part: &str) -> Result<(), LayoutError> {
    if part.is_empty()
        || part.contains('/')
        || part.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(LayoutError::KeyPart(part.to_string()));
    }
    Ok(())
}

fn release_type_error(value: &str, rules: BucketRules, allowed: &[&str]) -> LayoutError {
    LayoutError::ReleaseType {
        value: value.to_string(),
        rules,
        allowed: allowed.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> GithubRepo {
        s.parse().unwrap()
    }

    struct Case {
        repo: &'static str,
        head: Option<&'static str>,
        release_type: Option<&'static str>,
        updated_at: Option<&'static str>,
        rules: BucketRules,
        bucket: &'static str,
        external_repo: &'static str,
        trusted: bool,
    }

    fn check(case: &Case) -> Result<RunOutputRoot, LayoutError> {
        let mut spec = RunSpec::new("12345", Platform::Linux);
        spec.repo = repo(case.repo);
        spec.head_repo = case.head.map(repo);
        spec.release_type = case.release_type.map(str::to_string);
        spec.updated_at = case.updated_at.map(|t| parse_timestamp(t).unwrap());
        spec.rules = case.rules;
        RunOutputRoot::from_run(&spec)
    }

    #[test]
    fn bucket_selection_table() {
        use BucketRules::{Current as C, Legacy as L};
        let c =
            |repo, head, release_type, updated_at, rules, bucket, external_repo, trusted| Case {
                repo,
                head,
                release_type,
                updated_at,
                rules,
                bucket,
                external_repo,
                trusted,
            };
        let cases = [
            // Current rules (FACTS §5).
            c(
                "ROCm/TheRock",
                None,
                None,
                None,
                C,
                "therock-ci-artifacts",
                "",
                true,
            ),
            c(
                "ROCm/TheRock",
                Some("ROCm/TheRock"),
                Some("ci"),
                None,
                C,
                "therock-ci-artifacts",
                "",
                true,
            ),
            c(
                "ROCm/TheRock",
                Some("someone/TheRock"),
                None,
                None,
                C,
                "therock-ci-artifacts-external",
                "ROCm-TheRock/",
                false,
            ),
            c(
                "ROCm/rocm-libraries",
                None,
                None,
                None,
                C,
                "therock-ci-artifacts-external",
                "ROCm-rocm-libraries/",
                false,
            ),
            c(
                "ROCm/TheRock",
                None,
                Some("dev"),
                None,
                C,
                "therock-dev-artifacts",
                "",
                true,
            ),
            c(
                "ROCm/TheRock",
                None,
                Some("dev-bkc"),
                None,
                C,
                "therock-dev-artifacts",
                "",
                true,
            ),
            c(
                "ROCm/TheRock",
                None,
                Some("nightly"),
                None,
                C,
                "therock-nightly-artifacts",
                "",
                true,
            ),
            c(
                "ROCm/TheRock",
                None,
                Some("nightly-bkc"),
                None,
                C,
                "therock-nightly-artifacts",
                "",
                true,
            ),
            c(
                "ROCm/TheRock",
                None,
                Some("prerelease"),
                None,
                C,
                "therock-prerelease-artifacts",
                "",
                true,
            ),
            // HEAD sets external_repo only in the external CI bucket, even for other repos.
            c(
                "ROCm/rocm-libraries",
                None,
                Some("nightly"),
                None,
                C,
                "therock-nightly-artifacts",
                "",
                true,
            ),
            // The cutover does not exist under the current rules.
            c(
                "ROCm/TheRock",
                None,
                None,
                Some("2025-01-01T00:00:00Z"),
                C,
                "therock-ci-artifacts",
                "",
                true,
            ),
            // Legacy rules.
            c(
                "ROCm/TheRock",
                None,
                None,
                None,
                L,
                "therock-ci-artifacts",
                "",
                true,
            ),
            c(
                "ROCm/TheRock",
                None,
                None,
                Some("2025-11-11T16:18:48Z"),
                L,
                "therock-artifacts",
                "",
                true,
            ),
            c(
                "ROCm/TheRock",
                None,
                None,
                Some("2025-11-11T16:18:49Z"),
                L,
                "therock-ci-artifacts",
                "",
                true,
            ),
            c(
                "ROCm/TheRock",
                None,
                None,
                Some("2025-11-11T17:18:48+01:00"),
                L,
                "therock-artifacts",
                "",
                true,
            ),
            c(
                "ROCm/TheRock",
                Some("me/TheRock"),
                None,
                Some("2025-06-01T00:00:00Z"),
                L,
                "therock-artifacts-external",
                "ROCm-TheRock/",
                false,
            ),
            c(
                "ROCm/TheRock",
                Some("me/TheRock"),
                None,
                Some("2026-01-01T00:00:00Z"),
                L,
                "therock-ci-artifacts-external",
                "ROCm-TheRock/",
                false,
            ),
            c(
                "ROCm/rocm-systems",
                None,
                None,
                None,
                L,
                "therock-ci-artifacts-external",
                "ROCm-rocm-systems/",
                false,
            ),
            c(
                "ROCm/therock-releases-internal",
                None,
                None,
                None,
                L,
                "therock-artifacts-internal",
                "ROCm-therock-releases-internal/",
                true,
            ),
            // Legacy: external_repo is independent of the bucket.
            c(
                "ROCm/rocm-libraries",
                None,
                Some("nightly"),
                None,
                L,
                "therock-nightly-artifacts",
                "ROCm-rocm-libraries/",
                true,
            ),
            c(
                "ROCm/TheRock",
                None,
                Some("ci"),
                Some("2025-01-01T00:00:00Z"),
                L,
                "therock-artifacts",
                "",
                true,
            ),
        ];
        for (i, case) in cases.iter().enumerate() {
            let root = check(case).unwrap_or_else(|e| panic!("case {i}: {e}"));
            assert_eq!(
                (root.bucket(), root.external_repo(), root.trusted()),
                (case.bucket, case.external_repo, case.trusted),
                "case {i}"
            );
        }
    }

    #[test]
    fn release_type_allowlists() {
        let mut case = Case {
            repo: "ROCm/TheRock",
            head: None,
            release_type: Some("release"),
            updated_at: None,
            rules: BucketRules::Current,
            bucket: "",
            external_repo: "",
            trusted: true,
        };
        let err = check(&case).unwrap_err();
        assert_eq!(
            err.to_string(),
            "release type `release` is not allowed with current bucket rules (expected one of ci, dev, dev-bkc, nightly, nightly-bkc, prerelease)"
        );
        case.rules = BucketRules::Legacy;
        case.release_type = Some("dev-bkc");
        assert!(matches!(
            check(&case),
            Err(LayoutError::ReleaseType {
                rules: BucketRules::Legacy,
                ..
            })
        ));
    }

    #[test]
    fn keys_and_locations() {
        let mut spec = RunSpec::new("12345", Platform::Linux);
        spec.head_repo = Some(repo("fork/TheRock"));
        let ext = RunOutputRoot::from_run(&spec).unwrap();
        assert_eq!(ext.prefix(), "ROCm-TheRock/12345-linux");
        assert_eq!(
            ext.s3_uri(),
            "s3://therock-ci-artifacts-external/ROCm-TheRock/12345-linux"
        );
        assert_eq!(
            ext.https_url(),
            "https://therock-ci-artifacts-external.s3.amazonaws.com/ROCm-TheRock/12345-linux"
        );

        let root = RunOutputRoot::from_run(&RunSpec::new("98765", Platform::Windows)).unwrap();
        let archive = "blas_lib_gfx942:xnack+.tar.zst";
        let table = [
            (root.prefix(), "98765-windows"),
            (root.s3_uri(), "s3://therock-ci-artifacts/98765-windows"),
            (
                root.https_url(),
                "https://therock-ci-artifacts.s3.amazonaws.com/98765-windows",
            ),
            (
                root.artifact_key("amd-llvm_dev_generic.tar.zst"),
                "98765-windows/amd-llvm_dev_generic.tar.zst",
            ),
            (
                root.sha256sum_key("amd-llvm_dev_generic.tar.zst"),
                "98765-windows/amd-llvm_dev_generic.tar.zst.sha256sum",
            ),
            (
                root.https_url_of(&root.artifact_key(archive)),
                "https://therock-ci-artifacts.s3.amazonaws.com/98765-windows/blas_lib_gfx942%3Axnack%2B.tar.zst",
            ),
            (root.index_key(), "98765-windows/index.html"),
            (
                root.legacy_index_key("gfx94X-dcgpu"),
                "98765-windows/index-gfx94X-dcgpu.html",
            ),
            (
                root.logs_prefix("math-libs", Some("gfx1151")),
                "98765-windows/logs/math-libs/gfx1151/",
            ),
            (
                root.logs_prefix("compiler-runtime", None),
                "98765-windows/logs/compiler-runtime/",
            ),
            (root.logs_index_key(), "98765-windows/logs/index.html"),
            (
                root.manifest_key(Some("gfx1151")),
                "98765-windows/manifests/gfx1151/therock_manifest.json",
            ),
            (
                root.manifest_key(None),
                "98765-windows/manifests/therock_manifest.json",
            ),
            (
                root.manifests_index_key(),
                "98765-windows/manifests/index.html",
            ),
            (
                root.job_manifest_key("math-libs", "gfx1151").unwrap(),
                "98765-windows/cairn/math-libs-gfx1151.json",
            ),
            (root.job_manifests_prefix(), "98765-windows/cairn/"),
        ];
        for (got, want) in table {
            assert_eq!(got, want);
        }
        let fp = Blake3::of(b"fp");
        assert_eq!(
            root.producer_record_key(&fp),
            format!("cairn/fp/{fp}/98765-windows")
        );
        assert_eq!(tree_manifest_key(&fp), format!("cairn/trees/{fp}"));
        let commit = "89553ce3746eda74ade42557470d25e37c91b6f0";
        assert_eq!(
            root.commit_index_key(commit).unwrap(),
            format!("cairn/commits/{commit}/98765-windows")
        );
        assert_eq!(
            root.local_path(Path::new("/staging")),
            Path::new("/staging/98765-windows")
        );
        assert!(matches!(
            root.commit_index_key("HEAD"),
            Err(LayoutError::Commit(_))
        ));
        assert!(matches!(
            root.job_manifest_key("a/b", "x"),
            Err(LayoutError::KeyPart(_))
        ));

        let local = RunOutputRoot::for_local("local", Platform::Linux).unwrap();
        assert_eq!(
            (local.bucket(), local.prefix().as_str(), local.trusted()),
            ("local", "local-linux", false)
        );
    }

    #[test]
    fn branch_feed_keys_sort_newest_first_and_refuse_bad_branches() {
        let repo: GithubRepo = "ROCm/TheRock".parse().unwrap();
        let older =
            branch_feed_key(&repo, "main", 1_700_000_000_000, "11", Platform::Linux).unwrap();
        let newer =
            branch_feed_key(&repo, "main", 1_800_000_000_000, "12", Platform::Linux).unwrap();
        assert!(newer < older, "{newer} should sort before {older}");
        assert!(
            older.starts_with("cairn/branches/rocm/therock/main/"),
            "{older}"
        );
        assert!(older.ends_with("-11-linux.json"), "{older}");
        let nested = branch_feed_prefix(&repo, "release/7.0").unwrap();
        assert_eq!(nested, "cairn/branches/rocm/therock/release%2F7.0/");
        for bad in ["", "a//b", "../x", "a/./b", "-x", "a b", "a\nb", "x/", "é"] {
            assert!(check_branch(bad).is_err(), "{bad:?} accepted");
        }
        let err = check_branch("a..b/..").unwrap_err().to_string();
        assert!(err.contains("--branch"), "{err}");
    }

    #[test]
    fn commit_entry_keys() {
        let root = RunOutputRoot::from_run(&RunSpec::new("98765", Platform::Windows)).unwrap();
        let commit = "89553ce3746eda74ade42557470d25e37c91b6f0";
        assert_eq!(
            root.commit_entry_key(commit, "math-libs", "gfx94X-dcgpu")
                .unwrap(),
            format!("cairn/commits/{commit}/98765-windows/math-libs-gfx94X-dcgpu.json")
        );
        // The entry sits below the run's commit index key, which sits below the commit's prefix.
        let entry = root.commit_entry_key(commit, "s", "generic").unwrap();
        assert!(entry.starts_with(&format!("{}/", root.commit_index_key(commit).unwrap())));
        assert!(entry.starts_with(&commit_index_prefix(commit).unwrap()));
        let sha256_commit = "ab".repeat(32);
        assert!(root.commit_entry_key(&sha256_commit, "s", "f").is_ok());
        for (commit, stage, family) in [
            ("HEAD", "s", "f"),
            (&commit.to_uppercase()[..], "s", "f"),
            (&commit[1..], "s", "f"),
        ] {
            assert!(
                matches!(
                    root.commit_entry_key(commit, stage, family),
                    Err(LayoutError::Commit(_))
                ),
                "{commit}"
            );
        }
        for (stage, family) in [
            ("", "f"),
            ("a/b", "f"),
            ("s", "x y"),
            ("s", ""),
            ("s", "a\n"),
        ] {
            assert!(
                matches!(
                    root.commit_entry_key(commit, stage, family),
                    Err(LayoutError::KeyPart(_))
                ),
                "{stage:?} {family:?}"
            );
        }
    }

    #[test]
    fn areas_file_untrusted_records_under_their_prefix() {
        assert_eq!(Area::Trusted.prefix(), "");
        assert_eq!(Area::Untrusted.prefix(), "untrusted/");
        assert_eq!(Area::Untrusted.prefix(), UNTRUSTED_AREA);
        assert_eq!(Area::readable(false), [Area::Trusted]);
        assert_eq!(Area::readable(true), [Area::Trusted, Area::Untrusted]);

        let fp = Blake3::of(b"fp");
        let commit = "89553ce3746eda74ade42557470d25e37c91b6f0";
        let trusted = RunOutputRoot::from_run(&RunSpec::new("98765", Platform::Linux)).unwrap();
        let mut fork = RunSpec::new("12345", Platform::Linux);
        fork.head_repo = Some(repo("fork/TheRock"));
        let fork = RunOutputRoot::from_run(&fork).unwrap();
        let local = RunOutputRoot::for_local("7", Platform::Linux).unwrap();
        assert_eq!(trusted.area(), Area::Trusted);
        assert_eq!(fork.area(), Area::Untrusted);
        assert_eq!(local.area(), Area::Untrusted);

        let table = [
            (
                in_area(trusted.area(), &trusted.producer_record_key(&fp)),
                format!("cairn/fp/{fp}/98765-linux"),
            ),
            (
                in_area(fork.area(), &fork.producer_record_key(&fp)),
                format!("untrusted/cairn/fp/{fp}/12345-linux"),
            ),
            (
                in_area(
                    fork.area(),
                    &fork
                        .commit_entry_key(commit, "math-libs", "gfx1151")
                        .unwrap(),
                ),
                format!("untrusted/cairn/commits/{commit}/12345-linux/math-libs-gfx1151.json"),
            ),
            (
                in_area(
                    trusted.area(),
                    &trusted
                        .commit_entry_key(commit, "compiler", "generic")
                        .unwrap(),
                ),
                format!("cairn/commits/{commit}/98765-linux/compiler-generic.json"),
            ),
            (
                Area::Trusted.producer_records_prefix(&fp),
                format!("cairn/fp/{fp}/"),
            ),
            (
                Area::Untrusted.producer_records_prefix(&fp),
                format!("untrusted/cairn/fp/{fp}/"),
            ),
            (
                Area::Trusted.commit_index_prefix(commit).unwrap(),
                format!("cairn/commits/{commit}/"),
            ),
            (
                Area::Untrusted.commit_index_prefix(commit).unwrap(),
                format!("untrusted/cairn/commits/{commit}/"),
            ),
        ];
        for (got, want) in table {
            assert_eq!(got, want);
        }
        // A record filed in an area is found by LISTing that area's prefix, and only that one.
        for area in Area::ALL {
            let key = in_area(area, &trusted.producer_record_key(&fp));
            for other in Area::ALL {
                assert_eq!(
                    key.starts_with(&other.producer_records_prefix(&fp)),
                    area == other,
                    "{key} vs {other:?}"
                );
            }
            let entry = in_area(area, &trusted.commit_entry_key(commit, "s", "f").unwrap());
            for other in Area::ALL {
                assert_eq!(
                    entry.starts_with(&other.commit_index_prefix(commit).unwrap()),
                    area == other,
                    "{entry} vs {other:?}"
                );
            }
            assert_eq!(
                Area::split_key(&key),
                (area, trusted.producer_record_key(&fp).as_str())
            );
        }
        assert!(Area::Trusted.commit_index_prefix("HEAD").is_err());
        assert_eq!(Area::split_key("untrusted"), (Area::Trusted, "untrusted"));
    }

    #[test]
    fn parsing_inputs() {
        assert_eq!("linux".parse::<Platform>().unwrap(), Platform::Linux);
        assert_eq!("windows".parse::<Platform>().unwrap(), Platform::Windows);
        assert_eq!(
            "darwin".parse::<Platform>(),
            Err(LayoutError::Platform("darwin".into()))
        );
        for bad in ["ROCm", "/x", "x/", "a/b/c", "a b/c", ""] {
            assert_eq!(
                bad.parse::<GithubRepo>(),
                Err(LayoutError::Repo(bad.into())),
                "{bad}"
            );
        }
        for bad in ["", "1/2", "1 2"] {
            assert!(matches!(
                RunOutputRoot::from_run(&RunSpec::new(bad, Platform::Linux)),
                Err(LayoutError::RunId(_))
            ));
        }
        assert!(matches!(
            parse_timestamp("yesterday"),
            Err(LayoutError::Timestamp(_))
        ));
        assert_eq!(
            parse_timestamp("2025-11-11T16:18:48Z").unwrap(),
            LEGACY_CUTOVER
        );
    }
}
