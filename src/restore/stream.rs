//! streamOptimized output in VMware's layout (formats/SPARSE.md §7.2 and "What vdar writes"):
//! written front to back to any `Write`, so it can go to a pipe or into an OVA.
//!
//! Pieces are cut into 64 KiB grains on the caller's thread; non-zero grains are copied into
//! batches and handed over a bounded channel to a writer thread, which deflates each batch on
//! every core (rayon) and writes the records in disk order, inserting each grain table after
//! its grains. So decoding the archive, deflating and writing overlap, and memory stays at a
//! few batches whatever the disk size.

use std::io::Write;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};
use rayon::prelude::*;

use super::sink::{Grain, Grainer};
use super::sparse::{GRAIN_SECTORS, GTES_PER_GT, GT_SECTORS, MAGIC};
use super::vmdk::SECTOR;
use super::DiskSink;
use crate::error::{Error, Result};
use crate::input::sparse::{
    encode_grain_record, encode_marker, SparseExtentHeader, COMPRESSION_DEFLATE, FLAG_COMPRESSED,
    FLAG_MARKERS, FLAG_NEWLINE_CHECK, GD_AT_END, MARKER_FOOTER, MARKER_GD, MARKER_GT,
    NEWLINE_CHECK_BYTES,
};

/// Grains per batch (8 MiB of input): enough to keep every core busy, small enough that the
/// two batches in flight stay cheap.
const BATCH_GRAINS: usize = 128;

/// What a finished stream produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// Bytes written.
    pub bytes: u64,
    /// Bytes of the disk held in grains (the OVF `populatedSize`).
    pub populated: u64,
}

type Batch = Vec<(u64, Vec<u8>)>;

/// zlib level for grains: 2, zlib-rs's `deflate_fast`, the algorithm of C zlib's level 1,
/// which is what VMware's own writer uses (its grains start `78 01`).
///
/// zlib-rs's level 1 is a different algorithm (zlib-ng's `deflate_quick`: fixed Huffman codes
/// only, never stored blocks), which wrote 64 KiB of noise as 69,1xx bytes (issue 14; those
/// grains are now stored, formats/SPARSE.md §4.3) and real data larger. Measured on 2026-12-02
/// (two loaded cores, `/usr/bin/time`, best of 3) restoring `--format stream`:
///
/// | disk | level 1 | level 2 | level 6 |
/// |---|---|---|---|
/// | ext4 of /usr/share, 660 of 800 MiB used | 307.0 MB, 3.7 s CPU | 262.9 MB, 5.5 s | 250.1 MB, 8.5 s |
/// | tools/bench-restore.sh disk, 512 MiB | 156.2 MB, 1.26 s wall | 146.3 MB, 1.74 s | 137.2 MB, 3.10 s |
///
/// Level 2 keeps most of level 6's gain on file-system data (14% smaller than level 1 against
/// 18%) at a third of its extra cost, and writes what VMware writes (C zlib level 1 gives
/// 268.2 MB on the ext4 disk). A stream is made to be copied to a host or shipped as an OVA,
/// so its size is paid again on the wire; every reader inflates any level.
const DEFLATE_LEVEL: u32 = 2;

/// A streamOptimized image being written to `W`.
pub struct StreamSink<W: Write + Send + 'static> {
    what: String,
    grainer: Grainer,
    batch: Batch,
    populated: u64,
    tx: Option<Sender<Batch>>,
    handle: Option<JoinHandle<Result<(W, u64)>>>,
    done: Option<(W, StreamSummary)>,
}

/// Builds the header (and, with the real `gd_offset`, the footer).
fn header(sectors: u64, desc_sectors: u64, gd_offset: u64) -> SparseExtentHeader {
    SparseExtentHeader {
        magic: MAGIC,
        // ESXi refuses streamOptimized files below version 3.
        version: 3,
        flags: FLAG_NEWLINE_CHECK | FLAG_COMPRESSED | FLAG_MARKERS,
        capacity: sectors,
        grain_size: GRAIN_SECTORS,
        descriptor_offset: 1,
        descriptor_size: desc_sectors,
        num_gtes_per_gt: GTES_PER_GT as u32,
        rgd_offset: 0,
        gd_offset,
        over_head: 1 + desc_sectors,
        unclean_shutdown: 0,
        newline_check: NEWLINE_CHECK_BYTES,
        compress_algorithm: COMPRESSION_DEFLATE,
    }
}

/// The writer thread's state: counts sectors to fill table entries as it goes.
struct Out<W: Write> {
    w: W,
    sector: u64,
    what: String,
}

impl<W: Write> Out<W> {
    fn write(&mut self, b: &[u8]) -> Result<()> {
        debug_assert_eq!(b.len() as u64 % SECTOR, 0);
        self.w
            .write_all(b)
            .map_err(|e| Error::io(&self.what, Some(self.sector * SECTOR), e))?;
        self.sector += b.len() as u64 / SECTOR;
        Ok(())
    }

    fn write_padded(&mut self, b: &[u8]) -> Result<()> {
        let mut v = b.to_vec();
        v.resize((v.len() as u64).next_multiple_of(SECTOR) as usize, 0);
        self.write(&v)
    }

    /// A table entry: sector numbers are u32, so the file stays below 2 TiB.
    fn here_u32(&self) -> Result<u32> {
        u32::try_from(self.sector).map_err(|_| {
            Error::io(
                &self.what,
                Some(self.sector * SECTOR),
                std::io::Error::other("streamOptimized file exceeds 2 TiB"),
            )
        })
    }
}

fn le_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The grain table being filled and the grain directory, on the writer thread.
struct Tables {
    /// One entry per 32 MiB of capacity: the one allocation here that grows with the
    /// capacity. The manifest refuses capacities above
    /// [`MAX_CAPACITY_BYTES`](crate::archive::manifest::MAX_CAPACITY_BYTES), so it is at most
    /// 2^21 entries (8 MiB).
    gd: Vec<u32>,
    gt: Vec<u32>,
    /// Index of the table in `gt`, once a grain has gone into it.
    cur: Option<u64>,
}

impl Tables {
    fn new(gd_entries: u64) -> Self {
        Tables {
            gd: vec![0u32; gd_entries as usize],
            gt: vec![0u32; GTES_PER_GT as usize],
            cur: None,
        }
    }

    /// Records grain `idx` at the current sector, first writing out the table before it if
    /// `idx` lies in another one.
    fn place<W: Write>(&mut self, out: &mut Out<W>, idx: u64) -> Result<()> {
        let t = idx / GTES_PER_GT;
        if self.cur != Some(t) {
            self.flush(out)?;
            self.cur = Some(t);
        }
        self.gt[(idx % GTES_PER_GT) as usize] = out.here_u32()?;
        Ok(())
    }

    /// Writes the table being filled (GT marker, then the table) and points its GD entry at it.
    ///
    /// Only tables that hold a grain are written: a GD entry of 0 means "no table, every grain
    /// unallocated", which reads as zeros in a base disk. VMware's streamOptimized writers
    /// leave empty tables out too (VirtualBox's VMDK.cpp, `vmdkStreamFlushGT`, which does the
    /// same: "VMware does not write out completely empty grain tables"), and VMware's open-vmdk
    /// reader (`Sparse_Open` in vmdk/sparse.c) reads only the tables whose GD entry is not 0,
    /// as qemu's does. Writing every table made the output grow with the capacity, not the
    /// data: 160 MiB for a 2 TiB disk holding 64 KiB (issue 13).
    fn flush<W: Write>(&mut self, out: &mut Out<W>) -> Result<()> {
        let Some(t) = self.cur.take() else {
            return Ok(());
        };
        out.write(&encode_marker(GT_SECTORS, MARKER_GT))?;
        self.gd[t as usize] = out.here_u32()?;
        out.write(&le_bytes(&self.gt))?;
        self.gt.fill(0);
        Ok(())
    }
}

/// The writer thread: header and descriptor, then batches, then tables, GD, footer, EOS.
/// Returns the writer and the bytes written.
fn run<W: Write>(
    w: W,
    what: String,
    sectors: u64,
    descriptor: String,
    rx: Receiver<Batch>,
) -> Result<(W, u64)> {
    let desc_sectors = (descriptor.len() as u64 + 1).div_ceil(SECTOR);
    let gd_entries = sectors.div_ceil(GRAIN_SECTORS).div_ceil(GTES_PER_GT);
    let mut out = Out { w, sector: 0, what };
    out.write(&header(sectors, desc_sectors, GD_AT_END).encode())?;
    // At least one NUL after the text, as VMware's own files have.
    out.write_padded(descriptor.as_bytes())?;
    let mut tables = Tables::new(gd_entries);
    for batch in rx {
        let recs: Vec<std::io::Result<Vec<u8>>> = batch
            .par_iter()
            .map(|(i, d)| encode_grain_record(i * GRAIN_SECTORS, d, DEFLATE_LEVEL))
            .collect();
        for ((idx, _), rec) in batch.iter().zip(recs) {
            let rec = rec.map_err(|e| Error::io(&out.what, Some(out.sector * SECTOR), e))?;
            tables.place(&mut out, *idx)?;
            out.write(&rec)?;
        }
    }
    tables.flush(&mut out)?;
    out.write(&encode_marker((gd_entries * 4).div_ceil(SECTOR), MARKER_GD))?;
    let gd_offset = out.sector;
    out.write_padded(&le_bytes(&tables.gd))?;
    out.write(&encode_marker(1, MARKER_FOOTER))?;
    out.write(&header(sectors, desc_sectors, gd_offset).encode())?;
    // End-of-stream marker: an all-zero sector.
    out.write(&[0u8; 512])?;
    out.w
        .flush()
        .map_err(|e| Error::io(&out.what, Some(out.sector * SECTOR), e))?;
    Ok((out.w, out.sector * SECTOR))
}

impl<W: Write + Send + 'static> StreamSink<W> {
    /// Starts a stream of `capacity` bytes to `w` with the embedded `descriptor`; `what` names
    /// the output in errors.
    pub fn new(w: W, what: String, capacity: u64, descriptor: String) -> Result<Self> {
        let sectors = capacity / SECTOR;
        let (tx, rx) = bounded(1);
        let name = what.clone();
        let handle = std::thread::Builder::new()
            .name("vdar-stream".into())
            .spawn(move || run(w, name, sectors, descriptor, rx))
            .map_err(|e| Error::io(&what, None, e))?;
        Ok(StreamSink {
            what,
            grainer: Grainer::new(GRAIN_SECTORS * SECTOR, capacity),
            batch: Vec::with_capacity(BATCH_GRAINS),
            populated: 0,
            tx: Some(tx),
            handle: Some(handle),
            done: None,
        })
    }

    /// Waits for the writer thread and returns its result (its error, if it failed).
    fn join(&mut self) -> Result<(W, u64)> {
        self.tx = None;
        match self.handle.take() {
            Some(h) => h.join().unwrap_or_else(|_| {
                Err(Error::io(
                    &self.what,
                    None,
                    std::io::Error::other("stream writer thread panicked"),
                ))
            }),
            None => Err(Error::Usage(format!(
                "{}: stream already finished",
                self.what
            ))),
        }
    }

    fn send(&mut self) -> Result<()> {
        let b = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_GRAINS));
        let ok = self.tx.as_ref().is_some_and(|tx| tx.send(b).is_ok());
        if !ok {
            // The writer stopped early: its error says why.
            self.join()?;
            return Err(Error::Usage(format!(
                "{}: stream writer stopped",
                self.what
            )));
        }
        Ok(())
    }

    fn grain(&mut self, g: Grain<'_>) -> Result<()> {
        if let Grain::Data(idx, d) = g {
            self.populated += d.len() as u64;
            self.batch.push((idx, d.to_vec()));
            if self.batch.len() >= BATCH_GRAINS {
                self.send()?;
            }
        }
        Ok(())
    }

    /// The writer and summary, once [`DiskSink::finish`] has succeeded.
    pub fn take_output(&mut self) -> Option<(W, StreamSummary)> {
        self.done.take()
    }
}

impl<W: Write + Send + 'static> DiskSink for StreamSink<W> {
    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let mut g = std::mem::replace(&mut self.grainer, Grainer::new(1, 0));
        let r = g.data(offset, data, &mut |x| self.grain(x));
        self.grainer = g;
        r
    }
    fn write_zero(&mut self, offset: u64, len: u64) -> Result<()> {
        let mut g = std::mem::replace(&mut self.grainer, Grainer::new(1, 0));
        let r = g.zero(offset, len, &mut |x| self.grain(x));
        self.grainer = g;
        r
    }
    fn finish(&mut self) -> Result<()> {
        debug_assert!(self.grainer.complete());
        if !self.batch.is_empty() {
            self.send()?;
        }
        let (w, bytes) = self.join()?;
        self.done = Some((
            w,
            StreamSummary {
                bytes,
                populated: self.populated,
            },
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_is_gd_footer_eos() {
        let cap = 3 * 65536 + 1024;
        let mut s = StreamSink::new(Vec::new(), "t".into(), cap, "# Disk".into()).unwrap();
        s.write_data(0, &[7u8; 65536]).unwrap();
        s.write_zero(65536, 65536).unwrap();
        s.write_data(131072, &vec![1u8; cap as usize - 131072])
            .unwrap();
        s.finish().unwrap();
        let (out, sum) = s.take_output().unwrap();
        assert_eq!(sum.bytes, out.len() as u64);
        assert_eq!(sum.populated, cap - 65536);
        let n = out.len();
        assert_eq!(&out[n - 512..], &[0u8; 512]);
        let footer_marker = &out[n - 1536..n - 1024];
        assert_eq!(footer_marker[..8], 1u64.to_le_bytes());
        assert_eq!(footer_marker[8..16], [0, 0, 0, 0, 3, 0, 0, 0]);
        let footer = &out[n - 1024..n - 512];
        assert_eq!(&footer[..8], b"KDMV\x03\0\0\0");
        assert_eq!(&out[..4], b"KDMV");
        assert_eq!(&out[56..64], &[0xFF; 8]);
        let gd = u64::from_le_bytes(footer[56..64].try_into().unwrap());
        assert_ne!(gd, GD_AT_END);
        // GD marker right before the GD.
        let m = &out[(gd as usize - 1) * 512..gd as usize * 512];
        assert_eq!(m[12..16], 2u32.to_le_bytes());
    }

    /// Issue 13 item 3: a table is written only when it holds a grain.
    #[test]
    fn r13_tables_without_grains_are_not_written() {
        const TABLE: u64 = GTES_PER_GT * GRAIN_SECTORS * SECTOR;
        let cap = 3 * TABLE;
        let mut s = StreamSink::new(Vec::new(), "t".into(), cap, "# Disk".into()).unwrap();
        s.write_zero(0, TABLE + 65536).unwrap();
        s.write_data(TABLE + 65536, &[9u8; 65536]).unwrap();
        s.write_zero(TABLE + 131072, cap - TABLE - 131072).unwrap();
        s.finish().unwrap();
        let (out, _) = s.take_output().unwrap();
        let u32_at = |o: usize| u32::from_le_bytes(out[o..o + 4].try_into().unwrap());
        let n = out.len();
        let gd = u64::from_le_bytes(out[n - 1024 + 56..n - 1024 + 64].try_into().unwrap());
        let gd = gd as usize * 512;
        assert_eq!(u32_at(gd), 0, "no table for the first 32 MiB");
        assert_eq!(u32_at(gd + 8), 0, "nor the last");
        let gt = u32_at(gd + 4) as usize * 512;
        // The one table, after its marker: entry 1 is the grain, the others are 0.
        assert_eq!(out[gt - 512 + 12], 1, "GT marker");
        assert_eq!(u32_at(gt), 0);
        let grain = u32_at(gt + 4) as usize * 512;
        assert_eq!(
            u64::from_le_bytes(out[grain..grain + 8].try_into().unwrap()),
            (TABLE + 65536) / SECTOR
        );
        assert!((2..GTES_PER_GT as usize).all(|i| u32_at(gt + 4 * i) == 0));
        // Header, descriptor, one grain, one table, GD, footer: a few KiB, not 3 tables' worth.
        assert!(n < 16 << 10, "{n} bytes");
    }
}
