//! The file-system restore target: one [`DiskSink`] per selected disk in the chosen
//! [`Format`], the VM's small files (verbatim, rewritten or held for the OVF), and the scratch
//! files that let a one-pass restore resolve references.
//!
//! Every path is `DIR/<vm>/<name>` with names checked by [`check_name`]; directories that exist
//! must be real directories (not symlinks) and files are opened with `O_NOFOLLOW`, so a restore
//! never writes outside `DIR`. All outputs are created before the first chunk is written, so a
//! refusal to overwrite happens before any work; they are written as `NAME.partial` and renamed
//! into place only when the whole restore has succeeded (`staged`). I/O errors (ENOSPC, EIO)
//! name the file and the byte offset.
//!
//! References in a one-pass restore are resolved by reading the earlier chunk back. Raw images
//! and ESX flat extents are read directly. Compressed or re-laid-out outputs (sparse, stream,
//! OVA) and disks not being restored cannot be read back, so their chunks are also written to
//! an unlinked sparse scratch file per disk (at their disk offset: no map in memory, zeros cost
//! nothing). Seekable restores read referenced chunks from the archive and never need one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::in_place::{InPlaceBase, InPlaceDisk, InPlaceMap};
use super::ova::{self, HashWriter, OvaDisk};
use super::progress::Tracker;
use super::sparse::SparseSink;
use super::stream::StreamSink;
use super::vmdk::{check_disk, descriptor, disk_stems, fresh_cid, rewrite_vmx};
use super::{Dest, Format, RestoreReport, Selection, SinkFactory, Target};
use crate::archive::manifest::{check_name, DiskManifest, Manifest};
use crate::error::{Error, Result};
use crate::input::vmx::VmxFile;
use crate::output::staged::{open_nofollow, Staged};
use crate::output::{DiskSink, RawSink, RawStream};

/// The sink of one disk.
enum Sink {
    Raw(RawSink),
    Other(Box<dyn DiskSink>),
    /// An OVA member being spooled.
    Spool(Box<StreamSink<HashWriter<File>>>),
}

impl Sink {
    fn random_access(&self) -> bool {
        match self {
            Sink::Raw(_) => true,
            Sink::Other(s) => s.random_access(),
            Sink::Spool(s) => s.random_access(),
        }
    }

    fn as_dyn(&mut self) -> &mut dyn DiskSink {
        match self {
            Sink::Raw(s) => s,
            Sink::Other(s) => s.as_mut(),
            Sink::Spool(s) => s.as_mut(),
        }
    }
}

/// One selected disk's output.
struct Out {
    sink: Sink,
    /// Bytes handed to the sink so far (ordered sinks).
    pos: u64,
    /// The file the report names (None for stdout).
    path: Option<PathBuf>,
    /// A text file written once the image is complete (the vmfs descriptor).
    after: Option<(PathBuf, String)>,
    /// OVA member name.
    member: Option<String>,
}

/// Per disk ordinal.
struct DiskOut {
    vm: usize,
    name: String,
    capacity: u64,
    out: Option<Out>,
    /// Copy of the chunks for later references (one-pass restores only).
    scratch: Option<File>,
    /// An image updated in place: what its base held, what this restore wrote or kept.
    in_place: Option<InPlaceDisk>,
}

/// Where an OVA goes.
enum OvaDest {
    /// The `.partial` file, positioned so that a failed write names its byte.
    File(PathBuf, BufWriter<ova::Positioned<File>>),
    Writer(Box<dyn Write + Send>),
}

/// Per VM.
struct VmOut {
    name: String,
    /// Its directory, if selected and writing to a directory.
    dir: Option<PathBuf>,
    /// `.vmx` rewrites: (device, new descriptor name).
    disk_files: Vec<(String, String)>,
    /// Raw restores: where the archived files are also written verbatim.
    originals: Option<PathBuf>,
    /// Whether every disk of the VM is restored (else no rewritten .vmx is written).
    whole: bool,
    /// The archived .vmx, kept for the OVF.
    vmx: Option<(String, String)>,
    ova: Option<OvaDest>,
    ova_disks: Vec<OvaDisk>,
}

/// Restored images and VM files under one directory, or one stream/OVA to a writer.
pub struct FsTarget {
    disks: Vec<DiskOut>,
    vms: Vec<VmOut>,
    format: Format,
    force: bool,
    created: u64,
    /// Every file written into the directory, renamed into place by `finish`.
    staged: Staged,
    tracker: Option<Tracker>,
    /// In-place restores: the directory whose marker `finish` removes.
    in_place: Option<PathBuf>,
}

/// An unlinked file in `dir`: nothing is left behind even if the restore is killed.
pub(super) fn unlinked(dir: &Path, tag: &str) -> Result<File> {
    let p = dir.join(format!(".vdar-{tag}-{}", std::process::id()));
    let f = open_nofollow(&p, true)?;
    std::fs::remove_file(&p).map_err(|e| Error::io(&p, None, e))?;
    Ok(f)
}

/// The folder of a raw restore that keeps every archived VM file as it was (the .vmx, the
/// chain's descriptors, the .vmsd): `original`, or `original_<n>` when a VM file has that name.
fn originals_dir(files: &[crate::archive::manifest::FileManifest]) -> String {
    let taken = |n: &str| files.iter().any(|f| f.name.eq_ignore_ascii_case(n));
    std::iter::once("original".to_string())
        .chain((1..).map(|n| format!("original_{n}")))
        .find(|n| !taken(n))
        .expect("invariant: finitely many files")
}

/// Opens the image an in-place restore updates: an existing regular file (not followed if a
/// symlink), locked against another restore writing it at the same time.
fn open_existing(p: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(p)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Usage(format!(
                "{}: missing (an in-place restore updates the images its base's restore wrote)",
                p.display()
            )),
            _ => Error::io(p, None, e),
        })?;
    let regular = f.metadata().map_err(|e| Error::io(p, None, e))?.is_file();
    if !regular {
        return Err(Error::Usage(format!("{}: not a regular file", p.display())));
    }
    crate::output::staged::lock_partial(&f, p)?;
    Ok(f)
}

/// What happens to a VM file in each format.
#[derive(PartialEq)]
enum FileAction {
    Write,
    /// The .vmx, pointed at the restored disks.
    Rewrite,
    /// Kept in memory for the OVF.
    Hold,
    Skip,
}

/// [`file_action`] for a VM of which this restore writes every disk (`whole`) or only some:
/// a .vmx pointed at some of its disks is not the VM, so a partial restore writes none (a raw
/// restore keeps the original under `original/`).
fn vm_file_action(format: Format, whole: bool, name: &str) -> FileAction {
    match file_action(format, name) {
        FileAction::Rewrite if !whole => FileAction::Skip,
        a => a,
    }
}

fn file_action(format: Format, name: &str) -> FileAction {
    let lower = name.to_ascii_lowercase();
    let is_vmx = lower.ends_with(".vmx");
    match format {
        // The chain's descriptors and the snapshot dictionary describe snapshots that no
        // longer exist (and a descriptor could collide with the restored one). Raw restores
        // keep them, verbatim, under `original/` ([`originals_dir`]).
        Format::Raw | Format::Vmdk | Format::Sparse if is_vmx => FileAction::Rewrite,
        Format::Raw | Format::Vmdk | Format::Sparse
            if lower.ends_with(".vmdk") || lower.ends_with(".vmsd") =>
        {
            FileAction::Skip
        }
        Format::Raw | Format::Vmdk | Format::Sparse => FileAction::Write,
        Format::Ova if is_vmx => FileAction::Hold,
        Format::Stream | Format::Ova => FileAction::Skip,
    }
}

impl FsTarget {
    /// Creates every selected output (directories are created if missing, their parent must
    /// exist). `one_pass` asks for scratch copies wherever a reference could not be read back.
    pub(crate) fn create(
        dest: Dest,
        m: &Manifest,
        sel: &Selection,
        force: bool,
        format: Format,
        one_pass: bool,
        in_place: Option<InPlaceMap>,
    ) -> Result<Self> {
        let mut c = Creating::new(dest, m, sel, force, format, one_pass)?;
        c.in_place = in_place.is_some();
        for v in 0..m.vms.len() {
            let out = c.vm_out(v)?;
            c.vms.push(out);
        }
        let mut disks = Vec::new();
        for (v, vm) in m.vms.iter().enumerate() {
            let stems = disk_stems(vm, (c.format == Format::Raw).then_some(".raw"));
            for k in 0..vm.disks.len() {
                disks.push(c.disk_out(v, k, disks.len(), &stems)?);
            }
        }
        let in_place = match (in_place, &c.dir) {
            (Some(map), Some(dir)) => {
                for (d, p) in disks.iter_mut().zip(map.disks) {
                    d.in_place = Some(p);
                }
                // Last, once every output is open: from here on the images may change.
                InPlaceBase::mark(dir, &map.marker)?;
                Some(dir.clone())
            }
            _ => None,
        };
        Ok(FsTarget {
            in_place,
            disks,
            vms: c.vms,
            format: c.format,
            force,
            created: m.created,
            staged: c.staged,
            tracker: None,
        })
    }

    /// Reports progress to `t` from now on.
    pub(crate) fn track(&mut self, t: Tracker) {
        self.tracker = Some(t);
    }

    /// Puts the output paths into a report built by the engine.
    pub(crate) fn fill_paths(&self, report: &mut RestoreReport) {
        let mut paths = self
            .disks
            .iter()
            .filter_map(|d| d.out.as_ref())
            .map(|o| o.path.clone());
        for d in &mut report.disks {
            d.path = paths.next().flatten();
        }
    }

    fn read_chunk(&self, disk: u32, offset: u64, len: u64) -> Result<Option<Vec<u8>>> {
        let Some(d) = self.disks.get(disk as usize) else {
            return Ok(None);
        };
        let (what, f): (&Path, &File) = match (&d.out, &d.scratch) {
            (
                Some(Out {
                    sink: Sink::Raw(r), ..
                }),
                _,
            ) => {
                let (p, f) = r.file();
                (p.as_path(), f)
            }
            (_, Some(f)) => (Path::new("restore scratch file"), f),
            _ => return Ok(None),
        };
        if offset.checked_add(len).is_none_or(|e| e > d.capacity) {
            return Ok(None);
        }
        let mut buf = vec![0u8; len as usize];
        match f.read_exact_at(&mut buf, offset) {
            Ok(()) => Ok(Some(buf)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(Error::io(what, Some(offset), e)),
        }
    }
}

/// [`FsTarget::create`] under way: where the outputs go, and the VMs done so far.
struct Creating<'m> {
    m: &'m Manifest,
    sel: &'m Selection,
    force: bool,
    format: Format,
    one_pass: bool,
    /// The restore directory (`Dest::Dir`).
    dir: Option<PathBuf>,
    /// `Dest::Writer`, until the output that takes it.
    writer: Option<Box<dyn Write + Send>>,
    /// `Dest::Sink`, until the disk that takes it.
    factory: Option<Box<dyn SinkFactory>>,
    /// Where unlinked scratch and spool files go.
    scratch_dir: PathBuf,
    /// Raw images are opened where they are, not created ([`super::in_place`]).
    in_place: bool,
    /// Dropped with its partial files and the directories it created if anything fails.
    staged: Staged,
    vms: Vec<VmOut>,
}

impl<'m> Creating<'m> {
    /// Checks that `dest` can take what `sel` selects and creates the restore directory.
    fn new(
        dest: Dest,
        m: &'m Manifest,
        sel: &'m Selection,
        force: bool,
        format: Format,
        one_pass: bool,
    ) -> Result<Self> {
        let nsel_disks = sel.disks.iter().filter(|&&s| s).count();
        let (dir, writer, factory) = match dest {
            Dest::Dir(d) => (Some(d), None, None),
            Dest::Writer(w) => (None, Some(w), None),
            Dest::Sink(_) if nsel_disks != 1 => {
                return Err(Error::Usage(format!(
                    "this restore writes one disk: {nsel_disks} disks selected (of {}); choose \
                     one with --vm/--disk",
                    sel.disks.len()
                )))
            }
            Dest::Sink(f) => (None, None, Some(f)),
        };
        // A sink restore writes one image and no VM files: the format does not apply.
        let format = if factory.is_some() {
            Format::Raw
        } else {
            format
        };
        if writer.is_some() {
            check_one_stream(format, sel)?;
        }
        let scratch_dir = dir.clone().unwrap_or_else(std::env::temp_dir);
        let mut staged = Staged::default();
        if let Some(d) = &dir {
            staged.create_root_dir(d)?;
        }
        Ok(Creating {
            m,
            sel,
            force,
            format,
            one_pass,
            dir,
            writer,
            factory,
            scratch_dir,
            in_place: false,
            staged,
            vms: Vec::new(),
        })
    }

    /// VM `v`'s directory, its files' names reserved, and its OVA if one is written.
    fn vm_out(&mut self, v: usize) -> Result<VmOut> {
        let vm = &self.m.vms[v];
        let first = self.m.vms[..v].iter().map(|x| x.disks.len()).sum::<usize>();
        let mut out = VmOut {
            name: vm.name.clone(),
            dir: None,
            disk_files: Vec::new(),
            originals: None,
            whole: self.sel.disks[first..first + vm.disks.len()]
                .iter()
                .all(|&s| s),
            vmx: None,
            ova: None,
            ova_disks: Vec::new(),
        };
        if !self.sel.vms[v] {
            return Ok(out);
        }
        check_name(&vm.name)?;
        if let Some(d) = &self.dir {
            let d = d.join(&vm.name);
            self.staged.create_dir(&d)?;
            for f in &vm.files {
                check_name(&f.name)?;
                let act = vm_file_action(self.format, out.whole, &f.name);
                if act == FileAction::Write || act == FileAction::Rewrite {
                    // Written when its record arrives, after the images are created: no image
                    // may be staged under its name (`x.raw.partial`).
                    self.reserve_new(&d.join(&f.name))?;
                }
            }
            let plain_dir = self.factory.is_none() && self.writer.is_none();
            if self.format == Format::Raw && plain_dir && !vm.files.is_empty() {
                let o = d.join(originals_dir(&vm.files));
                self.staged.create_dir(&o)?;
                for f in &vm.files {
                    self.reserve_new(&o.join(&f.name))?;
                }
                out.originals = Some(o);
            }
            out.dir = Some(d);
        }
        if self.format == Format::Ova {
            out.ova = Some(self.ova_dest(out.dir.as_deref(), &vm.name)?);
        }
        Ok(out)
    }

    /// Refuses `p` if it exists (without `--force`), else keeps it for a file written later.
    fn reserve_new(&mut self, p: &Path) -> Result<()> {
        if !self.force && std::fs::symlink_metadata(p).is_ok() {
            return Err(Error::Exists {
                path: p.to_path_buf(),
            });
        }
        self.staged.reserve(p);
        Ok(())
    }

    /// The OVA of a VM: the writer, or `<stem>.ova` in its directory.
    fn ova_dest(&mut self, dir: Option<&Path>, vm: &str) -> Result<OvaDest> {
        match (dir, self.writer.take()) {
            (_, Some(w)) => Ok(OvaDest::Writer(w)),
            (Some(d), None) => {
                let p = d.join(format!("{}.ova", ova::file_stem(vm)));
                let (p, f) = self.staged.create(&p, self.force)?;
                let f = ova::Positioned::new(f);
                Ok(OvaDest::File(p, BufWriter::with_capacity(1 << 20, f)))
            }
            (None, None) => Err(Error::Usage("one OVA per writer".into())),
        }
    }

    /// Disk `k` of VM `v` (ordinal `i`): its output if selected, and the scratch copy a
    /// one-pass restore needs to resolve references to it.
    fn disk_out(&mut self, v: usize, k: usize, i: usize, stems: &[String]) -> Result<DiskOut> {
        let vm = &self.m.vms[v];
        let disk = &vm.disks[k];
        let cap = disk.meta.capacity;
        let mut d = DiskOut {
            vm: v,
            name: disk.name.clone(),
            capacity: cap,
            out: None,
            scratch: None,
            in_place: None,
        };
        if !self.sel.disks[i] {
            if self.one_pass && !self.sel.disks.iter().all(|&s| s) {
                // A later selected disk may refer to this one's chunks.
                d.scratch = Some(unlinked(&self.scratch_dir, &format!("scratch-{i}"))?);
            }
            return Ok(d);
        }
        check_name(&disk.name)?;
        let stem = &stems[k];
        if self.format != Format::Raw && self.factory.is_none() {
            check_disk(&vm.name, &disk.name, cap, stem)?;
        }
        let o = self.out(v, disk, i, stem)?;
        if self.one_pass && !matches!(o.sink, Sink::Raw(_)) {
            let f = unlinked(&self.scratch_dir, &format!("scratch-{i}"))?;
            f.set_len(cap)
                .map_err(|e| Error::io("restore scratch file", Some(cap), e))?;
            d.scratch = Some(f);
        }
        d.out = Some(o);
        Ok(d)
    }

    /// The output of selected disk `disk` of VM `v` (ordinal `i`) in the restore's format.
    fn out(&mut self, v: usize, disk: &DiskManifest, i: usize, stem: &str) -> Result<Out> {
        let vm = &self.m.vms[v].name;
        let cap = disk.meta.capacity;
        let cid = fresh_cid(&format!("{vm}/{}", disk.name));
        if let Some(f) = self.factory.take() {
            // A sink restore: the factory builds the one disk's sink.
            return Ok(Out::new(Sink::Other(f.create(vm, &disk.name, cap)?), None));
        }
        match self.format {
            Format::Raw => match self.writer.take() {
                Some(w) => Ok(Out::new(
                    Sink::Other(Box::new(RawStream::new(w, "standard output"))),
                    None,
                )),
                None => self.raw_out(v, disk, stem, cid),
            },
            Format::Vmdk => self.vmdk_out(v, disk, stem, cid),
            Format::Sparse => self.sparse_out(v, disk, stem, cid),
            Format::Stream => self.stream_out(v, disk, stem, cid),
            Format::Ova => self.ova_out(v, disk, i, cid),
        }
    }

    /// `name` in VM `v`'s directory.
    fn at(&self, v: usize, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        self.vms[v]
            .dir
            .as_ref()
            .map(|d| d.join(name))
            .ok_or_else(|| Error::Usage("internal: no directory".into()))
    }

    /// `<stem>.raw`, and a monolithicFlat descriptor over it so that the folder opens as a VM
    /// (the .vmx is pointed at it); none for what no VMDK can hold.
    fn raw_out(&mut self, v: usize, disk: &DiskManifest, stem: &str, cid: u32) -> Result<Out> {
        let cap = disk.meta.capacity;
        let raw = format!("{stem}.raw");
        let p = self.at(v, &raw)?;
        let sink = if self.in_place {
            let f = open_existing(&p)?;
            RawSink::in_place(p.clone(), f, cap)?
        } else {
            let (partial, f) = self.staged.create(&p, self.force)?;
            RawSink::new(partial, f, cap)?
        };
        let mut o = Out::new(Sink::Raw(sink), Some(p));
        if check_disk(&self.m.vms[v].name, &disk.name, cap, stem).is_ok() {
            let desc = self.at(v, &format!("{stem}.vmdk"))?;
            self.reserve_new(&desc)?;
            let text = descriptor("monolithicFlat", cid, "FLAT", &raw, &disk.meta);
            o.after = Some((desc, text));
            self.vms[v]
                .disk_files
                .push((disk.name.clone(), format!("{stem}.vmdk")));
        }
        Ok(o)
    }

    /// `<stem>-flat.vmdk` and its vmfs descriptor `<stem>.vmdk`.
    fn vmdk_out(&mut self, v: usize, disk: &DiskManifest, stem: &str, cid: u32) -> Result<Out> {
        let flat = format!("{stem}-flat.vmdk");
        let desc = self.at(v, &format!("{stem}.vmdk"))?;
        self.reserve_new(&desc)?;
        let (partial, f) = self.staged.create(&self.at(v, &flat)?, self.force)?;
        let sink = Sink::Raw(RawSink::new(partial, f, disk.meta.capacity)?);
        let mut o = Out::new(sink, Some(desc.clone()));
        o.after = Some((desc, descriptor("vmfs", cid, "VMFS", &flat, &disk.meta)));
        self.vms[v]
            .disk_files
            .push((disk.name.clone(), format!("{stem}.vmdk")));
        Ok(o)
    }

    /// A monolithicSparse `<stem>.vmdk`.
    fn sparse_out(&mut self, v: usize, disk: &DiskManifest, stem: &str, cid: u32) -> Result<Out> {
        let name = format!("{stem}.vmdk");
        let p = self.at(v, &name)?;
        let (partial, f) = self.staged.create(&p, self.force)?;
        let text = descriptor("monolithicSparse", cid, "SPARSE", &name, &disk.meta);
        self.vms[v].disk_files.push((disk.name.clone(), name));
        let sink = SparseSink::new(partial, f, disk.meta.capacity, &text)?;
        Ok(Out::new(Sink::Other(Box::new(sink)), Some(p)))
    }

    /// A streamOptimized `<stem>.vmdk`, or the stream on the writer.
    fn stream_out(&mut self, v: usize, disk: &DiskManifest, stem: &str, cid: u32) -> Result<Out> {
        let cap = disk.meta.capacity;
        let name = format!("{stem}.vmdk");
        let text = descriptor("streamOptimized", cid, "SPARSE", &name, &disk.meta);
        if let Some(w) = self.writer.take() {
            let sink = StreamSink::new(w, "standard output".into(), cap, text)?;
            return Ok(Out::new(Sink::Other(Box::new(sink)), None));
        }
        let p = self.at(v, &name)?;
        let (partial, f) = self.staged.create(&p, self.force)?;
        let f = BufWriter::with_capacity(1 << 20, f);
        let sink = StreamSink::new(f, partial.display().to_string(), cap, text)?;
        Ok(Out::new(Sink::Other(Box::new(sink)), Some(p)))
    }

    /// An OVA member, spooled (compressed and hashed) until the VM's OVA is assembled.
    fn ova_out(&mut self, v: usize, disk: &DiskManifest, i: usize, cid: u32) -> Result<Out> {
        let stem = ova::file_stem(&self.m.vms[v].name);
        let n = self.vms[v].disk_files.len() + 1;
        let member = format!("{stem}-disk{n}.vmdk");
        self.vms[v]
            .disk_files
            .push((disk.name.clone(), member.clone()));
        let text = descriptor("streamOptimized", cid, "SPARSE", &member, &disk.meta);
        let spool = unlinked(&self.scratch_dir, &format!("ova-{i}"))?;
        let path = self.vms[v]
            .dir
            .as_ref()
            .map(|d| d.join(format!("{stem}.ova")));
        // The spool is unlinked: name the directory it fills.
        let what = format!(
            "OVA member {member} (spooled in {})",
            self.scratch_dir.display()
        );
        let sink = StreamSink::new(HashWriter::new(spool), what, disk.meta.capacity, text)?;
        let mut o = Out::new(Sink::Spool(Box::new(sink)), path);
        o.member = Some(member);
        Ok(o)
    }
}

/// A restore to one writer (`--to -`) writes one disk as raw or stream, or one VM as an OVA.
fn check_one_stream(format: Format, sel: &Selection) -> Result<()> {
    let nsel_disks = sel.disks.iter().filter(|&&s| s).count();
    let nsel_vms = sel.vms.iter().filter(|&&s| s).count();
    match format {
        Format::Raw | Format::Stream if nsel_disks == 1 => Ok(()),
        Format::Ova if nsel_vms == 1 => Ok(()),
        Format::Raw | Format::Stream => Err(Error::Usage(format!(
            "--to - writes one disk: select exactly one ({nsel_disks} selected; use --vm/--disk)"
        ))),
        Format::Ova => Err(Error::Usage(format!(
            "--to - writes one OVA: select exactly one VM ({nsel_vms} selected; use --vm)"
        ))),
        f => Err(Error::Usage(format!(
            "--to - is only for --format raw, stream or ova, not {f}"
        ))),
    }
}

impl FsTarget {
    /// Stages `bytes` as the whole file `p`; returns `p`.
    fn write_whole(&mut self, p: &Path, bytes: &[u8]) -> Result<PathBuf> {
        let (partial, f) = self.staged.create(p, self.force)?;
        f.write_all_at(bytes, 0)
            .map_err(|e| Error::io(&partial, Some(0), e))?;
        Ok(p.to_path_buf())
    }
}

impl Out {
    fn new(sink: Sink, path: Option<PathBuf>) -> Self {
        Out {
            sink,
            pos: 0,
            path,
            after: None,
            member: None,
        }
    }

    /// Hands a chunk to the sink, turning the gap since the last one into zeros.
    fn put(&mut self, what: &str, cap: u64, offset: u64, data: &[u8], d: &[u8; 32]) -> Result<()> {
        let s = self.sink.as_dyn();
        if s.random_access() {
            return s.write_chunk(offset, data, d);
        }
        let end = offset.checked_add(data.len() as u64);
        if offset < self.pos || end.is_none_or(|e| e > cap) {
            return Err(Error::Usage(format!(
                "disk {what:?}: chunk at {offset:#x} arrives after {:#x} or past the capacity: \
                 this output format needs chunks in disk order (restore as raw)",
                self.pos
            )));
        }
        if offset > self.pos {
            s.write_zero(self.pos, offset - self.pos)?;
        }
        s.write_chunk(offset, data, d)?;
        self.pos = offset + data.len() as u64;
        Ok(())
    }
}

impl Target for FsTarget {
    fn random_access(&self, disk: u32) -> bool {
        self.disks
            .get(disk as usize)
            .and_then(|d| d.out.as_ref())
            .is_none_or(|o| o.sink.random_access())
    }

    fn write_file(&mut self, vm: usize, name: &str, data: &[u8]) -> Result<Vec<PathBuf>> {
        let Some(v) = self.vms.get_mut(vm) else {
            return Ok(Vec::new());
        };
        check_name(name)?;
        let mut written = Vec::new();
        if let Some(o) = v.originals.clone() {
            written.push(self.write_whole(&o.join(name), data)?);
        }
        let v = &mut self.vms[vm];
        let text = || {
            String::from_utf8(data.to_vec()).map_err(|_| Error::Syntax {
                path: PathBuf::from(name),
                line: 0,
                what: "archived .vmx is not UTF-8".into(),
            })
        };
        let bytes = match vm_file_action(self.format, v.whole, name) {
            FileAction::Skip => return Ok(written),
            FileAction::Hold => {
                v.vmx = Some((name.to_string(), text()?));
                return Ok(written);
            }
            FileAction::Write => data.to_vec(),
            // A raw restore must not fail on a .vmx it cannot rewrite: the original is kept.
            FileAction::Rewrite if v.originals.is_some() => {
                match text().and_then(|t| rewrite_vmx(name, &t, &v.disk_files)) {
                    Ok(t) => t.into_bytes(),
                    Err(_) => return Ok(written),
                }
            }
            FileAction::Rewrite => rewrite_vmx(name, &text()?, &v.disk_files)?.into_bytes(),
        };
        let Some(d) = &v.dir else {
            return Ok(written);
        };
        let p = d.join(name);
        written.insert(0, self.write_whole(&p, &bytes)?);
        Ok(written)
    }

    fn write_chunk(
        &mut self,
        disk: u32,
        offset: u64,
        data: &[u8],
        digest: &[u8; 32],
    ) -> Result<()> {
        let Some(d) = self.disks.get_mut(disk as usize) else {
            return Ok(());
        };
        if let Some(p) = &mut d.in_place {
            p.placed(offset);
        }
        if let Some(f) = &d.scratch {
            f.write_all_at(data, offset)
                .map_err(|e| Error::io("restore scratch file", Some(offset), e))?;
        }
        if let Some(o) = &mut d.out {
            o.put(&d.name, d.capacity, offset, data, digest)?;
            if let Some(t) = &mut self.tracker {
                t.chunk(disk, offset, data.len() as u64);
            }
        }
        Ok(())
    }

    fn copy_chunk(
        &mut self,
        src: (u32, u64),
        dst: (u32, u64),
        len: u64,
        d: &[u8; 32],
    ) -> Result<bool> {
        match self.read_chunk(src.0, src.1, len)? {
            Some(buf) if blake3::hash(&buf).as_bytes() == d => {
                self.write_chunk(dst.0, dst.1, &buf, d)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn keeps(&mut self, disk: u32, offset: u64, src: (u32, u64)) -> bool {
        let Some(d) = self.disks.get_mut(disk as usize) else {
            return false;
        };
        let Some(p) = d.in_place.as_mut().filter(|p| src == (p.base_disk, offset)) else {
            return false;
        };
        p.placed(offset);
        if let Some(t) = &mut self.tracker {
            t.chunk(disk, offset, p.chunk_len(offset));
        }
        true
    }

    fn finish(&mut self) -> Result<()> {
        for d in &mut self.disks {
            let Some(o) = &mut d.out else { continue };
            let s = o.sink.as_dyn();
            if let Some(p) = &d.in_place {
                for (off, len) in p.stale() {
                    s.write_zero(off, len)?;
                }
            }
            if !s.random_access() && o.pos < d.capacity {
                s.write_zero(o.pos, d.capacity - o.pos)?;
                o.pos = d.capacity;
            }
            s.finish()?;
            if let Some((p, text)) = &o.after {
                let (partial, f) = self.staged.create(p, self.force)?;
                f.write_all_at(text.as_bytes(), 0)
                    .map_err(|e| Error::io(&partial, Some(0), e))?;
            }
            if let (Sink::Spool(s), Some(member)) = (&mut o.sink, &o.member) {
                let (hw, sum) = s
                    .take_output()
                    .ok_or_else(|| Error::Usage("internal: OVA member not finished".into()))?;
                let (spool, sha256, size) = hw.into_parts();
                debug_assert_eq!(size, sum.bytes);
                self.vms[d.vm].ova_disks.push(OvaDisk {
                    device: d.name.clone(),
                    file: member.clone(),
                    capacity: d.capacity,
                    populated: sum.populated,
                    size,
                    sha256,
                    spool,
                });
            }
        }
        for v in &mut self.vms {
            let Some(dest) = v.ova.take() else { continue };
            let vmx = match &v.vmx {
                Some((name, text)) => Some(VmxFile::parse(Path::new(name), text)?),
                None => None,
            };
            let text = ova::ovf(&v.name, vmx.as_ref(), &v.ova_disks)?;
            let stem = ova::file_stem(&v.name);
            match dest {
                OvaDest::File(p, mut w) => {
                    ova::write_ova(&mut w, &p, &stem, self.created, &text, &mut v.ova_disks)?;
                    w.into_inner()
                        .map_err(|e| ova::located(&p, e.into_error()))?;
                }
                OvaDest::Writer(mut w) => {
                    let out = Path::new("standard output");
                    ova::write_ova(&mut w, out, &stem, self.created, &text, &mut v.ova_disks)?;
                }
            }
            v.ova_disks.clear();
        }
        self.staged.commit()?;
        if let Some(dir) = &self.in_place {
            InPlaceBase::unmark(dir)?;
        }
        if let Some(t) = &mut self.tracker {
            t.finish();
        }
        Ok(())
    }
}
