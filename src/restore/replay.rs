//! The one-pass engine: reads every event of a [`StreamReader`] in order, places chunks through
//! a [`Target`] and enters everything it learns in the [`Book`]'s ledger.

use crate::archive::format::{IndexEntry, RecordHeader, RecordKind, INDEX_ENTRY_BYTES};
use crate::archive::reader::{Event, Record, StreamReader};
use crate::error::Result;

use super::book::Book;
use super::ledger::Placed;
use super::{ref_source, Target};

/// Options of the engine beyond [`super::RestoreOptions`].
#[derive(Default)]
pub(crate) struct Replay<'o> {
    /// Compare the index record byte for byte with the records seen (verify).
    pub check_index: bool,
    /// Shown every good record's header (list's tallies).
    pub observe: Option<&'o mut dyn FnMut(&RecordHeader)>,
}

/// The engine's position: what an ordered output has passed, and what verify compares the
/// index with.
struct Cursor {
    /// (disk ordinal, offset) up to which outputs have been written; a record behind it
    /// arrives too late to be placed.
    last: (u32, u64),
    seen: Vec<IndexEntry>,
    /// Places restored from a BasePatch record: a Ref may not name them (formats/ARCHIVE.md),
    /// which the seekable path enforces by looking Ref targets up among Chunk records only.
    patched: std::collections::HashSet<(u32, u64)>,
}

/// Reads every event and places chunks through `target`. Returns the stream offset where
/// reading ended.
pub(super) fn replay(
    reader: &mut StreamReader<'_>,
    target: &mut dyn Target,
    book: &mut Book<'_>,
    mut how: Replay<'_>,
) -> Result<u64> {
    let mut cur = Cursor {
        last: (0, 0),
        seen: Vec::new(),
        patched: Default::default(),
    };
    while let Some(ev) = reader.next_event()? {
        book.cancel.check()?;
        book.report.records += 1;
        match ev {
            Event::Record(r) => {
                if let Some(f) = how.observe.as_mut() {
                    f(&r.header);
                }
                record(r, target, book, &how, &mut cur)?
            }
            Event::Damaged {
                at,
                header: h,
                what,
            } => book.record_damage(at, h.kind, h.disk, h.offset, h.raw_len, what)?,
            Event::Skipped { from, to, what } => book.general_damage(
                from,
                format!("unreadable bytes {from:#x}..{to:#x} ({what})"),
            )?,
            Event::Truncated { at } => {
                book.general_damage(at, "archive truncated (no footer)".into())?
            }
            Event::Footer { at, problem, .. } => {
                if let Some(p) = problem {
                    book.general_damage(at, p)?;
                }
            }
        }
    }
    Ok(reader.position())
}

/// One good record.
fn record(
    r: Record,
    target: &mut dyn Target,
    book: &mut Book<'_>,
    how: &Replay<'_>,
    cur: &mut Cursor,
) -> Result<()> {
    let h = r.header;
    if how.check_index
        && matches!(
            h.kind,
            RecordKind::File
                | RecordKind::Chunk
                | RecordKind::Ref
                | RecordKind::BaseRef
                | RecordKind::BasePatch
        )
    {
        cur.seen.push(IndexEntry {
            record_offset: r.at,
            offset: h.offset,
            disk: h.disk,
            kind: h.kind,
            codec: h.codec,
            stored_len: h.stored_len as u32,
            raw_len: h.raw_len as u32,
        });
    }
    match h.kind {
        RecordKind::File => book.place_file(target, h.disk, h.offset, &r.data)?,
        RecordKind::Chunk | RecordKind::Ref | RecordKind::BaseRef | RecordKind::BasePatch => {
            data_record(&r, target, book, cur)?
        }
        RecordKind::DiskEnd => {
            let count = r
                .data
                .get(..8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("invariant: 8 bytes")));
            if let Some(p) = count.and_then(|c| book.ledger.disk_end(h.disk, c)) {
                book.record_damage(r.at, h.kind, h.disk, h.offset, 0, p)?;
            }
            cur.last = cur.last.max((h.disk, h.offset));
        }
        RecordKind::Index => index(&r, book, how, cur)?,
        RecordKind::Manifest => {}
    }
    Ok(())
}

/// A good Chunk or Ref record: placed unless its place was restored or passed already.
fn data_record(
    r: &Record,
    target: &mut dyn Target,
    book: &mut Book<'_>,
    cur: &mut Cursor,
) -> Result<()> {
    let h = &r.header;
    let here = (h.disk, h.offset);
    let late = here < cur.last && !target.random_access(h.disk);
    match book.ledger.offer(h.disk, h.offset, &h.digest, late) {
        Placed::New => {}
        Placed::Repeat => {
            return book.record_damage(
                r.at,
                h.kind,
                h.disk,
                h.offset,
                h.raw_len,
                "record repeated (its chunk was restored from an earlier copy)".into(),
            );
        }
        Placed::Refused(why) => {
            return book.record_damage(r.at, h.kind, h.disk, h.offset, h.raw_len, why)
        }
    }
    let placed = match h.kind {
        RecordKind::Chunk => {
            target.write_chunk(h.disk, h.offset, &r.data, &h.digest)?;
            Ok(())
        }
        RecordKind::BaseRef => match book.own_base_place(h, &r.data) {
            Some(src) if target.keeps(h.disk, h.offset, src) => Ok(()),
            _ => match book.base_chunk(h, &r.data)? {
                Some(Ok(data)) => {
                    target.write_chunk(h.disk, h.offset, &data, &h.digest)?;
                    Ok(())
                }
                Some(Err(why)) => Err(why),
                None => Ok(()),
            },
        },
        RecordKind::BasePatch => match book.patched_chunk(h, &r.data)? {
            Some(Ok(data)) => {
                target.write_chunk(h.disk, h.offset, &data, &h.digest)?;
                cur.patched.insert(here);
                Ok(())
            }
            Some(Err(why)) => Err(why),
            None => {
                cur.patched.insert(here);
                Ok(())
            }
        },
        _ => match ref_source(&r.data, here, book.names.len()) {
            Some(src) if cur.patched.contains(&src) => {
                Err("reference to a base patch (a Ref names Chunk records only)".to_string())
            }
            Some(src) if target.copy_chunk(src, here, h.raw_len, &h.digest)? => Ok(()),
            _ => Err("referenced chunk missing or damaged".to_string()),
        },
    };
    cur.last = cur.last.max((h.disk, h.offset + h.raw_len));
    match placed {
        Ok(()) => {
            book.ledger.restored(h.disk, h.offset, &h.digest);
            Ok(())
        }
        Err(why) => book.record_damage(r.at, h.kind, h.disk, h.offset, h.raw_len, why),
    }
}

/// The index record: an authority for the ledger, and for verify compared with the records.
fn index(r: &Record, book: &mut Book<'_>, how: &Replay<'_>, cur: &Cursor) -> Result<()> {
    let entries: Option<Vec<IndexEntry>> = r
        .data
        .chunks(INDEX_ENTRY_BYTES)
        .map(|e| {
            let e: &[u8; INDEX_ENTRY_BYTES] = e.try_into().ok()?;
            IndexEntry::decode(e, r.at).ok()
        })
        .collect();
    match entries {
        Some(es) => book.ledger.index(&es),
        None => {
            let what = "index entries do not decode".to_string();
            book.ledger.index_unusable(what.clone());
            return book.general_damage(r.at, what);
        }
    }
    if how.check_index && book.report.damage.is_empty() {
        let want: Vec<u8> = cur.seen.iter().flat_map(|e| e.encode()).collect();
        if want != r.data {
            return book.general_damage(r.at, "index does not match the records".into());
        }
    }
    Ok(())
}
