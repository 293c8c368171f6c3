//! The worker stage of a backup: N threads take numbered items from the reader, hash and
//! compress the chunks among them ([`process`]) and pass every item on to the writer, in any
//! order (the writer restores the sequence). A worker exits when the reader's queue closes or
//! the writer has gone.

use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender};

use super::compress::{process, PatchHint};
use super::{Done, Hashed, Item, Job, Worked};
use crate::base::plan::DiskPlan;
use crate::base::BaseImage;
use crate::chunk::dedup::DedupTable;
use crate::chunk::{ChunkData, ChunkPool};
use crate::error::Result;

/// One worker thread's state.
pub(super) struct Worker<'a> {
    pub jobs: Receiver<Job>,
    pub done: Sender<Done>,
    /// zstd level.
    pub level: i32,
    /// Consulted only to skip compressing chunks that will become references.
    pub table: &'a Mutex<DedupTable>,
    /// An incremental's base image: chunks it holds are not compressed either.
    pub base: Option<&'a BaseImage>,
    /// An incremental's plans, per disk: a chunk its change list names in part may become a
    /// base patch.
    pub plans: Option<&'a [DiskPlan]>,
    /// Where chunk buffers go back to the reader.
    pub pool: &'a ChunkPool,
    /// Payload buffers, given back by the writer once stored.
    pub payloads: &'a ChunkPool,
}

impl Worker<'_> {
    /// Works until the reader's queue closes or the writer stops listening.
    pub fn run(self) {
        for (seq, item) in &self.jobs {
            let r = item.and_then(|item| self.work(item));
            if self.done.send((seq, r)).is_err() {
                return;
            }
        }
    }

    /// Hashes and compresses `item` if it is a chunk; other items pass unchanged.
    fn work(&self, mut item: Item) -> Result<Worked> {
        let Item::Chunk(c) = &mut item else {
            return Ok(Worked { item, hashed: None });
        };
        // Counted before zero blocks that were read leave the data runs.
        let read = match &c.data {
            ChunkData::Zero => 0,
            ChunkData::Data(b) => b.data_len() as u64,
        };
        let hint = self.patch_hint(c.disk, c.offset, c.len);
        let processed = process(c, self.level, self.table, self.base, hint, self.payloads)?;
        // The writer needs only the chunk's place and the processed result.
        if let ChunkData::Data(bytes) = &mut c.data {
            self.pool.give(std::mem::take(&mut bytes.packed));
        }
        Ok(Worked {
            item,
            hashed: Some(Hashed { processed, read }),
        })
    }

    /// What a patch of the chunk at (`disk`, `offset`) would apply to and replace: the base
    /// disk's chunk at the same place, when the base has data there, and the changed runs
    /// inside the chunk.
    fn patch_hint(&self, disk: u32, offset: u64, len: u64) -> Option<PatchHint> {
        let plan = self.plans?.get(disk as usize)?;
        let bd = plan.base_disk?;
        let runs = plan.changed.as_ref()?.runs_in(offset, len);
        let base_digest = self.base?.at(bd, offset)?;
        (!runs.is_empty()).then_some(PatchHint {
            src: (bd, offset),
            base_digest,
            runs,
        })
    }
}
