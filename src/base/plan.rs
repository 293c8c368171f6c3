//! The plan of an incremental, per disk: which base disk it continues, and which chunk places
//! must be read. A place outside the changed set is not read at all: the base's chunk at the
//! same place stands for it (a BaseRef record, or nothing where the base is zero).

use serde::Serialize;

use crate::chain::{DiskRun, VirtualDisk};
use crate::error::Result;
use crate::input::{FileTable, Source};

/// Where a disk's changes came from (best first), as the backup summary reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeSource {
    /// A changed-areas list (vSphere CBT, `QueryChangedDiskAreas`).
    Cbt,
    /// The redo logs above the base's snapshot: their grains are what changed.
    RedoLog,
    /// No hint: every chunk read and hashed; only chunks the base lacks are stored.
    Dedup,
}

/// Sorted, disjoint byte ranges `[start, end)` on chunk boundaries: the chunk places to read;
/// and the changed byte ranges inside them, for base patches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkSet {
    ranges: Vec<(u64, u64)>,
    /// The changed bytes themselves, sorted and disjoint.
    exact: Vec<(u64, u64)>,
}

impl ChunkSet {
    /// The chunk places that `ranges` (sorted byte ranges) touch, on a disk of `capacity`
    /// bytes cut in `chunk_size` chunks: widened outwards, because a chunk is read whole or
    /// not at all.
    pub fn covering(
        ranges: impl IntoIterator<Item = (u64, u64)>,
        chunk_size: u64,
        capacity: u64,
    ) -> Self {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut exact: Vec<(u64, u64)> = Vec::new();
        for (s, e) in ranges {
            let e = e.min(capacity);
            if e <= s {
                continue;
            }
            match exact.last_mut() {
                Some(last) if last.1 >= s => last.1 = last.1.max(e),
                _ => exact.push((s, e)),
            }
            let s = s / chunk_size * chunk_size;
            let e = e
                .div_ceil(chunk_size)
                .saturating_mul(chunk_size)
                .min(capacity);
            match out.last_mut() {
                Some(last) if last.1 >= s => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        ChunkSet { ranges: out, exact }
    }

    /// The changed runs inside the `len`-byte chunk at `offset`, as `[start, end)` offsets in
    /// the chunk.
    pub fn runs_in(&self, offset: u64, len: u64) -> Vec<(usize, usize)> {
        let end = offset + len;
        let i = self.exact.partition_point(|r| r.1 <= offset);
        self.exact[i..]
            .iter()
            .take_while(|r| r.0 < end)
            .map(|&(s, e)| {
                (
                    (s.max(offset) - offset) as usize,
                    (e.min(end) - offset) as usize,
                )
            })
            .collect()
    }

    /// Whether the chunk at `offset` is to be read.
    pub fn contains(&self, offset: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.1 <= offset);
        self.ranges.get(i).is_some_and(|r| r.0 <= offset)
    }

    /// The ranges.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Bytes of the chunks to read.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }
}

/// What a backup summary says of one disk of an incremental.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiskChanges {
    /// `vm/disk`.
    pub disk: String,
    /// The base disk it continues (ordinal in the base), if any.
    pub base_disk: Option<u32>,
    /// Where its changes came from.
    pub source: Option<ChangeSource>,
    /// Bytes of the chunks the change list named (all of the disk's without a list).
    pub changed_bytes: Option<u64>,
    /// Why a change list was not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// How one disk of an incremental is backed up.
#[derive(Clone, Debug, Default)]
pub struct DiskPlan {
    /// The base disk (ordinal in the base) this disk continues, if the base has one of the
    /// same VM and name.
    pub base_disk: Option<u32>,
    /// The chunk places to read; `None`: all of them.
    pub changed: Option<ChunkSet>,
    /// Where `changed` came from.
    pub source: Option<ChangeSource>,
    /// Why a change list was not used (the disk was read whole instead), for the user.
    pub fallback: Option<String>,
}

/// A disk seen only through its change list: chunks outside `set` read as zeros without being
/// read (the writer takes them from the base), chunks inside it as the disk has them.
pub struct ChangedOnly {
    inner: Box<dyn VirtualDisk>,
    set: ChunkSet,
    /// The rest of a run cut at a boundary of the set.
    pending: Option<DiskRun>,
    /// Where the next run starts.
    pos: u64,
    /// Whether `inner` can skip what the set leaves out ([`VirtualDisk::skip_to`]).
    skips: bool,
}

impl ChangedOnly {
    /// `inner` read only inside `set`.
    pub fn new(inner: Box<dyn VirtualDisk>, set: ChunkSet) -> Self {
        ChangedOnly {
            inner,
            set,
            pending: None,
            pos: 0,
            skips: true,
        }
    }

    /// At a place outside the set: a zero run to the set's next range (or the disk's end),
    /// skipping `inner` past it unread. `None` when inside the set or `inner` cannot skip.
    fn skip_gap(&mut self) -> Result<Option<DiskRun>> {
        let cap = self.inner.capacity();
        let ranges = self.set.ranges();
        let i = ranges.partition_point(|r| r.1 <= self.pos);
        let next = match ranges.get(i) {
            Some(r) if r.0 <= self.pos => return Ok(None),
            Some(r) => r.0,
            None => cap,
        };
        if !self.skips || self.pos >= cap {
            return Ok(None);
        }
        match &mut self.pending {
            // A run read already reaches into the set: keep its part from there.
            Some(p) if p.offset + p.len > next => {
                let cut = next - p.offset;
                *p = DiskRun {
                    offset: next,
                    len: p.len - cut,
                    source: p.source_at(cut),
                };
            }
            _ => {
                if !self.inner.skip_to(next)? {
                    self.skips = false;
                    return Ok(None);
                }
                self.pending = None;
            }
        }
        let gap = DiskRun {
            offset: self.pos,
            len: next - self.pos,
            source: Source::Zero,
        };
        self.pos = next;
        Ok(Some(gap))
    }
}

impl VirtualDisk for ChangedOnly {
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }

    fn files(&self) -> &FileTable {
        self.inner.files()
    }

    fn next_run(&mut self) -> Result<Option<DiskRun>> {
        if let Some(gap) = self.skip_gap()? {
            return Ok(Some(gap));
        }
        let run = match self.pending.take() {
            Some(r) => r,
            None => match self.inner.next_run()? {
                Some(r) => r,
                None => return Ok(None),
            },
        };
        let end = run.offset + run.len;
        let ranges = self.set.ranges();
        let i = ranges.partition_point(|r| r.1 <= run.offset);
        let (cut, inside) = match ranges.get(i) {
            Some(r) if r.0 <= run.offset => (r.1.min(end), true),
            Some(r) => (r.0.min(end), false),
            None => (end, false),
        };
        if cut < end {
            let skip = cut - run.offset;
            self.pending = Some(DiskRun {
                offset: cut,
                len: end - cut,
                source: run.source_at(skip),
            });
        }
        let len = cut - run.offset;
        let source = if inside { run.source } else { Source::Zero };
        self.pos = cut;
        Ok(Some(DiskRun {
            offset: run.offset,
            len,
            source,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_areas_widen_to_whole_chunks() {
        let cs = 1 << 20;
        let set = ChunkSet::covering(
            [(10, 20), (cs + 5, cs + 6), (5 * cs - 1, 5 * cs + 1)],
            cs,
            6 * cs - 512,
        );
        assert_eq!(set.ranges(), &[(0, 2 * cs), (4 * cs, 6 * cs - 512)]);
        assert!(set.contains(0) && set.contains(cs) && !set.contains(2 * cs));
        assert!(set.contains(4 * cs) && set.contains(5 * cs) && !set.contains(3 * cs));
        assert_eq!(set.bytes(), 4 * cs - 512);
        assert_eq!(set.runs_in(0, cs), [(10, 20)]);
        assert_eq!(set.runs_in(cs, cs), [(5, 6)]);
        assert_eq!(set.runs_in(4 * cs, cs), [(cs as usize - 1, cs as usize)]);
        assert_eq!(set.runs_in(5 * cs, cs - 512), [(0, 1)]);
        assert!(set.runs_in(2 * cs, cs).is_empty());
    }
}
