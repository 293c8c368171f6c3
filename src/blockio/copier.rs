//! Runs [`ByteSource::read_exact_at`] calls on a few threads, for sources whose every read waits
//! a round trip (the vSphere network transport): the read-ahead then keeps up to its queue depth
//! of them in flight instead of one at a time. Results come back in completion order, tagged
//! with the request id; the read-ahead puts them back in request order.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::AlignedBuf;
use crate::error::{Error, Result};
use crate::input::ByteSource;

/// One `read_exact_at` of a request: `len` bytes at `offset` of the source into buffer bytes
/// `[at, at + len)`.
#[derive(Debug)]
pub(crate) struct Copy {
    pub offset: u64,
    pub at: usize,
    pub len: usize,
}

/// A request's copies, with the buffer they fill.
pub(crate) struct CopyTask {
    pub id: u64,
    pub buf: AlignedBuf,
    pub source: Arc<dyn ByteSource>,
    pub copies: Vec<Copy>,
}

/// A finished [`CopyTask`].
pub(crate) struct Copied {
    pub id: u64,
    pub buf: AlignedBuf,
    pub result: Result<()>,
}

/// The threads and their queues.
pub(crate) struct Copier {
    tasks: Option<Sender<CopyTask>>,
    done: Receiver<Copied>,
    /// Set on drop, so queued tasks are skipped rather than fetched for nobody.
    cancelled: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Copier {
    /// A copier with `threads` threads (at least one).
    pub fn new(threads: usize) -> Copier {
        let (tasks, queue) = unbounded::<CopyTask>();
        let (finished, done) = unbounded();
        let cancelled = Arc::new(AtomicBool::new(false));
        let threads = (0..threads.max(1))
            .map(|_| {
                let queue = queue.clone();
                let finished = finished.clone();
                let cancelled = cancelled.clone();
                std::thread::spawn(move || {
                    for task in queue {
                        if cancelled.load(Ordering::Relaxed) {
                            return;
                        }
                        // The read-ahead has gone when nobody listens: stop quietly.
                        if finished.send(run(task)).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Copier {
            tasks: Some(tasks),
            done,
            cancelled,
            threads,
        }
    }

    /// Queues `task`.
    pub fn start(&self, task: CopyTask) -> Result<()> {
        let path = task.source.path().to_path_buf();
        self.tasks
            .as_ref()
            .expect("invariant: the queue lives until drop")
            .send(task)
            .map_err(|_| Error::io(&path, None, std::io::Error::other("reader threads gone")))
    }

    /// The next finished task; `None` when every thread has gone.
    pub fn wait(&self) -> Option<Copied> {
        self.done.recv().ok()
    }
}

fn run(mut task: CopyTask) -> Copied {
    let source = task.source.clone();
    let buf = &mut task.buf;
    let copies = std::mem::take(&mut task.copies);
    // A panic in a source must reach the reader as an error, not leave it waiting for ever.
    let result = catch_unwind(AssertUnwindSafe(|| {
        copies
            .iter()
            .try_for_each(|c| source.read_exact_at(&mut buf.spare()[c.at..c.at + c.len], c.offset))
    }))
    .unwrap_or_else(|_| {
        Err(Error::io(
            source.path(),
            copies.first().map(|c| c.offset),
            std::io::Error::other("reader thread panicked"),
        ))
    });
    Copied {
        id: task.id,
        buf: task.buf,
        result,
    }
}

impl Drop for Copier {
    fn drop(&mut self) {
        // Cancelling ends each thread after its current task; joining keeps no reads
        // running behind a reader that has finished (a snapshot may be removed next).
        self.cancelled.store(true, Ordering::Relaxed);
        drop(self.tasks.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
