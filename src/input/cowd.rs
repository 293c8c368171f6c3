//! vmfsSparse "COWD" redo-log extents (`-delta.vmdk`): the ESX snapshot format on VMFS5 for
//! disks under 2 TB. The normative byte layout is formats/COWD.md.
//!
//! Pipeline position: an [`ExtentMap`] of the input stage. It maps extent-relative sectors to
//! [`Source::Data`](super::Source::Data) (bytes in the delta file), [`Source::Zero`](super::Source::Zero) (grain table entry 1, which hides
//! the parent) or [`Source::Unallocated`](super::Source::Unallocated) (the parent decides). It never reads grain data.
//!
//! Invariants established by [`open`]:
//! - the header is version 1, the grain size is a power of two in `1..=MAX_GRAIN_SECTORS`, the
//!   grain directory (GD) has exactly `ceil(numSectors / (4096 × grainSize))` entries and lies
//!   inside the file after the 2048-byte header;
//! - every non-zero GD entry names a 16 KiB grain table (GT) inside the file that overlaps neither
//!   the header nor the GD. GD validation is eager because the GD is read whole anyway and a bad
//!   entry should fail the backup before any data is streamed.
//! - no two tables, no grain and table, and no two grains share a sector of the file: `open` walks
//!   every table once to prove it (`check_storage`, formats/COWD.md §2), since reading on would
//!   silently return one grain's bytes for another.
//!
//! Grain table entries are validated lazily, when [`ExtentMap::map`] first walks over them: the
//! tables are spread across the file and reading them all at open would double the metadata I/O.
//!
//! Performance: ESX uses 512-byte grains, so a 2 TB delta has up to 2^32 grains. `map` therefore
//! coalesces whole stretches of entries into one [`Run`] (unallocated, zero, or data whose grains
//! are contiguous in the file), continues across GT boundaries, and keeps the last few decoded GTs
//! in a small cache whose buffers are reused, so the walk allocates nothing per grain or per GT.

use std::path::Path;
use std::sync::Arc;

use super::claims::{meta_overlap_error, round_up, Meta, MetaRange, MetaRanges, UnitBitmap};
use super::grain_tables::{TableCache, TableWindow};
use super::run_acc::{map_grains, GrainTables, Kind};
use super::source::le_u32;
use super::{ByteSource, ExtentMap, FileId, FileTable, Run, SECTOR};
use crate::error::{Error, Result};

/// "COWD" as it appears in the first four bytes of the file.
const COWD_MAGIC: [u8; 4] = *b"COWD";

/// The only header version vdar reads: ESX redo logs. Workstation 3 hosted sparse files share
/// the magic with version 3 but use 512-entry grain tables (formats/COWD.md, "Versions").
pub const COWD_VERSION_ESX: u32 = 1;

/// Size of the header in bytes (sectors 0-3).
pub const HEADER_BYTES: u64 = 2048;

/// Entries per grain table. Fixed by the format, whatever the grain size.
pub const GT_ENTRIES: u64 = 4096;

/// Bytes per grain table (4096 u32 entries).
pub const GT_BYTES: u64 = GT_ENTRIES * 4;

/// Largest grain accepted: 1 MiB. ESX writes 1 (512 bytes); qemu accepts up to 2^21 sectors.
/// 1 MiB matches the largest grain the rest of vdar accepts and keeps a single grain's reads
/// bounded.
pub const MAX_GRAIN_SECTORS: u32 = 2048;

/// Grain table entry meaning "this grain reads as zeros; do not consult the parent". ESX's own
/// readers treat it so; qemu and libvmdk read header sector 1 instead (formats/COWD.md).
const GTE_ZERO: u32 = 1;

/// The fields of the 2048-byte COWD header that vdar uses. Names follow the ESX `COWDisk_Header`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CowdHeader {
    /// `version`: 1 for ESX.
    pub version: u32,
    /// `flags`: 3 on ESX; meaning undocumented and ignored.
    pub flags: u32,
    /// `numSectors`: capacity in sectors.
    pub num_sectors: u32,
    /// `grainSize`: sectors per grain.
    pub grain_size: u32,
    /// `gdOffset`: sector of the grain directory.
    pub gd_offset: u32,
    /// `numGDEntries`: u32 entries in the grain directory.
    pub num_gd_entries: u32,
    /// `freeSector`: allocation frontier; informational.
    pub free_sector: u32,
    /// `uncleanShutdown`: non-zero when the redo log was not closed cleanly.
    pub unclean_shutdown: u32,
}

impl CowdHeader {
    /// Decodes the header. Only the magic is checked here; [`open`] validates the rest against
    /// the file. Returns `None` when the magic is not "COWD".
    pub fn decode(b: &[u8; HEADER_BYTES as usize]) -> Option<Self> {
        if b[0..4] != COWD_MAGIC {
            return None;
        }
        Some(CowdHeader {
            version: le_u32(b, 4),
            flags: le_u32(b, 8),
            num_sectors: le_u32(b, 12),
            grain_size: le_u32(b, 16),
            gd_offset: le_u32(b, 20),
            num_gd_entries: le_u32(b, 24),
            free_sector: le_u32(b, 28),
            unclean_shutdown: le_u32(b, 1648),
        })
    }
}

/// An open COWD extent.
pub struct CowdExtent {
    src: Arc<dyn ByteSource>,
    file: FileId,
    header: CowdHeader,
    /// The grain directory, validated.
    gd: Vec<u32>,
    /// Byte range `[start, end)` of the grain directory, which no table or grain may overlap.
    gd_range: (u64, u64),
    file_len: u64,
    cache: TableCache<u32>,
    /// The tables last read, reused to avoid per-table allocation.
    window: TableWindow,
    warnings: Vec<String>,
}

impl std::fmt::Debug for CowdExtent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CowdExtent")
            .field("path", &self.src.path())
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// Opens the COWD extent `file` of `files` and validates its header and grain directory.
pub fn open(files: &FileTable, file: FileId) -> Result<CowdExtent> {
    let src = Arc::clone(files.get(file));
    let path = src.path().to_path_buf();
    let file_len = src.len();
    let header = read_header(&*src, &path, file_len)?;
    let (gd, gd_range) = read_grain_directory(&*src, &path, &header, file_len)?;
    let mut warnings = Vec::new();
    if header.unclean_shutdown != 0 {
        warnings.push(format!(
            "{}: COWD uncleanShutdown is {} (the redo log was not closed cleanly); its tables \
             are read as they are",
            path.display(),
            header.unclean_shutdown
        ));
    }
    let mut ext = CowdExtent {
        src,
        file,
        header,
        gd,
        gd_range,
        file_len,
        cache: TableCache::new(),
        window: TableWindow::new(GT_BYTES),
        warnings,
    };
    ext.check_grain_tables()?;
    ext.check_storage()?;
    Ok(ext)
}

/// Reads the header and checks what the rest of `open` relies on: magic, version, grain size
/// and a directory size that matches the capacity.
fn read_header(src: &dyn ByteSource, path: &Path, file_len: u64) -> Result<CowdHeader> {
    if file_len < HEADER_BYTES {
        return Err(Error::corrupt(
            path,
            0,
            format!("file of {file_len} bytes is shorter than the {HEADER_BYTES}-byte COWD header"),
        ));
    }
    let mut hb = [0u8; HEADER_BYTES as usize];
    src.read_exact_at(&mut hb, 0)?;
    let header = CowdHeader::decode(&hb).ok_or_else(|| {
        Error::corrupt(path, 0, format!("magic {:02x?} is not \"COWD\"", &hb[0..4]))
    })?;
    if header.version != COWD_VERSION_ESX {
        return Err(Error::unsupported(
            path,
            format!(
                "COWD version {} (only version {COWD_VERSION_ESX}, the ESX redo log, is read; \
                 Workstation 3 era files use a different grain table size)",
                header.version
            ),
        ));
    }
    let g = header.grain_size;
    if g == 0 || !g.is_power_of_two() || g > MAX_GRAIN_SECTORS {
        return Err(Error::corrupt(
            path,
            16,
            format!("grainSize {g} is not a power of two in 1..={MAX_GRAIN_SECTORS}"),
        ));
    }
    let expect_gd = u64::from(header.num_sectors).div_ceil(GT_ENTRIES * u64::from(g));
    if u64::from(header.num_gd_entries) != expect_gd {
        return Err(Error::corrupt(
            path,
            24,
            format!(
                "numGDEntries {} != ceil(numSectors {} / (4096 × grainSize {g})) = {expect_gd}",
                header.num_gd_entries, header.num_sectors
            ),
        ));
    }
    Ok(header)
}

/// Reads the grain directory and returns it with its byte range in the file.
fn read_grain_directory(
    src: &dyn ByteSource,
    path: &Path,
    header: &CowdHeader,
    file_len: u64,
) -> Result<(Vec<u32>, (u64, u64))> {
    // numGDEntries ≤ 2^32 / 4096 = 2^20 follows from `read_header`'s check, so the GD is at
    // most 4 MiB; it must also fit in the file, checked before allocating.
    let gd_start = u64::from(header.gd_offset) * SECTOR;
    let gd_end = gd_start + u64::from(header.num_gd_entries) * 4;
    if gd_start < HEADER_BYTES || gd_end > file_len {
        return Err(Error::corrupt(
            path,
            20,
            format!(
                "grain directory at bytes {gd_start:#x}..{gd_end:#x} (gdOffset {}) is not \
                 between the header end {HEADER_BYTES:#x} and the file end {file_len:#x}",
                header.gd_offset
            ),
        ));
    }
    let mut raw = vec![0u8; (gd_end - gd_start) as usize];
    src.read_exact_at(&mut raw, gd_start)?;
    let gd = raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((gd, (gd_start, gd_end)))
}

impl CowdExtent {
    /// Every grain table the directory points at lies inside the file, past the header.
    fn check_grain_tables(&self) -> Result<()> {
        for (i, &gde) in self.gd.iter().enumerate() {
            if gde != 0 {
                self.check_area(u64::from(gde) * SECTOR, GT_BYTES)
                    .map_err(|why| {
                        Error::corrupt(
                            self.src.path(),
                            self.gd_range.0 + i as u64 * 4,
                            format!("grain directory entry {i}: grain table at sector {gde} {why}"),
                        )
                    })?;
            }
        }
        Ok(())
    }
}

/// One allocated grain as seen by [`CowdExtent::walk_grains`].
#[derive(Clone, Copy, Debug)]
struct GrainAt {
    /// Grain index in the extent.
    grain: u64,
    /// Byte offset of its grain table entry.
    entry_at: u64,
    /// Byte range of its live sectors in the file.
    start: u64,
    end: u64,
}

impl CowdExtent {
    /// Capacity in sectors (`numSectors`).
    pub fn capacity_sectors(&self) -> u64 {
        u64::from(self.header.num_sectors)
    }

    /// The decoded header.
    pub fn header(&self) -> &CowdHeader {
        &self.header
    }

    /// Checks that `[start, start+len)` lies inside the file and outside the header and the GD.
    /// Returns the reason as text so the caller can name the entry that pointed there.
    fn check_area(&self, start: u64, len: u64) -> std::result::Result<(), String> {
        let end = start.saturating_add(len);
        if end > self.file_len {
            return Err(format!(
                "(bytes {start:#x}..{end:#x}) runs past the file end {:#x}",
                self.file_len
            ));
        }
        if start < HEADER_BYTES {
            return Err(format!("(byte {start:#x}) lies in the header"));
        }
        let (gs, ge) = self.gd_range;
        if start < ge && gs < end {
            return Err(format!(
                "(bytes {start:#x}..{end:#x}) overlaps the grain directory"
            ));
        }
        Ok(())
    }

    /// Proves at open that no two allocated things share storage (formats/COWD.md §5): grain
    /// tables against each other, grains against the tables, grains against each other. GTs and
    /// grains are both appended at `freeSector`, so they share one space and every pair matters.
    ///
    /// Cost: one extra read of every grain table (16 KiB per 2 MiB of capacity with ESX's
    /// 512-byte grains) and one bit per sector of the file, dropped when `open` returns (25 MiB
    /// for a 100 GiB delta; capped by [`super::claims::MAX_CLAIM_BITMAP_BYTES`]). Sectors are the
    /// unit because grains may start at any sector. Entries that `map` would reject anyway
    /// (outside the file, on the header or GD) are skipped here so that `map` reports them with
    /// the lba that reaches them, as before.
    fn check_storage(&mut self) -> Result<()> {
        let (gs, ge) = self.gd_range;
        let mut ranges = vec![
            MetaRange {
                start: 0,
                end: HEADER_BYTES,
                what: Meta::Header,
            },
            MetaRange {
                start: gs,
                end: round_up(ge, SECTOR),
                what: Meta::Gd,
            },
        ];
        for (i, &gde) in self.gd.iter().enumerate() {
            if gde != 0 {
                let start = u64::from(gde) * SECTOR;
                ranges.push(MetaRange {
                    start,
                    end: start + GT_BYTES,
                    what: Meta::Gt {
                        index: i as u64,
                        entry_at: gs + 4 * i as u64,
                    },
                });
            }
        }
        let meta =
            MetaRanges::new(ranges).map_err(|(a, b)| meta_overlap_error(self.src.path(), a, b))?;
        let mut sectors = UnitBitmap::new(self.src.path(), self.file_len.div_ceil(SECTOR), SECTOR)?;
        let mut raw = std::mem::take(&mut self.window);
        let mut conflict = None;
        let walked = self.walk_grains(&mut raw, |c| {
            if let Some(m) = meta.find(c.start, c.end) {
                return Err(Error::corrupt(
                    self.src.path(),
                    c.entry_at,
                    format!(
                        "grain table entry for grain {}: grain at bytes {:#x}..{:#x} overlaps {} \
                         at bytes {:#x}..{:#x}",
                        c.grain, c.start, c.end, m.what, m.start, m.end
                    ),
                ));
            }
            match sectors.claim(c.start / SECTOR, c.end.div_ceil(SECTOR)) {
                Some(s) => {
                    conflict = Some((c, s));
                    Ok(false)
                }
                None => Ok(true),
            }
        });
        let result = walked.and_then(|()| match conflict {
            None => Ok(()),
            Some((c, s)) => {
                // The bitmap does not know the owner: walk again to the first grain on sector s.
                let mut owner = None;
                self.walk_grains(&mut raw, |o| {
                    if o.start / SECTOR <= s && s < o.end.div_ceil(SECTOR) {
                        owner = Some(o);
                        return Ok(false);
                    }
                    Ok(true)
                })?;
                let o = owner.expect("invariant: the sector was claimed by an earlier grain");
                Err(Error::corrupt(
                    self.src.path(),
                    c.entry_at,
                    format!(
                        "grain table entry for grain {}: grain at bytes {:#x}..{:#x} overlaps \
                         grain {} at bytes {:#x}..{:#x} (entry at byte {:#x})",
                        c.grain, c.start, c.end, o.grain, o.start, o.end, o.entry_at
                    ),
                ))
            }
        });
        self.window = raw;
        result
    }

    /// Calls `f` for every allocated grain (GTE >= 2) inside the capacity whose storage passes
    /// [`Self::check_area`], in directory order, until `f` returns false. Reads the grain tables
    /// through `window`.
    fn walk_grains(
        &self,
        window: &mut TableWindow,
        mut f: impl FnMut(GrainAt) -> Result<bool>,
    ) -> Result<()> {
        let g = u64::from(self.header.grain_size);
        let cap = self.capacity_sectors();
        for (gd_index, &gde) in self.gd.iter().enumerate() {
            if gde == 0 {
                continue;
            }
            let gt_at = u64::from(gde) * SECTOR;
            let raw = table(self.src.as_ref(), &self.gd, gd_index, window)?;
            let first = gd_index as u64 * GT_ENTRIES;
            for (idx, c) in raw.chunks_exact(4).enumerate() {
                let grain = first + idx as u64;
                if grain * g >= cap {
                    break;
                }
                let gte = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                if gte <= GTE_ZERO {
                    continue;
                }
                let live = g.min(cap - grain * g) * SECTOR;
                let start = u64::from(gte) * SECTOR;
                if self.check_area(start, live).is_err() {
                    continue;
                }
                let at = GrainAt {
                    grain,
                    entry_at: gt_at + 4 * idx as u64,
                    start,
                    end: start + live,
                };
                if !f(at)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Interprets one grain table entry. `grain` is the grain's index in the extent, `in_grain`
    /// the sector within it where mapping starts, and `entry_at` the entry's own byte offset.
    fn classify(&self, gte: u32, grain: u64, in_grain: u64, entry_at: u64) -> Result<Kind> {
        match gte {
            0 => Ok(Kind::Unallocated),
            GTE_ZERO => Ok(Kind::Zero),
            _ => {
                let g = u64::from(self.header.grain_size);
                // The last grain may be cut short by the capacity; only its live sectors
                // need to be in the file.
                let live = g.min(self.capacity_sectors() - grain * g);
                let start = u64::from(gte) * SECTOR;
                self.check_area(start, live * SECTOR).map_err(|why| {
                    Error::corrupt(
                        self.src.path(),
                        entry_at,
                        format!("grain table entry for grain {grain}: sector {gte} {why}"),
                    )
                })?;
                Ok(Kind::Data(start + in_grain * SECTOR))
            }
        }
    }
}

impl GrainTables for CowdExtent {
    fn table_entries(&self) -> u64 {
        GT_ENTRIES
    }

    fn grain_size(&self) -> u64 {
        u64::from(self.header.grain_size)
    }

    fn has_table(&self, gd_index: u64) -> bool {
        self.gd[gd_index as usize] != 0
    }

    /// The GD entry was validated at open.
    fn table_slot(&mut self, gd_index: u64) -> Result<usize> {
        let (src, gd, window) = (self.src.as_ref(), &self.gd, &mut self.window);
        self.cache.slot(gd_index, GT_ENTRIES as usize, |entries| {
            let raw = table(src, gd, gd_index as usize, window)?;
            for (e, c) in entries.iter_mut().zip(raw.chunks_exact(4)) {
                *e = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
            Ok(u64::from(gd[gd_index as usize]) * SECTOR)
        })
    }

    fn entry_kind(&self, slot: usize, idx: u64, grain: u64, in_grain: u64) -> Result<Kind> {
        let t = &self.cache[slot];
        self.classify(t.entries[idx as usize], grain, in_grain, t.offset + idx * 4)
    }
}

impl ExtentMap for CowdExtent {
    fn sectors(&self) -> u64 {
        self.capacity_sectors()
    }

    fn map(&mut self, lba: u64, max: u64) -> Result<Run> {
        let cap = self.capacity_sectors();
        if lba >= cap || max == 0 {
            return Err(Error::Usage(format!(
                "{}: map({lba}, {max}) outside the {cap}-sector COWD extent",
                self.src.path().display()
            )));
        }
        let end = lba + max.min(cap - lba);
        Ok(map_grains(self, lba, end)?.into_run(self.file))
    }

    fn grain_sectors(&self) -> u64 {
        u64::from(self.header.grain_size)
    }

    fn kind(&self) -> &'static str {
        "vmfsSparse"
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
}

/// The bytes of grain table `gd_index` of directory `gd` (its entry non-zero), through
/// `window`.
fn table<'w>(
    src: &dyn ByteSource,
    gd: &[u32],
    gd_index: usize,
    window: &'w mut TableWindow,
) -> Result<&'w [u8]> {
    let at = |i: usize| (gd[i] != 0).then(|| u64::from(gd[i]) * SECTOR);
    window.table(src, gd_index, gd.len(), at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::cowd::cowd_image;
    use crate::fixture::walk::map_end_to_end;
    use crate::fixture::{Content, Region};
    use crate::input::redo_test_util::{corrupt_at, walk, want};
    use crate::input::Source;

    fn table(bytes: Vec<u8>) -> (FileTable, FileId) {
        crate::input::redo_test_util::table("t-delta.vmdk", bytes)
    }

    fn image(cap: u64, grain: u32, regions: &[Region]) -> Vec<u8> {
        cowd_image(cap, grain, regions).expect("fixture").to_vec()
    }

    fn pattern(lba: u64, sectors: u64) -> Vec<u8> {
        crate::input::redo_test_util::pattern(lba, sectors, 0x5a)
    }

    fn data(lba: u64, sectors: u64) -> Region {
        Region {
            offset: lba * SECTOR,
            len: 0,
            content: Content::Data(pattern(lba, sectors)),
        }
    }

    fn zero(lba: u64, sectors: u64) -> Region {
        Region {
            offset: lba * SECTOR,
            len: sectors * SECTOR,
            content: Content::Zero,
        }
    }

    fn put(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn roundtrip_odd_capacity_grain_1() {
        // Two full grain tables plus a partial one; data crossing a GT boundary, zeros,
        // and data in the last partial table.
        let cap = 2 * 4096 + 1003;
        let regions = [
            data(10, 40),
            zero(5000, 3000),
            data(8180, 30),
            data(cap - 3, 3),
        ];
        let (files, id) = table(image(cap, 1, &regions));
        let mut ext = open(&files, id).unwrap();
        assert_eq!(ext.capacity_sectors(), cap);
        assert!(ext.warnings().is_empty());
        let w = want(cap, &regions);
        for max in [1, 3, 4095, u64::MAX] {
            walk(&files, &mut ext, &w, max);
        }
    }

    #[test]
    fn roundtrip_grain_8_partial_last_grain() {
        let cap = 4096 * 8 + 13;
        let regions = [
            data(0, 64),
            zero(64, 8),
            data(cap - 13, 13),
            data(32768 - 8, 8),
        ];
        let (files, id) = table(image(cap, 8, &regions));
        let mut ext = open(&files, id).unwrap();
        assert_eq!(ext.grain_sectors(), 8);
        let w = want(cap, &regions);
        for max in [1, 5, u64::MAX] {
            walk(&files, &mut ext, &w, max);
        }
    }

    #[test]
    fn runs_coalesce() {
        // 64 contiguous grains are written as 4 chunks of 16 in reverse order: 4 data runs.
        // A zero region spanning three tables is one run; so is the unallocated tail, however
        // large the disk.
        let cap = u64::from(u32::MAX);
        let regions = [data(0, 64), zero(100, 3 * 4096)];
        let (files, id) = table(image(cap, 1, &regions));
        let mut ext = open(&files, id).unwrap();
        let runs: Vec<Run> = {
            let mut v = Vec::new();
            let mut lba = 0;
            while lba < cap {
                let r = ext.map(lba, cap - lba).unwrap();
                lba += r.sectors;
                v.push(r);
            }
            v
        };
        let summary: Vec<(u64, bool)> = runs
            .iter()
            .map(|r| (r.sectors, matches!(r.source, Source::Data { .. })))
            .collect();
        assert_eq!(
            summary,
            [
                (16, true),
                (16, true),
                (16, true),
                (16, true),
                (36, false),
                (3 * 4096, false),
                (cap - 100 - 3 * 4096, false)
            ]
        );
        assert_eq!(runs[5].source, Source::Zero);
        assert_eq!(runs[6].source, Source::Unallocated);
    }

    #[test]
    fn rejects_bad_headers() {
        let good = image(5000, 1, &[data(0, 8)]);
        let open_with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            let (files, id) = table(b);
            open(&files, id).map(|_| ())
        };
        assert!(open_with(&|_| ()).is_ok());
        assert_eq!(corrupt_at(open_with(&|b| b[0] = b'K').unwrap_err()), 0);
        assert!(matches!(
            open_with(&|b| put(b, 4, 3)).unwrap_err(),
            Error::Unsupported { what, .. } if what.contains("version 3")
        ));
        for g in [0, 3, 4096] {
            assert_eq!(corrupt_at(open_with(&|b| put(b, 16, g)).unwrap_err()), 16);
        }
        assert_eq!(corrupt_at(open_with(&|b| put(b, 24, 7)).unwrap_err()), 24);
        // GD in the header, GD past the end of the file.
        assert_eq!(corrupt_at(open_with(&|b| put(b, 20, 2)).unwrap_err()), 20);
        assert_eq!(
            corrupt_at(open_with(&|b| put(b, 20, 1 << 20)).unwrap_err()),
            20
        );
        // Shorter than the header.
        let (files, id) = table(good[..100].to_vec());
        assert_eq!(corrupt_at(open(&files, id).unwrap_err()), 0);
    }

    #[test]
    fn a_round_trip_source_reads_grain_tables_concurrently() {
        use crate::input::slow_source::SlowSource;
        // Twelve tables, one grain each, scattered among the grains as ESX appends them.
        let cap = 12 * 4096;
        let regions: Vec<Region> = (0..12).map(|t| data(t * 4096 + 7, 1)).collect();
        let bytes = image(cap, 1, &regions);
        let mut files = FileTable::default();
        let slow = Arc::new(SlowSource::new(&bytes, None));
        let id = files.add(slow.clone());
        let mut ext = open(&files, id).unwrap();
        assert!(slow.peak() > 1, "table reads ran one at a time");
        walk(&files, &mut ext, &want(cap, &regions), u64::MAX);

        // A table that cannot be read fails the open at its offset.
        let fifth = u64::from(le_u32(&bytes, 2048 + 5 * 4)) * SECTOR;
        let mut files = FileTable::default();
        let id = files.add(Arc::new(SlowSource::new(&bytes, Some(fifth))));
        match open(&files, id).unwrap_err() {
            Error::Io { offset, .. } => assert_eq!(offset, Some(fifth)),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn absurd_counts_fail_without_allocating() {
        // 2^32-1 sectors needs 2^20 GD entries (4 MiB), far more than the tiny file holds;
        // the check must come before the allocation.
        let mut b = image(5000, 1, &[]);
        put(&mut b, 12, u32::MAX);
        put(&mut b, 24, u32::MAX.div_ceil(4096));
        let (files, id) = table(b);
        assert_eq!(corrupt_at(open(&files, id).unwrap_err()), 20);
    }

    #[test]
    fn bad_gd_entries_name_their_offset() {
        let good = image(3 * 4096, 1, &[data(4096, 1)]);
        // GD at sector 4; entry 1 is the one in use.
        for bad in [0xFFFF_FF00u32, 2, 4] {
            let mut b = good.clone();
            put(&mut b, 2048 + 4, bad);
            let (files, id) = table(b);
            assert_eq!(
                corrupt_at(open(&files, id).unwrap_err()),
                2048 + 4,
                "gde {bad}"
            );
        }
        // An entry for an otherwise empty range pointing past the end.
        let mut b = good.clone();
        let len = b.len() as u32 / 512;
        put(&mut b, 2048 + 8, len - 1);
        let (files, id) = table(b);
        assert_eq!(corrupt_at(open(&files, id).unwrap_err()), 2048 + 8);
    }

    #[test]
    fn bad_gt_entries_fail_at_their_lba() {
        let mut b = image(4096, 1, &[data(0, 16)]);
        let gt = u64::from(le_u32(&b, 2048)) * SECTOR;
        let len = b.len() as u32 / 512;
        // Grain 5 past the end of the file, grain 6 inside the header.
        put(&mut b, (gt + 5 * 4) as usize, len);
        put(&mut b, (gt + 6 * 4) as usize, 3);
        let (files, id) = table(b);
        let mut ext = open(&files, id).unwrap();
        let run = ext.map(0, 4096).unwrap();
        assert_eq!(run.sectors, 5, "the run stops before the bad entry");
        assert_eq!(corrupt_at(ext.map(5, 4091).unwrap_err()), gt + 5 * 4);
        assert_eq!(corrupt_at(ext.map(6, 4090).unwrap_err()), gt + 6 * 4);
        assert!(ext.map(7, 4089).is_ok());
    }

    fn corrupt_what(e: Error) -> (u64, String) {
        match e {
            Error::Corrupt { offset, what, .. } => (offset, what),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn shared_storage_is_refused_at_open() {
        // Two tables (grains 0-15 and 4096-4111), grain size 1.
        let good = image(2 * 4096, 1, &[data(0, 16), data(4096, 16)]);
        let gt0 = u64::from(le_u32(&good, 2048)) * SECTOR;
        let gt1 = u64::from(le_u32(&good, 2052)) * SECTOR;
        let entry = |gt: u64, i: u64| (gt + 4 * i) as usize;
        let open_bytes = |b: Vec<u8>| {
            let (files, id) = table(b);
            open(&files, id).map(|_| ())
        };
        open_bytes(good.clone()).expect("the fixture is sound");

        // (a) Grain 9 names grain 3's sector: blamed at grain 9's entry, naming grain 3.
        let mut b = good.clone();
        put(&mut b, entry(gt0, 9), le_u32(&good, entry(gt0, 3)));
        let (at, what) = corrupt_what(open_bytes(b).unwrap_err());
        assert_eq!(at, gt0 + 9 * 4, "{what}");
        assert!(
            what.contains("grain 9") && what.contains("grain 3 "),
            "{what}"
        );
        // Across tables: grain 4100 (in GT 1) names grain 2's sector.
        let mut b = good.clone();
        put(&mut b, entry(gt1, 4), le_u32(&good, entry(gt0, 2)));
        let (at, what) = corrupt_what(open_bytes(b).unwrap_err());
        assert_eq!(at, gt1 + 4 * 4, "{what}");

        // (b) A grain inside a grain table (its last sector).
        let mut b = good.clone();
        put(
            &mut b,
            entry(gt0, 5),
            ((gt1 + GT_BYTES) / SECTOR - 1) as u32,
        );
        let (at, what) = corrupt_what(open_bytes(b).unwrap_err());
        assert_eq!(at, gt0 + 5 * 4, "{what}");
        assert!(what.contains("grain table 1"), "{what}");

        // (c) Two directory entries naming the same table, and overlapping tables.
        for shift in [0, 1] {
            let mut b = good.clone();
            put(&mut b, 2052, (gt0 / SECTOR + shift) as u32);
            let (at, what) = corrupt_what(open_bytes(b).unwrap_err());
            assert_eq!(at, 2052, "shift {shift}: {what}");
            assert!(what.contains("grain table 0"), "{what}");
        }
    }

    #[test]
    fn partially_overlapping_grains_are_refused() {
        // Grain size 16: grain 1 starting one sector into grain 0 shares 15 sectors with it.
        let good = image(4096 * 16, 16, &[data(0, 32)]);
        let gt = u64::from(le_u32(&good, 2048)) * SECTOR;
        let mut b = good.clone();
        put(&mut b, (gt + 4) as usize, le_u32(&good, gt as usize) + 1);
        let (files, id) = table(b);
        let (at, what) = corrupt_what(open(&files, id).unwrap_err());
        assert_eq!(at, gt + 4, "{what}");
        assert!(what.contains("grain 0 "), "{what}");
        // Grains that merely touch are fine (that is what the writer does).
        let (files, id) = table(good);
        open(&files, id).unwrap();
    }

    #[test]
    fn map_is_idempotent_after_the_check() {
        // The claims are made once at open: mapping the same grain again and again, in pieces,
        // as the chain collapse does, never trips them.
        let (files, id) = table(image(4096 * 8, 8, &[data(0, 64)]));
        let mut ext = open(&files, id).unwrap();
        for _ in 0..3 {
            for lba in 0..16 {
                ext.map(lba, 1).unwrap();
            }
            ext.map(0, 64).unwrap();
        }
    }

    #[test]
    fn gte_1_is_zero_not_sector_1() {
        // Fill header sector 1 with junk: ESX semantics say GTE 1 is a zero grain, so the junk
        // must never be mapped as data.
        let mut b = image(4096, 1, &[zero(7, 1)]);
        b[512..1024].fill(b'x');
        let (files, id) = table(b);
        let mut ext = open(&files, id).unwrap();
        assert_eq!(
            ext.map(7, 1).unwrap(),
            Run {
                sectors: 1,
                source: Source::Zero
            }
        );
    }

    #[test]
    fn unclean_shutdown_warns() {
        let mut b = image(4096, 1, &[]);
        put(&mut b, 1648, 1);
        let (files, id) = table(b);
        let ext = open(&files, id).unwrap();
        assert_eq!(ext.warnings().len(), 1);
        assert!(ext.warnings()[0].contains("uncleanShutdown"));
    }

    #[test]
    fn map_outside_extent_is_an_error() {
        let (files, id) = table(image(100, 1, &[]));
        let mut ext = open(&files, id).unwrap();
        assert!(ext.map(100, 1).is_err());
        assert!(ext.map(0, 0).is_err());
    }

    #[test]
    fn mapping_survives_mutations() {
        let good = image(
            3 * 4096 + 5,
            1,
            &[data(0, 40), zero(4096, 9), data(8200, 3)],
        );
        map_end_to_end("walk.vmdk", &good, open);
        map_end_to_end("walk.vmdk", &[], open);
        map_end_to_end("walk.vmdk", b"COWD", open);
        // Flip bytes in the header fields, the GD and the first table.
        let gt = le_u32(&good, 2048) as usize * 512;
        for at in (0..32).chain(2048..2060).chain(gt..gt + 64) {
            for v in [0x00, 0x01, 0x80, 0xff] {
                let mut b = good.clone();
                b[at] = v;
                map_end_to_end("walk.vmdk", &b, open);
            }
        }
    }
}
