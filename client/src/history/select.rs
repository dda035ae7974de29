//! Pure run selection: which candidate run covers each GPU family (or, with a stage, every
//! artifact the stage needs), following TheRock's `find_artifacts_for_commit.py`. An archive belongs
//! to a family when its family is `generic` or shares the base architecture of the family or one of
//! its targets; a family counts as present only with at least one non-generic archive (unless it is
//! `generic`); with a stage, its inbound artifacts are the requirement instead. Eligibility:
//! [`super::Eligibility`] passes over runs that are not complete and successful unless allowed
//! (`--allow-incomplete`, `--allow-failed`); each family takes
//! the newest run that covers it, `--require-single-run` wants one run for all. Every run or commit
//! passed over gets a [`Rejection`] saying why.

use std::collections::{BTreeMap, BTreeSet};

use cairn_fingerprint::names::{ArchiveName, GENERIC, family_matches};
use cairn_fingerprint::{Platform, Topology, TopologyError};

use super::{ArtifactRunInfo, Criteria, Rejection, RunCandidate};

/// The artifacts `stage` needs on `platform`: its inbound artifacts, less those built only for
/// another platform or disabled on this one.
pub fn stage_needs(
    topology: &Topology,
    stage: &str,
    platform: Platform,
) -> Result<Vec<String>, TopologyError> {
    Ok(topology
        .inbound(stage)?
        .into_iter()
        .filter(|name| {
            topology.artifact(name).is_ok_and(|a| {
                a.platform.as_deref().is_none_or(|p| p == platform.as_str())
                    && !a.disable_platforms.iter().any(|p| p == platform.as_str())
            })
        })
        .map(str::to_string)
        .collect())
}

/// The result of evaluating one commit's runs.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// One entry per family found.
    pub results: Vec<ArtifactRunInfo>,
    /// Families (`*` for any) no run covers.
    pub missing: Vec<String>,
}

impl Evaluation {
    /// Every family covered.
    pub fn complete(&self) -> bool {
        self.missing.is_empty() && !self.results.is_empty()
    }
}

/// What one run holds for one family.
struct FamilyMatch {
    archives: Vec<String>,
    missing: Vec<String>,
}

/// Match a run's archives against a family (`*` = any) and the needed artifact names.
fn match_family(run: &RunCandidate, family: &str, needed: &[String]) -> FamilyMatch {
    let mut archives = Vec::new();
    let mut non_generic = false;
    let mut names = BTreeSet::new();
    for file in &run.archives {
        let Ok(a) = ArchiveName::parse(file) else {
            continue;
        };
        let fam = &a.artifact.family;
        let keep = match family {
            "*" => true,
            GENERIC => fam == GENERIC,
            f => family_matches(fam, f),
        };
        if keep {
            non_generic |= fam != GENERIC;
            names.insert(a.artifact.name.clone());
            archives.push(file.clone());
        }
    }
    let mut missing: Vec<String> = needed
        .iter()
        .filter(|n| !names.contains(n.as_str()))
        .cloned()
        .collect();
    if archives.is_empty() {
        missing.insert(0, "no archives".into());
    } else if needed.is_empty() && family != "*" && family != GENERIC && !non_generic {
        // TheRock's rule for a family's presence. With a stage, the stage's inbound artifacts are
        // the requirement instead: they are often all generic (a compiler-only run is a fine
        // baseline for math-libs).
        missing.insert(0, format!("no `{family}` archives (only generic ones)"));
    }
    FamilyMatch { archives, missing }
}

/// What several runs of one commit supply together for one family.
#[derive(Default)]
struct Union {
    /// Needed artifact names supplied so far.
    covered: BTreeSet<String>,
    /// Each contributing run (index) with the archives it supplies, newest first.
    runs: Vec<(usize, Vec<String>)>,
}

/// `run`'s archives that belong to `family` (`*` = any), as (artifact name, file name).
fn run_archives_for(run: &RunCandidate, family: &str) -> Vec<(String, String)> {
    run.archives
        .iter()
        .filter_map(|file| {
            let a = ArchiveName::parse(file).ok()?;
            let fam = &a.artifact.family;
            let keep = match family {
                "*" => true,
                GENERIC => fam == GENERIC,
                f => family_matches(fam, f),
            };
            keep.then(|| (a.artifact.name.clone(), file.clone()))
        })
        .collect()
}

/// Pick runs for each family (newest run per family, or one run for all with
/// `--require-single-run`); rejections are appended to `rejected`.
pub fn evaluate(
    criteria: &Criteria,
    commit: &str,
    runs: &[RunCandidate],
    rejected: &mut Vec<Rejection>,
) -> Evaluation {
    let families = criteria.families_or_any();
    let mut chosen: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
    // With a stage (and not `--require-single-run`): per family, the needed artifacts supplied so
    // far and the runs that supplied them.
    let mut union: BTreeMap<String, Union> = BTreeMap::new();
    let mut partial: Vec<Rejection> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        if let Some(why) = criteria.eligibility.refusal(run.state()) {
            rejected.push(Rejection {
                commit: commit.to_string(),
                run_id: Some(run.run_id.clone()),
                reason: format!(
                    "run is {}{}, {why}",
                    run.status,
                    run.conclusion
                        .as_deref()
                        .map(|c| format!("/{c}"))
                        .unwrap_or_default()
                ),
            });
            continue;
        }
        let matches: Vec<(String, FamilyMatch)> = families
            .iter()
            .map(|f| (f.clone(), match_family(run, f, &criteria.needed)))
            .collect();
        let problems: Vec<String> = matches
            .iter()
            .filter(|(_, m)| !m.missing.is_empty())
            .map(|(f, m)| {
                format!(
                    "{}: missing {}",
                    if f == "*" { "any family" } else { f },
                    m.missing.join(", ")
                )
            })
            .collect();
        if criteria.require_single {
            if problems.is_empty() {
                for (f, m) in matches {
                    chosen.insert(f, (i, m.archives));
                }
                break;
            }
            rejected.push(Rejection {
                commit: commit.to_string(),
                run_id: Some(run.run_id.clone()),
                reason: problems.join("; "),
            });
            continue;
        }
        if !criteria.needed.is_empty() {
            // A stage's needs may be met by several runs of the commit together (multi-base: a run
            // that rebuilt only what changed, plus the run that built the rest): each run adds the
            // needed artifacts no newer run supplied.
            let mut used = false;
            for (f, _) in &matches {
                let acc = union.entry(f.clone()).or_default();
                let offered = run_archives_for(run, f);
                let fresh: BTreeSet<String> = offered
                    .iter()
                    .map(|(name, _)| name)
                    .filter(|name| criteria.needed.contains(name) && !acc.covered.contains(*name))
                    .cloned()
                    .collect();
                let new: Vec<String> = offered
                    .into_iter()
                    .filter(|(name, _)| fresh.contains(name))
                    .map(|(_, file)| file)
                    .collect();
                acc.covered.extend(fresh);
                if !new.is_empty() {
                    acc.runs.push((i, new));
                    used = true;
                }
            }
            let rejection = Rejection {
                commit: commit.to_string(),
                run_id: Some(run.run_id.clone()),
                reason: if problems.is_empty() {
                    "adds nothing a newer run of the commit did not already supply".into()
                } else {
                    problems.join("; ")
                },
            };
            if !used {
                rejected.push(rejection);
            } else if !problems.is_empty() {
                // Used, but short on its own: worth saying only if the runs together fall short.
                partial.push(rejection);
            }
            if union
                .values()
                .filter(|acc| criteria.needed.iter().all(|n| acc.covered.contains(n)))
                .count()
                == families.len()
            {
                break;
            }
            continue;
        }
        let mut used = false;
        for (f, m) in matches {
            if m.missing.is_empty() && !chosen.contains_key(&f) {
                chosen.insert(f, (i, m.archives));
                used = true;
            }
        }
        if !used && !problems.is_empty() {
            rejected.push(Rejection {
                commit: commit.to_string(),
                run_id: Some(run.run_id.clone()),
                reason: problems.join("; "),
            });
        }
        if chosen.len() == families.len() {
            break;
        }
    }
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for f in &families {
        if !criteria.needed.is_empty() && !criteria.require_single {
            let acc = union.remove(f).unwrap_or_default();
            let uncovered: Vec<&String> = criteria
                .needed
                .iter()
                .filter(|n| !acc.covered.contains(*n))
                .collect();
            if uncovered.is_empty() {
                for (i, archives) in &acc.runs {
                    results.push(run_info(criteria, &runs[*i], f, archives));
                }
            } else {
                missing.push(f.clone());
            }
            continue;
        }
        match chosen.get(f) {
            Some((i, archives)) => results.push(run_info(criteria, &runs[*i], f, archives)),
            None => missing.push(f.clone()),
        }
    }
    if !missing.is_empty() {
        rejected.append(&mut partial);
    }
    if runs.is_empty() {
        rejected.push(Rejection {
            commit: commit.to_string(),
            run_id: None,
            reason: "no run with archives for this commit".into(),
        });
    }
    Evaluation { results, missing }
}

fn run_info(
    criteria: &Criteria,
    run: &RunCandidate,
    family: &str,
    archives: &[String],
) -> ArtifactRunInfo {
    let external_repo = run
        .prefix
        .rsplit_once('/')
        .map(|(e, _)| format!("{e}/"))
        .unwrap_or_default();
    ArtifactRunInfo {
        family: family.to_string(),
        commit: run.commit.clone(),
        commit_url: format!("https://github.com/{}/commit/{}", run.repo, run.commit),
        repo: run.repo.clone(),
        external_repo,
        platform: criteria.platform.to_string(),
        workflow: if run.workflow.is_empty() {
            criteria.workflow.clone()
        } else {
            run.workflow.clone()
        },
        run_id: run.run_id.clone(),
        run_status: run.status.clone(),
        run_conclusion: run.conclusion.clone(),
        run_url: run.run_url.clone(),
        source: run.source.to_string(),
        trusted: run.trusted,
        bucket: run.bucket.clone(),
        s3_path: run.prefix.clone(),
        s3_uri: format!("s3://{}/{}", run.bucket, run.prefix),
        index_url: format!(
            "https://{}.s3.amazonaws.com/{}/index.html",
            run.bucket, run.prefix
        ),
        artifact_count: archives.len(),
        artifacts: archives.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::candidates::prefer_zst;
    use cairn_fingerprint::layout::GithubRepo;

    fn plan(families: &[&str], needed: &[&str]) -> Criteria {
        Criteria {
            repo: GithubRepo::the_rock(),
            workflow: "multi_arch_ci.yml".into(),
            platform: Platform::Linux,
            families: families.iter().map(|s| s.to_string()).collect(),
            stage: None,
            needed: needed.iter().map(|s| s.to_string()).collect(),
            eligibility: crate::history::Eligibility::ANY,
            require_single: false,
            allow_untrusted: false,
            offline: true,
            workflow_explicit: false,
        }
    }

    fn run(id: u64, conclusion: &str, archives: &[&str]) -> RunCandidate {
        RunCandidate {
            source: "github",
            run_id: id.to_string(),
            commit: "c".repeat(40),
            repo: "ROCm/TheRock".into(),
            workflow: "multi_arch_ci.yml".into(),
            status: "completed".into(),
            conclusion: Some(conclusion.into()),
            run_url: None,
            trusted: true,
            bucket: "therock-ci-artifacts".into(),
            prefix: format!("{id}-linux"),
            archives: prefer_zst(&archives.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
            order: (id, String::new()),
        }
    }

    #[test]
    fn families_need_a_non_generic_archive_and_newest_run_wins() {
        let runs = [
            run(20, "success", &["blas_lib_generic.tar.zst"]),
            run(
                10,
                "success",
                &["blas_lib_gfx942.tar.zst", "blas_lib_generic.tar.xz"],
            ),
        ];
        let mut rejected = Vec::new();
        let e = evaluate(&plan(&["gfx94X-dcgpu"], &[]), "c", &runs, &mut rejected);
        assert!(e.missing.is_empty());
        assert_eq!(e.results[0].run_id, "10");
        assert_eq!(
            e.results[0].artifacts,
            ["blas_lib_generic.tar.xz", "blas_lib_gfx942.tar.zst"]
        );
        assert_eq!(rejected.len(), 1);
        assert!(
            rejected[0].reason.contains("only generic"),
            "{}",
            rejected[0].reason
        );
    }

    #[test]
    fn accumulate_across_runs_unless_single_run_is_required() {
        let runs = [
            run(20, "success", &["blas_lib_gfx942.tar.zst"]),
            run(10, "success", &["blas_lib_gfx1100.tar.zst"]),
        ];
        let mut p = plan(&["gfx94X-dcgpu", "gfx110X-all"], &[]);
        let e = evaluate(&p, "c", &runs, &mut Vec::new());
        assert!(e.missing.is_empty());
        let ids: Vec<&str> = e.results.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["20", "10"]);
        p.require_single = true;
        let e = evaluate(&p, "c", &runs, &mut Vec::new());
        assert_eq!(e.missing, ["gfx94X-dcgpu", "gfx110X-all"]);
    }

    #[test]
    fn stage_needs_every_inbound_artifact_and_success_can_be_required() {
        let runs = [
            run(
                30,
                "failure",
                &["blas_lib_gfx942.tar.zst", "fft_lib_gfx942.tar.zst"],
            ),
            run(20, "success", &["blas_lib_gfx942.tar.zst"]),
        ];
        let mut p = plan(&["gfx94X-dcgpu"], &["blas", "fft"]);
        let e = evaluate(&p, "c", &runs, &mut Vec::new());
        assert_eq!(e.results[0].run_id, "30");
        p.eligibility = crate::history::Eligibility::default();
        let mut rejected = Vec::new();
        let e = evaluate(&p, "c", &runs, &mut rejected);
        assert_eq!(e.missing, ["gfx94X-dcgpu"]);
        assert!(
            rejected[0].reason.contains("completed/failure"),
            "{}",
            rejected[0].reason
        );
        assert!(
            rejected[1].reason.contains("missing fft"),
            "{}",
            rejected[1].reason
        );
    }

    /// A stage's needs met by two runs of one commit together (one rebuilt blas, the other built
    /// the rest): found, each run listed with what it supplies, nothing reported as rejected.
    #[test]
    fn a_stage_is_covered_by_several_runs_together() {
        let runs = [
            run(1002, "success", &["blas_lib_gfx942.tar.zst"]),
            run(
                1001,
                "success",
                &[
                    "blas_lib_gfx942.tar.zst",
                    "fft_lib_gfx942.tar.zst",
                    "fft_dev_gfx942.tar.zst",
                ],
            ),
        ];
        let p = plan(&["gfx94X-dcgpu"], &["blas", "fft"]);
        let mut rejected = Vec::new();
        let e = evaluate(&p, "c", &runs, &mut rejected);
        assert!(e.complete(), "missing {:?}", e.missing);
        let got: Vec<(&str, &Vec<String>)> = e
            .results
            .iter()
            .map(|r| (r.run_id.as_str(), &r.artifacts))
            .collect();
        assert_eq!(
            got,
            [
                ("1002", &vec!["blas_lib_gfx942.tar.zst".to_string()]),
                (
                    "1001",
                    &vec![
                        "fft_dev_gfx942.tar.zst".to_string(),
                        "fft_lib_gfx942.tar.zst".to_string()
                    ]
                ),
            ]
        );
        assert!(rejected.is_empty(), "{rejected:?}");
        // `--require-single-run` still wants one run holding everything.
        let mut single = p.clone();
        single.require_single = true;
        let e = evaluate(&single, "c", &runs, &mut Vec::new());
        assert_eq!(e.results.len(), 1);
        assert_eq!(e.results[0].run_id, "1001");
    }

    #[test]
    fn any_family_and_runs_without_archives() {
        let runs = [
            run(20, "success", &[]),
            run(10, "success", &["fft_lib_generic.tar.zst"]),
        ];
        let mut rejected = Vec::new();
        let e = evaluate(&plan(&[], &[]), "c", &runs, &mut rejected);
        assert_eq!(e.results[0].family, "*");
        assert_eq!(e.results[0].run_id, "10");
        assert!(e.complete());
        assert!(
            rejected[0]
                .reason
                .contains("any family: missing no archives"),
            "{}",
            rejected[0].reason
        );
        let mut rejected = Vec::new();
        let e = evaluate(&plan(&["generic"], &[]), "c", &[], &mut rejected);
        assert_eq!(e.missing, ["generic"]);
        assert!(!e.complete());
        assert_eq!(rejected[0].run_id, None);
        assert_eq!(rejected[0].reason, "no run with archives for this commit");
    }

    #[test]
    fn run_info_names_the_prefix_and_defaults_the_workflow() {
        let mut r = run(7, "success", &["blas_lib_gfx942.tar.zst"]);
        r.prefix = "ROCm-fork/7-linux".into();
        r.workflow = String::new();
        let e = evaluate(&plan(&["gfx94X-dcgpu"], &[]), "c", &[r], &mut Vec::new());
        let info = &e.results[0];
        assert_eq!(info.external_repo, "ROCm-fork/");
        assert_eq!(info.workflow, "multi_arch_ci.yml");
        assert_eq!(info.s3_uri, "s3://therock-ci-artifacts/ROCm-fork/7-linux");
        assert_eq!(
            info.index_url,
            "https://therock-ci-artifacts.s3.amazonaws.com/ROCm-fork/7-linux/index.html"
        );
        assert_eq!((info.artifact_count, info.platform.as_str()), (1, "linux"));
    }

    #[test]
    fn stage_needs_drop_artifacts_of_other_platforms() {
        let t = Topology::parse(
            r#"
[build_stages.compiler]
artifact_groups = ["compiler"]
[build_stages.libs]
artifact_groups = ["libs"]
[artifact_groups.compiler]
[artifact_groups.libs]
artifact_group_deps = ["compiler"]
[artifacts.llvm]
artifact_group = "compiler"
[artifacts.win-only]
artifact_group = "compiler"
platform = "windows"
[artifacts.not-on-linux]
artifact_group = "compiler"
disable_platforms = ["linux"]
[artifacts.blas]
artifact_group = "libs"
"#,
        )
        .unwrap();
        assert_eq!(stage_needs(&t, "libs", Platform::Linux).unwrap(), ["llvm"]);
        let mut windows = stage_needs(&t, "libs", Platform::Windows).unwrap();
        windows.sort();
        assert_eq!(windows, ["llvm", "not-on-linux", "win-only"]);
        assert!(stage_needs(&t, "nope", Platform::Linux).is_err());
    }
}
