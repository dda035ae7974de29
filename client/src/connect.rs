//! Connecting to `cairnd`: a Unix socket path (the default) or a TCP URL. This module and
//! `daemon/src/server.rs` are the only places that see the wire types of `cairn.v1`.

use std::path::{Path, PathBuf};

use cairn_proto::v1::cairn_client::CairnClient;
use hyper_util::rt::TokioIo;
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
    /// Transport error.
    #[source]
    pub source: tonic::transport::Error,
}

/// Connect to the daemon. Large messages are allowed both ways (trees of big artifacts).
pub async fn connect(addr: &DaemonAddr) -> Result<CairnClient<Channel>, ConnectError> {
    let channel = match addr {
        DaemonAddr::Tcp(url) => Endpoint::from_shared(url.clone())
            .map_err(|source| ConnectError {
                addr: addr.clone(),
                source,
            })?
            .connect()
            .await
            .map_err(|source| ConnectError {
                addr: addr.clone(),
                source,
            })?,
        DaemonAddr::Unix(path) => connect_unix(path).await.map_err(|source| ConnectError {
            addr: addr.clone(),
            source,
        })?,
    };
    Ok(CairnClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20))
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
