//! The multi-base resolution policy (DESIGN §6): map every requested archive to one producing run.
//!
//! Input: per requested archive, its fingerprint and the candidates found for that fingerprint.
//! Output: per archive, the chosen candidate (or MISSING) and an explanation naming every candidate
//! seen and why it was or was not chosen. This module is pure: no storage, no index —
//! `service/resolve.rs` feeds it.
//!
//! The policy, in order: candidates failing a hard filter are rejected (untrusted location unless
//! allowed, unsuccessful run unless allowed, not the explicitly requested run, no archive for this
//! component/family); the survivors are ranked by tier (trusted before untrusted, successful before
//! not); within each archive's best tier, runs are picked greedily so that **fewer distinct runs** cover
//! the request (a run covering more still-unresolved archives wins, ties go to the newest). A missing
//! fingerprint is reported as missing, never substituted by another fingerprint's archive.
//!
//! With an explicit run id X (`--run-id`, "this run's artifact set"), in this order: a producer
//! record of X with the exact fingerprint; else X's own listing by name ([`pick_from_listing`]:
//! what X uploaded, also for runs published without Cairn; fingerprints unverified); else X's job
//! manifests by name ([`pick_from_run_records`]: what X recorded as reused, from the run that built
//! it, following chains of reuse records); else — only when the request has fingerprints — the run
//! that built exactly that fingerprint, by the same policy as without a run id ([`follow_reuse`]). Only what none of these supplies is MISSING. The by-name
//! steps need no fingerprint, so a client without a checkout can ask (`Wanted::fingerprint` is
//! `None`, allowed only with a run id).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use cairn_fingerprint::names::{ArtifactName, Component, NameError, family_matches};
use cairn_fingerprint::{Blake3, Sha256};

use serde::{Deserialize, Serialize};

use crate::records::{ArchiveRecord, ProducerRecord, RunIdentity};
use crate::store::index::Version;

/// One archive of a run listing (imported runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedArchive {
    /// `{name}_{component}_{family}`.
    pub artifact: ArtifactName,
    /// Object key.
    pub key: String,
    /// Object size.
    pub size: u64,
}

/// What storage holds for one run (remembered; listed again when a lookup misses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunListing {
    /// Bucket.
    pub bucket: String,
    /// Run prefix.
    pub prefix: String,
    /// Archives, one per artifact, in [`Compression`]'s preference order when both exist.
    pub archives: Vec<ListedArchive>,
}

/// What the caller accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Accept records from untrusted locations (forks, developer machines).
    pub allow_untrusted: bool,
    /// Accept records of runs whose status is not `success`.
    pub allow_failed: bool,
    /// Only this run id may be used (never empty).
    pub run_id: Option<String>,
    /// The repository of `run_id` (default ROCm/TheRock): where its listing is read.
    pub run_repo: Option<cairn_fingerprint::layout::GithubRepo>,
    /// Ask storage again for fingerprints whose "none found" answer is cached (`--refresh`).
    pub refresh: bool,
}

/// What one wanted entry names: a topology artifact (every archive of it that the
/// [`ArchiveFilter`] passes) or one archive.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArchiveSelector {
    /// A bare topology artifact name, e.g. `amd-llvm`.
    Artifact(String),
    /// One archive, `{name}_{component}_{family}`.
    Archive(ArtifactName),
}

impl ArchiveSelector {
    /// Parse `amd-llvm` (an artifact) or `amd-llvm_lib_generic` (an archive); both are checked as
    /// names are everywhere else.
    pub fn parse(s: &str) -> Result<ArchiveSelector, NameError> {
        if s.contains('_') {
            ArtifactName::parse(s).map(ArchiveSelector::Archive)
        } else {
            // A bare artifact name is valid when it is valid as the name field of an archive name.
            ArtifactName::new(s, Component::Lib, "generic")?;
            Ok(ArchiveSelector::Artifact(s.to_string()))
        }
    }

    /// The topology artifact it belongs to.
    pub fn artifact_name(&self) -> &str {
        match self {
            ArchiveSelector::Artifact(name) => name,
            ArchiveSelector::Archive(a) => &a.name,
        }
    }
}

impl fmt::Display for ArchiveSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchiveSelector::Artifact(name) => f.write_str(name),
            ArchiveSelector::Archive(a) => write!(f, "{a}"),
        }
    }
}

/// One artifact or archive to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// What is asked for.
    pub selector: ArchiveSelector,
    /// The artifact's fingerprint; `None` only with an explicit run id (a client without a git
    /// checkout asks for "this run's artifact set" by name).
    pub fingerprint: Option<Blake3>,
}

/// One archive a candidate offers. What a producer record says is complete; an archive taken from
/// a run listing knows only its key and size, so its digests are `None` (and then nothing is
/// checked against them — the sidecar is, see `service/fetch.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedArchive {
    /// `{name}_{component}_{family}`.
    pub artifact: ArtifactName,
    /// Object key within the candidate's bucket.
    pub key: String,
    /// SHA-256 of the archive, from a producer record.
    pub sha256: Option<Sha256>,
    /// Digest of its tree manifest, from a producer record.
    pub tree_digest: Option<Blake3>,
    /// The fingerprint it was published under, from a producer record.
    pub fingerprint: Option<Blake3>,
    /// Archive size in bytes (the listing's object size for listed archives).
    pub compressed_size: u64,
    /// Sum of file sizes, when a record says.
    pub uncompressed_size: Option<u64>,
    /// Whether the run built it (`false`: reused from `reused_from_run_id`).
    pub built_here: bool,
    /// The run it was reused from.
    pub reused_from_run_id: Option<String>,
}

impl OfferedArchive {
    /// The archive a producer record describes (`None` when its artifact name does not parse: such
    /// an entry can never be selected).
    pub fn from_record(a: &ArchiveRecord) -> Option<OfferedArchive> {
        Some(OfferedArchive {
            artifact: ArtifactName::parse(&a.artifact).ok()?,
            key: a.key.clone(),
            sha256: Some(a.sha256),
            tree_digest: Some(a.tree_digest),
            fingerprint: Some(a.fingerprint),
            compressed_size: a.compressed_size,
            uncompressed_size: Some(a.uncompressed_size),
            built_here: a.built_here,
            reused_from_run_id: (!a.reused_from_run_id.is_empty())
                .then(|| a.reused_from_run_id.clone()),
        })
    }

    /// An archive known only from a run listing: key and size, no digests.
    pub fn listed(a: &ListedArchive) -> OfferedArchive {
        OfferedArchive {
            artifact: a.artifact.clone(),
            key: a.key.clone(),
            sha256: None,
            tree_digest: None,
            fingerprint: None,
            compressed_size: a.size,
            uncompressed_size: None,
            built_here: true,
            reused_from_run_id: None,
        }
    }

    /// Which build of its artifact this is, for eviction ([`Version`]): the producing run's id
    /// (the run that built it, or the one it was reused from), when that is a CI run id (a number;
    /// GitHub's increase with time). `None` for local runs.
    pub fn version(&self, run: &RunIdentity) -> Option<Version> {
        let producer = match &self.reused_from_run_id {
            Some(id) if !self.built_here => id,
            _ => &run.run_id,
        };
        Version::of_build(&self.artifact.to_string(), producer)
    }

    /// The larger of its two sizes (what "largest first" orders by).
    pub fn weight(&self) -> u64 {
        self.uncompressed_size
            .unwrap_or(0)
            .max(self.compressed_size)
    }
}

/// A run that can provide a fingerprint's archives, with the trust the *reader* assigned to where
/// it was found (never the record's own claim).
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The run.
    pub run: RunIdentity,
    /// Bucket of the run.
    pub bucket: String,
    /// Run prefix within the bucket.
    pub prefix: String,
    /// RFC 3339 publish time (empty for listed runs: they sort oldest).
    pub published_at: String,
    /// Whether the location it was read from is trusted by this daemon's configuration.
    pub trusted: bool,
    /// Its archives.
    pub archives: Vec<OfferedArchive>,
}

impl Candidate {
    /// A producer record read from a place `trusted` or not.
    pub fn from_record(record: &ProducerRecord, trusted: bool) -> Candidate {
        Candidate {
            run: record.run.clone(),
            bucket: record.bucket.clone(),
            prefix: record.prefix.clone(),
            published_at: record.published_at.clone(),
            trusted,
            archives: record
                .archives
                .iter()
                .filter_map(OfferedArchive::from_record)
                .collect(),
        }
    }

    fn run_label(&self) -> String {
        format!("{}/{} ({})", self.bucket, self.prefix, self.run.repo)
    }

    fn run_key(&self) -> (String, String) {
        (self.bucket.clone(), self.prefix.clone())
    }

    fn successful(&self) -> bool {
        self.run.status.is_success()
    }

    /// Tier: lower is better.
    fn tier(&self) -> u8 {
        (!self.trusted as u8) * 2 + (!self.successful() as u8)
    }
}

/// Which archives of a producer a bare artifact name stands for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveFilter {
    /// The requested GPU family; `generic` archives always pass, others by base architecture.
    pub family: String,
    /// Components to leave out (`dbg`, `test`, ...).
    pub exclude_components: Vec<Component>,
}

impl ArchiveFilter {
    /// Whether `archive` is one that `wanted` asks for.
    pub fn wants(&self, wanted: &ArchiveSelector, archive: &ArtifactName) -> bool {
        match wanted {
            ArchiveSelector::Archive(a) => a == archive,
            ArchiveSelector::Artifact(name) => {
                &archive.name == name
                    && !self.exclude_components.contains(&archive.component)
                    && (self.family.is_empty() || family_matches(&archive.family, &self.family))
            }
        }
    }

    /// The archives of `candidate` that `wanted` asks for (one for an archive name, any number for
    /// a bare artifact name).
    pub fn select(&self, candidate: &Candidate, wanted: &ArchiveSelector) -> Vec<OfferedArchive> {
        candidate
            .archives
            .iter()
            .filter(|a| self.wants(wanted, &a.artifact))
            .cloned()
            .collect()
    }
}

/// The outcome for one wanted artifact or archive.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// What was asked for.
    pub selector: ArchiveSelector,
    /// Its fingerprint (`None`: asked for by name in an explicit run's set).
    pub fingerprint: Option<Blake3>,
    /// The chosen candidate and the archives it provides, or `None` if missing.
    pub chosen: Option<(Candidate, Vec<OfferedArchive>)>,
    /// Every candidate seen and why it was (not) chosen.
    pub explanation: Vec<String>,
}

/// Explicit-run fallback: give every unresolved entry of `out` the archives `filter` selects from
/// `listing` (a run published without Cairn records, or whose records do not cover it), marked as
/// taken by name with unverified fingerprints. `candidate` describes the listed run.
pub fn pick_from_listing(
    out: &mut [Resolution],
    listing: &RunListing,
    candidate: &Candidate,
    filter: &ArchiveFilter,
) {
    for r in out.iter_mut().filter(|r| r.chosen.is_none()) {
        let picked: Vec<OfferedArchive> = listing
            .archives
            .iter()
            .filter(|a| filter.wants(&r.selector, &a.artifact))
            .map(OfferedArchive::listed)
            .collect();
        if !picked.is_empty() {
            r.explanation.insert(
                0,
                format!(
                    "explicit run {}: {} archive(s) taken from the run listing by name; fingerprints not verified",
                    candidate.run.run_id,
                    picked.len()
                ),
            );
            let mut c = candidate.clone();
            c.archives = picked.clone();
            r.chosen = Some((c, picked));
        }
    }
}

/// What Cairn's records say about one run: the run as a candidate (identity, bucket, prefix, trust;
/// `archives` unused) and its job manifests' archive records, the latest per archive name. A run
/// without job manifests (published without Cairn) has none.
#[derive(Debug, Clone)]
pub struct RunRecords {
    /// The run.
    pub candidate: Candidate,
    /// Archive name (`{name}_{component}_{family}`) → its record in the run's job manifests.
    pub archives: BTreeMap<String, ArchiveRecord>,
}

/// How many `reused_from` links [`pick_from_run_records`] follows before it gives up (a longer
/// chain, or a cycle, is a broken record).
pub const MAX_REUSE_CHAIN: usize = 16;

/// Where a record of run `run_id` says the archive really comes from: the run that built it and
/// that run's record of it, following `reused_from_run_id` through `runs` (a chain: run 3 reused
/// from run 2, which reused from run 1). The runs passed through, in order, are pushed to `via`.
/// A link to a run with no record of the archive ends the walk there, with the record as the last
/// run wrote it (its key names the object); a cycle or an over-long chain is `None`.
fn builder_of<'r>(
    run_id: &'r str,
    record: &'r ArchiveRecord,
    runs: &'r BTreeMap<String, RunRecords>,
    via: &mut Vec<String>,
) -> Option<(&'r str, &'r ArchiveRecord)> {
    let (mut run, mut rec) = (run_id, record);
    for _ in 0..MAX_REUSE_CHAIN {
        if rec.built_here || rec.reused_from_run_id.is_empty() {
            return Some((run, rec));
        }
        let next = rec.reused_from_run_id.as_str();
        if next == run || via.iter().any(|v| v == next) {
            return None;
        }
        via.push(next.to_string());
        let Some(next_run) = runs.get(next) else {
            return Some((next, rec));
        };
        match next_run.archives.get(&rec.artifact) {
            Some(r) => (run, rec) = (next, r),
            // The run it names has no record of it (published without Cairn): the key the
            // reusing run recorded is the object.
            None => return Some((next, rec)),
        }
    }
    None
}

/// The explicit-run step that reads Cairn's records of run `run_id` ("this run's artifact set"):
/// every unresolved entry of `out` gets the archives `filter` selects from the run's job
/// manifests — what the run built, from the run, and what it recorded as reused, from the run that
/// built it (followed through chains, [`builder_of`]). By name: fingerprints are not needed, and
/// one that differs from the request's is said. `runs` holds `run_id` and every run its records
/// point at (the daemon reads them); an archive whose origin is not in `runs` is skipped, noted.
pub fn pick_from_run_records(
    out: &mut [Resolution],
    run_id: &str,
    runs: &BTreeMap<String, RunRecords>,
    filter: &ArchiveFilter,
) {
    let Some(this) = runs.get(run_id) else {
        return;
    };
    for r in out.iter_mut().filter(|r| r.chosen.is_none()) {
        // Origin run → (its archives, the runs passed through).
        let mut groups: BTreeMap<&str, (Vec<&ArchiveRecord>, Vec<String>)> = BTreeMap::new();
        let mut notes = Vec::new();
        for rec in this.archives.values() {
            let Ok(name) = ArtifactName::parse(&rec.artifact) else {
                continue;
            };
            if !filter.wants(&r.selector, &name) {
                continue;
            }
            let mut via = Vec::new();
            match builder_of(run_id, rec, runs, &mut via) {
                Some((origin, found)) if runs.contains_key(origin) => {
                    let g = groups.entry(origin).or_default();
                    g.0.push(found);
                    if g.1.len() < via.len() {
                        g.1 = via;
                    }
                }
                Some((origin, _)) => notes.push(format!(
                    "run {run_id} recorded `{}` as reused from run {origin}, whose records \
                     could not be read",
                    rec.artifact
                )),
                None => notes.push(format!(
                    "run {run_id}'s record of `{}` names a reuse chain that loops or is longer \
                     than {MAX_REUSE_CHAIN} runs; not used",
                    rec.artifact
                )),
            }
        }
        // One run per entry: the origin with the most archives (the run itself on a tie).
        let Some((origin, (records, via))) = groups
            .into_iter()
            .max_by_key(|(o, (recs, _))| (recs.len(), *o == run_id))
        else {
            r.explanation.extend(notes);
            continue;
        };
        let mut candidate = runs[origin].candidate.clone();
        candidate.archives = records
            .iter()
            .filter_map(|a| OfferedArchive::from_record(a))
            .collect();
        let mut explanation = vec![if origin == run_id {
            format!(
                "run {run_id}'s artifact set: built by run {run_id} ({} archive(s), from its job \
                 manifests)",
                records.len()
            )
        } else {
            let chain = if via.len() > 1 {
                format!(" through run(s) {}", via[..via.len() - 1].join(", "))
            } else {
                String::new()
            };
            format!(
                "run {run_id}'s artifact set: recorded by run {run_id} as reused from run \
                 {origin}{chain}, which built it ({} archive(s), taken from run {origin})",
                records.len()
            )
        }];
        if let Some(fp) = r.fingerprint
            && let Some(other) = records.iter().find(|a| a.fingerprint != fp)
        {
            explanation.push(format!(
                "`{}` was built from fingerprint {}, not the checkout's {fp}; taken because \
                 --run-id names this run's set",
                other.artifact, other.fingerprint
            ));
        }
        explanation.extend(notes);
        explanation.append(&mut r.explanation);
        r.explanation = explanation;
        let archives = candidate.archives.clone();
        r.chosen = Some((candidate, archives));
    }
}

/// The last step of an explicit-run resolve: every entry of `out` still unresolved after run X's
/// records and listing is resolved as without a run id — the run that built exactly its
/// fingerprint — and says so. `out` is index-aligned with `wanted` (as [`resolve`] returns it).
pub fn follow_reuse(
    out: &mut [Resolution],
    wanted: &[Wanted],
    candidates: &BTreeMap<Blake3, Vec<Candidate>>,
    policy: &Policy,
    filter: &ArchiveFilter,
) {
    let Some(run_id) = policy.run_id.as_deref() else {
        return;
    };
    let open: Vec<usize> = (0..out.len())
        .filter(|&i| out[i].chosen.is_none() && wanted[i].fingerprint.is_some())
        .collect();
    if open.is_empty() {
        return;
    }
    let rest: Vec<Wanted> = open.iter().map(|&i| wanted[i].clone()).collect();
    let any_run = Policy {
        run_id: None,
        ..policy.clone()
    };
    for (&i, again) in open
        .iter()
        .zip(resolve(&rest, candidates, &any_run, filter))
    {
        if let Some((c, archives)) = again.chosen {
            let mut explanation = vec![format!(
                "run {run_id} did not build `{}` with this fingerprint; taken from run {}, which did",
                wanted[i].selector, c.run.run_id
            )];
            explanation.extend(again.explanation);
            out[i].explanation = explanation;
            out[i].chosen = Some((c, archives));
        }
    }
}

/// Resolve `wanted` archives given the candidates found per fingerprint.
pub fn resolve(
    wanted: &[Wanted],
    candidates: &BTreeMap<Blake3, Vec<Candidate>>,
    policy: &Policy,
    filter: &ArchiveFilter,
) -> Vec<Resolution> {
    // Per archive: eligible candidates (in their best tier only) and the explanation so far.
    let mut eligible: Vec<Vec<(Candidate, Vec<OfferedArchive>)>> = Vec::with_capacity(wanted.len());
    let mut explanations: Vec<Vec<String>> = Vec::with_capacity(wanted.len());
    for w in wanted {
        let mut expl = Vec::new();
        let mut ok = Vec::new();
        let cands = w
            .fingerprint
            .and_then(|fp| candidates.get(&fp))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        match w.fingerprint {
            None => expl.push(
                "no fingerprint (no checkout): only the named run's artifact set can supply it"
                    .to_string(),
            ),
            Some(fp) if cands.is_empty() => {
                expl.push(format!("no producer record for fingerprint {fp}"))
            }
            Some(_) => {}
        }
        for c in cands {
            let label = c.run_label();
            let reject = if !c.trusted && !policy.allow_untrusted {
                Some(
                    "untrusted location (fork or external bucket); pass allow_untrusted to accept"
                        .to_string(),
                )
            } else if !c.successful() && !policy.allow_failed {
                Some(format!("run status is `{}`, not `success`", c.run.status))
            } else if policy.run_id.as_ref().is_some_and(|r| r != &c.run.run_id) {
                Some(format!(
                    "not the requested run `{}`",
                    policy.run_id.as_deref().unwrap_or_default()
                ))
            } else if filter.select(c, &w.selector).is_empty() {
                Some(format!(
                    "run published no `{}` archive for this fingerprint and family",
                    w.selector
                ))
            } else {
                None
            };
            match reject {
                Some(why) => expl.push(format!("rejected {label}: {why}")),
                None => ok.push((c.clone(), filter.select(c, &w.selector))),
            }
        }
        if let Some(best) = ok.iter().map(|(c, _)| c.tier()).min() {
            for (c, _) in ok.iter().filter(|(c, _)| c.tier() != best) {
                expl.push(format!(
                    "passed over {}: a more trusted or successful run exists",
                    c.run_label()
                ));
            }
            ok.retain(|(c, _)| c.tier() == best);
        }
        eligible.push(ok);
        explanations.push(expl);
    }

    // Greedy cover: pick the run that serves the most unresolved archives; ties to the newest.
    let mut chosen: Vec<Option<usize>> = vec![None; wanted.len()];
    let mut picked_runs: BTreeSet<(String, String)> = BTreeSet::new();
    loop {
        let mut coverage: BTreeMap<(String, String), (usize, String)> = BTreeMap::new();
        for (i, opts) in eligible.iter().enumerate() {
            if chosen[i].is_some() {
                continue;
            }
            let runs: BTreeSet<_> = opts
                .iter()
                .map(|(c, _)| (c.run_key(), c.published_at.clone()))
                .collect();
            for (run, published) in runs {
                let e = coverage.entry(run).or_insert((0, published.clone()));
                e.0 += 1;
                if published > e.1 {
                    e.1 = published;
                }
            }
        }
        let Some((run, _)) = coverage
            .into_iter()
            .max_by(|a, b| (a.1.0, &a.1.1, &b.0).cmp(&(b.1.0, &b.1.1, &a.0)))
        else {
            break;
        };
        for (i, opts) in eligible.iter().enumerate() {
            if chosen[i].is_none() {
                chosen[i] = opts.iter().position(|(c, _)| c.run_key() == run);
            }
        }
        picked_runs.insert(run);
    }

    wanted
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let mut explanation = std::mem::take(&mut explanations[i]);
            let chosen = chosen[i].map(|j| eligible[i][j].clone());
            match &chosen {
                Some((c, _)) => {
                    let others = eligible[i].len() - 1;
                    explanation.insert(
                        0,
                        format!(
                            "chose {} (run {}, commit {}, {}{}) among {} eligible candidate(s){}",
                            c.run_label(),
                            c.run.run_id,
                            short(&c.run.commit),
                            if c.trusted { "trusted" } else { "untrusted" },
                            if c.successful() {
                                ", success"
                            } else {
                                ", not successful"
                            },
                            others + 1,
                            if others > 0 {
                                "; fewest distinct runs, then newest"
                            } else {
                                ""
                            },
                        ),
                    );
                    for (o, _) in eligible[i]
                        .iter()
                        .filter(|(o, _)| o.run_key() != c.run_key())
                    {
                        explanation.push(format!(
                            "not chosen {}: another run already serves this request",
                            o.run_label()
                        ));
                    }
                }
                None => explanation.insert(
                    0,
                    match w.fingerprint {
                        Some(fp) => format!("no eligible producer for fingerprint {fp}"),
                        None => format!("no producer for `{}` by name", w.selector),
                    },
                ),
            }
            Resolution {
                selector: w.selector.clone(),
                fingerprint: w.fingerprint,
                chosen,
                explanation,
            }
        })
        .collect()
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{PRODUCER_RECORD_VERSION, RunIdentity};

    fn fp(n: u8) -> Blake3 {
        Blake3([n; 32])
    }

    #[test]
    fn a_builds_version_is_its_producing_runs_id() {
        let rec = record(1, "200", "success", "", &["blas_lib_generic"]);
        let built = OfferedArchive::from_record(&rec.archives[0]).unwrap();
        let lineage = Version::lineage_of("blas_lib_generic");
        assert_eq!(
            built.version(&rec.run),
            Some(Version {
                lineage,
                generation: 200
            })
        );
        // Reused from an older run: that run built it.
        let reused = OfferedArchive {
            built_here: false,
            reused_from_run_id: Some("150".into()),
            ..built.clone()
        };
        assert_eq!(reused.version(&rec.run).map(|v| v.generation), Some(150));
        // A local run has no order among builds.
        let local = record(1, "local", "success", "", &["blas_lib_generic"]);
        assert_eq!(built.version(&local.run), None);
    }

    fn record(
        fpn: u8,
        run: &str,
        status: &str,
        published: &str,
        artifacts: &[&str],
    ) -> ProducerRecord {
        ProducerRecord {
            version: PRODUCER_RECORD_VERSION.into(),
            fingerprint: fp(fpn),
            name: "x".into(),
            run: RunIdentity {
                repo: "ROCm/TheRock".into(),
                workflow: "multi_arch_ci.yml".into(),
                run_id: run.into(),
                commit: format!("{run}abc"),
                platform: cairn_fingerprint::Platform::Linux,
                status: status.parse().unwrap(),
                head_repo: String::new(),
            },
            stage: "s".into(),
            bucket: "therock-ci-artifacts".into(),
            prefix: format!("{run}-linux"),
            published_at: published.into(),
            archives: artifacts
                .iter()
                .map(|a| ArchiveRecord {
                    artifact: a.to_string(),
                    name: "x".into(),
                    component: "lib".into(),
                    family: "generic".into(),
                    fingerprint: fp(fpn),
                    key: format!("{run}-linux/{a}.tar.zst"),
                    sha256: Sha256([0; 32]),
                    compressed_size: 1,
                    uncompressed_size: 1,
                    files: 1,
                    tree_digest: Blake3([9; 32]),
                    built_here: true,
                    reused_from_run_id: String::new(),
                })
                .collect(),
        }
    }

    fn cand(r: ProducerRecord, trusted: bool) -> Candidate {
        Candidate::from_record(&r, trusted)
    }

    fn want(a: &str, n: u8) -> Wanted {
        Wanted {
            selector: ArchiveSelector::parse(a).unwrap(),
            fingerprint: Some(fp(n)),
        }
    }

    fn run_of(r: &Resolution) -> Option<&str> {
        r.chosen.as_ref().map(|(c, _)| c.run.run_id.as_str())
    }

    #[test]
    fn missing_fingerprint_is_never_substituted() {
        let mut c = BTreeMap::new();
        c.insert(
            fp(1),
            vec![cand(
                record(
                    1,
                    "1",
                    "success",
                    "2026-01-01T00:00:00Z",
                    &["a_lib_generic"],
                ),
                true,
            )],
        );
        let out = resolve(
            &[want("a_lib_generic", 1), want("b_lib_generic", 2)],
            &c,
            &Policy::default(),
            &ArchiveFilter::default(),
        );
        assert_eq!(run_of(&out[0]), Some("1"));
        assert!(out[1].chosen.is_none());
        assert!(out[1].explanation[0].starts_with("no eligible producer"));
    }

    #[test]
    fn trusted_and_successful_first_then_fewest_runs_then_newest() {
        let mut c = BTreeMap::new();
        // Fingerprint 1 exists in runs 10 (old) and 20 (new); fingerprint 2 only in run 10.
        c.insert(
            fp(1),
            vec![
                cand(
                    record(
                        1,
                        "10",
                        "success",
                        "2026-01-01T00:00:00Z",
                        &["a_lib_generic"],
                    ),
                    true,
                ),
                cand(
                    record(
                        1,
                        "20",
                        "success",
                        "2026-02-01T00:00:00Z",
                        &["a_lib_generic"],
                    ),
                    true,
                ),
                cand(
                    record(
                        1,
                        "30",
                        "success",
                        "2026-03-01T00:00:00Z",
                        &["a_lib_generic"],
                    ),
                    false,
                ),
                cand(
                    record(
                        1,
                        "40",
                        "failure",
                        "2026-04-01T00:00:00Z",
                        &["a_lib_generic"],
                    ),
                    true,
                ),
            ],
        );
        c.insert(
            fp(2),
            vec![cand(
                record(
                    2,
                    "10",
                    "success",
                    "2026-01-01T00:00:00Z",
                    &["b_lib_generic"],
                ),
                true,
            )],
        );
        let out = resolve(
            &[want("a_lib_generic", 1), want("b_lib_generic", 2)],
            &c,
            &Policy::default(),
            &ArchiveFilter::default(),
        );
        // Run 10 covers both, so it beats the newer run 20 for `a`.
        assert_eq!(run_of(&out[0]), Some("10"));
        assert_eq!(run_of(&out[1]), Some("10"));
        let text = out[0].explanation.join("\n");
        assert!(text.contains("untrusted location"), "{text}");
        assert!(text.contains("status is `failure`"), "{text}");

        // Alone, `a` goes to the newest trusted successful run.
        let out = resolve(
            &[want("a_lib_generic", 1)],
            &c,
            &Policy::default(),
            &ArchiveFilter::default(),
        );
        assert_eq!(run_of(&out[0]), Some("20"));
        // Untrusted allowed: trusted still preferred.
        let p = Policy {
            allow_untrusted: true,
            ..Policy::default()
        };
        assert_eq!(
            run_of(
                &resolve(
                    &[want("a_lib_generic", 1)],
                    &c,
                    &p,
                    &ArchiveFilter::default()
                )[0]
            ),
            Some("20")
        );
        // Explicit run id.
        let p = Policy {
            run_id: Some("10".into()),
            ..Policy::default()
        };
        assert_eq!(
            run_of(
                &resolve(
                    &[want("a_lib_generic", 1)],
                    &c,
                    &p,
                    &ArchiveFilter::default()
                )[0]
            ),
            Some("10")
        );
        // Only untrusted candidates and not allowed: missing.
        let mut only = BTreeMap::new();
        only.insert(
            fp(1),
            vec![cand(
                record(
                    1,
                    "30",
                    "success",
                    "2026-03-01T00:00:00Z",
                    &["a_lib_generic"],
                ),
                false,
            )],
        );
        assert!(
            resolve(
                &[want("a_lib_generic", 1)],
                &only,
                &Policy::default(),
                &ArchiveFilter::default()
            )[0]
            .chosen
            .is_none()
        );
    }

    #[test]
    fn a_bare_name_expands_to_the_family_and_generic_archives() {
        let mut c = BTreeMap::new();
        let mut r = record(
            1,
            "1",
            "success",
            "2026-01-01T00:00:00Z",
            &[
                "x_lib_generic",
                "x_dbg_generic",
                "x_lib_gfx94X-dcgpu",
                "x_lib_gfx110X-all",
            ],
        );
        for a in &mut r.archives {
            let n = cairn_fingerprint::names::ArtifactName::parse(&a.artifact).unwrap();
            a.component = n.component.to_string();
            a.family = n.family.clone();
        }
        c.insert(fp(1), vec![cand(r, true)]);
        let filter = ArchiveFilter {
            family: "gfx94X-dcgpu".into(),
            exclude_components: vec![Component::Dbg],
        };
        let out = resolve(&[want("x", 1)], &c, &Policy::default(), &filter);
        let got: Vec<_> = out[0]
            .chosen
            .as_ref()
            .unwrap()
            .1
            .iter()
            .map(|a| a.artifact.to_string())
            .collect();
        assert_eq!(got, ["x_lib_generic", "x_lib_gfx94X-dcgpu"]);
    }

    #[test]
    fn a_run_without_the_component_is_rejected_for_it() {
        let mut c = BTreeMap::new();
        c.insert(
            fp(1),
            vec![cand(
                record(
                    1,
                    "1",
                    "success",
                    "2026-01-01T00:00:00Z",
                    &["a_lib_generic"],
                ),
                true,
            )],
        );
        let out = resolve(
            &[want("a_dbg_generic", 1)],
            &c,
            &Policy::default(),
            &ArchiveFilter::default(),
        );
        assert!(out[0].chosen.is_none());
        assert!(
            out[0]
                .explanation
                .join("\n")
                .contains("no `a_dbg_generic` archive")
        );
    }

    /// `--run-id 1002` where run 1002 rebuilt only `b`: `b` comes from 1002, `a` (which 1002 did not
    /// build: it reused it) from run 1001 with the exact fingerprint, and what no run built stays
    /// MISSING.
    #[test]
    fn an_explicit_run_follows_reuse_to_the_run_that_built_the_fingerprint() {
        let mut c = BTreeMap::new();
        c.insert(
            fp(1),
            vec![cand(
                record(
                    1,
                    "1001",
                    "success",
                    "2026-01-01T00:00:00Z",
                    &["a_lib_generic"],
                ),
                true,
            )],
        );
        c.insert(
            fp(2),
            vec![
                cand(
                    record(
                        2,
                        "1002",
                        "success",
                        "2026-02-01T00:00:00Z",
                        &["b_lib_generic"],
                    ),
                    true,
                ),
                cand(
                    record(
                        2,
                        "1001",
                        "success",
                        "2026-01-01T00:00:00Z",
                        &["b_lib_generic"],
                    ),
                    true,
                ),
            ],
        );
        let wanted = [
            want("a_lib_generic", 1),
            want("b_lib_generic", 2),
            want("c_lib_generic", 3),
        ];
        let policy = Policy {
            run_id: Some("1002".into()),
            ..Policy::default()
        };
        let filter = ArchiveFilter::default();
        let mut out = resolve(&wanted, &c, &policy, &filter);
        assert_eq!(
            run_of(&out[0]),
            None,
            "before following reuse, only 1002 counts"
        );
        follow_reuse(&mut out, &wanted, &c, &policy, &filter);
        assert_eq!(run_of(&out[0]), Some("1001"));
        assert!(
            out[0].explanation[0].contains("run 1002 did not build"),
            "{:?}",
            out[0].explanation
        );
        assert_eq!(
            run_of(&out[1]),
            Some("1002"),
            "what run 1002 built comes from 1002"
        );
        assert_eq!(run_of(&out[2]), None);
        assert!(out[2].explanation[0].starts_with("no eligible producer"));
    }
    /// Run records for [`pick_from_run_records`]: `built` archives built by the run, `reused` as
    /// (archive, run it names as the origin).
    fn run_records(run: &str, built: &[&str], reused: &[(&str, &str)]) -> RunRecords {
        let built_rec = record(1, run, "success", "2026-01-01T00:00:00Z", built);
        let mut archives: BTreeMap<String, ArchiveRecord> = built_rec
            .archives
            .iter()
            .map(|a| (a.artifact.clone(), a.clone()))
            .collect();
        for (a, from) in reused {
            let mut r =
                record(1, from, "success", "2026-01-01T00:00:00Z", &[a]).archives[0].clone();
            r.built_here = false;
            r.reused_from_run_id = from.to_string();
            archives.insert(a.to_string(), r);
        }
        let mut candidate = cand(built_rec, true);
        candidate.archives.clear();
        RunRecords {
            candidate,
            archives,
        }
    }

    /// `--run-id 3` without fingerprints: what run 3 built comes from run 3; what it recorded as
    /// reused from run 2 — which itself had reused it from run 1 — comes from run 1, the builder;
    /// what the set does not hold stays unresolved for the later steps; a loop is refused.
    #[test]
    fn a_run_artifact_set_follows_recorded_reuse_through_a_chain_by_name() {
        let runs: BTreeMap<String, RunRecords> = [
            (
                "3",
                run_records("3", &["c_lib_generic"], &[("a_lib_generic", "2")]),
            ),
            (
                "2",
                run_records("2", &["b_lib_generic"], &[("a_lib_generic", "1")]),
            ),
            ("1", run_records("1", &["a_lib_generic"], &[])),
            ("7", run_records("7", &[], &[("d_lib_generic", "8")])),
            ("8", run_records("8", &[], &[("d_lib_generic", "7")])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let wanted = |names: &[&str]| -> Vec<Resolution> {
            names
                .iter()
                .map(|a| Resolution {
                    selector: ArchiveSelector::parse(a).unwrap(),
                    fingerprint: None,
                    chosen: None,
                    explanation: Vec::new(),
                })
                .collect()
        };
        let filter = ArchiveFilter {
            family: "gfx94X-dcgpu".into(),
            ..ArchiveFilter::default()
        };
        let mut out = wanted(&["a", "c", "b"]);
        pick_from_run_records(&mut out, "3", &runs, &filter);
        assert_eq!(run_of(&out[0]), Some("1"), "{:?}", out[0].explanation);
        let (c, archives) = out[0].chosen.as_ref().unwrap();
        assert_eq!(c.prefix, "1-linux");
        assert_eq!(archives[0].key, "1-linux/a_lib_generic.tar.zst");
        assert!(
            out[0].explanation[0].contains("reused from run 1 through run(s) 2, which built it"),
            "{:?}",
            out[0].explanation
        );
        assert_eq!(run_of(&out[1]), Some("3"));
        assert!(out[1].explanation[0].starts_with("run 3's artifact set: built by run 3"));
        assert_eq!(
            run_of(&out[2]),
            None,
            "run 2's own build is not in run 3's set"
        );

        let mut out = wanted(&["d"]);
        pick_from_run_records(&mut out, "7", &runs, &filter);
        assert_eq!(run_of(&out[0]), None);
        assert!(
            out[0].explanation[0].contains("loops"),
            "{:?}",
            out[0].explanation
        );
    }
}
