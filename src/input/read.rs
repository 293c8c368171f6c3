//! Fetching the bytes behind a [`Source`]: positioned reads for plain data, inflate for
//! streamOptimized grains.

use flate2::read::ZlibDecoder;
use std::io::Read;

use super::{FileTable, Source, SECTOR};
use crate::error::{Error, Result};

/// Largest compressed grain record accepted: a 1 MiB grain (the largest grain size accepted)
/// that deflate expanded slightly, plus its header.
pub const MAX_GRAIN_RECORD_BYTES: u64 = (1 << 20) + 4096;

/// Fills `buf` with the bytes of `source`. For [`Source::Unallocated`] this writes zeros: callers
/// only pass it for the bottom of a chain.
pub fn read_source(files: &FileTable, source: &Source, buf: &mut [u8]) -> Result<()> {
    match *source {
        Source::Data { file, offset } => files.get(file).read_exact_at(buf, offset),
        Source::Zero | Source::Unallocated => {
            buf.fill(0);
            Ok(())
        }
        Source::Deflate {
            file,
            record,
            skip,
            grain_bytes,
            marker,
        } => {
            let grain = inflate_grain(files, file, record, grain_bytes, marker)?;
            let skip = skip as usize;
            let src = grain.get(skip..skip + buf.len()).ok_or_else(|| {
                Error::corrupt(
                    files.get(file).path(),
                    record,
                    format!(
                        "read of {} bytes at {skip} outside the {grain_bytes}-byte grain",
                        buf.len()
                    ),
                )
            })?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }
}

/// Reads and inflates one compressed grain record into exactly `grain_bytes` bytes.
pub fn inflate_grain(
    files: &FileTable,
    file: crate::input::FileId,
    record: u64,
    grain_bytes: u32,
    marker: bool,
) -> Result<Vec<u8>> {
    let src = files.get(file);
    let header_len = if marker { 12 } else { 4 };
    let mut header = [0u8; 12];
    src.read_exact_at(&mut header[..header_len], record)?;
    let size = u32::from_le_bytes(
        header[header_len - 4..header_len]
            .try_into()
            .expect("invariant: 4 bytes"),
    ) as u64;
    if size == 0 || size + header_len as u64 > MAX_GRAIN_RECORD_BYTES {
        return Err(Error::corrupt(
            src.path(),
            record,
            format!("compressed grain size {size} out of range 1..={MAX_GRAIN_RECORD_BYTES}"),
        ));
    }
    let mut compressed = vec![0u8; size as usize];
    src.read_exact_at(&mut compressed, record + header_len as u64)?;
    let mut out = vec![0u8; grain_bytes as usize];
    let mut dec = ZlibDecoder::new(&compressed[..]);
    dec.read_exact(&mut out).map_err(|e| {
        Error::corrupt(
            src.path(),
            record,
            format!("compressed grain does not inflate to {grain_bytes} bytes: {e}"),
        )
    })?;
    Ok(out)
}

/// Bytes in `sectors` sectors.
pub fn sectors_to_bytes(sectors: u64) -> u64 {
    sectors * SECTOR
}
