//! Hosted sparse extents ("KDMV", VMDK4): monolithicSparse, the `-sNNN` parts of
//! twoGbMaxExtentSparse, and streamOptimized in both qemu's and VMware's layout.
//!
//! Where it sits: the input stage. [`SparseExtent`] turns extent-relative sectors into
//! [`Source`]s (file offsets, compressed-grain records, zeros, or "not here") for the chain
//! collapse; it never reads grain data itself. The normative description of the bytes is
//! `formats/SPARSE.md`; section numbers below (§n) refer to it.
//!
//! Invariants established by [`SparseExtent::open`] and relied on by [`ExtentMap::map`]:
//! * the header (or, for `gdOffset == GD_AT_END`, the footer) passed every check in §5, so the
//!   geometry below is small and overflow-free: `grainSize <= 2048`, `numGTEsPerGT <= 512`,
//!   at most [`MAX_GD_ENTRIES`] directory entries, all inside the file;
//! * the grain directory is in memory and every entry is 0, the zero-GT marker 1, or a sector
//!   whose whole grain table lies inside the file;
//! * every grain table is checked entry by entry when it is loaded into the cache, before any of
//!   its entries is used, so `map` only ever hands out offsets that lie inside the file.
//! * no two grain tables, no grain and table, and no two grains share bytes of the file: `open`
//!   walks every table once to prove it (§5.1, `SparseExtent::check_storage`); a compressed
//!   record's full extent is checked against the others' starts when it is mapped.

use std::sync::Arc;

use super::claims::{meta_overlap_error, round_up, Meta, MetaRange, MetaRanges, UnitBitmap};
use super::read::MAX_GRAIN_RECORD_BYTES;
use super::source::{le_u32, le_u64};
use super::{ByteSource, ExtentMap, FileId, FileTable, Run, Source, SECTOR};
use crate::error::{Error, Result};

/// "KDMV" read as a little-endian u32.
const KDMV_MAGIC: u32 = 0x564D_444B;
/// Size of the header and of the footer (one sector).
const HEADER_BYTES: usize = 512;
/// `gdOffset` value meaning "the grain directory is found through the footer" (VMware's
/// streamOptimized layout).
pub const GD_AT_END: u64 = u64::MAX;
/// Newest header version understood. Version 3 is what streamOptimized writers and hosted disks
/// with persistent change tracking use; qemu and open-vmdk both refuse anything newer.
const MAX_VERSION: u32 = 3;

/// flags bit 0: the four newline-detection bytes are valid and must be checked.
pub(crate) const FLAG_NEWLINE_CHECK: u32 = 1 << 0;
/// flags bit 1: a redundant grain directory at rgdOffset. It is compatible and not used for
/// reading (the primary directory is authoritative, and recovering from the copy is out of
/// scope); only its place in the file is claimed, so that no grain or table may sit on it.
const FLAG_RGD: u32 = 1 << 1;
/// flags bit 2: a grain table entry of 1 is an explicit zero grain.
pub(crate) const FLAG_ZEROED_GRAIN: u32 = 1 << 2;
/// flags bit 16: grains are compressed with compressAlgorithm.
pub(crate) const FLAG_COMPRESSED: u32 = 1 << 16;
/// flags bit 17: grains carry a 12-byte marker and metadata is preceded by marker sectors.
pub(crate) const FLAG_MARKERS: u32 = 1 << 17;
/// The high 16 flag bits are "incompatible": a reader that does not know one must refuse the
/// file. These are the ones vdar knows.
const KNOWN_INCOMPATIBLE_FLAGS: u32 = FLAG_COMPRESSED | FLAG_MARKERS;

/// compressAlgorithm: no compression.
pub(crate) const COMPRESSION_NONE: u16 = 0;
/// compressAlgorithm: "deflate", stored as a zlib (RFC 1950) stream.
pub(crate) const COMPRESSION_DEFLATE: u16 = 1;

/// Largest grain accepted, in sectors (1 MiB). VMware and qemu write 128; the limit keeps one
/// inflated grain, and [`MAX_GRAIN_RECORD_BYTES`], small.
pub const MAX_GRAIN_SECTORS: u64 = 2048;
/// Largest numGTEsPerGT accepted. VMware's spec fixes 512 and qemu's vmdk driver refuses larger
/// values ("L2 table size too big"), so a file with more could not have been read back by qemu,
/// our oracle, and is treated as corrupt.
pub const MAX_GTES_PER_GT: u32 = 512;
/// Largest grain directory accepted (64 MiB of entries). With the default geometry (32 MiB per
/// grain table) this covers 512 TiB, far beyond VMware's 62 TB disk limit; it only exists so that
/// an absurd capacity cannot make `open` allocate gigabytes.
pub const MAX_GD_ENTRIES: u64 = 1 << 24;
/// Largest embedded descriptor returned. Real ones are 10-20 sectors.
pub const MAX_DESCRIPTOR_BYTES: u64 = 2 << 20;

/// Grain tables kept in memory. `map` walks sectors in order, so it needs the current table and
/// at most the next one when a run crosses a table boundary; four slots also absorb a caller that
/// alternates between two nearby places.
const GT_CACHE_SLOTS: usize = 4;

/// The 512-byte KDMV header (also the layout of the streamOptimized footer). Field names follow
/// VMware's spec in snake_case; offsets are in `formats/SPARSE.md` §2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SparseExtentHeader {
    /// magicNumber, "KDMV".
    pub magic: u32,
    /// version, 1..=3.
    pub version: u32,
    /// flags, see the `FLAG_*` constants.
    pub flags: u32,
    /// capacity, in sectors.
    pub capacity: u64,
    /// grainSize, in sectors.
    pub grain_size: u64,
    /// descriptorOffset, in sectors; 0 when there is no embedded descriptor.
    pub descriptor_offset: u64,
    /// descriptorSize, in sectors.
    pub descriptor_size: u64,
    /// numGTEsPerGT.
    pub num_gtes_per_gt: u32,
    /// rgdOffset, in sectors.
    pub rgd_offset: u64,
    /// gdOffset, in sectors, or [`GD_AT_END`].
    pub gd_offset: u64,
    /// overHead, in sectors: everything below is metadata.
    pub over_head: u64,
    /// uncleanShutdown.
    pub unclean_shutdown: u8,
    /// singleEndLineChar, nonEndLineChar, doubleEndLineChar1, doubleEndLineChar2.
    pub newline_check: [u8; 4],
    /// compressAlgorithm.
    pub compress_algorithm: u16,
}

/// The newline-detection bytes as written: `\n`, ` `, `\r`, `\n`.
pub(crate) const NEWLINE_CHECK_BYTES: [u8; 4] = [0x0A, 0x20, 0x0D, 0x0A];

impl SparseExtentHeader {
    /// Decodes the fixed fields. Several are unaligned (the struct is packed on disk); no
    /// validation happens here, see [`check_header`].
    pub fn decode(b: &[u8; HEADER_BYTES]) -> Self {
        SparseExtentHeader {
            magic: le_u32(b, 0),
            version: le_u32(b, 4),
            flags: le_u32(b, 8),
            capacity: le_u64(b, 12),
            grain_size: le_u64(b, 20),
            descriptor_offset: le_u64(b, 28),
            descriptor_size: le_u64(b, 36),
            num_gtes_per_gt: le_u32(b, 44),
            rgd_offset: le_u64(b, 48),
            gd_offset: le_u64(b, 56),
            over_head: le_u64(b, 64),
            unclean_shutdown: b[72],
            newline_check: [b[73], b[74], b[75], b[76]],
            compress_algorithm: u16::from_le_bytes([b[77], b[78]]),
        }
    }

    /// Encodes the header into one sector, padding with zeros (fixture writer, tests).
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..4].copy_from_slice(&self.magic.to_le_bytes());
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..20].copy_from_slice(&self.capacity.to_le_bytes());
        b[20..28].copy_from_slice(&self.grain_size.to_le_bytes());
        b[28..36].copy_from_slice(&self.descriptor_offset.to_le_bytes());
        b[36..44].copy_from_slice(&self.descriptor_size.to_le_bytes());
        b[44..48].copy_from_slice(&self.num_gtes_per_gt.to_le_bytes());
        b[48..56].copy_from_slice(&self.rgd_offset.to_le_bytes());
        b[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        b[64..72].copy_from_slice(&self.over_head.to_le_bytes());
        b[72] = self.unclean_shutdown;
        b[73..77].copy_from_slice(&self.newline_check);
        b[77..79].copy_from_slice(&self.compress_algorithm.to_le_bytes());
        b
    }
}

/// Metadata marker types (§4). Type 4 ("progress") exists in vSphere output but never appears
/// where this reader looks (the last three sectors), so it is not named here.
const MARKER_EOS: u32 = 0;
/// Grain table marker.
pub(crate) const MARKER_GT: u32 = 1;
/// Grain directory marker.
pub(crate) const MARKER_GD: u32 = 2;
/// Footer marker.
pub(crate) const MARKER_FOOTER: u32 = 3;

/// A metadata marker sector: `val` u64, `size` u32 (always 0), `type` u32, 496 zero bytes.
pub(crate) fn encode_marker(val: u64, kind: u32) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[0..8].copy_from_slice(&val.to_le_bytes());
    b[12..16].copy_from_slice(&kind.to_le_bytes());
    b
}

/// Most bytes one deflate stored block holds: its LEN field is a u16 (RFC 1951 §3.2.4).
const STORED_BLOCK_MAX: usize = 65535;

/// The grain rule (§4.3): the largest zlib stream vdar writes for a grain of `n` bytes, which
/// is `n` in stored blocks: the 2-byte zlib header, 5 bytes of block header per 65,535 bytes
/// or part of them (at least one block), the bytes themselves and the 4-byte Adler-32. 65,552
/// for a 64 KiB grain.
pub(crate) const fn max_grain_zlib_bytes(n: u64) -> u64 {
    let blocks = if n == 0 {
        1
    } else {
        n.div_ceil(STORED_BLOCK_MAX as u64)
    };
    n + 5 * blocks + 6
}

/// Adler-32 (RFC 1950 §8.2), the checksum that ends a zlib stream.
fn adler32(data: &[u8]) -> u32 {
    // 5552 is the most bytes after which `b` still fits in a u32 before the modulo (zlib's
    // NMAX).
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// Appends `data` to `out` as a zlib stream of stored (uncompressed) blocks of at most
/// 65,535 bytes: exactly [`max_grain_zlib_bytes`] bytes.
fn push_zlib_stored(out: &mut Vec<u8>, data: &[u8]) {
    // CMF 0x78: deflate with a 32 KiB window. FLG 0x01: FLEVEL 0 ("fastest"), no dictionary,
    // and FCHECK making 0x7801 a multiple of 31.
    out.extend_from_slice(&[0x78, 0x01]);
    let mut blocks = data.chunks(STORED_BLOCK_MAX).peekable();
    if blocks.peek().is_none() {
        // An empty stream still needs one (final, empty) block.
        out.extend_from_slice(&[0x01, 0x00, 0x00, 0xFF, 0xFF]);
    }
    while let Some(block) = blocks.next() {
        // BFINAL in bit 0, BTYPE 00 (stored) in bits 1-2; the rest of the byte is padding,
        // since a stored block's LEN starts on a byte boundary.
        out.push(u8::from(blocks.peek().is_none()));
        let len = u16::try_from(block.len()).expect("invariant: chunks of at most 65535");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
}

/// A grain record with markers as vdar's writers write it (§4.2): `lba`, size, and `data` as
/// a zlib stream deflated at `level`, or in stored blocks when deflate's output would be
/// larger (the grain rule, §4.3); zero-padded to a sector.
pub(crate) fn encode_grain_record(lba: u64, data: &[u8], level: u32) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut v = Vec::with_capacity(12 + max_grain_zlib_bytes(data.len() as u64) as usize);
    v.extend_from_slice(&lba.to_le_bytes());
    v.extend_from_slice(&[0u8; 4]);
    let mut z = flate2::write::ZlibEncoder::new(v, flate2::Compression::new(level));
    z.write_all(data)?;
    let mut v = z.finish()?;
    if (v.len() - 12) as u64 > max_grain_zlib_bytes(data.len() as u64) {
        v.truncate(12);
        push_zlib_stored(&mut v, data);
    }
    let size = u32::try_from(v.len() - 12).map_err(std::io::Error::other)?;
    v[8..12].copy_from_slice(&size.to_le_bytes());
    v.resize((v.len() as u64).next_multiple_of(SECTOR) as usize, 0);
    Ok(v)
}

/// What one grain (or a whole grain table's range) holds, as found by [`SparseExtent::lookup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grain {
    /// GDE 0 or GTE 0.
    Unallocated,
    /// GTE 1 (or GDE 1) with the zeroed-grain flag.
    Zero,
    /// Uncompressed: the byte offset in the file of the looked-up sector.
    Data(u64),
    /// Compressed: byte offset of the grain record, and the GTE's own byte offset (for errors).
    Record { record: u64, gte_at: u64 },
}

/// One cached grain table.
#[derive(Debug)]
struct GtSlot {
    /// Index into the grain directory, or `u64::MAX` when the slot is empty.
    gd_index: u64,
    /// numGTEsPerGT decoded entries; the buffer is reused across loads.
    entries: Vec<u32>,
}

/// A hosted sparse ("KDMV") extent file, opened and validated.
///
/// ```no_run
/// use std::sync::Arc;
/// use vdar::input::{ExtentMap, FileTable, LocalFile};
/// use vdar::input::sparse::SparseExtent;
///
/// let mut files = FileTable::default();
/// let id = files.add(Arc::new(LocalFile::open("disk.vmdk".as_ref())?));
/// let mut extent = SparseExtent::open(&files, id)?;
/// let first = extent.map(0, extent.sectors())?;
/// println!("{} sectors of {:?}", first.sectors, first.source);
/// # Ok::<(), vdar::Error>(())
/// ```
#[derive(Debug)]
pub struct SparseExtent {
    src: Arc<dyn ByteSource>,
    file: FileId,
    /// The header in effect: the footer for `gdOffset == GD_AT_END`, otherwise sector 0.
    header: SparseExtentHeader,
    /// grainSize in sectors (a power of two, <= [`MAX_GRAIN_SECTORS`]).
    grain: u64,
    /// numGTEsPerGT.
    gtes: u64,
    /// Sectors covered by one grain table: `grain * gtes` (<= 2^20).
    gt_coverage: u64,
    /// Grains in the extent, the last one possibly partial.
    grains: u64,
    /// The grain directory, loaded once.
    gd: Vec<u32>,
    compressed: bool,
    markers: bool,
    zeroed_grain: bool,
    cache: Vec<GtSlot>,
    /// Slot that answered last: checked first, since `map` walks in order.
    last_slot: usize,
    /// Round-robin victim for the next load.
    next_victim: usize,
    /// Reused read buffer for one grain table.
    gt_bytes: Vec<u8>,
    /// Record offset whose header (lba, size) was checked last, so that mapping a grain in
    /// several pieces reads its 12-byte header once.
    checked_record: Option<u64>,
    /// Header, descriptor, directories, grain tables and footer: what no grain may overlap.
    meta: MetaRanges,
    /// Compressed files: one bit per sector of the file, set where a grain table entry points
    /// at a record. `check_record` looks for another record starting inside the one it reads.
    record_starts: Option<UnitBitmap>,
    warnings: Vec<String>,
}

/// One allocated grain as seen by [`SparseExtent::walk_grains`].
#[derive(Clone, Copy, Debug)]
struct GrainAt {
    /// Grain index in the extent.
    grain: u64,
    /// Byte offset of its grain table entry.
    gte_at: u64,
    /// Byte offset of the grain (or of its compressed record).
    start: u64,
}

impl SparseExtent {
    /// Opens the KDMV extent `file` of `files`: reads and checks the header (and for VMware's
    /// streamOptimized layout the footer), and loads the grain directory.
    pub fn open(files: &FileTable, file: FileId) -> Result<SparseExtent> {
        let src = Arc::clone(files.get(file));
        let path = src.path().to_path_buf();
        let len = src.len();
        if len < HEADER_BYTES as u64 {
            return Err(Error::corrupt(
                &path,
                0,
                format!("file of {len} bytes is too short for a 512-byte KDMV header"),
            ));
        }
        let mut sector = [0u8; HEADER_BYTES];
        src.read_exact_at(&mut sector, 0)?;
        let first = SparseExtentHeader::decode(&sector);
        check_header(&*src, &first, 0)?;

        let mut warnings = Vec::new();
        if first.unclean_shutdown != 0 {
            warnings.push(format!(
                "{}: uncleanShutdown is set: the writer did not close this extent cleanly, \
                 recently written grains may be missing",
                path.display()
            ));
        }

        let header = if first.gd_offset == GD_AT_END {
            read_footer(&*src, &first)?
        } else {
            first
        };

        let grain = header.grain_size;
        let gtes = u64::from(header.num_gtes_per_gt);
        let gt_coverage = grain * gtes; // <= 2048 * 512, checked by check_header
        let capacity = header.capacity;
        let grains = capacity.div_ceil(grain);
        let gd_entries = capacity.div_ceil(gt_coverage);
        if gd_entries > MAX_GD_ENTRIES {
            return Err(Error::corrupt(
                &path,
                12,
                format!(
                    "capacity {capacity} sectors needs {gd_entries} grain directory entries \
                     > {MAX_GD_ENTRIES}"
                ),
            ));
        }
        // The directory must lie inside the file before it is allocated: this also bounds the
        // allocation by the file size.
        let gd_at = header.gd_offset.checked_mul(SECTOR);
        let gd_end = gd_at.and_then(|a| a.checked_add(gd_entries * 4));
        let (gd_at, _) = match (gd_at, gd_end) {
            (Some(a), Some(e)) if header.gd_offset >= 1 && e <= len => (a, e),
            _ => {
                return Err(Error::corrupt(
                    &path,
                    56,
                    format!(
                        "grain directory at sector {:#x} with {gd_entries} entries does not fit \
                         in the file ({len} bytes) after the header",
                        header.gd_offset
                    ),
                ))
            }
        };
        let mut gd_bytes = vec![0u8; (gd_entries * 4) as usize];
        src.read_exact_at(&mut gd_bytes, gd_at)?;
        let gd: Vec<u32> = gd_bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();

        let zeroed_grain = header.flags & FLAG_ZEROED_GRAIN != 0;
        let gt_bytes_len = gtes * 4;
        for (i, &gde) in gd.iter().enumerate() {
            if gde == 0 || (gde == 1 && zeroed_grain) {
                continue;
            }
            let gt_at = u64::from(gde) * SECTOR;
            if gt_at + gt_bytes_len > len {
                return Err(Error::corrupt(
                    &path,
                    gd_at + 4 * i as u64,
                    format!(
                        "grain directory entry {i}: grain table at sector {gde:#x} runs past the \
                         end of the file ({len} bytes)"
                    ),
                ));
            }
        }

        let compressed = header.flags & FLAG_COMPRESSED != 0;
        let cache = (0..GT_CACHE_SLOTS)
            .map(|_| GtSlot {
                gd_index: u64::MAX,
                entries: Vec::with_capacity(gtes as usize),
            })
            .collect();
        let mut ext = SparseExtent {
            src,
            file,
            header,
            grain,
            gtes,
            gt_coverage,
            grains,
            gd,
            compressed,
            markers: header.flags & FLAG_MARKERS != 0,
            zeroed_grain,
            cache,
            last_slot: 0,
            next_victim: 0,
            gt_bytes: vec![0u8; gt_bytes_len as usize],
            checked_record: None,
            meta: MetaRanges::default(),
            record_starts: None,
            warnings,
        };
        ext.check_storage(gd_at, first.gd_offset == GD_AT_END)?;
        Ok(ext)
    }

    /// Proves at open that no two allocated things share storage (formats/SPARSE.md §5.1):
    /// grain tables against each other and the fixed metadata (header, descriptor, GD, RGD,
    /// footer), grains against all of those, and grains against each other.
    ///
    /// Cost: one extra read of every grain table (2 KiB per 32 MiB of capacity by default) and,
    /// for uncompressed grains, one bit per grain-sized unit of the file, dropped when `open`
    /// returns (4 MiB for a 2 TiB file of 64 KiB grains). Grains are normally aligned to their
    /// size in the file; when one is not, the pass restarts with one bit per sector (capped by
    /// [`super::claims::MAX_CLAIM_BITMAP_BYTES`], 1 TiB of file).
    ///
    /// Compressed records have a length only their 12-byte header knows, and reading every
    /// header at open would mean one random read per grain of the file. So the pass only marks
    /// where each record starts (one bit per sector, kept), which catches two entries naming the
    /// same record; [`Self::check_record`], which reads the header anyway when the grain is
    /// mapped, then checks that no other record starts inside this one and that it overlaps no
    /// metadata. Grains never mapped are never read, so they cannot return wrong data.
    fn check_storage(&mut self, gd_at: u64, at_end: bool) -> Result<()> {
        let len = self.src.len();
        let h = self.header;
        let gd_len = self.gd.len() as u64 * 4;
        let mut ranges = vec![MetaRange {
            start: 0,
            end: SECTOR,
            what: Meta::Header,
        }];
        // Optional areas are claimed only where they lie in the file: their placement is not
        // otherwise checked, and an area that cannot be read cannot be mistaken for a grain.
        let mut optional = |offset: u64, bytes: u64, what: Meta| {
            let start = offset.saturating_mul(SECTOR);
            let end = round_up(start.saturating_add(bytes), SECTOR);
            if offset != 0 && end <= len {
                ranges.push(MetaRange { start, end, what });
            }
        };
        optional(
            h.descriptor_offset,
            h.descriptor_size.saturating_mul(SECTOR),
            Meta::Descriptor,
        );
        if h.flags & FLAG_RGD != 0 {
            optional(h.rgd_offset, gd_len, Meta::Rgd);
        }
        ranges.push(MetaRange {
            start: gd_at,
            end: round_up(gd_at + gd_len, SECTOR),
            what: Meta::Gd,
        });
        if at_end {
            ranges.push(MetaRange {
                start: len - 3 * SECTOR,
                end: len,
                what: Meta::Footer,
            });
        }
        let gt_len = round_up(self.gtes * 4, SECTOR);
        for (i, &gde) in self.gd.iter().enumerate() {
            if gde == 0 || (gde == 1 && self.zeroed_grain) {
                continue;
            }
            let start = u64::from(gde) * SECTOR;
            ranges.push(MetaRange {
                start,
                end: start + gt_len,
                what: Meta::Gt {
                    index: i as u64,
                    entry_at: gd_at + 4 * i as u64,
                },
            });
        }
        self.meta =
            MetaRanges::new(ranges).map_err(|(a, b)| meta_overlap_error(self.src.path(), a, b))?;

        let mut buf = std::mem::take(&mut self.gt_bytes);
        let result = if self.compressed {
            self.claim_records(&mut buf)
        } else {
            // Grain-sized units while every grain is aligned to its size, else sectors.
            let grain_shift = (self.grain * SECTOR).trailing_zeros();
            match self.claim_grains(&mut buf, grain_shift) {
                Ok(false) => self
                    .claim_grains(&mut buf, SECTOR.trailing_zeros())
                    .map(|_| ()),
                other => other.map(|_| ()),
            }
        };
        self.gt_bytes = buf;
        result
    }

    /// The uncompressed half of [`Self::check_storage`], with units of `1 << shift` bytes.
    /// Returns false, having checked nothing, when a grain is not aligned to the unit.
    fn claim_grains(&self, buf: &mut [u8], shift: u32) -> Result<bool> {
        let path = self.src.path();
        let unit = 1u64 << shift;
        let mut taken = UnitBitmap::new(path, self.src.len().div_ceil(unit), unit)?;
        let span = |g: &GrainAt| {
            let end = g.start + self.grain_sectors_at(g.grain) * SECTOR;
            (end, g.start >> shift, end.div_ceil(unit))
        };
        let mut aligned = true;
        let mut conflict = None;
        self.walk_grains(buf, |g| {
            if g.start % unit != 0 {
                aligned = false;
                return Ok(false);
            }
            let (end, first, last) = span(&g);
            if let Some(m) = self.meta.find(g.start, end) {
                return Err(self.overlap(g, end, &m.what.to_string(), m.start, m.end));
            }
            if let Some(u) = taken.claim(first, last) {
                conflict = Some((g, u));
                return Ok(false);
            }
            Ok(true)
        })?;
        if !aligned {
            return Ok(false);
        }
        if let Some((g, u)) = conflict {
            // The bitmap does not know the owner: walk again to the first grain on unit u.
            let o = self.find_grain(buf, |o| {
                let (_, first, last) = span(o);
                first <= u && u < last
            })?;
            let (end, _, _) = span(&g);
            let (o_end, _, _) = span(&o);
            return Err(self.overlap(
                g,
                end,
                &format!("grain {} (entry at byte {:#x})", o.grain, o.gte_at),
                o.start,
                o_end,
            ));
        }
        Ok(true)
    }

    /// The compressed half of [`Self::check_storage`]: marks record starts, refusing two entries
    /// naming one record and a record starting inside metadata.
    fn claim_records(&mut self, buf: &mut [u8]) -> Result<()> {
        let path = self.src.path();
        let mut starts = UnitBitmap::new(path, self.src.len().div_ceil(SECTOR), SECTOR)?;
        let mut conflict = None;
        self.walk_grains(buf, |g| {
            if let Some(m) = self.meta.find(g.start, g.start + SECTOR) {
                return Err(self.overlap(g, g.start + SECTOR, &m.what.to_string(), m.start, m.end));
            }
            let s = g.start / SECTOR;
            if starts.claim(s, s + 1).is_some() {
                conflict = Some(g);
                return Ok(false);
            }
            Ok(true)
        })?;
        if let Some(g) = conflict {
            let o = self.find_grain(buf, |o| o.start == g.start)?;
            return Err(Error::corrupt(
                path,
                g.gte_at,
                format!(
                    "grain table entry for grain {}: grain record at byte {:#x} is also the                      record of grain {} (entry at byte {:#x})",
                    g.grain, g.start, o.grain, o.gte_at
                ),
            ));
        }
        self.record_starts = Some(starts);
        Ok(())
    }

    /// "grain N at bytes a..b overlaps WHAT at bytes c..d", at grain N's table entry.
    fn overlap(&self, g: GrainAt, end: u64, what: &str, start: u64, stop: u64) -> Error {
        Error::corrupt(
            self.src.path(),
            g.gte_at,
            format!(
                "grain table entry for grain {}: grain at bytes {:#x}..{end:#x} overlaps {what} at                  bytes {start:#x}..{stop:#x}",
                g.grain, g.start
            ),
        )
    }

    /// The first grain, in directory order, for which `pred` holds (the error path of the
    /// claims: the bitmap says a unit is taken, this says by whom).
    fn find_grain(&self, buf: &mut [u8], pred: impl Fn(&GrainAt) -> bool) -> Result<GrainAt> {
        let mut found = None;
        self.walk_grains(buf, |o| {
            if pred(&o) {
                found = Some(o);
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(found.expect("invariant: the unit was claimed by an earlier grain"))
    }

    /// Calls `f` for every allocated grain (not 0, not the zero marker) inside the capacity whose
    /// entry passes the checks of [`Self::gt_slot`], in directory order, until `f` returns false.
    /// Entries failing them are skipped: `map` reports them at the lba that reaches them. Reads
    /// each grain table into `buf`; allocates nothing.
    fn walk_grains(
        &self,
        buf: &mut [u8],
        mut f: impl FnMut(GrainAt) -> Result<bool>,
    ) -> Result<()> {
        let len = self.src.len();
        let floor = self.header.over_head.max(1);
        for (gd_index, &gde) in self.gd.iter().enumerate() {
            if gde == 0 || (gde == 1 && self.zeroed_grain) {
                continue;
            }
            let gt_at = u64::from(gde) * SECTOR;
            self.src.read_exact_at(buf, gt_at)?;
            let first_grain = gd_index as u64 * self.gtes;
            let used = (self.grains - first_grain).min(self.gtes) as usize;
            for (i, c) in buf.chunks_exact(4).take(used).enumerate() {
                let gte = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                if gte == 0 || (gte == 1 && self.zeroed_grain) || u64::from(gte) < floor {
                    continue;
                }
                let grain = first_grain + i as u64;
                let start = u64::from(gte) * SECTOR;
                if start + self.entry_needs(grain) > len {
                    continue;
                }
                let g = GrainAt {
                    grain,
                    gte_at: gt_at + 4 * i as u64,
                    start,
                };
                if !f(g)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Bytes a grain table entry for `grain` needs inside the file: the grain's in-capacity part
    /// when uncompressed, the record header when compressed (its size is checked when mapped).
    fn entry_needs(&self, grain: u64) -> u64 {
        match (self.compressed, self.markers) {
            (true, true) => 12,
            (true, false) => 4,
            (false, _) => self.grain_sectors_at(grain) * SECTOR,
        }
    }

    /// The embedded descriptor (monolithicSparse, streamOptimized), cut at the first NUL, or
    /// `None` when descriptorOffset is 0. Split extents reserve the area but leave it all NUL,
    /// which yields `Some("")`. Bytes that are not UTF-8 (a descriptor may declare another
    /// `encoding`) are replaced with U+FFFD rather than refused: the descriptor parser decides.
    pub fn embedded_descriptor(&self) -> Result<Option<String>> {
        let h = &self.header;
        if h.descriptor_offset == 0 {
            return Ok(None);
        }
        let path = self.src.path();
        let size = h.descriptor_size.saturating_mul(SECTOR);
        if size > MAX_DESCRIPTOR_BYTES {
            return Err(Error::corrupt(
                path,
                36,
                format!(
                    "descriptorSize {} sectors > {} sectors",
                    h.descriptor_size,
                    MAX_DESCRIPTOR_BYTES / SECTOR
                ),
            ));
        }
        let at = h.descriptor_offset.checked_mul(SECTOR);
        let Some(at) = at.filter(|a| a.checked_add(size).is_some_and(|e| e <= self.src.len()))
        else {
            return Err(Error::corrupt(
                path,
                28,
                format!(
                    "embedded descriptor at sector {:#x} ({} sectors) runs past the end of the \
                     file ({} bytes)",
                    h.descriptor_offset,
                    h.descriptor_size,
                    self.src.len()
                ),
            ));
        };
        let mut text = vec![0u8; size as usize];
        self.src.read_exact_at(&mut text, at)?;
        if let Some(nul) = text.iter().position(|&b| b == 0) {
            text.truncate(nul);
        }
        Ok(Some(String::from_utf8_lossy(&text).into_owned()))
    }

    /// capacity: the extent's size in sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.header.capacity
    }

    /// Whether grains are compressed records (flag bit 16), as in every streamOptimized file.
    pub fn is_stream_optimized(&self) -> bool {
        self.compressed
    }

    /// The header version (1..=3).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// Finds what holds `sector` (< capacity). Returns the answer and the sector where it stops
    /// holding without looking further: the end of the grain, or of the whole grain table's
    /// range when the directory entry already decides. Not clipped to the capacity.
    fn lookup(&mut self, sector: u64) -> Result<(Grain, u64)> {
        let gd_index = sector / self.gt_coverage;
        let gde = *self
            .gd
            .get(gd_index as usize)
            .expect("invariant: sector < capacity, and the GD covers the capacity");
        if gde == 0 || (gde == 1 && self.zeroed_grain) {
            // A whole grain table's range answered by one directory entry. GDE 1 as "all zero"
            // follows libyal's description of VMware; sector 1 can never hold a real grain table
            // when it holds the header's neighbour, the descriptor (§6.2).
            let kind = if gde == 0 {
                Grain::Unallocated
            } else {
                Grain::Zero
            };
            return Ok((kind, (gd_index + 1) * self.gt_coverage));
        }
        let slot = self.gt_slot(gd_index, gde)?;
        let grain_index = sector / self.grain;
        let gt_index = grain_index % self.gtes;
        let gte = self.cache[slot].entries[gt_index as usize];
        let grain_start = grain_index * self.grain;
        let end = grain_start + self.grain;
        let kind = match gte {
            0 => Grain::Unallocated,
            1 if self.zeroed_grain => Grain::Zero,
            g if self.compressed => Grain::Record {
                record: u64::from(g) * SECTOR,
                gte_at: u64::from(gde) * SECTOR + 4 * gt_index,
            },
            g => Grain::Data(u64::from(g) * SECTOR + (sector - grain_start) * SECTOR),
        };
        Ok((kind, end))
    }

    /// The cache slot holding grain table `gd_index` (at sector `gde`), loading and checking it
    /// if needed. Loads reuse the slot's buffers: no allocation after `open`.
    fn gt_slot(&mut self, gd_index: u64, gde: u32) -> Result<usize> {
        if self.cache[self.last_slot].gd_index == gd_index {
            return Ok(self.last_slot);
        }
        if let Some(i) = self.cache.iter().position(|s| s.gd_index == gd_index) {
            self.last_slot = i;
            return Ok(i);
        }
        let slot = self.next_victim;
        self.next_victim = (slot + 1) % GT_CACHE_SLOTS;
        // Mark the slot empty first, so a failed load never leaves stale entries labelled with
        // the new index.
        self.cache[slot].gd_index = u64::MAX;
        let gt_at = u64::from(gde) * SECTOR;
        self.src.read_exact_at(&mut self.gt_bytes, gt_at)?;
        let entries = &mut self.cache[slot].entries;
        entries.clear();
        entries.extend(
            self.gt_bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        // Check the entries that describe grains of this extent. The last table may extend past
        // the capacity; those entries are never used, so whatever they hold is ignored (§6.3).
        let first_grain = gd_index * self.gtes;
        let used = (self.grains - first_grain).min(self.gtes) as usize;
        let len = self.src.len();
        // No grain may start inside the header or the metadata below overHead.
        let floor = self.header.over_head.max(1);
        for (i, &gte) in entries[..used].iter().enumerate() {
            if gte == 0 || (gte == 1 && self.zeroed_grain) {
                continue;
            }
            let gte_at = gt_at + 4 * i as u64;
            let at = u64::from(gte) * SECTOR;
            let grain_index = first_grain + i as u64;
            // Uncompressed: the grain's in-capacity part must be in the file. Compressed: its
            // record header must be; the record's size is checked when the grain is mapped.
            let need = if self.compressed {
                if self.markers {
                    12
                } else {
                    4
                }
            } else {
                // As grain_sectors_at, inlined: `entries` borrows the cache mutably.
                (self.header.capacity - grain_index * self.grain).min(self.grain) * SECTOR
            };
            if u64::from(gte) < floor {
                return Err(Error::corrupt(
                    self.src.path(),
                    gte_at,
                    format!(
                        "grain table {gd_index} entry {i}: grain at sector {gte:#x} lies inside \
                         the header or metadata (overHead {floor} sectors)"
                    ),
                ));
            }
            if at + need > len {
                return Err(Error::corrupt(
                    self.src.path(),
                    gte_at,
                    format!(
                        "grain table {gd_index} entry {i}: grain at sector {gte:#x} runs past \
                         the end of the file ({len} bytes)"
                    ),
                ));
            }
        }
        self.cache[slot].gd_index = gd_index;
        self.last_slot = slot;
        Ok(slot)
    }

    /// Sectors of grain `grain_index` inside the capacity: a full grain except for the last.
    fn grain_sectors_at(&self, grain_index: u64) -> u64 {
        (self.header.capacity - grain_index * self.grain).min(self.grain)
    }

    /// Checks the header of the compressed grain record at `record` for grain `grain_index`:
    /// a plausible size that stays in the file and, with markers, the lba of the grain start.
    /// `inflate_grain` re-reads the size but cannot know the expected lba, so this is the one
    /// place where a grain table pointing at the wrong record is caught.
    fn check_record(&mut self, grain_index: u64, record: u64, gte_at: u64) -> Result<()> {
        if self.checked_record == Some(record) {
            return Ok(());
        }
        let path = self.src.path();
        let header_len: u64 = if self.markers { 12 } else { 4 };
        let mut b = [0u8; 12];
        self.src
            .read_exact_at(&mut b[..header_len as usize], record)?;
        let size = u64::from(le_u32(&b, header_len as usize - 4));
        if self.markers {
            let lba = le_u64(&b, 0);
            let expected = grain_index * self.grain;
            if size == 0 {
                return Err(Error::corrupt(
                    path,
                    gte_at,
                    format!(
                        "grain table entry for grain {grain_index} points at byte {record:#x}, \
                         a metadata marker (type {}), not a grain record",
                        le_u32(&b, 8)
                    ),
                ));
            }
            if lba != expected {
                return Err(Error::corrupt(
                    path,
                    record,
                    format!(
                        "grain record for grain {grain_index} carries lba {lba:#x}, expected \
                         {expected:#x} (grain table entry at byte {gte_at:#x})"
                    ),
                ));
            }
        }
        if size == 0 || size + header_len > MAX_GRAIN_RECORD_BYTES {
            return Err(Error::corrupt(
                path,
                record,
                format!(
                    "compressed grain size {size} out of range 1..={}",
                    MAX_GRAIN_RECORD_BYTES - header_len
                ),
            ));
        }
        if record + header_len + size > self.src.len() {
            return Err(Error::corrupt(
                path,
                record,
                format!(
                    "compressed grain of {size} bytes runs past the end of the file ({} bytes)",
                    self.src.len()
                ),
            ));
        }
        // The record's whole extent is known only now: it must not overlap metadata, nor
        // contain the start of another record (open marked every start). A pure query, so
        // mapping the same grain again, in pieces, gives the same answer.
        let end = round_up(record + header_len + size, SECTOR);
        let g = GrainAt {
            grain: grain_index,
            gte_at,
            start: record,
        };
        if let Some(m) = self.meta.find(record, end) {
            return Err(self.overlap(g, end, &m.what.to_string(), m.start, m.end));
        }
        let other = self
            .record_starts
            .as_ref()
            .and_then(|b| b.first_set(record / SECTOR + 1, end / SECTOR));
        if let Some(s) = other {
            let mut buf = std::mem::take(&mut self.gt_bytes);
            let found = self.find_grain(&mut buf, |o| o.start == s * SECTOR);
            self.gt_bytes = buf;
            let o = found?;
            return Err(self.overlap(
                g,
                end,
                &format!(
                    "the record of grain {} (entry at byte {:#x})",
                    o.grain, o.gte_at
                ),
                o.start,
                o.start + header_len,
            ));
        }
        self.checked_record = Some(record);
        Ok(())
    }
}

impl ExtentMap for SparseExtent {
    fn sectors(&self) -> u64 {
        self.header.capacity
    }

    /// Coalesces: unallocated grains (and whole unallocated grain tables) into one run, zero
    /// grains into one run, and uncompressed grains that follow each other in the file into one
    /// data run, across grain-table boundaries, up to `max` sectors and the capacity. Compressed
    /// grains are one run each, since a [`Source::Deflate`] never crosses a grain.
    fn map(&mut self, lba: u64, max: u64) -> Result<Run> {
        let capacity = self.header.capacity;
        if lba >= capacity || max == 0 {
            return Err(Error::Usage(format!(
                "{}: map({lba}, {max}) outside the extent's {capacity} sectors",
                self.src.path().display()
            )));
        }
        let end = lba + max.min(capacity - lba);
        let (first, mut reach) = self.lookup(lba)?;
        if let Grain::Record { record, gte_at } = first {
            let grain_index = lba / self.grain;
            self.check_record(grain_index, record, gte_at)?;
            let grain_start = grain_index * self.grain;
            // Both fit in u32: a grain is at most 2048 sectors (1 MiB).
            let skip = ((lba - grain_start) * SECTOR) as u32;
            let grain_bytes = (self.grain_sectors_at(grain_index) * SECTOR) as u32;
            return Ok(Run {
                sectors: reach.min(end) - lba,
                source: Source::Deflate {
                    file: self.file,
                    record,
                    skip,
                    grain_bytes,
                    marker: self.markers,
                },
            });
        }
        while reach < end {
            let (next, next_reach) = self.lookup(reach)?;
            let continues = match (first, next) {
                (Grain::Unallocated, Grain::Unallocated) | (Grain::Zero, Grain::Zero) => true,
                (Grain::Data(start), Grain::Data(at)) => at == start + (reach - lba) * SECTOR,
                _ => false,
            };
            if !continues {
                break;
            }
            reach = next_reach;
        }
        let source = match first {
            Grain::Unallocated => Source::Unallocated,
            Grain::Zero => Source::Zero,
            Grain::Data(offset) => Source::Data {
                file: self.file,
                offset,
            },
            Grain::Record { .. } => unreachable!("handled above"),
        };
        Ok(Run {
            sectors: reach.min(end) - lba,
            source,
        })
    }

    fn grain_sectors(&self) -> u64 {
        self.grain
    }

    fn kind(&self) -> &'static str {
        if self.compressed {
            "streamOptimized"
        } else {
            "sparse"
        }
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
}

/// Checks one header (or footer, at byte `at`) against §5. Order matters: every value used in
/// arithmetic later is bounded here first.
fn check_header(src: &dyn ByteSource, h: &SparseExtentHeader, at: u64) -> Result<()> {
    let path = src.path();
    let corrupt = |field: u64, what: String| Error::corrupt(path, at + field, what);
    if h.magic != KDMV_MAGIC {
        return Err(corrupt(
            0,
            format!(
                "magic {:#010x} is not KDMV ({KDMV_MAGIC:#010x}): not a hosted sparse extent",
                h.magic
            ),
        ));
    }
    if h.version == 0 {
        return Err(corrupt(4, "version 0 does not exist (1..=3)".into()));
    }
    if h.version > MAX_VERSION {
        return Err(Error::unsupported(
            path,
            format!(
                "sparse extent version {} (written by a newer version, vdar reads 1..={MAX_VERSION})",
                h.version
            ),
        ));
    }
    let unknown = h.flags & 0xFFFF_0000 & !KNOWN_INCOMPATIBLE_FLAGS;
    if unknown != 0 {
        return Err(Error::unsupported(
            path,
            format!(
                "incompatible sparse extent flags {unknown:#010x} (flags {:#010x})",
                h.flags
            ),
        ));
    }
    if h.flags & FLAG_NEWLINE_CHECK != 0 && h.newline_check != NEWLINE_CHECK_BYTES {
        return Err(corrupt(
            73,
            format!(
                "newline-detection bytes {:02x?} should be 0a 20 0d 0a: the file was probably \
                 copied in text mode, which corrupts it",
                h.newline_check
            ),
        ));
    }
    if !h.grain_size.is_power_of_two() || h.grain_size > MAX_GRAIN_SECTORS {
        return Err(corrupt(
            20,
            format!(
                "grainSize {} sectors is not a power of two in 1..={MAX_GRAIN_SECTORS}",
                h.grain_size
            ),
        ));
    }
    if h.num_gtes_per_gt == 0 || h.num_gtes_per_gt > MAX_GTES_PER_GT {
        return Err(corrupt(
            44,
            format!(
                "numGTEsPerGT {} out of range 1..={MAX_GTES_PER_GT}",
                h.num_gtes_per_gt
            ),
        ));
    }
    if h.capacity == 0 {
        return Err(corrupt(12, "capacity is 0 sectors".into()));
    }
    let compressed = h.flags & FLAG_COMPRESSED != 0;
    match h.compress_algorithm {
        COMPRESSION_NONE if compressed => {
            return Err(corrupt(
                77,
                "compressed-grain flag set but compressAlgorithm is 0 (none)".into(),
            ))
        }
        COMPRESSION_DEFLATE if !compressed => {
            return Err(corrupt(
                77,
                "compressAlgorithm 1 (deflate) without the compressed-grain flag".into(),
            ))
        }
        COMPRESSION_NONE | COMPRESSION_DEFLATE => {}
        other => {
            return Err(Error::unsupported(
                path,
                format!("compressAlgorithm {other} (only 0 none and 1 deflate exist)"),
            ))
        }
    }
    if h.flags & FLAG_MARKERS != 0 && !compressed {
        return Err(corrupt(
            8,
            format!("flags {:#010x}: markers without compressed grains", h.flags),
        ));
    }
    Ok(())
}

/// Reads and checks the last three sectors of a `GD_AT_END` file: footer marker, footer, end of
/// stream marker (§7.2), and returns the footer, which replaces the header.
fn read_footer(src: &dyn ByteSource, first: &SparseExtentHeader) -> Result<SparseExtentHeader> {
    let path = src.path();
    let len = src.len();
    // Header, footer marker, footer, EOS: at least four sectors.
    if len < 4 * SECTOR || len % SECTOR != 0 {
        return Err(Error::corrupt(
            path,
            56,
            format!(
                "gdOffset is GD_AT_END but the file ({len} bytes) is not a whole number of \
                 sectors with room for a footer"
            ),
        ));
    }
    let tail_at = len - 3 * SECTOR;
    let mut tail = [0u8; 3 * 512];
    src.read_exact_at(&mut tail, tail_at)?;
    let (marker, rest) = tail.split_at(512);
    let (footer, eos) = rest.split_at(512);
    if le_u32(marker, 8) != 0 || le_u32(marker, 12) != MARKER_FOOTER {
        return Err(Error::corrupt(
            path,
            tail_at,
            format!(
                "gdOffset is GD_AT_END but no footer marker here (size {}, type {}; expected \
                 size 0, type {MARKER_FOOTER})",
                le_u32(marker, 8),
                le_u32(marker, 12)
            ),
        ));
    }
    if le_u64(eos, 0) != 0 || le_u32(eos, 8) != 0 || le_u32(eos, 12) != MARKER_EOS {
        return Err(Error::corrupt(
            path,
            len - SECTOR,
            "gdOffset is GD_AT_END but the last sector is not an end-of-stream marker".to_string(),
        ));
    }
    let footer_at = len - 2 * SECTOR;
    let footer: &[u8; 512] = footer.try_into().expect("invariant: 512-byte split");
    let f = SparseExtentHeader::decode(footer);
    check_header(src, &f, footer_at)?;
    if f.gd_offset == GD_AT_END {
        return Err(Error::corrupt(
            path,
            footer_at + 56,
            "footer's gdOffset is GD_AT_END too".to_string(),
        ));
    }
    // The footer is a copy of the header with the real gdOffset. A footer describing a
    // different disk means the tail belongs to another file (or was spliced): refuse it.
    let same = f.capacity == first.capacity
        && f.grain_size == first.grain_size
        && f.num_gtes_per_gt == first.num_gtes_per_gt
        && f.flags == first.flags;
    if !same {
        return Err(Error::corrupt(
            path,
            footer_at,
            format!(
                "footer (capacity {}, grainSize {}, numGTEsPerGT {}, flags {:#x}) disagrees with \
                 the header (capacity {}, grainSize {}, numGTEsPerGT {}, flags {:#x})",
                f.capacity,
                f.grain_size,
                f.num_gtes_per_gt,
                f.flags,
                first.capacity,
                first.grain_size,
                first.num_gtes_per_gt,
                first.flags
            ),
        ));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::walk::map_end_to_end;
    use crate::input::MemSource;

    /// A valid monolithicSparse-like image: header, 1 descriptor sector, GD at 2, GT at 3..,
    /// grains from overHead. `gtes` entries per GT, `grain` sectors per grain.
    struct Img {
        h: SparseExtentHeader,
        bytes: Vec<u8>,
    }

    const GRAIN: u64 = 8;
    const GTES: u32 = 4;

    /// Capacity 70 sectors with grain 8 and 4 GTEs: 9 grains (last partial, 6 sectors), 3 GTs.
    fn base(gtes: &[u32]) -> Img {
        let capacity = 70;
        let h = SparseExtentHeader {
            magic: KDMV_MAGIC,
            version: 1,
            flags: FLAG_NEWLINE_CHECK,
            capacity,
            grain_size: GRAIN,
            descriptor_offset: 1,
            descriptor_size: 1,
            num_gtes_per_gt: GTES,
            rgd_offset: 0,
            gd_offset: 2,
            over_head: 8,
            unclean_shutdown: 0,
            newline_check: NEWLINE_CHECK_BYTES,
            compress_algorithm: 0,
        };
        // GD (3 entries) at sector 2, GTs at sectors 3, 4, 5 (4 entries = 16 bytes each).
        let mut bytes = vec![0u8; 8 * 512 + 10 * GRAIN as usize * 512];
        bytes[..512].copy_from_slice(&h.encode());
        bytes[512..512 + 9].copy_from_slice(b"# desc\n\0\0");
        for g in 0..3u32 {
            let at = 1024 + 4 * g as usize;
            bytes[at..at + 4].copy_from_slice(&(3 + g).to_le_bytes());
        }
        for (i, &gte) in gtes.iter().enumerate() {
            let at = (3 + i / GTES as usize) * 512 + 4 * (i % GTES as usize);
            bytes[at..at + 4].copy_from_slice(&gte.to_le_bytes());
        }
        // Fill every grain slot with a recognisable byte.
        for s in 8..bytes.len() / 512 {
            bytes[s * 512..(s + 1) * 512].fill(s as u8);
        }
        Img { h, bytes }
    }

    impl Img {
        fn with(mut self, f: impl FnOnce(&mut SparseExtentHeader)) -> Self {
            f(&mut self.h);
            self.bytes[..512].copy_from_slice(&self.h.encode());
            self
        }
        fn open(&self) -> Result<SparseExtent> {
            let mut files = FileTable::default();
            let id = files.add(Arc::new(MemSource::new("t.vmdk", self.bytes.clone())));
            SparseExtent::open(&files, id)
        }
        fn files(&self) -> (FileTable, FileId) {
            let mut files = FileTable::default();
            let id = files.add(Arc::new(MemSource::new("t.vmdk", self.bytes.clone())));
            (files, id)
        }
    }

    fn runs(e: &mut SparseExtent) -> Vec<(u64, Source)> {
        let mut out = Vec::new();
        let mut lba = 0;
        while lba < e.sectors() {
            let r = e.map(lba, e.sectors() - lba).expect("map");
            out.push((r.sectors, r.source));
            lba += r.sectors;
        }
        out
    }

    fn data(offset: u64) -> Source {
        Source::Data {
            file: FileId(0),
            offset,
        }
    }

    fn assert_corrupt(r: Result<SparseExtent>, needle: &str) {
        match r {
            Err(Error::Corrupt { what, .. }) => {
                assert!(what.contains(needle), "{what:?} lacks {needle:?}")
            }
            other => panic!("expected corrupt ({needle}), got {other:?}"),
        }
    }

    fn assert_unsupported(r: Result<SparseExtent>) {
        assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
    }

    #[test]
    fn sparse_maps_and_coalesces() {
        // Grains 0,1 contiguous (sectors 8, 16), 2 unallocated, 3 at 32, 4 at 40 (crosses into GT 1,
        // still contiguous), 5..7 unallocated, 8 (partial) at 24.
        let mut e = base(&[8, 16, 0, 32, 40, 0, 0, 0, 24]).open().expect("open");
        assert_eq!(e.sectors(), 70);
        assert_eq!(
            runs(&mut e),
            vec![
                (16, data(8 * 512)),
                (8, Source::Unallocated),
                (16, data(32 * 512)),
                (24, Source::Unallocated),
                (6, data(24 * 512)),
            ]
        );
        // Starting mid-grain keeps the contiguity arithmetic right, and max clips.
        let r = e.map(3, 100).expect("map");
        assert_eq!((r.sectors, r.source), (13, data(8 * 512 + 3 * 512)));
        let r = e.map(3, 2).expect("map");
        assert_eq!(r.sectors, 2);
        assert!(matches!(e.map(70, 1), Err(Error::Usage(_))));
        assert_eq!(
            e.embedded_descriptor().expect("desc").as_deref(),
            Some("# desc\n")
        );
    }

    #[test]
    fn sparse_zero_grains_and_unallocated_tables() {
        let img = base(&[1, 1, 1, 1, 1, 8]).with(|h| {
            h.flags |= FLAG_ZEROED_GRAIN;
            h.version = 2;
        });
        let mut bytes = img.bytes.clone();
        // GD entry 2 = 0: the last table's whole range is unallocated without a GT.
        bytes[1024 + 8..1024 + 12].fill(0);
        let img = Img { bytes, ..img };
        let mut e = img.open().expect("open");
        assert_eq!(
            runs(&mut e),
            vec![
                (40, Source::Zero),
                (8, data(8 * 512)),
                (16, Source::Unallocated),
                (6, Source::Unallocated),
            ]
            .into_iter()
            .fold(Vec::new(), |mut v: Vec<(u64, Source)>, (n, s)| {
                // The two unallocated pieces (GTEs 0, then GDE 0) coalesce into one run.
                match v.last_mut() {
                    Some((m, t)) if *t == s => *m += n,
                    _ => v.push((n, s)),
                }
                v
            })
        );
        // Without the flag, GTE 1 is a grain inside the metadata: corrupt.
        let img = base(&[1]);
        assert_corrupt(
            img.open().and_then(|mut e| e.map(0, 1).map(|_| e)),
            "overHead",
        );
    }

    #[test]
    fn sparse_bad_gte_names_its_offset() {
        let img = base(&[8, 0, 0, 0, 0, 0, 0, 0, 0x7000]);
        let mut e = img.open().expect("open: GTs are checked when loaded");
        match e.map(64, 6) {
            Err(Error::Corrupt { offset, what, .. }) => {
                assert_eq!(offset, 5 * 512, "{what}");
                assert!(what.contains("0x7000"), "{what}");
            }
            other => panic!("{other:?}"),
        }
        // The error is not cached as a valid table.
        assert!(e.map(64, 6).is_err());
        assert_eq!(e.map(0, 8).expect("map").source, data(8 * 512));
    }

    #[test]
    fn sparse_header_errors() {
        assert_corrupt(base(&[]).with(|h| h.magic = 0x1234).open(), "magic");
        assert_corrupt(base(&[]).with(|h| h.version = 0).open(), "version");
        assert_unsupported(base(&[]).with(|h| h.version = 4).open());
        assert_unsupported(base(&[]).with(|h| h.flags |= 1 << 20).open());
        // Unknown compatible (low) flag bits are fine.
        base(&[])
            .with(|h| h.flags |= 1 << 9)
            .open()
            .expect("compatible flag");
        assert_corrupt(
            base(&[])
                .with(|h| h.newline_check = [0x0a, 0x20, 0x0a, 0x0a])
                .open(),
            "newline",
        );
        // Without flag bit 0 the bytes are not checked.
        base(&[])
            .with(|h| {
                h.flags = 0;
                h.newline_check = [0; 4];
            })
            .open()
            .expect("no check");
        for g in [0, 3, 4096, u64::MAX] {
            assert_corrupt(base(&[]).with(|h| h.grain_size = g).open(), "grainSize");
        }
        for n in [0, 513, u32::MAX] {
            assert_corrupt(
                base(&[]).with(|h| h.num_gtes_per_gt = n).open(),
                "numGTEsPerGT",
            );
        }
        assert_corrupt(base(&[]).with(|h| h.capacity = 0).open(), "capacity");
        // Absurd capacities fail on the directory bound or its size, before allocating.
        assert_corrupt(base(&[]).with(|h| h.capacity = u64::MAX).open(), "entries");
        assert_corrupt(
            base(&[])
                .with(|h| {
                    h.capacity = 1 << 40;
                    h.grain_size = 2048;
                    h.num_gtes_per_gt = 512;
                })
                .open(),
            "grain directory",
        );
        assert_corrupt(
            base(&[]).with(|h| h.gd_offset = 0).open(),
            "grain directory",
        );
        assert_corrupt(
            base(&[]).with(|h| h.gd_offset = 1 << 60).open(),
            "grain directory",
        );
        assert_corrupt(
            base(&[]).with(|h| h.gd_offset = 200).open(),
            "grain directory",
        );
        assert_unsupported(base(&[]).with(|h| h.compress_algorithm = 2).open());
        assert_corrupt(
            base(&[]).with(|h| h.compress_algorithm = 1).open(),
            "compressAlgorithm",
        );
        assert_corrupt(
            base(&[]).with(|h| h.flags |= FLAG_COMPRESSED).open(),
            "compressAlgorithm",
        );
        assert_corrupt(
            base(&[]).with(|h| h.flags |= FLAG_MARKERS).open(),
            "markers",
        );
        assert_corrupt(base(&[]).with(|h| h.gd_offset = GD_AT_END).open(), "footer");
        // A GD entry pointing past the end of the file.
        let mut img = base(&[]);
        img.bytes[1024..1028].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        assert_corrupt(img.open(), "grain directory entry 0");
        // Too short for a header at all.
        let short = Img {
            h: SparseExtentHeader::default(),
            bytes: vec![0; 100],
        };
        assert_corrupt(short.open(), "too short");
    }

    #[test]
    fn sparse_unclean_shutdown_warns() {
        let e = base(&[])
            .with(|h| h.unclean_shutdown = 1)
            .open()
            .expect("open");
        assert_eq!(e.warnings().len(), 1);
        assert!(base(&[]).open().expect("open").warnings().is_empty());
    }

    #[test]
    fn sparse_descriptor_bounds() {
        let e = base(&[])
            .with(|h| h.descriptor_size = 1 << 40)
            .open()
            .expect("open");
        assert!(e.embedded_descriptor().is_err());
        let e = base(&[])
            .with(|h| h.descriptor_offset = 1000)
            .open()
            .expect("open");
        assert!(e.embedded_descriptor().is_err());
        let e = base(&[])
            .with(|h| h.descriptor_offset = 0)
            .open()
            .expect("open");
        assert_eq!(e.embedded_descriptor().expect("none"), None);
    }

    /// A compressed image with markers: grain 0 as a record at sector 8 (lba 0), grain 1 a
    /// record at sector 10 claiming `lba1`.
    fn compressed(lba1: u64) -> Img {
        use flate2::{write::ZlibEncoder, Compression};
        use std::io::Write;
        let img = base(&[8, 10]).with(|h| {
            h.flags |= FLAG_COMPRESSED | FLAG_MARKERS;
            h.compress_algorithm = COMPRESSION_DEFLATE;
            h.version = 3;
        });
        let mut bytes = img.bytes.clone();
        for (sector, lba, fill) in [(8usize, 0u64, 0xA1u8), (10, lba1, 0xB2)] {
            let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
            z.write_all(&[fill; GRAIN as usize * 512]).expect("zlib");
            let z = z.finish().expect("zlib");
            let at = sector * 512;
            bytes[at..at + 1024].fill(0);
            bytes[at..at + 8].copy_from_slice(&lba.to_le_bytes());
            bytes[at + 8..at + 12].copy_from_slice(&(z.len() as u32).to_le_bytes());
            bytes[at + 12..at + 12 + z.len()].copy_from_slice(&z);
        }
        Img { bytes, ..img }
    }

    #[test]
    fn sparse_compressed_records() {
        let img = compressed(GRAIN);
        let (files, id) = img.files();
        let mut e = SparseExtent::open(&files, id).expect("open");
        assert!(e.is_stream_optimized());
        let r = e.map(3, 100).expect("map");
        assert_eq!(r.sectors, 5, "a deflate run never crosses its grain");
        assert_eq!(
            r.source,
            Source::Deflate {
                file: id,
                record: 8 * 512,
                skip: 3 * 512,
                grain_bytes: 8 * 512,
                marker: true
            }
        );
        let mut buf = vec![0u8; 5 * 512];
        crate::input::read::read_source(&files, &r.source, &mut buf).expect("inflate");
        assert!(buf.iter().all(|&b| b == 0xA1));
        let r = e.map(8, 100).expect("map");
        crate::input::read::read_source(&files, &r.source, &mut buf[..512]).expect("inflate");
        assert_eq!(buf[0], 0xB2);

        // A record claiming the wrong lba is caught at map time.
        let img = compressed(0);
        let mut e = img.open().expect("open");
        e.map(0, 8).expect("grain 0 fine");
        match e.map(8, 8) {
            Err(Error::Corrupt { offset, what, .. }) => {
                assert_eq!(offset, 10 * 512);
                assert!(what.contains("lba"), "{what}");
            }
            other => panic!("{other:?}"),
        }
    }

    fn corrupt_what<T: std::fmt::Debug>(r: Result<T>) -> (u64, String) {
        match r {
            Err(Error::Corrupt { offset, what, .. }) => (offset, what),
            other => panic!("expected corrupt, got {other:?}"),
        }
    }

    fn put(img: &mut Img, at: usize, v: u32) {
        img.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn sparse_shared_storage_is_refused_at_open() {
        // GT 0 is at sector 3, entries 4 bytes each; the GD at sector 2.
        let gte = |i: u64| 3 * 512 + 4 * i;
        // (a) Grain 1 names grain 0's storage, exactly and (unaligned) half-way in.
        for at in [8, 12] {
            let (off, what) = corrupt_what(base(&[8, at]).open());
            assert_eq!(off, gte(1), "{what}");
            assert!(
                what.contains("grain 1:") && what.contains("grain 0 "),
                "{what}"
            );
        }
        // Unaligned but disjoint grains are fine.
        base(&[12, 20, 28]).open().expect("unaligned grains");
        // Across tables: grain 5 (GT 1) names grain 3's storage.
        let (off, what) = corrupt_what(base(&[8, 16, 0, 32, 0, 32]).open());
        assert_eq!(off, 4 * 512 + 4, "{what}");
        // (b) Grain 0 covers grain table 2, moved to sector 9.
        let mut img = base(&[8]);
        put(&mut img, 1024 + 8, 9);
        let (off, what) = corrupt_what(img.open());
        assert_eq!(off, gte(0), "{what}");
        assert!(what.contains("grain table 2"), "{what}");
        // (c) Two directory entries naming one table, and a table on the directory itself.
        let mut img = base(&[8]);
        put(&mut img, 1024 + 4, 3);
        let (off, what) = corrupt_what(img.open());
        assert_eq!(off, 1024 + 4, "{what}");
        assert!(what.contains("grain directory entry 1") && what.contains("grain table 0"));
        let mut img = base(&[8]);
        put(&mut img, 1024, 2);
        let (off, what) = corrupt_what(img.open());
        assert_eq!(off, 1024, "{what}");
        assert!(what.contains("the grain directory"), "{what}");
    }

    #[test]
    fn sparse_shared_records() {
        let gte = |i: u64| 3 * 512 + 4 * i;
        // Two entries naming one record: refused at open, at the second entry.
        let mut img = compressed(GRAIN);
        put(&mut img, gte(1) as usize, 8);
        let (off, what) = corrupt_what(img.open());
        assert_eq!(off, gte(1), "{what}");
        assert!(what.contains("grain 0"), "{what}");

        // Record 0 claims 700 bytes (to sector 10): record 1, moved to sector 9, starts inside
        // it. Only the record header says so, so `map` finds it, at grain 0's entry, every time.
        let mut img = compressed(GRAIN);
        put(&mut img, 8 * 512 + 8, 700);
        put(&mut img, gte(1) as usize, 9);
        let mut e = img.open().expect("open: starts are distinct");
        for _ in 0..2 {
            let (off, what) = corrupt_what(e.map(0, 8));
            assert_eq!(off, gte(0), "{what}");
            assert!(what.contains("record of grain 1"), "{what}");
        }
        // The same long record running into grain table 2, moved to sector 9.
        let mut img = compressed(GRAIN);
        put(&mut img, 8 * 512 + 8, 700);
        put(&mut img, 1024 + 8, 9);
        let mut e = img.open().expect("open");
        let (off, what) = corrupt_what(e.map(3, 1));
        assert_eq!(off, gte(0), "{what}");
        assert!(what.contains("grain table 2"), "{what}");

        // A sound file maps the same grain in pieces, repeatedly, without tripping anything.
        let mut e = compressed(GRAIN).open().expect("open");
        for _ in 0..2 {
            for lba in [0, 3, 7, 8, 9, 15, 0] {
                e.map(lba, 1).expect("map");
            }
        }
    }

    /// Builds a GD_AT_END file from a compressed image: header says GD_AT_END, the tail holds
    /// footer marker, footer, EOS.
    fn at_end(img: &Img, footer: impl FnOnce(&mut SparseExtentHeader)) -> Img {
        let mut f = img.h;
        footer(&mut f);
        let mut bytes = img.bytes.clone();
        bytes.extend_from_slice(&encode_marker(1, MARKER_FOOTER));
        bytes.extend_from_slice(&f.encode());
        bytes.extend_from_slice(&[0u8; 512]);
        let out = Img { h: img.h, bytes };
        out.with(|h| h.gd_offset = GD_AT_END)
    }

    #[test]
    fn sparse_footer() {
        let img = compressed(GRAIN);
        let e = at_end(&img, |_| {}).open().expect("footer layout");
        assert_eq!(e.header.gd_offset, 2);
        assert_corrupt(
            at_end(&img, |f| f.gd_offset = GD_AT_END).open(),
            "GD_AT_END too",
        );
        assert_corrupt(at_end(&img, |f| f.capacity = 71).open(), "disagrees");
        assert_corrupt(at_end(&img, |f| f.magic = 0).open(), "magic");
        let mut bad = at_end(&img, |_| {});
        let n = bad.bytes.len();
        bad.bytes[n - 512] = 1; // EOS val != 0
        assert_corrupt(bad.open(), "end-of-stream");
        let mut bad = at_end(&img, |_| {});
        bad.bytes[n - 1536 + 12] = 2; // marker type GD, not footer
        assert_corrupt(bad.open(), "footer marker");
    }

    #[test]
    fn sparse_mapping_survives_mutations() {
        // A cheap deterministic stand-in for the fuzzer: flip bytes of valid images all over
        // the metadata and make sure nothing panics.
        let seeds = [
            base(&[8, 16, 0, 32, 40, 0, 0, 1, 24]).bytes,
            at_end(&compressed(GRAIN), |_| {}).bytes,
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for seed in &seeds {
            map_end_to_end("walk.vmdk", seed, SparseExtent::open);
            for _ in 0..300 {
                let mut b = seed.clone();
                for _ in 0..4 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Mostly hit the metadata (first 6 sectors and the tail), sometimes anywhere.
                    let i = match x % 3 {
                        0 => (x >> 8) as usize % (6 * 512),
                        1 => b.len() - 1 - (x >> 8) as usize % 1536,
                        _ => (x >> 8) as usize % b.len(),
                    };
                    b[i] = (x >> 40) as u8;
                }
                map_end_to_end("walk.vmdk", &b, SparseExtent::open);
            }
        }
    }

    /// xorshift bytes: deflate cannot shrink them.
    fn noise(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    }

    fn inflate(z: &[u8]) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(z)
            .read_to_end(&mut out)
            .expect("a valid zlib stream");
        out
    }

    #[test]
    fn adler32_known_values() {
        assert_eq!(adler32(b""), 1);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        // Past one 5552-byte round of the modulo, all 0xFF (the worst case for overflow).
        let ff = vec![0xFFu8; 100_000];
        let (mut a, mut b) = (1u64, 0u64);
        for &x in &ff {
            a = (a + u64::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(u64::from(adler32(&ff)), (b << 16) | a);
    }

    /// Stored framing round-trips through a real zlib decoder (which checks the Adler-32) and
    /// is exactly the grain rule's size, across block boundaries.
    #[test]
    fn zlib_stored_is_exactly_the_bound() {
        for n in [0, 1, 511, 65534, 65535, 65536, 131070, 131071, 1 << 20] {
            let data = noise(n, n as u64 + 1);
            let mut z = Vec::new();
            push_zlib_stored(&mut z, &data);
            assert_eq!(z.len() as u64, max_grain_zlib_bytes(n as u64), "{n}");
            assert_eq!(inflate(&z), data, "{n}");
        }
        assert_eq!(max_grain_zlib_bytes(65536), 65_552);
    }

    /// Issue 14: deflate level 1 wrote 64 KiB of noise as 69,1xx bytes, which VMware's reader
    /// refuses (it takes at most 66,036); the record now holds stored blocks instead.
    #[test]
    fn r14_incompressible_grain_record_keeps_the_grain_rule() {
        for level in [1, 2, 6, 9] {
            for n in [65536, 3 * 512] {
                let data = noise(n, 7);
                let r = encode_grain_record(640, &data, level).expect("record");
                assert_eq!(u64::from_le_bytes(r[..8].try_into().unwrap()), 640);
                let size = u32::from_le_bytes(r[8..12].try_into().unwrap()) as usize;
                assert!(
                    size as u64 <= max_grain_zlib_bytes(n as u64),
                    "level {level}, {n} bytes: {size}"
                );
                assert_eq!(r.len(), (12 + size).next_multiple_of(512));
                assert!(r[12 + size..].iter().all(|&b| b == 0));
                assert_eq!(inflate(&r[12..12 + size]), data);
            }
        }
        // Compressible grains stay deflated.
        let r = encode_grain_record(0, &[0x61; 65536], 1).expect("record");
        assert!(r.len() <= 4096, "{}", r.len());
    }
}
