//! The file-system restore target: raw images with holes, VM files, and the scratch file for
//! references into disks that are not being restored.
//!
//! Every path is `DIR/<vm>/<name>` with names checked by [`check_name`]; directories that exist
//! must be real directories (not symlinks) and files are opened with `O_NOFOLLOW`, so a restore
//! never writes outside `DIR`. All outputs are created before the first chunk is written, so a
//! refusal to overwrite happens before any work. I/O errors (ENOSPC, EIO) name the file and the
//! byte offset.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{RestoreReport, Selection, Target};
use crate::archive::manifest::{check_name, raw_name, Manifest};
use crate::error::{Error, Result};

/// Chunks of unselected disks kept for later references: the unlinked file, (disk, offset) →
/// (scratch offset, length), and the file's end.
type Scratch = (File, HashMap<(u32, u64), (u64, u64)>, u64);

/// Raw images and VM files under one directory.
pub struct FsTarget {
    /// Per disk ordinal: the open image, if selected.
    disks: Vec<Option<(PathBuf, File)>>,
    /// Per VM: its directory, if selected.
    vm_dirs: Vec<Option<PathBuf>>,
    force: bool,
    /// Chunks of unselected disks: (disk, offset) → (scratch offset, length).
    scratch: Option<Scratch>,
}

fn open_out(path: &Path, force: bool) -> Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if force {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    o.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    o.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Exists {
                path: path.to_path_buf(),
            }
        } else {
            Error::io(path, None, e)
        }
    })
}

/// Creates `dir` if needed and refuses anything but a real directory.
fn real_dir(dir: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Usage(format!(
            "{}: exists and is not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(dir).map_err(|e| Error::io(dir, None, e))
        }
        Err(e) => Err(Error::io(dir, None, e)),
    }
}

impl FsTarget {
    /// Creates every selected output under `dir` (which is created if missing, its parent must
    /// exist). Images get their final size at once, as holes.
    pub(crate) fn create(dir: &Path, m: &Manifest, sel: &Selection, force: bool) -> Result<Self> {
        real_dir(dir)?;
        let mut vm_dirs = Vec::new();
        for (v, vm) in m.vms.iter().enumerate() {
            if !sel.vms[v] {
                vm_dirs.push(None);
                continue;
            }
            check_name(&vm.name)?;
            let d = dir.join(&vm.name);
            real_dir(&d)?;
            for f in &vm.files {
                check_name(&f.name)?;
                let p = d.join(&f.name);
                if !force && std::fs::symlink_metadata(&p).is_ok() {
                    return Err(Error::Exists { path: p });
                }
            }
            vm_dirs.push(Some(d));
        }
        let mut disks = Vec::new();
        for (i, (v, disk)) in m.disks().enumerate() {
            if !sel.disks[i] {
                disks.push(None);
                continue;
            }
            check_name(&disk.name)?;
            let p = dir.join(&m.vms[v].name).join(raw_name(&disk.name));
            let f = open_out(&p, force)?;
            f.set_len(disk.meta.capacity)
                .map_err(|e| Error::io(&p, Some(disk.meta.capacity), e))?;
            disks.push(Some((p, f)));
        }
        let scratch = if sel.disks.iter().all(|&s| s) {
            None
        } else {
            // Unlinked at once: nothing is left behind even if the restore is killed.
            let p = dir.join(format!(".vdar-scratch-{}", std::process::id()));
            let f = open_out(&p, false)?;
            std::fs::remove_file(&p).map_err(|e| Error::io(&p, None, e))?;
            Some((f, HashMap::new(), 0))
        };
        Ok(FsTarget {
            disks,
            vm_dirs,
            force,
            scratch,
        })
    }

    /// Puts the image paths into a report built by the engine.
    pub(crate) fn fill_paths(&self, report: &mut RestoreReport) {
        let mut paths = self.disks.iter().flatten().map(|(p, _)| p.clone());
        for d in &mut report.disks {
            d.path = paths.next();
        }
    }

    fn read_chunk(&self, disk: u32, offset: u64, len: u64) -> Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; len as usize];
        match self.disks.get(disk as usize) {
            Some(Some((p, f))) => match f.read_exact_at(&mut buf, offset) {
                Ok(()) => Ok(Some(buf)),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
                Err(e) => Err(Error::io(p, Some(offset), e)),
            },
            _ => {
                let Some((f, map, _)) = &self.scratch else {
                    return Ok(None);
                };
                match map.get(&(disk, offset)) {
                    Some(&(at, l)) if l == len => {
                        f.read_exact_at(&mut buf, at)
                            .map_err(|e| Error::io("restore scratch file", Some(at), e))?;
                        Ok(Some(buf))
                    }
                    _ => Ok(None),
                }
            }
        }
    }
}

impl Target for FsTarget {
    fn write_file(&mut self, vm: usize, name: &str, data: &[u8]) -> Result<Option<PathBuf>> {
        let Some(Some(d)) = self.vm_dirs.get(vm) else {
            return Ok(None);
        };
        check_name(name)?;
        let p = d.join(name);
        let f = open_out(&p, self.force)?;
        f.write_all_at(data, 0)
            .map_err(|e| Error::io(&p, Some(0), e))?;
        Ok(Some(p))
    }

    fn write_chunk(&mut self, disk: u32, offset: u64, data: &[u8], _: &[u8; 32]) -> Result<()> {
        match self.disks.get(disk as usize) {
            Some(Some((p, f))) => f
                .write_all_at(data, offset)
                .map_err(|e| Error::io(p, Some(offset), e)),
            _ => {
                let Some((f, map, end)) = &mut self.scratch else {
                    return Ok(());
                };
                f.write_all_at(data, *end)
                    .map_err(|e| Error::io("restore scratch file", Some(*end), e))?;
                map.insert((disk, offset), (*end, data.len() as u64));
                *end += data.len() as u64;
                Ok(())
            }
        }
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

    fn finish(&mut self) -> Result<()> {
        for (p, f) in self.disks.iter().flatten() {
            f.sync_all().map_err(|e| Error::io(p, None, e))?;
        }
        Ok(())
    }
}
