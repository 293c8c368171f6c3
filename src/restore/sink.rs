//! The disk sink: where the restored bytes of one disk go, in disk-offset order.
//!
//! Restore produces each disk once, front to back (formats/ARCHIVE.md orders records by disk
//! and offset), so every output format is a writer of ordered pieces: data at an offset, or a
//! run of zeros. [`DiskSink`] is that contract; raw images, ESX flat extents, monolithicSparse,
//! streamOptimized and the disks inside an OVA all implement it. The caller ([`super::FsTarget`])
//! turns gaps between chunks into [`DiskSink::write_zero`] calls and zero-fills up to the
//! capacity before [`DiskSink::finish`], so a sink sees the whole disk exactly once.
//!
//! [`Grainer`] cuts that piece stream into grains for the sparse formats, without copying a
//! grain that arrives whole.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::blockio::{AlignedBuf, DIRECT_ALIGN};
use crate::chunk::bytes::is_zero;
use crate::error::{Error, Result};
use crate::input::source::open_direct;

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
/// only data is written.
///
/// Aligned data goes out with `O_DIRECT` when the file system accepts it: restoring through the
/// page cache made the kernel's copy into it the largest single cost of a restore (more than
/// zstd), and a multi-gigabyte restore would otherwise evict everything else the host caches.
/// The bytes are staged in one aligned buffer (a user-space copy, far cheaper than the page
/// cache's); unaligned pieces (a capacity that is not a multiple of 4 KiB) use the buffered
/// handle, which the kernel keeps coherent with direct writes.
pub struct RawSink {
    path: PathBuf,
    file: File,
    direct: Option<Direct>,
}

/// The `O_DIRECT` handle and its staging buffer.
struct Direct {
    file: File,
    stage: AlignedBuf,
}

/// Largest direct write: one staging buffer, reused.
const DIRECT_WRITE_BYTES: usize = 4 << 20;

impl RawSink {
    /// Takes a created file and gives it its final length at once (all holes).
    pub fn new(path: PathBuf, file: File, capacity: u64) -> Result<Self> {
        file.set_len(capacity)
            .map_err(|e| Error::io(&path, Some(capacity), e))?;
        // Not every file system takes O_DIRECT (tmpfs refuses it): then buffered it is.
        let direct = open_direct(&path, true).ok().map(|file| Direct {
            file,
            stage: AlignedBuf::new(DIRECT_WRITE_BYTES),
        });
        Ok(RawSink { path, file, direct })
    }

    /// The open image, to read chunks back for references.
    pub(crate) fn file(&self) -> (&PathBuf, &File) {
        (&self.path, &self.file)
    }

    fn write_at(&mut self, data: &[u8], offset: u64) -> Result<()> {
        let aligned = (offset as usize | data.len()) % DIRECT_ALIGN == 0;
        if let (true, Some(d)) = (aligned, &mut self.direct) {
            let mut done = 0;
            while done < data.len() {
                let n = (data.len() - done).min(DIRECT_WRITE_BYTES);
                let stage = &mut d.stage.spare()[..n];
                stage.copy_from_slice(&data[done..done + n]);
                let at = offset + done as u64;
                match d.file.write_all_at(stage, at) {
                    Ok(()) => done += n,
                    // A file system that opened with O_DIRECT but refuses this write: finish
                    // buffered, and stay buffered.
                    Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                        self.direct = None;
                        return self.write_at(&data[done..], at);
                    }
                    Err(e) => return Err(Error::io(&self.path, Some(at), e)),
                }
            }
            return Ok(());
        }
        self.file
            .write_all_at(data, offset)
            .map_err(|e| Error::io(&self.path, Some(offset), e))
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
            pos = end;
        }
        if let Some(s) = start {
            self.write_at(&data[s..], offset + s as u64)?;
        }
        Ok(())
    }
    fn write_zero(&mut self, _: u64, _: u64) -> Result<()> {
        // The file was created as one hole of the final size; zeros are already there.
        Ok(())
    }
    /// Nothing left to write: data went out with `pwrite`, zeros are holes. The restore's
    /// commit fsyncs every output once (`staged`).
    fn finish(&mut self) -> Result<()> {
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

/// One grain's worth of output from [`Grainer`].
pub(crate) enum Grain<'a> {
    /// Grain `index` holds these bytes (shorter than a grain only for the last one).
    Data(u64, &'a [u8]),
    /// Grains `first..first + count` are all zero. Today's sinks skip them whatever the range
    /// (unallocated reads as zero in a base disk); the range is kept for sinks that must mark
    /// zeros explicitly, and for the tests.
    #[allow(dead_code)]
    Zero(u64, u64),
}

/// Cuts an ordered piece stream into grains. Invariant: `buf` holds the bytes of the current
/// partial grain, so `buf.len() == pos % grain` (it is empty at every grain boundary).
pub(crate) struct Grainer {
    grain: u64,
    capacity: u64,
    pos: u64,
    buf: Vec<u8>,
}

impl Grainer {
    /// For a disk of `capacity` bytes cut in grains of `grain` bytes.
    pub(crate) fn new(grain: u64, capacity: u64) -> Self {
        Grainer {
            grain,
            capacity,
            pos: 0,
            buf: Vec::new(),
        }
    }

    /// Length of the grain holding `pos` (the last one may be short).
    fn grain_len(&self) -> u64 {
        let start = self.pos / self.grain * self.grain;
        self.grain.min(self.capacity - start)
    }

    fn check(&self, offset: u64, len: u64) -> Result<()> {
        if offset != self.pos || self.capacity - self.pos < len {
            return Err(Error::Usage(format!(
                "internal: piece {offset:#x}+{len:#x} out of order (expected {:#x}, capacity \
                 {:#x})",
                self.pos, self.capacity
            )));
        }
        Ok(())
    }

    /// Emits the buffered grain once it is complete.
    fn flush_full(&mut self, emit: &mut dyn FnMut(Grain<'_>) -> Result<()>) -> Result<()> {
        if self.buf.len() as u64 == self.grain_len_of_buf() {
            let idx = (self.pos - 1) / self.grain;
            let g = if is_zero(&self.buf) {
                Grain::Zero(idx, 1)
            } else {
                Grain::Data(idx, &self.buf)
            };
            emit(g)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Length of the grain the buffer belongs to (the one holding `pos - 1`).
    fn grain_len_of_buf(&self) -> u64 {
        if self.buf.is_empty() {
            return u64::MAX;
        }
        let start = (self.pos - 1) / self.grain * self.grain;
        self.grain.min(self.capacity - start)
    }

    /// Data at `offset` (must be the current position).
    pub(crate) fn data(
        &mut self,
        offset: u64,
        mut data: &[u8],
        emit: &mut dyn FnMut(Grain<'_>) -> Result<()>,
    ) -> Result<()> {
        self.check(offset, data.len() as u64)?;
        while !data.is_empty() {
            let glen = self.grain_len() as usize;
            if self.buf.is_empty() && data.len() >= glen {
                // Whole grain in the piece: no copy.
                let (head, rest) = data.split_at(glen);
                let idx = self.pos / self.grain;
                emit(if is_zero(head) {
                    Grain::Zero(idx, 1)
                } else {
                    Grain::Data(idx, head)
                })?;
                self.pos += glen as u64;
                data = rest;
            } else {
                let take = (glen - self.buf.len()).min(data.len());
                self.buf.extend_from_slice(&data[..take]);
                self.pos += take as u64;
                data = &data[take..];
                self.flush_full(emit)?;
            }
        }
        Ok(())
    }

    /// `len` zeros at `offset` (must be the current position).
    pub(crate) fn zero(
        &mut self,
        offset: u64,
        mut len: u64,
        emit: &mut dyn FnMut(Grain<'_>) -> Result<()>,
    ) -> Result<()> {
        self.check(offset, len)?;
        while len > 0 {
            let glen = self.grain_len();
            if self.buf.is_empty() && len >= glen {
                let end = self.pos + len;
                // Whole grains covered; the short last grain counts when the run reaches it.
                let end_grain = if end == self.capacity {
                    end.div_ceil(self.grain)
                } else {
                    end / self.grain
                };
                let first = self.pos / self.grain;
                emit(Grain::Zero(first, end_grain - first))?;
                let new_pos = (end_grain * self.grain).min(self.capacity);
                len -= new_pos - self.pos;
                self.pos = new_pos;
            } else {
                let take = (glen - self.buf.len() as u64).min(len);
                self.buf.resize(self.buf.len() + take as usize, 0);
                self.pos += take;
                len -= take;
                self.flush_full(emit)?;
            }
        }
        Ok(())
    }

    /// Whether every byte up to the capacity has been seen.
    pub(crate) fn complete(&self) -> bool {
        self.pos == self.capacity && self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays pieces and rebuilds the image from the grains emitted.
    fn rebuild(grain: u64, cap: u64, pieces: &[(u64, Option<Vec<u8>>, u64)]) -> Vec<u8> {
        let mut g = Grainer::new(grain, cap);
        let mut img = vec![0xAAu8; cap as usize];
        let mut seen = vec![false; cap.div_ceil(grain) as usize];
        let mut emit = |x: Grain<'_>| {
            match x {
                Grain::Data(i, d) => {
                    assert!(!seen[i as usize]);
                    seen[i as usize] = true;
                    let s = (i * grain) as usize;
                    assert_eq!(d.len() as u64, grain.min(cap - i * grain));
                    img[s..s + d.len()].copy_from_slice(d);
                }
                Grain::Zero(f, n) => {
                    for i in f..f + n {
                        assert!(!seen[i as usize]);
                        seen[i as usize] = true;
                        let s = (i * grain) as usize;
                        let e = ((i + 1) * grain).min(cap) as usize;
                        img[s..e].fill(0);
                    }
                }
            }
            Ok(())
        };
        for (off, d, len) in pieces {
            match d {
                Some(d) => g.data(*off, d, &mut emit).unwrap(),
                None => g.zero(*off, *len, &mut emit).unwrap(),
            }
        }
        assert!(g.complete());
        assert!(seen.iter().all(|&s| s));
        img
    }

    #[test]
    fn grainer_reassembles_unaligned_pieces() {
        let cap = 10 * 512 + 7 * 512; // 17 sectors, grain 4 sectors: short last grain
        let grain = 2048;
        let a: Vec<u8> = (0..3000u32).map(|i| (i % 251 + 1) as u8).collect();
        let b: Vec<u8> = (0..1000u32).map(|i| (i % 7 + 1) as u8).collect();
        let pieces = vec![
            (0, Some(a.clone()), 0),
            (3000, None, 2000),
            (5000, Some(b.clone()), 0),
            (6000, None, cap - 6000),
        ];
        let img = rebuild(grain, cap, &pieces);
        assert_eq!(&img[..3000], &a[..]);
        assert!(img[3000..5000].iter().all(|&x| x == 0));
        assert_eq!(&img[5000..6000], &b[..]);
        assert!(img[6000..].iter().all(|&x| x == 0));
        // Whole-grain pieces and a zero run to the (short) end.
        let full: Vec<u8> = vec![9u8; 4096];
        let img = rebuild(
            grain,
            cap,
            &[(0, Some(full.clone()), 0), (4096, None, cap - 4096)],
        );
        assert_eq!(&img[..4096], &full[..]);
    }

    #[test]
    fn grainer_refuses_out_of_order() {
        let mut g = Grainer::new(512, 4096);
        let mut emit = |_: Grain<'_>| Ok(());
        g.data(0, &[1; 512], &mut emit).unwrap();
        assert!(g.data(0, &[1; 512], &mut emit).is_err());
        assert!(g.zero(512, 8192, &mut emit).is_err());
    }

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
