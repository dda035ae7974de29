//! S3 backend (`aws-sdk-s3`): AWS buckets and S3-compatible stores (custom endpoint, path-style).
//!
//! Credentials come from the standard AWS chain (environment, profile, SSO, process, IMDS), or none at
//! all for anonymous, unsigned reads of public buckets (TheRock's CI buckets are public).
//! The SDK's own retries and stalled-stream protection are turned off: every request goes through
//! [`RetryPolicy`] so the retry budget, the request counters in [`TransferStats`] and the errors are
//! Cairn's, and body stalls are caught by [`S3Config::read_timeout`] between chunks.
//! Checksums are only computed when an operation requires them, because several S3-compatible stores
//! reject the SDK's default `aws-chunked` uploads.

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};

use super::{
    ByteStream, Listing, ObjectMeta, PutBody, PutOutcome, RetryPolicy, Storage, StorageError,
    TransferStats, UploadOptions,
};

/// How to reach one bucket.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// The bucket name.
    pub bucket: String,
    /// The region; `None` uses the AWS chain (`AWS_REGION`, profile), then `us-east-1`.
    pub region: Option<String>,
    /// A custom endpoint for S3-compatible stores, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Path-style addressing (`{endpoint}/{bucket}/{key}`), needed by most S3-compatible stores.
    pub force_path_style: bool,
    /// Unsigned requests without credentials: reads of public buckets.
    pub anonymous: bool,
    /// Limit for establishing a TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Limit for a response to start (HEAD, GET, LIST) and for the gap between two body chunks of a GET:
    /// a stalled connection fails as a transient error and is retried or resumed.
    pub read_timeout: Duration,
    /// Limit for one whole PUT request, body included (a part of a multipart upload, or a small object).
    pub put_timeout: Duration,
    /// Retries of each request.
    pub retry: RetryPolicy,
    /// Multipart upload knobs.
    pub upload: UploadOptions,
    /// `max-keys` of each LIST page; `None` is the server's default (1000 on AWS). Small values make
    /// tests exercise continuation tokens.
    pub list_page_size: Option<i32>,
}

impl S3Config {
    /// Defaults for `bucket`: AWS addressing, credential chain, 10 s connect, 30 s read, 5 min per PUT.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            region: None,
            endpoint: None,
            force_path_style: false,
            anonymous: false,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            put_timeout: Duration::from_secs(300),
            retry: RetryPolicy::default(),
            upload: UploadOptions::default(),
            list_page_size: None,
        }
    }

    /// Builds an SDK client for this configuration (the standard credential chain unless `anonymous`).
    pub async fn client(&self) -> Client {
        let region = aws_config::meta::region::RegionProviderChain::first_try(
            self.region.clone().map(Region::new),
        )
        .or_default_provider()
        .or_else(Region::from_static("us-east-1"));
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(self.connect_timeout)
                    .build(),
            )
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if self.anonymous {
            loader = loader.no_credentials();
        }
        let shared = loader.load().await;
        let conf = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(self.force_path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Client::from_conf(conf)
    }
}

/// A bucket reached through `aws-sdk-s3`.
#[derive(Debug, Clone)]
pub struct S3Storage {
    client: Client,
    config: Arc<S3Config>,
    /// Shared with the body streams this backend returns, which may outlive a borrow of it.
    stats: Arc<TransferStats>,
}

impl S3Storage {
    /// Connects with a client built from `config` (see [`S3Config::client`]).
    pub async fn connect(config: S3Config) -> Self {
        let client = config.client().await;
        Self::with_client(client, config)
    }

    /// Uses an injected SDK client; `config` still supplies the bucket, timeouts and retry policy.
    /// The client should have SDK retries disabled, or they multiply with [`S3Config::retry`].
    pub fn with_client(client: Client, config: S3Config) -> Self {
        Self {
            client,
            config: Arc::new(config),
            stats: Arc::default(),
        }
    }

    /// The SDK client (for operations outside [`Storage`], e.g. creating a bucket in tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The configuration in use.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// Maps an SDK failure to a [`StorageError`] naming `key`.
    fn map_err<E>(
        &self,
        key: &str,
        err: SdkError<E, aws_smithy_runtime_api::http::Response>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        classify(key, &self.describe(), err)
    }

    /// Runs one request future under `limit`, mapping a timeout to a transient error.
    async fn timed<T>(
        &self,
        key: &str,
        limit: Duration,
        fut: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(StorageError::transient(
                key,
                &self.describe(),
                format!("no response within {limit:?}"),
            )),
        }
    }

    async fn put_bytes(
        &self,
        key: &str,
        body: Bytes,
        if_none_match: bool,
    ) -> Result<PutOutcome, StorageError> {
        self.config
            .retry
            .run(&self.stats, key, &self.describe(), || async {
                self.stats.add_put(body.len() as u64);
                let mut req = self
                    .client
                    .put_object()
                    .bucket(&self.config.bucket)
                    .key(key)
                    .content_length(body.len() as i64)
                    .body(body.clone().into());
                if if_none_match {
                    req = req.if_none_match("*");
                }
                let sent = self
                    .timed(key, self.config.put_timeout, async { Ok(req.send().await) })
                    .await?;
                match sent {
                    Ok(_) => Ok(PutOutcome::Created),
                    // 412: the object exists; 409: a concurrent conditional write to the same key is in
                    // flight, and since records are immutable and identical, the other writer's object wins.
                    Err(e) if if_none_match && matches!(status_of(&e), Some(412 | 409)) => {
                        Ok(PutOutcome::AlreadyExists)
                    }
                    Err(e) => Err(self.map_err(key, e)),
                }
            })
            .await
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        let src = path.to_owned();
        let size = tokio::fs::metadata(&src)
            .await
            .map_err(|e| self.file_err(key, &src, e))?
            .len();
        let opts = &self.config.upload;
        if size < opts.multipart_threshold.max(1) {
            let data = tokio::fs::read(&src)
                .await
                .map_err(|e| self.file_err(key, &src, e))?;
            self.put_bytes(key, Bytes::from(data), false).await?;
            return Ok(());
        }
        self.multipart(key, &src, size).await
    }

    fn file_err(&self, key: &str, path: &Path, e: std::io::Error) -> StorageError {
        StorageError::permanent(
            key,
            &self.describe(),
            format!("cannot read `{}`: {e}", path.display()),
        )
    }

    /// Uploads `path` in parts of [`UploadOptions::part_size`], [`UploadOptions::concurrency`] at a time;
    /// aborts the upload on failure so no orphaned parts are billed.
    async fn multipart(&self, key: &str, path: &Path, size: u64) -> Result<(), StorageError> {
        let loc = self.describe();
        let bucket = &self.config.bucket;
        let upload_id = self
            .config
            .retry
            .run(&self.stats, key, &loc, || async {
                self.stats.add_put(0);
                let fut = async {
                    self.client
                        .create_multipart_upload()
                        .bucket(bucket)
                        .key(key)
                        .send()
                        .await
                        .map_err(|e| self.map_err(key, e))
                };
                let out = self.timed(key, self.config.read_timeout, fut).await?;
                out.upload_id.ok_or_else(|| {
                    StorageError::permanent(key, &loc, "create multipart upload returned no id")
                })
            })
            .await?;

        // S3 allows at most 10,000 parts: grow the part size for huge files rather than fail.
        let part_size = self
            .config
            .upload
            .part_size
            .max(5 << 20)
            .max(size.div_ceil(10_000));
        let parts = size.div_ceil(part_size);
        let uploaded = futures::stream::iter(0..parts)
            .map(|i| {
                let loc = &loc;
                let upload_id = upload_id.clone();
                let path: PathBuf = path.to_owned();
                async move {
                    let offset = i * part_size;
                    let len = part_size.min(size - offset) as usize;
                    let src = path.clone();
                    let data = tokio::task::spawn_blocking(move || {
                        let file = std::fs::File::open(&src)?;
                        let mut buf = vec![0u8; len];
                        file.read_exact_at(&mut buf, offset)?;
                        Ok::<_, std::io::Error>(Bytes::from(buf))
                    })
                    .await
                    .map_err(|e| {
                        StorageError::permanent(key, loc, format!("file task failed: {e}"))
                    })?
                    .map_err(|e| self.file_err(key, &path, e))?;
                    let number = i as i32 + 1;
                    let etag = self
                        .config
                        .retry
                        .run(&self.stats, key, loc, || async {
                            self.stats.add_put(data.len() as u64);
                            let fut = async {
                                self.client
                                    .upload_part()
                                    .bucket(bucket)
                                    .key(key)
                                    .upload_id(&upload_id)
                                    .part_number(number)
                                    .content_length(data.len() as i64)
                                    .body(data.clone().into())
                                    .send()
                                    .await
                                    .map_err(|e| self.map_err(key, e))
                            };
                            let out = self.timed(key, self.config.put_timeout, fut).await?;
                            Ok(out.e_tag.unwrap_or_default())
                        })
                        .await?;
                    Ok::<_, StorageError>(
                        CompletedPart::builder()
                            .part_number(number)
                            .e_tag(etag)
                            .build(),
                    )
                }
            })
            .buffer_unordered(self.config.upload.concurrency.max(1))
            .try_collect::<Vec<_>>()
            .await;

        let result = match uploaded {
            Ok(mut parts) => {
                parts.sort_by_key(|p| p.part_number);
                let done = CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build();
                self.config
                    .retry
                    .run(&self.stats, key, &loc, || async {
                        self.stats.add_put(0);
                        let fut = async {
                            self.client
                                .complete_multipart_upload()
                                .bucket(bucket)
                                .key(key)
                                .upload_id(&upload_id)
                                .multipart_upload(done.clone())
                                .send()
                                .await
                                .map_err(|e| self.map_err(key, e))
                        };
                        self.timed(key, self.config.put_timeout, fut)
                            .await
                            .map(drop)
                    })
                    .await
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            let abort = self
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send();
            if let Err(e) = self
                .timed(key, self.config.read_timeout, async { Ok(abort.await) })
                .await
                .and_then(|r| r.map_err(|e| self.map_err(key, e)))
            {
                tracing::warn!(key, error = %e, "could not abort multipart upload");
            }
        }
        result
    }

    /// One whole-object GET instead of HEAD + ranged GET (a round trip less per record, manifest
    /// and sidecar); the body is read inside the retry loop, since a small object is cheaper to
    /// refetch than to resume. With `max`, a larger object is refused from its `Content-Length`
    /// before its body is read (or, without one, once more than `max` bytes arrived).
    async fn get_whole(&self, key: &str, max: Option<u64>) -> Result<Bytes, StorageError> {
        self.config
            .retry
            .run(&self.stats, key, &self.describe(), || async {
                self.stats.add_get();
                let fut = async {
                    self.client
                        .get_object()
                        .bucket(&self.config.bucket)
                        .key(key)
                        .send()
                        .await
                        .map_err(|e| self.map_err(key, e))
                };
                let out = self.timed(key, self.config.read_timeout, fut).await?;
                let expected = out.content_length.map(|n| n.max(0) as u64);
                let too_large = |size: u64, max: u64| StorageError::TooLarge {
                    key: key.to_string(),
                    location: self.describe(),
                    size,
                    max,
                };
                if let (Some(max), Some(n)) = (max, expected)
                    && n > max
                {
                    return Err(too_large(n, max));
                }
                let mut stream = body_stream(
                    out.body,
                    key.to_owned(),
                    self.describe(),
                    self.config.read_timeout,
                    self.stats.clone(),
                );
                let mut buf = BytesMut::new();
                while let Some(chunk) = stream.next().await {
                    buf.extend_from_slice(&chunk?);
                    if let Some(max) = max
                        && buf.len() as u64 > max
                    {
                        return Err(too_large(buf.len() as u64, max));
                    }
                }
                match expected {
                    Some(n) if n != buf.len() as u64 => Err(StorageError::transient(
                        key,
                        &self.describe(),
                        format!("body ended after {} of {n} bytes", buf.len()),
                    )),
                    _ => Ok(buf.freeze()),
                }
            })
            .await
    }
}

fn status_of<E>(err: &SdkError<E, aws_smithy_runtime_api::http::Response>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// Decides whether an SDK failure is "not found", transient or permanent.
fn classify<E>(
    key: &str,
    location: &str,
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = status_of(&err);
    let code = err.code().map(str::to_owned);
    let message = match (&err, status) {
        (SdkError::ServiceError(_), Some(status)) => match (code.as_deref(), err.message()) {
            (Some(code), Some(m)) => format!("HTTP {status} {code}: {m}"),
            (Some(code), None) => format!("HTTP {status} {code}"),
            (None, _) => format!("HTTP {status}"),
        },
        _ => error_chain(&err),
    };
    match &err {
        SdkError::ConstructionFailure(_) => StorageError::permanent(key, location, message),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => {
            StorageError::transient(key, location, message)
        }
        _ => {
            let transient_code = matches!(
                code.as_deref(),
                Some(
                    "SlowDown"
                        | "RequestTimeout"
                        | "InternalError"
                        | "ServiceUnavailable"
                        | "Throttling"
                )
            );
            match status {
                _ if code.as_deref() == Some("NoSuchBucket") => StorageError::permanent(
                    key,
                    location,
                    "the bucket does not exist; hint: check the bucket name, region and endpoint",
                ),
                // S3 says what is missing (`NoSuchKey`, `NoSuchBucket`, `NotFound` for a HEAD); a
                // bare 404 is a web server that is not S3 (a wrong endpoint), not a missing object.
                Some(404) if code.is_none() => StorageError::permanent(
                    key,
                    location,
                    "the endpoint answered HTTP 404 without an S3 error code, so it does not look \
                     like an S3-compatible server; hint: check the storage endpoint (`endpoint` in \
                     the config, or CAIRN_S3_ENDPOINT)",
                ),
                Some(404) => StorageError::not_found(key, location),
                Some(403) => StorageError::permanent(
                    key,
                    location,
                    format!(
                        "access denied ({message}); hint: check the credentials, or use anonymous reads for a public bucket"
                    ),
                ),
                Some(408 | 429 | 500 | 502 | 503 | 504) => {
                    StorageError::transient(key, location, message)
                }
                _ if transient_code => StorageError::transient(key, location, message),
                // A response that failed to arrive or parse whole (cut connection, truncated XML).
                Some(200..=299) | None => StorageError::transient(key, location, message),
                Some(_) => StorageError::permanent(key, location, message),
            }
        }
    }
}

#[async_trait]
impl Storage for S3Storage {
    fn describe(&self) -> String {
        format!("s3://{}", self.config.bucket)
    }

    fn bucket(&self) -> &str {
        &self.config.bucket
    }

    fn stats(&self) -> &TransferStats {
        &self.stats
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        let result = self
            .config
            .retry
            .run(&self.stats, key, &self.describe(), || async {
                self.stats.add_head();
                let fut = async {
                    self.client
                        .head_object()
                        .bucket(&self.config.bucket)
                        .key(key)
                        .send()
                        .await
                        .map_err(|e| self.map_err(key, e))
                };
                self.timed(key, self.config.read_timeout, fut).await
            })
            .await;
        match result {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: out.content_length.unwrap_or(0).max(0) as u64,
                etag: out.e_tag.map(|t| t.trim_matches('"').to_owned()),
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<ByteStream, StorageError> {
        if range.start >= range.end {
            if range.start > range.end {
                return Err(StorageError::permanent(
                    key,
                    &self.describe(),
                    format!("invalid range {}..{}", range.start, range.end),
                ));
            }
            return Ok(Box::pin(futures::stream::empty()));
        }
        let header = format!("bytes={}-{}", range.start, range.end - 1);
        let out = self
            .config
            .retry
            .run(&self.stats, key, &self.describe(), || async {
                self.stats.add_get();
                let fut = async {
                    self.client
                        .get_object()
                        .bucket(&self.config.bucket)
                        .key(key)
                        .range(&header)
                        .send()
                        .await
                        .map_err(|e| self.map_err(key, e))
                };
                self.timed(key, self.config.read_timeout, fut).await
            })
            .await?;
        // S3 answers a range that runs past the end with the bytes that exist; asking beyond the object
        // is the caller's error, so say so instead of letting it look like a truncated body.
        let want = range.end - range.start;
        if let Some(got) = out
            .content_length
            .map(|n| n.max(0) as u64)
            .filter(|&n| n != want)
        {
            let total = out
                .content_range()
                .and_then(|r| r.rsplit('/').next())
                .unwrap_or("?");
            return Err(StorageError::permanent(
                key,
                &self.describe(),
                format!(
                    "range {}..{} is outside the object of {total} bytes ({got} available)",
                    range.start, range.end
                ),
            ));
        }
        Ok(body_stream(
            out.body,
            key.to_owned(),
            self.describe(),
            self.config.read_timeout,
            self.stats.clone(),
        ))
    }

    async fn put(&self, key: &str, body: PutBody) -> Result<(), StorageError> {
        match body {
            PutBody::Bytes(b) => self.put_bytes(key, b, false).await.map(drop),
            PutBody::File(path) => self.put_file(key, &path).await,
        }
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<PutOutcome, StorageError> {
        self.put_bytes(key, body, true).await
    }

    async fn list(&self, prefix: &str, delimiter: Option<&str>) -> Result<Listing, StorageError> {
        let mut listing = Listing::default();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .config
                .retry
                .run(&self.stats, prefix, &self.describe(), || async {
                    self.stats.add_list();
                    let fut = async {
                        self.client
                            .list_objects_v2()
                            .bucket(&self.config.bucket)
                            .prefix(prefix)
                            .set_delimiter(delimiter.map(str::to_owned))
                            .set_max_keys(self.config.list_page_size)
                            .set_continuation_token(token.clone())
                            .send()
                            .await
                            .map_err(|e| self.map_err(prefix, e))
                    };
                    self.timed(prefix, self.config.read_timeout, fut).await
                })
                .await?;
            listing
                .objects
                .extend(page.contents().iter().filter_map(|o| {
                    Some(ObjectMeta {
                        key: o.key()?.to_owned(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        etag: o.e_tag().map(|t| t.trim_matches('"').to_owned()),
                    })
                }));
            listing.common_prefixes.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_owned)),
            );
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        listing.objects.sort_by(|a, b| a.key.cmp(&b.key));
        listing.common_prefixes.sort();
        listing.common_prefixes.dedup();
        Ok(listing)
    }

    async fn get_bytes(&self, key: &str) -> Result<Bytes, StorageError> {
        self.get_whole(key, None).await
    }

    async fn get_bytes_capped(&self, key: &str, max: u64) -> Result<Bytes, StorageError> {
        self.get_whole(key, Some(max)).await
    }
}

/// Adapts an SDK body to a [`ByteStream`], failing transiently when no chunk arrives within `idle`.
fn body_stream(
    body: aws_sdk_s3::primitives::ByteStream,
    key: String,
    location: String,
    idle: Duration,
    stats: Arc<TransferStats>,
) -> ByteStream {
    let stream = futures::stream::unfold(Some(body), move |state| {
        let (key, location, stats) = (key.clone(), location.clone(), stats.clone());
        async move {
            let mut body = state?;
            match tokio::time::timeout(idle, body.next()).await {
                Err(_) => Some((
                    Err(StorageError::transient(
                        &key,
                        &location,
                        format!("body stalled for {idle:?}"),
                    )),
                    None,
                )),
                Ok(None) => None,
                Ok(Some(Ok(bytes))) => {
                    stats.add_get_bytes(bytes.len() as u64);
                    Some((Ok(bytes), Some(body)))
                }
                Ok(Some(Err(e))) => Some((
                    Err(StorageError::transient(
                        &key,
                        &location,
                        format!("body failed: {}", error_chain(&e)),
                    )),
                    None,
                )),
            }
        }
    });
    Box::pin(stream)
}

/// `outer: inner: root` for an error and its sources, without the debug dumps of `DisplayErrorContext`.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        // Wrappers often repeat their source's text; keep each piece once.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}
