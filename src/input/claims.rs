//! Storage claims: the bookkeeping the sparse extent readers (KDMV, COWD, SEsparse) use to prove
//! that no two table entries share bytes of the file.
//!
//! Where it sits: the input stage, called from the readers' `open`. A sparse file allocates every
//! grain and every grain table once; two grain table entries naming the same (or overlapping)
//! storage, a grain inside a grain table, or two directory entries naming the same table can only
//! come from corruption, and reading such a file would silently return one grain's bytes for
//! another. The readers walk their tables once at open and claim what each entry names here.
//!
//! Two tools, chosen for bounded memory:
//! * [`MetaRanges`]: the fixed metadata (header, directory, grain tables) as a sorted list of
//!   byte ranges. It is as long as the grain directory, which is in memory anyway, so it costs
//!   nothing new; building it finds overlapping tables, and a binary search per grain finds a
//!   grain inside a table.
//! * [`UnitBitmap`]: one bit per storage unit of the file (a grain, a sector, or an SEsparse grain
//!   slot), for grain against grain. Its size is the file length divided by the unit, capped by
//!   [`MAX_CLAIM_BITMAP_BYTES`]; beyond that the file is refused as unsupported rather than read
//!   unchecked. A bitmap records *that* a unit is taken, not by whom: on a conflict the reader
//!   walks its tables a second time to name the first owner, which only costs time on the error
//!   path.

use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};

/// Largest claim bitmap built (256 MiB). At one bit per 512-byte sector (COWD, unaligned KDMV
/// grains, streamOptimized records) that covers a 1 TiB extent file; at one bit per 64 KiB grain
/// (aligned KDMV) 128 PiB; at one bit per 4 KiB grain (SEsparse) 8 TiB of grains. The bitmap
/// lives only while the extent is opened (streamOptimized keeps its record-start map).
pub const MAX_CLAIM_BITMAP_BYTES: u64 = 256 << 20;

/// One bit per storage unit of a file.
#[derive(Debug)]
pub(crate) struct UnitBitmap {
    words: Vec<u64>,
    units: u64,
}

impl UnitBitmap {
    /// A clear bitmap of `units` units of `unit_bytes` bytes for the file `path`, or
    /// [`Error::Unsupported`] when it would exceed [`MAX_CLAIM_BITMAP_BYTES`].
    pub fn new(path: &Path, units: u64, unit_bytes: u64) -> Result<Self> {
        let words = units.div_ceil(64);
        if words * 8 > MAX_CLAIM_BITMAP_BYTES {
            return Err(Error::unsupported(
                path,
                format!(
                    "checking that no two table entries share storage needs one bit per \
                     {unit_bytes}-byte unit, {} MiB for {units} units, over the {} MiB limit",
                    (words * 8) >> 20,
                    MAX_CLAIM_BITMAP_BYTES >> 20
                ),
            ));
        }
        Ok(UnitBitmap {
            words: vec![0; words as usize],
            units,
        })
    }

    fn get(&self, u: u64) -> bool {
        self.words[(u / 64) as usize] >> (u % 64) & 1 == 1
    }

    /// Marks units `[first, end)` (clipped to the bitmap) and returns the first one that was
    /// marked already. On a conflict the marking stops there: the caller fails anyway.
    pub fn claim(&mut self, first: u64, end: u64) -> Option<u64> {
        for u in first..end.min(self.units) {
            if self.get(u) {
                return Some(u);
            }
            self.words[(u / 64) as usize] |= 1 << (u % 64);
        }
        None
    }

    /// The first marked unit in `[first, end)`, clipped to the bitmap.
    pub fn first_set(&self, first: u64, end: u64) -> Option<u64> {
        (first..end.min(self.units)).find(|&u| self.get(u))
    }
}

/// What a metadata range holds, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Meta {
    /// The extent header (and, for KDMV, nothing else).
    Header,
    /// KDMV's embedded descriptor area.
    Descriptor,
    /// The grain directory.
    Gd,
    /// KDMV's redundant grain directory (the directory only, its tables are not read).
    Rgd,
    /// The footer marker, footer and end-of-stream marker of a GD_AT_END file.
    Footer,
    /// The grain table of directory entry `index`, which is stored at byte `entry_at`.
    Gt {
        /// Grain directory index.
        index: u64,
        /// Byte offset of the directory entry naming the table.
        entry_at: u64,
    },
}

impl fmt::Display for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Meta::Header => f.write_str("the header"),
            Meta::Descriptor => f.write_str("the embedded descriptor"),
            Meta::Gd => f.write_str("the grain directory"),
            Meta::Rgd => f.write_str("the redundant grain directory"),
            Meta::Footer => f.write_str("the footer"),
            Meta::Gt { index, .. } => write!(f, "grain table {index}"),
        }
    }
}

/// A metadata byte range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MetaRange {
    pub start: u64,
    pub end: u64,
    pub what: Meta,
}

/// Non-overlapping metadata ranges, sorted by start (hence by end too).
#[derive(Debug, Default)]
pub(crate) struct MetaRanges {
    ranges: Vec<MetaRange>,
}

impl MetaRanges {
    /// Sorts `ranges` (empty ones dropped) and checks that none overlaps another. On an overlap
    /// returns the two ranges, the one that comes later in `ranges`' original order second, so
    /// that the caller can blame the later claim, as a walk in directory order would.
    pub fn new(ranges: Vec<MetaRange>) -> std::result::Result<Self, (MetaRange, MetaRange)> {
        // Remember the original position to decide which of two overlapping ranges is "later".
        let mut v: Vec<(MetaRange, usize)> = ranges
            .into_iter()
            .enumerate()
            .filter(|(_, r)| r.start < r.end)
            .map(|(i, r)| (r, i))
            .collect();
        v.sort_unstable_by_key(|(r, i)| (r.start, r.end, *i));
        // The range reaching furthest so far: any later start below its end overlaps it.
        let mut reach: Option<(MetaRange, usize)> = None;
        for &(r, i) in &v {
            if let Some((p, pi)) = reach {
                if r.start < p.end {
                    return Err(if pi < i { (p, r) } else { (r, p) });
                }
            }
            if reach.is_none_or(|(p, _)| r.end > p.end) {
                reach = Some((r, i));
            }
        }
        Ok(MetaRanges {
            ranges: v.into_iter().map(|(r, _)| r).collect(),
        })
    }

    /// The metadata range overlapping `[start, end)`, if any.
    pub fn find(&self, start: u64, end: u64) -> Option<MetaRange> {
        let i = self.ranges.partition_point(|r| r.end <= start);
        self.ranges.get(i).copied().filter(|r| r.start < end)
    }
}

/// The error for two overlapping metadata ranges as returned by [`MetaRanges::new`]: a grain
/// table is blamed (at its directory entry) before fixed metadata, and the later of two tables.
/// Two pieces of fixed metadata overlapping each other are reported at byte 0, the header that
/// placed them.
pub(crate) fn meta_overlap_error(path: &Path, a: MetaRange, b: MetaRange) -> Error {
    let (who, other) = match (a.what, b.what) {
        (_, Meta::Gt { .. }) => (b, a),
        (Meta::Gt { .. }, _) => (a, b),
        _ => (b, a),
    };
    let (at, prefix) = match who.what {
        Meta::Gt { index, entry_at } => (entry_at, format!("grain directory entry {index}: ")),
        _ => (0, String::new()),
    };
    Error::corrupt(
        path,
        at,
        format!(
            "{prefix}{} at bytes {:#x}..{:#x} overlaps {} at bytes {:#x}..{:#x}",
            who.what, who.start, who.end, other.what, other.start, other.end
        ),
    )
}

/// Rounds `x` up to a multiple of the power of two `unit`, saturating.
pub(crate) fn round_up(x: u64, unit: u64) -> u64 {
    x.checked_next_multiple_of(unit).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64, index: u64) -> MetaRange {
        MetaRange {
            start,
            end,
            what: Meta::Gt { index, entry_at: 0 },
        }
    }

    #[test]
    fn meta_ranges_find_and_overlap() {
        let m = MetaRanges::new(vec![r(100, 200, 0), r(0, 50, 1), r(200, 210, 2)]).unwrap();
        assert_eq!(m.find(50, 100), None);
        assert_eq!(m.find(150, 151).map(|x| x.start), Some(100));
        assert_eq!(m.find(40, 120).map(|x| x.start), Some(0));
        assert_eq!(m.find(209, 300).map(|x| x.start), Some(200));
        assert_eq!(m.find(210, 300), None);
        // Overlap with a range that is not the sorted neighbour: the later one in input order is
        // second.
        let (a, b) = MetaRanges::new(vec![r(0, 100, 0), r(10, 20, 1), r(50, 60, 2)]).unwrap_err();
        assert_eq!((a.start, b.start), (0, 10));
        let (a, b) = MetaRanges::new(vec![r(50, 60, 0), r(0, 100, 1)]).unwrap_err();
        assert_eq!((a.start, b.start), (50, 0));
        // Identical ranges.
        assert!(MetaRanges::new(vec![r(5, 9, 0), r(5, 9, 1)]).is_err());
    }

    #[test]
    fn bitmap_claims_and_cap() {
        let mut b = UnitBitmap::new(Path::new("x"), 130, 512).unwrap();
        assert_eq!(b.claim(3, 70), None);
        assert_eq!(b.claim(70, 71), None);
        assert_eq!(b.claim(71, 80), None);
        assert_eq!(b.claim(60, 65), Some(60));
        assert_eq!(b.first_set(0, 3), None);
        assert_eq!(b.first_set(0, 4), Some(3));
        // Past the end is ignored, not a panic.
        assert_eq!(b.claim(129, 1000), None);
        assert!(matches!(
            UnitBitmap::new(Path::new("x"), u64::MAX, 512),
            Err(Error::Unsupported { .. })
        ));
    }
}
