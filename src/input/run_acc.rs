//! Building the longest run a grain table allows: the accumulator the redo-log readers
//! (COWD, SEsparse) share. Adjacent grains merge when both are unallocated, both zero, or both
//! data whose bytes follow each other in the file.

use super::{FileId, Run, Source, SECTOR};
use crate::error::Result;

/// What one grain table entry says about its grain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Unallocated,
    Zero,
    /// Byte offset in the file of the first sector being mapped.
    Data(u64),
}

/// The run being built by a reader's `map`.
pub(crate) struct Acc {
    pub(crate) kind: Kind,
    pub(crate) sectors: u64,
}

impl Acc {
    /// Extends the run by `n` sectors of `kind` if that continues it. For data, `kind` carries
    /// the offset of its first sector, which must follow the run's last byte in the file.
    pub(crate) fn extend(acc: &mut Option<Acc>, kind: Kind, n: u64) -> bool {
        match acc {
            None => {
                *acc = Some(Acc { kind, sectors: n });
                true
            }
            Some(a) => {
                let fits = match (a.kind, kind) {
                    (Kind::Unallocated, Kind::Unallocated) | (Kind::Zero, Kind::Zero) => true,
                    (Kind::Data(start), Kind::Data(next)) => start + a.sectors * SECTOR == next,
                    _ => false,
                };
                if fits {
                    a.sectors += n;
                }
                fits
            }
        }
    }

    /// The finished run, its data in `file`.
    pub(crate) fn into_run(self, file: FileId) -> Run {
        let source = match self.kind {
            Kind::Unallocated => Source::Unallocated,
            Kind::Zero => Source::Zero,
            Kind::Data(offset) => Source::Data { file, offset },
        };
        Run {
            sectors: self.sectors,
            source,
        }
    }
}

/// What [`map_grains`] needs from a redo log: its directory, its cached tables and how it reads
/// one entry.
pub(crate) trait GrainTables {
    /// Entries in one grain table.
    fn table_entries(&self) -> u64;
    /// Sectors per grain.
    fn grain_size(&self) -> u64;
    /// Whether directory entry `gd_index` names a table (zero means none: all unallocated).
    fn has_table(&self, gd_index: u64) -> bool;
    /// The cache slot holding table `gd_index`, reading it if needed.
    fn table_slot(&mut self, gd_index: u64) -> Result<usize>;
    /// What entry `idx` of the table in `slot` says about `grain`, mapped from sector
    /// `in_grain` of it.
    fn entry_kind(&self, slot: usize, idx: u64, grain: u64, in_grain: u64) -> Result<Kind>;
}

/// The longest run from `lba` (inside the extent) up to `end` that the grain tables allow.
/// Errors met after the first entry end the run instead of failing the call, so that the error
/// is reported by the call that starts at the bad entry, with its own lba.
pub(crate) fn map_grains(t: &mut impl GrainTables, lba: u64, end: u64) -> Result<Acc> {
    let (per_table, g) = (t.table_entries(), t.grain_size());
    let span = per_table * g;
    let mut acc: Option<Acc> = None;
    let mut pos = lba;
    'tables: while pos < end {
        let gd_index = pos / span;
        let gt_end = end.min((gd_index + 1) * span);
        if !t.has_table(gd_index) {
            if !Acc::extend(&mut acc, Kind::Unallocated, gt_end - pos) {
                break;
            }
            pos = gt_end;
            continue;
        }
        let slot = match t.table_slot(gd_index) {
            Ok(s) => s,
            Err(e) if acc.is_none() => return Err(e),
            Err(_) => break,
        };
        while pos < gt_end {
            let grain = pos / g;
            let n = gt_end.min((grain + 1) * g) - pos;
            let idx = grain - gd_index * per_table;
            let kind = match t.entry_kind(slot, idx, grain, pos - grain * g) {
                Ok(k) => k,
                Err(e) if acc.is_none() => return Err(e),
                Err(_) => break 'tables,
            };
            if !Acc::extend(&mut acc, kind, n) {
                break 'tables;
            }
            pos += n;
        }
    }
    Ok(acc.expect("invariant: lba < end, so the first entry set the run"))
}
