//! Queued positional writes: a write-behind queue that keeps up to `queue_depth` write requests
//! in flight through a `crate::blockio` [`Engine`] (io_uring `IORING_OP_WRITE`, or `pwrite` in
//! the fallback) and recycles their buffers once the device has taken the bytes.
//!
//! SAN write-back (`crate::restore::writeback`) is its only user: it copies each restored piece
//! into a pooled, page-aligned [`AlignedBuf`], cuts it into [`DeviceWrite`]s (one per device
//! range of the target's runs, each through the handle [`super::DirectFile::handle_for`] picks)
//! and [`WriteQueue::submit`]s them. Writes may complete in any order: the
//! caller guarantees that no two writes in flight overlap on a device (every disk byte is
//! written once). The first failed write is returned by the next `submit` or [`WriteQueue::flush`]
//! and names the LUN path and the device offset; the writes still in flight are drained by the
//! engine when the queue is dropped.
//!
//! Durability is the caller's job: `flush` only waits until the kernel has accepted every
//! write; the caller then `fdatasync`s each device it wrote to.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::blockio::{
    engine, AlignedBuf, Engine, ReadOptions, SubWrite, DIRECT_ALIGN, MAX_QUEUE_DEPTH,
};
use crate::error::{Error, Result};

const EINVAL: i32 = rustix::io::Errno::INVAL.raw_os_error();

/// One device write: `len` bytes of the request buffer from `at` to `offset` of `file`.
#[derive(Clone, Debug)]
pub struct DeviceWrite {
    /// The device path, for errors.
    pub path: Arc<Path>,
    /// The device opened for writing (possibly `O_DIRECT`: then offset, length and `at` must
    /// be [`DIRECT_ALIGN`]-aligned).
    pub file: Arc<File>,
    /// Byte offset on the device.
    pub offset: u64,
    /// Start in the request buffer.
    pub at: usize,
    /// Length in bytes.
    pub len: usize,
    /// The buffered handle when `file` is an `O_DIRECT` one: a write the device refuses with
    /// `EINVAL` is redone through it ([`super::DirectFile`]'s fallback rule).
    pub fallback: Option<Arc<File>>,
}

/// Per request in flight: each sub-write, for retries and error messages.
type Placement = Vec<DeviceWrite>;

/// The write-behind queue.
pub struct WriteQueue {
    // Declared first so it drops first: the engine drains its in-flight writes while nothing
    // else (buffers, files) has been freed yet.
    engine: Box<dyn Engine>,
    pending: HashMap<u64, Placement>,
    pool: Vec<AlignedBuf>,
    queue_depth: usize,
    next_id: u64,
    notice: Option<String>,
    written: u64,
}

impl WriteQueue {
    /// A queue writing through the engine `opts` ask for (`VDAR_IO_BACKEND` applies, as for
    /// reads).
    pub fn new(opts: &ReadOptions) -> Result<WriteQueue> {
        let (engine, notice) = engine(opts)?;
        Ok(WriteQueue {
            engine,
            pending: HashMap::new(),
            pool: Vec::new(),
            queue_depth: opts.queue_depth.clamp(1, MAX_QUEUE_DEPTH),
            next_id: 0,
            notice: notice.map(|n| n.replace("reading with pread", "writing with pwrite")),
            written: 0,
        })
    }

    /// The fallback notice, if io_uring was unavailable.
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    /// The engine in use.
    pub fn backend_name(&self) -> &'static str {
        self.engine.name()
    }

    /// Bytes the devices have accepted so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// A buffer of `len` bytes (contents unspecified: fill all of `spare()[..len]`).
    pub fn buffer(&mut self, len: usize) -> AlignedBuf {
        let mut b = match self.pool.iter().position(|b| b.capacity() >= len) {
            Some(i) => self.pool.swap_remove(i),
            None => AlignedBuf::new(len.next_multiple_of(DIRECT_ALIGN)),
        };
        b.set_len(len);
        b
    }

    /// Hands `buf` and its writes to the engine, first waiting for a free slot when
    /// `queue_depth` requests are in flight. Returns the first write error seen.
    pub fn submit(&mut self, buf: AlignedBuf, writes: Vec<DeviceWrite>) -> Result<()> {
        for w in &writes {
            if w.at + w.len > buf.len() {
                return Err(Error::Usage(format!(
                    "internal: write of {} bytes at buffer byte {} exceeds the {}-byte buffer",
                    w.len,
                    w.at,
                    buf.len()
                )));
            }
        }
        if writes.is_empty() {
            self.recycle(buf);
            return Ok(());
        }
        while self.pending.len() >= self.queue_depth {
            self.reap_one()?;
        }
        let id = self.next_id;
        self.next_id += 1;
        let subs: Vec<SubWrite> = writes
            .iter()
            .map(|w| SubWrite {
                file: w.file.clone(),
                offset: w.offset,
                at: w.at,
                len: w.len,
            })
            .collect();
        self.engine
            .start_write(id, buf, subs)
            .map_err(|e| Error::io(writes[0].path.as_ref(), Some(writes[0].offset), e))?;
        self.pending.insert(id, writes);
        Ok(())
    }

    /// Waits until every submitted write has completed; returns the first error.
    pub fn flush(&mut self) -> Result<()> {
        while !self.pending.is_empty() {
            self.reap_one()?;
        }
        Ok(())
    }

    fn recycle(&mut self, mut buf: AlignedBuf) {
        if self.pool.len() < self.queue_depth {
            buf.set_len(0);
            self.pool.push(buf);
        }
    }

    fn reap_one(&mut self) -> Result<()> {
        let c = self
            .engine
            .wait()
            .map_err(|e| Error::io("io engine", None, e))?
            .ok_or_else(|| Error::Usage("internal: no write in flight".into()))?;
        let place = self
            .pending
            .remove(&c.id)
            .ok_or_else(|| Error::Usage(format!("internal: unknown write request {}", c.id)))?;
        for (w, r) in place.iter().zip(c.results) {
            let r = match (r, &w.fallback) {
                (Err(e), Some(buffered)) if e.raw_os_error() == Some(EINVAL) => {
                    buffered.write_all_at(&c.buf[w.at..w.at + w.len], w.offset)
                }
                (r, _) => r,
            };
            r.map_err(|e| Error::io(w.path.as_ref(), Some(w.offset), e))?;
        }
        self.written += c.buf.len() as u64;
        self.recycle(c.buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockio::{uring, Backend};

    fn write_pattern(backend: Backend, qd: usize, path: &Path) -> Result<()> {
        let file = Arc::new(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap(),
        );
        let mut q = WriteQueue::new(&ReadOptions {
            queue_depth: qd,
            backend,
        })?;
        let p: Arc<Path> = Arc::from(path);
        // 40 requests of 3 scattered sub-writes each, in reverse device order.
        for i in (0..40u64).rev() {
            let mut b = q.buffer(3 * 5000);
            for (k, x) in b.spare()[..15000].iter_mut().enumerate() {
                *x = (i as usize * 31 + k) as u8;
            }
            let writes = (0..3)
                .map(|k| DeviceWrite {
                    path: p.clone(),
                    file: file.clone(),
                    offset: (k * 40 + i) * 5000,
                    at: k as usize * 5000,
                    len: 5000,
                    fallback: None,
                })
                .collect();
            q.submit(b, writes)?;
        }
        q.flush()?;
        assert_eq!(q.bytes_written(), 40 * 15000);
        Ok(())
    }

    #[test]
    fn uring_and_pwrite_write_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, vec![0u8; 120 * 5000]).unwrap();
        std::fs::write(&b, vec![0u8; 120 * 5000]).unwrap();
        write_pattern(Backend::Pread, 4, &a).unwrap();
        let img = std::fs::read(&a).unwrap();
        assert_eq!(img[5000 * 41], (31 + 5000usize) as u8);
        if uring::probe().is_err() {
            eprintln!("skipped io_uring half: {:?}", uring::probe().err());
            return;
        }
        for qd in [1, 3, 64] {
            std::fs::write(&b, vec![0u8; 120 * 5000]).unwrap();
            write_pattern(Backend::Uring, qd, &b).unwrap();
            assert!(std::fs::read(&b).unwrap() == img, "qd {qd}");
        }
    }

    #[test]
    fn write_errors_name_path_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("ro");
        std::fs::write(&a, [0u8; 16]).unwrap();
        // A read-only descriptor: every write fails with EBADF.
        let file = Arc::new(File::open(&a).unwrap());
        for backend in [Backend::Pread, Backend::Auto] {
            let e = write_once(backend, &a, &file, 0x1234, 8, None).unwrap_err();
            let e = e.to_string();
            assert!(e.contains("ro") && e.contains("0x1234"), "{e}");
        }
    }

    /// Writes `len` bytes of 7s to `offset` of `file` through a new queue.
    fn write_once(
        backend: Backend,
        path: &Path,
        file: &Arc<File>,
        offset: u64,
        len: usize,
        fallback: Option<Arc<File>>,
    ) -> Result<()> {
        let mut q = WriteQueue::new(&ReadOptions {
            queue_depth: 2,
            backend,
        })?;
        let mut b = q.buffer(len);
        b.spare()[..len].fill(7);
        let w = DeviceWrite {
            path: Arc::from(path),
            file: file.clone(),
            offset,
            at: 0,
            len,
            fallback,
        };
        q.submit(b, vec![w]).and_then(|()| q.flush())
    }

    /// A direct write the file system refuses (here: unaligned, EINVAL) is redone through the
    /// buffered handle when there is one, and fails naming the offset when there is not.
    #[test]
    fn refused_direct_writes_fall_back_to_the_buffered_handle() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, vec![0u8; 16384]).unwrap();
        let Ok(direct) = crate::input::source::open_direct(&a, true) else {
            eprintln!("skipped: no O_DIRECT on {dir:?}");
            return;
        };
        let direct = Arc::new(direct);
        let buffered = Arc::new(std::fs::OpenOptions::new().write(true).open(&a).unwrap());
        for backend in [Backend::Pread, Backend::Auto] {
            let e = write_once(backend, &a, &direct, 100, 5000, None).unwrap_err();
            assert!(e.to_string().contains("0x64"), "{e}");
            write_once(backend, &a, &direct, 100, 5000, Some(buffered.clone())).unwrap();
            let back = std::fs::read(&a).unwrap();
            assert!(
                back[100..5100].iter().all(|&x| x == 7) && back[99] == 0,
                "{backend:?}"
            );
        }
    }
}
