//! The io_uring engine: every sub-read of every started request is an `IORING_OP_READ` SQE
//! (every sub-write of a write request an `IORING_OP_WRITE` SQE); up to `queue_depth` of them
//! are in the kernel at once, the rest wait in a local queue.
//!
//! This is the only file of vdar with `unsafe` code (STYLE.md §5). The invariants:
//! * A request's buffer is owned by `self.requests` from `start` until its completion is
//!   returned by `wait`; SQEs point into that heap block, which never moves or frees meanwhile
//!   (`AlignedBuf` keeps a `Vec` whose heap block is stable across moves of the struct).
//! * Each SQE's `user_data` is `(slot << 32) | sub-read index`; a slot is not reused until every
//!   sub-read of its request has completed.
//! * `Drop` waits for every SQE in the kernel to complete before the buffers (and the `Arc<File>`
//!   keeping each descriptor open) are freed.
//! * For writes the kernel only reads the buffer, but the same ownership rule holds: the bytes
//!   must stay put until the CQE says the kernel is done with them.
//! * Short reads and short writes are resubmitted for the remaining tail; `res == 0` before the
//!   end is `UnexpectedEof` (reads) or `WriteZero` (writes); `res < 0` is
//!   `io::Error::from_raw_os_error(-res)`.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;

use io_uring::{opcode, types, IoUring};

use super::{AlignedBuf, Completion, Dir, Engine, SubRead};

/// Checks once that a ring can be set up and supports `IORING_OP_READ` and `IORING_OP_WRITE`
/// (both Linux 5.6+).
pub fn probe() -> io::Result<()> {
    let ring = IoUring::new(2)?;
    let mut p = io_uring::Probe::new();
    ring.submitter().register_probe(&mut p)?;
    for (code, name) in [
        (opcode::Read::CODE, "IORING_OP_READ"),
        (opcode::Write::CODE, "IORING_OP_WRITE"),
    ] {
        if !p.is_supported(code) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("kernel lacks {name}"),
            ));
        }
    }
    Ok(())
}

/// One request in flight.
struct Request {
    id: u64,
    /// Which way the bytes go.
    dir: Dir,
    buf: AlignedBuf,
    reads: Vec<SubRead>,
    /// Bytes of each sub-read already done (short reads advance this).
    done: Vec<usize>,
    results: Vec<Option<io::Result<()>>>,
    outstanding: usize,
}

/// io_uring engine.
pub struct UringEngine {
    ring: IoUring,
    requests: Vec<Option<Request>>,
    /// Sub-reads waiting for a free SQE: (slot, sub-read index).
    queued: VecDeque<(usize, usize)>,
    /// SQEs in the kernel.
    in_kernel: usize,
    depth: usize,
    finished: VecDeque<Completion>,
}

impl UringEngine {
    /// A ring with `depth` entries (reads in flight at once).
    pub fn new(depth: usize) -> io::Result<UringEngine> {
        let depth = depth.clamp(1, super::MAX_QUEUE_DEPTH);
        Ok(UringEngine {
            ring: IoUring::new(depth.next_power_of_two() as u32)?,
            requests: Vec::new(),
            queued: VecDeque::new(),
            in_kernel: 0,
            depth,
            finished: VecDeque::new(),
        })
    }

    /// Pushes queued sub-reads while the kernel has room, then submits.
    fn pump(&mut self) -> io::Result<()> {
        let mut pushed = false;
        while self.in_kernel < self.depth {
            let Some((slot, i)) = self.queued.pop_front() else {
                break;
            };
            let req = self.requests[slot]
                .as_mut()
                .expect("invariant: queued reads belong to live slots");
            let r = &req.reads[i];
            let done = req.done[i];
            let fd = types::Fd(r.file.as_raw_fd());
            let offset = r.offset + done as u64;
            let dst = &mut req.buf.spare()[r.at + done..r.at + r.len];
            // Sub-reads are at most MAX_REQUEST_BYTES (64 MiB), so the length fits a u32.
            let entry = match req.dir {
                Dir::Read => opcode::Read::new(fd, dst.as_mut_ptr(), dst.len() as u32)
                    .offset(offset)
                    .build(),
                Dir::Write => opcode::Write::new(fd, dst.as_ptr(), dst.len() as u32)
                    .offset(offset)
                    .build(),
            }
            .user_data(((slot as u64) << 32) | i as u64);
            // SAFETY: the SQE points at `dst`, a range of the heap block of `req.buf`, which
            // `self.requests[slot]` owns until every sub-read of the request has completed
            // (the slot is only taken in `reap` after `outstanding` reaches 0, and `Drop` waits
            // for all SQEs); no other live SQE targets this range (sub-read ranges are
            // disjoint and each has at most one SQE in flight), and nothing else reads or
            // writes the buffer meanwhile (the engine owns it). `r.file` keeps the descriptor
            // open for as long.
            let pushed_ok = unsafe { self.ring.submission().push(&entry) }.is_ok();
            if !pushed_ok {
                // The SQ is full of unsubmitted entries: submit them and retry this one.
                self.queued.push_front((slot, i));
                self.ring.submit()?;
                continue;
            }
            self.in_kernel += 1;
            pushed = true;
        }
        if pushed {
            self.ring.submit()?;
        }
        Ok(())
    }

    /// Processes available CQEs.
    fn reap(&mut self) {
        let cqes: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (ud, res) in cqes {
            self.in_kernel -= 1;
            let (slot, i) = ((ud >> 32) as usize, (ud & 0xffff_ffff) as usize);
            let req = self.requests[slot]
                .as_mut()
                .expect("invariant: CQEs belong to live slots");
            let want = req.reads[i].len - req.done[i];
            let outcome = if res < 0 {
                Some(Err(io::Error::from_raw_os_error(-res)))
            } else if res == 0 {
                let at = req.reads[i].offset + req.done[i] as u64;
                Some(Err(match req.dir {
                    Dir::Read => io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("end of file at byte {at:#x}"),
                    ),
                    Dir::Write => io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("device accepted no bytes at byte {at:#x}"),
                    ),
                }))
            } else if (res as usize) < want {
                // Short read or write: resubmit the tail.
                req.done[i] += res as usize;
                self.queued.push_back((slot, i));
                None
            } else {
                Some(Ok(()))
            };
            if let Some(o) = outcome {
                req.results[i] = Some(o);
                req.outstanding -= 1;
                if req.outstanding == 0 {
                    let req = self.requests[slot].take().expect("invariant: live slot");
                    self.finished.push_back(Completion {
                        id: req.id,
                        buf: req.buf,
                        results: req
                            .results
                            .into_iter()
                            .map(|r| r.expect("invariant: every sub-read finished"))
                            .collect(),
                    });
                }
            }
        }
    }
}

impl UringEngine {
    /// Queues request `id` (reads into or writes from `buf`) and pumps the ring.
    fn start_dir(
        &mut self,
        id: u64,
        dir: Dir,
        buf: AlignedBuf,
        reads: Vec<SubRead>,
    ) -> io::Result<()> {
        for r in &reads {
            assert!(
                r.at + r.len <= buf.capacity() && r.len <= super::MAX_REQUEST_BYTES,
                "invariant: sub-reads lie inside their buffer"
            );
        }
        let slot = match self.requests.iter().position(Option::is_none) {
            Some(s) => s,
            None => {
                self.requests.push(None);
                self.requests.len() - 1
            }
        };
        let n = reads.len();
        for i in 0..n {
            self.queued.push_back((slot, i));
        }
        self.requests[slot] = Some(Request {
            id,
            dir,
            buf,
            done: vec![0; n],
            results: (0..n).map(|_| None).collect(),
            outstanding: n,
            reads,
        });
        self.pump()
    }
}

impl Engine for UringEngine {
    fn start(&mut self, id: u64, buf: AlignedBuf, reads: Vec<SubRead>) -> io::Result<()> {
        self.start_dir(id, Dir::Read, buf, reads)
    }

    fn start_write(&mut self, id: u64, buf: AlignedBuf, writes: Vec<SubRead>) -> io::Result<()> {
        self.start_dir(id, Dir::Write, buf, writes)
    }

    fn wait(&mut self) -> io::Result<Option<Completion>> {
        loop {
            if let Some(c) = self.finished.pop_front() {
                return Ok(Some(c));
            }
            if self.in_kernel == 0 && self.queued.is_empty() {
                return Ok(None);
            }
            self.pump()?;
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            self.reap();
        }
    }

    fn name(&self) -> &'static str {
        "io_uring"
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        // Buffers may only be freed once the kernel is done with them (writing into them for
        // reads, reading from them for writes).
        self.queued.clear();
        while self.in_kernel > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // Cannot tell when the kernel finishes: leak the buffers rather than free
                    // memory that may still be written.
                    for r in self.requests.drain(..).flatten() {
                        std::mem::forget(r.buf);
                    }
                    return;
                }
            }
            let n = self.ring.completion().count();
            self.in_kernel -= n;
        }
    }
}
