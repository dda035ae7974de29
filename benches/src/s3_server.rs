//! An S3-compatible server over a local directory (`s3s-fs`), for the cold-path benchmark.
//!
//! moto, the S3 server of the tests, answers every ranged GET by reading the whole object and
//! slicing it, so a download in 8 MiB ranges (what TheRock's boto3 and `cairnd` both do) costs it
//! the object's size once per range: ~7 CPU-s per 1 GB stage, on the same two cores as the fetch
//! being measured. Real S3 charges a CI runner nothing for serving. This server reads each range
//! from its file, so `benches/cold.sh --s3-server s3s` measures the fetch, not the stand-in.
//!
//! `s3s-fs` answers every request but one as it is. Its GET body reads the file 4 KiB at a time, a
//! blocking-pool hop each: ~3 CPU-s per 1 GB stage, and the client gets its bytes in 4 KiB TCP
//! writes, as no S3 endpoint sends them. [`BenchS3::get_object`] keeps its headers (range, ETag,
//! length) and sends the same bytes in 1 MiB reads.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use anyhow::{Context, Result};
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result};
use tokio::net::TcpListener;

/// Bytes per read of a GET body.
const READ_SIZE: u64 = 1 << 20;

/// Where and how [`serve`] listens.
#[derive(Debug, Clone)]
pub struct S3ServerOptions {
    /// Directory holding the buckets (one subdirectory each).
    pub root: PathBuf,
    /// Written with the server's `http://127.0.0.1:PORT` once it accepts connections (the port is
    /// the kernel's choice, so two servers never race for one).
    pub endpoint_file: PathBuf,
    /// Access key and secret every request must be signed with (SigV4).
    pub access_key: String,
    /// See `access_key`.
    pub secret_key: String,
}

/// Serve S3 on 127.0.0.1 until the process is killed.
pub async fn serve(opts: &S3ServerOptions) -> Result<()> {
    std::fs::create_dir_all(&opts.root)
        .with_context(|| format!("creating `{}`", opts.root.display()))?;
    let root = opts
        .root
        .canonicalize()
        .with_context(|| format!("resolving `{}`", opts.root.display()))?;
    let fs = s3s_fs::FileSystem::new(&root)
        .map_err(|e| anyhow::anyhow!("serving `{}`: {e:?}", root.display()))?;
    let mut builder = S3ServiceBuilder::new(BenchS3 { fs, root });
    builder.set_auth(SimpleAuth::from_single(
        opts.access_key.clone(),
        opts.secret_key.clone(),
    ));
    let service = builder.build();

    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    write_endpoint(&opts.endpoint_file, &format!("http://{addr}"))?;
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let (socket, _) = listener.accept().await?;
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            // A client that hangs up mid-response is not the server's failure.
            let _ = conn.await;
        });
    }
}

/// Write `endpoint` to `path` whole or not at all (temp file, then rename), so a reader polling for
/// the file never sees half an address.
fn write_endpoint(path: &Path, endpoint: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, endpoint).with_context(|| format!("writing `{}`", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing `{}`", path.display()))?;
    Ok(())
}

/// `s3s-fs` with GET bodies read in [`READ_SIZE`] pieces.
struct BenchS3 {
    fs: s3s_fs::FileSystem,
    /// The canonical root `fs` serves (a bucket is a directory below it, a key a path below that).
    root: PathBuf,
}

/// Requests answered by `s3s-fs` unchanged: its future as it is, in the shape `async_trait` gives
/// the trait's methods (the attribute does not see into a macro's output).
macro_rules! delegate {
    ($($name:ident($input:ident) -> $output:ident;)*) => {
        $(
            fn $name<'life0, 'async_trait>(
                &'life0 self,
                req: S3Request<$input>,
            ) -> Pin<Box<dyn Future<Output = S3Result<S3Response<$output>>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                self.fs.$name(req)
            }
        )*
    };
}

#[async_trait::async_trait]
impl S3 for BenchS3 {
    delegate! {
        create_bucket(CreateBucketInput) -> CreateBucketOutput;
        head_bucket(HeadBucketInput) -> HeadBucketOutput;
        list_buckets(ListBucketsInput) -> ListBucketsOutput;
        get_bucket_location(GetBucketLocationInput) -> GetBucketLocationOutput;
        put_object(PutObjectInput) -> PutObjectOutput;
        head_object(HeadObjectInput) -> HeadObjectOutput;
        delete_object(DeleteObjectInput) -> DeleteObjectOutput;
        delete_objects(DeleteObjectsInput) -> DeleteObjectsOutput;
        list_objects(ListObjectsInput) -> ListObjectsOutput;
        list_objects_v2(ListObjectsV2Input) -> ListObjectsV2Output;
        create_multipart_upload(CreateMultipartUploadInput) -> CreateMultipartUploadOutput;
        upload_part(UploadPartInput) -> UploadPartOutput;
        complete_multipart_upload(CompleteMultipartUploadInput) -> CompleteMultipartUploadOutput;
        abort_multipart_upload(AbortMultipartUploadInput) -> AbortMultipartUploadOutput;
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let path = self.root.join(&req.input.bucket).join(&req.input.key);
        // s3s-fs resolves the request (missing key, bad range) and writes the headers; only its
        // body is replaced, by the same bytes in larger reads.
        let mut resp = self.fs.get_object(req).await?;
        let out = &mut resp.output;
        let len = out.content_length.unwrap_or(0).max(0) as u64;
        let start = match &out.content_range {
            // `bytes START-END/SIZE`
            Some(range) => range
                .strip_prefix("bytes ")
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| s3s::s3_error!(InternalError, "unexpected Content-Range {range}"))?,
            None => 0,
        };
        // The file s3s-fs has just opened: it resolves `bucket/key` under its root the same way and
        // refuses a key that would escape it, so reaching here means the path is inside.
        let file = std::sync::Arc::new(
            std::fs::File::open(&path).map_err(|e| s3s::s3_error!(e, InternalError))?,
        );
        let body = futures::stream::try_unfold(start, move |offset| {
            let file = file.clone();
            async move {
                let end = start + len;
                if offset >= end {
                    return Ok(None);
                }
                let n = READ_SIZE.min(end - offset) as usize;
                let chunk = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0; n];
                    file.read_exact_at(&mut buf, offset).map(|()| buf)
                })
                .await
                .map_err(std::io::Error::other)??;
                Ok::<_, std::io::Error>(Some((Bytes::from(chunk), offset + n as u64)))
            }
        });
        out.body = Some(StreamingBlob::wrap(body));
        Ok(resp)
    }
}
