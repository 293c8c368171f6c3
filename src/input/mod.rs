//! Input stage: every VMDK layer format, behind one small trait.
//!
//! A *layer* is one descriptor (one link of a snapshot chain). It is made of *extents*, each a
//! contiguous range of the layer's sectors stored in one file (flat, KDMV sparse, COWD, SEsparse)
//! or in no file at all (ZERO). Each extent format implements [`ExtentMap`]: given an
//! extent-relative sector, say where the bytes live and for how many sectors that answer holds.
//! Extent readers never read grain data themselves; they only map. The chain collapse
//! (`crate::chain`) walks layers top-down with these answers, and a reader stage fetches bytes.
//!
//! Units: inside this module positions and lengths are 512-byte sectors ([`SECTOR`]); file offsets
//! in [`Source`] are bytes.

pub(crate) mod claims;
pub mod cowd;
pub mod descriptor;
pub mod flat;
mod grain_tables;
pub mod in_use;
pub mod layer;
pub mod read;
#[cfg(test)]
mod redo_test_util;
mod run_acc;
pub mod sesparse;
#[cfg(test)]
pub(crate) mod slow_source;
pub mod source;
pub mod sparse;
pub mod vm;
pub mod vmsd;
pub mod vmx;

pub use source::{
    ByteSource, FileId, FileTable, LocalFile, LocalOpener, MemSource, Piece, SourceOpener,
};

use crate::error::Result;

/// Bytes per sector. Every VMDK offset and size counts these.
pub const SECTOR: u64 = 512;

/// Where the bytes of a run of sectors come from, within one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Stored verbatim in `file` from byte `offset`, contiguous for the whole run.
    Data {
        /// The file holding the bytes.
        file: FileId,
        /// Byte offset of the run's first sector in that file.
        offset: u64,
    },
    /// Inside one deflate-compressed grain (streamOptimized). The run never crosses the grain.
    Deflate {
        /// The file holding the grain record.
        file: FileId,
        /// Byte offset of the grain record (its marker, or its size field without markers).
        record: u64,
        /// Byte offset of the run's first sector within the inflated grain.
        skip: u32,
        /// Bytes the grain inflates to (a grain, or less for a final partial grain).
        grain_bytes: u32,
        /// Whether the record starts with a 12-byte grain marker (lba u64 + size u32) rather
        /// than a bare u32 size.
        marker: bool,
    },
    /// Reads as zeros and hides lower layers (explicit zero grain, ZERO extent, hole in the base).
    Zero,
    /// Not present in this layer: the layer below decides; zeros at the bottom of the chain.
    Unallocated,
}

/// A run of sectors with one [`Source`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// Length in sectors, at least 1.
    pub sectors: u64,
    /// Where those sectors come from. For [`Source::Data`] the bytes are contiguous in the file.
    pub source: Source,
}

/// Maps extent-relative sectors to their storage. One implementation per extent format.
pub trait ExtentMap: Send {
    /// Size of the extent in sectors.
    fn sectors(&self) -> u64;

    /// Maps the sectors starting at `lba` (extent-relative, `< self.sectors()`), looking at most
    /// `max` sectors ahead (`max >= 1`). Returns a run of between 1 and `max` sectors.
    ///
    /// Implementations should return the longest run they can establish cheaply (to the end of
    /// the current grain table, say), merging adjacent grains whose data is contiguous in the file,
    /// so that the collapse and the reader see few, large runs.
    fn map(&mut self, lba: u64, max: u64) -> Result<Run>;

    /// Grain size in sectors (1 for flat extents), reported by `inspect`.
    fn grain_sectors(&self) -> u64;

    /// A one-word description of the extent format for `inspect`.
    fn kind(&self) -> &'static str;

    /// Warnings found while opening (unclean shutdown and the like), for the user.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}
