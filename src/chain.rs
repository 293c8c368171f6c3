//! Snapshot-chain collapse: the virtual disk as ordered runs of data or zeros.
//!
//! Later stages see a chain only through [`VirtualDisk`]: runs in ascending order that cover
//! `[0, capacity)` exactly, each either zeros or bytes at a known place. They never read
//! unallocated or zero space, and they read data runs in large sequential pieces.

use crate::error::Result;
use crate::input::read::read_source;
use crate::input::{FileTable, Source};

/// A run of a collapsed virtual disk. Offsets and lengths are bytes, multiples of 512.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskRun {
    /// Byte offset in the virtual disk.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// [`Source::Data`], [`Source::Deflate`] or [`Source::Zero`]; never `Unallocated`.
    pub source: Source,
}

impl DiskRun {
    /// Whether the run reads as zeros.
    pub fn is_zero(&self) -> bool {
        matches!(self.source, Source::Zero | Source::Unallocated)
    }

    /// The source of the part of this run that starts `skip` bytes in.
    pub fn source_at(&self, skip: u64) -> Source {
        match self.source {
            Source::Data { file, offset } => Source::Data {
                file,
                offset: offset + skip,
            },
            Source::Deflate {
                file,
                record,
                skip: s,
                grain_bytes,
                marker,
            } => Source::Deflate {
                file,
                record,
                skip: s + u32::try_from(skip).expect("invariant: deflate runs stay inside a grain"),
                grain_bytes,
                marker,
            },
            other => other,
        }
    }
}

/// A collapsed virtual disk.
pub trait VirtualDisk: Send {
    /// Size of the virtual disk in bytes.
    fn capacity(&self) -> u64;
    /// The next run, or `None` after the run that ends at `capacity`.
    fn next_run(&mut self) -> Result<Option<DiskRun>>;
    /// The files that [`DiskRun::source`] refers to.
    fn files(&self) -> &FileTable;
}

/// Reads `buf.len()` bytes of `run`, starting `skip` bytes into it.
pub fn read_run(files: &FileTable, run: &DiskRun, skip: u64, buf: &mut [u8]) -> Result<()> {
    debug_assert!(skip + buf.len() as u64 <= run.len);
    read_source(files, &run.source_at(skip), buf)
}
