//! The parallel stage: BLAKE3 and zstd for one chunk, run on worker threads.
//!
//! A worker turns a read [`Chunk`] into a [`Processed`] chunk. It skips the (expensive)
//! compression when the dedup table already holds the digest: the writer stores chunks in
//! stream order and this chunk comes later in that order, so it is certain to become a reference.
//! The writer still decides every chunk itself, so the skip never changes the output.

use std::sync::Mutex;

use crate::archive::format::Codec;
use crate::archive::writer::encode_payload;
use crate::chunk::dedup::DedupTable;
use crate::chunk::{Chunk, ChunkData, Digest};
use crate::error::Result;

/// A chunk after hashing and compression.
#[derive(Debug)]
pub enum Processed {
    /// Nothing to store: the chunk reads as zeros (elided unread, or read and found zero).
    Zero {
        /// Whether the bytes were read (counted as read but stored as a hole).
        was_read: bool,
    },
    /// Stored before: only the digest is needed.
    Known(Digest),
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

/// Hashes and compresses one chunk. `table` is consulted only to skip redundant compression.
pub fn process(chunk: &Chunk, level: i32, table: &Mutex<DedupTable>) -> Result<Processed> {
    let data = match &chunk.data {
        ChunkData::Zero => return Ok(Processed::Zero { was_read: false }),
        ChunkData::Data(d) => d,
    };
    if is_zero(data) {
        return Ok(Processed::Zero { was_read: true });
    }
    let digest = Digest::of(data);
    let known = table
        .lock()
        .expect("invariant: writer does not panic holding the table")
        .contains(&digest);
    if known {
        return Ok(Processed::Known(digest));
    }
    let (codec, payload) = encode_payload(data, level)?;
    Ok(Processed::Data {
        digest,
        codec,
        payload,
    })
}

/// Whether `data` is all zero bytes (word-at-a-time; the compiler vectorises this).
pub fn is_zero(data: &[u8]) -> bool {
    let chunks = data.chunks_exact(16);
    let rest = chunks.remainder();
    chunks
        .map(|c| u128::from_ne_bytes(c.try_into().expect("invariant: 16-byte chunk")))
        .all(|w| w == 0)
        && rest.iter().all(|&b| b == 0)
}
