//! Finding the LUNs of a VMFS datastore and reading logical-volume bytes from them.
//!
//! [`LunSet::scan`] opens every given path, looks for VMFS partitions (MBR type 0xFB, GPT type
//! `AA31E02A-400F-11DB-9590-000C2911D1B8`, and the device start itself for partition nodes and
//! bare images), and reads each partition's LVM header and PE table. LUNs are identified by that
//! VMFS signature (LV UUID, PV UUID, PE table), never by SCSI IDs.
//!
//! Paths to one LUN: paths that name the same device or file (symlinks such as
//! `/dev/disk/by-id/scsi-3…` and `wwn-0x…` to one `/dev/sdX`, same `st_rdev` or inode) are one
//! LUN automatically; paths the caller groups explicitly (`--lun A,B`) are declared paths to one
//! LUN and must show identical LVM headers. Any other two devices that carry the same PV UUID,
//! or PEs that overlap in one logical volume, are an error: an array snapshot or replica looks
//! exactly like its source, and guessing could back up stale data.
//!
//! [`LvMap`] is the PE table of one logical volume collected over all its LUNs, checked to cover
//! the volume without holes; [`LunSet::read_pv`] reads with path failover.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::lvm::{read_lvm, LvmHeader, PeEntry, VmfsUuid, LVM_HEADER_OFFSET};
use crate::error::{Error, Result};

/// GPT partition type GUID of VMFS, in its on-disk (mixed-endian) byte order.
pub const GPT_VMFS_TYPE: [u8; 16] = [
    0x2A, 0xE0, 0x31, 0xAA, 0x0F, 0x40, 0xDB, 0x11, 0x95, 0x90, 0x00, 0x0C, 0x29, 0x11, 0xD1, 0xB8,
];
/// MBR partition type of VMFS.
pub const MBR_VMFS_TYPE: u8 = 0xFB;
/// Most GPT entries scanned (the standard table has 128).
const MAX_GPT_ENTRIES: u32 = 256;

/// How to open LUN paths.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScanOptions {
    /// Also open each path with `O_DIRECT`, for aligned bulk reads that bypass the page cache.
    pub direct: bool,
}

/// One path to a LUN.
#[derive(Debug)]
pub struct LunPath {
    /// As given.
    pub path: PathBuf,
    file: Arc<File>,
    direct: Option<Arc<File>>,
    dead: AtomicBool,
}

/// One VMFS partition (physical volume, "extent") found on a LUN.
#[derive(Debug)]
pub struct PhysicalVolume {
    /// Paths to the LUN; at least one.
    pub paths: Vec<LunPath>,
    /// Byte offset of the partition on the device.
    pub part_start: u64,
    /// Device size in bytes.
    pub device_len: u64,
    /// The LVM header.
    pub header: LvmHeader,
    /// Used PE entries.
    pub pes: Vec<PeEntry>,
    /// Index of the path that answered last.
    active: AtomicUsize,
}

impl PhysicalVolume {
    /// The first path, for messages.
    pub fn name(&self) -> &Path {
        &self.paths[0].path
    }
}

/// All VMFS partitions found on the given paths.
#[derive(Debug, Default)]
pub struct LunSet {
    pvs: Vec<PhysicalVolume>,
    notices: Mutex<Vec<String>>,
}

/// Identity of an opened path: block devices by `st_rdev`, files by device and inode.
fn identity(f: &File, path: &Path) -> Result<(u64, u64)> {
    let m = f.metadata().map_err(|e| Error::io(path, None, e))?;
    use std::os::unix::fs::FileTypeExt;
    Ok(if m.file_type().is_block_device() {
        (u64::MAX, m.rdev())
    } else {
        (m.dev(), m.ino())
    })
}

/// Size of a file or block device.
fn device_len(f: &File, path: &Path) -> Result<u64> {
    use rustix::fs::{seek, SeekFrom};
    seek(f, SeekFrom::End(0)).map_err(|e| Error::io(path, None, io::Error::from(e)))
}

fn pread_exact(f: &File, path: &Path, buf: &mut [u8], off: u64) -> Result<()> {
    f.read_exact_at(buf, off).map_err(|e| {
        let e = if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes runs past the end of the device",
                    buf.len()
                ),
            )
        } else {
            e
        };
        Error::io(path, Some(off), e)
    })
}

/// Reads exactly `buf.len()` bytes at a device offset (a file, or an in-memory image in tests
/// and fuzzing).
type ReadAt<'a> = &'a mut dyn FnMut(&mut [u8], u64) -> Result<()>;

/// Partition starts worth probing on a device of `len` bytes: VMFS partitions of an MBR or GPT,
/// then the device start itself (a partition node, or an image without a table). Sorted and
/// free of duplicates (a hybrid MBR lists GPT partitions twice).
fn candidate_starts(path: &Path, len: u64, read_at: ReadAt) -> Result<Vec<u64>> {
    let mut starts = Vec::new();
    if len >= 1024 {
        let mut mbr = [0u8; 512];
        read_at(&mut mbr, 0)?;
        if mbr[510..512] == [0x55, 0xAA] {
            let mut gpt = false;
            for i in 0..4 {
                let e = &mbr[446 + 16 * i..446 + 16 * (i + 1)];
                let lba = u32::from_le_bytes(e[8..12].try_into().expect("invariant: 4 bytes"));
                match e[4] {
                    MBR_VMFS_TYPE if lba > 0 => starts.push(u64::from(lba) * 512),
                    0xEE => gpt = true,
                    _ => {}
                }
            }
            if gpt {
                gpt_starts(path, len, read_at, &mut starts)?;
            }
        }
    }
    starts.push(0);
    starts.sort_unstable();
    starts.dedup();
    Ok(starts)
}

fn gpt_starts(path: &Path, len: u64, read_at: ReadAt, starts: &mut Vec<u64>) -> Result<()> {
    let mut h = [0u8; 92];
    read_at(&mut h, 512)?;
    if &h[0..8] != b"EFI PART" {
        return Ok(());
    }
    let le64 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8"));
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4"));
    let count = le32(&h, 0x50);
    let size = le32(&h, 0x54);
    if count > MAX_GPT_ENTRIES || !(128..=4096).contains(&size) {
        return Err(Error::Lun {
            path: path.into(),
            offset: Some(512),
            what: format!("GPT header: {count} entries of {size} bytes is out of range"),
        });
    }
    // The table LBA is untrusted: a table that starts or ends past the device is read only as
    // far as the device goes (entries past the end are skipped, as before), never wrapped.
    let Some(table) = le64(&h, 0x48).checked_mul(512) else {
        return Ok(());
    };
    let mut e = vec![0u8; size as usize];
    for i in 0..u64::from(count) {
        // count ≤ 256 and size ≤ 4096: i * size cannot overflow; table + … can.
        let Some(at) = table.checked_add(i * u64::from(size)) else {
            break;
        };
        if at.checked_add(u64::from(size)).is_none_or(|end| end > len) {
            break;
        }
        read_at(&mut e, at)?;
        if e[0..16] == GPT_VMFS_TYPE {
            // A first LBA whose byte offset does not fit in u64 cannot be a partition on this
            // device; skip it instead of saturating to a bogus start.
            if let Some(start) = le64(&e, 0x20).checked_mul(512) {
                starts.push(start);
            }
        }
    }
    Ok(())
}

/// A path opened during the scan, with its device identity.
type OpenedPath = (PathBuf, File, (u64, u64));

/// What one path shows: its device size and, per VMFS partition, the header and PE table.
type PathScan = (u64, Vec<(u64, LvmHeader, Vec<PeEntry>)>);

/// The VMFS partitions (start, LVM header, used PEs) of the `len`-byte device `path`, read
/// through `read_at(buf, device_offset)`: what [`LunSet::scan`] finds on each path, for a
/// device file or an image held in memory. The partition tables (MBR, GPT) and LVM metadata
/// are untrusted: every offset is checked against `len` before it is read.
pub fn probe_device(
    path: &Path,
    len: u64,
    read_at: &mut dyn FnMut(&mut [u8], u64) -> Result<()>,
) -> Result<Vec<(u64, LvmHeader, Vec<PeEntry>)>> {
    let mut found = Vec::new();
    for start in candidate_starts(path, len, read_at)? {
        let Some(hdr_at) = start.checked_add(LVM_HEADER_OFFSET) else {
            continue;
        };
        if hdr_at.checked_add(4).is_none_or(|end| end > len) {
            continue;
        }
        let mut magic = [0u8; 4];
        read_at(&mut magic, hdr_at)?;
        if !LvmHeader::has_magic(&magic) {
            continue;
        }
        let (h, pes) = read_lvm(path, start, read_at)?;
        found.push((start, h, pes));
    }
    Ok(found)
}

fn scan_path(f: &File, path: &Path) -> Result<PathScan> {
    let len = device_len(f, path)?;
    let mut read_at = |buf: &mut [u8], off: u64| pread_exact(f, path, buf, off);
    Ok((len, probe_device(path, len, &mut read_at)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device of an `lvm` fuzz seed in probing mode: a u64 LE device length (capped at 16
    /// TiB), then records of `u32 LE offset in KiB, u16 LE length, bytes` placed at that offset
    /// (tools/fuzz/fuzz_targets/lvm.rs has the same decoder). Returns what the probing found.
    fn probe_virtual_device(data: &[u8]) -> Result<PathScan> {
        let Some((len, mut rest)) = data.split_first_chunk::<8>() else {
            return Ok((0, Vec::new()));
        };
        let len = u64::from_le_bytes(*len).min(16 << 40);
        let mut segs: Vec<(u64, &[u8])> = Vec::new();
        while let Some((hd, r)) = rest.split_first_chunk::<6>() {
            let at = u64::from(u32::from_le_bytes([hd[0], hd[1], hd[2], hd[3]])) * 1024;
            let n = usize::from(u16::from_le_bytes([hd[4], hd[5]])).min(r.len());
            segs.push((at, &r[..n]));
            rest = &r[n..];
        }
        let path = Path::new("fuzz-lun");
        let mut read_at = |buf: &mut [u8], off: u64| -> Result<()> {
            let end = off.checked_add(buf.len() as u64).filter(|&e| e <= len);
            let Some(end) = end else {
                return Err(Error::io(
                    path,
                    Some(off),
                    io::Error::new(io::ErrorKind::UnexpectedEof, "past the end of the device"),
                ));
            };
            buf.fill(0);
            for &(at, bytes) in &segs {
                let s_end = at + bytes.len() as u64;
                let (lo, hi) = (at.max(off), s_end.min(end));
                if lo < hi {
                    buf[(lo - off) as usize..(hi - off) as usize]
                        .copy_from_slice(&bytes[(lo - at) as usize..(hi - at) as usize]);
                }
            }
            Ok(())
        };
        Ok((len, probe_device(path, len, &mut read_at)?))
    }

    /// The `lvm` fuzz seeds in partition-probing mode (first byte odd) stay meaningful: each
    /// is a rig LUN (MBR partition, bare, GPT partition) whose probing finds its VMFS extent.
    #[test]
    fn fuzz_seeds_find_their_extent() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/fuzz/seeds/lvm");
        for (name, start) in [("lun0-mbr", 65536), ("lun1-bare", 0), ("gpt", 2048 * 512)] {
            let seed = std::fs::read(dir.join(name)).unwrap();
            assert_eq!(seed[0] & 1, 1, "{name}");
            let (_, found) = probe_virtual_device(&seed[1..]).unwrap();
            assert_eq!(found.len(), 1, "{name}");
            assert_eq!(found[0].0, start, "{name}");
            assert!(!found[0].2.is_empty(), "{name}: no PEs");
        }
    }

    /// Partition tables with wild LBAs (found by reasoning about `saturating_mul`, now checked
    /// arithmetic): GPT table and entry LBAs near u64::MAX / 512 must not overflow.
    #[test]
    fn wild_gpt_lbas_do_not_overflow() {
        let mut dev = vec![0u8; 4096];
        dev[446 + 4] = 0xEE;
        dev[510] = 0x55;
        dev[511] = 0xAA;
        dev[512..520].copy_from_slice(b"EFI PART");
        dev[512 + 0x48..512 + 0x50].copy_from_slice(&(u64::MAX / 512).to_le_bytes());
        dev[512 + 0x50..512 + 0x54].copy_from_slice(&128u32.to_le_bytes());
        dev[512 + 0x54..512 + 0x58].copy_from_slice(&128u32.to_le_bytes());
        let mut seed = (1u64 << 40).to_le_bytes().to_vec();
        seed.extend_from_slice(&0u32.to_le_bytes());
        seed.extend_from_slice(&4096u16.to_le_bytes());
        seed.extend_from_slice(&dev);
        assert!(probe_virtual_device(&seed).unwrap().1.is_empty());
        // The table at LBA 2 with one VMFS entry whose first LBA overflows when scaled.
        seed[14 + 512 + 0x48..14 + 512 + 0x50].copy_from_slice(&2u64.to_le_bytes());
        seed[14 + 1024..14 + 1040].copy_from_slice(&GPT_VMFS_TYPE);
        seed[14 + 1024 + 0x20..14 + 1024 + 0x28].copy_from_slice(&(u64::MAX / 256).to_le_bytes());
        assert!(probe_virtual_device(&seed).unwrap().1.is_empty());
    }
}

impl LunSet {
    /// Scans `groups`: each inner list is the paths to one LUN (usually one path). Paths with
    /// no VMFS partition are skipped with a notice (globs such as `/dev/disk/by-id/*` match
    /// other disks too).
    pub fn scan(groups: &[Vec<PathBuf>], opts: ScanOptions) -> Result<LunSet> {
        // Merge groups that share a device identity, so a glob that matches several links to
        // one device does not look like two devices claiming one extent.
        let mut merged: Vec<Vec<OpenedPath>> = Vec::new();
        let mut by_id: HashMap<(u64, u64), usize> = HashMap::new();
        let mut notices = Vec::new();
        let mut dead_at_open: Vec<(usize, PathBuf, String)> = Vec::new();
        for group in groups {
            let mut target: Option<usize> = None;
            let mut opened = Vec::new();
            for p in group {
                match File::open(p) {
                    Ok(f) => {
                        let id = identity(&f, p)?;
                        if let Some(&g) = by_id.get(&id) {
                            target.get_or_insert(g);
                        }
                        opened.push((p.clone(), f, id));
                    }
                    Err(e) if group.len() > 1 => {
                        dead_at_open.push((usize::MAX, p.clone(), e.to_string()));
                    }
                    Err(e) => return Err(Error::io(p, None, e)),
                }
            }
            let g = target.unwrap_or_else(|| {
                merged.push(Vec::new());
                merged.len() - 1
            });
            for (p, f, id) in opened {
                if by_id.insert(id, g).is_none() || !merged[g].iter().any(|x| x.2 == id) {
                    merged[g].push((p, f, id));
                }
            }
        }
        for (_, p, e) in dead_at_open {
            notices.push(format!(
                "LUN path {} is dead: cannot open: {e}",
                p.display()
            ));
        }

        let mut pvs: Vec<PhysicalVolume> = Vec::new();
        for group in merged {
            if group.is_empty() {
                continue;
            }
            // The first path that answers gives the reference view; every other path must
            // agree with it, or it is not a path to the same LUN.
            let mut reference: Option<(PathBuf, PathScan)> = None;
            let mut alive: Vec<(PathBuf, File)> = Vec::new();
            let multi = group.len() > 1;
            for (p, f, _) in group {
                match scan_path(&f, &p) {
                    Ok(view) => {
                        if let Some((rp, rv)) = &mut reference {
                            let same = rv.1.len() == view.1.len()
                                && rv
                                    .1
                                    .iter()
                                    .zip(&view.1)
                                    .all(|(a, b)| a.0 == b.0 && a.1 == b.1 && a.2 == b.2);
                            if !same {
                                return Err(Error::Lun {
                                    path: p.clone(),
                                    offset: None,
                                    what: format!(
                                        "given as a path to the same LUN as {}, but its VMFS \
                                         headers differ",
                                        rp.display()
                                    ),
                                });
                            }
                            // A path whose device looks shorter is not trusted to size the
                            // LUN; it fails (and fails over) when a read runs past its end.
                            rv.0 = rv.0.max(view.0);
                        } else {
                            reference = Some((p.clone(), view));
                        }
                        alive.push((p, f));
                    }
                    Err(Error::Io { cause, offset, .. }) if multi => {
                        notices.push(format!(
                            "LUN path {} is dead: read at byte {:#x} failed: {cause}",
                            p.display(),
                            offset.unwrap_or(0)
                        ));
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some((rp, (len, found))) = reference else {
                return Err(Error::Lun {
                    path: PathBuf::new(),
                    offset: None,
                    what: "no path of this LUN answers reads".into(),
                });
            };
            if found.is_empty() {
                notices.push(format!(
                    "{}: no VMFS LVM header found (skipped)",
                    rp.display()
                ));
                continue;
            }
            let mut paths = Vec::new();
            for (p, f) in alive {
                // As for layer files: a device or file system that refuses O_DIRECT is read
                // buffered (direct is the default read path, see `ReadPath`).
                let direct = opts
                    .direct
                    .then(|| crate::input::source::open_direct(&p, false).ok())
                    .flatten()
                    .map(Arc::new);
                paths.push((p, Arc::new(f), direct));
            }
            for (start, header, pes) in found {
                pvs.push(PhysicalVolume {
                    paths: paths
                        .iter()
                        .map(|(p, f, d)| LunPath {
                            path: p.clone(),
                            file: f.clone(),
                            direct: d.clone(),
                            dead: AtomicBool::new(false),
                        })
                        .collect(),
                    part_start: start,
                    device_len: len,
                    header,
                    pes,
                    active: AtomicUsize::new(0),
                });
            }
        }
        // Two different devices with one PV UUID: a replica or array snapshot next to its
        // source, or paths the caller did not group. Either way, refuse to guess.
        for (i, a) in pvs.iter().enumerate() {
            for b in &pvs[i + 1..] {
                if a.header.pv_uuid == b.header.pv_uuid {
                    return Err(Error::Lun {
                        path: b.name().into(),
                        offset: Some(b.part_start + LVM_HEADER_OFFSET),
                        what: format!(
                            "claims the same VMFS extent (PV {}) as {}: two different devices \
                             carry it (a replica or array snapshot?). If they are paths to one \
                             LUN, give them as --lun {},{}",
                            a.header.pv_uuid,
                            a.name().display(),
                            a.name().display(),
                            b.name().display()
                        ),
                    });
                }
            }
        }
        Ok(LunSet {
            pvs,
            notices: Mutex::new(notices),
        })
    }

    /// The VMFS partitions found.
    pub fn pvs(&self) -> &[PhysicalVolume] {
        &self.pvs
    }

    /// Notices gathered so far (skipped devices, dead paths, failovers), emptied.
    pub fn take_notices(&self) -> Vec<String> {
        std::mem::take(&mut *self.notices.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Paths marked dead after an I/O error.
    pub fn dead_paths(&self) -> Vec<PathBuf> {
        self.pvs
            .iter()
            .flat_map(|pv| pv.paths.iter())
            .filter(|p| p.dead.load(Ordering::Relaxed))
            .map(|p| p.path.clone())
            .collect()
    }

    fn notice(&self, s: String) {
        self.notices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(s);
    }

    /// Reads `buf` at partition byte `p_offset` of PV `pv`, failing over between its paths:
    /// the path that answered last is tried first; a path that fails is marked dead and
    /// reported, and the next live path is tried. The error of the last path is returned when
    /// all fail.
    pub fn read_pv(&self, pv: usize, buf: &mut [u8], p_offset: u64) -> Result<()> {
        let v = &self.pvs[pv];
        let dev_off = v.part_start + p_offset;
        let n = v.paths.len();
        let first = v.active.load(Ordering::Relaxed);
        let mut last_err = None;
        for k in 0..n {
            let i = (first + k) % n;
            let lp = &v.paths[i];
            if lp.dead.load(Ordering::Relaxed) && k + 1 < n {
                continue;
            }
            match pread_exact(&lp.file, &lp.path, buf, dev_off) {
                Ok(()) => {
                    v.active.store(i, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) => {
                    if n > 1 && !lp.dead.swap(true, Ordering::Relaxed) {
                        self.notice(format!(
                            "LUN path {} is dead: {e}; failing over to the next path",
                            lp.path.display()
                        ));
                    }
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.expect("invariant: every PV has at least one path"))
    }

    /// The open files (buffered, O_DIRECT) of PV `pv`'s current path.
    pub(crate) fn active_files(&self, pv: usize) -> (Arc<File>, Option<Arc<File>>) {
        let lp = self.current_path(pv);
        (lp.file.clone(), lp.direct.clone())
    }

    /// PV `pv`'s current path: the active one unless it died, then the next live one, and the
    /// active one when all are dead (its error is then the one reported).
    fn current_path(&self, pv: usize) -> &LunPath {
        let v = &self.pvs[pv];
        let n = v.paths.len();
        let first = v.active.load(Ordering::Relaxed);
        (0..n)
            .map(|k| &v.paths[(first + k) % n])
            .find(|p| !p.dead.load(Ordering::Relaxed))
            .unwrap_or(&v.paths[first % n])
    }

    /// Opens PV `pv`'s current path for writing (SAN write-back; the scan itself only ever
    /// opens for reading), plus an `O_DIRECT` handle when `direct`. The new descriptors must
    /// name the very device the scan read (same `st_rdev`, or same inode), so a path that was
    /// swapped since the scan is refused rather than written.
    pub fn open_for_write(&self, pv: usize, direct: bool) -> Result<WriteHandles> {
        let lp = self.current_path(pv);
        let want = identity(&lp.file, &lp.path)?;
        let open = |flags: rustix::fs::OFlags| -> Result<Arc<File>> {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(flags.bits() as i32)
                .open(&lp.path)
                .map_err(|e| Error::io(&lp.path, None, e))?;
            if identity(&f, &lp.path)? != want {
                return Err(Error::Lun {
                    path: lp.path.clone(),
                    offset: None,
                    what: "names a different device than when it was scanned: refusing to write"
                        .into(),
                });
            }
            Ok(Arc::new(f))
        };
        let buffered = open(rustix::fs::OFlags::empty())?;
        let direct = if direct {
            Some(open(rustix::fs::OFlags::DIRECT)?)
        } else {
            None
        };
        Ok(WriteHandles {
            path: Arc::from(lp.path.as_path()),
            buffered,
            direct,
            part_start: self.pvs[pv].part_start,
        })
    }

    /// LV UUIDs seen on the LUNs.
    pub fn lv_uuids(&self) -> Vec<VmfsUuid> {
        let mut v: Vec<VmfsUuid> = self.pvs.iter().map(|p| p.header.volume.lv_uuid).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// A LUN path opened for writing by [`LunSet::open_for_write`].
#[derive(Debug, Clone)]
pub struct WriteHandles {
    /// The path.
    pub path: Arc<Path>,
    /// Opened for buffered writes.
    pub buffered: Arc<File>,
    /// Opened `O_DIRECT`, when asked for.
    pub direct: Option<Arc<File>>,
    /// Byte offset of the PV's partition on the device.
    pub part_start: u64,
}

/// One PE of a logical volume, placed on a PV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LvPiece {
    /// LV byte offset.
    pub l_offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// Index into [`LunSet::pvs`].
    pub pv: usize,
    /// Partition byte offset on that PV.
    pub p_offset: u64,
}

/// The PE map of one logical volume over all its LUNs.
#[derive(Clone, Debug)]
pub struct LvMap {
    /// The LV UUID.
    pub lv_uuid: VmfsUuid,
    /// LV size in bytes.
    pub size: u64,
    /// PEs sorted by `l_offset`, gap-free from 0 to `size`.
    pub pieces: Vec<LvPiece>,
}

/// A contiguous device range of an LV range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevRange {
    /// Index into [`LunSet::pvs`].
    pub pv: usize,
    /// Partition byte offset.
    pub p_offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl LvMap {
    /// Collects the PEs of LV `lv_uuid` from every PV in `luns` and checks that they cover the
    /// volume exactly and that every PE lies inside its device.
    pub fn build(luns: &LunSet, lv_uuid: VmfsUuid) -> Result<LvMap> {
        let members: Vec<usize> = (0..luns.pvs.len())
            .filter(|&i| luns.pvs[i].header.volume.lv_uuid == lv_uuid)
            .collect();
        let Some(&head) = members.first() else {
            return Err(Error::Lun {
                path: PathBuf::new(),
                offset: None,
                what: format!(
                    "no LUN given carries logical volume {lv_uuid} (found: {})",
                    luns.lv_uuids()
                        .iter()
                        .map(|u| u.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        };
        let size = luns.pvs[head].header.volume.lv_size;
        let mut pieces = Vec::new();
        for &i in &members {
            let pv = &luns.pvs[i];
            if pv.header.volume.lv_size != size {
                return Err(Error::Lun {
                    path: pv.name().into(),
                    offset: Some(pv.part_start + LVM_HEADER_OFFSET),
                    what: format!(
                        "LV {lv_uuid} is {} bytes here but {size} bytes on {}",
                        pv.header.volume.lv_size,
                        luns.pvs[head].name().display()
                    ),
                });
            }
            for pe in &pv.pes {
                // read_lvm bounds pOffset + length by the header's totalBytes, which is itself
                // untrusted: add with overflow checks so a wild value fails as truncation.
                let end = pv
                    .part_start
                    .checked_add(pe.p_offset)
                    .and_then(|e| e.checked_add(pe.length))
                    .unwrap_or(u64::MAX);
                if end > pv.device_len {
                    return Err(Error::Lun {
                        path: pv.name().into(),
                        offset: Some(pv.part_start + pe.p_offset),
                        what: format!(
                            "LUN is truncated: PE {} (LV bytes {:#x}..{:#x}) needs device bytes \
                             up to {end:#x}, the device has {:#x}",
                            pe.pe_id,
                            pe.l_offset,
                            pe.l_offset + pe.length,
                            pv.device_len
                        ),
                    });
                }
                pieces.push(LvPiece {
                    l_offset: pe.l_offset,
                    length: pe.length,
                    pv: i,
                    p_offset: pe.p_offset,
                });
            }
        }
        pieces.sort_by_key(|p| p.l_offset);
        let mut pos = 0u64;
        for (k, p) in pieces.iter().enumerate() {
            if p.l_offset < pos {
                let prev = pieces[k - 1];
                return Err(Error::Lun {
                    path: luns.pvs[p.pv].name().into(),
                    offset: Some(luns.pvs[p.pv].part_start + p.p_offset),
                    what: format!(
                        "two devices claim LV {lv_uuid} bytes {:#x}..{:#x}: this one and {}",
                        p.l_offset,
                        pos.min(p.l_offset + p.length),
                        luns.pvs[prev.pv].name().display()
                    ),
                });
            }
            if p.l_offset > pos {
                break;
            }
            pos = p.l_offset + p.length;
        }
        if pos < size {
            return Err(Error::Lun {
                path: luns.pvs[head].name().into(),
                offset: None,
                what: format!(
                    "LV {lv_uuid}: no LUN given holds LV bytes {pos:#x}..: pass every LUN (extent) \
                     of the datastore ({} expected, {} found)",
                    luns.pvs[head].header.volume.num_devs,
                    members.len()
                ),
            });
        }
        Ok(LvMap {
            lv_uuid,
            size,
            pieces,
        })
    }

    /// The device ranges holding LV bytes `[lv, lv + len)`, split at PE boundaries.
    pub fn resolve(&self, lv: u64, len: u64) -> std::result::Result<Vec<DevRange>, String> {
        let end = lv
            .checked_add(len)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| {
                format!(
                    "LV bytes {lv:#x}+{len:#x} run past the end of LV {} ({:#x} bytes)",
                    self.lv_uuid, self.size
                )
            })?;
        let mut out = Vec::new();
        let mut pos = lv;
        let mut k = self
            .pieces
            .partition_point(|p| p.l_offset + p.length <= pos);
        while pos < end {
            let p = self.pieces.get(k).ok_or("invariant: PEs cover the LV")?;
            let n = (p.l_offset + p.length).min(end) - pos;
            out.push(DevRange {
                pv: p.pv,
                p_offset: p.p_offset + (pos - p.l_offset),
                len: n,
            });
            pos += n;
            k += 1;
        }
        Ok(out)
    }
}
