//! Local directory backend: a bucket laid out on disk, the embedded default that needs no cloud account.
//!
//! Layout: object `key` is the file `{root}/{key}`, exactly like TheRock's `--local-staging-dir`
//! (`{root}/{run_id}-{platform}/{archive}`), so a staging directory is readable as a bucket and back.
//! Every write goes to a hidden temp file in the target directory (`.{name}.cairn-tmp-*`, never listed),
//! is fsynced, then renamed (or hard-linked for [`Storage::put_if_absent`], which fails on an existing
//! name) into place, and the directory is fsynced: readers never see a partial object.
//! All file I/O runs on the blocking pool, never on the runtime threads.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{
    ByteStream, Listing, ObjectMeta, PutBody, PutOutcome, Storage, StorageError, TransferStats,
};

/// Marks temp files so listings skip them and a crashed writer's leftovers are recognisable.
const TEMP_MARKER: &str = ".cairn-tmp-";
/// Size of each read of a ranged GET.
const READ_CHUNK: usize = 256 * 1024;

/// A directory used as a bucket.
#[derive(Debug)]
pub struct LocalStorage {
    root: PathBuf,
    /// Shared with the streams this backend returns, which may outlive a borrow of it.
    stats: Arc<TransferStats>,
}

impl LocalStorage {
    /// Opens (creating it if missing) the directory `root` as a bucket.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        let fail = |e: std::io::Error| {
            StorageError::permanent(
                "",
                &format!("file://{}", root.display()),
                format!("cannot open root: {e}"),
            )
        };
        std::fs::create_dir_all(&root).map_err(fail)?;
        let root = std::path::absolute(&root).map_err(fail)?;
        Ok(Self {
            root,
            stats: Arc::default(),
        })
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds `key`, after checking the key cannot leave the root.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StorageError> {
        validate_key(key).map_err(|why| StorageError::permanent(key, &self.describe(), why))?;
        Ok(self.root.join(key))
    }

    /// Runs blocking file work on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        key: &str,
        f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        tokio::task::spawn_blocking(f).await.map_err(|e| {
            StorageError::permanent(key, &self.describe(), format!("file task failed: {e}"))
        })?
    }

    fn ctx(&self, key: &str) -> Ctx {
        Ctx {
            key: key.to_owned(),
            location: self.describe(),
        }
    }
}

/// What a blocking closure needs to build errors without borrowing the backend.
struct Ctx {
    key: String,
    location: String,
}

impl Ctx {
    fn err(&self, what: &str, e: std::io::Error) -> StorageError {
        if e.kind() == std::io::ErrorKind::NotFound {
            StorageError::not_found(&self.key, &self.location)
        } else {
            StorageError::permanent(&self.key, &self.location, format!("{what}: {e}"))
        }
    }
}

/// Keys are relative `/`-separated paths without empty, `.` or `..` segments.
fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("invalid key: empty".into());
    }
    if key.contains('\0') {
        return Err("invalid key: contains NUL".into());
    }
    for seg in key.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(format!(
                "invalid key: segment `{seg}` (keys are relative paths without `.`, `..` or `//`)"
            ));
        }
        if seg.contains(TEMP_MARKER) {
            return Err(format!(
                "invalid key: `{TEMP_MARKER}` is reserved for temp files"
            ));
        }
    }
    Ok(())
}

fn temp_path(target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(".{name}{TEMP_MARKER}{}-{n}", std::process::id()))
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Removes the temp file when a write fails half-way.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes `body` to a fsynced temp file next to `target`; returns its guard.
fn write_temp(target: &Path, body: &PutBody, ctx: &Ctx) -> Result<(TempGuard, u64), StorageError> {
    let dir = target
        .parent()
        .expect("a validated key has a parent under the root");
    std::fs::create_dir_all(dir).map_err(|e| ctx.err("cannot create directory", e))?;
    let tmp = temp_path(target);
    let guard = TempGuard(Some(tmp.clone()));
    let len = match body {
        PutBody::Bytes(b) => {
            std::fs::write(&tmp, b).map_err(|e| ctx.err("cannot write temp file", e))?;
            b.len() as u64
        }
        PutBody::File(src) => std::fs::copy(src, &tmp).map_err(|e| {
            StorageError::permanent(
                &ctx.key,
                &ctx.location,
                format!("cannot copy `{}`: {e}", src.display()),
            )
        })?,
    };
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| ctx.err("cannot fsync temp file", e))?;
    Ok((guard, len))
}

fn meta_of(key: String, md: &std::fs::Metadata) -> ObjectMeta {
    let mtime = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    ObjectMeta {
        etag: Some(format!("{mtime:x}-{:x}", md.len())),
        size: md.len(),
        key,
    }
}

/// Collects every object file below `dir` whose key starts with `prefix`.
fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<ObjectMeta>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // A prefix through a missing directory, or through a file, simply matches nothing.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.contains(TEMP_MARKER) {
            continue;
        }
        let path = entry.path();
        let rel = path.strip_prefix(root).expect("walk stays under the root");
        let key = rel.to_string_lossy().into_owned();
        let md = std::fs::metadata(&path)?;
        if md.is_dir() {
            // Descend only where keys below can still match the prefix.
            let dir_key = format!("{key}/");
            if dir_key.starts_with(prefix) || prefix.starts_with(&dir_key) {
                walk(root, &path, prefix, out)?;
            }
        } else if md.is_file() && key.starts_with(prefix) {
            out.push(meta_of(key, &md));
        }
    }
    Ok(())
}

#[async_trait]
impl Storage for LocalStorage {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn bucket(&self) -> &str {
        "local"
    }

    fn stats(&self) -> &TransferStats {
        &self.stats
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        let path = self.path_of(key)?;
        self.stats.add_head();
        let ctx = self.ctx(key);
        self.blocking(key, move || match std::fs::metadata(&path) {
            Ok(md) if md.is_file() => Ok(Some(meta_of(ctx.key.clone(), &md))),
            Ok(_) => Ok(None),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(ctx.err("cannot stat", e)),
        })
        .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<ByteStream, StorageError> {
        let path = self.path_of(key)?;
        self.stats.add_get();
        let ctx = self.ctx(key);
        let r = range.clone();
        let file = self
            .blocking(key, move || {
                let mut file = std::fs::File::open(&path).map_err(|e| ctx.err("cannot open", e))?;
                let size = file
                    .metadata()
                    .map_err(|e| ctx.err("cannot stat", e))?
                    .len();
                if r.start > r.end || r.end > size {
                    return Err(StorageError::permanent(
                        &ctx.key,
                        &ctx.location,
                        format!(
                            "range {}..{} is outside the object of {size} bytes",
                            r.start, r.end
                        ),
                    ));
                }
                file.seek(SeekFrom::Start(r.start))
                    .map_err(|e| ctx.err("cannot seek", e))?;
                Ok(file)
            })
            .await?;
        let ctx = Arc::new(self.ctx(key));
        // Reads happen one chunk at a time on the blocking pool; the file moves in and out of each task.
        let remaining = range.end - range.start;
        let stream = futures::stream::try_unfold(
            (file, remaining, ctx),
            |(mut file, left, ctx)| async move {
                if left == 0 {
                    return Ok(None);
                }
                let want = left.min(READ_CHUNK as u64) as usize;
                let task_ctx = ctx.clone();
                let (file, buf) = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; want];
                    file.read_exact(&mut buf)
                        .map_err(|e| task_ctx.err("cannot read", e))?;
                    Ok::<_, StorageError>((file, buf))
                })
                .await
                .map_err(|e| {
                    StorageError::permanent(
                        &ctx.key,
                        &ctx.location,
                        format!("file task failed: {e}"),
                    )
                })??;
                Ok(Some((Bytes::from(buf), (file, left - want as u64, ctx))))
            },
        );
        let stats = self.stats.clone();
        let counted = stream.inspect(move |item| {
            if let Ok(b) = item {
                stats.add_get_bytes(b.len() as u64);
            }
        });
        Ok(Box::pin(counted))
    }

    async fn put(&self, key: &str, body: PutBody) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        let ctx = self.ctx(key);
        let len = self
            .blocking(key, move || {
                let (mut guard, len) = write_temp(&path, &body, &ctx)?;
                let tmp = guard.0.take().expect("guard holds the temp path");
                std::fs::rename(&tmp, &path).map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    ctx.err("cannot rename into place", e)
                })?;
                fsync_dir(path.parent().expect("has parent"))
                    .map_err(|e| ctx.err("cannot fsync directory", e))?;
                Ok(len)
            })
            .await?;
        self.stats.add_put(len);
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<PutOutcome, StorageError> {
        let path = self.path_of(key)?;
        let ctx = self.ctx(key);
        self.stats.add_put(body.len() as u64);
        self.blocking(key, move || {
            let (guard, _) = write_temp(&path, &PutBody::Bytes(body), &ctx)?;
            let tmp = guard.0.as_ref().expect("guard holds the temp path");
            // link(2) fails with EEXIST when the name exists: an atomic "create if absent" that, unlike
            // O_EXCL on the final name, never exposes a partially written file.
            match std::fs::hard_link(tmp, &path) {
                Ok(()) => {
                    fsync_dir(path.parent().expect("has parent"))
                        .map_err(|e| ctx.err("cannot fsync directory", e))?;
                    Ok(PutOutcome::Created)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Ok(PutOutcome::AlreadyExists)
                }
                Err(e) => Err(ctx.err("cannot link into place", e)),
            }
            // `guard` removes the temp name in both cases.
        })
        .await
    }

    async fn list(&self, prefix: &str, delimiter: Option<&str>) -> Result<Listing, StorageError> {
        self.stats.add_list();
        let root = self.root.clone();
        let start = match prefix.rfind('/') {
            Some(at) => {
                let dir = &prefix[..at];
                validate_key(dir)
                    .map_err(|why| StorageError::permanent(prefix, &self.describe(), why))?;
                root.join(dir)
            }
            None => root.clone(),
        };
        let ctx = self.ctx(prefix);
        let owned_prefix = prefix.to_owned();
        let mut objects = self
            .blocking(prefix, move || {
                let mut out = Vec::new();
                walk(&root, &start, &owned_prefix, &mut out)
                    .map_err(|e| ctx.err("cannot list", e))?;
                Ok(out)
            })
            .await?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(super::group_listing(prefix, delimiter, objects))
    }

    async fn get_bytes(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = self.path_of(key)?;
        self.stats.add_get();
        let ctx = self.ctx(key);
        let bytes = self
            .blocking(key, move || {
                std::fs::read(&path).map_err(|e| ctx.err("cannot read", e))
            })
            .await?;
        self.stats.add_get_bytes(bytes.len() as u64);
        Ok(Bytes::from(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_root() {
        for bad in [
            "",
            "/abs",
            "a/../b",
            "a//b",
            "./a",
            "a/",
            "x/.y.cairn-tmp-1",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "a",
            "123-linux/blas_lib_gfx94X.tar.zst",
            "p/cairn/fp/abc/1-linux",
            "a/.hidden",
        ] {
            assert!(validate_key(good).is_ok(), "{good:?} rejected");
        }
    }

    #[tokio::test]
    async fn invalid_key_is_a_permanent_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path()).unwrap();
        let err = s
            .put("../escape", PutBody::Bytes(Bytes::from_static(b"x")))
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Permanent { .. }));
        assert!(err.to_string().contains("`../escape`"), "{err}");
        assert!(!dir.path().parent().unwrap().join("escape").exists());
    }

    #[tokio::test]
    async fn temp_files_are_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path()).unwrap();
        s.put("r/a", PutBody::Bytes(Bytes::from_static(b"1")))
            .await
            .unwrap();
        std::fs::write(dir.path().join("r/.b.cairn-tmp-9-9"), b"partial").unwrap();
        let l = s.list("r/", None).await.unwrap();
        assert_eq!(
            l.objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
            ["r/a"]
        );
    }
}
