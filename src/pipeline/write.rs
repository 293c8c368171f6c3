//! The writer stage of a backup, on the calling thread: puts the workers' results back in
//! sequence, deduplicates the chunks against everything written before and writes the records.
//!
//! Only this stage inserts into the dedup table, in stream order, so the first copy of a chunk
//! is always the one stored and the archive does not depend on scheduling. It returns the
//! reader's credit after each item, once that item's memory is released, and reports progress.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender};

use super::compress::Processed;
use super::{Done, Hashed, Item, Progress, VmFile, Worked};
use crate::archive::format::Codec;
use crate::archive::writer::encode_chunk as encode;
use crate::archive::writer::ArchiveWriter;
use crate::base::image::Place;
use crate::base::plan::DiskPlan;
use crate::base::BaseImage;
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
    /// An incremental's base and plans.
    pub base: Option<BaseState<'a>>,
    /// Every nonzero chunk place written, for the catalog (when asked for).
    pub places: Option<Vec<Place>>,
    /// zstd level (a chunk the base holds is compressed here in the rare case it is stored).
    pub level: i32,
}

/// What the writer of an incremental knows of its base.
pub(super) struct BaseState<'a> {
    pub image: &'a BaseImage,
    pub plans: &'a [DiskPlan],
    /// Base places this archive has changed so far. A BaseRef never names one: a one-pass
    /// restore applies the archive over the base image in place, in archive order, so such a
    /// place no longer holds the base's bytes when the BaseRef is met (formats/ARCHIVE.md).
    pub overwritten: HashSet<(u32, u64)>,
}

/// How a chunk with data is written.
enum Decision {
    /// A BaseRef to this base place.
    Base((u32, u64)),
    /// A Ref to this archive's earlier chunk.
    Own(ChunkLoc),
    /// A Chunk record.
    Store,
}

impl<'a> Writer<'a, '_> {
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

    /// Closes the archive and reports the final counters; returns them, the archive's
    /// identity and its chunk places (empty unless collected).
    pub fn finish(self) -> Result<(Progress, [u8; 32], Vec<Place>)> {
        let mut p = self.p;
        let (size, id) = self.archive.finish_with_id()?;
        p.bytes_written = size;
        if let Some(cb) = self.progress {
            cb(&p);
        }
        Ok((p, id, self.places.unwrap_or_default()))
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
            Processed::Zero => self.zero(c)?,
            Processed::Known(d) => match self.decide(c, d) {
                Decision::Store => unreachable!("invariant: known digests are in the table"),
                other => self.write_decided(c, d, other)?,
            },
            Processed::InBase { digest, bytes } => match self.decide(c, digest) {
                Decision::Store => {
                    // The base holds these bytes only at places this archive has changed.
                    let (codec, payload) = encode(&bytes, self.level, self.payloads)?;
                    self.write_data(c, digest, codec, &payload)?;
                    self.payloads.give(payload);
                }
                other => self.write_decided(c, digest, other)?,
            },
            Processed::Patch {
                digest,
                payload,
                runs_bytes,
            } => {
                match self.decide_as(c, digest, false) {
                    Decision::Store => self.write_patch(c, digest, &payload, runs_bytes)?,
                    other => self.write_decided(c, digest, other)?,
                }
                self.payloads.give(payload);
            }
            Processed::Data {
                digest,
                codec,
                payload,
            } => {
                match self.decide(c, digest) {
                    Decision::Store => self.write_data(c, digest, codec, &payload)?,
                    other => self.write_decided(c, digest, other)?,
                }
                self.payloads.give(payload);
            }
        }
        Ok(())
    }

    /// A chunk that is zero, or (in an incremental) one its disk's change list leaves out.
    fn zero(&mut self, c: &Chunk) -> Result<()> {
        if let Some((bd, b)) = self.base_disk(c.disk) {
            let unchanged = b.plans[c.disk as usize]
                .changed
                .as_ref()
                .is_some_and(|s| !s.contains(c.offset));
            match b.image.at(bd, c.offset) {
                Some(d) if unchanged => {
                    return self.write_base_ref(c, d, (bd, c.offset));
                }
                Some(_) => {
                    b.overwritten.insert((bd, c.offset));
                }
                None => {}
            }
        }
        self.p.chunks_zero += 1;
        Ok(())
    }

    /// The base disk that `disk` continues, with the base state.
    fn base_disk(&mut self, disk: u32) -> Option<(u32, &mut BaseState<'a>)> {
        let b = self.base.as_mut()?;
        let bd = b.plans[disk as usize].base_disk?;
        Some((bd, b))
    }

    /// How a chunk with data is written, best first: the base's chunk at the same place (the
    /// place is unchanged), an earlier chunk of this archive, the base's chunk at another place
    /// this archive has not changed, else stored. Enters the chunk in the dedup table when it
    /// is stored, and its base place among the changed ones unless it is unchanged.
    fn decide(&mut self, c: &Chunk, digest: Digest) -> Decision {
        self.decide_as(c, digest, true)
    }

    /// [`Self::decide`]; a chunk stored as a base patch is not entered in the dedup table
    /// (`enter` false), so no Ref ever names a patch: a Ref's target is always bytes of this
    /// archive's own.
    fn decide_as(&mut self, c: &Chunk, digest: Digest, enter: bool) -> Decision {
        let here = (c.disk, c.offset);
        let same = self
            .base_disk(c.disk)
            .and_then(|(bd, b)| b.image.at(bd, c.offset).map(|d| (bd, d)));
        if let Some((bd, d)) = same {
            if d == digest {
                return Decision::Base((bd, c.offset));
            }
            let b = self
                .base
                .as_mut()
                .expect("invariant: a base disk has a base");
            b.overwritten.insert((bd, c.offset));
        }
        let mut table = self.table.lock().expect("invariant: no panic under lock");
        if let Some(first) = table.get(&digest) {
            return Decision::Own(first);
        }
        let elsewhere = self
            .base
            .as_ref()
            .and_then(|b| b.image.find(&digest).filter(|q| !b.overwritten.contains(q)));
        if let Some(q) = elsewhere {
            return Decision::Base(q);
        }
        if enter {
            let loc = ChunkLoc {
                disk: here.0,
                offset: here.1,
            };
            table.check_insert(digest, loc);
        }
        Decision::Store
    }

    fn write_decided(&mut self, c: &Chunk, digest: Digest, how: Decision) -> Result<()> {
        match how {
            Decision::Base(src) => self.write_base_ref(c, digest, src),
            Decision::Own(first) => self.write_ref(c, digest, first),
            Decision::Store => unreachable!("invariant: stored chunks have a payload"),
        }
    }

    fn write_base_ref(&mut self, c: &Chunk, digest: Digest, src: (u32, u64)) -> Result<()> {
        self.archive
            .write_base_ref(c.disk, c.offset, c.len, digest.0, src.0, src.1)?;
        self.p.chunks_base += 1;
        self.p.base_bytes += c.len;
        self.placed(c, digest);
        Ok(())
    }

    /// Counts a data record of the current disk and notes its place for the catalog.
    fn placed(&mut self, c: &Chunk, digest: Digest) {
        self.disk_records += 1;
        if let Some(p) = self.places.as_mut() {
            p.push((c.disk, c.offset, digest));
        }
    }

    fn write_ref(&mut self, c: &Chunk, digest: Digest, first: ChunkLoc) -> Result<()> {
        let (disk, offset, len) = (c.disk, c.offset, c.len);
        let (fd, fo) = (first.disk, first.offset);
        self.archive
            .write_ref(disk, offset, len, digest.0, fd, fo)?;
        self.p.chunks_dedup += 1;
        self.p.dedup_bytes += c.len;
        self.placed(c, digest);
        Ok(())
    }

    fn write_patch(
        &mut self,
        c: &Chunk,
        digest: Digest,
        payload: &[u8],
        runs_bytes: u64,
    ) -> Result<()> {
        self.archive
            .write_patch(c.disk, c.offset, c.len, digest.0, payload)?;
        self.p.chunks_patched += 1;
        self.p.patched_bytes += c.len;
        self.p.stored_raw_bytes += runs_bytes;
        self.p.stored_bytes += payload.len() as u64;
        self.placed(c, digest);
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
        self.placed(c, digest);
        Ok(())
    }
}
