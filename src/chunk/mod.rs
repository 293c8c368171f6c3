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

pub mod dedup;
pub mod digest;

pub use digest::Digest;

use crate::chain::{read_run, DiskRun, VirtualDisk};
use crate::error::{Error, Result};

/// The bytes of a chunk.
#[derive(Debug)]
pub enum ChunkData {
    /// Wholly inside zero runs: not read.
    Zero,
    /// Read from the disk (zero runs inside the chunk filled with zeros).
    Data(Vec<u8>),
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

    /// The next chunk, or `None` at the end of the disk.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>> {
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
        let len = end - start;
        let covering = self.runs.iter().take_while(|r| r.offset < end);
        let data = if covering.clone().all(DiskRun::is_zero) {
            ChunkData::Zero
        } else {
            let mut buf = vec![0u8; len as usize];
            for r in covering {
                if r.is_zero() {
                    continue;
                }
                let s = r.offset.max(start);
                let e = (r.offset + r.len).min(end);
                read_run(
                    self.disk.files(),
                    r,
                    s - r.offset,
                    &mut buf[(s - start) as usize..(e - start) as usize],
                )?;
            }
            ChunkData::Data(buf)
        };
        self.pos = end;
        Ok(Some(Chunk {
            disk: self.id,
            offset: start,
            len,
            data,
        }))
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
                    got.extend(b)
                }
            }
        }
        assert_eq!(got, data);
    }
}
