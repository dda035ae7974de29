//! One process-wide pool of threads that `fdatasync` blob files: the flusher's (`flush.rs`).
//!
//! An `fdatasync` waits on the disk, not the CPU, and concurrent ones overlap, so a flush hands its
//! files to these threads instead of syncing them one by one (one fsync per small file, serially,
//! would take minutes for a stage of 40k files). The pool is shared and started once, so the thread
//! count does not grow with the work.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock, mpsc};

/// Threads in the pool. More than cores on purpose: they mostly wait for the disk.
const THREADS: usize = 16;

/// One ingest's share of the pool: how many of its files are still being synced, and the first
/// error any of them hit.
#[derive(Default)]
struct BatchState {
    pending: usize,
    error: Option<io::Error>,
}

/// A set of files synced together; [`Batch::wait`] returns once all of them are durable.
#[derive(Default)]
pub struct Batch {
    state: Mutex<BatchState>,
    done: Condvar,
}

struct Job {
    path: PathBuf,
    batch: Arc<Batch>,
    /// A missing file counts as synced (it was deleted meanwhile: nothing left to make durable).
    optional: bool,
}

/// The pool's queue; `None` when not a single thread could be started (then callers sync inline).
fn pool() -> Option<&'static Mutex<mpsc::Sender<Job>>> {
    static POOL: OnceLock<Option<Mutex<mpsc::Sender<Job>>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let started = (0..THREADS)
            .filter(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("cairn-fsync-{i}"))
                    .spawn(move || {
                        loop {
                            let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                            let Ok(job) = next else { break };
                            job.batch.finish(sync_job(&job.path, job.optional));
                        }
                    })
                    .is_ok()
            })
            .count();
        (started > 0).then(|| Mutex::new(tx))
    })
    .as_ref()
}

fn sync(path: &std::path::Path) -> io::Result<()> {
    File::open(path).and_then(|f| f.sync_data())
}

fn sync_job(path: &std::path::Path, optional: bool) -> io::Result<()> {
    match sync(path) {
        Err(e) if optional && e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl Batch {
    /// A new, empty batch.
    pub fn new() -> Arc<Batch> {
        Arc::new(Batch::default())
    }

    /// Queue `path` to be `fdatasync`ed as part of this batch.
    pub fn submit(self: &Arc<Batch>, path: PathBuf) {
        self.enqueue(path, false);
    }

    /// Like [`Batch::submit`], but a file deleted before its turn counts as synced.
    pub fn submit_if_present(self: &Arc<Batch>, path: PathBuf) {
        self.enqueue(path, true);
    }

    fn enqueue(self: &Arc<Batch>, path: PathBuf, optional: bool) {
        self.lock().pending += 1;
        let Some(pool) = pool() else {
            // No threads (the process is at its thread limit): slower, still durable.
            self.finish(sync_job(&path, optional));
            return;
        };
        let job = Job {
            path,
            batch: self.clone(),
            optional,
        };
        // The pool's threads never exit while the process runs, so the queue stays open.
        let sent = pool.lock().unwrap_or_else(|p| p.into_inner()).send(job);
        if let Err(mpsc::SendError(job)) = sent {
            job.batch.finish(sync_job(&job.path, job.optional));
        }
    }

    /// Block until every submitted file is synced; the first error, if any.
    pub fn wait(&self) -> io::Result<()> {
        let mut state = self.lock();
        while state.pending > 0 {
            state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        match state.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn finish(&self, result: io::Result<()>) {
        let mut state = self.lock();
        state.pending -= 1;
        if let Err(e) = result {
            state.error.get_or_insert(e);
        }
        if state.pending == 0 {
            self.done.notify_all();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BatchState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_every_file_and_reports_the_first_error() {
        let dir = tempfile::tempdir().unwrap();
        let batch = Batch::new();
        for i in 0..50 {
            let p = dir.path().join(format!("f{i}"));
            std::fs::write(&p, b"data").unwrap();
            batch.submit(p);
        }
        batch.wait().unwrap();

        let batch = Batch::new();
        batch.submit(dir.path().join("f0"));
        batch.submit(dir.path().join("missing"));
        let err = batch.wait().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // An empty batch is immediately complete.
        Batch::new().wait().unwrap();
    }
}
