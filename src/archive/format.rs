//! Byte layout of the vdar archive: magics, the file header, record headers, index entries and
//! the footer, each with explicit little-endian `encode`/`decode`.
//!
//! formats/ARCHIVE.md is normative; this file implements it and the two change in the same
//! commit. The golden-vector test in tests/archive.rs pins the bytes of a small archive, so any
//! drift between the two shows up as a failing test (and means a format version bump).
//!
//! Invariants: every fixed structure has a compile-time size assertion; every `decode` checks
//! the magic, the version and the checksum before any length field is trusted; lengths are then
//! bounded by the `MAX_*` constants here and by the caller's knowledge of the remaining input.

use crate::error::{Error, Result};

// ---------------------------------------------------------------------------------------------
// DO NOT MODIFY: these values are the on-disk identity of format v1.
// ARCHIVE_MAGIC_V1 = blake3("vdar archive v1")[..8]
// RECORD_MAGIC_V1  = blake3("vdar record v1")[..8]
// FOOTER_MAGIC_V1  = blake3("vdar footer v1")[..8]
// (checked by `tests::magics_are_derived`). Hash-derived magics are as unlikely as random bytes
// to occur in data, which is what resynchronisation after damage relies on.
// ---------------------------------------------------------------------------------------------
/// First 8 bytes of every archive. Defined in the leaf [`crate::sniff`], which names a wrong
/// file's format for the input side too (a descriptor parser handed an archive).
pub use crate::sniff::ARCHIVE_MAGIC_V1;
/// First 8 bytes of every record header.
pub const RECORD_MAGIC_V1: [u8; 8] = [0xd5, 0x1b, 0xbd, 0x72, 0xc9, 0xd2, 0xfc, 0x2a];
/// First 8 bytes of the footer.
pub const FOOTER_MAGIC_V1: [u8; 8] = [0xc4, 0xe0, 0xe4, 0x1e, 0xe0, 0x53, 0xae, 0x8f];

/// The format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// Size of [`FileHeader`].
pub const FILE_HEADER_BYTES: usize = 64;
/// Size of [`RecordHeader`].
pub const RECORD_HEADER_BYTES: usize = 80;
/// Size of [`IndexEntry`].
pub const INDEX_ENTRY_BYTES: usize = 32;
/// Size of [`Footer`].
pub const FOOTER_BYTES: usize = 96;

const _: () = assert!(FILE_HEADER_BYTES == 64);
const _: () = assert!(RECORD_HEADER_BYTES == 80);
const _: () = assert!(INDEX_ENTRY_BYTES == 32);
const _: () = assert!(FOOTER_BYTES == 96);

/// Smallest chunk size.
pub const MIN_CHUNK_BYTES: u64 = 64 << 10;
/// Largest chunk size; also the largest plaintext of a chunk record.
pub const MAX_CHUNK_BYTES: u64 = 16 << 20;
/// Default chunk size (see formats/ARCHIVE.md, "Choosing the chunk size", for the measurements).
pub const DEFAULT_CHUNK_BYTES: u64 = 4 << 20;
/// Largest manifest (JSON). A VM's manifest is a few KiB; this leaves room for thousands.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// Largest VM file (.vmx, .nvram, .vmsd...) stored in an archive.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Largest number of index entries: 2^28 = a 16 TiB archive of 64 KiB chunks.
pub const MAX_INDEX_ENTRIES: u64 = 1 << 28;
/// Largest fixed output block size (`block_size`); tape drives use up to a few MiB.
pub const MAX_BLOCK_BYTES: u32 = 16 << 20;
/// Payload size of a [`RecordKind::Ref`] record.
pub const REF_PAYLOAD_BYTES: u64 = 12;
/// Bytes of a [`RecordKind::BasePatch`] payload before its run table ([`super::patch`]).
pub const PATCH_FIXED_BYTES: usize = 12 + 32 + 32;
/// Payload size of a [`RecordKind::DiskEnd`] record.
pub const DISK_END_PAYLOAD_BYTES: u64 = 16;
/// `disk` field value of records that belong to no disk (manifest, index).
pub const NO_DISK: u32 = u32::MAX;

/// Incompatible feature bit: Chunk records may use codec 2 ([`Codec::SparseZstd`]).
pub const INCOMPAT_SPARSE_CHUNKS: u32 = 1;

/// Incompatible feature bit: a copy of the manifest follows the index record (a reader
/// without it would take the copy for damage).
pub const INCOMPAT_MANIFEST_COPY: u32 = 2;

/// `offset` of the front manifest record and of its copy after the index.
pub const MANIFEST_FRONT: u64 = 0;
/// See [`MANIFEST_FRONT`].
pub const MANIFEST_COPY: u64 = 1;

/// Incompatible feature bit: the archive is an incremental. BaseRef records name chunks of
/// its base's restored image, and the manifest names the base ([`RecordKind::BaseRef`]).
pub const INCOMPAT_BASE_REFS: u32 = 4;

/// Incompatible feature bit: BasePatch records may occur ([`RecordKind::BasePatch`]); set in
/// every incremental, with [`INCOMPAT_BASE_REFS`].
pub const INCOMPAT_BASE_PATCHES: u32 = 8;

/// Incompatible feature bits known to this build. A reader refuses unknown bits.
pub const KNOWN_INCOMPAT_FEATURES: u32 =
    INCOMPAT_SPARSE_CHUNKS | INCOMPAT_MANIFEST_COPY | INCOMPAT_BASE_REFS | INCOMPAT_BASE_PATCHES;

/// First 8 bytes of blake3(`data`), the truncated checksum used in headers and the footer.
pub fn csum8(data: &[u8]) -> [u8; 8] {
    let h = blake3::hash(data);
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.as_bytes()[..8]);
    out
}

// Fixed-offset little-endian reads from buffers whose size the types above guarantee.
use crate::input::source::{le_u32, le_u64};

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// The JSON manifest; always the first record, stored uncompressed.
    Manifest,
    /// A small VM file (`disk` = VM ordinal, `offset` = file ordinal within the VM).
    File,
    /// Chunk data (`disk`, `offset` = disk byte offset, `raw_len` = chunk bytes).
    Chunk,
    /// A chunk equal to an earlier one; the payload names that chunk's disk and offset.
    Ref,
    /// End of a disk: every chunk of the disk precedes it.
    DiskEnd,
    /// The index of File, Chunk, Ref and BaseRef records, just before the footer.
    Index,
    /// A chunk equal to one of the base archive's restored image; the payload names its disk
    /// and offset there. Only in incrementals ([`INCOMPAT_BASE_REFS`]).
    BaseRef,
    /// A chunk that is the base image's chunk at the same place with some byte runs replaced:
    /// the payload holds the base place, the base chunk's digest and the new runs
    /// ([`super::patch`]). Only in incrementals ([`INCOMPAT_BASE_PATCHES`]).
    BasePatch,
}

impl RecordKind {
    /// The on-disk code.
    pub fn code(self) -> u8 {
        match self {
            RecordKind::Manifest => 1,
            RecordKind::File => 2,
            RecordKind::Chunk => 3,
            RecordKind::Ref => 4,
            RecordKind::DiskEnd => 5,
            RecordKind::Index => 6,
            RecordKind::BaseRef => 7,
            RecordKind::BasePatch => 8,
        }
    }

    /// Whether the record stands for one chunk place of a disk (Chunk, Ref, BaseRef,
    /// BasePatch).
    pub fn is_data(self) -> bool {
        matches!(
            self,
            RecordKind::Chunk | RecordKind::Ref | RecordKind::BaseRef | RecordKind::BasePatch
        )
    }

    /// Whether the record's bytes are (partly) the base image's (BaseRef, BasePatch).
    pub fn is_from_base(self) -> bool {
        matches!(self, RecordKind::BaseRef | RecordKind::BasePatch)
    }

    /// Whether the payload names another chunk instead of holding bytes (Ref, BaseRef).
    pub fn is_reference(self) -> bool {
        matches!(self, RecordKind::Ref | RecordKind::BaseRef)
    }

    /// Decodes an on-disk code; `None` for codes this version does not know.
    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => RecordKind::Manifest,
            2 => RecordKind::File,
            3 => RecordKind::Chunk,
            4 => RecordKind::Ref,
            5 => RecordKind::DiskEnd,
            6 => RecordKind::Index,
            7 => RecordKind::BaseRef,
            8 => RecordKind::BasePatch,
            _ => return None,
        })
    }
}

/// How a record's payload is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// Stored verbatim (`stored_len == raw_len`).
    None,
    /// One zstd frame (`stored_len < raw_len`: a payload that does not shrink is stored raw).
    Zstd,
    /// Chunk records only: a table of data runs and one zstd frame of their bytes, the rest of
    /// the chunk zero ([`super::sparse`]; `stored_len < raw_len`).
    SparseZstd,
}

impl Codec {
    /// The on-disk code.
    pub fn code(self) -> u8 {
        match self {
            Codec::None => 0,
            Codec::Zstd => 1,
            Codec::SparseZstd => 2,
        }
    }

    /// Decodes an on-disk code.
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Codec::None),
            1 => Some(Codec::Zstd),
            2 => Some(Codec::SparseZstd),
            _ => None,
        }
    }
}

/// The fixed 64-byte header at offset 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// `format_version`
    pub format_version: u32,
    /// `incompat_features`: readers refuse unknown bits.
    pub incompat_features: u32,
    /// `compat_features`: readers ignore unknown bits.
    pub compat_features: u32,
    /// `block_size`: 0, or the fixed output block size the stream is padded to.
    pub block_size: u32,
}

impl FileHeader {
    /// Encodes the header, computing its checksum.
    pub fn encode(&self) -> [u8; FILE_HEADER_BYTES] {
        let mut b = [0u8; FILE_HEADER_BYTES];
        b[0..8].copy_from_slice(&ARCHIVE_MAGIC_V1);
        b[8..12].copy_from_slice(&self.format_version.to_le_bytes());
        b[12..16].copy_from_slice(&self.incompat_features.to_le_bytes());
        b[16..20].copy_from_slice(&self.compat_features.to_le_bytes());
        b[20..24].copy_from_slice(&self.block_size.to_le_bytes());
        let c = csum8(&b[..56]);
        b[56..64].copy_from_slice(&c);
        b
    }

    /// Decodes and validates the header at stream offset 0.
    pub fn decode(b: &[u8; FILE_HEADER_BYTES]) -> Result<Self> {
        if b[0..8] != ARCHIVE_MAGIC_V1 {
            let what = crate::sniff::looks_like(b).unwrap_or("bad magic");
            return Err(Error::archive(0, format!("not a vdar archive ({what})")));
        }
        // The checksum is checked first: every version keeps magic, version and this checksum
        // in place, so a flipped version byte is damage, and only a header that checks out
        // can say "written by a newer version".
        if b[56..64] != csum8(&b[..56]) {
            return Err(Error::archive(56, "file header checksum mismatch"));
        }
        let format_version = le_u32(b, 8);
        if format_version > FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: format_version,
                supported: FORMAT_VERSION,
            });
        }
        if format_version == 0 {
            return Err(Error::archive(8, "format version 0 is invalid"));
        }
        let h = FileHeader {
            format_version,
            incompat_features: le_u32(b, 12),
            compat_features: le_u32(b, 16),
            block_size: le_u32(b, 20),
        };
        let unknown = h.incompat_features & !KNOWN_INCOMPAT_FEATURES;
        if unknown != 0 {
            return Err(Error::archive(
                12,
                format!("unknown incompatible feature bits {unknown:#x}"),
            ));
        }
        if h.block_size > MAX_BLOCK_BYTES {
            return Err(Error::archive(
                20,
                format!("block size {} > {MAX_BLOCK_BYTES}", h.block_size),
            ));
        }
        Ok(h)
    }
}

/// The fixed 80-byte header that starts every record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// `kind`
    pub kind: RecordKind,
    /// `codec`
    pub codec: Codec,
    /// `disk`: disk ordinal (Chunk, Ref, DiskEnd), VM ordinal (File), or [`NO_DISK`].
    pub disk: u32,
    /// `offset`: disk byte offset (Chunk, Ref), file ordinal (File), capacity (DiskEnd), else 0.
    pub offset: u64,
    /// `stored_len`: payload bytes following the header.
    pub stored_len: u64,
    /// `raw_len`: plaintext bytes (after decoding the payload; for Ref, the chunk it stands for).
    pub raw_len: u64,
    /// `digest`: blake3 of the plaintext (for Ref, of the chunk it stands for).
    pub digest: [u8; 32],
}

impl RecordHeader {
    /// Encodes the header, computing its checksum.
    pub fn encode(&self) -> [u8; RECORD_HEADER_BYTES] {
        let mut b = [0u8; RECORD_HEADER_BYTES];
        b[0..8].copy_from_slice(&RECORD_MAGIC_V1);
        b[8] = self.kind.code();
        b[9] = self.codec.code();
        // b[10..12]: flags, zero in v1.
        b[12..16].copy_from_slice(&self.disk.to_le_bytes());
        b[16..24].copy_from_slice(&self.offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.stored_len.to_le_bytes());
        b[32..40].copy_from_slice(&self.raw_len.to_le_bytes());
        b[40..72].copy_from_slice(&self.digest);
        let c = csum8(&b[..72]);
        b[72..80].copy_from_slice(&c);
        b
    }

    /// Decodes a header found at stream offset `at`. Checks magic, checksum, kind, codec and
    /// the per-kind length rules that need no context; the reader checks the rest against the
    /// manifest.
    pub fn decode(b: &[u8; RECORD_HEADER_BYTES], at: u64) -> Result<Self> {
        if b[0..8] != RECORD_MAGIC_V1 {
            return Err(Error::archive(at, "bad record magic"));
        }
        if b[72..80] != csum8(&b[..72]) {
            return Err(Error::archive(at, "record header checksum mismatch"));
        }
        let kind = RecordKind::from_code(b[8])
            .ok_or_else(|| Error::archive(at + 8, format!("unknown record kind {}", b[8])))?;
        let codec = Codec::from_code(b[9])
            .ok_or_else(|| Error::archive(at + 9, format!("unknown codec {}", b[9])))?;
        if b[10] != 0 || b[11] != 0 {
            return Err(Error::archive(at + 10, "unknown record flags"));
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&b[40..72]);
        let h = RecordHeader {
            kind,
            codec,
            disk: le_u32(b, 12),
            offset: le_u64(b, 16),
            stored_len: le_u64(b, 24),
            raw_len: le_u64(b, 32),
            digest,
        };
        h.check_lengths(at)?;
        Ok(h)
    }

    /// Length rules that hold for every record of a kind.
    fn check_lengths(&self, at: u64) -> Result<()> {
        let bad = |what: String| Err(Error::archive(at, what));
        match self.codec {
            Codec::None if self.stored_len != self.raw_len && !self.kind.is_reference() => {
                return bad(format!(
                    "uncompressed record stores {} bytes for {} plaintext bytes",
                    self.stored_len, self.raw_len
                ));
            }
            Codec::SparseZstd
                if !matches!(self.kind, RecordKind::Chunk | RecordKind::BasePatch) =>
            {
                return bad(format!("{:?} record with the sparse codec", self.kind));
            }
            _ if self.kind == RecordKind::BasePatch && self.codec != Codec::SparseZstd => {
                return bad(format!("base patch with codec {:?}", self.codec));
            }
            Codec::Zstd | Codec::SparseZstd if self.stored_len >= self.raw_len => {
                return bad(format!(
                    "compressed record stores {} bytes >= its {} plaintext bytes",
                    self.stored_len, self.raw_len
                ));
            }
            _ => {}
        }
        let max = match self.kind {
            RecordKind::Manifest => MAX_MANIFEST_BYTES,
            RecordKind::File => MAX_FILE_BYTES,
            RecordKind::Chunk | RecordKind::Ref | RecordKind::BaseRef | RecordKind::BasePatch => {
                MAX_CHUNK_BYTES
            }
            RecordKind::DiskEnd => DISK_END_PAYLOAD_BYTES,
            RecordKind::Index => MAX_INDEX_ENTRIES * INDEX_ENTRY_BYTES as u64,
        };
        if self.raw_len > max {
            return bad(format!(
                "{:?} record of {} bytes > {max}",
                self.kind, self.raw_len
            ));
        }
        match self.kind {
            RecordKind::Ref | RecordKind::BaseRef
                if self.stored_len != REF_PAYLOAD_BYTES || self.codec != Codec::None =>
            {
                bad(format!("reference record of {} bytes", self.stored_len))
            }
            RecordKind::DiskEnd if self.raw_len != DISK_END_PAYLOAD_BYTES => {
                bad(format!("disk-end record of {} bytes", self.raw_len))
            }
            k if k.is_data() && self.raw_len == 0 => bad("empty chunk record".into()),
            RecordKind::BasePatch if self.stored_len < PATCH_FIXED_BYTES as u64 => {
                bad(format!("base patch of {} bytes", self.stored_len))
            }
            RecordKind::Index if self.raw_len % INDEX_ENTRY_BYTES as u64 != 0 => bad(format!(
                "index of {} bytes is not a whole number of entries",
                self.raw_len
            )),
            _ => Ok(()),
        }
    }

    /// Bytes the record occupies in the stream (header + payload).
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_BYTES as u64 + self.stored_len
    }
}

/// One 32-byte index entry: where a File, Chunk, Ref or BaseRef record lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// `record_offset`: stream offset of the record header.
    pub record_offset: u64,
    /// `offset`: the record header's `offset` field.
    pub offset: u64,
    /// `disk`: the record header's `disk` field.
    pub disk: u32,
    /// `kind`
    pub kind: RecordKind,
    /// `codec`
    pub codec: Codec,
    /// `stored_len` (< 2^32: chunks and files are at most 64 MiB).
    pub stored_len: u32,
    /// `raw_len`
    pub raw_len: u32,
}

impl IndexEntry {
    /// Encodes the entry.
    pub fn encode(&self) -> [u8; INDEX_ENTRY_BYTES] {
        let mut b = [0u8; INDEX_ENTRY_BYTES];
        b[0..8].copy_from_slice(&self.record_offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.offset.to_le_bytes());
        b[16..20].copy_from_slice(&self.disk.to_le_bytes());
        b[20] = self.kind.code();
        b[21] = self.codec.code();
        b[24..28].copy_from_slice(&self.stored_len.to_le_bytes());
        b[28..32].copy_from_slice(&self.raw_len.to_le_bytes());
        b
    }

    /// Decodes entry bytes found at stream-independent position `at` (the entry's ordinal, for
    /// messages: the index is checksummed as a whole, so entries have no own checksum).
    pub fn decode(b: &[u8; INDEX_ENTRY_BYTES], at: u64) -> Result<Self> {
        let kind = RecordKind::from_code(b[20])
            .filter(|k| *k == RecordKind::File || k.is_data())
            .ok_or_else(|| Error::archive(at, format!("index entry of kind {}", b[20])))?;
        let codec = Codec::from_code(b[21])
            .ok_or_else(|| Error::archive(at, format!("index entry codec {}", b[21])))?;
        Ok(IndexEntry {
            record_offset: le_u64(b, 0),
            offset: le_u64(b, 8),
            disk: le_u32(b, 16),
            kind,
            codec,
            stored_len: le_u32(b, 24),
            raw_len: le_u32(b, 28),
        })
    }
}

/// The fixed 96-byte footer: the last bytes of the archive, after any block padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    /// `index_offset`: stream offset of the Index record header.
    pub index_offset: u64,
    /// `footer_offset`: stream offset of this footer (so a misplaced footer is detected).
    pub footer_offset: u64,
    /// `record_count`: records in the archive, Manifest and Index included.
    pub record_count: u64,
    /// `meta_hash`: blake3 over the file header and every record header, in stream order.
    pub meta_hash: [u8; 32],
}

impl Footer {
    /// Encodes the footer, computing its checksum.
    pub fn encode(&self) -> [u8; FOOTER_BYTES] {
        let mut b = [0u8; FOOTER_BYTES];
        b[0..8].copy_from_slice(&FOOTER_MAGIC_V1);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.index_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.footer_offset.to_le_bytes());
        b[32..40].copy_from_slice(&self.record_count.to_le_bytes());
        b[40..72].copy_from_slice(&self.meta_hash);
        let c = csum8(&b[..88]);
        b[88..96].copy_from_slice(&c);
        b
    }

    /// Decodes a footer found at stream offset `at`.
    pub fn decode(b: &[u8; FOOTER_BYTES], at: u64) -> Result<Self> {
        if b[0..8] != FOOTER_MAGIC_V1 {
            return Err(Error::archive(at, "bad footer magic"));
        }
        // Checksum first, as in the file header: a flipped version byte is damage.
        if b[88..96] != csum8(&b[..88]) {
            return Err(Error::archive(at, "footer checksum mismatch"));
        }
        let v = le_u32(b, 8);
        if v > FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: v,
                supported: FORMAT_VERSION,
            });
        }
        let mut meta_hash = [0u8; 32];
        meta_hash.copy_from_slice(&b[40..72]);
        let f = Footer {
            index_offset: le_u64(b, 16),
            footer_offset: le_u64(b, 24),
            record_count: le_u64(b, 32),
            meta_hash,
        };
        if f.footer_offset != at {
            return Err(Error::archive(
                at,
                format!("footer says it is at {:#x}", f.footer_offset),
            ));
        }
        if f.index_offset >= at {
            return Err(Error::archive(
                at,
                format!("index offset {:#x} not before the footer", f.index_offset),
            ));
        }
        Ok(f)
    }
}

/// Zero bytes between the end of the Index record (at `end`) and the footer, so that the footer
/// ends on a `block_size` boundary.
pub fn footer_padding(end: u64, block_size: u32) -> u64 {
    if block_size == 0 {
        return 0;
    }
    let b = u64::from(block_size);
    (b - (end + FOOTER_BYTES as u64) % b) % b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics_are_derived() {
        for (s, m) in [
            ("vdar archive v1", ARCHIVE_MAGIC_V1),
            ("vdar record v1", RECORD_MAGIC_V1),
            ("vdar footer v1", FOOTER_MAGIC_V1),
        ] {
            assert_eq!(&blake3::hash(s.as_bytes()).as_bytes()[..8], &m, "{s}");
        }
    }

    #[test]
    fn record_header_roundtrip_and_checksum() {
        let h = RecordHeader {
            kind: RecordKind::Chunk,
            codec: Codec::Zstd,
            disk: 3,
            offset: 1 << 20,
            stored_len: 100,
            raw_len: 1 << 16,
            digest: [7; 32],
        };
        let b = h.encode();
        assert_eq!(RecordHeader::decode(&b, 0).unwrap(), h);
        for i in 0..RECORD_HEADER_BYTES {
            let mut c = b;
            c[i] ^= 1;
            assert!(RecordHeader::decode(&c, 0).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn hostile_lengths_rejected() {
        let mut h = RecordHeader {
            kind: RecordKind::Chunk,
            codec: Codec::None,
            disk: 0,
            offset: 0,
            stored_len: u64::MAX,
            raw_len: u64::MAX,
            digest: [0; 32],
        };
        assert!(RecordHeader::decode(&h.encode(), 0).is_err());
        h.kind = RecordKind::Index;
        assert!(RecordHeader::decode(&h.encode(), 0).is_err());
    }

    #[test]
    fn sparse_codec_only_on_shrunk_chunks() {
        let h = RecordHeader {
            kind: RecordKind::Chunk,
            codec: Codec::SparseZstd,
            disk: 0,
            offset: 0,
            stored_len: 100,
            raw_len: 4096,
            digest: [0; 32],
        };
        assert_eq!(RecordHeader::decode(&h.encode(), 0).unwrap(), h);
        for bad in [
            RecordHeader {
                kind: RecordKind::File,
                ..h
            },
            RecordHeader {
                stored_len: 4096,
                ..h
            },
        ] {
            assert!(RecordHeader::decode(&bad.encode(), 0).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn newer_version_is_named() {
        let mut b = FileHeader {
            format_version: 1,
            incompat_features: 0,
            compat_features: 0,
            block_size: 0,
        }
        .encode();
        b[8] = 2;
        // A flipped version byte is damage (the checksum no longer holds)...
        let e = FileHeader::decode(&b).unwrap_err();
        assert!(matches!(e, Error::ArchiveCorrupt { offset: 56, .. }), "{e}");
        // ...while a header that checks out names the newer version.
        let c = csum8(&b[..56]);
        b[56..64].copy_from_slice(&c);
        let e = FileHeader::decode(&b).unwrap_err().to_string();
        assert!(e.contains("v2 > v1"), "{e}");
    }

    #[test]
    fn padding_ends_footer_on_block() {
        for end in [0u64, 1, 511, 512, 10_000] {
            let p = footer_padding(end, 512);
            assert_eq!((end + p + FOOTER_BYTES as u64) % 512, 0);
            assert!(p < 512);
        }
        assert_eq!(footer_padding(77, 0), 0);
    }
}
