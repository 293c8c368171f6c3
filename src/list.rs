//! List: what an archive holds, with size, dedup and compression figures.
//!
//! [`list_seekable`] reads only the front (manifest), the footer, the index and the disk-end
//! records, and checks the layout but no data checksum (that is `verify`); [`list_stream`]
//! (a pipe, or a file whose index or front is damaged) reads and checks every record, so its
//! lost ranges are verify's.

use std::io::Read;

use serde::Serialize;

use crate::archive::format::{IndexEntry, RecordHeader, RecordKind};
use crate::archive::index::{ReadSeek, SeekableArchive};
use crate::archive::manifest::{DiskMeta, FileManifest, Manifest};
use crate::archive::reader::StreamReader;
use crate::error::Result;

/// An archive's contents.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArchiveListing {
    /// vdar version that wrote it.
    pub vdar_version: String,
    /// Creation time (Unix seconds).
    pub created: u64,
    /// Chunk size.
    pub chunk_size: u64,
    /// zstd level.
    pub level: i32,
    /// Output block size (0: none).
    pub block_size: u32,
    /// Archive size in bytes (as read).
    pub archive_bytes: u64,
    /// Whether the archive is whole: footer reached and matched, no damage, nothing lost.
    pub complete: bool,
    /// Disk ranges a restore could not recover, read from the record headers (payloads are
    /// not checked: that is `verify`).
    pub lost: Vec<crate::restore::LostRange>,
    /// The VMs.
    pub vms: Vec<VmListing>,
    /// Sum of disk capacities.
    pub disk_bytes: u64,
    /// Plaintext bytes of stored chunks.
    pub stored_raw_bytes: u64,
    /// Payload bytes of stored chunks.
    pub stored_bytes: u64,
    /// Plaintext bytes stored as references.
    pub dedup_bytes: u64,
    /// (stored + referenced) / stored plaintext.
    pub dedup_ratio: f64,
    /// Stored plaintext / stored payload.
    pub compression_ratio: f64,
    /// The base this archive is an incremental of (absent for a full archive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<crate::archive::manifest::BaseLink>,
    /// Plaintext bytes the archive takes from its base (BaseRef records).
    pub base_bytes: u64,
    /// Payload bytes of BasePatch records (new runs over base chunks).
    pub patch_stored_bytes: u64,
}

/// One VM in a listing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VmListing {
    /// Name.
    pub name: String,
    /// Its files.
    pub files: Vec<FileManifest>,
    /// Its disks.
    pub disks: Vec<DiskListing>,
    /// Where a vSphere backup took it from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<crate::archive::manifest::VmOrigin>,
}

/// One disk in a listing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiskListing {
    /// Name.
    pub name: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Chunk records.
    pub chunks: u64,
    /// Reference records.
    pub refs: u64,
    /// Payload bytes of its chunk records.
    pub stored_bytes: u64,
    /// Plaintext bytes of its chunk records.
    pub stored_raw_bytes: u64,
    /// Plaintext bytes of its reference records.
    pub dedup_bytes: u64,
    /// Chunks taken from the base (BaseRef records).
    pub base_refs: u64,
    /// Their plaintext bytes.
    pub base_bytes: u64,
    /// Chunks that are a base chunk with some runs replaced (BasePatch records).
    pub base_patches: u64,
    /// Their plaintext bytes (whole chunks).
    pub patched_bytes: u64,
    /// Their payload bytes.
    pub patch_stored_bytes: u64,
    /// Descriptor, ddb, chain.
    pub meta: DiskMeta,
}

fn skeleton(m: &Manifest) -> ArchiveListing {
    ArchiveListing {
        vdar_version: m.vdar_version.clone(),
        created: m.created,
        chunk_size: m.chunk_size,
        level: m.level,
        block_size: m.block_size,
        archive_bytes: 0,
        complete: false,
        lost: Vec::new(),
        disk_bytes: m.disks().map(|(_, d)| d.meta.capacity).sum(),
        vms: m
            .vms
            .iter()
            .map(|v| VmListing {
                name: v.name.clone(),
                files: v.files.clone(),
                disks: v
                    .disks
                    .iter()
                    .map(|d| DiskListing {
                        name: d.name.clone(),
                        capacity: d.meta.capacity,
                        chunks: 0,
                        refs: 0,
                        stored_bytes: 0,
                        stored_raw_bytes: 0,
                        dedup_bytes: 0,
                        base_refs: 0,
                        base_bytes: 0,
                        base_patches: 0,
                        patched_bytes: 0,
                        patch_stored_bytes: 0,
                        meta: d.meta.clone(),
                    })
                    .collect(),
                origin: v.origin.clone(),
            })
            .collect(),
        stored_raw_bytes: 0,
        stored_bytes: 0,
        dedup_bytes: 0,
        dedup_ratio: 1.0,
        compression_ratio: 1.0,
        base: m.base.clone(),
        base_bytes: 0,
        patch_stored_bytes: 0,
    }
}

/// Adds one Chunk or Ref record to the tallies.
fn tally(
    l: &mut ArchiveListing,
    slots: &[(usize, usize)],
    kind: RecordKind,
    disk: u32,
    stored: u64,
    raw: u64,
) {
    let Some(&(v, d)) = slots.get(disk as usize) else {
        return;
    };
    let dl = &mut l.vms[v].disks[d];
    match kind {
        RecordKind::Chunk => {
            dl.chunks += 1;
            dl.stored_bytes += stored;
            dl.stored_raw_bytes += raw;
            l.stored_bytes += stored;
            l.stored_raw_bytes += raw;
        }
        RecordKind::Ref => {
            dl.refs += 1;
            dl.dedup_bytes += raw;
            l.dedup_bytes += raw;
        }
        RecordKind::BaseRef => {
            dl.base_refs += 1;
            dl.base_bytes += raw;
            l.base_bytes += raw;
        }
        RecordKind::BasePatch => {
            dl.base_patches += 1;
            dl.patched_bytes += raw;
            dl.patch_stored_bytes += stored;
            l.patch_stored_bytes += stored;
        }
        _ => {}
    }
}

fn slots(m: &Manifest) -> Vec<(usize, usize)> {
    m.vms
        .iter()
        .enumerate()
        .flat_map(|(v, vm)| (0..vm.disks.len()).map(move |d| (v, d)))
        .collect()
}

fn ratios(l: &mut ArchiveListing) {
    if l.stored_raw_bytes > 0 {
        l.dedup_ratio = (l.stored_raw_bytes + l.dedup_bytes) as f64 / l.stored_raw_bytes as f64;
    }
    if l.stored_bytes > 0 {
        l.compression_ratio = l.stored_raw_bytes as f64 / l.stored_bytes as f64;
    }
}

/// Lists a seekable archive from its manifest, footer and index, after checking that the index
/// and the disk ends account for every record ([`SeekableArchive::check_layout`]).
pub fn list_seekable(input: &mut dyn ReadSeek) -> Result<ArchiveListing> {
    let mut ar = SeekableArchive::open(input)?;
    ar.check_layout()?;
    let mut l = skeleton(&ar.manifest);
    let s = slots(&ar.manifest);
    for e in &ar.index {
        let IndexEntry {
            kind,
            disk,
            stored_len,
            raw_len,
            ..
        } = *e;
        tally(&mut l, &s, kind, disk, stored_len.into(), raw_len.into());
    }
    l.archive_bytes = ar.len;
    l.complete = true;
    ratios(&mut l);
    Ok(l)
}

/// Lists an archive read as a stream. Every payload is checked, as by verify: a listing that
/// skipped them would take the record after a cut payload for lost instead of the cut one.
/// Lost ranges and completeness follow the same accounting as restore and verify.
pub fn list_stream(input: &mut dyn Read) -> Result<ArchiveListing> {
    list_reader(StreamReader::new(input, true)?, None)
}

/// Lists a file: through its index when the layout checks out, else (a truncated copy, a
/// damaged index or front) from its record headers, past a damaged front with a recovered
/// manifest.
pub fn list_file(input: &mut dyn ReadSeek) -> Result<ArchiveListing> {
    match list_seekable(input) {
        Err(crate::Error::ArchiveCorrupt { .. }) => {
            let (r, front) = crate::restore::open_seekable(input, true)?;
            list_reader(r, front)
        }
        l => l,
    }
}

fn list_reader(mut r: StreamReader<'_>, front: Option<String>) -> Result<ArchiveListing> {
    let mut l = skeleton(&r.manifest);
    let s = slots(&r.manifest);
    let mut observe = |h: &RecordHeader| tally(&mut l, &s, h.kind, h.disk, h.stored_len, h.raw_len);
    let opts = crate::restore::RestoreOptions {
        salvage: true,
        ..Default::default()
    };
    let report = crate::restore::check_stream(
        &mut r,
        &opts,
        crate::restore::Replay {
            check_index: true,
            observe: Some(&mut observe),
        },
        front,
    )?;
    l.complete = report.is_complete();
    l.lost = report.lost;
    l.archive_bytes = r.position();
    ratios(&mut l);
    Ok(l)
}
