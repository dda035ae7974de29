//! The GitHub REST API as `cairn find` needs it: workflow runs of a commit (every page), a single run
//! by id, and a branch's commit history; plus the repository conventions around it (which workflow a
//! repository's CI uses, which repository a checkout's `origin` remote names).
//!
//! Authentication: `GITHUB_TOKEN`, else `gh auth token` when the GitHub CLI is installed and logged
//! in, else anonymous (60 requests an hour). A rate-limit answer is the typed
//! [`GithubError::RateLimited`] carrying the reset time. The API base URL is `https://api.github.com`
//! unless `CAIRN_GITHUB_API` overrides it (tests point it at a local server).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cairn_fingerprint::layout::GithubRepo;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Environment variable overriding the API base URL.
pub const API_ENV: &str = "CAIRN_GITHUB_API";
/// The public API.
pub const DEFAULT_API: &str = "https://api.github.com";
/// GitHub's page size limit, used for every paginated call.
pub const PER_PAGE: usize = 100;
/// Pages followed at most per call: a server that always says "next" must not loop us forever.
const MAX_PAGES: usize = 1000;

/// What can go wrong talking to GitHub.
#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    /// GitHub refused the request for rate limiting (403/429 with no requests left, or `retry-after`).
    #[error(
        "github api rate limit exceeded on `{url}` ({auth}){}{}; hint: {}",
        reset.map(|t| format!(", resets at {}", t.format(&Rfc3339).unwrap_or_default())).unwrap_or_default(),
        retry_after.map(|s| format!(", retry after {s} s")).unwrap_or_default(),
        if *authenticated { "wait for the reset, or use another token" } else { "set `GITHUB_TOKEN` or run `gh auth login`; anonymous requests are limited to 60 an hour" }
    )]
    RateLimited {
        /// The request.
        url: String,
        /// When the limit resets (`x-ratelimit-reset`), if the server said.
        reset: Option<OffsetDateTime>,
        /// Seconds to wait (`retry-after`), if the server said.
        retry_after: Option<u64>,
        /// Whether the request carried a token.
        authenticated: bool,
        /// How the request was authenticated, for the message.
        auth: String,
    },
    /// Any other non-success answer.
    #[error("github api `{url}` answered {status}: {message}")]
    Status {
        /// The request.
        url: String,
        /// HTTP status code.
        status: u16,
        /// GitHub's `message`, or the start of the body.
        message: String,
    },
    /// The request did not complete (connection, TLS, timeout).
    #[error(
        "github api request `{url}` failed: {source}; hint: GitHub is not reachable from here: \
         `--offline` answers from Cairn's records alone (`--fallback --offline` walks the local git \
         history over them), or point CAIRN_GITHUB_API at a reachable API"
    )]
    Http {
        /// The request.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The answer is not the JSON the endpoint documents.
    #[error("github api `{url}` returned unexpected json: {source}")]
    Decode {
        /// The request.
        url: String,
        /// The parser error.
        #[source]
        source: serde_json::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot set up the github api client: {0}")]
    Setup(#[source] reqwest::Error),
}

/// Where the token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthSource {
    /// The `GITHUB_TOKEN` environment variable.
    Env,
    /// `gh auth token`.
    GhCli,
    /// No token.
    Anonymous,
}

impl std::fmt::Display for AuthSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthSource::Env => "authenticated with `GITHUB_TOKEN`",
            AuthSource::GhCli => "authenticated with `gh auth token`",
            AuthSource::Anonymous => "anonymous",
        })
    }
}

/// A repository reference inside a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoRef {
    /// `OWNER/REPO`.
    pub full_name: String,
}

/// A workflow run, with the fields Cairn reads (GitHub sends many more; they are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRun {
    /// The run id.
    pub id: u64,
    /// Workflow name.
    #[serde(default)]
    pub name: Option<String>,
    /// The commit the run built.
    pub head_sha: String,
    /// Branch of the push or pull request head.
    #[serde(default)]
    pub head_branch: Option<String>,
    /// `queued`, `in_progress`, `completed`, ...
    #[serde(default)]
    pub status: Option<String>,
    /// `success`, `failure`, `cancelled`, ... (null until completed).
    #[serde(default)]
    pub conclusion: Option<String>,
    /// The run's web page.
    #[serde(default)]
    pub html_url: String,
    /// RFC 3339 creation time.
    #[serde(default)]
    pub created_at: String,
    /// RFC 3339 last update time.
    #[serde(default)]
    pub updated_at: String,
    /// `.github/workflows/{file}`.
    #[serde(default)]
    pub path: Option<String>,
    /// `push`, `pull_request`, `schedule`, ...
    #[serde(default)]
    pub event: Option<String>,
    /// The repository the workflow ran in.
    #[serde(default)]
    pub repository: Option<RepoRef>,
    /// The head repository (differs from `repository` for pull requests from forks).
    #[serde(default)]
    pub head_repository: Option<RepoRef>,
}

impl WorkflowRun {
    /// `completed` with conclusion `success` (TheRock's `--require-successful-run`).
    pub fn is_successful(&self) -> bool {
        self.status.as_deref() == Some("completed") && self.conclusion.as_deref() == Some("success")
    }

    /// The workflow file name, from `path`.
    pub fn workflow_file(&self) -> Option<&str> {
        self.path
            .as_deref()
            .map(|p| p.rsplit('/').next().unwrap_or(p))
    }
}

#[derive(Debug, Deserialize)]
struct RunsPage {
    #[serde(default)]
    total_count: Option<usize>,
    workflow_runs: Vec<WorkflowRun>,
}

/// A parent reference in a commit listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShaRef {
    /// Commit SHA.
    pub sha: String,
}

/// A commit of a branch listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    /// Commit SHA.
    pub sha: String,
    /// Parents, first parent first.
    #[serde(default)]
    pub parents: Vec<ShaRef>,
}

/// A GitHub API client (async; shares one connection pool).
#[derive(Debug, Clone)]
pub struct GithubClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    auth: AuthSource,
}

impl GithubClient {
    /// A client for `base` (no trailing `/` needed) with an optional token.
    pub fn new(
        base: &str,
        token: Option<String>,
        auth: AuthSource,
    ) -> Result<GithubClient, GithubError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(GithubError::Setup)?;
        let token = token.filter(|t| !t.is_empty());
        let auth = if token.is_some() {
            auth
        } else {
            AuthSource::Anonymous
        };
        Ok(GithubClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
            auth,
        })
    }

    /// The client the environment asks for: base URL from `CAIRN_GITHUB_API`, token from
    /// `GITHUB_TOKEN`, else `gh auth token`, else none.
    pub fn from_env() -> Result<GithubClient, GithubError> {
        let base = std::env::var(API_ENV)
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_API.to_string());
        let (token, auth) = token_from_env();
        GithubClient::new(&base, token, auth)
    }

    /// How requests are authenticated.
    pub fn auth(&self) -> AuthSource {
        self.auth
    }

    /// The API base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Every run of `workflow` in `repo` that built `head_sha`, newest first (all pages).
    pub async fn runs_for_commit(
        &self,
        repo: &GithubRepo,
        workflow: &str,
        head_sha: &str,
    ) -> Result<Vec<WorkflowRun>, GithubError> {
        let mut url = format!(
            "{}/repos/{repo}/actions/workflows/{workflow}/runs?head_sha={head_sha}&per_page={PER_PAGE}&page=1",
            self.base
        );
        let mut runs = Vec::new();
        for page in 1..=MAX_PAGES {
            let (body, next) = self.get(&url).await?;
            let parsed: RunsPage = decode(&url, &body)?;
            let n = parsed.workflow_runs.len();
            runs.extend(parsed.workflow_runs);
            let done = n == 0 || parsed.total_count.is_some_and(|t| runs.len() >= t);
            match next {
                Some(next) if !done => url = next,
                // No `Link` header: fall back to page numbers while pages come back full.
                None if !done && n == PER_PAGE => {
                    url = set_page(&url, page + 1);
                }
                _ => break,
            }
        }
        runs.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        runs.dedup_by_key(|r| r.id);
        Ok(runs)
    }

    /// One run by id.
    pub async fn run(&self, repo: &GithubRepo, run_id: &str) -> Result<WorkflowRun, GithubError> {
        let url = format!("{}/repos/{repo}/actions/runs/{run_id}", self.base);
        let (body, _) = self.get(&url).await?;
        decode(&url, &body)
    }

    /// Up to `max` commits of the history reachable from `sha` (a SHA or branch), newest first, as
    /// GitHub lists them (all pages up to `max`).
    pub async fn commits(
        &self,
        repo: &GithubRepo,
        sha: &str,
        max: usize,
    ) -> Result<Vec<CommitInfo>, GithubError> {
        let per_page = max.clamp(1, PER_PAGE);
        let mut url = format!(
            "{}/repos/{repo}/commits?sha={sha}&per_page={per_page}&page=1",
            self.base
        );
        let mut out: Vec<CommitInfo> = Vec::new();
        for page in 1..=MAX_PAGES {
            let (body, next) = self.get(&url).await?;
            let commits: Vec<CommitInfo> = decode(&url, &body)?;
            let n = commits.len();
            out.extend(commits);
            if out.len() >= max || n == 0 {
                break;
            }
            match next {
                Some(next) => url = next,
                None if n == per_page => url = set_page(&url, page + 1),
                None => break,
            }
        }
        out.truncate(max);
        Ok(out)
    }

    /// GET `url`; the body and the `Link: rel="next"` URL. Rate limits and errors become typed errors.
    async fn get(&self, url: &str) -> Result<(Vec<u8>, Option<String>), GithubError> {
        let mut req = self
            .http
            .get(url)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let http_err = |source| GithubError::Http {
            url: url.to_string(),
            source,
        };
        let resp = req.send().await.map_err(http_err)?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let remaining = header("x-ratelimit-remaining");
        let reset = header("x-ratelimit-reset")
            .and_then(|s| s.trim().parse::<i64>().ok())
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok());
        let retry_after = header("retry-after").and_then(|s| s.trim().parse::<u64>().ok());
        let next = header("link").and_then(|l| next_link(&l));
        let body = resp.bytes().await.map_err(http_err)?.to_vec();
        if (status == 403 || status == 429)
            && (remaining.as_deref() == Some("0") || retry_after.is_some() || status == 429)
        {
            return Err(GithubError::RateLimited {
                url: url.to_string(),
                reset,
                retry_after,
                authenticated: self.token.is_some(),
                auth: self.auth.to_string(),
            });
        }
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v.get("message")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
            return Err(GithubError::Status {
                url: url.to_string(),
                status,
                message,
            });
        }
        Ok((body, next))
    }
}

fn decode<T: serde::de::DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, GithubError> {
    serde_json::from_slice(body).map_err(|source| GithubError::Decode {
        url: url.to_string(),
        source,
    })
}

/// The token the environment provides: `GITHUB_TOKEN`, else `gh auth token` (only when `gh` is
/// installed and logged in), else none.
pub fn token_from_env() -> (Option<String>, AuthSource) {
    if let Ok(t) = std::env::var("GITHUB_TOKEN")
        && !t.trim().is_empty()
    {
        return (Some(t.trim().to_string()), AuthSource::Env);
    }
    // A missing `gh`, or one that is not logged in, just means anonymous access.
    if let Ok(out) = Command::new("gh").args(["auth", "token"]).output()
        && out.status.success()
    {
        let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !t.is_empty() {
            return (Some(t), AuthSource::GhCli);
        }
    }
    (None, AuthSource::Anonymous)
}

/// The `rel="next"` target of an RFC 8288 `Link` header, as GitHub sends it.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let target = pieces.next()?.trim();
        let is_next = pieces.any(|p| {
            let p = p.trim();
            p == "rel=\"next\"" || p == "rel=next"
        });
        (is_next && target.starts_with('<') && target.ends_with('>'))
            .then(|| target[1..target.len() - 1].to_string())
    })
}

/// `url` with its `page=` query parameter set to `page`.
fn set_page(url: &str, page: usize) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("page="))
        .map(str::to_string)
        .collect();
    params.push(format!("page={page}"));
    format!("{base}?{}", params.join("&"))
}

/// The workflow file a repository's CI publishes artifacts from: `multi_arch_ci.yml` for
/// `ROCm/TheRock`, `therock-ci.yml` for `ROCm/rocm-libraries` and `ROCm/rocm-systems`, else
/// `multi_arch_ci.yml`.
pub fn default_workflow(repo: &GithubRepo) -> &'static str {
    let full = format!("{repo}").to_ascii_lowercase();
    match full.as_str() {
        "rocm/rocm-libraries" | "rocm/rocm-systems" => "therock-ci.yml",
        _ => "multi_arch_ci.yml",
    }
}

/// The GitHub repository a remote URL names: `git@github.com:O/R.git`, `ssh://git@github.com/O/R`,
/// `https://github.com/O/R(.git)`, `git://github.com/O/R`. Local paths and other hosts give `None`.
pub fn parse_remote_url(url: &str) -> Option<GithubRepo> {
    let url = url.trim();
    let path = if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(
            scheme,
            "https" | "http" | "ssh" | "git" | "git+ssh" | "ssh+git"
        ) {
            return None;
        }
        let (authority, path) = rest.split_once('/')?;
        let host = authority.rsplit('@').next()?;
        let host = host.split(':').next()?;
        if !host.eq_ignore_ascii_case("github.com") && !host.eq_ignore_ascii_case("www.github.com")
        {
            return None;
        }
        path
    } else {
        // scp-like: `[user@]github.com:O/R.git`.
        let (authority, path) = url.split_once(':')?;
        let host = authority.rsplit('@').next()?;
        if !host.eq_ignore_ascii_case("github.com") {
            return None;
        }
        path
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let mut parts = path.split('/');
    let (owner, name) = (parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    format!("{owner}/{name}").parse().ok()
}

/// The repository of the checkout at `dir`, from its `origin` remote; `None` when `dir` is not a
/// git work tree or `origin` is not a GitHub URL.
pub fn detect_repo(dir: &Path) -> Option<GithubRepo> {
    parse_remote_url(&cairn_fingerprint::git::remote_url(dir, "origin").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> Option<GithubRepo> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn remote_urls_parse() {
        let cases = [
            ("git@github.com:ROCm/TheRock.git", repo("ROCm/TheRock")),
            ("git@github.com:ROCm/TheRock", repo("ROCm/TheRock")),
            (
                "ssh://git@github.com/ROCm/rocm-libraries",
                repo("ROCm/rocm-libraries"),
            ),
            (
                "ssh://git@github.com:22/ROCm/rocm-systems.git",
                repo("ROCm/rocm-systems"),
            ),
            ("https://github.com/ROCm/TheRock.git", repo("ROCm/TheRock")),
            ("https://github.com/ROCm/TheRock/", repo("ROCm/TheRock")),
            (
                "https://user:tok@github.com/me/TheRock.git\n",
                repo("me/TheRock"),
            ),
            ("git://github.com/ROCm/TheRock", repo("ROCm/TheRock")),
            ("/tmp/upstream/TheRock", None),
            ("file:///tmp/TheRock", None),
            ("https://gitlab.com/ROCm/TheRock.git", None),
            ("https://github.com/ROCm", None),
            ("https://github.com/ROCm/TheRock/tree/main", None),
            ("git@example.com:ROCm/TheRock.git", None),
        ];
        for (url, want) in cases {
            assert_eq!(parse_remote_url(url), want, "{url}");
        }
    }

    #[test]
    fn default_workflows_per_repo() {
        let wf = |s: &str| default_workflow(&s.parse().unwrap());
        assert_eq!(wf("ROCm/TheRock"), "multi_arch_ci.yml");
        assert_eq!(wf("ROCm/rocm-libraries"), "therock-ci.yml");
        assert_eq!(wf("ROCm/rocm-systems"), "therock-ci.yml");
        assert_eq!(wf("someone/fork"), "multi_arch_ci.yml");
    }

    #[test]
    fn link_headers() {
        let link = r#"<https://api.github.com/x?page=2>; rel="next", <https://api.github.com/x?page=5>; rel="last""#;
        assert_eq!(
            next_link(link).as_deref(),
            Some("https://api.github.com/x?page=2")
        );
        let last = r#"<https://api.github.com/x?page=1>; rel="prev", <https://api.github.com/x?page=1>; rel="first""#;
        assert_eq!(next_link(last), None);
        assert_eq!(
            set_page("http://h/r?head_sha=a&per_page=100&page=1", 3),
            "http://h/r?head_sha=a&per_page=100&page=3"
        );
    }

    #[test]
    fn rate_limit_message_names_reset_and_hint() {
        let e = GithubError::RateLimited {
            url: "http://h/x".into(),
            reset: OffsetDateTime::from_unix_timestamp(1_800_000_000).ok(),
            retry_after: None,
            authenticated: false,
            auth: AuthSource::Anonymous.to_string(),
        };
        let msg = e.to_string();
        assert!(
            msg.contains("rate limit exceeded on `http://h/x` (anonymous)"),
            "{msg}"
        );
        assert!(msg.contains("resets at 2027-01-15T08:00:00Z"), "{msg}");
        assert!(msg.contains("GITHUB_TOKEN"), "{msg}");
    }
}
