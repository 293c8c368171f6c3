//! Salvage when the front of an archive (file header or manifest) is damaged: records are
//! self-framed, so only the manifest is missing to place them.
//!
//! [`recover`] finds a manifest, in this order: the front manifest record (when only the file
//! header is damaged), the copy after the index (reached through the footer, or found by a
//! scan when the footer is damaged too), and last a manifest rebuilt from the record headers
//! themselves. A rebuilt manifest knows no names: it holds one VM per VM ordinal the File
//! records name (`salvaged-vm<V>`, files `file<F>`) and puts every disk, `disk<N>` by ordinal,
//! in the first VM, with the capacity its DiskEnd record states (else the end of its last
//! record); raw images are then `DIR/salvaged-vm0/disk<N>.raw`.

use std::io::SeekFrom;

use super::format::*;
use super::manifest::{DiskManifest, FileManifest, LayerInfo, Manifest, VmManifest, MAX_ITEMS};
use super::manifest::{DiskMeta, MAX_CAPACITY_BYTES, MAX_NAME_BYTES};
use crate::error::{Error, Result};

/// Where the manifest of a salvage came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestSource {
    /// The front manifest record (the file header alone was damaged).
    Front,
    /// The copy after the index.
    Copy,
    /// Rebuilt from the record headers: names are made up.
    Rebuilt,
}

/// What [`recover`] found.
pub struct Recovered {
    /// The file header, or the one this build writes when it was damaged.
    pub header: FileHeader,
    /// The manifest, and the BLAKE3 of its JSON as stored (zero when rebuilt).
    pub manifest: (Manifest, [u8; 32]),
    /// Where it came from.
    pub source: ManifestSource,
    /// Where reading the records resumes: after the front manifest if its header holds, else
    /// at the first good record header after the file header.
    pub resume_at: u64,
    /// Disks of a rebuilt manifest whose capacity no disk end states.
    pub open_ended: Vec<u32>,
    /// Good record headers found in the whole file (0: nothing of an archive is left, or it
    /// never was one).
    pub records_found: usize,
}

/// Bytes scanned per read.
const SCAN_BYTES: usize = 4 << 20;

/// Reads `buf` at `at` if the archive of `len` bytes holds it there; false if it ends first.
fn read_within(input: &mut dyn ReadSeek, len: u64, at: u64, buf: &mut [u8]) -> Result<bool> {
    if at.checked_add(buf.len() as u64).is_none_or(|end| end > len) {
        return Ok(false);
    }
    super::index::read_at(input, at, buf)?;
    Ok(true)
}

use super::index::ReadSeek;

/// A record header at `at`, if one decodes there.
fn header_at(input: &mut dyn ReadSeek, len: u64, at: u64) -> Result<Option<RecordHeader>> {
    let mut b = [0u8; RECORD_HEADER_BYTES];
    if !read_within(input, len, at, &mut b)? {
        return Ok(None);
    }
    Ok(RecordHeader::decode(&b, at).ok())
}

/// The manifest record at `at`, if it is intact and valid.
fn manifest_at(
    input: &mut dyn ReadSeek,
    at: u64,
    len: u64,
) -> Result<Option<(Manifest, [u8; 32])>> {
    let Some(h) = header_at(input, len, at)? else {
        return Ok(None);
    };
    if h.kind != RecordKind::Manifest || h.codec != Codec::None {
        return Ok(None);
    }
    let start = at + RECORD_HEADER_BYTES as u64;
    if start + h.stored_len > len {
        return Ok(None);
    }
    let mut json = vec![0u8; h.stored_len as usize];
    if !read_within(input, len, start, &mut json)? || blake3::hash(&json).as_bytes() != &h.digest {
        return Ok(None);
    }
    let Ok(m) = serde_json::from_slice::<Manifest>(&json) else {
        return Ok(None);
    };
    Ok(m.validate(at).is_ok().then_some((m, h.digest)))
}

/// Every good record header in the archive, in stream order. Payloads of good headers are
/// skipped (a census, not a check), other bytes scanned for the record magic.
fn census(input: &mut dyn ReadSeek, len: u64) -> Result<Vec<(u64, RecordHeader)>> {
    let mut found = Vec::new();
    let mut at = FILE_HEADER_BYTES as u64;
    let mut buf = vec![0u8; SCAN_BYTES];
    while at + RECORD_HEADER_BYTES as u64 <= len {
        let n = (len - at).min(SCAN_BYTES as u64) as usize;
        read_within(input, len, at, &mut buf[..n])?;
        let hit = buf[..n].windows(8).position(|w| w == RECORD_MAGIC_V1);
        let Some(i) = hit else {
            at += (n as u64).saturating_sub(7).max(1);
            continue;
        };
        let here = at + i as u64;
        match header_at(input, len, here)? {
            Some(h) => {
                found.push((here, h));
                at = here + RECORD_HEADER_BYTES as u64 + h.stored_len.min(len);
            }
            None => at = here + 1,
        }
    }
    Ok(found)
}

/// The copy after the index, through the footer, else by scanning for it.
fn find_copy(
    input: &mut dyn ReadSeek,
    len: u64,
    census: &[(u64, RecordHeader)],
) -> Result<Option<(Manifest, [u8; 32])>> {
    if len >= FOOTER_BYTES as u64 {
        let fat = len - FOOTER_BYTES as u64;
        let mut fb = [0u8; FOOTER_BYTES];
        if read_within(input, len, fat, &mut fb)? {
            if let Ok(f) = Footer::decode(&fb, fat) {
                if let Some(ih) = header_at(input, len, f.index_offset)? {
                    let copy_at = f.index_offset + RECORD_HEADER_BYTES as u64 + ih.stored_len;
                    if let Some(m) = manifest_at(input, copy_at, len)? {
                        return Ok(Some(m));
                    }
                }
            }
        }
    }
    for (at, h) in census.iter().rev() {
        if h.kind == RecordKind::Manifest && h.offset == MANIFEST_COPY {
            if let Some(m) = manifest_at(input, *at, len)? {
                return Ok(Some(m));
            }
        }
    }
    Ok(None)
}

/// A disk's capacity as its DiskEnd states it when that is one the format allows, else the end
/// of its last record rounded up to a sector (what the records prove), within the limit; and
/// whether it is the latter (the disk may be larger).
fn rebuilt_capacity(disk_end: Option<u64>, seen: u64) -> (u64, bool) {
    let allowed = |c: &u64| *c <= MAX_CAPACITY_BYTES && c % 512 == 0;
    match disk_end.filter(allowed) {
        Some(c) => (c, false),
        None => (seen.next_multiple_of(512).min(MAX_CAPACITY_BYTES), true),
    }
}

/// The disks of a rebuilt manifest that no acceptable disk end sizes.
fn open_ended_disks(census: &[(u64, RecordHeader)], disks: usize) -> Vec<u32> {
    (0..disks as u32)
        .filter(|&d| {
            let end = census
                .iter()
                .find(|(_, h)| h.kind == RecordKind::DiskEnd && h.disk == d)
                .map(|(_, h)| h.offset);
            rebuilt_capacity(end, 0).1
        })
        .collect()
}

/// A manifest made from the record headers alone. See the module docs.
fn rebuild(census: &[(u64, RecordHeader)]) -> Manifest {
    let mut chunk = 0u64;
    let mut caps: Vec<(Option<u64>, u64)> = Vec::new();
    let mut files: Vec<Vec<Option<u64>>> = vec![Vec::new()];
    let within = |n: u64| n < MAX_ITEMS as u64;
    for (_, h) in census {
        match h.kind {
            k if (k.is_data() || k == RecordKind::DiskEnd) && within(h.disk.into()) => {
                let d = h.disk as usize;
                if caps.len() <= d {
                    caps.resize(d + 1, (None, 0));
                }
                if h.kind == RecordKind::DiskEnd {
                    caps[d].0.get_or_insert(h.offset);
                } else {
                    chunk = chunk.max(h.raw_len);
                    caps[d].1 = caps[d].1.max(h.offset.saturating_add(h.raw_len));
                }
            }
            RecordKind::File if within(h.disk.into()) && within(h.offset) => {
                let (v, f) = (h.disk as usize, h.offset as usize);
                if files.len() <= v {
                    files.resize(v + 1, Vec::new());
                }
                if files[v].len() <= f {
                    files[v].resize(f + 1, None);
                }
                files[v][f].get_or_insert(h.raw_len);
            }
            _ => {}
        }
    }
    let chunk_size = chunk
        .next_power_of_two()
        .clamp(MIN_CHUNK_BYTES, MAX_CHUNK_BYTES);
    let mut vms: Vec<VmManifest> = files
        .iter()
        .enumerate()
        .map(|(v, fs)| VmManifest {
            origin: None,
            name: format!("salvaged-vm{v}"),
            files: fs
                .iter()
                .enumerate()
                .map(|(f, size)| FileManifest {
                    name: format!("file{f}"),
                    size: size.unwrap_or(0),
                    blake3: String::new(),
                    source: None,
                })
                .collect(),
            disks: Vec::new(),
        })
        .collect();
    vms[0].disks = caps
        .iter()
        .enumerate()
        .map(|(d, (end, seen))| DiskManifest {
            id: d as u32,
            name: format!("disk{d}"),
            meta: DiskMeta {
                capacity: rebuilt_capacity(*end, *seen).0,
                chain: vec![LayerInfo {
                    file: format!("disk{d}.vmdk"),
                    ..Default::default()
                }],
                ..Default::default()
            },
        })
        .collect();
    debug_assert!(vms.iter().all(|v| v.name.len() <= MAX_NAME_BYTES));
    Manifest {
        format_version: FORMAT_VERSION,
        vdar_version: String::new(),
        created: 0,
        chunk_size,
        codec: "zstd".into(),
        level: 0,
        block_size: 0,
        vms,
        // A rebuilt manifest cannot name a base: base references are then lost places.
        base: None,
    }
}

/// Finds a manifest for an archive whose front did not read. See the module docs.
pub fn recover(input: &mut dyn ReadSeek) -> Result<Recovered> {
    let len = input
        .seek(SeekFrom::End(0))
        .map_err(|e| Error::io("archive input", None, e))?;
    let mut hb = [0u8; FILE_HEADER_BYTES];
    let header = match read_within(input, len, 0, &mut hb)? {
        true => FileHeader::decode(&hb).ok(),
        false => None,
    };
    let front_at = FILE_HEADER_BYTES as u64;
    let front = manifest_at(input, front_at, len)?;
    let census = census(input, len)?;
    // Resume after the front manifest record when its header holds, whatever its payload.
    let resume_at = match header_at(input, len, front_at)? {
        Some(h) if h.kind == RecordKind::Manifest && h.offset == MANIFEST_FRONT => {
            (front_at + RECORD_HEADER_BYTES as u64 + h.stored_len).min(len)
        }
        _ => census
            .iter()
            .map(|(at, _)| *at)
            .find(|&at| at > front_at)
            .unwrap_or(len),
    };
    let mut open_ended = Vec::new();
    let (manifest, source) = match front {
        Some(m) => (m, ManifestSource::Front),
        None => match find_copy(input, len, &census)? {
            Some(m) => (m, ManifestSource::Copy),
            None => {
                let m = rebuild(&census);
                m.validate(front_at)?;
                open_ended = open_ended_disks(&census, m.disk_count());
                ((m, [0; 32]), ManifestSource::Rebuilt)
            }
        },
    };
    let header = header.unwrap_or(FileHeader {
        format_version: FORMAT_VERSION,
        incompat_features: KNOWN_INCOMPAT_FEATURES,
        compat_features: 0,
        block_size: manifest.0.block_size,
    });
    input
        .seek(SeekFrom::Start(resume_at))
        .map_err(|e| Error::io("archive input", Some(resume_at), e))?;
    Ok(Recovered {
        header,
        manifest,
        source,
        resume_at,
        open_ended,
        records_found: census.len(),
    })
}
