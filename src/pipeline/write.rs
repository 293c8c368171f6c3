//! The writer stage of a backup, on the calling thread: puts the workers' results back in
//! sequence, deduplicates the chunks against everything written before and writes the records.
//!
//! Only this stage inserts into the dedup table, in stream order, so the first copy of a chunk
//! is always the one stored and the archive does not depend on scheduling. It returns the
//! reader's credit after each item, once that item's memory is released, and reports progress.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender};

use super::compress::Processed;
use super::{Done, Hashed, Item, Progress, VmFile, Worked};
use crate::archive::format::Codec;
use crate::archive::writer::ArchiveWriter;
use crate::cancel::Cancel;
use crate::chunk::dedup::{ChunkLoc, DedupTable};
use crate::chunk::{Chunk, ChunkPool, Digest};
use crate::error::Result;

/// A progress callback (see [`super::backup`]).
pub(super) type ProgressFn<'a> = &'a (dyn Fn(&Progress) + Sync);

/// The writer stage's state.
pub(super) struct Writer<'a, 'o> {
    pub archive: ArchiveWriter<'o>,
    pub table: &'a Mutex<DedupTable>,
    /// Where payload buffers go back to the workers.
    pub payloads: &'a ChunkPool,
    /// Each VM's small files, written at its `VmStart`.
    pub files: Vec<Vec<VmFile>>,
    /// `vm/disk` per disk ordinal, for [`Progress::current`].
    pub labels: Vec<String>,
    pub progress: Option<ProgressFn<'a>>,
    pub cancel: &'a Cancel,
    pub p: Progress,
    /// Results that arrived ahead of their turn, by sequence number.
    pub pending: BTreeMap<u64, Result<Worked>>,
    /// The sequence number written next.
    pub next: u64,
    /// Data records of the current disk (its `DiskEnd` counts them).
    pub disk_records: u64,
    /// Capacities of the disks finished.
    pub finished_disks: u64,
}

impl Writer<'_, '_> {
    /// Writes every result in sequence until the workers are done. Stops at the first error
    /// (a worker's, a reader's item, a write's or a cancel); the caller latches it.
    pub fn run(&mut self, results: &Receiver<Done>, credits: &Sender<()>) -> Result<()> {
        for (seq, r) in results {
            self.pending.insert(seq, r);
            while let Some(r) = self.pending.remove(&self.next) {
                self.next += 1;
                self.cancel.check()?;
                self.item(r?)?;
                // The credit goes back only now that the chunk's memory is released.
                let _ = credits.send(());
                self.p.bytes_written = self.archive.position();
                // After every item, so that a disk of zeros (which writes next to nothing)
                // still moves; the callback decides how often to show it.
                if let Some(cb) = self.progress {
                    cb(&self.p);
                }
            }
        }
        Ok(())
    }

    /// Closes the archive and reports the final counters; returns them.
    pub fn finish(self) -> Result<Progress> {
        let mut p = self.p;
        p.bytes_written = self.archive.finish()?;
        if let Some(cb) = self.progress {
            cb(&p);
        }
        Ok(p)
    }

    fn item(&mut self, w: Worked) -> Result<()> {
        match w.item {
            Item::VmStart(v) => {
                for (i, f) in self.files[v].iter().enumerate() {
                    self.archive.write_file(v as u32, i as u64, &f.bytes)?;
                }
            }
            Item::Chunk(c) => {
                let hashed = w.hashed.expect("invariant: chunks are processed");
                self.chunk(&c, hashed)?;
            }
            Item::DiskEnd(d, cap) => {
                self.archive.write_disk_end(d, cap, self.disk_records)?;
                self.disk_records = 0;
                self.finished_disks += cap;
                self.p.disk_bytes = self.finished_disks;
            }
        }
        Ok(())
    }

    /// One chunk: a hole, a reference to its first copy, or stored data.
    fn chunk(&mut self, c: &Chunk, h: Hashed) -> Result<()> {
        let p = &mut self.p;
        if c.offset == 0 {
            p.current = self.labels[c.disk as usize].clone();
        }
        p.chunks += 1;
        p.disk_bytes = self.finished_disks + c.offset + c.len;
        p.bytes_read += h.read;
        match h.processed {
            Processed::Zero => self.p.chunks_zero += 1,
            Processed::Known(d) => {
                let first = self
                    .first_copy(c, d)
                    .expect("invariant: known digests are in the table");
                self.write_ref(c, d, first)?;
            }
            Processed::Data {
                digest,
                codec,
                payload,
            } => {
                match self.first_copy(c, digest) {
                    Some(first) => self.write_ref(c, digest, first)?,
                    None => self.write_data(c, digest, codec, &payload)?,
                }
                self.payloads.give(payload);
            }
        }
        Ok(())
    }

    /// Where the table has `digest` already; else `c` becomes its first copy.
    fn first_copy(&self, c: &Chunk, digest: Digest) -> Option<ChunkLoc> {
        let loc = ChunkLoc {
            disk: c.disk,
            offset: c.offset,
        };
        self.table
            .lock()
            .expect("invariant: no panic under lock")
            .check_insert(digest, loc)
    }

    fn write_ref(&mut self, c: &Chunk, digest: Digest, first: ChunkLoc) -> Result<()> {
        let (disk, offset, len) = (c.disk, c.offset, c.len);
        let (fd, fo) = (first.disk, first.offset);
        self.archive
            .write_ref(disk, offset, len, digest.0, fd, fo)?;
        self.p.chunks_dedup += 1;
        self.p.dedup_bytes += c.len;
        self.disk_records += 1;
        Ok(())
    }

    fn write_data(
        &mut self,
        c: &Chunk,
        digest: Digest,
        codec: Codec,
        payload: &[u8],
    ) -> Result<()> {
        let (disk, offset, len) = (c.disk, c.offset, c.len);
        self.archive
            .write_chunk(disk, offset, len, digest.0, codec, payload)?;
        self.p.chunks_stored += 1;
        self.p.stored_raw_bytes += c.len;
        self.p.stored_bytes += payload.len() as u64;
        self.disk_records += 1;
        Ok(())
    }
}
