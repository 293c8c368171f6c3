//! monolithicSparse output: one hosted KDMV file with its descriptor embedded
//! (formats/SPARSE.md, "What vdar writes").
//!
//! The capacity is known before the first byte, so every piece of metadata has a fixed place:
//! header, descriptor, redundant GD and GTs, GD and GTs, then grains from `overHead` on, in
//! disk order. Grains are appended through a buffer; a grain table is written to both of its
//! places when the restore moves past it. Memory: one grain table, one grain, the GD.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::sink::{Grain, Grainer};
use super::vmdk::SECTOR;
use super::DiskSink;
use crate::error::{Error, Result};
use crate::input::sparse::SparseExtentHeader;

/// Grain size written, in sectors (64 KiB: what VMware and qemu use).
pub(crate) const GRAIN_SECTORS: u64 = 128;
/// Entries per grain table (VMware's fixed value).
pub(crate) const GTES_PER_GT: u64 = 512;
/// Sectors of one grain table.
pub(crate) const GT_SECTORS: u64 = GTES_PER_GT * 4 / SECTOR;
/// KDMV magic.
pub(crate) const MAGIC: u32 = 0x564D_444B;
/// flags bit 0 (newline check valid) and bit 1 (redundant GD present).
const FLAGS: u32 = 0x3;
/// Sectors reserved for the embedded descriptor (VMware and qemu reserve 20).
const DESCRIPTOR_SECTORS: u64 = 20;

fn le_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A monolithicSparse image being written.
pub struct SparseSink {
    path: PathBuf,
    w: BufWriter<File>,
    grainer: Grainer,
    st: State,
}

struct State {
    gt: Vec<u32>,
    /// Grain table being filled, and whether it has an entry.
    cur_gt: u64,
    dirty: bool,
    /// Next free sector for a grain.
    next: u64,
    gt_start: u64,
    rgt_start: u64,
    grain_buf: Vec<u8>,
}

impl SparseSink {
    /// Lays out the file for `capacity` bytes and writes everything but grains and tables.
    /// `descriptor` is the embedded descriptor text.
    pub fn new(path: PathBuf, file: File, capacity: u64, descriptor: &str) -> Result<Self> {
        let sectors = capacity / SECTOR;
        let grains = sectors.div_ceil(GRAIN_SECTORS);
        let gd_entries = grains.div_ceil(GTES_PER_GT);
        let gd_sectors = (gd_entries * 4).div_ceil(SECTOR);
        let desc_sectors = DESCRIPTOR_SECTORS.max((descriptor.len() as u64 + 1).div_ceil(SECTOR));
        let rgd = 1 + desc_sectors;
        let rgt_start = rgd + gd_sectors;
        let gd = rgt_start + gd_entries * GT_SECTORS;
        let gt_start = gd + gd_sectors;
        // Grains start on a grain boundary, as qemu and VMware place them.
        let over_head = (gt_start + gd_entries * GT_SECTORS).next_multiple_of(GRAIN_SECTORS);
        // Sector numbers in tables are u32: the whole file must stay below 2^32 sectors.
        if over_head + grains * GRAIN_SECTORS > u64::from(u32::MAX) {
            return Err(Error::Usage(format!(
                "{}: a monolithicSparse file addresses at most 2 TiB; capacity {capacity} is \
                 too large (use --format vmdk)",
                path.display()
            )));
        }
        let header = SparseExtentHeader {
            magic: MAGIC,
            version: 1,
            flags: FLAGS,
            capacity: sectors,
            grain_size: GRAIN_SECTORS,
            descriptor_offset: 1,
            descriptor_size: desc_sectors,
            num_gtes_per_gt: GTES_PER_GT as u32,
            rgd_offset: rgd,
            gd_offset: gd,
            over_head,
            unclean_shutdown: 0,
            newline_check: crate::input::sparse::NEWLINE_CHECK_BYTES,
            compress_algorithm: 0,
        };
        let io = |off: u64, e| Error::io(&path, Some(off), e);
        file.write_all_at(&header.encode(), 0)
            .map_err(|e| io(0, e))?;
        file.write_all_at(descriptor.as_bytes(), SECTOR)
            .map_err(|e| io(SECTOR, e))?;
        // Every table is preallocated (its sectors are zero, a hole, until written), so the
        // directories are final now. They are the only memory and writes here that grow with
        // the capacity rather than the data, 4 bytes per 32 MiB of disk twice: at most 256 KiB
        // each, as the 2 TiB check above bounds them. The tables' own space (2 KiB per 32 MiB,
        // twice) is a hole until a table holds a grain.
        let table = |start: u64| -> Vec<u32> {
            (0..gd_entries)
                .map(|i| (start + i * GT_SECTORS) as u32)
                .collect()
        };
        file.write_all_at(&le_bytes(&table(rgt_start)), rgd * SECTOR)
            .map_err(|e| io(rgd * SECTOR, e))?;
        file.write_all_at(&le_bytes(&table(gt_start)), gd * SECTOR)
            .map_err(|e| io(gd * SECTOR, e))?;
        file.set_len(over_head * SECTOR)
            .map_err(|e| io(over_head * SECTOR, e))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        w.seek(SeekFrom::Start(over_head * SECTOR))
            .map_err(|e| io(over_head * SECTOR, e))?;
        Ok(SparseSink {
            grainer: Grainer::new(GRAIN_SECTORS * SECTOR, capacity),
            path,
            w,
            st: State {
                gt: vec![0; GTES_PER_GT as usize],
                cur_gt: 0,
                dirty: false,
                next: over_head,
                gt_start,
                rgt_start,
                grain_buf: Vec::new(),
            },
        })
    }
}

impl State {
    /// Writes the current table to both places if it has entries.
    fn flush_gt(&mut self, path: &PathBuf, w: &BufWriter<File>) -> Result<()> {
        if self.dirty {
            let b = le_bytes(&self.gt);
            for start in [self.gt_start, self.rgt_start] {
                let at = (start + self.cur_gt * GT_SECTORS) * SECTOR;
                w.get_ref()
                    .write_all_at(&b, at)
                    .map_err(|e| Error::io(path, Some(at), e))?;
            }
            self.gt.fill(0);
            self.dirty = false;
        }
        Ok(())
    }

    fn grain(&mut self, path: &PathBuf, w: &mut BufWriter<File>, g: Grain<'_>) -> Result<()> {
        let Grain::Data(idx, data) = g else {
            // Unallocated grains read as zeros in a base disk: nothing to write.
            return Ok(());
        };
        if idx / GTES_PER_GT != self.cur_gt {
            self.flush_gt(path, w)?;
            self.cur_gt = idx / GTES_PER_GT;
        }
        // Checked in `new`: every sector number fits.
        self.gt[(idx % GTES_PER_GT) as usize] = self.next as u32;
        self.dirty = true;
        let at = self.next * SECTOR;
        let grain = (GRAIN_SECTORS * SECTOR) as usize;
        let res = if data.len() == grain {
            w.write_all(data)
        } else {
            // The last grain is stored whole, zero-padded: readers address grains by size.
            self.grain_buf.clear();
            self.grain_buf.extend_from_slice(data);
            self.grain_buf.resize(grain, 0);
            w.write_all(&self.grain_buf)
        };
        res.map_err(|e| Error::io(path, Some(at), e))?;
        self.next += GRAIN_SECTORS;
        Ok(())
    }
}

impl DiskSink for SparseSink {
    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let SparseSink {
            path,
            w,
            grainer,
            st,
            ..
        } = self;
        grainer.data(offset, data, &mut |g| st.grain(path, w, g))
    }
    fn write_zero(&mut self, offset: u64, len: u64) -> Result<()> {
        let SparseSink {
            path,
            w,
            grainer,
            st,
            ..
        } = self;
        grainer.zero(offset, len, &mut |g| st.grain(path, w, g))
    }
    fn finish(&mut self) -> Result<()> {
        debug_assert!(self.grainer.complete());
        self.st.flush_gt(&self.path, &self.w)?;
        // The restore's commit fsyncs every output once (`staged`).
        self.w.flush().map_err(|e| Error::io(&self.path, None, e))
    }
}
