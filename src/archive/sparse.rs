//! Sparse chunk payloads (codec 2, `sparse_zstd`): a table of the chunk's data runs, then one
//! zstd frame of those runs' bytes packed end to end. The bytes outside the runs are zero.
//!
//! Disks are sparse at a finer grain than chunks (on the bench chain every 4 MiB chunk held some
//! data and two thirds of the bytes were zero runs between it). zstd crosses zeros quickly but
//! not for free: compressing the zero runs took a fifth of its time there. The runs are the
//! chunk's all-zero 4 KiB blocks ([`ChunkBytes::canonicalize`]); most of them the reader never
//! read, and none of them reaches the compressor.
//!
//! [`ChunkBytes::canonicalize`]: crate::chunk::ChunkBytes::canonicalize
//!
//! Layout (all little-endian, ARCHIVE.md "Sparse chunk payload"):
//! `run_count u32`, then `run_count` × (`start u32`, `len u32`), then the zstd frame.

use std::io;

use super::zstd_ctx;

/// Bytes of the run table for `runs` data runs.
pub fn table_bytes(runs: usize) -> usize {
    4 + 8 * runs
}

/// Encodes a chunk whose data runs `runs` (`[start, end)`, ascending, not overlapping, not
/// empty) hold the bytes `packed` (end to end) and whose other bytes are zero, compressing at
/// zstd `level`, into `out` (cleared first; its capacity is reused).
pub fn encode_into(
    runs: &[(usize, usize)],
    packed: &[u8],
    level: i32,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    out.clear();
    append(runs, packed, level, out)
}

/// [`encode_into`] appending to `out` (a base patch puts its fixed fields first).
pub fn append(
    runs: &[(usize, usize)],
    packed: &[u8],
    level: i32,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    out.reserve(table_bytes(runs.len()));
    out.extend_from_slice(&(runs.len() as u32).to_le_bytes());
    for &(s, e) in runs {
        out.extend_from_slice(&(s as u32).to_le_bytes());
        out.extend_from_slice(&((e - s) as u32).to_le_bytes());
    }
    zstd_ctx::compress_append(packed, level, out)
}

/// A checked run table.
#[derive(Debug)]
pub struct RunTable {
    /// `(start, len)` per run, ascending, not overlapping, inside the chunk.
    pub runs: Vec<(usize, usize)>,
    /// Bytes of the table (where the frame starts).
    pub table_end: usize,
    /// The runs' total length.
    pub packed_len: usize,
}

/// Reads and checks the run table at the front of `payload`, for a chunk of `raw_len` bytes.
/// Every value is checked before it is used.
pub fn parse_table(payload: &[u8], raw_len: usize) -> Result<RunTable, String> {
    let count = payload
        .get(0..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("invariant: 4 bytes")) as usize)
        .ok_or("sparse payload shorter than its run count")?;
    if count == 0 {
        return Err("sparse payload with no data runs".into());
    }
    let table_end = (count as u64) * 8 + 4;
    if table_end > payload.len() as u64 {
        return Err(format!(
            "sparse run table of {count} runs does not fit the {}-byte payload",
            payload.len()
        ));
    }
    let table_end = table_end as usize;
    let mut runs = Vec::with_capacity(count);
    let mut end = 0u64;
    for (i, e) in payload[4..table_end].chunks_exact(8).enumerate() {
        let s = u64::from(u32::from_le_bytes(e[0..4].try_into().expect("4 bytes")));
        let n = u64::from(u32::from_le_bytes(e[4..8].try_into().expect("4 bytes")));
        if n == 0 || s < end || s + n > raw_len as u64 {
            return Err(format!(
                "sparse run {i} ({s:#x}+{n:#x}) is empty, out of order or past the chunk's {raw_len:#x} bytes"
            ));
        }
        end = s + n;
        runs.push((s as usize, n as usize));
    }
    let packed_len = runs.iter().map(|r| r.1).sum();
    Ok(RunTable {
        runs,
        table_end,
        packed_len,
    })
}

/// Decompresses the frame after `table` in `payload` and hands the packed run bytes to `put`
/// (only when they have exactly the runs' total length). The frame is capped at that length,
/// so a hostile payload allocates no more than the runs admit.
fn unpack(payload: &[u8], table: &RunTable, put: impl FnOnce(&[u8])) -> Result<(), String> {
    let want = table.packed_len;
    let got = zstd_ctx::decompress_with(&payload[table.table_end..], want, |packed| {
        if packed.len() == want {
            put(packed);
        }
        packed.len()
    })
    .map_err(|e| format!("zstd: {e}"))?;
    if got != want {
        return Err(format!(
            "sparse data decompressed to {got} bytes, the runs hold {want}"
        ));
    }
    Ok(())
}

/// The packed run bytes of a sparse payload whose table is `table`.
pub fn packed(payload: &[u8], table: &RunTable) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    unpack(payload, table, |p| out = p.to_vec())?;
    Ok(out)
}

/// Places packed run bytes at their runs in `out`.
pub fn place(table: &RunTable, packed: &[u8], out: &mut [u8]) {
    let mut at = 0;
    for &(s, n) in &table.runs {
        out[s..s + n].copy_from_slice(&packed[at..at + n]);
        at += n;
    }
}

/// Decodes a sparse payload into the `raw_len`-byte plaintext; a hostile payload allocates at
/// most `raw_len`.
pub fn decode(payload: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    let table = parse_table(payload, raw_len)?;
    let mut raw = vec![0u8; raw_len];
    unpack(payload, &table, |p| place(&table, p, &mut raw))?;
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::zstd_ctx::decompress;

    fn encode(runs: &[(usize, usize)], packed: &[u8], level: i32) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        encode_into(runs, packed, level, &mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trip_and_exact_layout() {
        let mut raw = vec![0u8; 4096];
        raw[512..1024].fill(7);
        raw[3000..3001].fill(9);
        let runs = [(512, 1024), (3000, 3001)];
        let p = encode(&runs, &[&raw[512..1024], &raw[3000..3001]].concat(), 3).unwrap();
        assert_eq!(
            &p[..20],
            &[2, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 184, 11, 0, 0, 1, 0, 0, 0]
        );
        assert_eq!(decompress(&p[20..], 513).unwrap().len(), 513);
        assert_eq!(decode(&p, 4096).unwrap(), raw);
    }

    #[test]
    fn hostile_tables_are_refused() {
        let raw = vec![1u8; 1024];
        let good = encode(&[(0, 1024)], &raw, 3).unwrap();
        let frame = &good[12..];
        let with = |table: &[u32]| {
            let mut p: Vec<u8> = table.iter().flat_map(|v| v.to_le_bytes()).collect();
            p.extend_from_slice(frame);
            p
        };
        for (table, why) in [
            (&[0][..], "no data runs"),
            (&[u32::MAX, 0, 1][..], "does not fit"),
            (&[1, 0, 0][..], "empty"),
            (&[1, 1000, 100][..], "past the chunk"),
            (&[2, 0, 512, 100, 512][..], "out of order"),
            (&[1, 0, 1000][..], "zstd"),
        ] {
            let e = decode(&with(table), 1024).unwrap_err();
            assert!(e.contains(why), "{table:?}: {e}");
        }
        let e = decode(&[1, 0], 1024).unwrap_err();
        assert!(e.contains("shorter"), "{e}");
        let e = decode(&with(&[1, 0, 2000]), 4096).unwrap_err();
        assert!(e.contains("decompressed to 1024 bytes"), "{e}");
        assert_eq!(decode(&with(&[1, 0, 1024]), 1024).unwrap(), raw);
        assert!(decode(&with(&[1, 0, 1024]), 1023).is_err());
    }
}
