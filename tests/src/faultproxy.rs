//! A fault-injecting HTTP proxy for S3 tests: it sits on 127.0.0.1 between a client and the S3 test
//! server and, for chosen requests, breaks the response the way real networks and servers do.
//!
//! Vocabulary: a *rule* says which requests (by HTTP method) get which [`Fault`], for the next N matching
//! requests or until cleared; rules can be added and cleared while requests flow. Requests that match no
//! rule pass through unchanged. The proxy counts requests by method and the faults it served.
//! Each request is forwarded on a fresh upstream connection with `Connection: close`, and the whole
//! upstream response is buffered before it is replayed (test objects are a few MB), so a fault can cut
//! the body at a known offset. The proxy stops, and drops every connection, when the handle is dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Most connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 64;
/// Largest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// A way to break one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Send the headers and half the body (half the headers if there is no body), then reset the
    /// connection (TCP RST).
    Reset,
    /// Send the headers and half the body (half the headers if there is no body), then close cleanly
    /// although `Content-Length` promised more.
    Truncate,
    /// Answer with this status and an S3 XML error (`InternalError` for 500, `ServiceUnavailable` for
    /// 503, `ServiceError` otherwise) without contacting the server.
    Status(u16),
    /// Answer `503 SlowDown`, S3's request-rate throttle.
    SlowDown,
    /// Send the headers and half the body (half the headers if there is no body), then send nothing
    /// for this long (then close).
    Stall(Duration),
    /// Send nothing at all for this long (then close).
    StallHeaders(Duration),
}

#[derive(Debug)]
struct Rule {
    /// Upper-case HTTP method, or `None` for every method.
    method: Option<String>,
    /// Matching requests still to fault; `None` until cleared.
    remaining: Option<usize>,
    fault: Fault,
}

/// State shared by the handle and the connection tasks.
#[derive(Debug, Default)]
struct Shared {
    /// Guarded by a std mutex: held only to pick a fault or bump a counter, never across an await.
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    rules: Vec<Rule>,
    requests: BTreeMap<String, u64>,
    signed_requests: u64,
    faults_served: u64,
}

impl Shared {
    /// Counts the request and takes the fault of the first matching rule, if any.
    fn on_request(&self, method: &str, signed: bool) -> Option<Fault> {
        let mut inner = self.inner.lock().expect("fault proxy state poisoned");
        *inner.requests.entry(method.to_owned()).or_default() += 1;
        inner.signed_requests += u64::from(signed);
        let rule = inner.rules.iter_mut().find(|r| {
            r.method.as_deref().is_none_or(|m| m == method) && r.remaining.is_none_or(|n| n > 0)
        })?;
        if let Some(n) = &mut rule.remaining {
            *n -= 1;
        }
        let fault = rule.fault.clone();
        inner.faults_served += 1;
        Some(fault)
    }
}

/// A running fault proxy; dropping it stops the proxy and its connections.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// The accept loop; it owns the connection tasks, so aborting it aborts them too.
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` in front of `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let authority = upstream
            .strip_prefix("http://")
            .unwrap_or(upstream)
            .trim_end_matches('/');
        let upstream: SocketAddr = tokio::net::lookup_host(authority)
            .await?
            .next()
            .ok_or_else(|| {
                std::io::Error::other(format!("cannot resolve upstream `{authority}`"))
            })?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(accept_loop(listener, upstream, shared.clone()));
        Ok(Self { addr, shared, task })
    }

    /// The endpoint clients should use, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Faults the next `times` requests with `method` (`"GET"`, `"PUT"`, ...; `"*"` for any).
    pub fn inject(&self, method: &str, times: usize, fault: Fault) {
        self.add_rule(method, Some(times), fault);
    }

    /// Faults every request with `method` (`"*"` for any) until [`FaultProxy::clear`].
    pub fn inject_always(&self, method: &str, fault: Fault) {
        self.add_rule(method, None, fault);
    }

    fn add_rule(&self, method: &str, remaining: Option<usize>, fault: Fault) {
        let method = (method != "*").then(|| method.to_ascii_uppercase());
        self.shared
            .inner
            .lock()
            .expect("fault proxy state poisoned")
            .rules
            .push(Rule {
                method,
                remaining,
                fault,
            });
    }

    /// Removes every rule: requests pass through again.
    pub fn clear(&self) {
        self.shared
            .inner
            .lock()
            .expect("fault proxy state poisoned")
            .rules
            .clear();
    }

    /// Requests seen with `method` (faulted or not).
    pub fn requests(&self, method: &str) -> u64 {
        let inner = self
            .shared
            .inner
            .lock()
            .expect("fault proxy state poisoned");
        inner
            .requests
            .get(&method.to_ascii_uppercase())
            .copied()
            .unwrap_or(0)
    }

    /// Requests that carried an `Authorization` header (signed ones).
    pub fn signed_requests(&self) -> u64 {
        self.shared
            .inner
            .lock()
            .expect("fault proxy state poisoned")
            .signed_requests
    }

    /// Faults served so far.
    pub fn faults_served(&self) -> u64 {
        self.shared
            .inner
            .lock()
            .expect("fault proxy state poisoned")
            .faults_served
    }

    /// Zeroes the request and fault counters.
    pub fn reset_counts(&self) {
        let mut inner = self
            .shared
            .inner
            .lock()
            .expect("fault proxy state poisoned");
        inner.requests.clear();
        inner.signed_requests = 0;
        inner.faults_served = 0;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    // Dropped with this task on abort, which aborts every connection task.
    let mut conns = JoinSet::new();
    loop {
        while conns.len() >= MAX_CONNECTIONS {
            conns.join_next().await;
        }
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                conns.spawn(serve(client, upstream, shared.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// One parsed HTTP message head.
struct Head {
    raw: Vec<u8>,
    first_line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> Option<usize> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }
}

/// Reads one message head (through the blank line) from `stream`, keeping extra bytes in `buf`.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Head>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let raw: Vec<u8> = buf.drain(..end + 4).collect();
            let text = String::from_utf8_lossy(&raw[..end]).into_owned();
            let mut lines = text.split("\r\n");
            let first_line = lines.next().unwrap_or_default().to_owned();
            let headers = lines
                .filter_map(|l| {
                    l.split_once(':')
                        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                })
                .collect();
            return Ok(Some(Head {
                raw,
                first_line,
                headers,
            }));
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("message head too large"));
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads exactly `len` body bytes, starting with those already in `buf`.
async fn read_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    len: usize,
) -> std::io::Result<Vec<u8>> {
    while buf.len() < len {
        let mut chunk = vec![0u8; (len - buf.len()).min(256 * 1024)];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "request body ended early",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf.drain(..len).collect())
}

/// Serves requests on one client connection until it closes or a fault ends it.
async fn serve(mut client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    loop {
        let Ok(Some(head)) = read_head(&mut client, &mut buf).await else {
            return;
        };
        let method = head
            .first_line
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        if head
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            // The S3 client sends sized bodies; a chunked one means the client changed, so say so loudly.
            let _ = client
                .write_all(&error_response(
                    501,
                    "NotImplemented",
                    "fault proxy: chunked request",
                ))
                .await;
            return;
        }
        let Ok(body) = read_body(&mut client, &mut buf, head.content_length().unwrap_or(0)).await
        else {
            return;
        };
        let fault = shared.on_request(&method, head.header("authorization").is_some());
        let client_closes = head
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));

        match &fault {
            Some(Fault::Status(code)) => {
                let s3_code = match code {
                    500 => "InternalError",
                    503 => "ServiceUnavailable",
                    _ => "ServiceError",
                };
                if client
                    .write_all(&error_response(
                        *code,
                        s3_code,
                        "injected by the fault proxy",
                    ))
                    .await
                    .is_err()
                {
                    return;
                }
                if client_closes {
                    let _ = client.shutdown().await;
                    return;
                }
                continue;
            }
            Some(Fault::SlowDown) => {
                if client
                    .write_all(&error_response(
                        503,
                        "SlowDown",
                        "Please reduce your request rate.",
                    ))
                    .await
                    .is_err()
                {
                    return;
                }
                if client_closes {
                    let _ = client.shutdown().await;
                    return;
                }
                continue;
            }
            Some(Fault::StallHeaders(d)) => {
                tokio::time::sleep(*d).await;
                return;
            }
            _ => {}
        }

        let Ok((resp_head, resp_body)) = forward(upstream, &head, &body).await else {
            let _ = client
                .write_all(&error_response(
                    502,
                    "BadGateway",
                    "fault proxy: upstream failed",
                ))
                .await;
            return;
        };
        // A HEAD response announces a length but has no body.
        let body_len = if method == "HEAD" { 0 } else { resp_body.len() };
        // Where a broken response stops: half-way through the body, or through the head when there is
        // no body (a part upload's empty 200), so the client never sees a complete response.
        let mut partial = resp_head.raw.clone();
        if body_len > 0 {
            partial.extend_from_slice(&resp_body[..body_len / 2]);
        } else {
            partial.truncate(partial.len() / 2);
        }
        match fault {
            Some(Fault::Reset) => {
                let _ = client.write_all(&partial).await;
                let _ = client.flush().await;
                // Give the client time to read what was sent, so the reset lands mid-response.
                tokio::time::sleep(Duration::from_millis(50)).await;
                // SO_LINGER 0 turns close into a TCP RST; with a zero timeout close never blocks, which
                // is what tokio's deprecation of `set_linger` warns about.
                #[allow(deprecated)]
                let _ = client.set_linger(Some(Duration::ZERO));
                return;
            }
            Some(Fault::Truncate) => {
                let _ = client.write_all(&partial).await;
                let _ = client.shutdown().await;
                return;
            }
            Some(Fault::Stall(d)) => {
                let _ = client.write_all(&partial).await;
                let _ = client.flush().await;
                tokio::time::sleep(d).await;
                return;
            }
            _ => {
                if client.write_all(&resp_head.raw).await.is_err()
                    || client.write_all(&resp_body).await.is_err()
                {
                    return;
                }
                // Without a length the body was delimited by the upstream's close; do the same.
                let delimited = resp_head.content_length().is_some()
                    || resp_head.header("transfer-encoding").is_some()
                    || method == "HEAD";
                if !delimited || client_closes {
                    let _ = client.shutdown().await;
                    return;
                }
            }
        }
    }
}

/// Sends the request upstream on a fresh connection and reads the whole response.
async fn forward(
    upstream: SocketAddr,
    head: &Head,
    body: &[u8],
) -> std::io::Result<(Head, Vec<u8>)> {
    let mut conn = TcpStream::connect(upstream).await?;
    let mut out = format!("{}\r\n", head.first_line).into_bytes();
    for (name, value) in &head.headers {
        if !name.eq_ignore_ascii_case("connection") {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(body);
    conn.write_all(&out).await?;
    let mut buf = Vec::new();
    let resp = read_head(&mut conn, &mut buf).await?.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "upstream sent no response",
        )
    })?;
    // The upstream closes after one response (`Connection: close`), so the rest of the stream is the body.
    conn.read_to_end(&mut buf).await?;
    let mut resp = resp;
    // The client keeps its connection to the proxy; drop the upstream's `Connection: close`.
    resp.headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case("connection"));
    let mut raw = format!("{}\r\n", resp.first_line).into_bytes();
    for (name, value) in &resp.headers {
        raw.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    resp.raw = raw;
    Ok((resp, buf))
}

/// An S3-style XML error response.
fn error_response(status: u16, code: &str, message: &str) -> Vec<u8> {
    let reason = match status {
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
         <RequestId>cairn-fault-proxy</RequestId></Error>"
    );
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot upstream that answers every request with `body`.
    async fn upstream(body: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    if read_head(&mut s, &mut buf).await.unwrap().is_some() {
                        let head =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                        let _ = s.write_all(head.as_bytes()).await;
                        let _ = s.write_all(body).await;
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    async fn get(endpoint: &str) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(endpoint.trim_start_matches("http://")).await?;
        s.write_all(b"GET /b/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn passes_through_and_counts() {
        let proxy = FaultProxy::start(&upstream(b"0123456789").await)
            .await
            .unwrap();
        let resp = get(&proxy.endpoint()).await.unwrap();
        assert!(resp.starts_with(b"HTTP/1.1 200 OK") && resp.ends_with(b"0123456789"));
        assert_eq!(
            (
                proxy.requests("GET"),
                proxy.requests("PUT"),
                proxy.faults_served()
            ),
            (1, 0, 0)
        );
    }

    #[tokio::test]
    async fn faults_the_first_n_then_passes() {
        let proxy = FaultProxy::start(&upstream(b"0123456789").await)
            .await
            .unwrap();
        proxy.inject("GET", 1, Fault::Truncate);
        proxy.inject("GET", 1, Fault::SlowDown);
        let truncated = get(&proxy.endpoint()).await.unwrap();
        assert!(truncated.starts_with(b"HTTP/1.1 200 OK") && truncated.ends_with(b"\r\n\r\n01234"));
        let slow = String::from_utf8(get(&proxy.endpoint()).await.unwrap()).unwrap();
        assert!(
            slow.starts_with("HTTP/1.1 503") && slow.contains("<Code>SlowDown</Code>"),
            "{slow}"
        );
        assert!(
            get(&proxy.endpoint())
                .await
                .unwrap()
                .ends_with(b"0123456789")
        );
        assert_eq!((proxy.requests("GET"), proxy.faults_served()), (3, 2));
    }

    #[tokio::test]
    async fn reset_is_a_connection_reset() {
        let proxy = FaultProxy::start(&upstream(b"0123456789").await)
            .await
            .unwrap();
        proxy.inject_always("*", Fault::Reset);
        let err = get(&proxy.endpoint()).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        proxy.clear();
        assert!(
            get(&proxy.endpoint())
                .await
                .unwrap()
                .ends_with(b"0123456789")
        );
    }

    #[tokio::test]
    async fn dropping_the_proxy_stops_it() {
        let proxy = FaultProxy::start(&upstream(b"x").await).await.unwrap();
        let endpoint = proxy.endpoint();
        drop(proxy);
        // The abort lands when the runtime next polls the accept loop; give it a few chances.
        let mut stopped = false;
        for _ in 0..100 {
            if get(&endpoint).await.is_err() {
                stopped = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(stopped, "proxy still answers after drop");
    }
}
