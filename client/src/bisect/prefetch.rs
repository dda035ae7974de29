//! Prefetch: make the artifacts of candidate commits local in the daemon's store without
//! materializing anything, so a later probe (or a CI job) starts warm. `cairn prefetch --commits
//! A..B` warms every first-parent commit after A up to B; a bisect session warms the two probes
//! that can come next while the command runs ([`spawn`]).
//!
//! Each distinct `(artifact, fingerprint)` is asked for once: neighbouring commits share most of
//! them, and the daemon's single-flight joins a prefetch and a probe asking for the same archive.

use std::collections::{BTreeMap, BTreeSet};

use cairn_fingerprint::{Blake3, Platform};
use cairn_proto::v1::cairn_client::CairnClient;
use serde::Serialize;

use crate::api::Request;
use crate::connect::DaemonChannel;
use crate::fetch::{self, Warmed};

use super::BisectError;
use super::candidates::History;
use super::github::{self, GithubLookup};
use super::probe;
use super::report::{CommitRef, MissingArtifact};

/// What `cairn prefetch` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PrefetchOutcome {
    /// The commits warmed, oldest first.
    pub commits: Vec<CommitRef>,
    /// Distinct artifacts (by fingerprint) asked for.
    pub artifacts: u64,
    /// Archives the daemon now has locally.
    pub archives: u64,
    /// Archives it downloaded.
    pub from_storage: u64,
    /// Compressed bytes downloaded.
    pub downloaded_bytes: u64,
    /// Per commit, the artifacts no run produced (best effort: not an error).
    pub missing: BTreeMap<String, Vec<MissingArtifact>>,
    /// With `--github`: per commit, the CI run GitHub alone knows whose artifacts were taken by
    /// name (unverified), as `cairn bisect run --github` would take them.
    pub github_runs: BTreeMap<String, String>,
    /// Tree digests of the archives made local (what `cairn pin` pins).
    #[serde(skip)]
    pub trees: Vec<Blake3>,
}

/// A time to live: seconds, or a number with `s`, `m`, `h` or `d` (`90m`, `2h`, `7d`).
pub fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; write e.g. 3600, 90m, 2h or 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => {
            return Err(format!(
                "`{text}` has unit `{unit}`; use s, m, h or d (e.g. 2h)"
            ));
        }
    };
    if secs == 0 {
        return Err(format!(
            "`{text}` is no time at all; a pin needs a positive duration"
        ));
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// Split `A..B` into its two revisions.
pub fn parse_range(range: &str) -> Option<(&str, &str)> {
    let (a, b) = range.split_once("..")?;
    if a.is_empty() || b.is_empty() || b.starts_with('.') {
        return None;
    }
    Some((a, b))
}

/// Warm every first-parent commit after `from` up to `to` of `history`; with a `lookup`, a commit
/// whose artifacts have no Cairn record takes its GitHub run's, as a `--github` bisect would.
pub async fn prefetch_commits(
    client: &mut CairnClient<DaemonChannel>,
    history: &mut History,
    from: &str,
    to: &str,
    exclude_components: &[String],
    lookup: Option<&GithubLookup>,
) -> Result<PrefetchOutcome, BisectError> {
    let (_, _, entries) = history.candidates(from, to)?;
    let mut out = PrefetchOutcome::default();
    let mut seen: BTreeSet<(String, Blake3)> = BTreeSet::new();
    let platform = history.platform().to_string();
    for entry in entries {
        let fps = history.fingerprints(&entry.commit)?;
        let new: BTreeMap<String, Blake3> = fps
            .into_iter()
            .filter(|(n, fp)| seen.insert((n.clone(), *fp)))
            .collect();
        out.commits.push(CommitRef {
            commit: entry.commit.clone(),
            subject: entry.subject.clone(),
        });
        if new.is_empty() {
            continue;
        }
        out.artifacts += new.len() as u64;
        let request = probe::request(
            history.selection().stage_label(),
            history.family(),
            &platform,
            &new,
            exclude_components,
        );
        let request = match lookup {
            None => request,
            Some(lookup) => {
                let resolution = github::resolve(
                    client,
                    Some(lookup),
                    &entry.commit,
                    history.family(),
                    history.platform(),
                    &request,
                )
                .await?;
                if let Some(run) = &resolution.run {
                    out.github_runs
                        .insert(entry.commit.clone(), run.run_id.clone());
                }
                resolution.request(&request)
            }
        };
        let warmed = fetch::warm(client, &[request]).await?;
        let gone = probe::missing(&warmed.resolved);
        if !gone.is_empty() {
            out.missing.insert(entry.commit.clone(), gone);
        }
        out.trees.extend(warmed.trees.iter().copied());
        out.archives += warmed.daemon.artifacts;
        out.from_storage += warmed.daemon.from_storage;
        out.downloaded_bytes += warmed.daemon.storage_bytes;
    }
    Ok(out)
}

/// A prefetch running in the background.
pub type Running = tokio::task::JoinHandle<Result<Warmed, BisectError>>;

/// The candidate a background prefetch warms: its commit, and the lookup a `--github` bisect
/// resolves it with.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The commit.
    pub commit: String,
    /// Its family.
    pub family: String,
    /// Its platform.
    pub platform: Platform,
    /// `--github`'s lookup.
    pub github: Option<GithubLookup>,
}

/// Start warming `request`, the artifacts of `candidate`, on the runtime, resolved the way its
/// probe will resolve them (with `--github`, the commit's GitHub run for what Cairn has no record
/// of); the handle yields what the daemon did.
pub fn spawn(
    client: &CairnClient<DaemonChannel>,
    candidate: Candidate,
    request: Request,
) -> Running {
    let mut client = client.clone();
    tokio::spawn(async move {
        let request = match &candidate.github {
            None => request,
            Some(lookup) => github::resolve(
                &mut client,
                Some(lookup),
                &candidate.commit,
                &candidate.family,
                candidate.platform,
                &request,
            )
            .await?
            .request(&request),
        };
        Ok(fetch::warm(&mut client, &[request]).await?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_need_both_ends() {
        assert_eq!(parse_range("v1..main"), Some(("v1", "main")));
        assert_eq!(parse_range("abc..HEAD~2"), Some(("abc", "HEAD~2")));
        assert_eq!(parse_range("main"), None);
        assert_eq!(parse_range("..main"), None);
        assert_eq!(parse_range("a..."), None);
    }

    #[test]
    fn ttls_take_a_unit() {
        let secs = |t| parse_ttl(t).map(|d| d.as_secs());
        assert_eq!(secs("3600"), Ok(3600));
        assert_eq!(secs("90m"), Ok(5400));
        assert_eq!(secs("2h"), Ok(7200));
        assert_eq!(secs("7d"), Ok(604_800));
        assert!(secs("0").is_err());
        assert!(secs("2w").unwrap_err().contains("unit `w`"));
        assert!(secs("h").is_err());
    }
}
