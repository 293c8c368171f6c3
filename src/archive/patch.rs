//! BasePatch payloads (record kind 8, codec 2): a chunk that is its base's chunk at a place with
//! some byte runs replaced (formats/ARCHIVE.md, "Base patches").
//!
//! A change list names changes finer than chunks: a 4 KiB metadata write costs a whole 4 MiB
//! chunk otherwise, and on the bench chain 70 MiB of change touched 572 MiB of chunks. A patch
//! stores only the listed runs; the record's digest is still the BLAKE3 of the whole new
//! chunk (the writer read it), so references, catalogs and dedup see an ordinary chunk, and a
//! reader that rebuilds it checks the result as it checks any chunk.
//!
//! Layout, little-endian: `src_disk u32`, `src_offset u64`, `base_digest [32]` (the base
//! chunk the runs apply to), `patch_digest [32]`, then a sparse payload ([`super::sparse`]):
//! run table and one zstd frame of the runs' bytes. The *decoded patch* is bytes 0..44, the
//! run table and the runs' bytes packed end to end; `patch_digest` is its BLAKE3, so every
//! byte of the payload is checked without the base.

use std::io;

use super::format::PATCH_FIXED_BYTES as FIXED_BYTES;
use super::sparse::{self, RunTable};

/// The place a patch names: `src_disk u32`, `src_offset u64` at the front of `b`.
fn place(b: &[u8]) -> Option<(u32, u64)> {
    let d = u32::from_le_bytes(b.get(0..4)?.try_into().ok()?);
    let o = u64::from_le_bytes(b.get(4..12)?.try_into().ok()?);
    Some((d, o))
}

/// The base place and base chunk digest the stored patch of the `raw_len`-byte chunk at
/// `offset` names, once the patch is checked ([`decode`]): a damaged patch is found in its own
/// archive, before it sends a reader to some place of its base.
pub fn checked_base(
    stored: &[u8],
    offset: u64,
    raw_len: usize,
) -> Result<((u32, u64), [u8; 32]), String> {
    decode(stored, offset, raw_len)?;
    let bad = || "base patch does not decode".to_string();
    let digest = stored
        .get(12..DECODED_FIXED_BYTES)
        .and_then(|d| d.try_into().ok())
        .ok_or_else(bad)?;
    Ok((place(stored).ok_or_else(bad)?, digest))
}

/// Bytes of the fixed fields a decoded patch keeps (the base place and digest).
const DECODED_FIXED_BYTES: usize = 12 + 32;

/// Encodes a patch of the base chunk `base_digest` at `src`: the runs `runs` (`[start, end)`
/// in the chunk, ascending, not overlapping, not empty) hold `packed`. Into `out` (cleared).
pub fn encode_into(
    src: (u32, u64),
    base_digest: &[u8; 32],
    runs: &[(usize, usize)],
    packed: &[u8],
    level: i32,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    out.clear();
    out.extend_from_slice(&src.0.to_le_bytes());
    out.extend_from_slice(&src.1.to_le_bytes());
    out.extend_from_slice(base_digest);
    out.extend_from_slice(&[0; 32]);
    sparse::append(runs, packed, level, out)?;
    let table = &out[FIXED_BYTES..FIXED_BYTES + sparse::table_bytes(runs.len())];
    let mut h = blake3::Hasher::new();
    h.update(&out[..DECODED_FIXED_BYTES]);
    h.update(table);
    h.update(packed);
    let d = *h.finalize().as_bytes();
    out[DECODED_FIXED_BYTES..FIXED_BYTES].copy_from_slice(&d);
    Ok(())
}

/// Checks a stored patch of the `raw_len`-byte chunk at disk offset `offset` and decodes it
/// into its decoded form (the base place and digest, the run table, the runs' bytes
/// uncompressed), which [`Patch::parse`] reads. The decoded patch must hash to the payload's
/// `patch_digest`, and the base place must be at the same offset (a patch applies to the
/// place it rewrites, so that it can be applied in place).
pub fn decode(payload: &[u8], offset: u64, raw_len: usize) -> Result<Vec<u8>, String> {
    if payload.len() < FIXED_BYTES {
        return Err(format!("base patch of {} bytes", payload.len()));
    }
    if place(payload).map(|s| s.1) != Some(offset) {
        return Err("base patch of another place".into());
    }
    let body = &payload[FIXED_BYTES..];
    let table = sparse::parse_table(body, raw_len)?;
    let packed = sparse::packed(body, &table)?;
    let mut out = Vec::with_capacity(DECODED_FIXED_BYTES + table.table_end + packed.len());
    out.extend_from_slice(&payload[..DECODED_FIXED_BYTES]);
    out.extend_from_slice(&body[..table.table_end]);
    out.extend_from_slice(&packed);
    if blake3::hash(&out).as_bytes()[..] != payload[DECODED_FIXED_BYTES..FIXED_BYTES] {
        return Err("base patch checksum mismatch".into());
    }
    Ok(out)
}

/// A decoded patch, borrowed.
#[derive(Debug)]
pub struct Patch<'a> {
    /// The base image's place the runs apply to.
    pub src: (u32, u64),
    /// BLAKE3 of the base chunk there.
    pub base_digest: [u8; 32],
    table: RunTable,
    packed: &'a [u8],
}

impl<'a> Patch<'a> {
    /// Reads the decoded form [`decode`] made, for a `raw_len`-byte chunk.
    pub fn parse(decoded: &'a [u8], raw_len: usize) -> Result<Self, String> {
        let bad = || "base patch does not decode".to_string();
        let src = place(decoded).ok_or_else(bad)?;
        let base_digest: [u8; 32] = decoded
            .get(12..DECODED_FIXED_BYTES)
            .and_then(|d| d.try_into().ok())
            .ok_or_else(bad)?;
        let body = &decoded[DECODED_FIXED_BYTES..];
        let table = sparse::parse_table(body, raw_len)?;
        let packed = &body[table.table_end..];
        if packed.len() != table.packed_len {
            return Err(bad());
        }
        Ok(Patch {
            src,
            base_digest,
            table,
            packed,
        })
    }

    /// Writes the runs over `base` (the base chunk's bytes, already checked against
    /// [`Self::base_digest`] by whoever fetched them) and checks the result against the new
    /// chunk's `digest`: a change list that left a change out of a patched chunk shows up here.
    pub fn apply(&self, base: Vec<u8>, digest: &[u8; 32]) -> Result<Vec<u8>, String> {
        let out = self.overlay(base);
        if blake3::hash(&out).as_bytes() != digest {
            return Err("the patched chunk does not hash to its digest".into());
        }
        Ok(out)
    }

    /// Writes the runs over `base`, unchecked: for a caller that checks the result itself (a
    /// chunk rebuilt inside a base chain is decoded, and so hashed, as a Chunk record).
    pub fn overlay(&self, mut base: Vec<u8>) -> Vec<u8> {
        sparse::place(&self.table, self.packed, &mut base);
        base
    }

    /// Bytes of new data the patch carries.
    pub fn packed_len(&self) -> usize {
        self.packed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATCH_GOLDEN_LEN: usize = 117;
    const PATCH_GOLDEN_BLAKE3: &str =
        "25ee10695a094de84e0b7687421b5680ac35d8849413b9c175fc1dad73f43b81";

    #[test]
    fn a_patch_rebuilds_the_chunk_and_checks_both_digests() {
        let base: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        let mut want = base.clone();
        want[100..200].fill(7);
        want[4096..4100].fill(9);
        let runs = [(100, 200), (4096, 4100)];
        let packed = [&want[100..200], &want[4096..4100]].concat();
        let bd = *blake3::hash(&base).as_bytes();
        let digest = *blake3::hash(&want).as_bytes();
        let mut stored = Vec::new();
        encode_into((1, 1 << 22), &bd, &runs, &packed, 3, &mut stored).unwrap();
        assert_eq!(&stored[..12], &[1, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0]);
        assert_eq!(&stored[12..44], &bd);
        assert_eq!(&stored[76..80], &2u32.to_le_bytes());
        // Golden: the whole payload (zstd level 3 is deterministic for a given zstd).
        assert_eq!(stored.len(), PATCH_GOLDEN_LEN);
        assert_eq!(blake3::hash(&stored).to_hex().as_str(), PATCH_GOLDEN_BLAKE3);
        let decoded = decode(&stored, 1 << 22, 8192).unwrap();
        assert_eq!(&stored[44..76], blake3::hash(&decoded).as_bytes());
        let p = Patch::parse(&decoded, 8192).unwrap();
        assert_eq!(
            (p.src, p.base_digest, p.packed_len()),
            ((1, 1 << 22), bd, 104)
        );
        assert_eq!(p.apply(base.clone(), &digest).unwrap(), want);
        // Another base, or a patch that does not make the chunk recorded, is refused.
        let mut other = base.clone();
        other[0] ^= 1;
        assert!(p
            .apply(other, &digest)
            .unwrap_err()
            .contains("does not hash"));
        assert!(p
            .apply(base.clone(), &bd)
            .unwrap_err()
            .contains("does not hash"));
        assert_eq!(p.overlay(base), want);
        // A flipped byte anywhere (place, base digest, checksum, table, frame) is found
        // without the base.
        for at in [2, 20, 50, 80, stored.len() - 1] {
            let mut bad = stored.clone();
            bad[at] ^= 0x40;
            assert!(decode(&bad, 1 << 22, 8192).is_err(), "flip at {at}");
        }
        assert!(decode(&stored[..70], 1 << 22, 8192).is_err());
        assert!(
            decode(&stored, 1 << 22, 4096).is_err(),
            "runs past the chunk"
        );
        assert!(decode(&stored, 0, 8192)
            .unwrap_err()
            .contains("another place"));
    }
}
