//! The streaming archive writer: file header, manifest, records, index, footer, with no seek.
//!
//! The writer is single-threaded and sees records in their final order (the pipeline's
//! order-preserving stage guarantees that), so the archive's bytes depend only on the input and
//! the options. It keeps two things in memory that grow with the archive: the index (32 bytes per
//! File/Chunk/Ref record) and nothing else; the dedup table belongs to the pipeline.
//!
//! `block_size` padding: every byte goes through `BlockOut`, which hands the sink whole blocks
//! only (fixed-block tape drives reject short writes), and the footer is preceded by zero padding
//! so that it ends exactly on a block boundary.

use std::io::Write;
use std::path::PathBuf;

use super::format::*;
use super::manifest::Manifest;
use crate::error::{Error, Result};

/// Writes `len`-byte blocks to the sink, or passes bytes through when `block_size` is 0.
struct BlockOut<'a> {
    out: &'a mut dyn Write,
    name: PathBuf,
    block: usize,
    buf: Vec<u8>,
    /// Bytes handed to the sink so far (for error offsets).
    flushed: u64,
}

impl BlockOut<'_> {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.block == 0 {
            self.sink(data)?;
            return Ok(());
        }
        let mut data = data;
        while !data.is_empty() {
            let take = (self.block - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.block {
                let block = std::mem::take(&mut self.buf);
                self.sink(&block)?;
                self.buf = block;
                self.buf.clear();
            }
        }
        Ok(())
    }

    fn sink(&mut self, data: &[u8]) -> Result<()> {
        self.out
            .write_all(data)
            .map_err(|e| Error::io(&self.name, Some(self.flushed), e))?;
        self.flushed += data.len() as u64;
        Ok(())
    }
}

/// Writes one archive to a `Write` sink in a single forward pass.
pub struct ArchiveWriter<'a> {
    out: BlockOut<'a>,
    pos: u64,
    block_size: u32,
    meta: blake3::Hasher,
    records: u64,
    index: Vec<IndexEntry>,
    level: i32,
    /// The manifest record's payload, written again after the index.
    manifest_json: Vec<u8>,
}

/// Compresses `raw` with zstd at `level`; returns the codec and the payload to store. A payload
/// that does not shrink is stored raw (the reader's stored < raw rule for zstd depends on it).
pub fn encode_payload(raw: &[u8], level: i32) -> Result<(Codec, Vec<u8>)> {
    let mut payload = Vec::new();
    let codec = encode_payload_into(raw, level, &mut payload)?;
    Ok((codec, payload))
}

/// [`encode_payload`] into `payload` (cleared first), so that a recycled buffer's pages serve
/// again: a fresh multi-megabyte payload per chunk came back from the allocator as new pages
/// for the kernel to clear.
pub fn encode_payload_into(raw: &[u8], level: i32, payload: &mut Vec<u8>) -> Result<Codec> {
    payload.clear();
    super::zstd_ctx::compress_append(raw, level, payload)
        .map_err(|e| Error::Usage(format!("zstd level {level}: {e}")))?;
    if payload.len() < raw.len() {
        Ok(Codec::Zstd)
    } else {
        payload.clear();
        payload.extend_from_slice(raw);
        Ok(Codec::None)
    }
}

/// Compresses a canonical chunk: whole, or as its data runs when it has zero blocks.
pub fn encode_chunk(
    bytes: &crate::chunk::ChunkBytes,
    level: i32,
    payloads: &crate::chunk::ChunkPool,
) -> Result<(Codec, Vec<u8>)> {
    let mut payload = payloads.take(0, payload_capacity(bytes.len));
    let codec = if bytes.zeros.is_empty() {
        encode_payload_into(&bytes.packed, level, &mut payload)?
    } else {
        let runs: Vec<_> = bytes.data_runs().collect();
        if encode_sparse_payload_into(&runs, &bytes.packed, bytes.len, level, &mut payload)? {
            Codec::SparseZstd
        } else {
            // The runs alone did not shrink: the whole chunk, raw. With at least one 4 KiB zero
            // block left out this takes a run table larger than that block; the format forbids
            // a codec-2 payload that does not shrink, so the writer guards it anyway.
            payload.clear();
            payload.extend_from_slice(&bytes.to_plain());
            Codec::None
        }
    };
    Ok((codec, payload))
}

/// Room for any payload of a `len`-byte chunk, so that a recycled buffer never grows: zstd's
/// worst case plus the largest run table (data runs alternate with zero blocks at most).
pub fn payload_capacity(len: usize) -> usize {
    let most_runs = len.div_ceil(crate::chunk::bytes::ZERO_BLOCK).div_ceil(2);
    zstd::zstd_safe::compress_bound(len) + super::sparse::table_bytes(most_runs)
}

/// The sparse payload ([`super::sparse`]) of a `raw_len`-byte chunk whose data runs `runs`
/// hold `packed` and whose other bytes are zero, written into `payload` (cleared first);
/// `false` when it would not be smaller than the chunk (then the chunk is stored raw, whole).
pub fn encode_sparse_payload_into(
    runs: &[(usize, usize)],
    packed: &[u8],
    raw_len: usize,
    level: i32,
    payload: &mut Vec<u8>,
) -> Result<bool> {
    super::sparse::encode_into(runs, packed, level, payload)
        .map_err(|e| Error::Usage(format!("zstd level {level}: {e}")))?;
    Ok(payload.len() < raw_len)
}

impl<'a> ArchiveWriter<'a> {
    /// Starts an archive: writes the file header and the manifest record. `out_name` names the
    /// sink in I/O errors (a path, or `-` for stdout).
    pub fn new(
        out: &'a mut dyn Write,
        out_name: impl Into<PathBuf>,
        manifest: &Manifest,
        level: i32,
    ) -> Result<Self> {
        let block_size = manifest.block_size;
        let mut w = ArchiveWriter {
            out: BlockOut {
                out,
                name: out_name.into(),
                block: block_size as usize,
                buf: Vec::new(),
                flushed: 0,
            },
            pos: 0,
            block_size,
            meta: blake3::Hasher::new(),
            records: 0,
            index: Vec::new(),
            level,
            manifest_json: Vec::new(),
        };
        let header = FileHeader {
            format_version: FORMAT_VERSION,
            incompat_features: INCOMPAT_SPARSE_CHUNKS
                | INCOMPAT_MANIFEST_COPY
                | if manifest.base.is_some() {
                    INCOMPAT_BASE_REFS | INCOMPAT_BASE_PATCHES
                } else {
                    0
                },
            compat_features: 0,
            block_size,
        }
        .encode();
        w.meta.update(&header);
        w.put(&header)?;
        // Pretty-printed so that `head -c` shows something a human can read; never compressed.
        let json = serde_json::to_vec_pretty(manifest).expect("invariant: manifest serializes");
        w.record(
            RecordKind::Manifest,
            Codec::None,
            NO_DISK,
            MANIFEST_FRONT,
            json.len() as u64,
            *blake3::hash(&json).as_bytes(),
            &json,
        )?;
        w.manifest_json = json;
        Ok(w)
    }

    fn put(&mut self, data: &[u8]) -> Result<()> {
        self.out.write(data)?;
        self.pos += data.len() as u64;
        Ok(())
    }

    /// Appends one record; returns its stream offset.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        kind: RecordKind,
        codec: Codec,
        disk: u32,
        offset: u64,
        raw_len: u64,
        digest: [u8; 32],
        payload: &[u8],
    ) -> Result<u64> {
        let at = self.pos;
        let h = RecordHeader {
            kind,
            codec,
            disk,
            offset,
            stored_len: payload.len() as u64,
            raw_len,
            digest,
        }
        .encode();
        self.meta.update(&h);
        self.records += 1;
        self.put(&h)?;
        self.put(payload)?;
        if kind == RecordKind::File || kind.is_data() {
            self.index.push(IndexEntry {
                record_offset: at,
                offset,
                disk,
                kind,
                codec,
                stored_len: u32::try_from(payload.len()).expect("invariant: payload < 4 GiB"),
                raw_len: u32::try_from(raw_len).expect("invariant: chunk < 4 GiB"),
            });
        }
        Ok(at)
    }

    /// Writes VM `vm`'s file number `ordinal`.
    pub fn write_file(&mut self, vm: u32, ordinal: u64, bytes: &[u8]) -> Result<()> {
        let (codec, payload) = encode_payload(bytes, self.level)?;
        let digest = *blake3::hash(bytes).as_bytes();
        self.record(
            RecordKind::File,
            codec,
            vm,
            ordinal,
            bytes.len() as u64,
            digest,
            &payload,
        )?;
        Ok(())
    }

    /// Writes a chunk already encoded by the pipeline.
    pub fn write_chunk(
        &mut self,
        disk: u32,
        offset: u64,
        raw_len: u64,
        digest: [u8; 32],
        codec: Codec,
        payload: &[u8],
    ) -> Result<()> {
        self.record(
            RecordKind::Chunk,
            codec,
            disk,
            offset,
            raw_len,
            digest,
            payload,
        )?;
        Ok(())
    }

    /// Writes a base patch ([`super::patch`], encoded by the pipeline): the chunk at (`disk`,
    /// `offset`), of BLAKE3 `digest`, is a base chunk with some runs replaced. Only in an
    /// archive whose manifest names a base.
    pub fn write_patch(
        &mut self,
        disk: u32,
        offset: u64,
        raw_len: u64,
        digest: [u8; 32],
        payload: &[u8],
    ) -> Result<()> {
        self.record(
            RecordKind::BasePatch,
            Codec::SparseZstd,
            disk,
            offset,
            raw_len,
            digest,
            payload,
        )?;
        Ok(())
    }

    /// Writes a reference: the chunk at (`disk`, `offset`) equals the one stored at
    /// (`src_disk`, `src_offset`).
    pub fn write_ref(
        &mut self,
        disk: u32,
        offset: u64,
        raw_len: u64,
        digest: [u8; 32],
        src_disk: u32,
        src_offset: u64,
    ) -> Result<()> {
        let src = (src_disk, src_offset);
        self.reference(RecordKind::Ref, disk, offset, raw_len, digest, src)
    }

    /// Writes a base reference: the chunk at (`disk`, `offset`) equals the base image's chunk
    /// at (`src_disk`, `src_offset`). Only in an archive whose manifest names a base.
    pub fn write_base_ref(
        &mut self,
        disk: u32,
        offset: u64,
        raw_len: u64,
        digest: [u8; 32],
        src_disk: u32,
        src_offset: u64,
    ) -> Result<()> {
        let src = (src_disk, src_offset);
        self.reference(RecordKind::BaseRef, disk, offset, raw_len, digest, src)
    }

    fn reference(
        &mut self,
        kind: RecordKind,
        disk: u32,
        offset: u64,
        raw_len: u64,
        digest: [u8; 32],
        (src_disk, src_offset): (u32, u64),
    ) -> Result<()> {
        let mut p = [0u8; REF_PAYLOAD_BYTES as usize];
        p[0..4].copy_from_slice(&src_disk.to_le_bytes());
        p[4..12].copy_from_slice(&src_offset.to_le_bytes());
        self.record(kind, Codec::None, disk, offset, raw_len, digest, &p)?;
        Ok(())
    }

    /// Ends disk `disk` of `capacity` bytes, which had `data_records` Chunk and Ref records.
    pub fn write_disk_end(&mut self, disk: u32, capacity: u64, data_records: u64) -> Result<()> {
        let mut p = [0u8; DISK_END_PAYLOAD_BYTES as usize];
        p[0..8].copy_from_slice(&data_records.to_le_bytes());
        let digest = *blake3::hash(&p).as_bytes();
        self.record(
            RecordKind::DiskEnd,
            Codec::None,
            disk,
            capacity,
            DISK_END_PAYLOAD_BYTES,
            digest,
            &p,
        )?;
        Ok(())
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Writes the index, the padding and the footer, and flushes. Returns the archive's size.
    pub fn finish(self) -> Result<u64> {
        Ok(self.finish_with_id()?.0)
    }

    /// [`Self::finish`], also returning the archive's identity (the footer's `meta_hash`),
    /// which an incremental of it names as its base.
    pub fn finish_with_id(mut self) -> Result<(u64, [u8; 32])> {
        let mut raw = Vec::with_capacity(self.index.len() * INDEX_ENTRY_BYTES);
        for e in &self.index {
            raw.extend_from_slice(&e.encode());
        }
        let (codec, payload) = encode_payload(&raw, self.level)?;
        let digest = *blake3::hash(&raw).as_bytes();
        let index_offset = self.record(
            RecordKind::Index,
            codec,
            NO_DISK,
            0,
            raw.len() as u64,
            digest,
            &payload,
        )?;
        // The copy lets a salvage name and place everything when the front is damaged.
        let json = std::mem::take(&mut self.manifest_json);
        self.record(
            RecordKind::Manifest,
            Codec::None,
            NO_DISK,
            MANIFEST_COPY,
            json.len() as u64,
            *blake3::hash(&json).as_bytes(),
            &json,
        )?;
        let pad = footer_padding(self.pos, self.block_size);
        self.put(&vec![0u8; pad as usize])?;
        let meta_hash = *self.meta.finalize().as_bytes();
        let footer = Footer {
            index_offset,
            footer_offset: self.pos,
            record_count: self.records,
            meta_hash,
        };
        self.put(&footer.encode())?;
        debug_assert!(self.out.buf.is_empty(), "footer ends on a block boundary");
        let name = self.out.name.clone();
        self.out
            .out
            .flush()
            .map_err(|e| Error::io(name, Some(self.pos), e))?;
        Ok((self.pos, meta_hash))
    }
}
