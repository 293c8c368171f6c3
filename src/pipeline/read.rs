//! The reader stage of a backup: one thread walks the VMs and their disks in archive order and
//! hands every item, numbered, to the workers ([`super::work`]).
//!
//! Before each item it takes a credit (returned by the writer once the item is written), so
//! chunk memory stays bounded, and it checks the error latch, so a failed backup stops reading
//! at the next chunk. A read error travels as an `Err` item in sequence: the writer reports it
//! exactly where it happened, after everything before it was written.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::{Item, Job};
use crate::blockio::ReadOptions;
use crate::chain::VirtualDisk;
use crate::chunk::{ChunkPool, ChunkReader};
use crate::error::Result;

/// The reader thread's state.
pub(super) struct Reader<'s> {
    /// To the workers; bounded by the credit count.
    pub jobs: Sender<Job>,
    /// One per item allowed in flight.
    pub credits: Receiver<()>,
    /// The error latch: set by the writer when the backup fails.
    pub stop: &'s AtomicBool,
    pub chunk_size: u64,
    pub read: ReadOptions,
    /// Chunk buffers, given back by the workers once a chunk is hashed and compressed.
    pub pool: Arc<ChunkPool>,
    /// Sequence number of the next item.
    pub seq: u64,
}

impl Reader<'_> {
    /// Sends a `VmStart` for each of `nvms` VMs followed by the chunks of its disks (`disks` are
    /// `(vm, disk)` in VM order). Returns early once the backup stops or a read fails.
    pub fn run(mut self, nvms: usize, disks: Vec<(usize, Box<dyn VirtualDisk>)>) {
        let mut disks = disks.into_iter().peekable();
        let mut ordinal = 0u32;
        for v in 0..nvms {
            if !self.send(Ok(Item::VmStart(v))) {
                return;
            }
            while let Some((_, mut disk)) = disks.next_if(|(dv, _)| *dv == v) {
                if !self.disk(disk.as_mut(), ordinal) {
                    return;
                }
                ordinal += 1;
            }
        }
    }

    /// Sends disk `ordinal`'s chunks and its `DiskEnd`. False if the backup is to stop: it was
    /// stopped, or reading this disk failed (the error is sent as the last item).
    fn disk(&mut self, disk: &mut dyn VirtualDisk, ordinal: u32) -> bool {
        let cap = disk.capacity();
        let opened = ChunkReader::new(
            disk,
            ordinal,
            self.chunk_size,
            &self.read,
            self.pool.clone(),
        );
        let mut chunker = match opened {
            Ok(c) => c,
            Err(e) => {
                self.send(Err(e));
                return false;
            }
        };
        loop {
            match chunker.next_chunk() {
                Ok(Some(c)) => {
                    if !self.send(Ok(Item::Chunk(c))) {
                        return false;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.send(Err(e));
                    return false;
                }
            }
        }
        self.send(Ok(Item::DiskEnd(ordinal, cap)))
    }

    /// Sends `item` once a credit is free. False once the backup stops: the writer latched an
    /// error (and dropped the credits, so a wait for one ends) or the workers are gone.
    fn send(&mut self, item: Result<Item>) -> bool {
        let ok = self.credits.recv().is_ok() && !self.stop.load(Ordering::Relaxed);
        let ok = ok && self.jobs.send((self.seq, item)).is_ok();
        self.seq += 1;
        ok
    }
}
