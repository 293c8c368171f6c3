//! Backup: VMs and their collapsed disks in, one archive stream out.
//!
//! Stages and threads:
//! ```text
//!  reader thread ──jobs──▶ N worker threads ──results──▶ calling thread
//!  (ChunkReader per disk:  (zero check, BLAKE3,          (reorder by sequence number,
//!   io_uring read-ahead)    zstd: compress.rs)            dedup, ArchiveWriter)
//! ```
//! * Order: every item carries a sequence number; the writer emits strictly in sequence, so the
//!   archive is identical whatever the thread count or scheduling.
//! * Memory: the reader takes a *credit* before reading a chunk and the writer returns it after
//!   writing, so at most `credits` chunks are in flight anywhere (read, queued, compressed or
//!   waiting to be reordered). `credits = max(queue_bytes / chunk_size, 2 × workers + 2)`, so peak
//!   chunk memory is about `2 × credits × chunk_size` (plaintext plus compressed copy):
//!   64 MiB by default, plus the reader's read-ahead buffers (at most 4 × queue depth buffers of
//!   at most 1 MiB: 64 MiB at the default depth, a few MiB in practice as most reads are small)
//!   and the archive file's 12 MiB of write-behind buffers, independent of disk size. Only the
//!   dedup table and the index grow.
//! * Errors: a failing stage latches `stop`; the reader checks it before every chunk, workers
//!   exit when their queue closes, and the first error is returned. Reader errors travel in
//!   sequence as `Err` items so they surface exactly where they happened.

pub mod compress;
mod read;
mod work;
mod write;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{bounded, unbounded};
use serde::Serialize;

use crate::archive::format::{FORMAT_VERSION, MAX_BLOCK_BYTES, MAX_CHUNK_BYTES, MIN_CHUNK_BYTES};
use crate::archive::manifest::{check_name, DiskManifest, FileManifest, Manifest, VmManifest};
use crate::archive::writer::ArchiveWriter;
use crate::base::image::Place;
use crate::base::plan::{ChangedOnly, DiskPlan};
use crate::base::BaseImage;
use crate::blockio::ReadOptions;
use crate::chain::VirtualDisk;
use crate::chunk::dedup::DedupTable;
use crate::chunk::{Chunk, ChunkPool};
use crate::error::{Error, Result};
use compress::Processed;
use read::Reader;
use work::Worker;
use write::Writer;

pub use crate::archive::format::DEFAULT_CHUNK_BYTES;
pub use crate::archive::manifest::{DiskMeta, LayerInfo};

/// One VM to back up.
pub struct VmInput {
    /// VM name (the restore directory).
    pub name: String,
    /// Small files stored with the VM.
    pub files: Vec<VmFile>,
    /// The VM's disks.
    pub disks: Vec<DiskInput>,
    /// Where it came from, when a vSphere server supplied it.
    pub origin: Option<crate::archive::manifest::VmOrigin>,
}

/// A small VM file (.vmx, .nvram, .vmsd ...).
#[derive(Clone, Debug)]
pub struct VmFile {
    /// File name, no directories.
    pub name: String,
    /// The original path, when `name` is not the file's own name ([`crate::job::names`]).
    pub source: Option<String>,
    /// Contents.
    pub bytes: Vec<u8>,
}

/// One disk of a VM.
pub struct DiskInput {
    /// Disk name (`scsi0:0`, or the descriptor's stem).
    pub name: String,
    /// Descriptor, ddb and chain provenance.
    pub meta: DiskMeta,
    /// The collapsed disk.
    pub disk: Box<dyn VirtualDisk>,
}

/// Backup options. Plain fields; [`BackupOptions::default`] gives the documented defaults.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Chunk size in bytes: a power of two in 64 KiB..=16 MiB (default 4 MiB).
    pub chunk_size: u64,
    /// zstd level (default 3).
    pub level: i32,
    /// Pad the output to whole blocks of this size (0: no padding).
    pub block_size: u32,
    /// Worker threads for hashing and compression (0: one per core).
    pub threads: usize,
    /// Creation time (Unix seconds). `None`: `SOURCE_DATE_EPOCH` if set, else now.
    pub created: Option<u64>,
    /// Bytes of chunk data allowed in flight between the stages (default 64 MiB).
    pub queue_bytes: u64,
    /// Name of the output in error messages (a path, or `-`).
    pub output_name: String,
    /// How the reader stage reads the disks (engine, queue depth).
    pub read: ReadOptions,
    /// Checked between chunks: once set, the backup stops with `Error::Interrupted`.
    pub cancel: crate::cancel::Cancel,
    /// Make an incremental of this base, with one plan per disk (in disk order).
    pub incremental: Option<Incremental>,
    /// Collect the archive's chunk places for its catalog ([`BackupSummary::places`]).
    pub catalog: bool,
}

/// What an incremental backup builds on.
#[derive(Clone, Debug)]
pub struct Incremental {
    /// The base image.
    pub base: Arc<BaseImage>,
    /// One plan per disk of the backup, in disk order.
    pub plans: Vec<DiskPlan>,
    /// The base archive, when the backup was given it (not only its catalog): a chunk of a
    /// disk without a change list that differs from the base's is stored as a base patch of
    /// the 4 KiB blocks that differ, the base's chunk read from here.
    pub bytes: Option<Arc<std::sync::Mutex<crate::base::BaseChain>>>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            chunk_size: DEFAULT_CHUNK_BYTES,
            level: 3,
            block_size: 0,
            threads: 0,
            created: None,
            queue_bytes: 64 << 20,
            output_name: "-".into(),
            read: ReadOptions::default(),
            cancel: Default::default(),
            incremental: None,
            catalog: false,
        }
    }
}

/// Counters of a running or finished backup.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Progress {
    /// Disk being processed (`vm/disk`): a moment's state for a progress line, not a counter,
    /// so a summary's JSON leaves it out.
    #[serde(skip)]
    pub current: String,
    /// Disk bytes covered so far: the capacities of the finished disks plus the current disk's
    /// position (at the end, the sum of all capacities).
    pub disk_bytes: u64,
    /// Bytes read from disks (zero runs are not read).
    pub bytes_read: u64,
    /// Bytes written to the archive.
    pub bytes_written: u64,
    /// Chunks seen.
    pub chunks: u64,
    /// Chunks stored as data records.
    pub chunks_stored: u64,
    /// Chunks stored as references to earlier ones.
    pub chunks_dedup: u64,
    /// Chunks stored as references to the base image (incrementals).
    pub chunks_base: u64,
    /// Plaintext bytes stored as references to the base image.
    pub base_bytes: u64,
    /// Chunks stored as base patches (their changed runs only; incrementals).
    pub chunks_patched: u64,
    /// Plaintext bytes of the patched chunks (whole chunks; the runs count as stored).
    pub patched_bytes: u64,
    /// Chunks that were zeros and stored as holes.
    pub chunks_zero: u64,
    /// Plaintext bytes stored as references.
    pub dedup_bytes: u64,
    /// Plaintext bytes of the stored chunks.
    pub stored_raw_bytes: u64,
    /// Payload bytes of the stored chunks (after compression).
    pub stored_bytes: u64,
}

impl Progress {
    /// Nonzero plaintext over the plaintext stored (1.0 before anything is stored).
    pub fn dedup_ratio(&self) -> f64 {
        ratio(
            self.stored_raw_bytes + self.dedup_bytes,
            self.stored_raw_bytes,
        )
    }

    /// Plaintext stored over its payload bytes (1.0 before anything is stored).
    pub fn compression_ratio(&self) -> f64 {
        ratio(self.stored_raw_bytes, self.stored_bytes)
    }
}

/// The result of a backup.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BackupSummary {
    /// Final counters.
    #[serde(flatten)]
    pub totals: Progress,
    /// Nonzero data bytes / unique data bytes (≥ 1).
    pub dedup_ratio: f64,
    /// Unique data bytes / their compressed size (≥ 1).
    pub compression_ratio: f64,
    /// Unique chunks in the dedup table.
    pub unique_chunks: u64,
    /// The archive's creation time (Unix seconds), as its manifest records it.
    pub created: u64,
    /// What the archive holds, for a catalog: its manifest's VMs (files with their BLAKE3,
    /// disks with their capacity, descriptor, ddb and chain).
    pub vms: Vec<VmManifest>,
    /// The archive's identity (its footer's `meta_hash`, hex): what an incremental of it names.
    pub id: String,
    /// The base this archive is an incremental of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<crate::archive::manifest::BaseLink>,
    /// Per disk of an incremental: its base disk and where its changes came from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<crate::base::plan::DiskChanges>,
    /// The manifest, for a catalog.
    #[serde(skip)]
    pub manifest: Option<Manifest>,
    /// Every nonzero chunk place and its digest, when [`BackupOptions::catalog`] asked.
    #[serde(skip)]
    pub places: Vec<Place>,
}

/// What flows from the reader through the workers to the writer.
enum Item {
    /// VM `vm` starts: the writer stores its files.
    VmStart(usize),
    /// A chunk (processed by a worker).
    Chunk(Chunk),
    /// Disk `disk` (ordinal) is complete.
    DiskEnd(u32, u64),
}

/// An item from the reader with its sequence number (a read error travels as `Err`).
type Job = (u64, Result<Item>);

/// An item from a worker with its sequence number.
type Done = (u64, Result<Worked>);

/// An item after a worker: chunks come with their processed form.
struct Worked {
    item: Item,
    /// `Some` for chunks.
    hashed: Option<Hashed>,
}

/// A chunk's processed form and the bytes read for it.
struct Hashed {
    processed: Processed,
    read: u64,
}

/// The creation time: explicit, else `SOURCE_DATE_EPOCH`, else now.
fn creation_time(opt: Option<u64>) -> Result<u64> {
    if let Some(t) = opt {
        return Ok(t);
    }
    if let Ok(s) = std::env::var("SOURCE_DATE_EPOCH") {
        return s
            .trim()
            .parse()
            .map_err(|_| Error::Usage(format!("SOURCE_DATE_EPOCH {s:?} is not a number")));
    }
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0))
}

fn check_options(opts: &BackupOptions) -> Result<()> {
    let cs = opts.chunk_size;
    if !cs.is_power_of_two() || !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&cs) {
        return Err(Error::Usage(format!(
            "chunk size {cs} must be a power of two in {MIN_CHUNK_BYTES}..={MAX_CHUNK_BYTES}"
        )));
    }
    if !(1..=22).contains(&opts.level) {
        return Err(Error::Usage(format!(
            "zstd level {} out of range 1..=22",
            opts.level
        )));
    }
    // A power of two, so that a tape read in MAX_BLOCK_BYTES requests is whole blocks.
    let bs = opts.block_size;
    if bs != 0 && (!(512..=MAX_BLOCK_BYTES).contains(&bs) || !bs.is_power_of_two()) {
        return Err(Error::Usage(format!(
            "block size {bs} must be a power of two in 512..={MAX_BLOCK_BYTES}"
        )));
    }
    // Each worker keeps about four chunks in flight (plaintext and compressed, two credits):
    // a mistyped thread count must not become gigabytes of buffers.
    if opts.threads > MAX_THREADS {
        return Err(Error::Usage(format!(
            "{} threads out of range 0..={MAX_THREADS} (0: one per core)",
            opts.threads
        )));
    }
    Ok(())
}

/// Most worker threads a backup takes.
pub const MAX_THREADS: usize = 256;

/// Builds the manifest for `vms` (validating names exactly as a reader will).
fn build_manifest(vms: &[VmInput], opts: &BackupOptions, created: u64) -> Result<Manifest> {
    let mut id = 0u32;
    let m = Manifest {
        format_version: FORMAT_VERSION,
        vdar_version: env!("CARGO_PKG_VERSION").into(),
        created,
        chunk_size: opts.chunk_size,
        codec: "zstd".into(),
        level: opts.level,
        block_size: opts.block_size,
        vms: vms
            .iter()
            .map(|vm| VmManifest {
                name: vm.name.clone(),
                files: vm
                    .files
                    .iter()
                    .map(|f| FileManifest {
                        name: f.name.clone(),
                        size: f.bytes.len() as u64,
                        blake3: blake3::hash(&f.bytes).to_hex().to_string(),
                        source: f.source.clone(),
                    })
                    .collect(),
                disks: vm
                    .disks
                    .iter()
                    .map(|d| {
                        let mut meta = d.meta.clone();
                        meta.capacity = d.disk.capacity();
                        id += 1;
                        DiskManifest {
                            id: id - 1,
                            name: d.name.clone(),
                            meta,
                        }
                    })
                    .collect(),
                origin: vm.origin.clone(),
            })
            .collect(),
        base: opts.incremental.as_ref().map(|i| i.base.link()),
    };
    for vm in vms {
        for f in &vm.files {
            if f.bytes.len() as u64 > crate::archive::format::MAX_FILE_BYTES {
                return Err(Error::Usage(format!(
                    "VM {:?}: file {:?} of {} bytes is too large to store",
                    vm.name,
                    f.name,
                    f.bytes.len()
                )));
            }
        }
        for d in &vm.disks {
            check_name(&d.name)?;
        }
    }
    m.validate(0).map_err(|e| match e {
        Error::ArchiveCorrupt { what, .. } => Error::Usage(what),
        e => e,
    })?;
    Ok(m)
}

/// Backs up `vms` into one archive written to `out`. See the module docs for the threading.
/// `progress` is called after every chunk and at the end, from the writing thread: it should
/// be cheap (throttle any printing).
pub fn backup(
    mut vms: Vec<VmInput>,
    opts: &BackupOptions,
    out: &mut dyn std::io::Write,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
) -> Result<BackupSummary> {
    check_options(opts)?;
    let created = creation_time(opts.created)?;
    let manifest = build_manifest(&vms, opts, created)?;
    if let Some(inc) = &opts.incremental {
        if inc.plans.len() != manifest.disk_count() {
            return Err(Error::Usage(format!(
                "{} disk plans for {} disks",
                inc.plans.len(),
                manifest.disk_count()
            )));
        }
        if inc.base.manifest.chunk_size != opts.chunk_size {
            return Err(Error::Usage(format!(
                "the base was cut in chunks of {} bytes; an incremental of it must use the \
                 same --chunk-size",
                inc.base.manifest.chunk_size
            )));
        }
    }
    let workers = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let credits = ((opts.queue_bytes / opts.chunk_size) as usize).max(2 * workers + 2);
    let archive = ArchiveWriter::new(out, &opts.output_name, &manifest, opts.level)?;
    let table = Mutex::new(DedupTable::default());
    // Payload buffers go back to the workers once written (at most `credits` exist).
    let payloads = ChunkPool::new(credits);
    let mut writer = Writer {
        archive,
        table: &table,
        payloads: &payloads,
        files: vms
            .iter_mut()
            .map(|v| std::mem::take(&mut v.files))
            .collect(),
        labels: manifest
            .disks()
            .map(|(v, d)| format!("{}/{}", manifest.vms[v].name, d.name))
            .collect(),
        progress,
        cancel: &opts.cancel,
        p: Progress::default(),
        pending: BTreeMap::new(),
        next: 0,
        disk_records: 0,
        finished_disks: 0,
        base: opts.incremental.as_ref().map(|i| write::BaseState {
            image: &i.base,
            plans: &i.plans,
            overwritten: Default::default(),
        }),
        places: opts.catalog.then(Vec::new),
        level: opts.level,
    };
    let stages = Stages {
        opts,
        workers,
        credits,
        table: &table,
        payloads: &payloads,
    };
    stages.run(vms, &mut writer)?;
    let (totals, id, places) = writer.finish()?;
    Ok(BackupSummary {
        dedup_ratio: totals.dedup_ratio(),
        compression_ratio: totals.compression_ratio(),
        unique_chunks: table
            .into_inner()
            .expect("invariant: no panic under lock")
            .len() as u64,
        totals,
        created,
        vms: manifest.vms.clone(),
        id: crate::base::id_hex(&id),
        base: manifest.base.clone(),
        changes: changes_of(&manifest, opts.incremental.as_ref()),
        places,
        manifest: Some(manifest),
    })
}

/// The threads of one backup and what they share.
struct Stages<'a> {
    opts: &'a BackupOptions,
    workers: usize,
    /// Items allowed in flight (see the module docs).
    credits: usize,
    table: &'a Mutex<DedupTable>,
    payloads: &'a ChunkPool,
}

impl Stages<'_> {
    /// Runs the reader and the workers on their own threads and `writer` on this one, until
    /// every item is written or the first error. The error latch: on an error the writer sets
    /// `stop` and drops the credits and the results, so that the reader (waiting for a credit,
    /// or about to send) and the workers (sending) all end before the threads are joined.
    fn run(&self, vms: Vec<VmInput>, writer: &mut Writer<'_, '_>) -> Result<()> {
        let nvms = vms.len();
        let plans = self.opts.incremental.as_ref().map(|i| &i.plans[..]);
        let disks: Vec<(usize, Box<dyn VirtualDisk>)> = vms
            .into_iter()
            .enumerate()
            .flat_map(|(v, vm)| vm.disks.into_iter().map(move |d| (v, d.disk)))
            .enumerate()
            .map(|(ordinal, (v, disk))| {
                // Chunks outside a disk's change list are not read: the base stands for them.
                match plans.and_then(|p| p[ordinal].changed.clone()) {
                    Some(set) => (
                        v,
                        Box::new(ChangedOnly::new(disk, set)) as Box<dyn VirtualDisk>,
                    ),
                    None => (v, disk),
                }
            })
            .collect();
        let (job_tx, job_rx) = bounded::<Job>(self.credits);
        let (res_tx, res_rx) = unbounded::<Done>();
        let (credit_tx, credit_rx) = bounded::<()>(self.credits);
        for _ in 0..self.credits {
            credit_tx.send(()).expect("invariant: capacity");
        }
        // Chunk buffers go back to the reader once hashed and compressed.
        let pool = Arc::new(ChunkPool::new(self.credits));
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = Reader {
                jobs: job_tx,
                credits: credit_rx,
                stop: &stop,
                chunk_size: self.opts.chunk_size,
                read: self.opts.read,
                pool: pool.clone(),
                seq: 0,
            };
            s.spawn(move || reader.run(nvms, disks));
            for _ in 0..self.workers {
                let worker = Worker {
                    jobs: job_rx.clone(),
                    done: res_tx.clone(),
                    level: self.opts.level,
                    table: self.table,
                    base: self.opts.incremental.as_ref().map(|i| &*i.base),
                    plans: self.opts.incremental.as_ref().map(|i| &i.plans[..]),
                    base_bytes: self
                        .opts
                        .incremental
                        .as_ref()
                        .and_then(|i| i.bytes.as_deref()),
                    pool: &pool,
                    payloads: self.payloads,
                };
                s.spawn(move || worker.run());
            }
            drop(job_rx);
            drop(res_tx);
            let run = writer.run(&res_rx, &credit_tx);
            if run.is_err() {
                // Latch the error, then unblock the reader (it may wait for a credit) and drain.
                stop.store(true, Ordering::Relaxed);
                drop(credit_tx);
                drop(res_rx);
            }
            run
        })
    }
}

/// What the summary says of each disk of an incremental.
fn changes_of(m: &Manifest, inc: Option<&Incremental>) -> Vec<crate::base::plan::DiskChanges> {
    let Some(inc) = inc else {
        return Vec::new();
    };
    m.disks()
        .zip(&inc.plans)
        .map(|((v, d), p)| crate::base::plan::DiskChanges {
            disk: format!("{}/{}", m.vms[v].name, d.name),
            base_disk: p.base_disk,
            source: p.source,
            changed_bytes: p.changed.as_ref().map(|s| s.bytes()),
            fallback: p.fallback.clone(),
        })
        .collect()
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_out_of_range_are_refused() {
        let ok = BackupOptions::default();
        assert!(check_options(&ok).is_ok());
        let bad = [
            BackupOptions {
                chunk_size: 1000,
                ..Default::default()
            },
            BackupOptions {
                chunk_size: MAX_CHUNK_BYTES * 2,
                ..Default::default()
            },
            BackupOptions {
                level: 0,
                ..Default::default()
            },
            BackupOptions {
                level: 23,
                ..Default::default()
            },
            BackupOptions {
                block_size: 511,
                ..Default::default()
            },
            BackupOptions {
                block_size: MAX_BLOCK_BYTES + 1,
                ..Default::default()
            },
            BackupOptions {
                threads: MAX_THREADS + 1,
                ..Default::default()
            },
            BackupOptions {
                block_size: 10240,
                ..Default::default()
            },
        ];
        for o in bad {
            assert!(matches!(check_options(&o), Err(Error::Usage(_))), "{o:?}");
        }
        let edge = BackupOptions {
            chunk_size: MIN_CHUNK_BYTES,
            level: 22,
            block_size: 512,
            threads: MAX_THREADS,
            ..Default::default()
        };
        assert!(check_options(&edge).is_ok());
    }
}
