//! What Cairn writes to storage besides TheRock's archives (DESIGN §4): the **job manifest** of one CI
//! job, one immutable **producer record** per fingerprint, and the **commit index** entry.
//!
//! All three are versioned JSON documents. Producer records are written last, after every object they
//! name is durable in storage, so a record never points at a missing archive. A record's content is
//! fixed by its key (`cairn/fp/{fingerprint}/{run_id}-{platform}`): the first writer wins through
//! `If-None-Match: *`, and on stores that ignore conditional PUTs a rewrite by a sibling job of the
//! same run names equivalent content (same fingerprint, same run).

use serde::{Deserialize, Serialize};

use std::fmt;

use cairn_fingerprint::{Blake3, Platform, Sha256};

/// Format tag of job manifests.
pub const JOB_MANIFEST_VERSION: &str = "cairn-job-v1";
/// Format tag of producer records.
pub const PRODUCER_RECORD_VERSION: &str = "cairn-producer-v1";

/// A run's status as CI reports it. GitHub's conclusions and statuses have names of their own;
/// any other spelling is kept as written ([`RunStatus::Other`]) so a record round-trips unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum RunStatus {
    /// `success`: the only status whose archives are used without `allow_failed`.
    #[default]
    Success,
    /// `failure`.
    Failure,
    /// `in_progress` (a run whose later jobs have not published yet).
    InProgress,
    /// `cancelled`.
    Cancelled,
    /// `unknown`: a run known only from its listing.
    Unknown,
    /// Any other status, as written.
    Other(String),
}

impl RunStatus {
    /// Whether the run completed successfully.
    pub fn is_success(&self) -> bool {
        *self == RunStatus::Success
    }

    /// The spelling used in records and on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            RunStatus::Success => "success",
            RunStatus::Failure => "failure",
            RunStatus::InProgress => "in_progress",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Unknown => "unknown",
            RunStatus::Other(s) => s,
        }
    }
}

impl std::str::FromStr for RunStatus {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<RunStatus, Self::Err> {
        Ok(match s {
            "success" => RunStatus::Success,
            "failure" => RunStatus::Failure,
            "in_progress" => RunStatus::InProgress,
            "cancelled" => RunStatus::Cancelled,
            "unknown" => RunStatus::Unknown,
            other => RunStatus::Other(other.to_string()),
        })
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RunStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RunStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(s.parse().unwrap_or_else(|never| match never {}))
    }
}

/// Who produced a set of archives: one CI run (or one developer publish).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// `OWNER/REPO` the run belongs to (the base repository for forks).
    pub repo: String,
    /// Workflow file name, e.g. `multi_arch_ci.yml`.
    pub workflow: String,
    /// The CI run id (or `local`).
    pub run_id: String,
    /// Commit SHA the run built.
    pub commit: String,
    /// The platform the run built for.
    pub platform: Platform,
    /// How the run ended (or that it has not).
    pub status: RunStatus,
    /// Head repository when the run came from a fork (empty = same as `repo`).
    #[serde(default)]
    pub head_repo: String,
}

/// One archive as published by a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRecord {
    /// `{name}_{component}_{family}`.
    pub artifact: String,
    /// Artifact name (topology key), e.g. `amd-llvm`.
    pub name: String,
    /// `lib`, `run`, `dev`, `dbg`, `doc` or `test`.
    pub component: String,
    /// `generic` or a GPU family.
    pub family: String,
    /// The artifact's fingerprint.
    pub fingerprint: Blake3,
    /// Object key of the archive within its bucket.
    pub key: String,
    /// SHA-256 of the archive bytes (also in the `.sha256sum` sidecar).
    pub sha256: Sha256,
    /// Archive size in bytes.
    pub compressed_size: u64,
    /// Sum of file sizes in the archive.
    pub uncompressed_size: u64,
    /// Number of regular files.
    pub files: u64,
    /// Digest of the tree manifest at `cairn/trees/{tree_digest}`.
    pub tree_digest: Blake3,
    /// True if this run built the archive; false if it reused it from `reused_from_run_id`.
    pub built_here: bool,
    /// The run the archive was reused from, when not built here.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reused_from_run_id: String,
}

/// The manifest of one CI job (one stage for one family) under its run prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobManifest {
    /// [`JOB_MANIFEST_VERSION`].
    pub version: String,
    /// The run.
    pub run: RunIdentity,
    /// Build stage, e.g. `math-libs`.
    pub stage: String,
    /// GPU family of the job (`generic` for generic stages).
    pub family: String,
    /// Bucket the run's objects live in.
    pub bucket: String,
    /// Run prefix within the bucket.
    pub prefix: String,
    /// RFC 3339 publish time.
    pub published_at: String,
    /// Every archive the job published.
    pub archives: Vec<ArchiveRecord>,
}

/// An immutable statement "run R holds the archives of the artifact with fingerprint F".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerRecord {
    /// [`PRODUCER_RECORD_VERSION`].
    pub version: String,
    /// The fingerprint this record is filed under.
    pub fingerprint: Blake3,
    /// Artifact name (topology key).
    pub name: String,
    /// The run.
    pub run: RunIdentity,
    /// Stage of the job that published it.
    pub stage: String,
    /// Bucket the archives live in.
    pub bucket: String,
    /// Run prefix within the bucket.
    pub prefix: String,
    /// RFC 3339 publish time.
    pub published_at: String,
    /// The artifact's archives (one per component and family published with this fingerprint).
    pub archives: Vec<ArchiveRecord>,
}

/// Entry of the commit index: "run R built commit C" (`cairn/commits/{commit}/{run_id}-{platform}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// The run.
    pub run: RunIdentity,
    /// Bucket of the run.
    pub bucket: String,
    /// Run prefix.
    pub prefix: String,
    /// Stages published by the job that wrote this entry.
    pub stage: String,
    /// Family of that job.
    pub family: String,
    /// Archive file names the job published.
    pub archives: Vec<String>,
    /// RFC 3339 publish time.
    pub published_at: String,
}

/// One job's branch feed entry, at [`cairn_fingerprint::layout::branch_feed_key`]: the job's commit
/// index entry and the branch it built. Warm-up lists a branch's feed (newest first) to find the
/// newest runs without knowing their commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BranchFeedRecord {
    /// The branch, as the publish named it.
    pub branch: String,
    /// The job's commit index entry (run, bucket, prefix, stage, family, archives, time).
    #[serde(flatten)]
    pub entry: CommitRecord,
}

/// Why stored JSON was refused.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Not parseable as the expected document.
    #[error("malformed {what} at `{key}`: {source}")]
    Malformed {
        /// "producer record", "job manifest", ...
        what: &'static str,
        /// Storage key.
        key: String,
        /// Parser error.
        source: serde_json::Error,
    },
    /// Parseable, but inconsistent with the key it was read from.
    #[error("{what} at `{key}` is inconsistent: {reason}")]
    Inconsistent {
        /// "producer record", ...
        what: &'static str,
        /// Storage key.
        key: String,
        /// What does not match.
        reason: String,
    },
}

impl ProducerRecord {
    /// Parse a producer record read from `key` and check it is filed under its own fingerprint and that
    /// every archive carries that fingerprint: a record is trusted only as far as its key vouches.
    pub fn parse(
        bytes: &[u8],
        key: &str,
        fingerprint: &Blake3,
    ) -> Result<ProducerRecord, RecordError> {
        let rec: ProducerRecord =
            serde_json::from_slice(bytes).map_err(|source| RecordError::Malformed {
                what: "producer record",
                key: key.to_string(),
                source,
            })?;
        let inconsistent = |reason: String| RecordError::Inconsistent {
            what: "producer record",
            key: key.to_string(),
            reason,
        };
        if rec.version != PRODUCER_RECORD_VERSION {
            return Err(inconsistent(format!("unknown version `{}`", rec.version)));
        }
        if &rec.fingerprint != fingerprint {
            return Err(inconsistent(format!(
                "filed under {fingerprint} but names {}",
                rec.fingerprint
            )));
        }
        if let Some(a) = rec.archives.iter().find(|a| &a.fingerprint != fingerprint) {
            return Err(inconsistent(format!(
                "archive `{}` has fingerprint {}",
                a.artifact, a.fingerprint
            )));
        }
        Ok(rec)
    }

    /// The record's archive for `{name}_{component}_{family}`, if it has one.
    pub fn archive(&self, artifact: &str) -> Option<&ArchiveRecord> {
        self.archives.iter().find(|a| a.artifact == artifact)
    }
}

/// Current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
