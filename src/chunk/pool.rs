//! Recycled byte buffers: chunk plaintext (reader to workers) and compressed payloads (workers
//! to writer).
//!
//! A backup allocates one chunk-sized buffer per data chunk. Fresh multi-megabyte allocations
//! come back from the allocator as new pages that the kernel must fault in and clear, and the
//! reader then zeroed them again: together about 4% of a backup's CPU in profiles. Buffers
//! handed back after hashing and compression are reused instead; the reader overwrites every
//! byte of a reused buffer (data parts read, gaps zeroed), so no byte of an earlier chunk can
//! survive into a later one.

use std::sync::Mutex;

/// A bounded free list of byte buffers.
#[derive(Debug)]
pub struct ChunkPool {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl ChunkPool {
    /// A pool keeping at most `keep` idle buffers (the rest are freed).
    pub fn new(keep: usize) -> Self {
        ChunkPool {
            free: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// A buffer of exactly `len` bytes, room for `capacity`, whose contents are unspecified:
    /// the caller must write every byte before reading any. Buffers are allocated at
    /// `capacity` (the chunk size) so that reuse never reallocates whatever `len` comes next.
    pub fn take(&self, len: usize, capacity: usize) -> Vec<u8> {
        let reused = self
            .free
            .lock()
            .expect("invariant: no panic while holding the free list")
            .pop();
        let mut v = reused.unwrap_or_else(|| Vec::with_capacity(capacity.max(len)));
        v.truncate(len);
        v.resize(len, 0);
        v
    }

    /// Returns a buffer for reuse.
    pub fn give(&self, v: Vec<u8>) {
        if v.capacity() == 0 {
            return;
        }
        let mut free = self
            .free
            .lock()
            .expect("invariant: no panic while holding the free list");
        if free.len() < self.keep {
            free.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_exact_and_the_pool_is_bounded() {
        let pool = ChunkPool::new(1);
        pool.give(vec![7; 100]);
        pool.give(vec![8; 100]);
        assert_eq!(pool.free.lock().unwrap().len(), 1);
        assert_eq!(pool.take(40, 40).len(), 40);
        let fresh = pool.take(300, 1000);
        assert_eq!(fresh, vec![0; 300], "an empty pool gives zeros");
        assert!(fresh.capacity() >= 1000);
        pool.give(vec![9; 10]);
        let v = pool.take(30, 30);
        assert_eq!(v.len(), 30);
        assert_eq!(v[10..], [0; 20], "growth past the old length is zeroed");
    }
}
