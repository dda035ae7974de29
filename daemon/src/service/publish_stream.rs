//! The PublishStream RPC: a publish whose artifacts the client reads and streams itself, because the
//! daemon must never read a path a remote client names (TCP clients always stream; RELIABILITY.md,
//! Security).
//!
//! Each streamed artifact goes into a file of the publish's private scratch dir under the store,
//! never anywhere else: an artifact dir's uncompressed tar stream through the same [`Compressor`]
//! a Unix-socket publish uses (so the same build dir gives byte-identical archives either way), a
//! pre-compressed archive as it is. From there the archives take `publish.rs`'s path: ingest checks
//! every member as for any archive (unsafe paths, escaping links, devices, … refused, naming the
//! artifact and member) before anything is uploaded, then uploads and records.
//!
//! Memory stays bounded: chunks (at most [`MAX_CHUNK`]) go through a channel of
//! [`CHANNEL_CHUNKS`] to a blocking writer, so a slow disk or compressor stops the reading of the
//! stream, and gRPC's flow control stops the client. Each artifact's bytes are bounded by the
//! store's archive limits.

use std::collections::BTreeSet;
use std::io::Write as _;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tracing::instrument;

use cairn_fingerprint::names::ArtifactName;
use cairn_fingerprint::{Compression, Sha256};

use super::Service;
use super::error::{Result, ServiceError, internal};
use super::publish::{
    Origin, PublishOutcome, PublishRequest, Written, archive_options, copy_archive,
};
use crate::archive::{ArchiveInfo, Compressor};

/// Largest chunk a client may send.
pub const MAX_CHUNK: usize = 4 << 20;

/// Chunks buffered between the stream and an artifact's writer.
const CHANNEL_CHUNKS: usize = 4;

/// Most artifacts one stream may carry (a stage of TheRock publishes a few dozen).
pub const MAX_STREAMED_ARTIFACTS: usize = 10_000;

/// One message of a publish stream after its header, in domain terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamPart {
    /// The next artifact begins.
    Artifact {
        /// The artifact.
        name: ArtifactName,
        /// `None`: an uncompressed tar stream, compressed here; `Some`: a pre-compressed archive.
        precompressed: Option<Compression>,
    },
    /// Bytes of the current artifact.
    Chunk(Bytes),
    /// Every artifact was sent. A stream that stops without it was cut, and publishes nothing.
    End,
}

/// An artifact being received: its writer thread and the channel feeding it.
struct Receiving {
    name: ArtifactName,
    tx: mpsc::Sender<Bytes>,
    writer: tokio::task::JoinHandle<std::result::Result<ArchiveInfo, ServiceError>>,
    bytes: u64,
    written: Written,
}

impl Receiving {
    /// End the artifact: wait for its writer, and return the archive with its hash and size.
    async fn finish(self) -> Result<Written> {
        drop(self.tx);
        let info = self.writer.await.map_err(internal)??;
        Ok(Written {
            info,
            ..self.written
        })
    }
}

impl Service {
    /// Publish artifacts streamed by the client: `input` (whose `build_dir` is empty) names the run
    /// and fingerprints, `parts` carries each artifact. Nothing is uploaded until every artifact was
    /// received and ingested; on any error the scratch files go and nothing is published.
    #[instrument(skip_all, fields(stage = %input.stage, family = %input.family, run = %input.run.run_id))]
    pub async fn publish_stream<S>(&self, input: PublishRequest, parts: S) -> Result<PublishOutcome>
    where
        S: Stream<Item = Result<StreamPart>> + Send + Unpin,
    {
        if !input.build_dir.as_os_str().is_empty() {
            return Err(ServiceError::InvalidArgument(format!(
                "a streamed publish names no build dir (got `{}`): the client streams the \
                 artifacts' content",
                input.build_dir.display()
            )));
        }
        let (root, backend) = self.publish_target(&input)?;
        let record_only = self.check_publishes_something(&input)?;
        let scratch = self.store.scratch_dir()?;
        let mut written = self.receive(&input, parts, &scratch).await?;
        if record_only && !written.is_empty() {
            return Err(ServiceError::InvalidArgument(
                "a record-only publish (no fingerprints) streamed artifacts".into(),
            ));
        }
        if written.is_empty() && !record_only {
            return Err(ServiceError::NotFound(format!(
                "the client streamed none of the {} artifact(s) to publish",
                input.fingerprints.len()
            )));
        }
        // The order a Unix-socket publish lists them in, whatever order they came in.
        written.sort_by_key(|w| w.name.to_string());
        self.publish_written(input, root, backend, scratch, written)
            .await
    }

    /// Receive every artifact of `parts` into files of `scratch`.
    async fn receive<S>(
        &self,
        input: &PublishRequest,
        mut parts: S,
        scratch: &tempfile::TempDir,
    ) -> Result<Vec<Written>>
    where
        S: Stream<Item = Result<StreamPart>> + Send + Unpin,
    {
        let limits = *self.store.limits();
        // An uncompressed tar is its members plus headers: allow the ingest limit and a margin.
        let max_bytes = limits
            .max_total_size
            .saturating_add(limits.max_total_size / 8)
            .saturating_add(1 << 30);
        let mut written = Vec::new();
        let mut seen = BTreeSet::new();
        let mut current: Option<Receiving> = None;
        let mut ended = false;
        while let Some(part) = parts.next().await {
            if ended {
                return Err(ServiceError::InvalidArgument(
                    "a publish stream sent more after its `end`".into(),
                ));
            }
            match part? {
                StreamPart::End => ended = true,
                StreamPart::Artifact {
                    name,
                    precompressed,
                } => {
                    if let Some(r) = current.take() {
                        written.push(r.finish().await?);
                    }
                    let Some(fp) = input.fingerprints.get(&name.name) else {
                        return Err(ServiceError::InvalidArgument(format!(
                            "streamed artifact `{name}` is not one of the artifacts to publish \
                             (no fingerprint for `{}`)",
                            name.name
                        )));
                    };
                    if !seen.insert(name.to_string()) {
                        return Err(ServiceError::InvalidArgument(format!(
                            "artifact `{name}` was streamed twice"
                        )));
                    }
                    if seen.len() > MAX_STREAMED_ARTIFACTS {
                        return Err(ServiceError::InvalidArgument(format!(
                            "more than {MAX_STREAMED_ARTIFACTS} artifacts in one publish stream"
                        )));
                    }
                    current = Some(self.start(input, name, *fp, precompressed, scratch)?);
                }
                StreamPart::Chunk(bytes) => {
                    let Some(r) = current.as_mut() else {
                        return Err(ServiceError::InvalidArgument(
                            "a publish stream sent content before naming its artifact".into(),
                        ));
                    };
                    if bytes.len() > MAX_CHUNK {
                        return Err(ServiceError::InvalidArgument(format!(
                            "artifact `{}`: a chunk of {} bytes is larger than {MAX_CHUNK}, the \
                             limit of a publish stream's chunk",
                            r.name,
                            bytes.len()
                        )));
                    }
                    r.bytes += bytes.len() as u64;
                    if r.bytes > max_bytes {
                        return Err(ServiceError::InvalidArgument(format!(
                            "artifact `{}`: the stream exceeds {max_bytes} bytes, the limit \
                             for one artifact (the limit on an archive's content, {} bytes, plus \
                             room for tar headers); hint: split the artifact",
                            r.name, limits.max_total_size
                        )));
                    }
                    if r.tx.send(bytes).await.is_err() {
                        // The writer stopped early: its error says why.
                        let r = current.take().expect("receiving");
                        return Err(match r.finish().await {
                            Err(e) => e,
                            Ok(_) => internal("the artifact writer stopped early"),
                        });
                    }
                }
            }
        }
        if !ended {
            return Err(ServiceError::InvalidArgument(
                "the publish stream stopped before its `end`: the client failed or was stopped \
                 while sending; nothing published"
                    .into(),
            ));
        }
        if let Some(r) = current.take() {
            written.push(r.finish().await?);
        }
        Ok(written)
    }

    /// Start receiving `name` into a new file of `scratch`.
    fn start(
        &self,
        input: &PublishRequest,
        name: ArtifactName,
        fp: cairn_fingerprint::Blake3,
        precompressed: Option<Compression>,
        scratch: &tempfile::TempDir,
    ) -> Result<Receiving> {
        let opts = archive_options(input);
        let file_name = name
            .archive(precompressed.unwrap_or(opts.compression))
            .to_string();
        let path = scratch.path().join(&file_name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| internal(format!("`{}`: {e}", path.display())))?;
        let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
        let label = name.clone();
        let out_path = path.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let bad = |e: std::io::Error| {
                ServiceError::InvalidArgument(format!("streamed artifact `{label}`: {e}"))
            };
            match precompressed {
                None => {
                    let mut c = Compressor::new(&file, &opts, &out_path)
                        .map_err(|e| internal(e.to_string()))?;
                    while let Some(chunk) = rx.blocking_recv() {
                        c.write_all(&chunk)
                            .map_err(|e| internal(format!("`{}`: {e}", out_path.display())))?;
                    }
                    let (sha256, compressed_size) =
                        c.finish().map_err(|e| internal(e.to_string()))?;
                    Ok(ArchiveInfo {
                        sha256,
                        compressed_size,
                        uncompressed_size: 0,
                        files: 0,
                    })
                }
                Some(_) => copy_archive(ChannelReader::new(&mut rx), &file).map_err(bad),
            }
        });
        let what = match precompressed {
            None => format!("streamed artifact `{name}`"),
            Some(c) => format!("streamed pre-compressed archive `{file_name}` ({c})"),
        };
        Ok(Receiving {
            name: name.clone(),
            tx,
            writer,
            bytes: 0,
            written: Written {
                name,
                fp,
                file_name,
                path,
                info: ArchiveInfo {
                    sha256: Sha256([0; 32]),
                    compressed_size: 0,
                    uncompressed_size: 0,
                    files: 0,
                },
                origin: Origin::Caller(what),
            },
        })
    }
}

/// The chunks of a channel as a blocking reader (on a blocking thread only).
struct ChannelReader<'a> {
    rx: &'a mut mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl<'a> ChannelReader<'a> {
    fn new(rx: &'a mut mpsc::Receiver<Bytes>) -> Self {
        ChannelReader {
            rx,
            chunk: Bytes::new(),
        }
    }
}

impl std::io::Read for ChannelReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(c) => self.chunk = c,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}
