//! Fixed-size chunking of a collapsed virtual disk.
//!
//! Chunks are aligned to the disk: chunk *k* covers `[k·chunk_size, (k+1)·chunk_size)`, the last
//! one shorter when the capacity is not a multiple. Alignment to the disk (rather than
//! content-defined boundaries) is what makes dedup work for disk images: file systems allocate in
//! aligned blocks, so equal files in two images of the same file system land on equal aligned
//! chunks, and a one-pass restorer can place every chunk by offset alone.
//!
//! A chunk that lies wholly inside zero runs is produced as [`ChunkData::Zero`] without reading
//! anything; the pipeline drops it (restore leaves a hole). Data chunks whose bytes all happen to
//! be zero are dropped later, after reading, by the hashing stage.

pub mod bytes;
pub mod dedup;
pub mod digest;
pub mod pool;
mod reader;

pub use bytes::ChunkBytes;
pub use digest::Digest;
pub use pool::ChunkPool;
pub use reader::ChunkReader;

use crate::chain::{read_run, DiskRun, VirtualDisk};
use crate::error::{Error, Result};

/// The bytes of a chunk.
#[derive(Debug)]
pub enum ChunkData {
    /// Wholly inside zero runs: not read.
    Zero,
    /// Read from the disk: the data runs, and where the zero runs inside the chunk are.
    Data(ChunkBytes),
}

/// One chunk of one disk.
#[derive(Debug)]
pub struct Chunk {
    /// Disk ordinal in the archive.
    pub disk: u32,
    /// Byte offset in the disk (a multiple of the chunk size).
    pub offset: u64,
    /// Length in bytes (the chunk size, or less for the last chunk).
    pub len: u64,
    /// The contents.
    pub data: ChunkData,
}

/// Cuts a [`VirtualDisk`] into chunks, in disk order.
pub struct Chunker<'a> {
    disk: &'a mut dyn VirtualDisk,
    id: u32,
    chunk_size: u64,
    capacity: u64,
    pos: u64,
    /// Runs overlapping the current chunk, kept until consumed.
    runs: std::collections::VecDeque<DiskRun>,
    /// End of the last run received (runs must be contiguous from 0).
    runs_end: u64,
}

impl<'a> Chunker<'a> {
    /// Chunks `disk` (ordinal `id`) into `chunk_size`-byte pieces.
    pub fn new(disk: &'a mut dyn VirtualDisk, id: u32, chunk_size: u64) -> Self {
        let capacity = disk.capacity();
        Chunker {
            disk,
            id,
            chunk_size,
            capacity,
            pos: 0,
            runs: Default::default(),
            runs_end: 0,
        }
    }

    fn bad_run(&self, what: String) -> Error {
        Error::Chain {
            path: format!("disk {}", self.id).into(),
            what,
        }
    }

    /// The plan of the next chunk (what to read, not read yet), or `None` at the end.
    pub fn next_plan(&mut self) -> Result<Option<ChunkPlan>> {
        if self.pos >= self.capacity {
            return Ok(None);
        }
        let start = self.pos;
        let end = (start + self.chunk_size).min(self.capacity);
        // Gather runs until they reach the chunk's end.
        while self.runs_end < end {
            let run = self.disk.next_run()?.ok_or_else(|| {
                self.bad_run(format!("runs end at {:#x} before capacity", self.runs_end))
            })?;
            if run.offset != self.runs_end || run.len == 0 {
                return Err(self.bad_run(format!(
                    "run at {:#x}+{:#x} does not continue at {:#x}",
                    run.offset, run.len, self.runs_end
                )));
            }
            self.runs_end = run.offset + run.len;
            self.runs.push_back(run);
        }
        // Drop runs that end before this chunk.
        while self.runs.front().is_some_and(|r| r.offset + r.len <= start) {
            self.runs.pop_front();
        }
        let parts = self
            .runs
            .iter()
            .take_while(|r| r.offset < end)
            .filter(|r| !r.is_zero())
            .map(|r| {
                let s = r.offset.max(start);
                let e = (r.offset + r.len).min(end);
                DiskRun {
                    offset: s,
                    len: e - s,
                    source: r.source_at(s - r.offset),
                }
            })
            .collect();
        self.pos = end;
        Ok(Some(ChunkPlan {
            disk: self.id,
            offset: start,
            len: end - start,
            parts,
        }))
    }

    /// The next chunk, read here with positioned reads, or `None` at the end of the disk.
    /// [`ChunkReader`] reads the same chunks through the `blockio` read-ahead pipeline; this
    /// serial path is its reference.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        let Some(plan) = self.next_plan()? else {
            return Ok(None);
        };
        if plan.parts.is_empty() {
            return Ok(Some(plan.into_chunk(ChunkData::Zero)));
        }
        let zeros = plan.gaps();
        let mut packed = vec![0u8; plan.packed_len()];
        let mut at = 0;
        for p in &plan.parts {
            read_run(
                self.disk.files(),
                p,
                0,
                &mut packed[at..at + p.len as usize],
            )?;
            at += p.len as usize;
        }
        let bytes = ChunkBytes {
            packed,
            zeros,
            len: plan.len as usize,
        };
        Ok(Some(plan.into_chunk(ChunkData::Data(bytes))))
    }
}

/// A chunk before reading: its place and the non-zero runs inside it (clipped to the chunk;
/// everything else reads as zeros).
#[derive(Debug)]
pub struct ChunkPlan {
    /// Disk ordinal in the archive.
    pub disk: u32,
    /// Byte offset in the disk.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Data and compressed-grain runs, in disk order, inside `[offset, offset + len)`.
    pub parts: Vec<DiskRun>,
}

impl ChunkPlan {
    fn into_chunk(self, data: ChunkData) -> Chunk {
        Chunk {
            disk: self.disk,
            offset: self.offset,
            len: self.len,
            data,
        }
    }

    /// Bytes of the parts (the chunk without its zero runs).
    pub fn packed_len(&self) -> usize {
        self.parts.iter().map(|p| p.len as usize).sum()
    }

    /// The chunk's byte ranges `(start, len)` that no part covers (they read as zeros),
    /// ascending and maximal. Parts are ascending and disjoint (runs of one collapsed disk).
    pub fn gaps(&self) -> Vec<(usize, usize)> {
        let mut gaps = Vec::new();
        let mut covered = 0usize;
        for part in &self.parts {
            let at = (part.offset - self.offset) as usize;
            if at > covered {
                gaps.push((covered, at - covered));
            }
            covered = at + part.len as usize;
        }
        if (self.len as usize) > covered {
            gaps.push((covered, self.len as usize - covered));
        }
        gaps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::memdisk::MemDisk;

    #[test]
    fn zero_chunks_elided_and_data_read() {
        let cs = 64 << 10;
        let mut data = vec![7u8; 3 * cs + 4096];
        data[cs..2 * cs].fill(0);
        let mut d = MemDisk::new("d", data.clone(), &[(cs as u64, cs as u64)]);
        let mut c = Chunker::new(&mut d, 0, cs as u64);
        let mut got = Vec::new();
        while let Some(ch) = c.next_chunk().unwrap() {
            match ch.data {
                ChunkData::Zero => got.extend(std::iter::repeat_n(0, ch.len as usize)),
                ChunkData::Data(b) => {
                    assert_ne!(ch.offset, cs as u64, "zero chunk must not be read");
                    got.extend(b.to_plain())
                }
            }
        }
        assert_eq!(got, data);
    }
}
