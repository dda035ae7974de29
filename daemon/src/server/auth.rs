//! Access control of the TCP listener: a shared bearer token. The Unix socket's file mode is its
//! access control (see `listen.rs`); TCP has none of its own, so every TCP request must carry
//! `authorization: Bearer <token>`, checked by [`BearerAuth`], a tonic interceptor applied to the TCP
//! listener only.
//!
//! The token comes from `CAIRN_TCP_TOKEN` (the token itself) or from `tcp_token_file` /
//! `--tcp-token-file` (a file holding it). Without one the daemon refuses to serve TCP, unless
//! `--tcp-insecure` is given and the address is loopback. The token never appears in a log line or an
//! error message: refusals say only that the token is missing or wrong.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::service::ServiceError;

/// Shortest accepted token: a guessable token is no access control.
pub const MIN_TOKEN_LEN: usize = 16;

/// Checks `authorization: Bearer <token>` on every request.
#[derive(Clone)]
pub struct BearerAuth {
    token: Arc<[u8]>,
}

impl std::fmt::Debug for BearerAuth {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth").finish_non_exhaustive()
    }
}

impl BearerAuth {
    /// An interceptor accepting exactly `token` (surrounding whitespace is not part of it).
    ///
    /// # Errors
    /// When the token is shorter than [`MIN_TOKEN_LEN`] or contains characters an HTTP header cannot
    /// carry.
    pub fn new(token: &str) -> Result<BearerAuth> {
        let token = token.trim();
        if token.len() < MIN_TOKEN_LEN {
            bail!("the TCP token must be at least {MIN_TOKEN_LEN} characters long");
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("the TCP token may only contain printable ASCII without spaces");
        }
        Ok(BearerAuth {
            token: token.as_bytes().into(),
        })
    }

    /// Whether `header` (the `authorization` value) carries the token. Compares in time independent
    /// of where the first difference is.
    pub fn accepts(&self, header: &[u8]) -> bool {
        let Some(given) = header.strip_prefix(b"Bearer ") else {
            return false;
        };
        given.len() == self.token.len()
            && given
                .iter()
                .zip(self.token.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        match request.metadata().get("authorization") {
            Some(v) if self.accepts(v.as_bytes()) => Ok(request),
            Some(_) => Err(ServiceError::Unauthenticated(
                "the bearer token is wrong; hint: set CAIRN_TOKEN or --token-file to the daemon's TCP token"
                    .into(),
            )
            .into()),
            None => Err(ServiceError::Unauthenticated(
                "this TCP listener requires `authorization: Bearer <token>`; hint: set CAIRN_TOKEN or \
                 --token-file to the daemon's TCP token"
                    .into(),
            )
            .into()),
        }
    }
}

/// A listener's access check: a [`BearerAuth`], or open (the Unix socket, `--tcp-insecure`).
#[derive(Debug, Clone)]
pub struct Access(Option<BearerAuth>);

impl Access {
    /// Checks `auth` when given; lets every request through otherwise.
    pub fn new(auth: Option<BearerAuth>) -> Access {
        Access(auth)
    }
}

impl Interceptor for Access {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        match &mut self.0 {
            Some(auth) => auth.call(request),
            None => Ok(request),
        }
    }
}

/// The TCP token from `env_token` (`CAIRN_TCP_TOKEN`) or else `file`; `None` when neither is set.
///
/// # Errors
/// When the file cannot be read, is readable by other users, or holds an unusable token.
pub fn load_token(env_token: Option<String>, file: Option<&Path>) -> Result<Option<BearerAuth>> {
    if let Some(token) = env_token.filter(|t| !t.trim().is_empty()) {
        return BearerAuth::new(&token)
            .context("CAIRN_TCP_TOKEN is not a usable token")
            .map(Some);
    }
    let Some(path) = file else {
        return Ok(None);
    };
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("reading TCP token file `{}`", path.display()))?;
    if meta.permissions().mode() & 0o004 != 0 {
        bail!(
            "TCP token file `{}` is readable by every user; hint: chmod 600 it",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading TCP token file `{}`", path.display()))?;
    BearerAuth::new(&text)
        .with_context(|| format!("TCP token file `{}`", path.display()))
        .map(Some)
}

/// Whether every address `addr` resolves to is a loopback address.
pub async fn is_loopback(addr: &str) -> bool {
    match tokio::net::lookup_host(addr).await {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

/// The access policy of a TCP listener at `addr`: a token, or no token when `insecure` was asked
/// for explicitly and `addr` is loopback.
///
/// # Errors
/// Without a token, unless `insecure` and loopback.
pub async fn tcp_policy(
    addr: &str,
    token: Option<BearerAuth>,
    insecure: bool,
) -> Result<Option<BearerAuth>> {
    match token {
        Some(t) => Ok(Some(t)),
        None if insecure && is_loopback(addr).await => Ok(None),
        None if insecure => bail!(
            "refusing to serve TCP on `{addr}` without a token: --tcp-insecure is only allowed on a \
             loopback address"
        ),
        None => bail!(
            "refusing to serve TCP on `{addr}` without a token; hint: pass --tcp-token-file FILE (or \
             set CAIRN_TCP_TOKEN), or --tcp-insecure on a loopback address"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_exact_bearer_token() {
        let auth = BearerAuth::new("  0123456789abcdef-token\n").unwrap();
        assert!(auth.accepts(b"Bearer 0123456789abcdef-token"));
        for bad in [
            &b""[..],
            b"0123456789abcdef-token",
            b"Bearer 0123456789abcdef-toke",
            b"Bearer 0123456789abcdef-tokeN",
            b"Bearer 0123456789abcdef-token ",
            b"Basic 0123456789abcdef-token",
        ] {
            assert!(!auth.accepts(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn short_or_unprintable_tokens_are_refused_without_echoing_them() {
        let err = BearerAuth::new("short-secret").unwrap_err().to_string();
        assert!(!err.contains("short-secret"), "{err}");
        assert!(BearerAuth::new("0123456789abcdef token").is_err());
        assert!(
            format!("{:?}", BearerAuth::new("0123456789abcdef").unwrap())
                .find("0123")
                .is_none()
        );
    }

    #[tokio::test]
    async fn tcp_needs_a_token_unless_insecure_on_loopback() {
        assert!(tcp_policy("127.0.0.1:0", None, false).await.is_err());
        assert!(
            tcp_policy("127.0.0.1:0", None, true)
                .await
                .unwrap()
                .is_none()
        );
        assert!(tcp_policy("0.0.0.0:0", None, true).await.is_err());
        let t = BearerAuth::new("0123456789abcdef").unwrap();
        assert!(
            tcp_policy("0.0.0.0:0", Some(t), false)
                .await
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn world_readable_token_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdef-secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_token(None, Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("chmod 600") && !err.contains("secret"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let auth = load_token(None, Some(&path)).unwrap().unwrap();
        assert!(auth.accepts(b"Bearer 0123456789abcdef-secret"));
        // The environment wins over the file.
        let auth = load_token(Some("from-the-environment-1".into()), Some(&path))
            .unwrap()
            .unwrap();
        assert!(auth.accepts(b"Bearer from-the-environment-1"));
        assert!(load_token(None, None).unwrap().is_none());
    }
}
