//! The Resolve RPC: find the producer records of every wanted fingerprint (storage LISTs, with the
//! index as a cache of what storage said), then let the pure [`policy`](super::policy) choose; with
//! an explicit run id, what records do not cover comes from the run's listing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use tracing::{instrument, warn};

use cairn_fingerprint::layout::{Area, RunOutputRoot, RunSpec};
use cairn_fingerprint::{Blake3, Platform};

use super::error::{Result, internal};
use super::import::listed_candidate;
use super::policy::{self, ArchiveFilter, Candidate, Policy, Resolution, Wanted};
use super::{Service, now_secs};
use crate::records::ProducerRecord;
use crate::store::error::StoreError;

/// A resolve request in domain terms (validated at the edge: names parse, fingerprints are digests).
#[derive(Debug, Clone)]
pub struct ResolveRequest {
    /// Build stage (informational; the client chose the artifacts).
    pub stage: String,
    /// GPU family (`generic` archives always pass the filter).
    pub family: String,
    /// The platform of the runs to use.
    pub platform: Platform,
    /// Archives and their fingerprints.
    pub wanted: Vec<Wanted>,
    /// What the caller accepts.
    pub policy: Policy,
    /// Components left out when expanding artifact names.
    pub exclude_components: Vec<cairn_fingerprint::names::Component>,
}

impl ResolveRequest {
    /// The filter bare artifact names expand through.
    pub fn filter(&self) -> ArchiveFilter {
        ArchiveFilter {
            family: self.family.clone(),
            exclude_components: self.exclude_components.clone(),
        }
    }
}

/// Where the producer records of `fp` in `area` are remembered in the index. A publish forgets
/// both so a new producer is seen at once.
pub(crate) fn candidates_cache_key(area: Area, fp: &Blake3) -> String {
    match area {
        Area::Trusted => format!("fp:{fp}"),
        Area::Untrusted => format!("fpu:{fp}"),
    }
}

#[derive(Serialize, Deserialize)]
struct CachedCandidates {
    /// Unix seconds when cached; only consulted for negative entries.
    at: u64,
    records: Vec<(String, bool)>,
}

impl Service {
    /// Candidates for one fingerprint, from the index cache or one LIST per backend and area, and,
    /// when a cached "none found" answered, how old that answer is (seconds). `refresh` skips
    /// cached "none found" answers.
    async fn candidates(
        &self,
        fp: &Blake3,
        allow_untrusted: bool,
        refresh: bool,
    ) -> Result<(Vec<Candidate>, Option<u64>)> {
        let mut out = Vec::new();
        let mut negative_age: Option<u64> = None;
        for &area in Area::readable(allow_untrusted) {
            let cache_key = candidates_cache_key(area, fp);
            if let Some((cached, age)) = self.cached_candidates(&cache_key, fp, refresh)? {
                out.extend(cached);
                negative_age = negative_age.max(age);
                continue;
            }
            let _turn = self.lookups.turn(cache_key.clone()).await;
            // Another request may have listed this fingerprint while we waited (always fresh).
            if let Some((cached, _)) = self.cached_candidates(&cache_key, fp, false)?
                && (!refresh || !cached.is_empty())
            {
                out.extend(cached);
                continue;
            }
            let mut found: Vec<(String, bool)> = Vec::new();
            for backend in self.backends.all() {
                let prefix = area.producer_records_prefix(fp);
                let listing = backend.storage.list(&prefix, None).await?;
                for obj in listing.objects {
                    let Some(bytes) = backend
                        .storage
                        .get_document(&obj.key, crate::storage::MAX_PRODUCER_RECORD)
                        .await?
                    else {
                        continue;
                    };
                    match ProducerRecord::parse(&bytes, &obj.key, fp) {
                        Ok(record) => {
                            let trusted = backend.trusts(area, &record.bucket);
                            found.push((String::from_utf8_lossy(&bytes).into_owned(), trusted));
                            out.push(Candidate::from_record(&record, trusted));
                        }
                        Err(e) => {
                            warn!(key = %obj.key, error = %e, "ignoring invalid producer record")
                        }
                    }
                }
            }
            let cached = CachedCandidates {
                at: now_secs(),
                records: found,
            };
            let json = serde_json::to_vec(&cached).map_err(internal)?;
            self.store
                .index()
                .put_meta(&cache_key, &json)
                .map_err(StoreError::from)?;
        }
        Ok((out, negative_age))
    }

    /// The cached candidates of `cache_key`, if the cache still answers: positive answers are kept
    /// forever (records are immutable), "none found" only for the negative TTL so a new producer is
    /// seen soon.
    /// Also returns, for a cached "none found", its age in seconds. `refresh`: such an answer is
    /// not used.
    fn cached_candidates(
        &self,
        cache_key: &str,
        fp: &Blake3,
        refresh: bool,
    ) -> Result<Option<(Vec<Candidate>, Option<u64>)>> {
        let cached = self
            .store
            .index()
            .meta(cache_key)
            .map_err(StoreError::from)?
            .and_then(|bytes| serde_json::from_slice::<CachedCandidates>(&bytes).ok());
        let Some(cached) = cached else {
            return Ok(None);
        };
        let age = now_secs().saturating_sub(cached.at);
        if cached.records.is_empty() && (refresh || age >= self.negative_ttl.as_secs()) {
            return Ok(None);
        }
        let negative = cached.records.is_empty().then_some(age);
        Ok(Some((
            cached
                .records
                .into_iter()
                .filter_map(|(json, trusted)| {
                    ProducerRecord::parse(json.as_bytes(), cache_key, fp)
                        .ok()
                        .map(|record| Candidate::from_record(&record, trusted))
                })
                .collect(),
            negative,
        )))
    }

    /// Resolve every wanted archive. Fingerprints are looked up concurrently, once each.
    #[instrument(skip_all, fields(stage = %input.stage, family = %input.family, n = input.wanted.len()))]
    pub async fn resolve(&self, input: &ResolveRequest) -> Result<Vec<Resolution>> {
        self.counters
            .resolve_requests
            .fetch_add(1, Ordering::Relaxed);
        let fps: BTreeSet<Blake3> = input.wanted.iter().filter_map(|w| w.fingerprint).collect();
        let lookups = fps.iter().map(|fp| async move {
            (
                *fp,
                self.candidates(fp, input.policy.allow_untrusted, input.policy.refresh)
                    .await,
            )
        });
        let mut candidates = BTreeMap::new();
        let mut negative_ages = BTreeMap::new();
        for (fp, result) in futures::future::join_all(lookups).await {
            let (found, negative_age) = result?;
            candidates.insert(fp, found);
            if let Some(age) = negative_age {
                negative_ages.insert(fp, age);
            }
        }
        let filter = input.filter();
        let mut out = policy::resolve(&input.wanted, &candidates, &input.policy, &filter);
        // A "none found" that came from the cache says so: a producer published since is seen
        // after the TTL, or at once with `--refresh`.
        let ttl = self.negative_ttl.as_secs();
        for r in out.iter_mut().filter(|r| r.chosen.is_none()) {
            if let Some(age) = r.fingerprint.and_then(|fp| negative_ages.get(&fp)) {
                r.explanation.push(format!(
                    "\"no producer\" is cairnd's cached answer from {age} s ago; storage is asked \
                     again after {} s, or now with --refresh",
                    ttl.saturating_sub(*age)
                ));
            }
        }
        if let Some(run_id) = &input.policy.run_id {
            self.explicit_run_fallback(
                &mut out,
                run_id,
                input.policy.run_repo.as_ref(),
                input.platform,
                &filter,
            )
            .await?;
            policy::follow_reuse(&mut out, &input.wanted, &candidates, &input.policy, &filter);
        }
        Ok(out)
    }

    /// With an explicit run id, archives without a matching producer record are taken from the run's
    /// listing by name (the user asked for that run; the explanation says the fingerprint is
    /// unverified), then from its job manifests (what it recorded as reused, from the run that
    /// built it). A listing answer costs no LIST when the run's listing is remembered.
    async fn explicit_run_fallback(
        &self,
        out: &mut [Resolution],
        run_id: &str,
        run_repo: Option<&cairn_fingerprint::layout::GithubRepo>,
        platform: Platform,
        filter: &ArchiveFilter,
    ) -> Result<()> {
        if out.iter().all(|r| r.chosen.is_some()) {
            return Ok(());
        }
        let mut spec = RunSpec::new(run_id, platform);
        if let Some(repo) = run_repo {
            spec.repo = repo.clone();
        }
        let root = RunOutputRoot::from_run(&spec).map_err(super::invalid)?;
        let cached = self.cached_run_listing(&root)?;
        let from_cache = cached.is_some();
        let listing = match cached {
            Some(listing) => listing,
            None => self.list_run(&root).await?,
        };
        let candidate = listed_candidate(&spec, &root, self);
        policy::pick_from_listing(out, &listing, &candidate, filter);
        let mut empty = listing.archives.is_empty();
        if out.iter().any(|r| r.chosen.is_none()) {
            // What the run did not upload itself: Cairn's records of what it reused, taken from
            // the run that built it (one LIST of the run's job manifests, and of each origin's).
            let runs = self.run_records(&spec).await?;
            policy::pick_from_run_records(out, run_id, &runs, filter);
        }
        if from_cache && out.iter().any(|r| r.chosen.is_none()) {
            // A run still in progress gains archives after it was first listed (the next stage's
            // jobs fetch what the previous stage just uploaded): list it again before calling
            // anything missing.
            let fresh = self.list_run(&root).await?;
            empty = fresh.archives.is_empty();
            policy::pick_from_listing(out, &fresh, &candidate, filter);
        }
        if empty {
            // Said first, once per missing entry: the run itself is the problem, not each artifact.
            let line = format!(
                "run {run_id} of {} ({platform}) has no archives under `{}`; check --run-id, \
                 --run-github-repo and --platform",
                spec.repo,
                root.s3_uri()
            );
            for r in out.iter_mut().filter(|r| r.chosen.is_none()) {
                r.explanation.insert(0, line.clone());
            }
        }
        Ok(())
    }

    /// Cairn's records of run `spec` and of every run they name as the origin of a reused archive
    /// (same repository and platform), transitively, at most [`policy::MAX_REUSE_CHAIN`] runs deep:
    /// per run, its candidate and the latest record of each archive in its job manifests. A run
    /// without job manifests is present with no archives (its candidate is the listed run's).
    async fn run_records(&self, spec: &RunSpec) -> Result<BTreeMap<String, policy::RunRecords>> {
        let mut runs: BTreeMap<String, policy::RunRecords> = BTreeMap::new();
        let mut todo = vec![spec.run_id.clone()];
        let mut depth = 0;
        while !todo.is_empty() && depth <= policy::MAX_REUSE_CHAIN {
            depth += 1;
            let mut next = Vec::new();
            for run_id in std::mem::take(&mut todo) {
                if runs.contains_key(&run_id) {
                    continue;
                }
                let mut s = spec.clone();
                s.run_id = run_id.clone();
                let records = self.one_run_records(&s).await?;
                for a in records.archives.values() {
                    if !a.built_here
                        && !a.reused_from_run_id.is_empty()
                        && !runs.contains_key(&a.reused_from_run_id)
                    {
                        next.push(a.reused_from_run_id.clone());
                    }
                }
                runs.insert(run_id, records);
            }
            todo = next;
        }
        Ok(runs)
    }

    /// One run's [`policy::RunRecords`] (see [`Service::run_records`]).
    async fn one_run_records(&self, spec: &RunSpec) -> Result<policy::RunRecords> {
        let root = RunOutputRoot::from_run(spec).map_err(super::invalid)?;
        let mut candidate = listed_candidate(spec, &root, self);
        let mut archives = BTreeMap::new();
        if let Some(backend) = self.backends.for_bucket(root.bucket()).cloned() {
            let mut notes = Vec::new();
            // Oldest first: a later job's record of the same archive wins.
            let manifests = self.job_manifests(&backend, &root, &mut notes).await?;
            for n in notes {
                warn!(run = %spec.run_id, "{n}");
            }
            if let Some(last) = manifests.last() {
                candidate.run = last.run.clone();
                candidate.published_at = last.published_at.clone();
            }
            for m in manifests {
                for a in m.archives {
                    archives.insert(a.artifact.clone(), a);
                }
            }
        }
        Ok(policy::RunRecords {
            candidate,
            archives,
        })
    }
}
