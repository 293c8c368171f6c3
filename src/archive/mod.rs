//! The vdar archive format: writer, one-pass reader, index and recovery.
//!
//! formats/ARCHIVE.md is the normative description. In brief: a 64-byte file header, a JSON
//! manifest record, then per VM its small files and per disk its chunk and reference records in
//! disk order followed by a disk-end record, then an index record, zero padding to the block
//! size, and a 96-byte footer. Every record starts with a magic and a checksummed header naming
//! its kind, codec, disk, offset, lengths and the BLAKE3 of its plaintext.

pub mod format;
pub mod index;
pub mod manifest;
pub mod patch;
pub mod reader;
pub mod recover;
pub mod sparse;
pub mod volume;
pub mod writer;
pub mod zstd_ctx;

pub use format::{Codec, RecordKind};
pub use manifest::{DiskMeta, LayerInfo, Manifest};
pub use reader::StreamReader;
pub use writer::ArchiveWriter;
