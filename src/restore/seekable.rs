//! Restore through the footer and the index: only the selected disks' records (and the chunks
//! they reference) are read. The index is trusted only after [`SeekableArchive::check_layout`]
//! has found that it and the disk-end records account for every byte of the archive; with
//! `salvage`, an archive that fails that check is restored in one pass instead.

use std::collections::HashMap;
use std::path::Path;

use crate::archive::format::{IndexEntry, RecordHeader, RecordKind};
use crate::archive::index::{ReadSeek, RecordRead, SeekableArchive};
use crate::archive::reader::decode_payload;
use crate::base::recipe::Recipe;
use crate::error::Result;

use super::book::Book;
use super::raw::FsTarget;
use super::{
    open_target, ref_source, restore_reader, salvage, Dest, RestoreOptions, RestoreReport,
};
use super::{Selection, Target};

/// Chunk records a seekable restore decodes at once (all cores); with 4 MiB chunks, 32 MiB of
/// plaintext per batch, two batches in flight.
const DECODE_AHEAD_RECORDS: usize = 8;

/// A record read through the index, not yet decoded.
enum Raw {
    /// Decoded as it is.
    Record(RecordRead),
    /// A BaseRef or BasePatch: the records holding its bytes, in the bases, and the Chunk
    /// header its bytes are placed under.
    Rebuilt(RecordHeader, Recipe),
}

/// Decodes a batch on all cores.
fn decode_all(raws: Vec<Raw>) -> Vec<RecordRead> {
    use rayon::prelude::*;
    raws.into_par_iter()
        .map(|r| match r {
            Raw::Record(r) => {
                r.and_then(|(h, payload)| decode_payload(&h, payload).map(|d| (h, d)))
            }
            Raw::Rebuilt(h, recipe) => recipe.into_bytes().map(|d| (h, d)),
        })
        .collect()
}

/// A batch of raw chunk records being decoded on another thread.
struct PendingBatch {
    idx: Vec<usize>,
    handle: std::thread::JoinHandle<Vec<RecordRead>>,
}

impl PendingBatch {
    fn spawn(idx: Vec<usize>, raws: Vec<Raw>) -> Self {
        let handle = std::thread::spawn(move || decode_all(raws));
        PendingBatch { idx, handle }
    }

    /// The decoded records keyed by entry position.
    fn join(self) -> impl Iterator<Item = (usize, RecordRead)> {
        let decoded = self
            .handle
            .join()
            .expect("invariant: decoding returns errors, it does not panic");
        self.idx.into_iter().zip(decoded)
    }
}

/// Restores using the footer and the index. See the module docs.
pub fn restore_seekable(
    input: &mut dyn ReadSeek,
    target_dir: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    restore_seekable_to(input, Dest::Dir(target_dir.to_path_buf()), opts)
}

/// Opens the archive and checks its layout.
fn open_checked(input: &mut dyn ReadSeek) -> Result<(SeekableArchive<'_>, Vec<u64>)> {
    let mut ar = SeekableArchive::open(input)?;
    let counts = ar.check_layout()?;
    Ok((ar, counts))
}

/// [`restore_seekable`] to any [`Dest`].
pub fn restore_seekable_to(
    input: &mut dyn ReadSeek,
    dest: Dest,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    if !opts.salvage {
        return restore_indexed(input, dest, opts);
    }
    // A salvage reads through the index only while the archive is undamaged: damage found
    // there (a record moved, swapped or cut) is read past far better in one pass, which meets
    // every record wherever it is. Only a directory can be written again from the start.
    let first = match &dest {
        Dest::Dir(d) => {
            let strict = RestoreOptions {
                salvage: false,
                ..opts.clone()
            };
            match restore_indexed(input, Dest::Dir(d.clone()), &strict) {
                Err(e) if salvage::is_damage(&e) => e.to_string(),
                r => return r,
            }
        }
        _ => "restored in one pass (salvage to a stream)".into(),
    };
    let (reader, front) = salvage::open_seekable(input, true)?;
    let what = front.unwrap_or(format!("index path stopped, restored in one pass: {first}"));
    restore_reader(reader, dest, opts, Some(what))
}

/// The restore through the index, once the layout checks out.
fn restore_indexed(
    input: &mut dyn ReadSeek,
    dest: Dest,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let (mut ar, counts) = open_checked(input)?;
    let manifest = ar.manifest.clone();
    let (mut target, sel) = open_target(dest, &manifest, opts, false)?;
    let mut book = Book::new(&manifest, sel, opts);
    book.ledger.index(&ar.index);
    for (d, c) in counts.iter().enumerate() {
        book.ledger.disk_end(d as u32, *c);
    }
    let entries = std::mem::take(&mut ar.index);
    place_all(&mut ar, &entries, &mut target, &mut book)?;
    let mut report = book.finish(ar.footer.index_offset)?;
    target.finish()?;
    target.fill_paths(&mut report);
    Ok(report)
}

/// Whether the selection covers the record an entry names.
fn wanted(sel: &Selection, e: &IndexEntry) -> bool {
    match e.kind {
        RecordKind::File => sel.vms.get(e.disk as usize).copied().unwrap_or(false),
        _ => sel.disks.get(e.disk as usize).copied().unwrap_or(false),
    }
}

/// Reads every wanted record through the index and places it, decoding chunk records ahead
/// on the other cores.
fn place_all(
    ar: &mut SeekableArchive<'_>,
    entries: &[IndexEntry],
    target: &mut FsTarget,
    book: &mut Book<'_>,
) -> Result<()> {
    // Where each chunk's record is, for the Refs that name it.
    let chunks: HashMap<(u32, u64), IndexEntry> = entries
        .iter()
        .filter(|e| e.kind == RecordKind::Chunk)
        .map(|e| ((e.disk, e.offset), *e))
        .collect();
    // Chunk records decoded ahead, in parallel, keyed by entry position; the next batch
    // decodes on the other cores while this one is written (`pending`).
    let mut ahead: HashMap<usize, RecordRead> = HashMap::new();
    let mut pending: Option<PendingBatch> = None;
    let plan = |sel: &Selection, from: usize| -> Vec<(usize, IndexEntry)> {
        entries[from..]
            .iter()
            .enumerate()
            .map(|(j, x)| (from + j, *x))
            .filter(|(_, x)| decoded_ahead(x) && wanted(sel, x))
            .take(DECODE_AHEAD_RECORDS)
            .collect()
    };
    for (i, e) in entries.iter().enumerate() {
        if !wanted(&book.sel, e) {
            continue;
        }
        book.cancel.check()?;
        if decoded_ahead(e) && ahead.is_empty() {
            match pending.take() {
                Some(p) => ahead.extend(p.join()),
                None => {
                    let batch = plan(&book.sel, i);
                    let raws = read_raws(ar, book, &batch)?;
                    for ((j, _), r) in batch.iter().zip(decode_all(raws)) {
                        ahead.insert(*j, r);
                    }
                }
            }
            if let Some(&last) = ahead.keys().max() {
                let batch = plan(&book.sel, last + 1);
                if !batch.is_empty() {
                    let raws = read_raws(ar, book, &batch)?;
                    let idx = batch.into_iter().map(|(j, _)| j).collect();
                    pending = Some(PendingBatch::spawn(idx, raws));
                }
            }
        }
        book.report.records += 1;
        let record = match ahead.remove(&i) {
            Some(r) => r,
            None => ar.read_record(e)?,
        };
        match record {
            Ok((h, data)) => place(ar, &chunks, e.record_offset, &h, &data, target, book)?,
            Err(what) => book.record_damage(
                e.record_offset,
                e.kind,
                e.disk,
                e.offset,
                e.raw_len.into(),
                what,
            )?,
        }
    }
    Ok(())
}

/// Whether a record is read ahead and decoded on the other cores: a Chunk, or a BaseRef (its
/// bytes are a Chunk record of a base archive).
fn decoded_ahead(e: &IndexEntry) -> bool {
    matches!(
        e.kind,
        RecordKind::Chunk | RecordKind::BaseRef | RecordKind::BasePatch
    )
}

/// The raw records of `batch`, not yet decoded; a BaseRef's or BasePatch's are the base
/// records that hold its bytes ([`Book::base_recipe`], [`Book::patch_recipe`]), to be placed
/// under a Chunk header for its place.
fn read_raws(
    ar: &mut SeekableArchive<'_>,
    book: &mut Book<'_>,
    batch: &[(usize, IndexEntry)],
) -> Result<Vec<Raw>> {
    let es: Vec<IndexEntry> = batch.iter().map(|(_, x)| *x).collect();
    let mut out = Vec::with_capacity(es.len());
    for (e, r) in es.iter().zip(ar.read_raws(&es)?) {
        let rebuilt = match r {
            Ok((h, payload)) if book.has_bases() && e.kind == RecordKind::BaseRef => {
                // Kept in place: nothing to read (see `place`).
                let found = match book.own_base_place(&h, &payload) {
                    Some(_) => None,
                    None => book.base_recipe(&h, &payload)?,
                };
                match found {
                    Some(r) => rebuilt(h, r),
                    None => Raw::Record(Ok((h, payload))),
                }
            }
            Ok((h, payload)) if book.has_bases() && e.kind == RecordKind::BasePatch => {
                match book.patch_recipe(&h, &payload)? {
                    Some(r) => rebuilt(h, r),
                    None => Raw::Record(Ok((h, payload))),
                }
            }
            r => Raw::Record(r),
        };
        out.push(rebuilt);
    }
    Ok(out)
}

/// The [`Raw`] for a base record found (or not) in the bases, placed under a Chunk header at
/// `h`'s place.
fn rebuilt(h: RecordHeader, r: std::result::Result<Recipe, String>) -> Raw {
    let here = RecordHeader {
        kind: RecordKind::Chunk,
        codec: crate::archive::format::Codec::None,
        stored_len: h.raw_len,
        ..h
    };
    match r {
        Ok(recipe) => Raw::Rebuilt(here, recipe),
        Err(why) => Raw::Record(Err(why)),
    }
}

/// Places one good record read through the index (at archive offset `at`).
fn place(
    ar: &mut SeekableArchive<'_>,
    chunks: &HashMap<(u32, u64), IndexEntry>,
    at: u64,
    h: &crate::archive::format::RecordHeader,
    data: &[u8],
    target: &mut FsTarget,
    book: &mut Book<'_>,
) -> Result<()> {
    match h.kind {
        RecordKind::File => book.place_file(target, h.disk, h.offset, data)?,
        RecordKind::Chunk => {
            target.write_chunk(h.disk, h.offset, data, &h.digest)?;
            book.ledger.restored(h.disk, h.offset, &h.digest);
        }
        RecordKind::BaseRef
            if book
                .own_base_place(h, data)
                .is_some_and(|src| target.keeps(h.disk, h.offset, src)) =>
        {
            book.ledger.restored(h.disk, h.offset, &h.digest);
        }
        RecordKind::BaseRef => match book.base_chunk(h, data)? {
            Some(Ok(d)) => {
                target.write_chunk(h.disk, h.offset, &d, &h.digest)?;
                book.ledger.restored(h.disk, h.offset, &h.digest);
            }
            Some(Err(why)) => book.record_damage(at, h.kind, h.disk, h.offset, h.raw_len, why)?,
            None => book.ledger.restored(h.disk, h.offset, &h.digest),
        },
        RecordKind::BasePatch => match book.patched_chunk(h, data)? {
            Some(Ok(d)) => {
                target.write_chunk(h.disk, h.offset, &d, &h.digest)?;
                book.ledger.restored(h.disk, h.offset, &h.digest);
            }
            Some(Err(why)) => book.record_damage(at, h.kind, h.disk, h.offset, h.raw_len, why)?,
            None => book.ledger.restored(h.disk, h.offset, &h.digest),
        },
        RecordKind::Ref => {
            // Read the referenced chunk from the archive itself: its disk may not be
            // selected, and reading the archive needs no scratch space.
            let src = ref_source(data, (h.disk, h.offset), book.names.len())
                .and_then(|s| chunks.get(&s).copied());
            let got = match src {
                Some(se) => ar
                    .read_record(&se)?
                    .ok()
                    .filter(|(sh, _)| sh.digest == h.digest && sh.raw_len == h.raw_len),
                None => None,
            };
            match got {
                Some((_, d)) => {
                    target.write_chunk(h.disk, h.offset, &d, &h.digest)?;
                    book.ledger.restored(h.disk, h.offset, &h.digest);
                }
                None => book.record_damage(
                    at,
                    h.kind,
                    h.disk,
                    h.offset,
                    h.raw_len,
                    "referenced chunk missing or damaged".into(),
                )?,
            }
        }
        _ => {}
    }
    Ok(())
}
