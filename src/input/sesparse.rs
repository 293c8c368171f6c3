//! SEsparse redo-log extents (`-sesparse.vmdk`): the ESXi 6.5+ snapshot format (VMFS6, and VMFS5
//! for disks of 2 TB and more). The normative byte layout is formats/SESPARSE.md.
//!
//! Pipeline position: an [`ExtentMap`] of the input stage, mapping extent-relative sectors to
//! [`Source::Data`](super::Source::Data), [`Source::Zero`](super::Source::Zero) (zero and unmapped grains, which hide the parent) or
//! [`Source::Unallocated`](super::Source::Unallocated). It never reads grain data.
//!
//! VMware has published no specification. Everything here follows the black-box description in
//! the qemu commit that added read support and was checked against qemu-img, the only other
//! reader (tests/sesparse.rs). Where the format is unknown to us (the journal, non-default grain
//! sizes) we refuse rather than guess: a wrong guess would archive a silently corrupt disk.
//!
//! Invariants established by [`open`]: the constant header has the one known version, grain and
//! table size; every region it names is ordered, non-overlapping, and the ones we read lie in the
//! file; the volatile header is clean (no journal to replay); the grain directory (GD) is loaded
//! once and every non-zero entry names a distinct grain-table slot inside the table area; no two
//! allocated grain table (GT) entries name the same grain (one pass over the tables at open,
//! `check_grain_indices`). Each GT entry is otherwise checked lazily, as [`ExtentMap::map`] walks
//! it.
//!
//! Performance: `map` coalesces unallocated, zero and file-contiguous data grains into one
//! [`Run`], across GT boundaries, with the last few decoded tables cached in reused buffers.

use std::path::Path;
use std::sync::Arc;

use super::claims::UnitBitmap;
use super::grain_tables::{TableCache, TableWindow};
use super::run_acc::{map_grains, GrainTables, Kind};
use super::source::le_u64;
use super::{ByteSource, ExtentMap, FileId, FileTable, Run, SECTOR};
use crate::error::{Error, Result};

/// constMagic.
pub const SESPARSE_CONST_MAGIC: u64 = 0xCAFE_BABE;
/// volatileMagic.
pub const SESPARSE_VOLATILE_MAGIC: u64 = 0xCAFE_CAFE;
/// The only known version, "2.1".
pub const SESPARSE_VERSION_2_1: u64 = 0x2_0000_0001;
/// The only grain size known to be in use (4 KiB), and the only one qemu reads.
pub const GRAIN_SECTORS: u64 = 8;
/// grainTableSize in sectors: 64 sectors of u64 entries = 4096 entries.
pub const GT_SECTORS: u64 = 64;
/// Entries per grain table.
pub const GT_ENTRIES: u64 = GT_SECTORS * SECTOR / 8;
/// Sectors covered by one grain table (16 MiB).
pub const GT_SPAN_SECTORS: u64 = GT_ENTRIES * GRAIN_SECTORS;
/// Largest capacity accepted: 64 TiB. ESXi's limit is 62 TB; this bounds the GD at 32 MiB before
/// the file size bounds it further.
pub const MAX_CAPACITY_SECTORS: u64 = 1 << 37;

/// Required top 32 bits of an allocated GD entry (type nibble 1, rest zero).
const GDE_ALLOCATED: u64 = 0x1000_0000;
const GT_BYTES: u64 = GT_SECTORS * SECTOR;

/// The constant header at sector 0 (26 u64 fields + zero padding). Names follow qemu's
/// `VMDKSESparseConstHeader`, which follow ESXi's log output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeSparseConstHeader {
    /// `constMagic`.
    pub magic: u64,
    /// `version`.
    pub version: u64,
    /// `capacity` in sectors.
    pub capacity: u64,
    /// `grainSize` in sectors.
    pub grain_size: u64,
    /// `grainTableSize` in sectors.
    pub grain_table_size: u64,
    /// `flags`.
    pub flags: u64,
    /// `reserved1`..`reserved4`.
    pub reserved: [u64; 4],
    /// `volatileHeaderOffset` / `volatileHeaderSize`, sectors.
    pub volatile_header: (u64, u64),
    /// `journalHeaderOffset` / `journalHeaderSize`.
    pub journal_header: (u64, u64),
    /// `journalOffset` / `journalSize`.
    pub journal: (u64, u64),
    /// `grainDirOffset` / `grainDirSize`.
    pub grain_dir: (u64, u64),
    /// `grainTablesOffset` / `grainTablesSize`.
    pub grain_tables: (u64, u64),
    /// `freeBitmapOffset` / `freeBitmapSize`.
    pub free_bitmap: (u64, u64),
    /// `backmapOffset` / `backmapSize`.
    pub backmap: (u64, u64),
    /// `grainsOffset` / `grainsSize`.
    pub grains: (u64, u64),
    /// Whether bytes 208-511 (`pad`) are all zero.
    pub pad_is_zero: bool,
}

impl SeSparseConstHeader {
    /// Decodes the 512-byte constant header without validating it.
    pub fn decode(b: &[u8; 512]) -> Self {
        let f = |i: usize| le_u64(b, i * 8);
        SeSparseConstHeader {
            magic: f(0),
            version: f(1),
            capacity: f(2),
            grain_size: f(3),
            grain_table_size: f(4),
            flags: f(5),
            reserved: [f(6), f(7), f(8), f(9)],
            volatile_header: (f(10), f(11)),
            journal_header: (f(12), f(13)),
            journal: (f(14), f(15)),
            grain_dir: (f(16), f(17)),
            grain_tables: (f(18), f(19)),
            free_bitmap: (f(20), f(21)),
            backmap: (f(22), f(23)),
            grains: (f(24), f(25)),
            pad_is_zero: b[208..].iter().all(|&x| x == 0),
        }
    }
}

/// The volatile header at sector `volatileHeaderOffset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeSparseVolatileHeader {
    /// `volatileMagic`.
    pub magic: u64,
    /// `freeGTNumber`: grain-table slots in use.
    pub free_gt_number: u64,
    /// `nextTxnSeqNumber`.
    pub next_txn_seq_number: u64,
    /// `replayJournal`: non-zero when the journal must be replayed.
    pub replay_journal: u64,
}

impl SeSparseVolatileHeader {
    /// Decodes the first 32 bytes of the volatile header.
    pub fn decode(b: &[u8; 32]) -> Self {
        SeSparseVolatileHeader {
            magic: le_u64(b, 0),
            free_gt_number: le_u64(b, 8),
            next_txn_seq_number: le_u64(b, 16),
            replay_journal: le_u64(b, 24),
        }
    }
}

/// An open SEsparse extent.
pub struct SeSparseExtent {
    src: Arc<dyn ByteSource>,
    file: FileId,
    header: SeSparseConstHeader,
    volatile: SeSparseVolatileHeader,
    /// The grain directory (one u64 per 16 MiB of capacity), validated at open.
    gd: Vec<u64>,
    file_len: u64,
    /// Grains in the grains area: `ceil(grainsSize / grainSize)`.
    grain_slots: u64,
    cache: TableCache<u64>,
    /// The tables last read, reused to avoid per-table allocation.
    window: TableWindow,
}

impl std::fmt::Debug for SeSparseExtent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeSparseExtent")
            .field("path", &self.src.path())
            .field("header", &self.header)
            .field("volatile", &self.volatile)
            .finish_non_exhaustive()
    }
}

/// Opens the SEsparse extent `file` of `files` and validates its headers and grain directory.
pub fn open(files: &FileTable, file: FileId) -> Result<SeSparseExtent> {
    let src = Arc::clone(files.get(file));
    let path = src.path().to_path_buf();
    let file_len = src.len();
    let corrupt = |at: u64, what: String| Error::corrupt(&path, at, what);
    if file_len < 2 * SECTOR {
        return Err(corrupt(
            0,
            format!("file of {file_len} bytes is too short for the SEsparse headers"),
        ));
    }
    let mut hb = [0u8; 512];
    src.read_exact_at(&mut hb, 0)?;
    let h = SeSparseConstHeader::decode(&hb);
    if h.magic != SESPARSE_CONST_MAGIC {
        return Err(corrupt(
            0,
            format!("constMagic {:#x} is not {SESPARSE_CONST_MAGIC:#x}", h.magic),
        ));
    }
    check_const_header(&path, &h)?;
    check_regions(&path, &h, file_len)?;
    let volatile = read_volatile_header(src.as_ref(), &path, &h)?;
    let gd = read_grain_dir(src.as_ref(), &path, &h)?;
    check_table_slots(&path, &h, &gd)?;
    let mut ext = SeSparseExtent {
        src,
        file,
        grain_slots: h.grains.1.div_ceil(GRAIN_SECTORS),
        header: h,
        volatile,
        gd,
        file_len,
        cache: TableCache::new(),
        window: TableWindow::new(GT_BYTES),
    };
    ext.check_grain_indices()?;
    Ok(ext)
}

/// The constant header's version, sizes, flags and capacity: what this reader knows.
fn check_const_header(path: &Path, h: &SeSparseConstHeader) -> Result<()> {
    let corrupt = |at: u64, what: String| Error::corrupt(path, at, what);
    if h.version != SESPARSE_VERSION_2_1 {
        return Err(Error::unsupported(
            path,
            format!(
                "SEsparse version {:#x} (only {SESPARSE_VERSION_2_1:#x} is known)",
                h.version
            ),
        ));
    }
    // Other grain and table sizes may exist (the vSphere API has a grain-size knob) but no file
    // with them has been seen, so their table layout is a guess we do not make.
    if h.grain_size != GRAIN_SECTORS || h.grain_table_size != GT_SECTORS {
        return Err(Error::unsupported(
            path,
            format!(
                "SEsparse grainSize {} / grainTableSize {} (only {GRAIN_SECTORS} / {GT_SECTORS} \
                 are known)",
                h.grain_size, h.grain_table_size
            ),
        ));
    }
    if h.flags != 0 || h.reserved != [0; 4] || !h.pad_is_zero {
        return Err(Error::unsupported(
            path,
            format!(
                "SEsparse flags {:#x} or reserved/padding bytes non-zero (an unknown feature)",
                h.flags
            ),
        ));
    }
    if h.capacity > MAX_CAPACITY_SECTORS {
        return Err(corrupt(
            16,
            format!("capacity {} sectors > {MAX_CAPACITY_SECTORS}", h.capacity),
        ));
    }
    Ok(())
}

/// The regions the constant header places, checked against each other and the file.
fn check_regions(path: &Path, h: &SeSparseConstHeader, file_len: u64) -> Result<()> {
    let corrupt = |at: u64, what: String| Error::corrupt(path, at, what);
    // Regions, in the order ESXi lays them out. They must each fit in u64 bytes, and must not
    // overlap each other or the constant header. Only the ones we read must lie in the file: the
    // grains area grows as grains are written and the journal/bitmap/backmap are never read.
    let regions: [(&str, u64, (u64, u64), bool); 8] = [
        ("volatile header", 80, h.volatile_header, true),
        ("journal header", 96, h.journal_header, false),
        ("journal", 112, h.journal, false),
        ("grain directory", 128, h.grain_dir, true),
        ("grain tables", 144, h.grain_tables, true),
        ("free bitmap", 160, h.free_bitmap, false),
        ("backmap", 176, h.backmap, false),
        ("grains", 192, h.grains, false),
    ];
    let mut spans: Vec<(u64, u64, &str)> = Vec::with_capacity(regions.len() + 1);
    spans.push((0, SECTOR, "constant header"));
    for &(name, at, (off, size), must_be_in_file) in &regions {
        let range = off
            .checked_add(size)
            .filter(|&end| end <= u64::MAX / SECTOR)
            .map(|end| (off * SECTOR, end * SECTOR));
        let Some((start, end)) = range else {
            return Err(corrupt(at, format!("{name} <{off}:{size}> overflows")));
        };
        if must_be_in_file && (size == 0 || end > file_len) {
            return Err(corrupt(
                at,
                format!(
                    "{name} <{off}:{size}> (bytes {start:#x}..{end:#x}) is empty or runs past \
                     the file end {file_len:#x}"
                ),
            ));
        }
        if size > 0 {
            spans.push((start, end, name));
        }
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        if w[0].1 > w[1].0 {
            return Err(corrupt(
                0,
                format!("SEsparse {} and {} overlap", w[0].2, w[1].2),
            ));
        }
    }
    Ok(())
}

/// The volatile header: it must be one, and its journal must not wait for a replay.
fn read_volatile_header(
    src: &dyn ByteSource,
    path: &Path,
    h: &SeSparseConstHeader,
) -> Result<SeSparseVolatileHeader> {
    let corrupt = |at: u64, what: String| Error::corrupt(path, at, what);
    let mut vb = [0u8; 32];
    let vol_at = h.volatile_header.0 * SECTOR;
    src.read_exact_at(&mut vb, vol_at)?;
    let volatile = SeSparseVolatileHeader::decode(&vb);
    if volatile.magic != SESPARSE_VOLATILE_MAGIC {
        return Err(corrupt(
            vol_at,
            format!(
                "volatileMagic {:#x} is not {SESPARSE_VOLATILE_MAGIC:#x}",
                volatile.magic
            ),
        ));
    }
    if volatile.replay_journal != 0 {
        return Err(Error::unsupported(
            path,
            format!(
                "replayJournal is {}: the journal must be replayed by ESXi before backup \
                 (the snapshot was not closed cleanly; power the VM on or consolidate once)",
                volatile.replay_journal
            ),
        ));
    }
    Ok(volatile)
}

/// The grain directory, each entry empty or naming a slot of the grain table area.
fn read_grain_dir(src: &dyn ByteSource, path: &Path, h: &SeSparseConstHeader) -> Result<Vec<u64>> {
    let corrupt = |at: u64, what: String| Error::corrupt(path, at, what);
    let gd_entries = h.capacity.div_ceil(GT_SPAN_SECTORS);
    let (gd_off, gd_size) = h.grain_dir;
    if gd_entries * 8 > gd_size * SECTOR {
        return Err(corrupt(
            136,
            format!(
                "grainDirSize {gd_size} sectors holds {} entries, capacity needs {gd_entries}",
                gd_size * SECTOR / 8
            ),
        ));
    }
    // The GD lies in the file (checked above) and is at most 32 MiB (capacity bound).
    let gd_at = gd_off * SECTOR;
    let mut raw = vec![0u8; (gd_entries * 8) as usize];
    src.read_exact_at(&mut raw, gd_at)?;
    let gd: Vec<u64> = raw.chunks_exact(8).map(|c| le_u64(c, 0)).collect();
    let gt_slots = h.grain_tables.1 / GT_SECTORS;
    for (i, &gde) in gd.iter().enumerate() {
        if gde == 0 {
            continue;
        }
        let at = gd_at + i as u64 * 8;
        if gde >> 32 != GDE_ALLOCATED {
            return Err(corrupt(
                at,
                format!("grain directory entry {i} is {gde:#018x}: top 32 bits are not 0x10000000"),
            ));
        }
        let slot = gde & 0xFFFF_FFFF;
        if slot >= gt_slots {
            return Err(corrupt(
                at,
                format!(
                    "grain directory entry {i}: grain table {slot} >= {gt_slots} tables in the \
                     grain table area"
                ),
            ));
        }
    }
    Ok(gd)
}

/// No two grain directory entries name one grain table slot.
fn check_table_slots(path: &Path, h: &SeSparseConstHeader, gd: &[u64]) -> Result<()> {
    let corrupt = |at: u64, what: String| Error::corrupt(path, at, what);
    let gt_slots = h.grain_tables.1 / GT_SECTORS;
    let gd_at = h.grain_dir.0 * SECTOR;
    // Two directory entries naming one table slot would make two 16 MiB ranges read the same
    // table. One bit per slot; the slots lie in the file, so at most one bit per 32 KiB.
    let mut slots = UnitBitmap::new(path, gt_slots, GT_BYTES)?;
    for (i, &gde) in gd.iter().enumerate() {
        let slot = gde & 0xFFFF_FFFF;
        if gde != 0 && slots.claim(slot, slot + 1).is_some() {
            let first = gd
                .iter()
                .position(|&g| g == gde)
                .expect("invariant: an earlier entry claimed the slot");
            return Err(corrupt(
                gd_at + i as u64 * 8,
                format!(
                    "grain directory entry {i} names grain table {slot}, which entry {first} \
                     (byte {:#x}) uses already",
                    gd_at + first as u64 * 8
                ),
            ));
        }
    }
    Ok(())
}

/// Decodes the grain index of a type-3 grain table entry: its low 12 bits are stored in bits
/// 48-59 and the rest in bits 0-47.
fn grain_index(gte: u64) -> u64 {
    ((gte >> 48) & 0xFFF) | ((gte & 0x0000_FFFF_FFFF_FFFF) << 12)
}

impl SeSparseExtent {
    /// Capacity in sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.header.capacity
    }

    /// The decoded constant header.
    pub fn header(&self) -> &SeSparseConstHeader {
        &self.header
    }

    /// The decoded volatile header.
    pub fn volatile_header(&self) -> &SeSparseVolatileHeader {
        &self.volatile
    }

    /// Proves at open that no two grain table entries name the same grain (formats/SESPARSE.md
    /// §3): grains live in their own area, apart from the tables (checked by the region overlap
    /// test), so a shared index is the only way two entries can share storage.
    ///
    /// Cost: one extra read of every allocated grain table (32 KiB per 16 MiB of capacity) and
    /// one bit per 4 KiB grain slot that lies in the file (3.2 MiB for a 100 GiB file), dropped
    /// when `open` returns. Entries `map` would reject (bad type, index out of the area or the
    /// file) are skipped here and reported by `map` at their lba, as before.
    fn check_grain_indices(&mut self) -> Result<()> {
        let grains_at = self.header.grains.0.saturating_mul(SECTOR);
        let in_file = self
            .file_len
            .saturating_sub(grains_at)
            .div_ceil(GRAIN_SECTORS * SECTOR);
        let mut taken = UnitBitmap::new(
            self.src.path(),
            self.grain_slots.min(in_file),
            GRAIN_SECTORS * SECTOR,
        )?;
        let mut raw = std::mem::take(&mut self.window);
        let mut conflict = None;
        let mut walked = self.walk_grains(&mut raw, |grain, entry_at, index| {
            if taken.claim(index, index + 1).is_some() {
                conflict = Some((grain, entry_at, index));
                return Ok(false);
            }
            Ok(true)
        });
        if let (Ok(()), Some((grain, entry_at, index))) = (&walked, conflict) {
            // The bitmap does not know the owner: walk again to the first entry with the index.
            let mut owner = None;
            walked = self.walk_grains(&mut raw, |g, at, i| {
                if i == index {
                    owner = Some((g, at));
                    return Ok(false);
                }
                Ok(true)
            });
            if walked.is_ok() {
                let (g, at) = owner.expect("invariant: an earlier entry claimed the index");
                walked = Err(Error::corrupt(
                    self.src.path(),
                    entry_at,
                    format!(
                        "grain table entry for grain {grain}: grain index {index} is already \
                         used by grain {g} (entry at byte {at:#x})"
                    ),
                ));
            }
        }
        self.window = raw;
        walked
    }

    /// Calls `f(grain, entry_at, index)` for every allocated (type 3) grain table entry inside
    /// the capacity whose grain `classify` would accept, in directory order, until `f` returns
    /// false. Reads the tables through `window`.
    fn walk_grains(
        &self,
        window: &mut TableWindow,
        mut f: impl FnMut(u64, u64, u64) -> Result<bool>,
    ) -> Result<()> {
        let cap = self.header.capacity;
        for (gd_index, &gde) in self.gd.iter().enumerate() {
            if gde == 0 {
                continue;
            }
            let gt_at = table_at(&self.header, gde);
            let raw = table(self.src.as_ref(), &self.header, &self.gd, gd_index, window)?;
            let first = gd_index as u64 * GT_ENTRIES;
            for (idx, c) in raw.chunks_exact(8).enumerate() {
                let grain = first + idx as u64;
                if grain * GRAIN_SECTORS >= cap {
                    break;
                }
                let gte = le_u64(c, 0);
                if gte >> 60 != 3 {
                    continue;
                }
                let entry_at = gt_at + 8 * idx as u64;
                if self.classify(gte, grain, 0, entry_at).is_err() {
                    continue;
                }
                if !f(grain, entry_at, grain_index(gte))? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Interprets one grain table entry for `grain` (extent grain index), mapping from sector
    /// `in_grain` of it; `entry_at` is the entry's own byte offset.
    fn classify(&self, gte: u64, grain: u64, in_grain: u64, entry_at: u64) -> Result<Kind> {
        let bad = |what: String| {
            Error::corrupt(
                self.src.path(),
                entry_at,
                format!("grain table entry {gte:#018x} for grain {grain}: {what}"),
            )
        };
        match gte >> 60 {
            0 if gte == 0 => Ok(Kind::Unallocated),
            0 => Err(bad("unallocated type with non-zero bits".into())),
            // Type 1 (unmapped) keeps the old grain's index in its low bits for space
            // reclamation; the guest sees zeros. Type 2 is an explicit zero grain.
            1 | 2 => Ok(Kind::Zero),
            3 => {
                // The index is stored with its low 12 bits in bits 48-59 and the rest in 0-47.
                let index = grain_index(gte);
                if index >= self.grain_slots {
                    return Err(bad(format!(
                        "grain index {index} >= {} grains in the grains area",
                        self.grain_slots
                    )));
                }
                // The grains area fits in u64 bytes (checked at open) but the last grain slot
                // may stick out by up to 7 sectors, so stay checked.
                let live = GRAIN_SECTORS.min(self.header.capacity - grain * GRAIN_SECTORS);
                let span = (self.header.grains.0 + index * GRAIN_SECTORS)
                    .checked_mul(SECTOR)
                    .and_then(|s| Some((s, s.checked_add(live * SECTOR)?)));
                let Some((start, end)) = span else {
                    return Err(bad(format!("grain {index} lies beyond 2^64 bytes")));
                };
                if end > self.file_len {
                    return Err(bad(format!(
                        "grain {index} (bytes {start:#x}..{end:#x}) runs past the file end {:#x}",
                        self.file_len
                    )));
                }
                Ok(Kind::Data(start + in_grain * SECTOR))
            }
            t => Err(bad(format!("unknown type {t:#x}"))),
        }
    }
}

impl GrainTables for SeSparseExtent {
    fn table_entries(&self) -> u64 {
        GT_ENTRIES
    }

    fn grain_size(&self) -> u64 {
        GRAIN_SECTORS
    }

    fn has_table(&self, gd_index: u64) -> bool {
        self.gd[gd_index as usize] != 0
    }

    /// The GD entry was validated at open.
    fn table_slot(&mut self, gd_index: u64) -> Result<usize> {
        let (src, header, gd) = (self.src.as_ref(), &self.header, &self.gd);
        let window = &mut self.window;
        self.cache.slot(gd_index, GT_ENTRIES as usize, |entries| {
            let raw = table(src, header, gd, gd_index as usize, window)?;
            for (e, c) in entries.iter_mut().zip(raw.chunks_exact(8)) {
                *e = le_u64(c, 0);
            }
            Ok(table_at(header, gd[gd_index as usize]))
        })
    }

    fn entry_kind(&self, slot: usize, idx: u64, grain: u64, in_grain: u64) -> Result<Kind> {
        let t = &self.cache[slot];
        self.classify(t.entries[idx as usize], grain, in_grain, t.offset + idx * 8)
    }
}

impl ExtentMap for SeSparseExtent {
    fn sectors(&self) -> u64 {
        self.header.capacity
    }

    fn map(&mut self, lba: u64, max: u64) -> Result<Run> {
        let cap = self.header.capacity;
        if lba >= cap || max == 0 {
            return Err(Error::Usage(format!(
                "{}: map({lba}, {max}) outside the {cap}-sector SEsparse extent",
                self.src.path().display()
            )));
        }
        let end = lba + max.min(cap - lba);
        Ok(map_grains(self, lba, end)?.into_run(self.file))
    }

    fn grain_sectors(&self) -> u64 {
        GRAIN_SECTORS
    }

    fn kind(&self) -> &'static str {
        "seSparse"
    }
}

/// Byte offset of the grain table an allocated GD entry `gde` names.
fn table_at(h: &SeSparseConstHeader, gde: u64) -> u64 {
    (h.grain_tables.0 + (gde & 0xFFFF_FFFF) * GT_SECTORS) * SECTOR
}

/// The bytes of the grain table of GD entry `gd_index` (allocated, validated), through `window`.
fn table<'w>(
    src: &dyn ByteSource,
    h: &SeSparseConstHeader,
    gd: &[u64],
    gd_index: usize,
    window: &'w mut TableWindow,
) -> Result<&'w [u8]> {
    let at = |i: usize| (gd[i] != 0).then(|| table_at(h, gd[i]));
    window.table(src, gd_index, gd.len(), at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::sesparse::{sesparse_image, SeSparseOptions};
    use crate::fixture::walk::map_end_to_end;
    use crate::fixture::{Content, Region};
    use crate::input::redo_test_util::{corrupt_at, walk, want};
    use crate::input::Source;

    fn table(bytes: Vec<u8>) -> (FileTable, FileId) {
        crate::input::redo_test_util::table("t-sesparse.vmdk", bytes)
    }

    fn image(cap: u64, regions: &[Region], opts: &SeSparseOptions) -> Vec<u8> {
        sesparse_image(cap, regions, opts)
            .expect("fixture")
            .to_vec()
    }

    fn pattern(lba: u64, sectors: u64) -> Vec<u8> {
        crate::input::redo_test_util::pattern(lba, sectors, 0xa5)
    }

    fn region(lba: u64, sectors: u64, content: Option<Content>) -> Region {
        Region {
            offset: lba * SECTOR,
            len: sectors * SECTOR,
            content: content.unwrap_or_else(|| Content::Data(pattern(lba, sectors))),
        }
    }

    fn put(b: &mut [u8], at: usize, v: u64) {
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Byte offset of the grain table used by GD entry `gd_index`.
    fn gt_at(b: &[u8], gd_index: usize) -> usize {
        let gd = le_u64(b, 128) as usize * 512;
        let slot = (le_u64(b, gd + gd_index * 8) & 0xFFFF_FFFF) as usize;
        (le_u64(b, 144) as usize + slot * 64) * 512
    }

    #[test]
    fn roundtrip_all_entry_types_and_high_indices() {
        // Two and a bit grain tables; the capacity is not a multiple of the grain.
        let cap = 2 * GT_SPAN_SECTORS + 4101;
        let regions = [
            region(8, 80, None),
            region(200, 16, Some(Content::Zero)),
            region(216, 24, Some(Content::Unmapped)),
            region(GT_SPAN_SECTORS - 16, 32, None),
            region(2 * GT_SPAN_SECTORS, 4096, Some(Content::Zero)),
            region(cap - 5, 5, None),
        ];
        let w = want(cap, &regions);
        for first in [0, 5000] {
            let opts = SeSparseOptions {
                first_grain_index: first,
                ..Default::default()
            };
            let (files, id) = table(image(cap, &regions, &opts));
            let mut ext = open(&files, id).unwrap();
            assert_eq!(ext.capacity_sectors(), cap);
            for max in [1, 7, 4095, u64::MAX] {
                walk(&files, &mut ext, &w, max);
            }
        }
    }

    #[test]
    fn runs_coalesce() {
        // 32 contiguous grains become two chunks of 16 in reverse file order; zero and unmapped
        // grains merge into one zero run; a 32 GiB disk with nothing else is one unallocated run.
        let cap = 1 << 26;
        let regions = [
            region(0, 256, None),
            region(256, 64, Some(Content::Zero)),
            region(320, 64, Some(Content::Unmapped)),
        ];
        let (files, id) = table(image(cap, &regions, &SeSparseOptions::default()));
        let mut ext = open(&files, id).unwrap();
        let mut runs = Vec::new();
        let mut lba = 0;
        while lba < cap {
            let r = ext.map(lba, cap - lba).unwrap();
            lba += r.sectors;
            runs.push(r);
        }
        let s: Vec<u64> = runs.iter().map(|r| r.sectors).collect();
        assert_eq!(s, [128, 128, 128, cap - 384]);
        assert_eq!(runs[2].source, Source::Zero);
        assert_eq!(runs[3].source, Source::Unallocated);
    }

    #[test]
    fn rejects_bad_headers() {
        let good = image(100_000, &[region(0, 8, None)], &SeSparseOptions::default());
        let open_with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            let (files, id) = table(b);
            open(&files, id).map(|_| ())
        };
        let unsupported = |e: Error| matches!(e, Error::Unsupported { .. });
        assert!(open_with(&|_| ()).is_ok());
        assert_eq!(
            corrupt_at(open_with(&|b| put(b, 0, 0xCAFE_BABF)).unwrap_err()),
            0
        );
        assert!(unsupported(
            open_with(&|b| put(b, 8, 0x3_0000_0001)).unwrap_err()
        ));
        assert!(unsupported(open_with(&|b| put(b, 24, 16)).unwrap_err()));
        assert!(unsupported(open_with(&|b| put(b, 32, 128)).unwrap_err()));
        assert!(unsupported(open_with(&|b| put(b, 40, 1)).unwrap_err()));
        assert!(unsupported(open_with(&|b| b[300] = 1).unwrap_err()));
        // Volatile magic, and a volatile header on top of the constant header.
        assert_eq!(corrupt_at(open_with(&|b| put(b, 512, 0)).unwrap_err()), 512);
        assert_eq!(corrupt_at(open_with(&|b| put(b, 80, 0)).unwrap_err()), 0);
        // GD past the end, GD too small for the capacity, regions overlapping.
        assert_eq!(
            corrupt_at(open_with(&|b| put(b, 128, 1 << 40)).unwrap_err()),
            128
        );
        assert_eq!(
            corrupt_at(open_with(&|b| put(b, 16, 1 << 36)).unwrap_err()),
            136
        );
        assert_eq!(
            corrupt_at(open_with(&|b| put(b, 144, 4096)).unwrap_err()),
            0
        );
        // Offset + size overflowing.
        assert_eq!(
            corrupt_at(open_with(&|b| put(b, 200, u64::MAX)).unwrap_err()),
            192
        );
        let (files, id) = table(good[..600].to_vec());
        assert!(open(&files, id).is_err());
    }

    #[test]
    fn dirty_journal_is_refused() {
        let opts = SeSparseOptions {
            replay_journal: true,
            ..Default::default()
        };
        let (files, id) = table(image(100_000, &[], &opts));
        match open(&files, id).unwrap_err() {
            Error::Unsupported { what, .. } => assert!(what.contains("journal"), "{what}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn absurd_capacity_fails_without_allocating() {
        let mut b = image(100_000, &[], &SeSparseOptions::default());
        put(&mut b, 16, 1 << 60);
        let (files, id) = table(b.clone());
        assert_eq!(corrupt_at(open(&files, id).unwrap_err()), 16);
        // Within MAX but the directory (32 MiB) is far bigger than its 1 MiB area.
        put(&mut b, 16, MAX_CAPACITY_SECTORS);
        let (files, id) = table(b);
        assert_eq!(corrupt_at(open(&files, id).unwrap_err()), 136);
    }

    #[test]
    fn bad_gd_entries() {
        let good = image(100_000, &[region(0, 8, None)], &SeSparseOptions::default());
        let gd = 4096 * 512;
        for bad in [
            0x2000_0000_0000_0000u64,
            0x1000_0001_0000_0000,
            0x1000_0000_0000_0800,
        ] {
            let mut b = good.clone();
            put(&mut b, gd + 8, bad);
            let (files, id) = table(b);
            assert_eq!(
                corrupt_at(open(&files, id).unwrap_err()),
                gd as u64 + 8,
                "{bad:#x}"
            );
        }
    }

    #[test]
    fn bad_gt_entries_fail_at_their_lba() {
        let mut b = image(
            100_000,
            &[region(0, 128, None)],
            &SeSparseOptions::default(),
        );
        let gt = gt_at(&b, 0);
        let len = b.len() as u64;
        let grains = le_u64(&b, 192);
        let past_eof = (len / 512 - grains) / 8 + 1;
        let entry = |i: u64| 0x3000_0000_0000_0000 | ((i & 0xFFF) << 48) | (i >> 12);
        put(&mut b, gt + 3 * 8, 0x4000_0000_0000_0000); // unknown type
        put(&mut b, gt + 4 * 8, 0x0000_0000_0000_0001); // unallocated with junk
        put(&mut b, gt + 5 * 8, entry(100_000 / 8 + 1)); // beyond the grains area
        put(&mut b, gt + 6 * 8, entry(past_eof)); // past the end of the file
        let (files, id) = table(b);
        let mut ext = open(&files, id).unwrap();
        let first = ext.map(0, 1000).unwrap();
        assert_eq!(first.sectors, 24, "the run stops before the bad entry");
        for g in 3..7u64 {
            let e = ext.map(g * 8, 8).unwrap_err();
            assert_eq!(corrupt_at(e), gt as u64 + g * 8, "grain {g}");
        }
        assert!(ext.map(56, 8).is_ok());
    }

    fn corrupt_what(e: Error) -> (u64, String) {
        match e {
            Error::Corrupt { offset, what, .. } => (offset, what),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn shared_grains_and_tables_are_refused_at_open() {
        let cap = 2 * GT_SPAN_SECTORS;
        let good = image(
            cap,
            &[region(0, 128, None), region(GT_SPAN_SECTORS, 64, None)],
            &SeSparseOptions::default(),
        );
        let open_bytes = |b: Vec<u8>| {
            let (files, id) = table(b);
            open(&files, id).map(|_| ())
        };
        open_bytes(good.clone()).expect("the fixture is sound");
        let (gt0, gt1) = (gt_at(&good, 0), gt_at(&good, 1));

        // Grain 7 names grain 2's index: blamed at grain 7's entry, naming grain 2.
        let mut b = good.clone();
        put(&mut b, gt0 + 7 * 8, le_u64(&good, gt0 + 2 * 8));
        let (at, what) = corrupt_what(open_bytes(b).unwrap_err());
        assert_eq!(at, (gt0 + 7 * 8) as u64, "{what}");
        assert!(
            what.contains("grain 7:") && what.contains("grain 2 "),
            "{what}"
        );
        // Across tables.
        let mut b = good.clone();
        put(&mut b, gt1 + 3 * 8, le_u64(&good, gt0 + 5 * 8));
        let (at, what) = corrupt_what(open_bytes(b).unwrap_err());
        assert_eq!(at, (gt1 + 3 * 8) as u64, "{what}");
        // An unmapped entry keeping a live grain's index is not a claim.
        let mut b = good.clone();
        let stale = le_u64(&good, gt0 + 2 * 8) & !(0xF << 60) | (1 << 60);
        put(&mut b, gt0 + 20 * 8, stale);
        open_bytes(b).expect("type 1 keeps a stale index");

        // Two directory entries naming the same table slot: blamed at the second.
        let gd = le_u64(&good, 128) as usize * 512;
        let mut b = good.clone();
        put(&mut b, gd + 8, le_u64(&good, gd));
        let (at, what) = corrupt_what(open_bytes(b).unwrap_err());
        assert_eq!(at, gd as u64 + 8, "{what}");
        assert!(what.contains("entry 0"), "{what}");
    }

    #[test]
    fn mapping_survives_mutations() {
        let regions = [
            region(0, 64, None),
            region(64, 8, Some(Content::Zero)),
            region(GT_SPAN_SECTORS, 8, Some(Content::Unmapped)),
        ];
        let good = image(GT_SPAN_SECTORS + 77, &regions, &SeSparseOptions::default());
        map_end_to_end("walk.vmdk", &good, open);
        map_end_to_end("walk.vmdk", &[], open);
        map_end_to_end("walk.vmdk", &good[..512], open);
        let gt = gt_at(&good, 0);
        let gd = 4096 * 512;
        for at in (0..208)
            .step_by(3)
            .chain(512..544)
            .chain(gd..gd + 16)
            .chain(gt..gt + 64)
        {
            for v in [0x00, 0x01, 0x30, 0xff] {
                let mut b = good.clone();
                b[at] = v;
                map_end_to_end("walk.vmdk", &b, open);
            }
        }
    }
}
