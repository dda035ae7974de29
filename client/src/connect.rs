//! Connecting to `cairnd`: a Unix socket path (the default) or a TCP URL. This module and
//! `daemon/src/server.rs` are the only places that see the wire types of `cairn.v1`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cairn_proto::v1::cairn_client::CairnClient;
use hyper_util::rt::TokioIo;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonAddr {
    /// A Unix socket path.
    Unix(PathBuf),
    /// `http://host:port`.
    Tcp(String),
}

impl DaemonAddr {
    /// Parse `unix:/path`, `/path`, or `http://host:port`.
    pub fn parse(s: &str) -> DaemonAddr {
        if s.starts_with("http://") || s.starts_with("https://") {
            DaemonAddr::Tcp(s.to_string())
        } else {
            DaemonAddr::Unix(PathBuf::from(s.strip_prefix("unix:").unwrap_or(s)))
        }
    }

    /// The address clients use when none is given: `$CAIRN_SOCKET`, else the daemon's default socket.
    pub fn default_addr() -> DaemonAddr {
        match std::env::var("CAIRN_SOCKET") {
            Ok(s) if !s.is_empty() => DaemonAddr::parse(&s),
            _ => DaemonAddr::Unix(default_socket()),
        }
    }
}

impl std::fmt::Display for DaemonAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            DaemonAddr::Tcp(u) => f.write_str(u),
        }
    }
}

/// The default socket both sides agree on (see [`cairn_proto::default_socket`]).
pub fn default_socket() -> PathBuf {
    cairn_proto::default_socket()
}

/// Why the daemon could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to cairnd at `{addr}`")]
pub struct ConnectError {
    /// Where we tried.
    pub addr: DaemonAddr,
    /// Transport error, or why the TCP token could not be read.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// The channel to the daemon: requests carry the bearer token when connecting over TCP.
pub type DaemonChannel = InterceptedService<Channel, BearerToken>;

/// Adds `authorization: Bearer <token>` to every request when it holds a token.
#[derive(Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for BearerToken {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "BearerToken(set)"
        } else {
            "BearerToken(none)"
        })
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// The token file given by `--token-file`; set once by the CLI before connecting.
static TOKEN_FILE: OnceLock<PathBuf> = OnceLock::new();

/// Use `path` as the TCP token file (`--token-file`); takes precedence over `CAIRN_TOKEN_FILE`.
pub fn set_token_file(path: PathBuf) {
    let _ = TOKEN_FILE.set(path);
}

/// The TCP bearer token: `$CAIRN_TOKEN`, else the contents of `--token-file` / `$CAIRN_TOKEN_FILE`.
/// Errors name the file, never the token.
pub fn tcp_token() -> Result<Option<String>, String> {
    if let Ok(t) = std::env::var("CAIRN_TOKEN")
        && !t.trim().is_empty()
    {
        return Ok(Some(t.trim().to_string()));
    }
    let file = TOKEN_FILE.get().cloned().or_else(|| {
        std::env::var_os("CAIRN_TOKEN_FILE")
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
    });
    let Some(file) = file else { return Ok(None) };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read token file `{}`: {e}", file.display()))?;
    Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty()))
}

/// Connect to the daemon. Large messages are allowed both ways (trees of big artifacts). Over TCP the
/// bearer token from [`tcp_token`] is sent with every request; over the Unix socket, none is.
pub async fn connect(addr: &DaemonAddr) -> Result<CairnClient<DaemonChannel>, ConnectError> {
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| ConnectError {
        addr: addr.clone(),
        source,
    };
    let (channel, token) = match addr {
        DaemonAddr::Tcp(url) => {
            let token = match tcp_token().map_err(|e| fail(e.into()))? {
                Some(t) => Some(
                    MetadataValue::try_from(format!("Bearer {t}"))
                        .map_err(|_| fail("the TCP token is not a valid header value".into()))?,
                ),
                None => None,
            };
            let channel = Endpoint::from_shared(url.clone())
                .map_err(|e| fail(e.into()))?
                .connect()
                .await
                .map_err(|e| fail(e.into()))?;
            (channel, token)
        }
        DaemonAddr::Unix(path) => {
            check_socket(path, path == &default_socket()).map_err(|e| fail(e.into()))?;
            (connect_unix(path).await.map_err(|e| fail(e.into()))?, None)
        }
    };
    Ok(CairnClient::with_interceptor(channel, BearerToken(token))
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20))
}

/// Refuse a socket another local user could have planted (before any byte is sent to it): its
/// directory must be a real directory (not a symlink) that no one but its owner can write, owned
/// by root, by us, or by the socket's owner (a daemon running as a service user); for the default
/// socket, which is per user, the directory must be ours (or root's). The daemon checks the same
/// directory before it binds (`cairnd`'s `server/listen.rs`).
pub fn check_socket(path: &Path, is_default: bool) -> Result<(), String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let dir_meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        // Nothing there: the connect itself reports that the daemon is not running.
        Err(_) => return Ok(()),
    };
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if !dir_meta.file_type().is_dir() {
        return Err(format!(
            "the socket directory `{}` is not a directory (a symlink?); refusing to talk to whatever \
             listens there",
            dir.display()
        ));
    }
    if dir_meta.mode() & 0o022 != 0 {
        return Err(format!(
            "the socket directory `{}` (mode {:o}) is writable by other users, who could have put an \
             impostor daemon there; refusing to connect. Hint: start cairnd with a socket in a \
             directory of its own, or set XDG_RUNTIME_DIR",
            dir.display(),
            dir_meta.mode() & 0o7777
        ));
    }
    let socket_owner = std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_socket())
        .map(|m| m.uid());
    let owner = dir_meta.uid();
    let trusted_owner = if is_default {
        owner == me || owner == 0
    } else {
        owner == me || owner == 0 || Some(owner) == socket_owner
    };
    if !trusted_owner {
        return Err(format!(
            "the socket directory `{}` belongs to uid {owner}, not to you (uid {me}) or root; \
             refusing to connect to a daemon another user may have started there",
            dir.display()
        ));
    }
    Ok(())
}

async fn connect_unix(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    // The URI is ignored by the connector; tonic needs a syntactically valid one.
    Endpoint::from_static("http://cairnd.local")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
}

#[cfg(test)]
mod socket_checks {
    use std::os::unix::fs::PermissionsExt;

    use super::check_socket;

    #[test]
    fn a_socket_in_a_directory_others_can_write_or_a_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(check_socket(&tmp.path().join("s.sock"), true), Ok(()));

        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_socket(&open.join("s.sock"), false).unwrap_err();
        assert!(err.contains("writable by other users"), "{err}");

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
        let err = check_socket(&link.join("s.sock"), false).unwrap_err();
        assert!(err.contains("not a directory"), "{err}");
    }
}
