//! The parallel stage: BLAKE3 and zstd for one chunk, run on worker threads.
//!
//! A worker turns a read [`Chunk`] into a [`Processed`] chunk. It skips the (expensive)
//! compression when the dedup table already holds the digest: the writer stores chunks in
//! stream order and this chunk comes later in that order, so it is certain to become a reference.
//! The writer still decides every chunk itself, so the skip never changes the output.

use std::sync::Mutex;

use crate::archive::format::Codec;
use crate::archive::writer::{encode_payload, encode_sparse_payload};
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
    if data_ranges(data.len(), &chunk.zeros).all(|(s, e)| is_zero(&data[s..e])) {
        return Ok(Processed::Zero { was_read: true });
    }
    let digest = Digest::of_sparse(data, &chunk.zeros);
    let known = table
        .lock()
        .expect("invariant: writer does not panic holding the table")
        .contains(&digest);
    if known {
        return Ok(Processed::Known(digest));
    }
    let (codec, payload) = if chunk.zeros.is_empty() {
        encode_payload(data, level)?
    } else {
        let runs: Vec<_> = data_ranges(data.len(), &chunk.zeros).collect();
        encode_sparse_payload(data, &runs, level)?
    };
    Ok(Processed::Data {
        digest,
        codec,
        payload,
    })
}

/// The ranges `[start, end)` of a `len`-byte chunk outside its known-zero ranges.
fn data_ranges(len: usize, zeros: &[(usize, usize)]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut at = 0;
    zeros.iter().map(Some).chain([None]).filter_map(move |z| {
        let (s, n) = z.copied().unwrap_or((len, 0));
        let r = (at, s);
        at = s + n;
        (r.0 < r.1).then_some(r)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_ranges_are_the_complement_of_the_zero_ranges() {
        let r = |len, z: &[(usize, usize)]| data_ranges(len, z).collect::<Vec<_>>();
        assert_eq!(r(10, &[]), [(0, 10)]);
        assert_eq!(r(10, &[(0, 2), (5, 1)]), [(2, 5), (6, 10)]);
        assert_eq!(r(10, &[(3, 7)]), [(0, 3)]);
        assert_eq!(r(10, &[(0, 10)]), []);
    }

    #[test]
    fn known_zero_ranges_change_nothing_but_the_work() {
        let table = Mutex::new(DedupTable::default());
        let len = 1 << 20;
        let mut bytes: Vec<u8> = (0..len).map(|i| (i * 7 / 3) as u8).collect();
        let zeros = vec![(0, 4096), (65536, 300_000), (len - 512, 512)];
        for &(s, n) in &zeros {
            bytes[s..s + n].fill(0);
        }
        let chunk = |zeros| Chunk {
            disk: 0,
            offset: 0,
            len: len as u64,
            data: ChunkData::Data(bytes.clone()),
            zeros,
        };
        let digest = |p| match p {
            Processed::Data { digest, .. } => digest,
            other => panic!("{other:?}"),
        };
        let sparse = digest(process(&chunk(zeros.clone()), 3, &table).unwrap());
        assert_eq!(
            sparse,
            digest(process(&chunk(Vec::new()), 3, &table).unwrap())
        );
        assert_eq!(sparse, Digest::of(&bytes));
        // Only the ranges outside the known zeros are checked for data.
        let all_zero = Chunk {
            data: ChunkData::Data(vec![0; len]),
            zeros: vec![(0, len / 2)],
            ..chunk(Vec::new())
        };
        assert!(matches!(
            process(&all_zero, 3, &table).unwrap(),
            Processed::Zero { was_read: true }
        ));
    }
}
