//! What the redo-log readers (COWD, SEsparse) share about reading their grain tables: a window
//! of raw tables that reads a batch at once from a source that can run reads concurrently, and
//! a small cache of decoded tables for mapping.

use std::ops::Index;

use super::source::read_each;
use super::ByteSource;
use crate::error::Result;

/// Tables read at once from a source that can run reads concurrently: where every read is a
/// network round trip, the tables of one walk (4,096 for an 8 GiB COWD redo log, scattered among
/// the grains they map) then cost a round trip per batch rather than one per table.
const BATCH: usize = 64;

/// Tables mapping consults at once; their grain-table lookups are sequential, so a few slots
/// are enough (qemu keeps 16 for random access, which vdar does not need).
const CACHE_SLOTS: usize = 4;

/// Raw grain tables as read from the file: table `held[k]` (a directory index) is
/// `bytes[k * table_bytes..][..table_bytes]`. The default holds no tables of no size, a
/// placeholder while a reader lends its window out.
#[derive(Default)]
pub(crate) struct TableWindow {
    table_bytes: usize,
    held: Vec<usize>,
    bytes: Vec<u8>,
    /// What the joined reads of the last batch fetched, kept to be reused by the next.
    fetched: Vec<u8>,
}

impl TableWindow {
    /// An empty window for tables of `table_bytes` bytes.
    pub fn new(table_bytes: u64) -> TableWindow {
        TableWindow {
            table_bytes: table_bytes as usize,
            held: Vec::new(),
            bytes: Vec::new(),
            fetched: Vec::new(),
        }
    }

    /// The bytes of table `index` of a directory of `count` entries, where `at(i)` is the byte
    /// offset of table `i` (`None`: no table) and `at(index)` is a table checked to lie inside
    /// the file. A miss reads this table and the next ones in directory order, up to a batch
    /// when `src` can run reads concurrently.
    pub fn table(
        &mut self,
        src: &dyn ByteSource,
        index: usize,
        count: usize,
        at: impl Fn(usize) -> Option<u64>,
    ) -> Result<&[u8]> {
        let n = self.table_bytes;
        let k = match self.held.iter().position(|&i| i == index) {
            Some(k) => k,
            None => {
                let round_trips = src.concurrent_reads() > 1 || src.gather_gap() > 0;
                let batch = if round_trips { BATCH } else { 1 };
                self.held.clear();
                let offsets: Vec<u64> = (index..count)
                    .filter_map(|i| at(i).map(|o| (i, o)))
                    .take(batch)
                    .map(|(i, o)| {
                        self.held.push(i);
                        o
                    })
                    .collect();
                if let Err(e) = self.fill(src, &offsets) {
                    self.held.clear();
                    return Err(e);
                }
                0
            }
        };
        Ok(&self.bytes[k * n..(k + 1) * n])
    }

    /// Reads the tables at `offsets` into `bytes`, in order, through the reads [`spans`] plans.
    fn fill(&mut self, src: &dyn ByteSource, offsets: &[u64]) -> Result<()> {
        let n = self.table_bytes;
        // Read through at most two tables' worth of grain data to join two tables: every byte
        // of it is fetched again when the backup reads that grain, and the bytes a backup
        // fetches should stay close to what the files allocate.
        let gap = src.gather_gap().min(2 * n as u64);
        let spans = spans(offsets, n as u64, gap);
        let total: u64 = spans.iter().map(|s| s.end - s.start).sum();
        self.fetched.resize(total as usize, 0);
        let mut reads: Vec<(u64, &mut [u8])> = Vec::with_capacity(spans.len());
        let mut rest = self.fetched.as_mut_slice();
        for s in &spans {
            let (buf, tail) = rest.split_at_mut((s.end - s.start) as usize);
            reads.push((s.start, buf));
            rest = tail;
        }
        read_each(src, &mut reads)?;
        self.bytes.resize(offsets.len() * n, 0);
        let mut base = 0usize;
        for span in &spans {
            for &k in &span.tables {
                let from = base + (offsets[k] - span.start) as usize;
                self.bytes[k * n..(k + 1) * n].copy_from_slice(&self.fetched[from..from + n]);
            }
            base += (span.end - span.start) as usize;
        }
        Ok(())
    }
}

/// One read of [`TableWindow::fill`]: bytes `[start, end)` of the file, holding the tables whose
/// positions in the batch are `tables`.
#[derive(Debug, PartialEq, Eq)]
struct Span {
    start: u64,
    end: u64,
    tables: Vec<usize>,
}

/// The reads that fetch tables of `table_bytes` at `offsets`: in file order, joining a table to
/// the read before it when no more than `gap` bytes lie between them (SEsparse keeps its tables
/// side by side in one area, so a batch becomes one read). A span is at most
/// `offsets.len() * (table_bytes + gap)` long.
fn spans(offsets: &[u64], table_bytes: u64, gap: u64) -> Vec<Span> {
    let mut order: Vec<usize> = (0..offsets.len()).collect();
    order.sort_by_key(|&k| offsets[k]);
    let mut spans: Vec<Span> = Vec::new();
    for k in order {
        let start = offsets[k];
        let end = start + table_bytes;
        match spans.last_mut() {
            Some(s) if start <= s.end.saturating_add(gap) => {
                s.end = s.end.max(end);
                s.tables.push(k);
            }
            _ => spans.push(Span {
                start,
                end,
                tables: vec![k],
            }),
        }
    }
    spans
}

/// One decoded grain table.
pub(crate) struct CachedTable<E> {
    gd_index: u64,
    /// Byte offset of the table, for error messages.
    pub offset: u64,
    pub entries: Vec<E>,
    used: u64,
}

/// The tables mapping used last, least recently used evicted first.
pub(crate) struct TableCache<E> {
    slots: Vec<CachedTable<E>>,
    tick: u64,
}

impl<E: Copy + Default> TableCache<E> {
    pub fn new() -> TableCache<E> {
        TableCache {
            slots: Vec::with_capacity(CACHE_SLOTS),
            tick: 0,
        }
    }

    /// The slot holding table `gd_index`, filled on a miss by `load`, which decodes the table's
    /// `entries` entries into the slice it is given and returns the table's byte offset.
    pub fn slot(
        &mut self,
        gd_index: u64,
        entries: usize,
        load: impl FnOnce(&mut [E]) -> Result<u64>,
    ) -> Result<usize> {
        self.tick += 1;
        if let Some(i) = self.slots.iter().position(|s| s.gd_index == gd_index) {
            self.slots[i].used = self.tick;
            return Ok(i);
        }
        let i = if self.slots.len() < CACHE_SLOTS {
            self.slots.push(CachedTable {
                gd_index: u64::MAX,
                offset: 0,
                entries: vec![E::default(); entries],
                used: 0,
            });
            self.slots.len() - 1
        } else {
            let (i, _) = self
                .slots
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.used)
                .expect("invariant: the cache is full, so not empty");
            i
        };
        let slot = &mut self.slots[i];
        // Until `load` succeeds the slot holds no table.
        slot.gd_index = u64::MAX;
        slot.offset = load(&mut slot.entries)?;
        slot.gd_index = gd_index;
        slot.used = self.tick;
        Ok(i)
    }
}

impl<E> Index<usize> for TableCache<E> {
    type Output = CachedTable<E>;

    fn index(&self, i: usize) -> &CachedTable<E> {
        &self.slots[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::input::slow_source::SlowSource;
    use crate::input::MemSource;

    /// Table `i` of a 16-entry directory lives at `i * 1000` for even `i`; odd entries have none.
    fn at(i: usize) -> Option<u64> {
        (i % 2 == 0).then_some(i as u64 * 1000)
    }

    fn file() -> Vec<u8> {
        (0..16_000u32).map(|i| (i / 1000) as u8).collect()
    }

    #[test]
    fn a_batch_is_read_concurrently_and_served_from_the_window() {
        let slow = SlowSource::new(&file(), None);
        let mut w = TableWindow::new(100);
        assert_eq!(w.table(&slow, 2, 16, at).unwrap(), &[2u8; 100][..]);
        assert!(slow.peak() > 1, "the batch was read one table at a time");
        assert_eq!(w.held, vec![2, 4, 6, 8, 10, 12, 14]);
        assert_eq!(w.table(&slow, 14, 16, at).unwrap(), &[14u8; 100][..]);
        // A table before the window is a miss that starts a new one.
        assert_eq!(w.table(&slow, 0, 16, at).unwrap(), &[0u8; 100][..]);
        assert_eq!(w.held[0], 0);
    }

    #[test]
    fn tables_close_together_are_joined_into_one_read() {
        let span = |start, end, tables: &[usize]| Span {
            start,
            end,
            tables: tables.to_vec(),
        };
        // Out of file order, one gap of 900 bytes and one of 1900.
        let offsets = [2000, 0, 4000, 1000];
        assert_eq!(
            spans(&offsets, 100, 900),
            vec![span(0, 2100, &[1, 3, 0]), span(4000, 4100, &[2])]
        );
        assert_eq!(
            spans(&offsets, 100, 1900),
            vec![span(0, 4100, &[1, 3, 0, 2])]
        );
        assert_eq!(spans(&offsets, 100, 0).len(), 4);
        // Overlapping tables (a damaged directory) share one read without growing it.
        assert_eq!(spans(&[0, 50], 100, 0), vec![span(0, 150, &[0, 1])]);

        let mem = MemSource::new("mem", file()).gathering(1 << 20);
        let mut w = TableWindow::new(100);
        assert_eq!(w.table(&mem, 2, 16, at).unwrap(), &[2u8; 100][..]);
        assert_eq!(w.held, vec![2, 4, 6, 8, 10, 12, 14]);
        assert_eq!(w.table(&mem, 8, 16, at).unwrap(), &[8u8; 100][..]);
    }

    #[test]
    fn a_serial_source_reads_one_table_at_a_time() {
        let mem = MemSource::new("mem", file());
        let mut w = TableWindow::new(100);
        assert_eq!(w.table(&mem, 4, 16, at).unwrap(), &[4u8; 100][..]);
        assert_eq!(w.held, vec![4]);
    }

    #[test]
    fn a_failed_batch_holds_nothing() {
        let slow = SlowSource::new(&file(), Some(6000));
        let mut w = TableWindow::new(100);
        match w.table(&slow, 2, 16, at).unwrap_err() {
            Error::Io { offset, .. } => assert_eq!(offset, Some(6000)),
            e => panic!("{e}"),
        }
        assert!(w.held.is_empty());
    }

    #[test]
    fn the_cache_loads_on_a_miss_and_evicts_the_least_recently_used() {
        let mut cache = TableCache::<u32>::new();
        let mut loads = 0;
        let mut get = |cache: &mut TableCache<u32>, gd: u64| {
            cache
                .slot(gd, 3, |e| {
                    loads += 1;
                    e.fill(gd as u32);
                    Ok(gd * 10)
                })
                .map(|i| (cache[i].entries.clone(), cache[i].offset))
                .unwrap()
        };
        for gd in [1, 2, 3, 4, 1] {
            assert_eq!(get(&mut cache, gd), (vec![gd as u32; 3], gd * 10));
        }
        // Table 5 evicts table 2, the least recently used; 1 stays cached.
        get(&mut cache, 5);
        get(&mut cache, 1);
        get(&mut cache, 2);
        // Loads: 1, 2, 3, 4, 5 and 2 again; 1 never twice.
        assert_eq!(loads, 6);
    }

    #[test]
    fn a_failed_load_leaves_no_table_behind() {
        let mut cache = TableCache::<u32>::new();
        let lost = || Error::io("t", Some(0), std::io::Error::other("lost"));
        assert!(cache.slot(7, 3, |_| Err(lost())).is_err());
        let i = cache.slot(7, 3, |e| {
            e.fill(7);
            Ok(70)
        });
        assert_eq!(cache[i.unwrap()].entries, vec![7; 3]);
    }
}
