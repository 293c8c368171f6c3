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

use std::collections::HashSet;
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

/// Per disk of the incremental, the base disk whose image it updates.
#[derive(Debug)]
pub(crate) struct InPlaceMap {
    /// Base disk ordinal per disk ordinal of the incremental.
    pub base_disk: Vec<u32>,
    /// The chunk size of both.
    pub chunk_size: u64,
    /// Per disk of the incremental: the chunk places its base image holds data at.
    pub base_places: Vec<Vec<u64>>,
}

impl InPlaceBase {
    /// Maps every disk of the incremental `m` onto the base image of the same file in DIR,
    /// refusing what cannot be updated in place: another base, a disk the base lacks, a
    /// capacity that changed, or an earlier in-place restore that did not finish.
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
        let base_paths = super::raw_image_paths(&self.image.manifest, &self.dir);
        let base_caps: Vec<u64> = self
            .image
            .manifest
            .disks()
            .map(|(_, d)| d.meta.capacity)
            .collect();
        let places = self.image.places();
        let mut map = InPlaceMap {
            chunk_size: m.chunk_size,
            base_disk: Vec::new(),
            base_places: Vec::new(),
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
            map.base_disk.push(j as u32);
            let held = places.iter().filter(|x| x.0 == j as u32).map(|x| x.1);
            map.base_places.push(held.collect());
        }
        Ok(map)
    }

    /// Whether the base image holds `digest` at `src` (its catalog says so).
    pub(crate) fn holds(&self, src: (u32, u64), digest: &[u8; 32]) -> bool {
        self.image.at(src.0, src.1).is_some_and(|d| d.0 == *digest)
    }

    /// Writes the marker, naming the archive being applied (`what`).
    pub(crate) fn mark(&self, what: &str) -> Result<()> {
        let p = self.dir.join(MARKER);
        std::fs::write(&p, format!("{what} onto base {}\n", id_hex(&self.image.id)))
            .map_err(|e| Error::io(&p, None, e))
    }

    /// Removes the marker once every image is updated and synced.
    pub(crate) fn unmark(dir: &Path) -> Result<()> {
        let p = dir.join(MARKER);
        std::fs::remove_file(&p).map_err(|e| Error::io(&p, None, e))
    }
}

/// One disk updated in place: the places its base held, and the places written or kept.
#[derive(Debug, Default)]
pub(crate) struct InPlaceDisk {
    pub base_places: Vec<u64>,
    /// Bytes of a chunk (the last of the disk may be shorter).
    pub chunk_size: u64,
    pub touched: HashSet<u64>,
}

impl InPlaceDisk {
    /// The base's places that this archive left without a record: zeros now.
    pub fn stale(&self) -> impl Iterator<Item = u64> + '_ {
        self.base_places
            .iter()
            .copied()
            .filter(|o| !self.touched.contains(o))
    }
}
