//! What is bisected and how a candidate is fingerprinted, without checking anything out.
//!
//! A [`History`] is either the superproject's own first-parent history (each candidate's
//! fingerprints come from that commit's tree and `.gitmodules`, and its `BUILD_TOPOLOGY.toml` unless
//! a topology is given), or one submodule's first-parent history with the superproject fixed at its
//! committed `HEAD` (each candidate is `HEAD`'s tree with that submodule's gitlink replaced).
//! Either way the fingerprints are those a CI run of that state computed: local changes in the work
//! tree are ignored, and nothing in the user's work tree, index or `HEAD` is read for writing.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use cairn_fingerprint::git::{self, GitError, GitSnapshot, LogEntry};
use cairn_fingerprint::{Blake3, FingerprintConfig, Fingerprinter, Platform, Topology};

use super::BisectError;

/// Which artifacts each probe needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The inbound artifacts of a stage (what `cairn bootstrap --stage` fetches).
    Stage(String),
    /// These artifacts, by topology name.
    Artifacts(Vec<String>),
}

impl Selection {
    /// The stage name sent to the daemon (informational).
    pub fn stage_label(&self) -> &str {
        match self {
            Selection::Stage(s) => s,
            Selection::Artifacts(_) => "bisect",
        }
    }

    /// The artifact names `topology` gives this selection, in the topology's order; unknown names
    /// are an error naming them.
    pub fn wanted(&self, topology: &Topology) -> Result<Vec<String>, BisectError> {
        match self {
            Selection::Stage(stage) => Ok(topology
                .inbound(stage)
                .map_err(|source| BisectError::Topology {
                    what: format!("--stage `{stage}`"),
                    source,
                })?
                .into_iter()
                .map(str::to_string)
                .collect()),
            Selection::Artifacts(names) => {
                for n in names {
                    topology
                        .artifact(n)
                        .map_err(|source| BisectError::Topology {
                            what: format!("--artifacts names `{n}`"),
                            source,
                        })?;
                }
                Ok(names.clone())
            }
        }
    }
}

/// Whose history is bisected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// The superproject (the checkout itself).
    Superproject,
    /// The submodule at this path (or `.gitmodules` name), with the superproject at `HEAD`.
    Submodule(String),
}

/// The history being bisected and the way its commits are fingerprinted.
#[derive(Debug)]
pub struct History {
    checkout: PathBuf,
    /// The repository whose commits are candidates (the checkout, or the submodule's work tree).
    repo: PathBuf,
    /// With a submodule: its gitlink path and the superproject's committed `HEAD`.
    submodule: Option<(String, GitSnapshot)>,
    /// A topology for every commit; `None`: each superproject commit's own.
    topology: Option<Topology>,
    family: String,
    platform: Platform,
    variant: String,
    selection: Selection,
    /// Fingerprints by commit, computed once.
    memo: HashMap<String, BTreeMap<String, Blake3>>,
}

/// Settings of a [`History`].
#[derive(Debug, Clone)]
pub struct HistorySpec {
    /// The superproject checkout.
    pub checkout: PathBuf,
    /// Whose history.
    pub subject: Subject,
    /// A fixed topology (`--topology`, or the checkout's file in submodule mode); `None`: each
    /// superproject commit's own `BUILD_TOPOLOGY.toml`.
    pub topology: Option<Topology>,
    /// The GPU family.
    pub family: String,
    /// The platform.
    pub platform: Platform,
    /// The build variant.
    pub variant: String,
    /// Which artifacts.
    pub selection: Selection,
}

impl History {
    /// Open the history `spec` describes.
    pub fn open(spec: HistorySpec) -> Result<History, BisectError> {
        let git_err = |source| BisectError::Git {
            dir: spec.checkout.clone(),
            source,
        };
        let (repo, submodule) = match &spec.subject {
            Subject::Superproject => (spec.checkout.clone(), None),
            Subject::Submodule(name) => {
                let head = GitSnapshot::at_commit(&spec.checkout, "HEAD").map_err(git_err)?;
                let path = head.submodule_path(name).map_err(git_err)?;
                let repo = spec.checkout.join(&path);
                if !repo.join(".git").exists() {
                    return Err(BisectError::SubmoduleNotCheckedOut {
                        path: path.clone(),
                        dir: repo,
                    });
                }
                (repo, Some((path, head)))
            }
        };
        if spec.topology.is_none() && submodule.is_some() {
            return Err(BisectError::NoTopology);
        }
        Ok(History {
            checkout: spec.checkout,
            repo,
            submodule,
            topology: spec.topology,
            family: spec.family,
            platform: spec.platform,
            variant: spec.variant,
            selection: spec.selection,
            memo: HashMap::new(),
        })
    }

    /// The repository whose commits are candidates.
    pub fn repo(&self) -> &Path {
        &self.repo
    }

    /// The submodule bisected, by gitlink path.
    pub fn submodule(&self) -> Option<&str> {
        self.submodule.as_ref().map(|(p, _)| p.as_str())
    }

    /// The superproject commit fingerprints are computed at in submodule mode.
    pub fn superproject_head(&self) -> Option<&str> {
        self.submodule.as_ref().map(|(_, s)| s.head.as_str())
    }

    /// The GPU family.
    pub fn family(&self) -> &str {
        &self.family
    }

    /// The platform.
    pub fn platform(&self) -> Platform {
        self.platform
    }

    /// The selection.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    /// The candidates between `good` and `bad`: first-parent commits after `good` up to `bad`,
    /// oldest first, with both revisions as full SHAs. `good` must be an ancestor of `bad` and
    /// differ from it.
    pub fn candidates(
        &self,
        good: &str,
        bad: &str,
    ) -> Result<(String, String, Vec<LogEntry>), BisectError> {
        let git_err = |source| BisectError::Git {
            dir: self.repo.clone(),
            source,
        };
        let resolve = |rev: &str| {
            git::rev_parse_commit(&self.repo, rev)
                .map_err(git_err)?
                .ok_or_else(|| BisectError::Git {
                    dir: self.repo.clone(),
                    source: GitError::UnknownRevision {
                        rev: rev.to_string(),
                        dir: self.repo.clone(),
                    },
                })
        };
        let (g, b) = (resolve(good)?, resolve(bad)?);
        if !git::is_ancestor(&self.repo, &g, &b).map_err(git_err)? || g == b {
            return Err(BisectError::NotAnAncestor {
                good: good.to_string(),
                bad: bad.to_string(),
                dir: self.repo.clone(),
            });
        }
        let list = git::first_parent_range(&self.repo, &g, &b).map_err(git_err)?;
        if list.is_empty() {
            return Err(BisectError::NotAnAncestor {
                good: good.to_string(),
                bad: bad.to_string(),
                dir: self.repo.clone(),
            });
        }
        Ok((g, b, list))
    }

    /// Up to `max` first-parent ancestors of `commit`, newest first, `commit` excluded (where
    /// `--nearest` looks for a missing artifact).
    pub fn ancestors(&self, commit: &str, max: usize) -> Result<Vec<String>, BisectError> {
        let mut log = git::first_parent_log(&self.repo, commit, max + 1).map_err(|source| {
            BisectError::Git {
                dir: self.repo.clone(),
                source,
            }
        })?;
        if !log.is_empty() {
            log.remove(0);
        }
        Ok(log)
    }

    /// The fingerprints of the selected artifacts at `commit` (a commit of [`History::repo`]).
    pub fn fingerprints(&mut self, commit: &str) -> Result<BTreeMap<String, Blake3>, BisectError> {
        if let Some(fps) = self.memo.get(commit) {
            return Ok(fps.clone());
        }
        let fps = self.with_fingerprinter(commit, |history, topology, fingerprinter| {
            let names = history.selection.wanted(topology)?;
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            fingerprinter
                .compute_some(&refs, &history.family, history.platform)
                .map_err(|source| BisectError::Fingerprint {
                    commit: commit.to_string(),
                    source,
                })
        })?;
        self.memo.insert(commit.to_string(), fps.clone());
        Ok(fps)
    }

    /// The inputs of `artifact`'s fingerprint that differ between `from` and `to` (`kind name`,
    /// e.g. `submodule rocm-libraries`, `dep core-hip`): why an artifact changed between two
    /// candidates.
    pub fn changed_inputs(
        &self,
        from: &str,
        to: &str,
        artifact: &str,
    ) -> Result<Vec<String>, BisectError> {
        let explain = |commit: &str| {
            self.with_fingerprinter(commit, |history, _, fingerprinter| {
                fingerprinter
                    .explain(artifact, &history.family, history.platform)
                    .map_err(|source| BisectError::Fingerprint {
                        commit: commit.to_string(),
                        source,
                    })
            })
        };
        let (before, after) = (explain(from)?, explain(to)?);
        let old: BTreeMap<(&str, &str), &str> = before
            .inputs
            .iter()
            .map(|i| ((i.kind.as_str(), i.name.as_str()), i.value.as_str()))
            .collect();
        Ok(after
            .inputs
            .iter()
            .filter(|i| old.get(&(i.kind.as_str(), i.name.as_str())) != Some(&i.value.as_str()))
            .map(|i| format!("{} {}", i.kind, i.name))
            .collect())
    }

    /// Run `f` with the topology and a fingerprinter of `commit`.
    fn with_fingerprinter<T>(
        &self,
        commit: &str,
        f: impl FnOnce(&History, &Topology, &Fingerprinter<'_>) -> Result<T, BisectError>,
    ) -> Result<T, BisectError> {
        let git_err = |source| BisectError::Git {
            dir: self.checkout.clone(),
            source,
        };
        let snapshot = match &self.submodule {
            Some((path, head)) => head.with_gitlink(path, commit).map_err(git_err)?,
            None => GitSnapshot::at_commit(&self.checkout, commit).map_err(git_err)?,
        };
        let own;
        let topology = match &self.topology {
            Some(t) => t,
            None => {
                own = topology_at(&self.checkout, &snapshot)?;
                &own
            }
        };
        let config = FingerprintConfig {
            variant: self.variant.clone(),
            ..FingerprintConfig::default()
        };
        let fingerprinter =
            Fingerprinter::from_snapshot(topology, snapshot, config).map_err(|source| {
                BisectError::Fingerprint {
                    commit: commit.to_string(),
                    source,
                }
            })?;
        f(self, topology, &fingerprinter)
    }
}

/// The `BUILD_TOPOLOGY.toml` of a superproject commit.
fn topology_at(checkout: &Path, snapshot: &GitSnapshot) -> Result<Topology, BisectError> {
    let item = snapshot
        .tree
        .get("BUILD_TOPOLOGY.toml")
        .ok_or_else(|| BisectError::TopologyAt {
            commit: snapshot.head.clone(),
            problem: "the commit has no BUILD_TOPOLOGY.toml (pass --topology)".into(),
        })?;
    let bytes = git::read_blob(checkout, &item.oid).map_err(|source| BisectError::Git {
        dir: checkout.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| BisectError::TopologyAt {
        commit: snapshot.head.clone(),
        problem: "BUILD_TOPOLOGY.toml is not UTF-8".into(),
    })?;
    let topology = Topology::parse(&text).map_err(|e| BisectError::TopologyAt {
        commit: snapshot.head.clone(),
        problem: e.to_string(),
    })?;
    if let Some(first) = topology.validate().first() {
        return Err(BisectError::TopologyAt {
            commit: snapshot.head.clone(),
            problem: format!("BUILD_TOPOLOGY.toml is invalid: {first}"),
        });
    }
    Ok(topology)
}
