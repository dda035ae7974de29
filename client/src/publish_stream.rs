//! Publishing by streaming (`PublishStream`), what `cairn push` does over TCP: `cairnd` never reads a
//! path a remote client names, so the client reads its build dir itself, with its own rights, and
//! sends the content.
//!
//! The reading is `cairnd`'s own (`cairn_fingerprint::nofollow` and `artifact_dir`: the same listing
//! rule, no symlink followed, regular files only): an artifact dir goes as TheRock's uncompressed tar
//! stream, which the daemon compresses exactly as it compresses what it reads itself (so the archive
//! is byte-identical to a Unix-socket publish of the same dir); a pre-compressed archive goes as it
//! is. A blocking thread reads and sends chunks of [`CHUNK`] bytes through a channel of a few
//! messages, so memory stays bounded and the reading waits whenever gRPC's flow control makes the
//! send wait. The stream ends with `end`; a stream cut before it (a read error here, a signal)
//! publishes nothing.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use cairn_fingerprint::artifact_dir::{self, ArtifactDirError, ArtifactSource};
use cairn_fingerprint::nofollow::Dir;
use cairn_proto::v1 as pb;
use cairn_proto::v1::cairn_client::CairnClient;
use cairn_proto::v1::publish_stream_request::Part;
use tokio::sync::mpsc;

use crate::api::{self, ClientError, PublishSpec, Published};
use crate::connect::DaemonChannel;

/// Bytes per `chunk` message.
pub const CHUNK: usize = 1 << 20;

/// Messages buffered between the reading thread and the wire.
const CHANNEL: usize = 4;

/// Publish `spec` by streaming the build dir's artifacts (`spec.build_dir` is read here, never by
/// the daemon). A failure to read the build dir is reported as this client's error, and the daemon
/// publishes nothing.
pub async fn publish_streamed(
    client: &mut CairnClient<DaemonChannel>,
    spec: &PublishSpec,
) -> Result<Published, ClientError> {
    let mut header = api::publish_request(spec);
    header.build_dir.clear();
    let (tx, rx) = mpsc::channel::<pb::PublishStreamRequest>(CHANNEL);
    tx.send(message(Part::Header(header)))
        .await
        .expect("the receiver is alive and the channel has room");
    let build_dir = spec.build_dir.clone();
    let wanted: BTreeSet<String> = spec.fingerprints.iter().map(|(n, _)| n.clone()).collect();
    let mut reader = tokio::task::spawn_blocking(move || send_build_dir(&build_dir, &wanted, &tx));
    let answer = client
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    // A read error here is the cause of whatever the daemon answered (a cut stream); a stream the
    // daemon stopped taking is explained by its answer. The reader ends once the daemon's answer
    // has closed the stream; it is not waited for without bound.
    let read = match tokio::time::timeout(READER_GRACE, &mut reader).await {
        Ok(joined) => joined.map_err(|e| ClientError::Io {
            path: spec.build_dir.clone(),
            source: io::Error::other(format!("the reading thread failed: {e}")),
        })?,
        Err(_) => Err(Sent::Closed),
    };
    if let Err(Sent::Failed(e)) = read {
        return Err(e);
    }
    let r = answer
        .map_err(|s| ClientError::from_status("PublishStream", s))?
        .into_inner();
    Ok(api::published(r))
}

/// How long the reading thread may take to notice that the daemon answered.
const READER_GRACE: Duration = Duration::from_secs(10);

/// Why sending stopped.
enum Sent {
    /// Reading the build dir failed.
    Failed(ClientError),
    /// The daemon stopped taking the stream (its answer says why).
    Closed,
}

fn message(part: Part) -> pb::PublishStreamRequest {
    pb::PublishStreamRequest { part: Some(part) }
}

/// Send every wanted artifact of `build_dir`, then `end`. With nothing wanted (a record-only
/// publish) the build dir is not read.
fn send_build_dir(
    build_dir: &Path,
    wanted: &BTreeSet<String>,
    tx: &mpsc::Sender<pb::PublishStreamRequest>,
) -> Result<(), Sent> {
    let send = |part: Part| tx.blocking_send(message(part)).map_err(|_| Sent::Closed);
    if !wanted.is_empty() {
        let failed = |e: ClientError| {
            if tx.is_closed() {
                Sent::Closed
            } else {
                Sent::Failed(e)
            }
        };
        let artifacts = Dir::open(build_dir)
            .and_then(|b| b.open_dir(OsStr::new("artifacts")))
            .map_err(|source| {
                failed(ClientError::Io {
                    path: build_dir.to_path_buf(),
                    source,
                })
            })?;
        let listed = artifact_dir::list_artifacts(&artifacts, &|n| wanted.contains(n))
            .map_err(|e| failed(e.into()))?;
        if listed.is_empty() {
            return Err(Sent::Failed(
                ArtifactDirError::NoneWanted {
                    artifacts: artifacts.path().to_path_buf(),
                    wanted: wanted.len(),
                }
                .into(),
            ));
        }
        for l in listed {
            send(Part::Artifact(pb::StreamedArtifact {
                artifact: l.name.to_string(),
                precompressed: match l.source {
                    ArtifactSource::Dir => String::new(),
                    ArtifactSource::Archive(c) => c.to_string(),
                },
            }))?;
            let path = artifacts.path().join(&l.entry);
            let out = ChunkWriter::new(tx);
            let sent = match l.source {
                ArtifactSource::Dir => {
                    let dir =
                        artifacts
                            .open_dir(&l.entry)
                            .map_err(|source| ArtifactDirError::Io {
                                path: path.clone(),
                                source,
                            })?;
                    artifact_dir::write_artifact_tar(&dir, out, false).map(|(out, _)| out)
                }
                ArtifactSource::Archive(_) => artifacts
                    .open_file(&l.entry)
                    .and_then(|mut f| {
                        let mut out = out;
                        io::copy(&mut f, &mut out)?;
                        Ok(out)
                    })
                    .map_err(|source| ArtifactDirError::Io {
                        path: path.clone(),
                        source,
                    }),
            };
            sent.and_then(|mut out| {
                out.flush().map_err(|source| ArtifactDirError::Io {
                    path: path.clone(),
                    source,
                })
            })
            .map_err(|e| failed(e.into()))?;
        }
    }
    send(Part::End(true))
}

impl From<ArtifactDirError> for Sent {
    fn from(e: ArtifactDirError) -> Sent {
        Sent::Failed(e.into())
    }
}

/// Cuts what is written into `chunk` messages of [`CHUNK`] bytes (on a blocking thread only).
struct ChunkWriter<'a> {
    tx: &'a mpsc::Sender<pb::PublishStreamRequest>,
    buf: Vec<u8>,
}

impl<'a> ChunkWriter<'a> {
    fn new(tx: &'a mpsc::Sender<pb::PublishStreamRequest>) -> Self {
        ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(message(Part::Chunk(chunk)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "cairnd stopped the stream"))
    }
}

impl Write for ChunkWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
