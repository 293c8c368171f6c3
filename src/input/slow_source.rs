//! A test source that waits like a network round trip on every read, counts how many reads
//! overlap and fails reads at one offset: what the tests of concurrent reading share.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use super::{ByteSource, MemSource};
use crate::error::{Error, Result};

/// A [`MemSource`] saying it can run four reads at once, each taking 5 ms.
#[derive(Debug)]
pub struct SlowSource {
    mem: MemSource,
    bad: Option<u64>,
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl SlowSource {
    /// `data` as the file "slow", with reads at `bad` failing.
    pub fn new(data: &[u8], bad: Option<u64>) -> SlowSource {
        SlowSource {
            mem: MemSource::new("slow", data.to_vec()),
            bad,
            now: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// The most reads that were in flight at once.
    pub fn peak(&self) -> usize {
        self.peak.load(SeqCst)
    }
}

impl ByteSource for SlowSource {
    fn path(&self) -> &Path {
        self.mem.path()
    }

    fn len(&self) -> u64 {
        self.mem.len()
    }

    fn concurrent_reads(&self) -> usize {
        4
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(n, SeqCst);
        std::thread::sleep(Duration::from_millis(5));
        self.now.fetch_sub(1, SeqCst);
        if self.bad == Some(offset) {
            let lost = io::Error::other("lost");
            return Err(Error::io(self.path(), Some(offset), lost));
        }
        self.mem.read_exact_at(buf, offset)
    }
}
