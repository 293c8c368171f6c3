//! Restore: archive in, disk images (raw, ESX VMDK, monolithicSparse, streamOptimized, OVA)
//! and VM files out; also the engine behind `verify`.
//!
//! Output layout per [`Format`]: `raw` writes `DIR/<vm>/<base>.raw` for each disk and
//! `DIR/<vm>/<file>` for each VM file. `vmdk` writes the ESX datastore layout,
//! `DIR/<vm>/<base>.vmdk` (createType vmfs) with `<base>-flat.vmdk`, and the .vmx pointed at
//! them; `sparse` the same with monolithicSparse disks; `stream` writes
//! `DIR/<vm>/<base>.vmdk` streamOptimized; `ova` writes `DIR/<vm>/<vm>.ova`. `<base>` is the
//! name of the disk's base layer before its snapshots. [`Dest::Writer`] sends one stream or
//! one OVA to a pipe instead. Every disk goes through a [`DiskSink`] in disk order.
//!
//! Names come from the manifest and are re-validated ([`crate::archive::manifest::check_name`]): no separators, no `.`/`..`,
//! no control characters or NUL, so nothing is ever written outside `DIR`; existing files are
//! refused unless `force`, and files are opened with `O_NOFOLLOW` so a planted symlink cannot
//! redirect a write. Images are sized with `set_len` first and only non-zero chunks are
//! written, so zero ranges stay holes.
//!
//! References (deduplicated chunks) in a one-pass restore are resolved by reading the earlier
//! chunk back from the output already written at the recorded disk/offset and checking its
//! BLAKE3 against the reference. Outputs that cannot be read back (sparse, stream, OVA) and
//! disks that are not being restored (a `vm`/`disk` filter) keep their chunks in an unlinked
//! sparse scratch file per disk inside `DIR` (the temp directory for [`Dest::Writer`]) for
//! that purpose: disk space up to the data restored, no memory. Prefer [`restore_seekable`]
//! when the archive is a file: it reads referenced chunks straight from the archive and needs
//! no scratch space.
//!
//! Damage: without `salvage` the first damaged record is an error naming VM, disk and byte
//! range. With `salvage`, damaged records are skipped, everything intact is restored, and the
//! report lists each lost range. After unreadable bytes the reader resynchronises on the next
//! record; the lost range then runs from the end of the last good record to the start of the
//! next one, which may include ranges that were zeros (they were not stored, so nothing says).

mod ova;
mod progress;
mod raw;
mod sink;
mod sparse;
mod stream;
mod vmdk;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::archive::format::IndexEntry;
use crate::archive::format::{RecordKind, INDEX_ENTRY_BYTES};
use crate::archive::index::{ReadSeek, RecordRead, SeekableArchive};
use crate::archive::manifest::Manifest;
use crate::archive::reader::{decode_ref, Event, StreamReader};
use crate::error::{Error, Result};

pub use ova::HashWriter;
pub use progress::{ProgressHook, RestoreProgress};
pub use raw::FsTarget;
pub use sink::{DiskSink, RawSink, RawStream};
pub use sparse::SparseSink;
pub use stream::{StreamSink, StreamSummary};

/// The output format of a restore.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Raw images with holes (`<base>.raw`).
    #[default]
    Raw,
    /// ESX datastore layout: vmfs descriptor + sparse `-flat.vmdk`, and the rewritten .vmx.
    Vmdk,
    /// monolithicSparse (hosted products, `vmkfstools -i`), and the rewritten .vmx.
    Sparse,
    /// streamOptimized in VMware's layout (GD at the end, footer, EOS marker).
    Stream,
    /// An OVA: OVF descriptor, streamOptimized disks, SHA256 manifest.
    Ova,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Raw => "raw",
            Format::Vmdk => "vmdk",
            Format::Sparse => "sparse",
            Format::Stream => "stream",
            Format::Ova => "ova",
        })
    }
}

/// Builds the sink of the one disk a [`Dest::Sink`] restore selects, once the archive's
/// manifest is known (SAN write-back picks and checks its target against the capacity).
pub trait SinkFactory {
    /// The sink for disk `disk` of VM `vm`, `capacity` bytes. Called once, before any chunk is
    /// read; an error stops the restore before anything is written.
    fn create(self: Box<Self>, vm: &str, disk: &str, capacity: u64) -> Result<Box<dyn DiskSink>>;
}

/// Where a restore writes.
pub enum Dest {
    /// Files under this directory (created if missing; its parent must exist).
    Dir(PathBuf),
    /// A single stream (`Format::Stream`, exactly one disk selected) or OVA (`Format::Ova`,
    /// exactly one VM selected), e.g. standard output. Scratch files go to the temp directory.
    Writer(Box<dyn Write + Send>),
    /// Exactly one selected disk into the sink the factory builds (SAN write-back). VM files
    /// are not written; scratch files (one-pass references) go to the temp directory.
    Sink(Box<dyn SinkFactory>),
}

/// What to restore and how.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Output format.
    pub format: Format,
    /// Only this VM.
    pub vm: Option<String>,
    /// Only this disk (by name; within `vm` if given).
    pub disk: Option<String>,
    /// Overwrite existing files.
    pub force: bool,
    /// Restore what is intact from a damaged archive instead of failing.
    pub salvage: bool,
    /// Told after every chunk written (file-system restores).
    pub progress: Option<ProgressHook>,
    /// Checked between records: once set, the restore stops with `Error::Interrupted` and
    /// removes its unfinished outputs.
    pub cancel: crate::cancel::Cancel,
}

/// A damaged record or unreadable stretch of the archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Damage {
    /// Stream offset where the damage was found.
    pub archive_offset: u64,
    /// VM concerned, when known.
    pub vm: Option<String>,
    /// Disk concerned, when known.
    pub disk: Option<String>,
    /// VM file concerned, when known.
    pub file: Option<String>,
    /// Disk byte range concerned (`start..end`; 0..0 when none).
    pub start: u64,
    /// End of the range.
    pub end: u64,
    /// What is wrong.
    pub what: String,
}

impl Damage {
    /// What is damaged and how, without the archive offset.
    fn detail(&self) -> String {
        let mut s = String::new();
        if let Some(vm) = &self.vm {
            s += &format!("vm {vm:?} ");
        }
        if let Some(d) = &self.disk {
            s += &format!("disk {d:?} bytes {:#x}..{:#x} ", self.start, self.end);
        }
        if let Some(file) = &self.file {
            s += &format!("file {file:?} ");
        }
        s + &self.what
    }
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "archive byte {:#x}: {}",
            self.archive_offset,
            self.detail()
        )
    }
}

/// A disk byte range that could not be restored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LostRange {
    /// VM name.
    pub vm: String,
    /// Disk name.
    pub disk: String,
    /// First byte.
    pub start: u64,
    /// End (exclusive).
    pub end: u64,
}

impl std::fmt::Display for LostRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "vm {:?} disk {:?} bytes {:#x}..{:#x} ({} bytes)",
            self.vm,
            self.disk,
            self.start,
            self.end,
            self.end.saturating_sub(self.start)
        )
    }
}

/// One restored disk image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RestoredDisk {
    /// VM name.
    pub vm: String,
    /// Disk name.
    pub disk: String,
    /// The image file (None for sinks that write no files).
    pub path: Option<PathBuf>,
    /// Image size in bytes.
    pub capacity: u64,
}

/// What a restore (or verify) did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// Disks restored (possibly with lost ranges).
    pub disks: Vec<RestoredDisk>,
    /// VM files written.
    pub files: Vec<PathBuf>,
    /// VM files that could not be restored (`vm/file`).
    pub missing_files: Vec<String>,
    /// Damage found.
    pub damage: Vec<Damage>,
    /// Disk ranges not restored.
    pub lost: Vec<LostRange>,
    /// Records read.
    pub records: u64,
}

impl RestoreReport {
    /// Whether everything was restored.
    pub fn is_complete(&self) -> bool {
        self.damage.is_empty() && self.lost.is_empty() && self.missing_files.is_empty()
    }
}

/// Where restored bytes go. The file system ([`FsTarget`]) or a digest-only sink (verify, fuzz).
pub(crate) trait Target {
    /// Writes VM file `name` of VM `vm`; returns its path if it has one.
    fn write_file(&mut self, vm: usize, name: &str, data: &[u8]) -> Result<Option<PathBuf>>;
    /// Writes a checked chunk.
    fn write_chunk(&mut self, disk: u32, offset: u64, data: &[u8], digest: &[u8; 32])
        -> Result<()>;
    /// Copies an earlier chunk to a new place if its bytes still hash to `digest`; false if not.
    fn copy_chunk(
        &mut self,
        src: (u32, u64),
        dst: (u32, u64),
        len: u64,
        digest: &[u8; 32],
    ) -> Result<bool>;
    /// Flushes everything.
    fn finish(&mut self) -> Result<()>;
}

/// Remembers the digest of every chunk placed; writes nothing.
#[derive(Default)]
pub(crate) struct DigestSink {
    placed: HashMap<(u32, u64), (u64, [u8; 32])>,
}

impl Target for DigestSink {
    fn write_file(&mut self, _: usize, _: &str, _: &[u8]) -> Result<Option<PathBuf>> {
        Ok(None)
    }
    fn write_chunk(&mut self, disk: u32, offset: u64, data: &[u8], d: &[u8; 32]) -> Result<()> {
        self.placed.insert((disk, offset), (data.len() as u64, *d));
        Ok(())
    }
    fn copy_chunk(
        &mut self,
        src: (u32, u64),
        dst: (u32, u64),
        len: u64,
        d: &[u8; 32],
    ) -> Result<bool> {
        let ok = self.placed.get(&src) == Some(&(len, *d));
        if ok {
            self.placed.insert(dst, (len, *d));
        }
        Ok(ok)
    }
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Which VMs and disks a restore covers.
pub(crate) struct Selection {
    pub vms: Vec<bool>,
    pub disks: Vec<bool>,
}

impl Selection {
    pub fn new(m: &Manifest, opts: &RestoreOptions) -> Result<Self> {
        let vms: Vec<bool> = m
            .vms
            .iter()
            .map(|v| opts.vm.as_ref().is_none_or(|n| *n == v.name))
            .collect();
        if opts.vm.is_some() && !vms.contains(&true) {
            let names: Vec<&str> = m.vms.iter().map(|v| v.name.as_str()).collect();
            return Err(Error::Usage(format!(
                "no VM named {:?} in the archive (it holds {})",
                opts.vm.as_deref().unwrap_or_default(),
                names.join(", ")
            )));
        }
        // Every disk in archive order: its VM, its number within the VM, its name.
        let all: Vec<(usize, usize, &str)> = m
            .vms
            .iter()
            .enumerate()
            .flat_map(|(v, vm)| {
                vm.disks
                    .iter()
                    .enumerate()
                    .map(move |(k, d)| (v, k, d.name.as_str()))
            })
            .collect();
        let matching = |f: &dyn Fn(usize, &str) -> bool| -> Vec<bool> {
            all.iter()
                .map(|&(v, k, name)| vms[v] && f(k, name))
                .collect()
        };
        let disks = match opts.disk.as_deref() {
            None => matching(&|_, _| true),
            Some(want) => {
                let by_name = matching(&|_, name| name == want);
                // Else by its number within its VM, as `vdar list` shows it.
                match want.parse::<usize>() {
                    Ok(n) if !by_name.contains(&true) => matching(&|k, _| k == n),
                    _ => by_name,
                }
            }
        };
        if opts.disk.is_some() && !disks.contains(&true) {
            let names: Vec<String> = all
                .iter()
                .filter(|&&(v, _, _)| vms[v])
                .map(|&(v, k, name)| format!("{}/{name} (#{k})", m.vms[v].name))
                .collect();
            return Err(Error::Usage(format!(
                "no disk named or numbered {:?} in the archive (it holds {})",
                opts.disk.as_deref().unwrap_or_default(),
                names.join(", ")
            )));
        }
        Ok(Selection { vms, disks })
    }
}

/// Names of every disk ordinal: (vm, disk, capacity).
fn disk_names(m: &Manifest) -> Vec<(String, String, u64)> {
    m.disks()
        .map(|(v, d)| (m.vms[v].name.clone(), d.name.clone(), d.meta.capacity))
        .collect()
}

/// The bookkeeping shared by the stream and seekable paths.
struct Book<'m> {
    manifest: &'m Manifest,
    cancel: crate::cancel::Cancel,
    names: Vec<(String, String, u64)>,
    sel: Selection,
    salvage: bool,
    report: RestoreReport,
    files_done: Vec<Vec<bool>>,
}

impl<'m> Book<'m> {
    fn new(manifest: &'m Manifest, sel: Selection, opts: &RestoreOptions) -> Self {
        Book {
            cancel: opts.cancel.clone(),
            names: disk_names(manifest),
            files_done: manifest
                .vms
                .iter()
                .map(|v| vec![false; v.files.len()])
                .collect(),
            manifest,
            sel,
            salvage: opts.salvage,
            report: RestoreReport::default(),
        }
    }

    /// Records damage; without salvage, turns it into the error.
    fn damage(&mut self, d: Damage) -> Result<()> {
        if !self.salvage {
            return Err(Error::archive(d.archive_offset, d.detail()));
        }
        self.report.damage.push(d);
        Ok(())
    }

    /// Damage to a record whose header is trusted.
    fn record_damage(
        &mut self,
        at: u64,
        kind: RecordKind,
        disk: u32,
        offset: u64,
        len: u64,
        what: String,
    ) -> Result<()> {
        let mut d = Damage {
            archive_offset: at,
            vm: None,
            disk: None,
            file: None,
            start: 0,
            end: 0,
            what,
        };
        match kind {
            RecordKind::Chunk | RecordKind::Ref => {
                let (vm, name, _) = self.names[disk as usize].clone();
                d.vm = Some(vm.clone());
                d.disk = Some(name.clone());
                d.start = offset;
                d.end = offset + len;
                if self.sel.disks[disk as usize] {
                    self.report.lost.push(LostRange {
                        vm,
                        disk: name,
                        start: offset,
                        end: offset + len,
                    });
                }
            }
            RecordKind::File => {
                let vm = &self.manifest.vms[disk as usize];
                d.vm = Some(vm.name.clone());
                d.file = Some(vm.files[offset as usize].name.clone());
            }
            RecordKind::DiskEnd => {
                let (vm, name, _) = self.names[disk as usize].clone();
                d.vm = Some(vm);
                d.disk = Some(name);
            }
            _ => {}
        }
        self.damage(d)
    }

    /// Lost ranges between stream positions (disk, offset) `from` and `to`.
    fn lose_between(&mut self, from: (usize, u64), to: (usize, u64)) {
        for (i, (vm, disk, cap)) in self.names.iter().enumerate() {
            if i < from.0 || i > to.0 || !self.sel.disks[i] {
                continue;
            }
            let s = if i == from.0 { from.1 } else { 0 };
            let e = if i == to.0 { to.1 } else { *cap };
            if s < e {
                self.report.lost.push(LostRange {
                    vm: vm.clone(),
                    disk: disk.clone(),
                    start: s,
                    end: e,
                });
            }
        }
    }

    fn finish(mut self) -> RestoreReport {
        for (v, vm) in self.manifest.vms.iter().enumerate() {
            for (i, f) in vm.files.iter().enumerate() {
                if self.sel.vms[v] && !self.files_done[v][i] {
                    self.report
                        .missing_files
                        .push(format!("{}/{}", vm.name, f.name));
                }
            }
        }
        for (i, (vm, disk, cap)) in self.names.iter().enumerate() {
            if self.sel.disks[i] {
                self.report.disks.push(RestoredDisk {
                    vm: vm.clone(),
                    disk: disk.clone(),
                    path: None,
                    capacity: *cap,
                });
            }
        }
        self.report
    }
}

/// Options of the engine beyond [`RestoreOptions`].
struct Replay {
    /// Compare the index record with the records seen (verify).
    check_index: bool,
}

/// The one-pass engine: reads every event and places chunks through `target`.
fn replay(
    reader: &mut StreamReader<'_>,
    target: &mut dyn Target,
    book: &mut Book<'_>,
    how: Replay,
) -> Result<()> {
    let ndisks = book.names.len();
    // Everything before `last` (disk ordinal, offset) is accounted for; `gap` says that bytes
    // were skipped since, so the next good position closes a lost range.
    let mut last = (0usize, 0u64);
    let mut gap = false;
    let mut seen: Vec<IndexEntry> = Vec::new();
    let mut index_ok = true;
    while let Some(ev) = reader.next_event()? {
        book.cancel.check()?;
        book.report.records += 1;
        match ev {
            Event::Record(r) => {
                let h = r.header;
                let here = (h.disk as usize, h.offset);
                if matches!(
                    h.kind,
                    RecordKind::Chunk | RecordKind::Ref | RecordKind::DiskEnd
                ) {
                    if gap {
                        book.lose_between(last, here);
                        gap = false;
                    }
                    // Records of a disk come in offset order, disks in ordinal order.
                    if here < last {
                        book.record_damage(
                            r.at,
                            h.kind,
                            h.disk,
                            h.offset,
                            h.raw_len,
                            "record out of order".into(),
                        )?;
                        continue;
                    }
                }
                if how.check_index
                    && matches!(
                        h.kind,
                        RecordKind::File | RecordKind::Chunk | RecordKind::Ref
                    )
                {
                    seen.push(IndexEntry {
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
                    RecordKind::File => {
                        let v = h.disk as usize;
                        if book.sel.vms[v] {
                            let name = book.manifest.vms[v].files[h.offset as usize].name.clone();
                            if let Some(p) = target.write_file(v, &name, &r.data)? {
                                book.report.files.push(p);
                            }
                            book.files_done[v][h.offset as usize] = true;
                        }
                    }
                    RecordKind::Chunk => {
                        target.write_chunk(h.disk, h.offset, &r.data, &h.digest)?;
                        last = (h.disk as usize, h.offset + h.raw_len);
                    }
                    RecordKind::Ref => {
                        last = (h.disk as usize, h.offset + h.raw_len);
                        let ok = match decode_ref(&r.data) {
                            Some(src)
                                if (src.0 as usize) < ndisks
                                    && (src.0, src.1) < (h.disk, h.offset) =>
                            {
                                target.copy_chunk(src, (h.disk, h.offset), h.raw_len, &h.digest)?
                            }
                            _ => false,
                        };
                        if !ok {
                            book.record_damage(
                                r.at,
                                h.kind,
                                h.disk,
                                h.offset,
                                h.raw_len,
                                "referenced chunk missing or damaged".into(),
                            )?;
                        }
                    }
                    RecordKind::DiskEnd => last = (h.disk as usize, h.offset),
                    RecordKind::Index => {
                        if how.check_index && book.report.damage.is_empty() {
                            let want: Vec<u8> = seen.iter().flat_map(|e| e.encode()).collect();
                            index_ok = want == r.data;
                            debug_assert_eq!(want.len() % INDEX_ENTRY_BYTES, 0);
                        }
                    }
                    RecordKind::Manifest => {}
                }
                if !index_ok {
                    index_ok = true;
                    book.damage(Damage {
                        archive_offset: r.at,
                        vm: None,
                        disk: None,
                        file: None,
                        start: 0,
                        end: 0,
                        what: "index does not match the records".into(),
                    })?;
                }
            }
            Event::Damaged {
                at,
                header: h,
                what,
            } => {
                if gap
                    && matches!(
                        h.kind,
                        RecordKind::Chunk | RecordKind::Ref | RecordKind::DiskEnd
                    )
                {
                    book.lose_between(last, (h.disk as usize, h.offset));
                    gap = false;
                }
                book.record_damage(at, h.kind, h.disk, h.offset, h.raw_len, what)?;
                if matches!(h.kind, RecordKind::Chunk | RecordKind::Ref) {
                    last = last.max((h.disk as usize, h.offset + h.raw_len));
                }
            }
            Event::Skipped { from, to, what } => {
                gap = true;
                book.damage(Damage {
                    archive_offset: from,
                    vm: None,
                    disk: None,
                    file: None,
                    start: 0,
                    end: 0,
                    what: format!("unreadable bytes {from:#x}..{to:#x} ({what})"),
                })?;
            }
            Event::Truncated { at } => {
                book.lose_between(last, (ndisks, 0));
                book.damage(Damage {
                    archive_offset: at,
                    vm: None,
                    disk: None,
                    file: None,
                    start: 0,
                    end: 0,
                    what: "archive truncated (no footer)".into(),
                })?;
            }
            Event::Footer { at, problem, .. } => {
                if gap || last.0 < ndisks.saturating_sub(1) {
                    // Reached the footer without seeing every disk end: data went missing.
                    if gap {
                        book.lose_between(last, (ndisks, 0));
                    }
                }
                if let Some(p) = problem {
                    book.damage(Damage {
                        archive_offset: at,
                        vm: None,
                        disk: None,
                        file: None,
                        start: 0,
                        end: 0,
                        what: p,
                    })?;
                }
            }
        }
    }
    target.finish()
}

/// Chunk records a seekable restore decodes at once (all cores); with 4 MiB chunks, 32 MiB of
/// plaintext per batch, two batches in flight.
const DECODE_AHEAD_RECORDS: usize = 8;

/// A batch of raw chunk records being decoded on another thread.
struct PendingBatch {
    idx: Vec<usize>,
    handle: std::thread::JoinHandle<Vec<RecordRead>>,
}

impl PendingBatch {
    fn spawn(idx: Vec<usize>, raws: Vec<RecordRead>) -> Self {
        let handle = std::thread::spawn(move || crate::archive::index::decode_raws(raws));
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

/// Restores from a stream in one pass, without seeking. See the module docs.
pub fn restore_stream(
    input: &mut dyn Read,
    target_dir: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    restore_stream_to(input, Dest::Dir(target_dir.to_path_buf()), opts)
}

/// [`restore_stream`] to any [`Dest`].
pub fn restore_stream_to(
    input: &mut dyn Read,
    dest: Dest,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let mut reader = StreamReader::new(input, true)?;
    let manifest = reader.manifest.clone();
    let sel = Selection::new(&manifest, opts)?;
    let mut target = FsTarget::create(dest, &manifest, &sel, opts.force, opts.format, true)?;
    if let Some(h) = &opts.progress {
        target.track(progress::Tracker::new(h.clone(), &manifest, &sel));
    }
    let mut book = Book::new(&manifest, sel, opts);
    replay(
        &mut reader,
        &mut target,
        &mut book,
        Replay { check_index: false },
    )?;
    let mut report = book.finish();
    target.fill_paths(&mut report);
    Ok(report)
}

/// Restores (and checks) into a sink that writes nothing: for fuzzing and tests.
#[doc(hidden)]
pub fn restore_to_sink(input: &mut dyn Read, opts: &RestoreOptions) -> Result<RestoreReport> {
    let mut reader = StreamReader::new(input, true)?;
    let manifest = reader.manifest.clone();
    let sel = Selection::new(&manifest, opts)?;
    let mut book = Book::new(&manifest, sel, opts);
    replay(
        &mut reader,
        &mut DigestSink::default(),
        &mut book,
        Replay { check_index: true },
    )?;
    Ok(book.finish())
}

/// Verifies every checksum in one pass (the engine of `verify`). Always collects all damage.
pub(crate) fn verify_stream(input: &mut dyn Read) -> Result<RestoreReport> {
    restore_to_sink(
        input,
        &RestoreOptions {
            salvage: true,
            ..Default::default()
        },
    )
}

/// Whether an index entry names a file or chunk the manifest has.
fn entry_fits(m: &Manifest, names: &[(String, String, u64)], e: &IndexEntry) -> bool {
    match e.kind {
        RecordKind::File => m
            .vms
            .get(e.disk as usize)
            .and_then(|v| v.files.get(usize::try_from(e.offset).ok()?))
            .is_some_and(|f| f.size == u64::from(e.raw_len)),
        _ => names.get(e.disk as usize).is_some_and(|&(_, _, cap)| {
            e.offset % m.chunk_size == 0
                && e.offset < cap
                && u64::from(e.raw_len) == m.chunk_size.min(cap - e.offset)
        }),
    }
}

/// Restores using the footer and the index: only the selected disks' records (and the chunks
/// they reference) are read. With `salvage`, a damaged footer or index falls back to a stream
/// pass from the start.
pub fn restore_seekable(
    input: &mut dyn ReadSeek,
    target_dir: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    restore_seekable_to(input, Dest::Dir(target_dir.to_path_buf()), opts)
}

/// [`restore_seekable`] to any [`Dest`].
pub fn restore_seekable_to(
    input: &mut dyn ReadSeek,
    dest: Dest,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let mut ar = match SeekableArchive::open(input) {
        Ok(a) => a,
        Err(e)
            if opts.salvage
                && !matches!(e, Error::Io { .. } | Error::UnsupportedVersion { .. }) =>
        {
            input
                .seek(std::io::SeekFrom::Start(0))
                .map_err(|e| Error::io("archive input", Some(0), e))?;
            let mut r = restore_stream_to(input, dest, opts)?;
            r.damage.insert(
                0,
                Damage {
                    archive_offset: 0,
                    vm: None,
                    disk: None,
                    file: None,
                    start: 0,
                    end: 0,
                    what: format!("index unusable, restored in one pass: {e}"),
                },
            );
            return Ok(r);
        }
        Err(e) => return Err(e),
    };
    let manifest = ar.manifest.clone();
    let sel = Selection::new(&manifest, opts)?;
    let mut target = FsTarget::create(dest, &manifest, &sel, opts.force, opts.format, false)?;
    if let Some(h) = &opts.progress {
        target.track(progress::Tracker::new(h.clone(), &manifest, &sel));
    }
    let mut book = Book::new(&manifest, sel, opts);
    let ndisks = book.names.len();
    let book_names = book.names.clone();
    let chunks: HashMap<(u32, u64), usize> = ar
        .index
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == RecordKind::Chunk)
        .map(|(i, e)| ((e.disk, e.offset), i))
        .collect();
    let entries = std::mem::take(&mut ar.index);
    let wanted = |sel: &Selection, e: &IndexEntry| match e.kind {
        RecordKind::File => sel.vms.get(e.disk as usize).copied().unwrap_or(false),
        _ => sel.disks.get(e.disk as usize).copied().unwrap_or(false),
    };
    // Chunk records decoded ahead, in parallel, keyed by entry position; the next batch
    // decodes on the other cores while this one is written (`pending`).
    let mut ahead: HashMap<usize, RecordRead> = HashMap::new();
    let mut pending: Option<PendingBatch> = None;
    let plan = |sel: &Selection, from: usize| -> Vec<(usize, IndexEntry)> {
        entries[from..]
            .iter()
            .enumerate()
            .map(|(j, x)| (from + j, *x))
            .filter(|(_, x)| {
                x.kind == RecordKind::Chunk
                    && wanted(sel, x)
                    && entry_fits(&manifest, &book_names, x)
            })
            .take(DECODE_AHEAD_RECORDS)
            .collect()
    };
    for (i, e) in entries.iter().enumerate() {
        if !wanted(&book.sel, e) {
            continue;
        }
        book.cancel.check()?;
        if e.kind == RecordKind::Chunk && ahead.is_empty() {
            match pending.take() {
                Some(p) => ahead.extend(p.join()),
                None => {
                    let batch = plan(&book.sel, i);
                    let es: Vec<IndexEntry> = batch.iter().map(|(_, x)| *x).collect();
                    for ((j, _), r) in batch.iter().zip(ar.read_records(&es)?) {
                        ahead.insert(*j, r);
                    }
                }
            }
            if let Some(&last) = ahead.keys().max() {
                let batch = plan(&book.sel, last + 1);
                if !batch.is_empty() {
                    let es: Vec<IndexEntry> = batch.iter().map(|(_, x)| *x).collect();
                    let raws = ar.read_raws(&es)?;
                    let idx = batch.into_iter().map(|(j, _)| j).collect();
                    pending = Some(PendingBatch::spawn(idx, raws));
                }
            }
        }
        book.report.records += 1;
        if !entry_fits(&manifest, &book.names, e) {
            // A hostile or corrupt index: never index the manifest with its values.
            book.damage(Damage {
                archive_offset: e.record_offset,
                vm: None,
                disk: None,
                file: None,
                start: 0,
                end: 0,
                what: format!("index entry {e:?} does not fit the manifest"),
            })?;
            continue;
        }
        let record = match ahead.remove(&i) {
            Some(r) => r,
            None => ar.read_record(e)?,
        };
        let (h, data) = match record {
            Ok(x) => x,
            Err(what) => {
                book.record_damage(
                    e.record_offset,
                    e.kind,
                    e.disk,
                    e.offset,
                    e.raw_len.into(),
                    what,
                )?;
                continue;
            }
        };
        match h.kind {
            RecordKind::File => {
                let v = h.disk as usize;
                let name = book.manifest.vms[v].files[h.offset as usize].name.clone();
                if let Some(p) = target.write_file(v, &name, &data)? {
                    book.report.files.push(p);
                }
                book.files_done[v][h.offset as usize] = true;
            }
            RecordKind::Chunk => target.write_chunk(h.disk, h.offset, &data, &h.digest)?,
            RecordKind::Ref => {
                // Read the referenced chunk from the archive itself: its disk may not be
                // selected, and reading the archive needs no scratch space.
                let src = decode_ref(&data)
                    .filter(|s| (s.0 as usize) < ndisks)
                    .and_then(|s| chunks.get(&s))
                    .map(|&i| entries[i]);
                let got = match src {
                    Some(se) => ar
                        .read_record(&se)?
                        .ok()
                        .filter(|(sh, _)| sh.digest == h.digest && sh.raw_len == h.raw_len),
                    None => None,
                };
                match got {
                    Some((_, d)) => target.write_chunk(h.disk, h.offset, &d, &h.digest)?,
                    None => book.record_damage(
                        e.record_offset,
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
    }
    target.finish()?;
    let mut report = book.finish();
    target.fill_paths(&mut report);
    Ok(report)
}
