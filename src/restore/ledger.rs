//! The accounting rule, in one place: every byte of every disk is restored from a record whose
//! digest checked, known to be zero, or reported lost (formats/ARCHIVE.md, "Accounting").
//!
//! Restore (one pass and seekable), verify and list all feed what they read into a [`Ledger`]
//! and take their lost ranges from [`Ledger::settle`]. A chunk without a record is zero only
//! when an authority says no record exists there:
//!
//! * the index, read intact, agreeing with every record that was read (each one listed at its
//!   place, in archive order) and with every disk end's record count; or
//! * the disk's DiskEnd record, read intact, whose record count equals the number of distinct
//!   chunk places of that disk that records were read for.
//!
//! Without either, nothing proves that a record did not go missing at a clean record boundary
//! (a cut that leaves every remaining record intact), so the unrestored rest of the disk is
//! reported lost with the reason. Memory is proportional to the records read, never to a
//! declared capacity.

use std::collections::{BTreeMap, BTreeSet};

use crate::archive::format::IndexEntry;

/// What happened to one chunk place of a disk.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Slot {
    /// Restored from a record whose plaintext hashed to this digest.
    Restored([u8; 32]),
    /// A record was there and could not be used. `final`: no later copy may take its place
    /// (two copies disagreed, or the place was passed); otherwise an intact copy later in the
    /// stream (a repeated stretch) restores it.
    Lost { why: String, last: bool },
}

/// One disk's tally.
#[derive(Default)]
struct DiskTally {
    capacity: u64,
    slots: BTreeMap<u64, Slot>,
    /// Record count of the disk's DiskEnd record, when one was read intact.
    end_count: Option<u64>,
    /// Why the disk's own count cannot be used (conflicting disk ends).
    end_problem: Option<String>,
    /// Its capacity is only where its last record ends: what lies past it is unknown.
    open_ended: bool,
}

/// What a new good record at a place means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Placed {
    /// First good record for the place: write it.
    New,
    /// The place was already restored with the same bytes (a repeated stretch of archive).
    Repeat,
    /// The place was restored, or reported lost, already; a record with other bytes, or one
    /// that arrived after its place was passed, cannot be placed (said why).
    Refused(String),
}

/// A disk range and why it is lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Loss {
    pub disk: u32,
    pub start: u64,
    pub end: u64,
    pub why: String,
}

/// Per disk, how many bytes ended up in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub restored: u64,
    pub zero: u64,
    pub lost: u64,
}

/// The accounting of one restore, verify or listing. See the module docs.
pub(crate) struct Ledger {
    chunk_size: u64,
    disks: Vec<DiskTally>,
    /// Data entries of an index that was read intact: disk → offsets.
    index: Option<Vec<BTreeSet<u64>>>,
    /// Why the index cannot serve as an authority (None when it can or was never read).
    index_problem: Option<String>,
}

impl Ledger {
    /// A ledger for disks of these capacities, cut in chunks of `chunk_size`.
    pub fn new(chunk_size: u64, capacities: impl IntoIterator<Item = u64>) -> Self {
        Ledger {
            chunk_size,
            disks: capacities
                .into_iter()
                .map(|capacity| DiskTally {
                    capacity,
                    ..Default::default()
                })
                .collect(),
            index: None,
            index_problem: None,
        }
    }

    fn slot_len(&self, disk: u32, offset: u64) -> u64 {
        self.chunk_size
            .min(self.disks[disk as usize].capacity.saturating_sub(offset))
    }

    /// Asks whether a good record for (disk, offset) with plaintext `digest` may be placed.
    /// `late`: the place is behind what an ordered output has already passed.
    pub fn offer(&mut self, disk: u32, offset: u64, digest: &[u8; 32], late: bool) -> Placed {
        let slots = &mut self.disks[disk as usize].slots;
        let why = match slots.get(&offset) {
            Some(Slot::Restored(d)) if d == digest => return Placed::Repeat,
            Some(Slot::Lost { why, last: true }) => return Placed::Refused(why.clone()),
            Some(Slot::Restored(_)) => "two records with different bytes for this chunk",
            _ if late => "record out of order (its place was already written)",
            _ => return Placed::New,
        };
        let why = why.to_string();
        let lost = Slot::Lost {
            why: why.clone(),
            last: true,
        };
        slots.insert(offset, lost);
        Placed::Refused(why)
    }

    /// The record offered last for this place was written.
    pub fn restored(&mut self, disk: u32, offset: u64, digest: &[u8; 32]) {
        self.disks[disk as usize]
            .slots
            .insert(offset, Slot::Restored(*digest));
    }

    /// A record (whose header is trusted) for this place was found but cannot be used. A place
    /// already restored stays restored: the damaged record was a second copy.
    pub fn lost(&mut self, disk: u32, offset: u64, why: &str) {
        let slots = &mut self.disks[disk as usize].slots;
        if !matches!(
            slots.get(&offset),
            Some(Slot::Restored(_) | Slot::Lost { last: true, .. })
        ) {
            slots.insert(
                offset,
                Slot::Lost {
                    why: why.to_string(),
                    last: false,
                },
            );
        }
    }

    /// A DiskEnd record read intact. Returns a problem to report, if any.
    pub fn disk_end(&mut self, disk: u32, data_records: u64) -> Option<String> {
        let t = &mut self.disks[disk as usize];
        match t.end_count {
            Some(c) if c != data_records => {
                let p = format!("two disk ends, counting {c} and {data_records} records");
                t.end_problem = Some(p.clone());
                Some(p)
            }
            _ => {
                t.end_count = Some(data_records);
                None
            }
        }
    }

    /// The index record, read intact. Its data entries become an authority on where records
    /// are once [`Self::settle`] has checked them against what was read.
    pub fn index(&mut self, entries: &[IndexEntry]) {
        let mut by_disk = vec![BTreeSet::new(); self.disks.len()];
        let mut last: Option<(u32, u64)> = None;
        for e in entries {
            if !e.kind.is_data() {
                continue;
            }
            let place = (e.disk, e.offset);
            let fits = (e.disk as usize) < self.disks.len()
                && e.offset % self.chunk_size == 0
                && e.offset < self.disks[e.disk as usize].capacity
                && last.is_none_or(|l| place > l);
            if !fits {
                self.index_problem = Some(format!(
                    "index entry for disk {} offset {:#x} is out of place",
                    e.disk, e.offset
                ));
                return;
            }
            last = Some(place);
            by_disk[e.disk as usize].insert(e.offset);
        }
        self.index = Some(by_disk);
    }

    /// `disk`'s capacity is only the end of its last record (a rebuilt manifest): the rest of
    /// the disk, up to the largest capacity the format allows, is reported lost.
    pub fn open_ended(&mut self, disk: u32) {
        self.disks[disk as usize].open_ended = true;
    }

    /// The index cannot be an authority (it was damaged, or disagrees with the records).
    pub fn index_unusable(&mut self, why: String) {
        self.index = None;
        self.index_problem.get_or_insert(why);
    }

    /// Checks the authorities against each other and against what was read; returns the
    /// problems found (each is damage to report). Call once, before [`Self::settle`].
    ///
    /// The index stays an authority when every disk end read agrees with its count: records
    /// read that it does not list are then not this archive's (a record image inside a disk's
    /// own data, found by a rescan) and [`Self::settle`] reports their places lost.
    pub fn check(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(index) = &self.index {
            let disagree = self.disks.iter().enumerate().find_map(|(d, t)| {
                let listed = index[d].len() as u64;
                t.end_count
                    .filter(|&c| c != listed)
                    .map(|c| format!("index lists {listed} records of disk {d}, its disk end {c}"))
            });
            if let Some(w) = disagree {
                problems.push(w.clone());
                self.index_unusable(w);
            }
        }
        for (d, t) in self.disks.iter().enumerate() {
            if let Some(index) = &self.index {
                if let Some(o) = t.slots.keys().find(|o| !index[d].contains(o)) {
                    problems.push(format!(
                        "a record of disk {d} at {o:#x} is not in the index: not this archive's"
                    ));
                }
            } else if let Some(c) = t.end_count {
                let read = t.slots.len() as u64;
                if c != read {
                    problems.push(format!(
                        "disk end of disk {d} counts {c} records, {read} were read"
                    ));
                }
            }
        }
        problems
    }

    /// Why the unrestored places of `disk` without a record cannot be called zero, or None
    /// when an authority confirms them.
    fn unconfirmed(&self, disk: usize) -> Option<String> {
        if self.index.is_some() {
            return None;
        }
        let t = &self.disks[disk];
        if t.end_problem.is_none() && t.end_count == Some(t.slots.len() as u64) {
            return None;
        }
        let index = self
            .index_problem
            .clone()
            .unwrap_or_else(|| "no intact index".into());
        let end = match (&t.end_problem, t.end_count) {
            (Some(p), _) => p.clone(),
            (None, Some(c)) => format!("its disk end counts {c} records, {} read", t.slots.len()),
            (None, None) => "no intact disk end".into(),
        };
        Some(format!(
            "no record read; not confirmed zero ({index}; {end})"
        ))
    }

    /// The lost ranges of `disk` (coalesced where the reason is the same) and its tally.
    pub fn settle(&self, disk: u32) -> (Vec<Loss>, Tally) {
        let d = disk as usize;
        let t = &self.disks[d];
        let unconfirmed = self.unconfirmed(d);
        let listed = self.index.as_ref().map(|i| &i[d]);
        let mut out: Vec<Loss> = Vec::new();
        let mut tally = Tally::default();
        let mut lose = |start: u64, end: u64, why: &str, out: &mut Vec<Loss>| {
            if start >= end {
                return;
            }
            tally.lost += end - start;
            match out.last_mut() {
                Some(l) if l.end == start && l.why == why => l.end = end,
                _ => out.push(Loss {
                    disk,
                    start,
                    end,
                    why: why.to_string(),
                }),
            }
        };
        // Places with a record read, and places the index lists that were not read.
        let mut known: BTreeMap<u64, Option<&Slot>> =
            t.slots.iter().map(|(o, s)| (*o, Some(s))).collect();
        if let Some(l) = listed {
            for o in l {
                known.entry(*o).or_insert(None);
            }
        }
        let mut pos = 0u64;
        for (&o, slot) in &known {
            let o = o.min(t.capacity);
            // The stretch before this place has no record.
            match &unconfirmed {
                Some(why) => lose(pos, o, why, &mut out),
                None => tally.zero += o.saturating_sub(pos),
            }
            let end = o + self.slot_len(disk, o);
            let foreign = listed.is_some_and(|l| !l.contains(&o));
            match slot {
                Some(_) if foreign => lose(
                    o,
                    end,
                    "a record the index does not list was read here: not this archive's",
                    &mut out,
                ),
                Some(Slot::Restored(_)) => tally.restored += end - o,
                Some(Slot::Lost { why, .. }) => lose(o, end, why, &mut out),
                None => lose(
                    o,
                    end,
                    "its record was not read (in unreadable bytes)",
                    &mut out,
                ),
            }
            pos = end;
        }
        match &unconfirmed {
            Some(why) => lose(pos, t.capacity, why, &mut out),
            None => tally.zero += t.capacity.saturating_sub(pos),
        }
        if t.open_ended {
            // Beyond the image: not in the tally, which covers the capacity.
            out.push(Loss {
                disk,
                start: t.capacity,
                end: crate::archive::manifest::MAX_CAPACITY_BYTES.max(t.capacity),
                why: "past the last record read: the disk's size is unknown (its manifest and \
                      disk end are lost)"
                    .into(),
            });
        }
        (out, tally)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::format::RecordKind;

    const CS: u64 = 0x10000;

    fn entry(disk: u32, offset: u64) -> IndexEntry {
        IndexEntry {
            record_offset: 0,
            offset,
            disk,
            kind: RecordKind::Chunk,
            codec: crate::archive::Codec::None,
            stored_len: 0,
            raw_len: 0,
        }
    }

    fn spans(l: &Ledger, disk: u32) -> Vec<(u64, u64)> {
        l.settle(disk).0.iter().map(|x| (x.start, x.end)).collect()
    }

    #[test]
    fn a_counted_disk_end_confirms_zeros() {
        let mut l = Ledger::new(CS, [8 * CS]);
        l.restored(0, 2 * CS, &[1; 32]);
        l.disk_end(0, 1);
        assert!(l.check().is_empty());
        let (lost, t) = l.settle(0);
        assert!(lost.is_empty());
        assert_eq!((t.restored, t.zero, t.lost), (CS, 7 * CS, 0));
    }

    #[test]
    fn without_an_authority_the_unrestored_rest_is_lost() {
        let mut l = Ledger::new(CS, [8 * CS]);
        l.restored(0, 2 * CS, &[1; 32]);
        assert_eq!(spans(&l, 0), vec![(0, 2 * CS), (3 * CS, 8 * CS)]);
        // A disk end that counts more records than were read proves nothing either.
        l.disk_end(0, 2);
        assert_eq!(l.check().len(), 1);
        assert_eq!(spans(&l, 0), vec![(0, 2 * CS), (3 * CS, 8 * CS)]);
    }

    #[test]
    fn the_index_localizes_records_that_were_not_read() {
        let mut l = Ledger::new(CS, [8 * CS]);
        l.restored(0, 0, &[1; 32]);
        l.index(&[entry(0, 0), entry(0, 3 * CS), entry(0, 4 * CS)]);
        assert!(l.check().is_empty());
        assert_eq!(spans(&l, 0), vec![(3 * CS, 5 * CS)]);
        let t = l.settle(0).1;
        assert_eq!((t.restored, t.zero, t.lost), (CS, 5 * CS, 2 * CS));
    }

    #[test]
    fn a_record_the_index_does_not_list_is_foreign() {
        let mut l = Ledger::new(CS, [4 * CS]);
        l.restored(0, CS, &[1; 32]);
        l.index(&[]);
        assert_eq!(l.check().len(), 1);
        assert_eq!(spans(&l, 0), vec![(CS, 2 * CS)]);
        // Unless a disk end disagrees with the index: then the index is not believed, and the
        // disk end (it counts 1, one record was read) confirms the rest.
        let mut l = Ledger::new(CS, [4 * CS]);
        l.restored(0, CS, &[1; 32]);
        l.index(&[]);
        l.disk_end(0, 1);
        assert_eq!(l.check().len(), 1);
        assert!(spans(&l, 0).is_empty());
    }

    #[test]
    fn repeats_conflicts_and_late_records() {
        let mut l = Ledger::new(CS, [4 * CS]);
        assert_eq!(l.offer(0, 0, &[1; 32], false), Placed::New);
        l.restored(0, 0, &[1; 32]);
        assert_eq!(l.offer(0, 0, &[1; 32], true), Placed::Repeat);
        // A damaged second copy does not undo the restored first one.
        l.lost(0, 0, "checksum mismatch");
        // An intact copy after a damaged one restores the place, unless it comes too late.
        l.lost(0, 2 * CS, "checksum mismatch");
        assert_eq!(l.offer(0, 2 * CS, &[4; 32], false), Placed::New);
        l.restored(0, 2 * CS, &[4; 32]);
        assert!(matches!(l.offer(0, CS, &[2; 32], true), Placed::Refused(_)));
        assert!(matches!(l.offer(0, 0, &[3; 32], true), Placed::Refused(_)));
        l.disk_end(0, 3);
        assert!(l.check().is_empty());
        // The conflicting copy makes the first one untrustworthy too.
        assert_eq!(spans(&l, 0), vec![(0, CS), (CS, 2 * CS)]);
    }

    #[test]
    fn a_huge_declared_capacity_costs_nothing() {
        let mut l = Ledger::new(CS, [1 << 46]);
        l.disk_end(0, 0);
        let (lost, t) = l.settle(0);
        assert!(lost.is_empty());
        assert_eq!(t.zero, 1 << 46);
    }
}
