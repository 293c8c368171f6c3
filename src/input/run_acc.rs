//! Building the longest run a grain table allows: the accumulator the redo-log readers
//! (COWD, SEsparse) share. Adjacent grains merge when both are unallocated, both zero, or both
//! data whose bytes follow each other in the file.

use super::{FileId, Run, Source, SECTOR};

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
