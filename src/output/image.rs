//! A collapsed disk written as raw bytes (`vdar cat`): to a regular file, staged and with zero
//! runs left as holes ([`RawSink`]), or to a stream (stdout, a device, a FIFO) that gets every
//! byte ([`RawStream`]). The disk is read by the backup's own reader
//! ([`crate::chunk::ChunkReader`]: the same run planning, read-ahead and grain inflation), in
//! chunks that are only a unit of reading here.

use std::io::BufWriter;
use std::sync::Arc;

use super::located::Located;
use super::open::{open, Opened, OutputSpec};
use super::sink::{DiskSink, RawSink, RawStream};
use super::staged::Staged;
use crate::blockio::ReadOptions;
use crate::chain::VirtualDisk;
use crate::chunk::{ChunkData, ChunkPool, ChunkReader};
use crate::error::Result;

/// Bytes read per chunk: the archive's default chunk size, whole multiples of the reader's
/// largest request.
const COPY_CHUNK_BYTES: u64 = crate::archive::format::DEFAULT_CHUNK_BYTES;
/// Chunk buffers kept for reuse.
const POOLED_BUFFERS: usize = 4;

/// A raw disk image output; [`ImageOut::commit`] puts a file under its name.
pub struct ImageOut {
    sink: Box<dyn DiskSink>,
    staged: Option<Staged>,
}

impl ImageOut {
    /// Opens `spec` for a disk of `capacity` bytes. An existing regular file is replaced (with
    /// `force`), but only once the new one is complete.
    pub fn create(spec: &OutputSpec<'_>, capacity: u64) -> Result<ImageOut> {
        Ok(match open(spec)? {
            Opened::Stream { file, .. } => {
                let out = BufWriter::with_capacity(1 << 20, Located::new(file));
                ImageOut {
                    sink: Box::new(RawStream::new(Box::new(out), &spec.name())),
                    staged: None,
                }
            }
            Opened::Staged {
                staged,
                partial,
                file,
            } => ImageOut {
                sink: Box::new(RawSink::new(partial, file, capacity)?),
                staged: Some(staged),
            },
        })
    }

    /// Puts a completed file under its name (nothing to do for a stream).
    pub fn commit(mut self) -> Result<()> {
        match &mut self.staged {
            Some(s) => s.commit(),
            None => Ok(()),
        }
    }
}

/// Totals of one copy.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct CopyStats {
    /// Bytes read from data runs.
    pub data_bytes: u64,
    /// Bytes of zero runs (holes in a file output).
    pub zero_bytes: u64,
}

/// Copies the whole collapsed disk into `out`, reading with `read` (io_uring, or pread as the
/// fallback) from local files and LUNs alike. The caller commits `out` once the copy is known
/// good.
pub fn copy_disk(
    disk: &mut dyn VirtualDisk,
    out: &mut ImageOut,
    read: &ReadOptions,
) -> Result<CopyStats> {
    let pool = Arc::new(ChunkPool::new(POOLED_BUFFERS));
    let mut reader = ChunkReader::new(disk, 0, COPY_CHUNK_BYTES, read, pool.clone())?;
    let sink = out.sink.as_mut();
    let mut stats = CopyStats::default();
    while let Some(chunk) = reader.next_chunk()? {
        let bytes = match chunk.data {
            ChunkData::Zero => {
                sink.write_zero(chunk.offset, chunk.len)?;
                stats.zero_bytes += chunk.len;
                continue;
            }
            ChunkData::Data(b) => b,
        };
        // The data runs lie packed end to end; the gaps between them are the zero runs.
        let (mut pos, mut packed) = (0, 0);
        for (start, end) in bytes.data_runs() {
            if start > pos {
                sink.write_zero(chunk.offset + pos as u64, (start - pos) as u64)?;
            }
            let data = &bytes.packed[packed..packed + end - start];
            sink.write_data(chunk.offset + start as u64, data)?;
            packed += end - start;
            pos = end;
        }
        if pos < bytes.len {
            sink.write_zero(chunk.offset + pos as u64, (bytes.len - pos) as u64)?;
        }
        stats.data_bytes += packed as u64;
        stats.zero_bytes += (bytes.len - packed) as u64;
        pool.give(bytes.packed);
    }
    sink.finish()?;
    Ok(stats)
}
