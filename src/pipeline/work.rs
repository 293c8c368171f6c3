//! The worker stage of a backup: N threads take numbered items from the reader, hash and
//! compress the chunks among them ([`process`]) and pass every item on to the writer, in any
//! order (the writer restores the sequence). A worker exits when the reader's queue closes or
//! the writer has gone.

use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender};

use super::compress::{process, PatchHint, PatchRuns};
use super::{Done, Hashed, Item, Job, Worked};
use crate::base::plan::DiskPlan;
use crate::base::{BaseChain, BaseImage};
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
    /// The base archive itself, when the backup has it: a changed chunk of a disk without a
    /// change list may then become a base patch of the blocks that differ.
    pub base_bytes: Option<&'a Mutex<BaseChain>>,
    /// Where chunk buffers go back to the reader.
    pub pool: &'a ChunkPool,
    /// Payload buffers, given back by the writer once stored.
    pub payloads: &'a ChunkPool,
}

impl<'a> Worker<'a> {
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
    /// disk's chunk at the same place, when the base has data there; and the changed runs
    /// inside the chunk, from its disk's change list, else from the base archive's bytes.
    fn patch_hint(&self, disk: u32, offset: u64, len: u64) -> Option<PatchHint<'a>> {
        let plan = self.plans?.get(disk as usize)?;
        let bd = plan.base_disk?;
        let base = self.base?;
        let base_digest = base.at(bd, offset)?;
        let runs = match (&plan.changed, self.base_bytes) {
            (Some(set), _) => PatchRuns::Listed(set.runs_in(offset, len)),
            (None, Some(chain)) => PatchRuns::FromBase(chain, base.id),
            (None, None) => return None,
        };
        Some(PatchHint {
            src: (bd, offset),
            base_digest,
            runs,
        })
    }
}
