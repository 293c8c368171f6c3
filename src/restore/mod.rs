//! Restore: archive in, disk images (raw, ESX VMDK, monolithicSparse, streamOptimized, OVA)
//! and VM files out; also the engine behind `verify`.
//!
//! Output layout per [`Format`]: `raw` writes `DIR/<vm>/<base>.raw` for each disk and
//! `DIR/<vm>/<file>` for each VM file. `vmdk` writes the ESX datastore layout,
//! `DIR/<vm>/<base>.vmdk` (createType vmfs) with `<base>-flat.vmdk`, and the .vmx pointed at
//! them; `sparse` the same with monolithicSparse disks; `stream` writes
//! `DIR/<vm>/<base>.vmdk` streamOptimized; `ova` writes `DIR/<vm>/<vm>.ova` (formats/OVF.md). `<base>` is the
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
//! report lists each lost range with its reason. Every byte of every disk is restored, known
//! zero, or reported lost (the ledger, formats/ARCHIVE.md "Accounting"): a place without a
//! record is zero only when the index or the disk's DiskEnd count says no record is missing.
//! A damaged front (file header, manifest) is read past with a recovered manifest
//! ([`crate::archive::recover`]).

mod book;
mod guest_os;
pub mod in_place;
mod ledger;
pub(crate) mod ova;
mod progress;
mod raw;
mod replay;
mod salvage;
mod seekable;
mod sink;
mod sparse;
mod stream;
mod vmdk;
pub mod writeback;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::archive::index::ReadSeek;
use crate::archive::manifest::Manifest;
use crate::archive::reader::{decode_ref, StreamReader};
use crate::error::{Error, Result};
use crate::input::vm::{match_disks, DiskRef};

use book::Book;
use replay::replay;
pub(crate) use replay::Replay;
pub(crate) use salvage::open_seekable;
pub use seekable::{restore_seekable, restore_seekable_to};

pub use crate::output::{DiskSink, RawSink, RawStream};
pub use ova::HashWriter;
pub use progress::{ProgressHook, RestoreProgress};
pub use raw::FsTarget;
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
    /// The base archives of an incremental, which its BaseRef records are read from.
    pub bases: Option<std::sync::Arc<std::sync::Mutex<crate::base::BaseChain>>>,
    /// Restore the incremental over the raw images of its base in this directory
    /// ([`in_place`]); the destination must be that directory, the format raw, every disk.
    pub in_place: Option<std::sync::Arc<in_place::InPlaceBase>>,
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
    /// Damage at archive offset `at` that names no VM, disk or file (yet).
    pub(crate) fn at(at: u64, what: String) -> Self {
        Damage {
            archive_offset: at,
            vm: None,
            disk: None,
            file: None,
            start: 0,
            end: 0,
            what,
        }
    }

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
    /// Why: the record's damage, or why a stretch without a record is not known to be zero.
    pub why: String,
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
    /// Bytes restored from records whose digest checked.
    pub restored_bytes: u64,
    /// Bytes known to be zero (no record, and the index or the disk's end record says none
    /// is missing).
    pub zero_bytes: u64,
    /// Bytes reported lost (`lost`); the three add up to `capacity`.
    pub lost_bytes: u64,
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
    /// BaseRef records taken on trust because no base was given (`list`); a restore or
    /// verify of an incremental needs its bases and reads every one.
    pub base_refs_unchecked: u64,
}

impl RestoreReport {
    /// Whether everything was restored.
    pub fn is_complete(&self) -> bool {
        self.damage.is_empty() && self.lost.is_empty() && self.missing_files.is_empty()
    }
}

/// Where a Ref record's bytes come from: a chunk place earlier in archive order than the Ref's
/// own place `here`, on a disk the archive has. One rule for the one-pass and seekable paths.
pub(crate) fn ref_source(payload: &[u8], here: (u32, u64), ndisks: usize) -> Option<(u32, u64)> {
    if payload.len() as u64 != crate::archive::format::REF_PAYLOAD_BYTES {
        return None;
    }
    let src = decode_ref(payload)?;
    ((src.0 as usize) < ndisks && src < here).then_some(src)
}

/// Where restored bytes go. The file system ([`FsTarget`]) or a digest-only sink (verify, fuzz).
pub(crate) trait Target {
    /// Writes VM file `name` of VM `vm`; returns the paths written (none for sinks without
    /// files).
    fn write_file(&mut self, vm: usize, name: &str, data: &[u8]) -> Result<Vec<PathBuf>>;
    /// Whether chunks of `disk` may be written in any order (a record behind what was already
    /// written can still be placed).
    fn random_access(&self, disk: u32) -> bool;
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
    /// In-place restores ([`in_place`]): whether the base's place `src` is the place
    /// (`disk`, `offset`) of the image being updated, whose bytes then stand as they are.
    fn keeps(&mut self, _disk: u32, _offset: u64, _src: (u32, u64)) -> bool {
        false
    }
}

/// Remembers the digest of every chunk placed; writes nothing.
#[derive(Default)]
pub(crate) struct DigestSink {
    /// Digest of the chunk placed at each place (equal digests imply equal lengths).
    placed: HashMap<(u32, u64), [u8; 32]>,
}

impl Target for DigestSink {
    fn random_access(&self, _: u32) -> bool {
        true
    }
    fn write_file(&mut self, _: usize, _: &str, _: &[u8]) -> Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }
    fn write_chunk(&mut self, disk: u32, offset: u64, _: &[u8], d: &[u8; 32]) -> Result<()> {
        self.placed.insert((disk, offset), *d);
        Ok(())
    }
    fn copy_chunk(
        &mut self,
        src: (u32, u64),
        dst: (u32, u64),
        _: u64,
        d: &[u8; 32],
    ) -> Result<bool> {
        let ok = self.placed.get(&src) == Some(d);
        if ok {
            self.placed.insert(dst, *d);
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
        let disks = match opts.disk.as_deref() {
            None => all.iter().map(|&(v, _, _)| vms[v]).collect(),
            Some(want) => {
                // Named as backup's --disk names it (device or top descriptor, else number),
                // among the disks of the selected VMs.
                let picked: Vec<(usize, DiskRef<'_>)> = m
                    .disks()
                    .zip(&all)
                    .enumerate()
                    .filter(|(_, (_, &(v, _, _)))| vms[v])
                    .map(|(i, ((_, d), &(_, k, _)))| {
                        let file = d.meta.chain.first().map(|l| l.file.as_str());
                        let r = DiskRef {
                            index: k,
                            name: &d.name,
                            file,
                        };
                        (i, r)
                    })
                    .collect();
                let refs: Vec<DiskRef<'_>> = picked.iter().map(|(_, r)| *r).collect();
                let mut disks = vec![false; all.len()];
                for ((id, _), hit) in picked.iter().zip(match_disks(want, &refs)) {
                    disks[*id] = hit;
                }
                disks
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

/// Restores from a stream in one pass, without seeking. See the module docs.
pub fn restore_stream(
    input: &mut dyn Read,
    target_dir: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    restore_stream_to(input, Dest::Dir(target_dir.to_path_buf()), opts)
}

/// [`restore_stream`] to any [`Dest`]. With `salvage`, a stream whose front (file header or
/// manifest) does not read is spooled to an unlinked file (in the target directory, else the
/// temp directory) and restored from there with a recovered manifest.
pub fn restore_stream_to(
    input: &mut dyn Read,
    dest: Dest,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    if !opts.salvage {
        let reader = StreamReader::new(input, true)?;
        return restore_reader(reader, dest, opts, None);
    }
    let dir = match &dest {
        Dest::Dir(d) => d.clone(),
        _ => std::env::temp_dir(),
    };
    salvage::read_or_spool(
        input,
        &dir,
        dest,
        |reader, dest| restore_reader(reader, dest, opts, None),
        |spooled, dest| restore_seekable_to(spooled, dest, opts),
    )
}

/// The selection and the output of a restore. `one_pass`: references are resolved from what
/// was written (scratch files where outputs cannot be read back).
fn open_target(
    dest: Dest,
    manifest: &Manifest,
    opts: &RestoreOptions,
    one_pass: bool,
) -> Result<(FsTarget, Selection)> {
    let sel = Selection::new(manifest, opts)?;
    // First: a DIR that holds another base is the clearer answer than a missing base.
    let mut in_place = match &opts.in_place {
        Some(b) => Some(in_place_check(b, &dest, manifest, &sel, opts)?),
        None => None,
    };
    check_bases(manifest, opts.bases.as_deref())?;
    if let Some(m) = &mut in_place {
        m.follow_rename()?;
    }
    // In place, the small files (the .vmx, the descriptors) are replaced by the newer ones.
    let force = opts.force || in_place.is_some();
    let mut target =
        FsTarget::create(dest, manifest, &sel, force, opts.format, one_pass, in_place)?;
    if let Some(h) = &opts.progress {
        target.track(progress::Tracker::new(h.clone(), manifest, &sel));
    }
    Ok((target, sel))
}

/// Refuses an in-place restore of what it cannot do (another directory, a format but raw, a
/// selection, salvage), then maps the archive's disks onto the base's images.
fn in_place_check(
    b: &in_place::InPlaceBase,
    dest: &Dest,
    manifest: &Manifest,
    sel: &Selection,
    opts: &RestoreOptions,
) -> Result<in_place::InPlaceMap> {
    let same_dir = matches!(dest, Dest::Dir(d) if *d == b.dir);
    let refuse = |why: &str| Err(Error::Usage(format!("an in-place restore {why}")));
    if !same_dir {
        return refuse("writes into the directory that holds its base");
    }
    if opts.format != Format::Raw {
        return refuse("updates raw images (the base was restored as raw)");
    }
    if opts.salvage {
        return refuse(
            "of a damaged archive would leave the images mixed: salvage into a new directory",
        );
    }
    if sel.disks.iter().any(|s| !s) || sel.vms.iter().any(|s| !s) {
        return refuse("updates every disk: --vm and --disk do not apply");
    }
    b.map(manifest)
}

/// Where a raw restore of `m` into `dir` puts each disk's image, in disk order: what a later
/// restore of an incremental of `m` reads its BaseRefs from ([`crate::base::BaseChain::add_restored`]).
pub fn raw_image_paths(m: &Manifest, dir: &Path) -> Vec<PathBuf> {
    m.vms
        .iter()
        .flat_map(|vm| {
            let stems = vmdk::disk_stems(vm, Some(".raw"));
            stems
                .into_iter()
                .map(move |s| dir.join(&vm.name).join(format!("{s}.raw")))
        })
        .collect()
}

/// Refuses an incremental whose bases were not all given, before anything is written.
fn check_bases(
    manifest: &Manifest,
    bases: Option<&std::sync::Mutex<crate::base::BaseChain>>,
) -> Result<()> {
    let Some(link) = &manifest.base else {
        return Ok(());
    };
    let empty = std::sync::Mutex::new(crate::base::BaseChain::default());
    let chain = bases
        .unwrap_or(&empty)
        .lock()
        .expect("invariant: no panic under lock");
    chain.check("the archive", link)
}

/// The one-pass restore from an opened reader; `front`: damage found before it (salvage).
pub(crate) fn restore_reader(
    mut reader: StreamReader<'_>,
    dest: Dest,
    opts: &RestoreOptions,
    front: Option<String>,
) -> Result<RestoreReport> {
    let manifest = reader.manifest.clone();
    let (mut target, sel) = open_target(dest, &manifest, opts, true)?;
    let mut book = Book::new(&manifest, sel, opts);
    book.front(&reader, front)?;
    let end = replay(&mut reader, &mut target, &mut book, Replay::default())?;
    // Settled before the outputs are committed: a restore that loses data without --salvage
    // must leave nothing under the final names.
    let mut report = book.finish(end)?;
    target.finish()?;
    target.fill_paths(&mut report);
    Ok(report)
}

/// Restores (and checks) into a sink that writes nothing: for fuzzing and tests.
#[doc(hidden)]
pub fn restore_to_sink(input: &mut dyn Read, opts: &RestoreOptions) -> Result<RestoreReport> {
    let mut reader = StreamReader::new(input, true)?;
    check_stream(
        &mut reader,
        opts,
        Replay {
            check_index: true,
            ..Default::default()
        },
        None,
    )
}

/// Reads a whole stream into a target that keeps only digests, accounting for every byte: the
/// engine of verify, list and [`restore_to_sink`]. `front`: damage found before the reader.
pub(crate) fn check_stream(
    reader: &mut StreamReader<'_>,
    opts: &RestoreOptions,
    how: Replay<'_>,
    front: Option<String>,
) -> Result<RestoreReport> {
    let manifest = reader.manifest.clone();
    let sel = Selection::new(&manifest, opts)?;
    let mut book = Book::new(&manifest, sel, opts);
    book.front(reader, front)?;
    let end = replay(reader, &mut DigestSink::default(), &mut book, how)?;
    book.finish(end)
}

/// Verifies every checksum in one pass (the engine of `verify`). Always collects all damage.
/// A stream whose front does not read is spooled to the temp directory and verified as a file.
pub(crate) fn verify_stream(input: &mut dyn Read, bases: Option<Bases>) -> Result<RestoreReport> {
    salvage::read_or_spool(
        input,
        &std::env::temp_dir(),
        bases,
        |mut reader, bases| {
            check_bases(&reader.manifest, bases.as_deref())?;
            check_stream(&mut reader, &verify_options(bases), verify_replay(), None)
        },
        |spooled, bases| verify_seekable(spooled, bases),
    )
}

/// [`verify_stream`] for a file: a damaged front is read past with a recovered manifest.
pub(crate) fn verify_seekable(
    input: &mut dyn ReadSeek,
    bases: Option<Bases>,
) -> Result<RestoreReport> {
    let (mut reader, front) = salvage::open_seekable(input, true)?;
    check_bases(&reader.manifest, bases.as_deref())?;
    check_stream(&mut reader, &verify_options(bases), verify_replay(), front)
}

/// The base archives of an incremental, shared by a restore's stages.
pub type Bases = std::sync::Arc<std::sync::Mutex<crate::base::BaseChain>>;

fn verify_options(bases: Option<Bases>) -> RestoreOptions {
    RestoreOptions {
        salvage: true,
        bases,
        ..Default::default()
    }
}

fn verify_replay() -> Replay<'static> {
    Replay {
        check_index: true,
        ..Default::default()
    }
}
