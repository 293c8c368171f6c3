//! The areas of a disk a server says are in use, and the mask that reads a flat base only
//! inside them.
//!
//! A flat extent has no allocation table, and over the datastore's HTTPS file access not even
//! the file system's holes show: a thin 100 GiB base with 5 GiB written would be fetched whole.
//! vSphere answers `QueryChangedDiskAreas` with change id `*` with the areas of a disk in use,
//! which is what VADP backup tools read instead. vdar applies those areas to the flat extents
//! of the chain's base only: sparse layers above keep their own grain tables, which say
//! exactly what they hold, so a server's answer can never hide a grain of theirs.

use super::{ExtentMap, Run, Source, SECTOR};

/// Most areas kept for one disk (16 bytes each): far more than a real disk's in-use map, and
/// a bound on what a hostile server can make vdar allocate.
pub const MAX_AREAS: usize = 4 << 20;

/// Sorted, disjoint, non-touching sector ranges `[start, end)` of one disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskAreas {
    sectors: Vec<(u64, u64)>,
    capacity: u64,
}

impl DiskAreas {
    /// The areas `(start, length)` in bytes, as a server lists them, for a disk of `capacity`
    /// bytes. Areas must come in order, without overlap, inside the disk; they are widened to
    /// whole sectors (reading a little more is harmless, less would lose data).
    pub fn from_bytes(
        capacity: u64,
        areas: impl IntoIterator<Item = (u64, u64)>,
    ) -> std::result::Result<DiskAreas, String> {
        let mut sectors: Vec<(u64, u64)> = Vec::new();
        let mut last_end = 0u64;
        for (start, len) in areas {
            let end = start
                .checked_add(len)
                .filter(|&e| e <= capacity)
                .ok_or_else(|| {
                    format!(
                        "area of {len} bytes at byte {start} runs past the {capacity}-byte disk"
                    )
                })?;
            if start < last_end {
                return Err(format!(
                    "area at byte {start} overlaps or precedes the one ending at byte {last_end}"
                ));
            }
            last_end = end;
            if len == 0 {
                continue;
            }
            let (s, e) = (start / SECTOR, end.div_ceil(SECTOR));
            match sectors.last_mut() {
                Some(prev) if prev.1 >= s => prev.1 = prev.1.max(e),
                _ => {
                    if sectors.len() == MAX_AREAS {
                        return Err(format!("more than {MAX_AREAS} areas"));
                    }
                    sectors.push((s, e));
                }
            }
        }
        Ok(DiskAreas {
            sectors,
            capacity: capacity.div_ceil(SECTOR),
        })
    }

    /// The areas as byte ranges `[start, end)`, in order.
    pub fn byte_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.sectors.iter().map(|(s, e)| (s * SECTOR, e * SECTOR))
    }

    /// The disk's capacity in bytes (whole sectors).
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity * SECTOR
    }

    /// Bytes inside the areas.
    pub fn bytes(&self) -> u64 {
        self.sectors.iter().map(|(s, e)| (e - s) * SECTOR).sum()
    }

    /// How many areas.
    pub fn len(&self) -> usize {
        self.sectors.len()
    }

    /// Whether no area is in use.
    pub fn is_empty(&self) -> bool {
        self.sectors.is_empty()
    }

    /// The index of the first area ending after `sector`, searching from `hint`.
    fn find(&self, sector: u64, hint: usize) -> usize {
        let ends_after = |i: usize| self.sectors.get(i).is_none_or(|a| a.1 > sector);
        let before_ok = hint == 0 || self.sectors.get(hint - 1).is_some_and(|a| a.1 <= sector);
        if before_ok && ends_after(hint) {
            return hint;
        }
        self.sectors.partition_point(|a| a.1 <= sector)
    }
}

/// A flat extent read only inside the disk's areas in use; outside them it reads as zeros.
pub struct InUseExtent {
    inner: Box<dyn ExtentMap>,
    areas: std::sync::Arc<DiskAreas>,
    /// Disk sector of the extent's first sector.
    at: u64,
    cursor: usize,
}

impl InUseExtent {
    /// Masks `inner`, whose first sector is disk sector `at`.
    pub fn new(inner: Box<dyn ExtentMap>, areas: std::sync::Arc<DiskAreas>, at: u64) -> Self {
        InUseExtent {
            inner,
            areas,
            at,
            cursor: 0,
        }
    }
}

impl ExtentMap for InUseExtent {
    fn sectors(&self) -> u64 {
        self.inner.sectors()
    }

    fn map(&mut self, lba: u64, max: u64) -> crate::error::Result<Run> {
        let disk = self.at + lba;
        self.cursor = self.areas.find(disk, self.cursor);
        match self.areas.sectors.get(self.cursor) {
            Some(&(start, end)) if start <= disk => self.inner.map(lba, max.min(end - disk)),
            next => {
                let gap = next.map_or(u64::MAX, |a| a.0 - disk);
                Ok(Run {
                    sectors: max.min(gap),
                    source: Source::Zero,
                })
            }
        }
    }

    fn grain_sectors(&self) -> u64 {
        self.inner.grain_sectors()
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn warnings(&self) -> Vec<String> {
        self.inner.warnings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::flat::ZeroExtent;

    /// An extent whose every sector is data at its own offset.
    struct AllData(u64);

    impl ExtentMap for AllData {
        fn sectors(&self) -> u64 {
            self.0
        }
        fn map(&mut self, lba: u64, max: u64) -> crate::error::Result<Run> {
            Ok(Run {
                sectors: max.min(self.0 - lba),
                source: Source::Data {
                    file: crate::input::FileId(0),
                    offset: lba * SECTOR,
                },
            })
        }
        fn grain_sectors(&self) -> u64 {
            1
        }
        fn kind(&self) -> &'static str {
            "flat"
        }
    }

    /// Every run of `e` over its whole length, as (sectors, is data).
    fn runs(e: &mut dyn ExtentMap) -> Vec<(u64, bool)> {
        let mut out: Vec<(u64, bool)> = Vec::new();
        let mut lba = 0;
        while lba < e.sectors() {
            let r = e.map(lba, e.sectors() - lba).unwrap();
            assert!(r.sectors >= 1);
            let data = matches!(r.source, Source::Data { .. });
            match out.last_mut() {
                Some(l) if l.1 == data => l.0 += r.sectors,
                _ => out.push((r.sectors, data)),
            }
            lba += r.sectors;
        }
        out
    }

    #[test]
    fn areas_widen_to_sectors_merge_and_mask_only_outside() {
        let a = DiskAreas::from_bytes(100 * 512, [(600, 100), (1024, 512), (10 * 512, 1)]).unwrap();
        // [1, 2) and [2, 3) touch and merge; the one-byte area becomes a sector.
        assert_eq!(a.sectors, vec![(1, 3), (10, 11)]);
        assert_eq!(a.bytes(), 3 * 512);
        let a = std::sync::Arc::new(a);
        // The extent starts at disk sector 2: its sector 0 is in use, 8 is, the rest is not.
        let mut e = InUseExtent::new(Box::new(AllData(20)), a, 2);
        assert_eq!(
            runs(&mut e),
            vec![(1, true), (7, false), (1, true), (11, false)]
        );
    }

    #[test]
    fn bad_answers_are_refused() {
        let past = DiskAreas::from_bytes(1024, [(512, 1024)]).unwrap_err();
        assert!(past.contains("past the 1024-byte disk"), "{past}");
        let back = DiskAreas::from_bytes(4096, [(1024, 512), (512, 512)]).unwrap_err();
        assert!(back.contains("overlaps or precedes"), "{back}");
        assert!(DiskAreas::from_bytes(4096, [(u64::MAX, 2)]).is_err());
    }

    #[test]
    fn no_areas_read_as_zeros_and_runs_never_cross_an_edge() {
        let none = std::sync::Arc::new(DiskAreas::from_bytes(8192, []).unwrap());
        let mut e = InUseExtent::new(Box::new(ZeroExtent { sectors: 16 }), none, 0);
        assert_eq!(runs(&mut e), vec![(16, false)]);
        let a = std::sync::Arc::new(DiskAreas::from_bytes(64 * 512, [(0, 512 * 4)]).unwrap());
        let mut e = InUseExtent::new(Box::new(AllData(64)), a, 0);
        // Asked from inside the area, the run ends at its edge; random probes agree.
        assert_eq!(e.map(1, 50).unwrap().sectors, 3);
        assert!(matches!(e.map(30, 5).unwrap().source, Source::Zero));
        assert!(matches!(e.map(2, 5).unwrap().source, Source::Data { .. }));
    }
}
