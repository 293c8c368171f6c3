//! Consolidate: a synthetic full archive from an incremental and its bases, written in one
//! forward pass without the VM, byte-identical on restore to the chain it replaces (the weekly
//! tape rotation of a forever-incremental scheme).
//!
//! Every chunk place of the newest archive is resolved to the Chunk record holding its bytes,
//! in whichever archive of the chain that is; the record's stored payload is checked (decoded
//! and hashed, on all cores) and copied as it is, so nothing is compressed again. A digest met
//! a second time becomes a Ref, as in a backup. Any damage is an error naming the archive and
//! the record: a consolidated archive never has holes a restore would take for zeros.

use std::collections::HashMap;
use std::io::Write;

use super::chain::BaseChain;
use super::recipe::Recipe;
use crate::archive::format::{Codec, IndexEntry, RecordHeader, RecordKind};
use crate::archive::index::{ReadSeek, SeekableArchive};
use crate::archive::manifest::Manifest;
use crate::archive::reader::decode_ref;
use crate::archive::writer::encode_chunk as encode;
use crate::archive::writer::ArchiveWriter;
use crate::base::image::Place;
use crate::chunk::{ChunkBytes, ChunkPool, Digest};
use crate::error::{Error, Result};

/// Chunk records checked at once (on all cores).
const BATCH: usize = 16;

/// What a consolidate wrote.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ConsolidateSummary {
    /// The new archive's identity.
    pub id: String,
    /// Its size in bytes.
    pub bytes_written: u64,
    /// Chunk records written.
    pub chunks_stored: u64,
    /// Ref records written.
    pub chunks_dedup: u64,
    /// Chunks whose bytes came from a base.
    pub chunks_from_bases: u64,
    /// The new archive's manifest and chunk places (for its catalog).
    #[serde(skip)]
    pub manifest: Option<Manifest>,
    /// See `manifest`.
    #[serde(skip)]
    pub places: Vec<Place>,
}

/// A chunk to write: its place, digest and the record holding its bytes.
struct Pending {
    place: (u32, u64),
    len: u64,
    digest: [u8; 32],
    /// The records holding its bytes (their messages name the base they are in).
    raw: Recipe,
    /// The archive consolidated, for messages.
    from: String,
    from_base: bool,
}

/// Writes the full archive of `top` (named `top_name`), whose bases are in `bases`, to `out`.
pub fn consolidate(
    top: &mut dyn ReadSeek,
    top_name: &str,
    bases: &mut BaseChain,
    out: &mut dyn Write,
    out_name: &str,
    cancel: &crate::cancel::Cancel,
) -> Result<ConsolidateSummary> {
    let mut ar = SeekableArchive::open(top)?;
    ar.check_layout()?;
    let mut manifest = ar.manifest.clone();
    let link = manifest.base.take();
    if let Some(l) = &link {
        bases.check(top_name, l)?;
    }
    let base_id = link.as_ref().and_then(|l| super::chain::parse_id(&l.id));
    manifest.vdar_version = env!("CARGO_PKG_VERSION").into();
    let level = manifest.level;
    let mut w = ArchiveWriter::new(out, out_name, &manifest, level)?;
    let mut s = ConsolidateSummary::default();
    let mut table: HashMap<[u8; 32], (u32, u64)> = HashMap::new();
    // The top archive's BasePatch places: a Ref may not name them.
    let mut patched: std::collections::HashSet<(u32, u64)> = Default::default();
    let entries = std::mem::take(&mut ar.index);
    let mut i = 0;
    for (v, vm) in manifest.vms.iter().enumerate() {
        while let Some(e) = entries.get(i).filter(|e| e.kind == RecordKind::File) {
            let (_, data) = read_checked(&mut ar, e, top_name)?;
            w.write_file(v as u32, e.offset, &data)?;
            i += 1;
        }
        for d in &vm.disks {
            let mut count = 0u64;
            let mut batch: Vec<Pending> = Vec::new();
            while let Some(e) = entries
                .get(i)
                .filter(|e| e.kind.is_data() && e.disk == d.id)
            {
                cancel.check()?;
                i += 1;
                count += 1;
                let (h, payload) = read_raw(&mut ar, e, top_name)?;
                if h.kind == RecordKind::Ref
                    && decode_ref(&payload).is_some_and(|s| patched.contains(&s))
                {
                    return Err(damaged(top_name, e, "reference to a base patch"));
                }
                if h.kind == RecordKind::BasePatch {
                    patched.insert((h.disk, h.offset));
                }
                if let Some(&first) = table.get(&h.digest) {
                    flush(&mut w, &mut batch, &mut table, &mut s, level)?;
                    write_ref(&mut w, &h, first, &mut s)?;
                    continue;
                }
                let p = match h.kind {
                    RecordKind::Chunk => Pending {
                        place: (h.disk, h.offset),
                        len: h.raw_len,
                        digest: h.digest,
                        raw: Recipe::plain(h, payload, String::new()),
                        from: top_name.to_string(),
                        from_base: false,
                    },
                    RecordKind::Ref => {
                        // A Ref names an earlier chunk of the same archive: in the batch, or
                        // written already (then the table had it).
                        flush(&mut w, &mut batch, &mut table, &mut s, level)?;
                        match (table.get(&h.digest), decode_ref(&payload)) {
                            (Some(&first), Some(_)) => write_ref(&mut w, &h, first, &mut s)?,
                            _ => {
                                let why = "reference to a chunk not in the archive";
                                return Err(damaged(top_name, e, why));
                            }
                        }
                        continue;
                    }
                    RecordKind::BasePatch => {
                        let id = base_id
                            .ok_or_else(|| damaged(top_name, e, "base patch without a base"))?;
                        let (src, base_digest) = crate::archive::patch::checked_base(
                            &payload,
                            h.offset,
                            h.raw_len as usize,
                        )
                        .map_err(|w| damaged(top_name, e, &w))?;
                        let mut raw = bases
                            .recipe(&id, src, h.raw_len, &base_digest)?
                            .map_err(|w| damaged(top_name, e, &w))?;
                        raw.patch(h, payload, String::new());
                        Pending {
                            place: (h.disk, h.offset),
                            len: h.raw_len,
                            digest: h.digest,
                            raw,
                            from: top_name.to_string(),
                            from_base: true,
                        }
                    }
                    _ => {
                        let src = decode_ref(&payload)
                            .ok_or_else(|| damaged(top_name, e, "bad base reference"))?;
                        let id = base_id
                            .ok_or_else(|| damaged(top_name, e, "base reference without a base"))?;
                        let raw = bases
                            .recipe(&id, src, h.raw_len, &h.digest)?
                            .map_err(|w| damaged(top_name, e, &w))?;
                        Pending {
                            place: (h.disk, h.offset),
                            len: h.raw_len,
                            digest: h.digest,
                            raw,
                            from: top_name.to_string(),
                            from_base: true,
                        }
                    }
                };
                // A digest twice in one batch: the second becomes a Ref once the first is out.
                if batch.iter().any(|b| b.digest == p.digest) {
                    flush(&mut w, &mut batch, &mut table, &mut s, level)?;
                    let first = table[&p.digest];
                    write_ref(&mut w, &h_of(&p), first, &mut s)?;
                    continue;
                }
                batch.push(p);
                if batch.len() == BATCH {
                    flush(&mut w, &mut batch, &mut table, &mut s, level)?;
                }
            }
            flush(&mut w, &mut batch, &mut table, &mut s, level)?;
            w.write_disk_end(d.id, d.meta.capacity, count)?;
        }
    }
    let (size, id) = w.finish_with_id()?;
    s.id = super::id_hex(&id);
    s.bytes_written = size;
    s.manifest = Some(manifest);
    Ok(s)
}

/// Which of `inputs` (name, archive), a chain given in any order, is the newest: the one no
/// other names as its base (by the identity its footer claims; opening the bases checks the
/// claims). An error when they are not one chain: two archives that none names, or none at all.
pub fn newest(inputs: &mut [(std::path::PathBuf, Box<dyn ReadSeek + Send>)]) -> Result<usize> {
    let mut ids = Vec::with_capacity(inputs.len());
    let mut named = std::collections::HashSet::new();
    for (p, input) in inputs.iter_mut() {
        let peek = crate::archive::index::peek(&mut **input)
            .map_err(|e| Error::Usage(format!("{}: {e}", p.display())))?;
        let footer = peek
            .footer
            .map_err(|e| Error::Usage(format!("{}: {e}", p.display())))?;
        if let Some(b) = &peek.manifest.base {
            named.insert(b.id.clone());
        }
        ids.push(super::id_hex(&footer.meta_hash));
    }
    let tops: Vec<usize> = (0..inputs.len())
        .filter(|&i| !named.contains(&ids[i]))
        .collect();
    match tops[..] {
        [top] => Ok(top),
        [] => Err(Error::Usage(
            "every archive given is the base of another: they are not one chain".into(),
        )),
        [a, b, ..] => Err(Error::Usage(format!(
            "{} and {} are both the newest (no archive given names either as its base): \
             consolidate takes one chain",
            inputs[a].0.display(),
            inputs[b].0.display()
        ))),
    }
}

/// The header a Ref for `p` is written with.
fn h_of(p: &Pending) -> RecordHeader {
    RecordHeader {
        kind: RecordKind::Ref,
        codec: Codec::None,
        disk: p.place.0,
        offset: p.place.1,
        stored_len: 0,
        raw_len: p.len,
        digest: p.digest,
    }
}

fn write_ref(
    w: &mut ArchiveWriter<'_>,
    h: &RecordHeader,
    first: (u32, u64),
    s: &mut ConsolidateSummary,
) -> Result<()> {
    w.write_ref(h.disk, h.offset, h.raw_len, h.digest, first.0, first.1)?;
    s.chunks_dedup += 1;
    s.places.push((h.disk, h.offset, Digest(h.digest)));
    Ok(())
}

/// A payload compressed anew: its codec and bytes.
type Encoded = (Codec, Vec<u8>);

/// Checks the batch's payloads on all cores, then writes them in order. A chunk that arrives
/// raw is compressed as a backup would store it: a chunk rebuilt from a base patch arrives
/// so, and one stored raw because zstd did not shrink it stays raw.
fn flush(
    w: &mut ArchiveWriter<'_>,
    batch: &mut Vec<Pending>,
    table: &mut HashMap<[u8; 32], (u32, u64)>,
    s: &mut ConsolidateSummary,
    level: i32,
) -> Result<()> {
    use rayon::prelude::*;
    let checks: Vec<std::result::Result<Option<Encoded>, String>> = batch
        .par_iter()
        .map(|p| {
            let plain = p.raw.clone().into_bytes()?;
            if p.raw.is_plain() && p.raw.bottom.codec != Codec::None {
                return Ok(None);
            }
            let mut bytes = ChunkBytes::dense(plain);
            bytes.canonicalize();
            encode(&bytes, level, &ChunkPool::new(0))
                .map(Some)
                .map_err(|e| e.to_string())
        })
        .collect();
    for (p, ok) in batch.drain(..).zip(checks) {
        let encoded = ok.map_err(|why| {
            Error::Usage(format!(
                "{}: the chunk of disk {} at {:#x} is damaged ({why}); nothing was consolidated",
                p.from, p.place.0, p.place.1
            ))
        })?;
        let (codec, payload) = match &encoded {
            Some((c, bytes)) => (*c, &bytes[..]),
            None => (p.raw.bottom.codec, &p.raw.stored[..]),
        };
        w.write_chunk(p.place.0, p.place.1, p.len, p.digest, codec, payload)?;
        table.insert(p.digest, p.place);
        s.chunks_stored += 1;
        s.chunks_from_bases += u64::from(p.from_base);
        s.places.push((p.place.0, p.place.1, Digest(p.digest)));
    }
    Ok(())
}

fn read_raw(
    ar: &mut SeekableArchive<'_>,
    e: &IndexEntry,
    name: &str,
) -> Result<(RecordHeader, Vec<u8>)> {
    ar.read_raw_entry(e)?.map_err(|w| damaged(name, e, &w))
}

fn read_checked(
    ar: &mut SeekableArchive<'_>,
    e: &IndexEntry,
    name: &str,
) -> Result<(RecordHeader, Vec<u8>)> {
    ar.read_record(e)?.map_err(|w| damaged(name, e, &w))
}

fn damaged(name: &str, e: &IndexEntry, what: &str) -> Error {
    Error::Usage(format!(
        "{name}: record at byte {} ({:?} of disk or VM {} at {:#x}): {what}; nothing was \
         consolidated",
        e.record_offset, e.kind, e.disk, e.offset
    ))
}
