//! Restoring an incremental in place: over the raw images a restore of its base wrote, as a
//! chain read from tape is restored (the full archive into DIR, then each incremental onto
//! DIR, oldest first, one pass each), without a second copy of the disk.
//!
//! Only what changed is written: a BaseRef that names its own place in the base keeps the
//! bytes already there (the base's catalog says they are the ones recorded); every other
//! record is written, and a chunk place the base held that the incremental has no record for
//! is zeroed. The writer of an incremental never makes a BaseRef name a place it changed
//! earlier in archive order (formats/ARCHIVE.md, "Incrementals"), so each base chunk is still
//! in the image when a record needs it.
//!
//! The images are not staged: a failed or killed restore leaves them partly updated. A marker
//! file in DIR says so from the first write until the end, and a later in-place restore into
//! DIR is refused while it is there.

use std::path::{Path, PathBuf};

use crate::archive::manifest::Manifest;
use crate::base::{id_hex, BaseImage};
use crate::error::{Error, Result};

/// The marker's file name in DIR.
pub const MARKER: &str = ".vdar-in-place";

/// What an in-place restore writes over: DIR, and the catalog of the archive restored there.
#[derive(Debug)]
pub struct InPlaceBase {
    /// The directory a raw restore of the base wrote.
    pub dir: PathBuf,
    /// The base's catalog.
    pub image: BaseImage,
}

/// An in-place restore's plan: per disk of the incremental, the base image it updates, and
/// the marker to write before the first write.
#[derive(Debug)]
pub(crate) struct InPlaceMap {
    /// Per disk ordinal of the incremental.
    pub disks: Vec<InPlaceDisk>,
    /// The marker's text.
    pub marker: String,
    /// The VM directory to rename before anything is written (`follow_vm_name`).
    rename: Option<(PathBuf, PathBuf)>,
}

impl InPlaceMap {
    /// Renames the VM directory, if the VM's name changed since the base: the last step before
    /// the images are opened, once everything else was checked.
    pub(crate) fn follow_rename(&mut self) -> Result<()> {
        if let Some((from, to)) = self.rename.take() {
            if to.symlink_metadata().is_ok() {
                return Err(Error::Usage(format!("{} appeared meanwhile", to.display())));
            }
            std::fs::rename(&from, &to).map_err(|e| Error::io(&from, None, e))?;
        }
        Ok(())
    }
}

impl InPlaceBase {
    /// Maps every disk of the incremental `m` onto the base image of the same file in DIR,
    /// refusing what cannot be updated in place: another base, a disk the base lacks, a
    /// capacity that changed, or an earlier in-place restore that did not finish. A single VM
    /// whose name changed since the base has its directory renamed first
    /// ([`Self::follow_vm_name`]).
    pub(crate) fn map(&self, m: &Manifest) -> Result<InPlaceMap> {
        let marker = self.dir.join(MARKER);
        if let Ok(text) = std::fs::read_to_string(&marker) {
            return Err(Error::Usage(format!(
                "{}: an in-place restore did not finish there ({}); its images are partly \
                 updated: restore the chain again into a new directory",
                self.dir.display(),
                text.trim()
            )));
        }
        let want = id_hex(&self.image.id);
        match &m.base {
            Some(b) if b.id == want => {}
            Some(b) => {
                return Err(Error::Usage(format!(
                    "the archive continues base {}, but {} holds base {want}",
                    b.id,
                    self.dir.display()
                )))
            }
            None => {
                return Err(Error::Usage(
                    "the archive is not an incremental: nothing to restore in place".into(),
                ))
            }
        }
        if m.chunk_size != self.image.manifest.chunk_size {
            return Err(Error::Usage(format!(
                "the archive's chunks are {} bytes, its base's {}: restore into a new directory",
                m.chunk_size, self.image.manifest.chunk_size
            )));
        }
        let (base_manifest, rename) = self.follow_vm_name(m)?;
        let base_paths = super::raw_image_paths(&base_manifest, &self.dir);
        let base_caps: Vec<u64> = self
            .image
            .manifest
            .disks()
            .map(|(_, d)| d.meta.capacity)
            .collect();
        let places = self.image.places();
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(m.created);
        let mut map = InPlaceMap {
            disks: Vec::new(),
            marker: format!(
                "the incremental created {} onto base {want}\n",
                crate::clock::rfc3339(t)
            ),
            rename: None,
        };
        for (p, (_, d)) in super::raw_image_paths(m, &self.dir).iter().zip(m.disks()) {
            let Some(j) = base_paths.iter().position(|b| b == p) else {
                return Err(Error::Usage(format!(
                    "disk {:?}: its base has no image {} to update in place",
                    d.name,
                    p.display()
                )));
            };
            if base_caps[j] != d.meta.capacity {
                return Err(Error::Usage(format!(
                    "disk {:?}: {} bytes, its base image {} has {}: restore into a new \
                     directory",
                    d.name,
                    d.meta.capacity,
                    p.display(),
                    base_caps[j]
                )));
            }
            let chunks = d.meta.capacity.div_ceil(m.chunk_size) as usize;
            let mut held = vec![false; chunks];
            for x in places.iter().filter(|x| x.0 == j as u32) {
                held[(x.1 / m.chunk_size) as usize] = true;
            }
            map.disks.push(InPlaceDisk {
                base_disk: j as u32,
                chunk_size: m.chunk_size,
                capacity: d.meta.capacity,
                held,
            });
        }
        map.rename = rename;
        Ok(map)
    }

    /// A VM whose name changed since the base (loose disks are named after their top
    /// descriptor, which every snapshot changes; a VM renamed in vSphere): the base's images
    /// are still in `DIR/<old name>/`, where `DIR/<new name>/` is wanted. With one VM on each
    /// side, the base's manifest as if its VM had the new name, and the directory rename to
    /// make once every check has passed; `DIR/<new name>` must not exist yet.
    fn follow_vm_name(&self, m: &Manifest) -> Result<(Manifest, Option<(PathBuf, PathBuf)>)> {
        let mut base = self.image.manifest.clone();
        let ([old], [new]) = (&mut base.vms[..], &m.vms[..]) else {
            return Ok((base, None));
        };
        if old.name == new.name {
            return Ok((base, None));
        }
        let (from, to) = (self.dir.join(&old.name), self.dir.join(&new.name));
        if !from.is_dir() || to.symlink_metadata().is_ok() {
            return Ok((base, None));
        }
        old.name = new.name.clone();
        Ok((base, Some((from, to))))
    }

    /// Whether the base image holds `digest` at `src` (its catalog says so).
    pub(crate) fn holds(&self, src: (u32, u64), digest: &[u8; 32]) -> bool {
        self.image.at(src.0, src.1).is_some_and(|d| d.0 == *digest)
    }

    /// Writes the marker into `dir`.
    pub(crate) fn mark(dir: &Path, text: &str) -> Result<()> {
        let p = dir.join(MARKER);
        std::fs::write(&p, text).map_err(|e| Error::io(&p, None, e))
    }

    /// Removes the marker once every image is updated and synced.
    pub(crate) fn unmark(dir: &Path) -> Result<()> {
        let p = dir.join(MARKER);
        std::fs::remove_file(&p).map_err(|e| Error::io(&p, None, e))
    }
}

/// One disk updated in place.
#[derive(Debug)]
pub(crate) struct InPlaceDisk {
    /// The base disk whose image this is.
    pub base_disk: u32,
    /// Bytes of a chunk (the last of the disk may be shorter).
    pub chunk_size: u64,
    capacity: u64,
    /// Per chunk of the disk: the base held data there and this restore has not written or
    /// kept it yet. What is still set at the end is zero now.
    held: Vec<bool>,
}

impl InPlaceDisk {
    /// The chunk at `offset` is written or kept: it is not zeroed at the end.
    pub fn placed(&mut self, offset: u64) {
        if let Some(h) = self.held.get_mut((offset / self.chunk_size) as usize) {
            *h = false;
        }
    }

    /// The byte ranges the base held that this archive left without a record: zeros now.
    pub fn stale(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let cs = self.chunk_size;
        self.held
            .iter()
            .enumerate()
            .filter(|(_, &h)| h)
            .map(move |(i, _)| {
                let at = i as u64 * cs;
                (at, cs.min(self.capacity - at))
            })
    }

    /// Bytes of the chunk at `offset`.
    pub fn chunk_len(&self, offset: u64) -> u64 {
        self.chunk_size.min(self.capacity.saturating_sub(offset))
    }
}
