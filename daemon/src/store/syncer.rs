//! One process-wide pool of threads that `fdatasync` staged blobs while ingests stream.
//!
//! An `fdatasync` waits on the disk, not the CPU, and concurrent ones overlap, so an ingest hands
//! its staged files to these threads instead of syncing them one by one. The pool is shared and
//! started once: a per-ingest pool would spawn and join its threads for every archive (a stage
//! fetch ingests ~100 archives, several at a time), which showed up as a few percent of the
//! daemon's CPU time and left the thread count growing with the number of concurrent ingests.

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
                            job.batch.finish(sync(&job.path));
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

impl Batch {
    /// A new, empty batch.
    pub fn new() -> Arc<Batch> {
        Arc::new(Batch::default())
    }

    /// Queue `path` to be `fdatasync`ed as part of this batch.
    pub fn submit(self: &Arc<Batch>, path: PathBuf) {
        self.lock().pending += 1;
        let Some(pool) = pool() else {
            // No threads (the process is at its thread limit): slower, still durable.
            self.finish(sync(&path));
            return;
        };
        let job = Job {
            path,
            batch: self.clone(),
        };
        // The pool's threads never exit while the process runs, so the queue stays open.
        let sent = pool.lock().unwrap_or_else(|p| p.into_inner()).send(job);
        if let Err(mpsc::SendError(job)) = sent {
            job.batch.finish(sync(&job.path));
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
