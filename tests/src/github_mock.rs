//! A local stand-in for the GitHub REST API endpoints `cairn find` uses, on `127.0.0.1:0`: workflow
//! runs by `head_sha` (paginated with `Link` headers, newest first as GitHub lists them), one run by
//! id, a commit listing, and a rate-limit mode answering 403 with `x-ratelimit-remaining: 0`.
//!
//! It speaks just enough HTTP/1.1: one GET per connection (`Connection: close`), requests answered
//! one at a time on one thread. It records every request (path and `Authorization` header) so tests
//! can count pages and check authentication. Dropping the handle stops the thread.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

/// A workflow run the mock serves.
#[derive(Debug, Clone)]
pub struct MockRun {
    /// Run id.
    pub id: u64,
    /// Commit it built.
    pub head_sha: String,
    /// `completed`, `in_progress`, ...
    pub status: String,
    /// `success`, `failure`, ... (`None` while running).
    pub conclusion: Option<String>,
    /// RFC 3339 creation time (orders runs newest first).
    pub created_at: String,
    /// Head repository for pull requests from forks (`None` = the repository itself).
    pub head_repo: Option<String>,
}

impl MockRun {
    /// A successful completed run of `head_sha` created at `2026-01-01T00:00:00Z` plus `id` seconds.
    pub fn success(id: u64, head_sha: &str) -> MockRun {
        MockRun {
            id,
            head_sha: head_sha.to_string(),
            status: "completed".into(),
            conclusion: Some("success".into()),
            created_at: created_at(id),
            head_repo: None,
        }
    }

    /// A completed run with `conclusion`.
    pub fn concluded(id: u64, head_sha: &str, conclusion: &str) -> MockRun {
        MockRun {
            conclusion: Some(conclusion.into()),
            ..MockRun::success(id, head_sha)
        }
    }
}

fn created_at(id: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(1_767_225_600 + (id % 10_000_000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// One request the mock received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Path and query.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    /// (repo, workflow file) → runs.
    runs: BTreeMap<(String, String), Vec<MockRun>>,
    /// repo → commit → parents.
    commits: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// Unix time of the reset while rate limiting is on.
    rate_limited: Option<i64>,
    requests: Vec<Recorded>,
}

/// The running mock; stops when dropped.
#[derive(Debug)]
pub struct GithubMock {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl GithubMock {
    /// Start on `127.0.0.1:0`.
    pub fn start() -> std::io::Result<GithubMock> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = state.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("github-mock".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        if let Ok(stream) = conn {
                            // A broken client connection only loses that request.
                            let _ = serve(stream, addr, &state);
                        }
                    }
                })?
        };
        Ok(GithubMock {
            addr,
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// The base URL to put in `CAIRN_GITHUB_API`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serve `run` among the runs of `workflow` in `repo`.
    pub fn add_run(&self, repo: &str, workflow: &str, run: MockRun) {
        let mut s = self.state.lock().expect("mock state");
        s.runs
            .entry((repo.to_string(), workflow.to_string()))
            .or_default()
            .push(run);
    }

    /// Record a commit of `repo` and its parents (first parent first).
    pub fn add_commit(&self, repo: &str, sha: &str, parents: &[&str]) {
        let mut s = self.state.lock().expect("mock state");
        s.commits.entry(repo.to_string()).or_default().insert(
            sha.to_string(),
            parents.iter().map(|p| p.to_string()).collect(),
        );
    }

    /// Answer every request with a rate-limit error resetting at `reset` (Unix time), or stop.
    pub fn set_rate_limited(&self, reset: Option<i64>) {
        self.state.lock().expect("mock state").rate_limited = reset;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().expect("mock state").requests.clone()
    }
}

impl Drop for GithubMock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, addr: SocketAddr, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    // Headers end at an empty line; a GET has no body. Bounded so a hostile client cannot grow it.
    for _ in 0..200 {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("authorization")
        {
            authorization = Some(v.trim().to_string());
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let response = {
        let mut s = state.lock().expect("mock state");
        s.requests.push(Recorded {
            path: target.to_string(),
            authorization,
        });
        if method != "GET" {
            Response::json(405, json!({"message": "Method Not Allowed"}))
        } else if let Some(reset) = s.rate_limited {
            let mut r = Response::json(
                403,
                json!({
                    "message": "API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests get a higher rate limit.)",
                    "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"
                }),
            );
            r.headers.push(("x-ratelimit-limit".into(), "60".into()));
            r.headers.push(("x-ratelimit-remaining".into(), "0".into()));
            r.headers
                .push(("x-ratelimit-reset".into(), reset.to_string()));
            r
        } else {
            route(&s, addr, target)
        }
    };
    let mut out = stream;
    let reason = match response.status {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Error",
    };
    let body = response.body.to_string();
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n",
        response.status,
        body.len()
    );
    for (k, v) in &response.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body.as_bytes())?;
    out.flush()
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Response {
    fn json(status: u16, body: Value) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body,
        }
    }

    fn not_found() -> Response {
        Response::json(
            404,
            json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}),
        )
    }
}

fn query(target: &str) -> (String, BTreeMap<String, String>) {
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let params = q
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (path.to_string(), params)
}

/// `(items of page, Link header)` for a listing of `total` items.
fn paginate(
    addr: SocketAddr,
    path: &str,
    params: &BTreeMap<String, String>,
    total: usize,
) -> (std::ops::Range<usize>, Option<String>) {
    let per_page: usize = params
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page: usize = params
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let start = ((page - 1) * per_page).min(total);
    let end = (start + per_page).min(total);
    let last = total.div_ceil(per_page).max(1);
    let url = |p: usize| {
        let mut q: Vec<String> = params
            .iter()
            .filter(|(k, _)| k.as_str() != "page")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        q.push(format!("page={p}"));
        format!("http://{addr}{path}?{}", q.join("&"))
    };
    let mut links = Vec::new();
    if page < last {
        links.push(format!("<{}>; rel=\"next\"", url(page + 1)));
        links.push(format!("<{}>; rel=\"last\"", url(last)));
    }
    if page > 1 {
        links.push(format!("<{}>; rel=\"prev\"", url(page - 1)));
        links.push(format!("<{}>; rel=\"first\"", url(1)));
    }
    ((start..end), (!links.is_empty()).then(|| links.join(", ")))
}

fn run_json(repo: &str, workflow: &str, r: &MockRun) -> Value {
    json!({
        "id": r.id,
        "name": "CI",
        "head_sha": r.head_sha,
        "head_branch": "main",
        "status": r.status,
        "conclusion": r.conclusion,
        "html_url": format!("https://github.com/{repo}/actions/runs/{}", r.id),
        "created_at": r.created_at,
        "updated_at": r.created_at,
        "path": format!(".github/workflows/{workflow}"),
        "event": "push",
        "run_attempt": 1,
        "repository": {"full_name": repo},
        "head_repository": {"full_name": r.head_repo.clone().unwrap_or_else(|| repo.to_string())},
    })
}

fn route(s: &State, addr: SocketAddr, target: &str) -> Response {
    let (path, params) = query(target);
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["repos", owner, name, "actions", "workflows", wf, "runs"] => {
            let repo = format!("{owner}/{name}");
            let mut runs: Vec<&MockRun> = s
                .runs
                .get(&(repo.clone(), wf.to_string()))
                .map(|v| v.iter().collect())
                .unwrap_or_default();
            if let Some(sha) = params.get("head_sha") {
                runs.retain(|r| &r.head_sha == sha);
            }
            runs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
            let (range, link) = paginate(addr, &path, &params, runs.len());
            let page: Vec<Value> = runs[range].iter().map(|r| run_json(&repo, wf, r)).collect();
            let mut resp = Response::json(
                200,
                json!({"total_count": runs.len(), "workflow_runs": page}),
            );
            if let Some(l) = link {
                resp.headers.push(("link".into(), l));
            }
            resp
        }
        ["repos", owner, name, "actions", "runs", id] => {
            let repo = format!("{owner}/{name}");
            for ((r, wf), runs) in &s.runs {
                if r != &repo {
                    continue;
                }
                if let Some(run) = runs.iter().find(|run| run.id.to_string() == *id) {
                    return Response::json(200, run_json(&repo, wf, run));
                }
            }
            Response::not_found()
        }
        ["repos", owner, name, "commits"] => {
            let repo = format!("{owner}/{name}");
            let Some(graph) = s.commits.get(&repo) else {
                return Response::not_found();
            };
            let Some(start) = params.get("sha") else {
                return Response::json(422, json!({"message": "sha is required by this mock"}));
            };
            if !graph.contains_key(start) {
                return Response::json(
                    422,
                    json!({"message": format!("No commit found for SHA: {start}")}),
                );
            }
            // First-parent walk: the mock's histories are linear where it matters.
            let mut chain = Vec::new();
            let mut cur = Some(start.clone());
            while let Some(sha) = cur {
                if chain.len() > 100_000 {
                    break;
                }
                let parents = graph.get(&sha).cloned().unwrap_or_default();
                chain.push(json!({
                    "sha": sha,
                    "commit": {"message": "commit"},
                    "parents": parents.iter().map(|p| json!({"sha": p})).collect::<Vec<_>>(),
                }));
                cur = parents.first().filter(|p| graph.contains_key(*p)).cloned();
            }
            let (range, link) = paginate(addr, &path, &params, chain.len());
            let mut resp = Response::json(200, Value::Array(chain[range].to_vec()));
            if let Some(l) = link {
                resp.headers.push(("link".into(), l));
            }
            resp
        }
        _ => Response::not_found(),
    }
}
