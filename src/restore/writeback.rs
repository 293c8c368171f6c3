//! SAN write-back: restore one archived disk straight onto the LUNs, into the blocks of a
//! pre-created eager-zeroed thick flat disk (formats/BLOCKMAP.md §6). It is SAN backup run
//! backwards: the same block map, the same LUN identification ([`crate::san::LunSet::scan`],
//! VMFS signature, PE table, multi-LUN volumes) and the same probe checks; bytes go out through
//! the write path's [`WriteQueue`] (io_uring writes, pwrite fallback), each through the handle
//! [`DirectFile`] picks.
//!
//! Flow: [`WriteBack`] is a [`SinkFactory`] handed to the restore engine as
//! [`crate::restore::Dest::Sink`]. Once the manifest is read it picks the target file of the
//! map ([`select_target`]), refuses anything that is not fully `data` runs, checks the map's
//! probes (a mismatch stops before the first write), opens the LUNs it needs for writing and
//! returns the [`DiskSink`]. The sink receives the disk in order; each piece is mapped disk
//! offset → run → LV offset → [`LvMap::resolve`] → device ranges, and every device range is
//! checked to lie inside the ranges the target's runs resolve to before it is queued. Nothing
//! is ever written outside the target's runs.
//!
//! Zeros: an eager-zeroed disk is zeroed when it is created, but nothing proves the blocks are
//! still zero when we get them (the admin may reuse a disk). So by default zero ranges of the
//! archived disk are written as zeros ([`ZeroPolicy::Write`]); [`ZeroPolicy::AssumeZeroed`]
//! skips them (and all-zero 64 KiB blocks inside chunks): the fast path for a freshly created
//! disk. Verification still reads those ranges back and reports any that are not zero.
//!
//! Durability and verification ([`Verify::ReadBack`]): after the last write the queue is
//! drained, every LUN written is `fdatasync`ed, and the target is read back through the block
//! map (the scan's read handles, `O_DIRECT` with `--direct`): each archived chunk's BLAKE3 is
//! compared with the archive's digest, each zero range must be zero. Mismatches are reported
//! with the LUN path and device offset ([`Error::WriteBackMismatch`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::{DiskSink, SinkFactory};
use crate::blockio::{Job, ReadAhead, ReadOptions, ReadRequest};
use crate::chunk::bytes::is_zero;
use crate::error::{Error, MismatchedRange, Result, WriteBackMismatch};
use crate::input::{ByteSource, SourceOpener};
use crate::output::queue::{DeviceWrite, WriteQueue};
use crate::output::DirectFile;
use crate::san::blockmap::{file_name_of, MappedFile, RunKind};
use crate::san::opener::BlockMapOpener;
use crate::san::probes::{GuardedOp, ProbeGuard};
use crate::san::LvMap;

/// Largest request queued for a zero range (zero ranges can be gigabytes long).
const ZERO_PIECE_BYTES: usize = 4 << 20;
/// Largest request queued for data (chunks are at most 16 MiB; larger pieces are cut).
const DATA_PIECE_BYTES: usize = 16 << 20;
/// Granularity at which [`ZeroPolicy::AssumeZeroed`] skips zero blocks inside chunks.
const SKIP_BLOCK_BYTES: usize = 64 << 10;

/// What to do with the zero ranges of the archived disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum ZeroPolicy {
    /// Write them as zeros (safe: the target may have been used before).
    #[default]
    Write,
    /// Skip them: the target is a freshly created eager-zeroed disk.
    AssumeZeroed,
}

/// Whether to read the target back after writing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Verify {
    /// fdatasync, then compare every chunk's BLAKE3 and every zero range.
    #[default]
    ReadBack,
    /// fdatasync only.
    Skip,
}

/// Write-back settings.
#[derive(Clone, Debug, Default)]
pub struct WriteBackOptions {
    /// The target file's path or file name in the map (required when the map does not make
    /// the choice obvious, see [`select_target`]).
    pub target: Option<String>,
    /// Zero ranges.
    pub zeros: ZeroPolicy,
    /// Read-back verification.
    pub verify: Verify,
    /// Write with `O_DIRECT` where device offset, length and buffer position are aligned.
    pub direct: bool,
    /// Engine and queue depth (writes and verification reads).
    pub io: ReadOptions,
}

/// What a write-back did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WriteBackReport {
    /// The target file as named in the map.
    pub target: String,
    /// Its size (= the disk's capacity).
    pub capacity: u64,
    /// VM and disk restored.
    pub vm: String,
    /// Disk name.
    pub disk: String,
    /// Probes checked before writing.
    pub probes_checked: usize,
    /// Bytes of archived chunks written.
    pub data_bytes: u64,
    /// Bytes of zeros written.
    pub zero_bytes_written: u64,
    /// Bytes of zeros skipped ([`ZeroPolicy::AssumeZeroed`]).
    pub zero_bytes_skipped: u64,
    /// Bytes read back and checked.
    pub verified_bytes: u64,
    /// The LUN paths written to.
    pub luns: Vec<PathBuf>,
    /// `io_uring` or `pread`.
    pub backend: String,
    /// Bytes written with `O_DIRECT`.
    pub direct_bytes: u64,
    /// Notices (io_uring fallback).
    pub notices: Vec<String>,
}

/// Whether a mapped file is a flat extent: role `flat`, or no role and a `-flat.vmdk` name.
fn is_flat(f: &MappedFile) -> bool {
    match f.role.as_deref() {
        Some(r) => r == "flat",
        None => file_name_of(&f.path).ends_with("-flat.vmdk"),
    }
}

/// The file of `opener`'s map that a disk of `capacity` bytes is written into: the one named
/// by `name` (same name rule as reads), else the map's only file with runs, else its only flat
/// file of `capacity` bytes. The size must equal `capacity`.
pub fn select_target<'a>(
    opener: &'a BlockMapOpener,
    name: Option<&str>,
    capacity: u64,
) -> Result<&'a MappedFile> {
    let map = opener.map_path();
    let refuse = |file: &str, what: String| Error::WriteBackTarget {
        map: map.into(),
        file: file.into(),
        what,
    };
    let f = match name {
        Some(n) => opener.find(Path::new(n))?,
        None => {
            let with_runs: Vec<&MappedFile> = opener
                .map()
                .files
                .iter()
                .filter(|f| f.text.is_none())
                .collect();
            let fits: Vec<&MappedFile> = with_runs
                .iter()
                .copied()
                .filter(|f| is_flat(f) && f.size == capacity)
                .collect();
            match (with_runs.as_slice(), fits.as_slice()) {
                ([one], _) | (_, [one]) => *one,
                ([], _) => return Err(refuse("the map", "it maps no file with runs".into())),
                _ => {
                    return Err(refuse(
                        "the map",
                        format!(
                            "it maps {} files and {} of them are flat files of {capacity} bytes \
                             (the disk's capacity); name the target with --target ({})",
                            with_runs.len(),
                            fits.len(),
                            with_runs
                                .iter()
                                .map(|f| format!("{} ({} bytes)", f.path, f.size))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ))
                }
            }
        }
    };
    if f.text.is_some() {
        return Err(refuse(
            &f.path,
            "it is an embedded descriptor, not a flat extent".into(),
        ));
    }
    if f.size != capacity {
        return Err(refuse(
            &f.path,
            format!(
                "the file is {} bytes but the archived disk is {capacity} bytes; create the \
                 target with vmkfstools -c {capacity} -d eagerzeroedthick",
                f.size
            ),
        ));
    }
    Ok(f)
}

/// Refuses a target with `tbz` (lazy-zeroed thick) or `hole` (thin) runs.
pub fn check_fully_allocated(map: &Path, f: &MappedFile) -> Result<()> {
    for r in &f.runs {
        let why = match r.kind {
            RunKind::Data => continue,
            RunKind::Tbz => {
                "is to-be-zeroed (lazy-zeroed thick): ESX reads zeros there whatever is written \
                 to the LUN"
            }
            RunKind::Hole => "is a hole (thin): no storage is allocated there",
        };
        return Err(Error::WriteBackTarget {
            map: map.into(),
            file: f.path.clone(),
            what: format!(
                "bytes {:#x}..{:#x} {why}; create the disk with vmkfstools -c SIZE -d \
                 eagerzeroedthick and export its block map again",
                r.off,
                r.off + r.len
            ),
        });
    }
    Ok(())
}

/// The [`SinkFactory`] of SAN write-back.
pub struct WriteBack {
    opener: BlockMapOpener,
    opts: WriteBackOptions,
    report: Arc<Mutex<WriteBackReport>>,
}

impl WriteBack {
    /// Write-back into `opener`'s map and LUNs (scanned read-only) with `opts`.
    pub fn new(opener: BlockMapOpener, opts: WriteBackOptions) -> WriteBack {
        WriteBack {
            opener,
            opts,
            report: Arc::default(),
        }
    }

    /// The report, filled in as the restore runs (complete once the restore returns).
    pub fn report(&self) -> Arc<Mutex<WriteBackReport>> {
        self.report.clone()
    }
}

/// A device range of the target: PV index, device byte offset, length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct DevSpan {
    pv: usize,
    dev: u64,
    len: u64,
}

impl SinkFactory for WriteBack {
    fn create(self: Box<Self>, vm: &str, disk: &str, capacity: u64) -> Result<Box<dyn DiskSink>> {
        let WriteBack {
            opener,
            opts,
            report,
        } = *self;
        let map_path = opener.map_path().to_path_buf();
        let file = select_target(&opener, opts.target.as_deref(), capacity)?.clone();
        check_fully_allocated(&map_path, &file)?;
        // The target must be where the map says before anything is written; a fresh
        // eager-zeroed disk's probes hash zeros. The write replaces what they hashed, so the
        // read-back below, not the probes, proves the result.
        let probes = ProbeGuard::begin(&opener, GuardedOp::Write)?.checked();
        let vol = file.volume.as_deref().unwrap_or_default();
        let lv = opener.lv_map(vol).ok_or_else(|| Error::BlockMap {
            path: map_path.clone(),
            what: format!("volume {vol:?} of {} is not bound", file.path),
        })?;
        let source = opener.open(Path::new(&file.path))?;
        // Every device range the target's runs resolve to: the only bytes we may write.
        let mut allowed = Vec::new();
        let mut handles: HashMap<usize, Lun> = HashMap::new();
        let mut luns: Vec<PathBuf> = Vec::new();
        for (k, r) in file.runs.iter().enumerate() {
            let lv_off = r.lv.unwrap_or_default();
            let ranges = lv.resolve(lv_off, r.len).map_err(|what| {
                Error::corrupt(&file.path, r.off, format!("block map run {k}: {what}"))
            })?;
            for d in ranges {
                if let std::collections::hash_map::Entry::Vacant(e) = handles.entry(d.pv) {
                    let h = opener.luns().open_for_write(d.pv, opts.direct)?;
                    if !luns.iter().any(|p| p.as_path() == h.path.as_ref()) {
                        luns.push(h.path.to_path_buf());
                    }
                    e.insert(Lun {
                        part_start: h.part_start,
                        out: DirectFile::from_handles(h.path, h.buffered, h.direct),
                    });
                }
                allowed.push(DevSpan {
                    pv: d.pv,
                    dev: handles[&d.pv].part_start + d.p_offset,
                    len: d.len,
                });
            }
        }
        allowed.sort();
        let queue = WriteQueue::new(&opts.io)?;
        {
            let mut rep = report.lock().unwrap_or_else(|p| p.into_inner());
            *rep = WriteBackReport {
                target: file.path.clone(),
                capacity,
                vm: vm.into(),
                disk: disk.into(),
                probes_checked: probes,
                luns,
                backend: queue.backend_name().into(),
                notices: queue.notice().map(String::from).into_iter().collect(),
                ..Default::default()
            };
        }
        Ok(Box::new(WriteBackSink {
            map_path,
            file,
            lv,
            source,
            opener,
            handles,
            allowed,
            queue,
            zeros: opts.zeros,
            verify: opts.verify,
            io: opts.io,
            written: Vec::new(),
            report,
            direct_bytes: 0,
        }))
    }
}

/// A LUN opened for writing.
struct Lun {
    out: DirectFile,
    /// Byte offset of the PV's partition on the device.
    part_start: u64,
}

/// A range handed to the sink, for verification: its digest, or `None` for zeros.
struct Placed {
    offset: u64,
    len: u64,
    digest: Option<[u8; 32]>,
}

/// The write-back [`DiskSink`].
struct WriteBackSink {
    map_path: PathBuf,
    file: MappedFile,
    lv: Arc<LvMap>,
    /// The target read through the map (the scan's read-only handles), for verification.
    source: Arc<dyn ByteSource>,
    opener: BlockMapOpener,
    /// Per PV index: the LUN opened for writing.
    handles: HashMap<usize, Lun>,
    /// Sorted device ranges of the target's runs.
    allowed: Vec<DevSpan>,
    queue: WriteQueue,
    zeros: ZeroPolicy,
    verify: Verify,
    io: ReadOptions,
    written: Vec<Placed>,
    report: Arc<Mutex<WriteBackReport>>,
    direct_bytes: u64,
}

impl WriteBackSink {
    /// The device spans of target bytes `[offset, offset + len)`, in order, split at run and
    /// PE boundaries.
    fn spans(&self, offset: u64, len: u64) -> Result<Vec<DevSpan>> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.file.size)
            .ok_or_else(|| {
                Error::corrupt(
                    &self.file.path,
                    offset,
                    format!(
                        "write of {len} bytes runs past the end of the {}-byte file",
                        self.file.size
                    ),
                )
            })?;
        let runs = &self.file.runs;
        let mut k = runs.partition_point(|r| r.off + r.len <= offset);
        let mut pos = offset;
        let mut out = Vec::new();
        while pos < end {
            let r = &runs[k];
            let n = (r.off + r.len).min(end) - pos;
            let lv = r.lv.unwrap_or_default() + (pos - r.off);
            for d in self.lv.resolve(lv, n).map_err(|what| {
                Error::corrupt(&self.file.path, pos, format!("block map run {k}: {what}"))
            })? {
                let h = self.handles.get(&d.pv).ok_or_else(|| {
                    Error::corrupt(&self.file.path, pos, "device range on an unopened LUN")
                })?;
                out.push(DevSpan {
                    pv: d.pv,
                    dev: h.part_start + d.p_offset,
                    len: d.len,
                });
            }
            pos += n;
            k += 1;
        }
        Ok(out)
    }

    /// Whether `s` lies inside one of the target's device ranges.
    fn is_allowed(&self, s: &DevSpan) -> bool {
        let i = self
            .allowed
            .partition_point(|a| (a.pv, a.dev) <= (s.pv, s.dev));
        i > 0 && {
            let a = &self.allowed[i - 1];
            a.pv == s.pv && s.dev + s.len <= a.dev + a.len
        }
    }

    /// Queues target bytes `[offset, offset + data.len())` (`None`: `len` zeros).
    fn queue_piece(&mut self, offset: u64, data: Option<&[u8]>, len: usize) -> Result<()> {
        let spans = self.spans(offset, len as u64)?;
        let mut buf = self.queue.buffer(len);
        match data {
            Some(d) => buf.spare()[..len].copy_from_slice(d),
            None => buf.spare()[..len].fill(0),
        }
        let mut writes = Vec::with_capacity(spans.len());
        let mut at = 0usize;
        for s in spans {
            if !self.is_allowed(&s) {
                // Unreachable with a checked map; refuse rather than write a stray byte.
                return Err(Error::corrupt(
                    &self.file.path,
                    offset + at as u64,
                    format!(
                        "device bytes {:#x}..{:#x} are outside the target's runs: refusing to \
                         write",
                        s.dev,
                        s.dev + s.len
                    ),
                ));
            }
            let h = &self.handles[&s.pv];
            let n = s.len as usize;
            let (file, direct) = h.out.handle_for(s.dev, n, at);
            if direct {
                self.direct_bytes += n as u64;
            }
            writes.push(DeviceWrite {
                path: h.out.path().clone(),
                file: file.clone(),
                fallback: direct.then(|| h.out.buffered().clone()),
                offset: s.dev,
                at,
                len: n,
            });
            at += n;
        }
        self.queue.submit(buf, writes)
    }

    fn report(&self) -> std::sync::MutexGuard<'_, WriteBackReport> {
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads every placed range back and compares it with what was archived.
    fn verify(&mut self) -> Result<()> {
        // Zero ranges are read in bounded pieces; chunks whole, to hash them.
        let mut jobs = Vec::new();
        for (i, p) in self.written.iter().enumerate() {
            let mut pos = p.offset;
            let end = p.offset + p.len;
            while pos < end {
                let n = match p.digest {
                    Some(_) => p.len,
                    None => (end - pos).min(ZERO_PIECE_BYTES as u64),
                };
                jobs.push((i, pos, n as usize));
                pos += n;
            }
        }
        let src = self.source.clone();
        let iter = jobs.into_iter().map(|(i, offset, len)| {
            Ok(Job {
                tag: (i, offset, len),
                read: Some(ReadRequest {
                    source: src.clone(),
                    offset,
                    len,
                }),
            })
        });
        let mut ra = ReadAhead::new(iter, &self.io)?;
        let mut bad = Vec::new();
        let mut total = 0usize;
        let mut verified = 0u64;
        while let Some(done) = ra.next() {
            let done = done?;
            let (i, offset, len) = done.tag;
            let buf = done.data.expect("invariant: every verify job reads");
            let what = match self.written[i].digest {
                Some(d) => {
                    let got = blake3::hash(&buf);
                    (got.as_bytes() != &d).then(|| {
                        format!(
                            "blake3 {} != {} in the archive",
                            got.to_hex(),
                            blake3::Hash::from_bytes(d).to_hex()
                        )
                    })
                }
                None => buf
                    .iter()
                    .position(|&b| b != 0)
                    .map(|at| format!("not zero (byte {:#x} is not)", offset + at as u64)),
            };
            verified += len as u64;
            ra.recycle(buf);
            if let Some(what) = what {
                total += 1;
                if bad.len() < WriteBackMismatch::MAX_LISTED {
                    let first = self.spans(offset, 1)?[0];
                    bad.push(MismatchedRange {
                        offset,
                        len: len as u64,
                        lun: self.handles[&first.pv].out.path().to_path_buf(),
                        device_offset: first.dev,
                        what,
                    });
                }
            }
        }
        self.report().verified_bytes = verified;
        if total > 0 {
            return Err(Error::WriteBackMismatch(Box::new(WriteBackMismatch {
                map: self.map_path.clone(),
                file: self.file.path.clone(),
                ranges: bad,
                total,
            })));
        }
        Ok(())
    }

    /// Records a placed range, merging zero ranges that touch.
    fn place(&mut self, offset: u64, len: u64, digest: Option<[u8; 32]>) {
        if let (None, Some(last)) = (digest, self.written.last_mut()) {
            if last.digest.is_none() && last.offset + last.len == offset {
                last.len += len;
                return;
            }
        }
        self.written.push(Placed {
            offset,
            len,
            digest,
        });
    }
}

impl DiskSink for WriteBackSink {
    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        // Pieces without an archive digest (not used by restore, which hands whole chunks):
        // hash what we were given, piece by piece.
        for (k, part) in data.chunks(DATA_PIECE_BYTES).enumerate() {
            let at = offset + (k * DATA_PIECE_BYTES) as u64;
            self.write_chunk(at, part, blake3::hash(part).as_bytes())?;
        }
        Ok(())
    }

    fn write_chunk(&mut self, offset: u64, data: &[u8], digest: &[u8; 32]) -> Result<()> {
        self.place(offset, data.len() as u64, Some(*digest));
        let mut rep_data = 0u64;
        let mut skipped = 0u64;
        match self.zeros {
            ZeroPolicy::Write => {
                for (k, part) in data.chunks(DATA_PIECE_BYTES).enumerate() {
                    self.queue_piece(
                        offset + (k * DATA_PIECE_BYTES) as u64,
                        Some(part),
                        part.len(),
                    )?;
                }
                rep_data = data.len() as u64;
            }
            ZeroPolicy::AssumeZeroed => {
                // Runs of non-zero 64 KiB blocks go out as one request each.
                let mut start: Option<usize> = None;
                let mut pos = 0;
                while pos <= data.len() {
                    let end = (pos + SKIP_BLOCK_BYTES).min(data.len());
                    let zero = pos == data.len() || is_zero(&data[pos..end]);
                    let too_long = start.is_some_and(|s| pos - s >= DATA_PIECE_BYTES);
                    if let (Some(s), true) = (start, zero || too_long) {
                        self.queue_piece(offset + s as u64, Some(&data[s..pos]), pos - s)?;
                        rep_data += (pos - s) as u64;
                        start = None;
                    }
                    if pos == data.len() {
                        break;
                    }
                    if zero {
                        skipped += (end - pos) as u64;
                    } else if start.is_none() {
                        start = Some(pos);
                    }
                    pos = end;
                }
            }
        }
        let mut r = self.report();
        r.data_bytes += rep_data;
        r.zero_bytes_skipped += skipped;
        Ok(())
    }

    fn write_zero(&mut self, offset: u64, len: u64) -> Result<()> {
        self.place(offset, len, None);
        match self.zeros {
            ZeroPolicy::AssumeZeroed => self.report().zero_bytes_skipped += len,
            ZeroPolicy::Write => {
                let mut pos = offset;
                while pos < offset + len {
                    let n = (offset + len - pos).min(ZERO_PIECE_BYTES as u64) as usize;
                    self.queue_piece(pos, None, n)?;
                    pos += n as u64;
                }
                self.report().zero_bytes_written += len;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.queue.flush()?;
        // Durable before we say so: fdatasync every handle written through.
        for h in self.handles.values() {
            for f in h.out.handles() {
                f.sync_data()
                    .map_err(|e| Error::io(h.out.path().as_ref(), None, e))?;
            }
        }
        self.report().direct_bytes = self.direct_bytes;
        for n in self.opener.luns().take_notices() {
            self.report().notices.push(n);
        }
        if self.verify == Verify::ReadBack {
            self.verify()?;
        }
        Ok(())
    }
}
