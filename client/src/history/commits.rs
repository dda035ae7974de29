//! Commit lookup: a revision to a full commit SHA, and the commits a `--fallback` search examines.
//! The local checkout answers when it has the commit (git runs only through
//! [`cairn_fingerprint::git`]); otherwise GitHub's commit listing does, unless offline.

use std::path::Path;

use cairn_fingerprint::git;
use cairn_fingerprint::layout::GithubRepo;

use super::HistoryError;
use crate::github::GithubClient;

/// Whether `s` is a full (40 hex digit) commit SHA.
fn is_full_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A full commit SHA: 40 hex as given (lower-cased, no checkout needed), else what `rev` names in
/// the checkout at `dir`.
pub fn resolve_commit(rev: &str, dir: &Path) -> Result<String, HistoryError> {
    if is_full_sha(rev) {
        return Ok(rev.to_ascii_lowercase());
    }
    match git::rev_parse_commit(dir, rev) {
        Ok(Some(sha)) if is_full_sha(&sha) => Ok(sha),
        _ => Err(HistoryError::UnknownRevision {
            rev: rev.to_string(),
            dir: dir.to_path_buf(),
        }),
    }
}

/// Where a baseline search walks.
#[derive(Debug, Clone)]
pub struct Walk<'a> {
    /// The commit the search starts from (a full SHA).
    pub start: &'a str,
    /// The main branch (`origin/{main}` preferred, then `{main}`).
    pub main_branch: &'a str,
    /// Commits examined at most (at least one).
    pub max_commits: usize,
}

/// The commits a baseline search examines, newest first, starting with `start`; and the merge-base
/// when `start` is not on the main branch (the search then continues from it). Local git history
/// when the checkout at `dir` has `start`, else GitHub's commit listing of `repo`.
pub async fn candidate_commits(
    github: Option<&GithubClient>,
    repo: &GithubRepo,
    walk: &Walk<'_>,
    dir: &Path,
) -> Result<(Vec<String>, Option<String>), HistoryError> {
    let (start, max) = (walk.start, walk.max_commits.max(1));
    if matches!(git::rev_parse_commit(dir, start), Ok(Some(_))) {
        let main_ref = [
            format!("origin/{}", walk.main_branch),
            walk.main_branch.to_string(),
        ]
        .into_iter()
        .find(|r| matches!(git::rev_parse_commit(dir, r), Ok(Some(_))));
        let mut from = start.to_string();
        let mut merge_base = None;
        if let Some(main_ref) = &main_ref
            && !matches!(git::is_ancestor(dir, start, main_ref), Ok(true))
            && let Ok(Some(mb)) = git::merge_base(dir, start, main_ref)
        {
            merge_base = Some(mb.clone());
            from = mb;
        }
        let listed =
            git::first_parent_log(dir, &from, max).map_err(|_| HistoryError::LocalHistory)?;
        let mut out = Vec::new();
        if merge_base.is_some() {
            out.push(start.to_string());
        }
        out.extend(listed);
        out.truncate(max);
        return Ok((out, merge_base));
    }
    let Some(gh) = github else {
        return Err(HistoryError::OfflineHistory {
            commit: start.to_string(),
            dir: dir.to_path_buf(),
        });
    };
    let commits = gh.commits(repo, start, max).await?;
    Ok((commits.into_iter().map(|c| c.sha).collect(), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_shas_need_no_checkout() {
        let sha = "ABCDEF0123456789abcdef0123456789ABCDEF01";
        let nowhere = Path::new("/nonexistent/checkout");
        assert_eq!(
            resolve_commit(sha, nowhere).unwrap(),
            sha.to_ascii_lowercase()
        );
        let err = resolve_commit("main", nowhere).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`main` is neither a full commit SHA nor a revision of the checkout at \
             `/nonexistent/checkout`"
        );
        // 39 digits are a revision to look up, not a SHA.
        assert!(resolve_commit(&sha[1..], nowhere).is_err());
    }

    #[test]
    fn offline_without_the_commit_locally_is_an_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let walk = Walk {
            start: "0123456789abcdef0123456789abcdef01234567",
            main_branch: "main",
            max_commits: 5,
        };
        let err = rt
            .block_on(candidate_commits(
                None,
                &GithubRepo::the_rock(),
                &walk,
                Path::new("/nonexistent/checkout"),
            ))
            .unwrap_err();
        assert!(matches!(err, HistoryError::OfflineHistory { .. }), "{err}");
        assert!(
            err.to_string().contains("--offline forbids asking GitHub"),
            "{err}"
        );
    }

    /// Run git for a fixture (tests only; the product runs git through `cairn_fingerprint::git`).
    fn setup(dir: &Path, args: &[&str]) -> String {
        cairn_test_helpers::gitrepo::git(dir, args)
    }

    #[test]
    fn local_history_is_first_parent_and_leaves_side_branches_at_the_merge_base() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        setup(dir, &["init", "-q"]);
        let mut main = Vec::new();
        for i in 0..4 {
            std::fs::write(dir.join("f"), format!("{i}\n")).unwrap();
            setup(dir, &["add", "-A"]);
            setup(dir, &["commit", "-q", "-m", &format!("c{i}")]);
            main.push(setup(dir, &["rev-parse", "HEAD"]));
        }
        setup(dir, &["checkout", "-q", "-b", "feature", &main[1]]);
        setup(dir, &["commit", "-q", "--allow-empty", "-m", "local"]);
        let local = setup(dir, &["rev-parse", "HEAD"]);
        assert_eq!(resolve_commit("feature~1", dir).unwrap(), main[1]);

        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let walk = |start: &str, max| {
            let walk = Walk {
                start,
                main_branch: "main",
                max_commits: max,
            };
            rt.block_on(candidate_commits(None, &GithubRepo::the_rock(), &walk, dir))
                .unwrap()
        };
        let (commits, merge_base) = walk(&main[3], 3);
        assert_eq!(commits, [main[3].as_str(), &main[2], &main[1]]);
        assert_eq!(merge_base, None);
        let (commits, merge_base) = walk(&local, 10);
        assert_eq!(commits, [local.as_str(), &main[1], &main[0]]);
        assert_eq!(merge_base.as_ref(), Some(&main[1]));
        // The bound counts the start too.
        let (commits, _) = walk(&local, 2);
        assert_eq!(commits, [local.as_str(), &main[1]]);
    }
}
