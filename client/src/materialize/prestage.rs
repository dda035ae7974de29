//! Prestaging: on a cold fetch into an empty destination, copy each blob out of the CAS as soon as
//! the daemon says where it is, while the daemon is still downloading and decoding the rest, so
//! materialization afterwards only *moves* those copies into place (a rename) instead of copying
//! then. The two halves of a cold bootstrap — the daemon's ingest and the client's writes —
//! overlap instead of running one after the other.
//!
//! Copies go to `{dest}/.cairn-prestage/{thread}/{hex}` (the destination's file system, so the move
//! is a rename), one per distinct blob, on [`THREADS`] threads, each creating files in a directory of
//! its own: a file's creation holds its directory's lock while the file system allocates the inode,
//! and two threads sharing one directory spent as much CPU spinning on that lock as copying. [`Prestager::finish`] waits for the
//! queue to drain (by then the daemon is done, and the copies keep pace with its decoding, so little
//! is left); [`Prestaged`] then hands each copy to the materializer once
//! ([`BlobSource::take_copy`]) and the CAS paths for everything else. The directory is removed when
//! the [`Prestaged`] (or an unfinished [`Prestager`]) is dropped, and at the start of the next
//! prestage (debris of a killed run).
//!
//! Only for destinations without a state file (nothing there can be kept, so every blob is
//! written anyway): an incremental re-bootstrap copies only what changed, after the plan says so.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use cairn_fingerprint::Blake3;

use super::BlobSource;

/// Name of the prestage directory under the destination.
pub const PRESTAGE_DIR: &str = ".cairn-prestage";

/// Copying threads: the copies are kernel-side (`copy_file_range`) and mostly wait for the page
/// cache and the disk; two keep up with a daemon decoding on every core.
const THREADS: usize = 2;

struct Job {
    digest: Blake3,
    cas_path: PathBuf,
    size: u64,
}

struct Shared {
    dir: PathBuf,
    ready: Mutex<HashMap<Blake3, PathBuf>>,
    cancel: AtomicBool,
}

/// Copies blobs into the prestage directory in the background.
pub struct Prestager {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    submitted: HashSet<Blake3>,
}

impl Prestager {
    /// Start prestaging into `{dest}/.cairn-prestage`, replacing what a killed run left there.
    pub fn start(dest: &Path) -> io::Result<Prestager> {
        let dir = dest.join(PRESTAGE_DIR);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&dir)?,
            Ok(_) => fs::remove_file(&dir)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fs::create_dir_all(&dir)?;
        let shared = Arc::new(Shared {
            dir,
            ready: Mutex::new(HashMap::new()),
            cancel: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..THREADS)
            .filter_map(|i| {
                let (rx, shared) = (rx.clone(), shared.clone());
                let own = shared.dir.join(i.to_string());
                fs::create_dir(&own).ok()?;
                std::thread::Builder::new()
                    .name(format!("cairn-prestage-{i}"))
                    .spawn(move || {
                        loop {
                            let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                            let Ok(job) = next else { return };
                            if shared.cancel.load(Ordering::Relaxed) {
                                continue;
                            }
                            // A copy that fails is simply not offered: materialization copies
                            // that blob from the CAS itself and reports a real problem there.
                            if let Ok(path) = copy(&own, &job) {
                                shared
                                    .ready
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .insert(job.digest, path);
                            }
                        }
                    })
                    .ok()
            })
            .collect();
        Ok(Prestager {
            shared,
            tx: Some(tx),
            threads,
            submitted: HashSet::new(),
        })
    }

    /// Queue a copy of the blob `digest` (`size` bytes at `cas_path`); each digest once.
    pub fn submit(&mut self, digest: Blake3, cas_path: PathBuf, size: u64) {
        if !self.submitted.insert(digest) {
            return;
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(Job {
                digest,
                cas_path,
                size,
            });
        }
    }

    /// Wait for the queued copies, and hand them over along with the CAS paths of every blob.
    pub fn finish(mut self, cas: HashMap<Blake3, PathBuf>) -> Prestaged {
        self.stop_threads();
        let ready =
            std::mem::take(&mut *self.shared.ready.lock().unwrap_or_else(|p| p.into_inner()));
        Prestaged {
            cas,
            ready: Mutex::new(ready),
            dir: self.shared.dir.clone(),
        }
    }

    fn stop_threads(&mut self) {
        drop(self.tx.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Prestager {
    /// Not finished (the fetch failed): drop the queue, wait for the copies in progress, and remove
    /// the directory. After [`Prestager::finish`] the directory belongs to the [`Prestaged`].
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.shared.cancel.store(true, Ordering::Relaxed);
            self.stop_threads();
            let _ = fs::remove_dir_all(&self.shared.dir);
        }
    }
}

/// Copy one blob to `{dir}/{hex}`: created exclusively, size checked, owner-only until the
/// materializer gives it its mode.
fn copy(dir: &Path, job: &Job) -> io::Result<PathBuf> {
    let path = dir.join(job.digest.to_hex());
    let mut src = File::open(&job.cas_path)?;
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)?;
    // `io::copy` between two files is `copy_file_range` on Linux: no bytes through user space.
    let n = io::copy(&mut src, &mut dst)?;
    if n != job.size {
        let _ = fs::remove_file(&path);
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("blob {} is {n} bytes, expected {}", job.digest, job.size),
        ));
    }
    Ok(path)
}

/// Finished prestaged copies plus the CAS paths: a [`BlobSource`] whose copies are each taken once.
pub struct Prestaged {
    cas: HashMap<Blake3, PathBuf>,
    ready: Mutex<HashMap<Blake3, PathBuf>>,
    dir: PathBuf,
}

impl Prestaged {
    /// Copies ready to be moved into place.
    pub fn ready(&self) -> usize {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl BlobSource for Prestaged {
    fn blob_path(&self, digest: &Blake3) -> Option<PathBuf> {
        self.cas.get(digest).cloned()
    }

    fn take_copy(&self, digest: &Blake3) -> Option<PathBuf> {
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(digest)
    }
}

impl Drop for Prestaged {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_taken_once_and_the_directory_goes_with_them() {
        let tmp = tempfile::tempdir().unwrap();
        let cas = tmp.path().join("cas");
        fs::create_dir_all(&cas).unwrap();
        let dest = tmp.path().join("dest");
        fs::create_dir_all(&dest).unwrap();
        let mut paths = HashMap::new();
        let mut p = Prestager::start(&dest).unwrap();
        for i in 0..20u8 {
            let content = vec![i; 1000 + i as usize];
            let d = Blake3::of(&content);
            let at = cas.join(d.to_hex());
            fs::write(&at, &content).unwrap();
            p.submit(d, at.clone(), content.len() as u64);
            p.submit(d, at.clone(), content.len() as u64);
            paths.insert(d, at);
        }
        // A blob whose size is not what the daemon said is not offered.
        let liar = Blake3::of(b"liar");
        fs::write(cas.join("liar"), b"short").unwrap();
        p.submit(liar, cas.join("liar"), 999);
        let staged = p.finish(paths.clone());
        assert_eq!(staged.ready(), 20);
        assert!(staged.take_copy(&liar).is_none());
        for (d, at) in &paths {
            let copy = staged.take_copy(d).expect("prestaged");
            // In one of the threads' own directories.
            let thread_dir = copy.parent().unwrap();
            assert_eq!(thread_dir.parent().unwrap(), dest.join(PRESTAGE_DIR));
            assert!(
                thread_dir
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .parse::<usize>()
                    .unwrap()
                    < THREADS
            );
            assert_eq!(fs::read(&copy).unwrap(), fs::read(at).unwrap());
            assert!(staged.take_copy(d).is_none(), "a copy is handed out once");
            assert_eq!(staged.blob_path(d).as_ref(), Some(at));
        }
        let dir = dest.join(PRESTAGE_DIR);
        assert!(dir.exists());
        drop(staged);
        assert!(!dir.exists());

        // An unfinished prestage (the fetch failed) cleans up after itself too.
        let mut p = Prestager::start(&dest).unwrap();
        let (d, at) = paths.iter().next().unwrap();
        p.submit(*d, at.clone(), fs::metadata(at).unwrap().len());
        drop(p);
        assert!(!dir.exists());
    }
}
