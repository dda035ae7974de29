//! Transfers: large objects fetched as concurrent ranged GETs and delivered in order as one stream.
//!
//! A *chunk* is one byte range of [`DownloadOptions::chunk_size`]; up to [`DownloadOptions::concurrency`]
//! chunks are in flight, each on its own task, and they are yielded strictly in order, so the consumer
//! (ingest: decompress, hash, unpack) sees one sequential stream and memory stays bounded by
//! `concurrency × chunk_size`, independent of the archive size. No temp copy of the archive is made.
//! When a chunk's body breaks (reset, truncation, stall) the chunk *resumes* at its last good offset
//! instead of starting over; failures of a chunk are bounded by [`DownloadOptions::retry`].
//! Uploads are [`super::Storage::put`] with [`super::PutBody::File`]; the S3 backend splits large
//! files into a multipart upload as [`UploadOptions`] says.

use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::io::StreamReader;

use super::{ByteStream, RetryPolicy, Storage, StorageError};

/// Knobs of [`download`].
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Bytes per ranged GET (at least 1).
    pub chunk_size: u64,
    /// Ranged GETs in flight at once (at least 1).
    pub concurrency: usize,
    /// Resumes of one chunk after its body broke; the request itself is retried by the backend.
    pub retry: RetryPolicy,
}

impl Default for DownloadOptions {
    /// 8 MiB chunks, 8 in flight: enough parallelism to saturate a CI runner's link to S3 while
    /// holding at most 64 MiB in memory.
    fn default() -> Self {
        Self {
            chunk_size: 8 << 20,
            concurrency: 8,
            retry: RetryPolicy::default(),
        }
    }
}

/// Knobs of multipart uploads (used by the S3 backend's `put` of a file).
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Files of at least this size are uploaded in parts.
    pub multipart_threshold: u64,
    /// Bytes per part (S3's minimum of 5 MiB is enforced; grown if a file would need over 10,000 parts).
    pub part_size: u64,
    /// Parts uploaded at once (at least 1).
    pub concurrency: usize,
}

impl Default for UploadOptions {
    /// Multipart from 64 MiB, in 16 MiB parts, 4 at a time.
    fn default() -> Self {
        Self {
            multipart_threshold: 64 << 20,
            part_size: 16 << 20,
            concurrency: 4,
        }
    }
}

/// An object being downloaded: its size and its bytes, in order.
pub struct Download {
    key: String,
    size: u64,
    stream: ByteStream,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("key", &self.key)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Download {
    /// The object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The object's size in bytes: the stream yields exactly this many, or an error.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The bytes as a stream of chunks, in order; it ends after the first error.
    pub fn into_stream(self) -> ByteStream {
        self.stream
    }

    /// The bytes as an [`tokio::io::AsyncBufRead`]; an error is an [`std::io::Error`] whose inner error is
    /// the [`StorageError`]. For synchronous decoders on the blocking pool, wrap it in
    /// `tokio_util::io::SyncIoBridge`.
    pub fn into_async_read(self) -> StreamReader<ByteStream, Bytes> {
        StreamReader::new(self.stream)
    }

    /// The bytes as a [`std::io::Read`] for synchronous decoders (zstd, xz, tar) running on the blocking
    /// pool or a rayon thread; errors are [`std::io::Error`]s wrapping the [`StorageError`].
    ///
    /// Must be created on the runtime (it keeps a handle to it) and read off it: reading on a runtime
    /// thread panics, as `Handle::block_on` does there.
    pub fn into_blocking_read(self) -> BlockingReader {
        BlockingReader {
            stream: self.stream,
            current: Bytes::new(),
            handle: tokio::runtime::Handle::current(),
        }
    }
}

/// A synchronous reader over a download; see [`Download::into_blocking_read`].
pub struct BlockingReader {
    stream: ByteStream,
    /// The unread rest of the last chunk.
    current: Bytes,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for BlockingReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingReader")
            .field("buffered", &self.current.len())
            .finish_non_exhaustive()
    }
}

impl std::io::Read for BlockingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Starts downloading `key` (of `size` bytes if known from a listing, else one HEAD finds out).
///
/// Fails at once with [`StorageError::NotFound`] when the object does not exist; later failures arrive
/// as the stream's last item.
pub async fn download(
    storage: Arc<dyn Storage>,
    key: &str,
    size: Option<u64>,
    opts: &DownloadOptions,
) -> Result<Download, StorageError> {
    let size = match size {
        Some(n) => n,
        None => {
            storage
                .head(key)
                .await?
                .ok_or_else(|| StorageError::not_found(key, &storage.describe()))?
                .size
        }
    };
    let chunk = opts.chunk_size.max(1);
    let owned_key = key.to_owned();
    let retry = opts.retry.clone();
    let chunks = (0..size.div_ceil(chunk)).map(move |i| {
        let range = i * chunk..size.min((i + 1) * chunk);
        // Each chunk runs on its own task so TLS and copying use every core; dropping the download
        // aborts the tasks still running.
        AbortOnDrop(tokio::spawn(fetch_chunk(
            storage.clone(),
            owned_key.clone(),
            range,
            retry.clone(),
        )))
    });
    let key_for_join = key.to_owned();
    let stream = futures::stream::iter(chunks)
        .buffered(opts.concurrency.max(1))
        .map(move |joined| {
            joined.unwrap_or_else(|e| {
                Err(StorageError::Permanent {
                    key: key_for_join.clone(),
                    location: String::new(),
                    message: format!("download task failed: {e}"),
                })
            })
        })
        // The first error ends the stream: later chunks would leave a gap.
        .scan(false, |failed, item| {
            let out = if *failed { None } else { Some(item) };
            *failed |= matches!(out, Some(Err(_)));
            futures::future::ready(out)
        });
    Ok(Download {
        key: key.to_owned(),
        size,
        stream: Box::pin(stream),
    })
}

/// Downloads `key` into the file `dest` (temp file, fsync, rename): for consumers that need random
/// access, e.g. xz archives decoded in parallel. Returns the number of bytes written.
pub async fn download_to_file(
    storage: Arc<dyn Storage>,
    key: &str,
    size: Option<u64>,
    dest: &Path,
    opts: &DownloadOptions,
) -> Result<u64, StorageError> {
    let location = storage.describe();
    let mut stream = download(storage, key, size, opts).await?.into_stream();
    let io = |what: &str, e: std::io::Error| {
        StorageError::permanent(key, &location, format!("{what} `{}`: {e}", dest.display()))
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dest.with_file_name(format!(".{name}.cairn-download-{}", std::process::id()));
    let result = async {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| io("cannot create", e))?;
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            file.write_all(&chunk)
                .await
                .map_err(|e| io("cannot write", e))?;
            written += chunk.len() as u64;
        }
        file.sync_all().await.map_err(|e| io("cannot fsync", e))?;
        tokio::fs::rename(&tmp, dest)
            .await
            .map_err(|e| io("cannot rename into", e))?;
        Ok(written)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// Fetches one range completely, resuming after a broken body at the last byte received.
async fn fetch_chunk(
    storage: Arc<dyn Storage>,
    key: String,
    range: Range<u64>,
    retry: RetryPolicy,
) -> Result<Bytes, StorageError> {
    let len = (range.end - range.start) as usize;
    let mut buf = BytesMut::with_capacity(len);
    let mut failures = 0u32;
    loop {
        let start = range.start + buf.len() as u64;
        let attempt = async {
            let mut body = storage.get_range(&key, start..range.end).await?;
            while let Some(piece) = body.next().await {
                let piece = piece?;
                if buf.len() + piece.len() > len {
                    return Err(StorageError::permanent(
                        &key,
                        &storage.describe(),
                        format!(
                            "server sent more than the {len} bytes asked for at offset {}",
                            range.start
                        ),
                    ));
                }
                buf.extend_from_slice(&piece);
            }
            if buf.len() < len {
                return Err(StorageError::transient(
                    &key,
                    &storage.describe(),
                    format!(
                        "body ended at offset {} of range {}..{}",
                        range.start + buf.len() as u64,
                        range.start,
                        range.end
                    ),
                ));
            }
            Ok(())
        };
        match attempt.await {
            Ok(()) => return Ok(buf.freeze()),
            Err(err) if err.is_transient() => {
                failures += 1;
                if failures >= retry.max_attempts.max(1) {
                    return Err(retry.exhausted(&key, &storage.describe(), failures, &err));
                }
                tracing::debug!(key, offset = range.start + buf.len() as u64, error = %err, "resuming ranged GET");
                storage.stats().add_retry();
                tokio::time::sleep(retry.delay(failures)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// A task handle that aborts the task when dropped (the download was abandoned).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{LocalStorage, PutBody};
    use tokio::io::AsyncReadExt;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn chunks_arrive_in_order_and_each_byte_once() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(LocalStorage::new(dir.path()).unwrap());
        let body = data(1_000_003);
        storage
            .put("r/a.bin", PutBody::Bytes(body.clone().into()))
            .await
            .unwrap();
        let opts = DownloadOptions {
            chunk_size: 64 * 1024,
            concurrency: 5,
            ..Default::default()
        };
        let dl = download(storage.clone(), "r/a.bin", None, &opts)
            .await
            .unwrap();
        assert_eq!(dl.size(), body.len() as u64);
        let mut out = Vec::new();
        dl.into_async_read().read_to_end(&mut out).await.unwrap();
        assert!(out == body, "bytes differ");
        let s = storage.stats().snapshot();
        assert_eq!(
            (s.get_requests, s.get_bytes),
            (1_000_003u64.div_ceil(64 * 1024), body.len() as u64)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_reader_feeds_a_synchronous_decoder() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(LocalStorage::new(dir.path()).unwrap());
        let body = data(300_000);
        let compressed = zstd::encode_all(&body[..], 3).unwrap();
        storage
            .put("r/a.tar.zst", PutBody::Bytes(compressed.into()))
            .await
            .unwrap();
        let opts = DownloadOptions {
            chunk_size: 4096,
            concurrency: 3,
            ..Default::default()
        };
        let reader = download(storage, "r/a.tar.zst", None, &opts)
            .await
            .unwrap()
            .into_blocking_read();
        let out = tokio::task::spawn_blocking(move || zstd::decode_all(reader))
            .await
            .unwrap()
            .unwrap();
        assert!(out == body, "decoded bytes differ");
    }

    #[tokio::test]
    async fn missing_object_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(LocalStorage::new(dir.path()).unwrap());
        let err = download(storage, "r/none", None, &DownloadOptions::default())
            .await
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[tokio::test]
    async fn download_to_file_writes_the_object() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(LocalStorage::new(dir.path().join("bucket")).unwrap());
        storage
            .put("k", PutBody::Bytes(data(5000).into()))
            .await
            .unwrap();
        let dest = dir.path().join("out.bin");
        let opts = DownloadOptions {
            chunk_size: 1000,
            concurrency: 2,
            ..Default::default()
        };
        let n = download_to_file(storage, "k", Some(5000), &dest, &opts)
            .await
            .unwrap();
        assert_eq!(n, 5000);
        assert_eq!(std::fs::read(&dest).unwrap(), data(5000));
    }
}
