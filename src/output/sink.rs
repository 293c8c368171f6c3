//! The disk sink: where the bytes of one disk go, in disk-offset order.
//!
//! Restore and `cat` produce each disk once, front to back (formats/ARCHIVE.md orders records
//! by disk and offset), so every output format is a writer of ordered pieces: data at an
//! offset, or a run of zeros. [`DiskSink`] is that contract; raw images ([`RawSink`], a file,
//! and [`RawStream`], a pipe or device) live here, the sparse formats, the disks inside an OVA
//! and SAN write-back in `crate::restore`. The caller turns gaps between chunks into
//! [`DiskSink::write_zero`] calls and zero-fills up to the capacity before
//! [`DiskSink::finish`], so a sink sees the whole disk exactly once.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use super::direct::DirectFile;
use crate::chunk::bytes::is_zero;
use crate::error::{Error, Result};

/// Ordered writer of one disk image.
pub trait DiskSink {
    /// Writes `data` at disk offset `offset`, which is the end of the previous piece unless
    /// [`Self::random_access`].
    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()>;
    /// A whole archived chunk at `offset` whose BLAKE3 is `digest` (already checked by the
    /// reader). Sinks that verify what they wrote keep the digest; the others write the data.
    fn write_chunk(&mut self, offset: u64, data: &[u8], digest: &[u8; 32]) -> Result<()> {
        let _ = digest;
        self.write_data(offset, data)
    }
    /// `len` bytes of zeros at `offset`.
    fn write_zero(&mut self, offset: u64, len: u64) -> Result<()>;
    /// Completes the image (tables, footer, flush). Called once, after the last piece.
    fn finish(&mut self) -> Result<()>;
    /// Whether pieces may arrive in any order (a plain file written with `pwrite`).
    fn random_access(&self) -> bool {
        false
    }
}

/// A raw image (`.raw`, or an ESX `-flat.vmdk`): sized at creation, so zeros stay holes and
/// only data is written, through [`DirectFile`] (`O_DIRECT` where the file system takes it:
/// restoring through the page cache made the kernel's copy into it the largest single cost of
/// a restore).
pub struct RawSink {
    path: PathBuf,
    out: DirectFile,
    /// Written over an existing image (an in-place restore of an incremental): its zeros are
    /// not holes already, so zero blocks are punched out, and `finish` syncs the file itself
    /// (it is not one of the staged outputs the commit syncs).
    in_place: bool,
}

impl RawSink {
    /// Takes a created file and gives it its final length at once (all holes).
    pub fn new(path: PathBuf, file: File, capacity: u64) -> Result<Self> {
        file.set_len(capacity)
            .map_err(|e| Error::io(&path, Some(capacity), e))?;
        let out = DirectFile::open(&path, file);
        Ok(RawSink {
            path,
            out,
            in_place: false,
        })
    }

    /// Takes an existing image of `capacity` bytes to write over in place: what is not
    /// written keeps its bytes, zeros written become holes.
    pub fn in_place(path: PathBuf, file: File, capacity: u64) -> Result<Self> {
        let len = file
            .metadata()
            .map_err(|e| Error::io(&path, None, e))?
            .len();
        if len != capacity {
            return Err(Error::Usage(format!(
                "{}: is {len} bytes, the disk {capacity}: not this disk's image",
                path.display()
            )));
        }
        let out = DirectFile::open(&path, file);
        Ok(RawSink {
            path,
            out,
            in_place: true,
        })
    }

    /// Makes `len` bytes at `offset` read as zeros: a hole where the file system can punch
    /// one, else written zeros.
    fn zero_in_place(&mut self, offset: u64, len: u64) -> Result<()> {
        use rustix::fs::{fallocate, FallocateFlags};
        let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        if len == 0 || fallocate(self.out.buffered().as_ref(), punch, offset, len).is_ok() {
            return Ok(());
        }
        let mut at = 0;
        while at < len {
            let n = (len - at).min(ZERO_WRITE_BYTES as u64) as usize;
            self.write_at(&ZEROS[..n], offset + at)?;
            at += n as u64;
        }
        Ok(())
    }

    /// The open image, to read chunks back for references.
    pub(crate) fn file(&self) -> (&PathBuf, &File) {
        (&self.path, self.out.buffered())
    }

    fn write_at(&mut self, data: &[u8], offset: u64) -> Result<()> {
        self.out
            .write_at(data, offset)
            .map_err(|e| Error::io(&self.path, Some(e.at), e.cause))
    }
}

/// Granularity of hole detection inside data chunks: a file-system block multiple, small enough
/// to find the zero stretches a chunk usually holds (a 4 MiB chunk touched by a few scattered
/// redo-log writes is mostly zeros), large enough that the check costs nothing next to zstd.
const HOLE_BLOCK_BYTES: usize = 64 << 10;

impl DiskSink for RawSink {
    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        // The file starts as one hole (created or truncated, then `set_len`), so all-zero blocks
        // need no write: the image stays sparse and restore does not write gigabytes of zeros,
        // as `zstd -d` and `cp --sparse` do not. Runs of non-zero blocks go out in one pwrite.
        let mut start: Option<usize> = None;
        let mut pos = 0;
        while pos < data.len() {
            let end = (pos + HOLE_BLOCK_BYTES).min(data.len());
            let zero = is_zero(&data[pos..end]);
            match (zero, start) {
                (false, None) => start = Some(pos),
                (true, Some(s)) => {
                    self.write_at(&data[s..pos], offset + s as u64)?;
                    start = None;
                }
                _ => {}
            }
            if zero && self.in_place {
                self.zero_in_place(offset + pos as u64, (end - pos) as u64)?;
            }
            pos = end;
        }
        if let Some(s) = start {
            self.write_at(&data[s..], offset + s as u64)?;
        }
        Ok(())
    }
    fn write_zero(&mut self, offset: u64, len: u64) -> Result<()> {
        // A created file is one hole of the final size: zeros are already there.
        if self.in_place {
            self.zero_in_place(offset, len)?;
        }
        Ok(())
    }
    /// Nothing left to write: data went out with `pwrite`, zeros are holes. The restore's
    /// commit fsyncs every staged output once; an image written in place is synced here.
    fn finish(&mut self) -> Result<()> {
        if self.in_place {
            let f = self.out.buffered();
            f.sync_all().map_err(|e| Error::io(&self.path, None, e))?;
        }
        Ok(())
    }
    fn random_access(&self) -> bool {
        true
    }
}

/// A raw image as one ordered byte stream (standard output, `| dd of=/dev/sdX`): zero ranges
/// are written out, since a stream has no holes.
pub struct RawStream {
    out: Box<dyn Write + Send>,
    name: String,
}

impl RawStream {
    /// A raw image written to `out`, called `name` in errors.
    pub fn new(out: Box<dyn Write + Send>, name: &str) -> Self {
        RawStream {
            out,
            name: name.to_string(),
        }
    }
}

/// Zeros written per call for a zero range.
const ZERO_WRITE_BYTES: usize = 1 << 20;
static ZEROS: [u8; ZERO_WRITE_BYTES] = [0; ZERO_WRITE_BYTES];

impl DiskSink for RawStream {
    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.out
            .write_all(data)
            .map_err(|e| Error::io(&self.name, Some(offset), e))
    }
    fn write_zero(&mut self, offset: u64, len: u64) -> Result<()> {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZERO_WRITE_BYTES as u64);
            self.write_data(offset + done, &ZEROS[..n as usize])?;
            done += n;
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io(&self.name, None, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0; 200]));
        let mut v = vec![0u8; 200];
        v[199] = 1;
        assert!(!is_zero(&v));
        v[199] = 0;
        v[3] = 1;
        assert!(!is_zero(&v));
    }

    /// A fresh `img.raw` sink of `cap` bytes in a temporary directory (kept alive by the caller).
    fn raw_sink(cap: u64) -> (tempfile::TempDir, RawSink) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img.raw");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let sink = RawSink::new(path, file, cap).unwrap();
        (dir, sink)
    }

    #[test]
    fn raw_sink_direct_and_buffered_pieces_interleave() {
        // A capacity that is not a multiple of 4 KiB: aligned pieces may go out with O_DIRECT,
        // the tail cannot; what is read back through the buffered handle must be exact.
        let cap = (9 << 20) + 512;
        let (dir, mut sink) = raw_sink(cap);
        let path = dir.path().join("img.raw");
        let data: Vec<u8> = (0..cap as usize).map(|i| (i % 253) as u8 | 1).collect();
        // Read an aligned piece back (as restore does for references) between the writes.
        sink.write_data(0, &data[..5 << 20]).unwrap();
        let mut back = vec![0u8; 4096];
        sink.file().1.read_exact_at(&mut back, 4 << 20).unwrap();
        assert_eq!(back, data[4 << 20..(4 << 20) + 4096]);
        sink.write_data(5 << 20, &data[5 << 20..]).unwrap();
        sink.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn raw_sink_leaves_zero_blocks_as_holes() {
        use std::os::unix::fs::MetadataExt;
        let (dir, mut sink) = raw_sink(16 << 20);
        let path = dir.path().join("img.raw");
        // A 4 MiB chunk with data only in its second and last 64 KiB blocks.
        let mut chunk = vec![0u8; 4 << 20];
        chunk[70_000] = 1;
        chunk[(4 << 20) - 1] = 2;
        sink.write_data(4 << 20, &chunk).unwrap();
        sink.finish().unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(&back[4 << 20..8 << 20], &chunk[..]);
        assert!(back[..4 << 20].iter().all(|&b| b == 0));
        let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(
            allocated <= 256 << 10,
            "{allocated} bytes allocated for two blocks"
        );
    }
}
