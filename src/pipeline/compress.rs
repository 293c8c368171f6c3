//! The parallel stage: BLAKE3 and zstd for one chunk, run on worker threads.
//!
//! A worker turns a read [`Chunk`] into a [`Processed`] chunk. It skips the (expensive)
//! compression when the dedup table already holds the digest: the writer stores chunks in
//! stream order and this chunk comes later in that order, so it is certain to become a reference.
//! The writer still decides every chunk itself, so the skip never changes the output.

use std::sync::Mutex;

use crate::archive::format::Codec;
use crate::archive::patch;
use crate::archive::writer::{encode_chunk as encode, payload_capacity};
use crate::base::{BaseChain, BaseImage};
use crate::chunk::bytes::ZERO_BLOCK;
use crate::chunk::dedup::DedupTable;
use crate::chunk::{Chunk, ChunkBytes, ChunkData, ChunkPool, Digest};
use crate::error::Result;

/// A chunk after hashing and compression.
#[derive(Debug)]
pub enum Processed {
    /// Nothing to store: the chunk reads as zeros (elided unread, or read and found zero).
    Zero,
    /// Stored before: only the digest is needed.
    Known(Digest),
    /// The base image of an incremental holds it: kept uncompressed, since the writer stores
    /// it only in the rare case that no base place may stand for it (see `write.rs`).
    InBase {
        /// blake3 of the plaintext.
        digest: Digest,
        /// The chunk's bytes, for that rare case.
        bytes: ChunkBytes,
    },
    /// A base chunk with the changed runs replaced: the payload of a BasePatch record.
    Patch {
        /// blake3 of the whole new chunk.
        digest: Digest,
        /// The encoded patch ([`crate::archive::patch`]).
        payload: Vec<u8>,
        /// Bytes of the runs it carries.
        runs_bytes: u64,
    },
    /// New data: digest, codec and payload.
    Data {
        /// blake3 of the plaintext.
        digest: Digest,
        /// How `payload` is encoded.
        codec: Codec,
        /// Bytes to store.
        payload: Vec<u8>,
    },
}

/// Where a chunk may be stored as a base patch: the base place and its digest, and how the
/// changed runs are found.
#[derive(Debug)]
pub struct PatchHint<'a> {
    /// The base image's place (the same offset on the base disk).
    pub src: (u32, u64),
    /// Its digest.
    pub base_digest: Digest,
    /// Where the runs come from.
    pub runs: PatchRuns<'a>,
}

/// How a [`PatchHint`]'s runs are found.
#[derive(Debug)]
pub enum PatchRuns<'a> {
    /// The runs a change list names (`[start, end)` in the chunk).
    Listed(Vec<(usize, usize)>),
    /// No change list: the 4 KiB blocks that differ from the base chunk, read from the base
    /// archive (identity `.1`) in the chain `.0`.
    FromBase(&'a Mutex<BaseChain>, [u8; 32]),
}

/// A chunk is patched only while its changed runs are at most this fraction of it (in
/// quarters): a chunk mostly rewritten is stored whole, costing little more and needing no
/// base to restore.
const PATCH_MAX_QUARTERS: usize = 3;

/// Hashes and compresses one chunk. `table` is consulted only to skip redundant compression.
/// A payload is written into a buffer from `payloads` (the writer gives it back once stored).
/// The chunk's zero runs are first made canonical ([`ChunkBytes::canonicalize`]), so the result
/// depends on its bytes alone.
///
/// [`ChunkBytes::canonicalize`]: crate::chunk::ChunkBytes::canonicalize
pub fn process(
    chunk: &mut Chunk,
    level: i32,
    table: &Mutex<DedupTable>,
    base: Option<&BaseImage>,
    hint: Option<PatchHint<'_>>,
    payloads: &ChunkPool,
) -> Result<Processed> {
    let bytes = match &mut chunk.data {
        ChunkData::Zero => return Ok(Processed::Zero),
        ChunkData::Data(b) => b,
    };
    bytes.canonicalize();
    if bytes.packed.is_empty() {
        return Ok(Processed::Zero);
    }
    let digest = bytes.digest();
    let known = table
        .lock()
        .expect("invariant: writer does not panic holding the table")
        .contains(&digest);
    if known {
        return Ok(Processed::Known(digest));
    }
    if base.is_some_and(|b| b.find(&digest).is_some()) {
        let bytes = std::mem::take(bytes);
        return Ok(Processed::InBase { digest, bytes });
    }
    if let Some(h) = hint {
        if let Some((payload, runs_bytes)) = encode_patch(bytes, &h, level, payloads)? {
            return Ok(Processed::Patch {
                digest,
                payload,
                runs_bytes,
            });
        }
    }
    let (codec, payload) = encode(bytes, level, payloads)?;
    Ok(Processed::Data {
        digest,
        codec,
        payload,
    })
}

/// The BasePatch payload of `bytes` over the base chunk `h` names, with the runs `h` names
/// or finds, and the runs' length; `None` when the runs cannot be found (the base chunk cannot
/// be read), cover too much of the chunk, or the patch would not be smaller than the chunk.
fn encode_patch(
    bytes: &ChunkBytes,
    h: &PatchHint<'_>,
    level: i32,
    payloads: &ChunkPool,
) -> Result<Option<(Vec<u8>, u64)>> {
    let found;
    let runs = match &h.runs {
        PatchRuns::Listed(r) => r,
        PatchRuns::FromBase(chain, id) => {
            let base = chain
                .lock()
                .expect("invariant: no panic under lock")
                .fetch(id, h.src, bytes.len as u64, &h.base_digest.0)?;
            match base {
                Ok(base) => {
                    found = differing_blocks(bytes, &base);
                    &found
                }
                // A base chunk that cannot be had costs only size: the chunk is stored whole.
                Err(why) => {
                    log::debug!("chunk at {:#x} stored whole: {why}", h.src.1);
                    return Ok(None);
                }
            }
        }
    };
    let runs_bytes: usize = runs.iter().map(|(s, e)| e - s).sum();
    if runs.is_empty() || runs_bytes * 4 > bytes.len * PATCH_MAX_QUARTERS {
        return Ok(None);
    }
    let mut packed = vec![0u8; runs_bytes];
    let mut at = 0;
    for &(s, e) in runs {
        bytes.copy_plain(s, &mut packed[at..at + e - s]);
        at += e - s;
    }
    let mut payload = payloads.take(0, payload_capacity(bytes.len));
    patch::encode_into(h.src, &h.base_digest.0, runs, &packed, level, &mut payload)
        .map_err(|e| crate::error::Error::Usage(format!("zstd level {level}: {e}")))?;
    if payload.len() >= bytes.len {
        payloads.give(payload);
        return Ok(None);
    }
    Ok(Some((payload, runs_bytes as u64)))
}

/// The [`ZERO_BLOCK`]-sized blocks of `bytes` (counted from the chunk's start) that differ
/// from `base`, as merged `[start, end)` runs.
fn differing_blocks(bytes: &ChunkBytes, base: &[u8]) -> Vec<(usize, usize)> {
    let plain = bytes.to_plain();
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, (new, old)) in plain
        .chunks(ZERO_BLOCK)
        .zip(base.chunks(ZERO_BLOCK))
        .enumerate()
    {
        if new == old {
            continue;
        }
        let (s, e) = (i * ZERO_BLOCK, i * ZERO_BLOCK + new.len());
        match runs.last_mut() {
            Some(last) if last.1 == s => last.1 = e,
            _ => runs.push((s, e)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::Digest;

    #[test]
    fn zero_runs_change_nothing_but_the_work() {
        let table = Mutex::new(DedupTable::default());
        let len = 1 << 20;
        let mut plain: Vec<u8> = (0..len).map(|i| (i * 7 / 3) as u8).collect();
        let zeros = vec![(0, 4096), (65536, 300_000), (len - 512, 512)];
        for &(s, n) in &zeros {
            plain[s..s + n].fill(0);
        }
        let chunk = |bytes| Chunk {
            disk: 0,
            offset: 0,
            len: len as u64,
            data: ChunkData::Data(bytes),
        };
        let sparse = process(
            &mut chunk(ChunkBytes::from_plain(&plain, &zeros)),
            3,
            &table,
            None,
            None,
            &ChunkPool::new(0),
        )
        .unwrap();
        let dense = process(
            &mut chunk(ChunkBytes::dense(plain.clone())),
            3,
            &table,
            None,
            None,
            &ChunkPool::new(0),
        )
        .unwrap();
        // Read zero blocks and reported zero runs come out the same (content decides).
        match (sparse, dense) {
            (
                Processed::Data {
                    digest,
                    codec: Codec::SparseZstd,
                    payload,
                },
                Processed::Data {
                    digest: d2,
                    codec: Codec::SparseZstd,
                    payload: p2,
                },
            ) => {
                assert_eq!(digest, d2);
                assert_eq!(digest, Digest::of(&plain));
                assert!(payload == p2, "payloads differ");
            }
            other => panic!("{other:?}"),
        }
        // Without zero blocks a chunk is compressed whole.
        plain[..4096].fill(1);
        plain[65536..65536 + 300_000].fill(2);
        match process(
            &mut chunk(ChunkBytes::dense(plain.clone())),
            3,
            &table,
            None,
            None,
            &ChunkPool::new(0),
        )
        .unwrap()
        {
            Processed::Data { codec, digest, .. } => {
                assert_eq!(codec, Codec::Zstd);
                assert_eq!(digest, Digest::of(&plain));
            }
            other => panic!("{other:?}"),
        }
        // Read data that happens to be zero is still found.
        let all_zero = ChunkBytes::from_plain(&vec![0; len], &[(0, len / 2)]);
        assert!(matches!(
            process(
                &mut chunk(all_zero),
                3,
                &table,
                None,
                None,
                &ChunkPool::new(0)
            )
            .unwrap(),
            Processed::Zero
        ));
    }

    #[test]
    fn recycled_payload_buffers_carry_nothing_over() {
        let pool = ChunkPool::new(1);
        let chunk = |plain: &[u8]| Chunk {
            disk: 0,
            offset: 0,
            len: plain.len() as u64,
            data: ChunkData::Data(ChunkBytes::dense(plain.to_vec())),
        };
        let big: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i % 253) as u8 ^ (i >> 12) as u8)
            .collect();
        let mut small = vec![0u8; 64 << 10];
        small[100..200].fill(7);
        // Each chunk through a pool that holds the previous chunk's (larger) payload buffer,
        // against the same chunk through an empty pool.
        for plain in [&big[..], &small[..], &big[..]] {
            let table = Mutex::new(DedupTable::default());
            let recycled = process(&mut chunk(plain), 3, &table, None, None, &pool).unwrap();
            let table = Mutex::new(DedupTable::default());
            let fresh =
                process(&mut chunk(plain), 3, &table, None, None, &ChunkPool::new(0)).unwrap();
            match (recycled, fresh) {
                (
                    Processed::Data { codec, payload, .. },
                    Processed::Data {
                        codec: c2,
                        payload: p2,
                        ..
                    },
                ) => {
                    assert_eq!(codec, c2);
                    assert!(payload == p2, "payloads differ");
                    pool.give(payload);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn incompressible_chunk_is_stored_raw_and_whole() {
        let table = Mutex::new(DedupTable::default());
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut plain: Vec<u8> = (0..8192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        plain[8184..8192].fill(0);
        let bytes = ChunkBytes::from_plain(&plain, &[(8184, 8)]);
        let mut c = Chunk {
            disk: 0,
            offset: 0,
            len: 8192,
            data: ChunkData::Data(bytes),
        };
        match process(&mut c, 3, &table, None, None, &ChunkPool::new(0)).unwrap() {
            Processed::Data { codec, payload, .. } => {
                // The reported 8-byte hole is no zero block: the chunk is dense, and zstd does
                // not shrink it.
                assert_eq!(codec, Codec::None);
                assert_eq!(payload, plain);
            }
            other => panic!("{other:?}"),
        }
    }
}
