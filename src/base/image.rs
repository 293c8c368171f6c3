//! The base image: the digest at every chunk place of a base archive's restored disks, and
//! where each digest first occurs. This is all a backup needs of its base: a chunk whose
//! digest the image holds is written as a BaseRef, a chunk place a change list leaves out is
//! taken from the same place of the base's disk.

use std::collections::HashMap;
use std::path::Path;

use crate::archive::index::{ReadSeek, SeekableArchive};
use crate::archive::manifest::{BaseLink, DiskManifest, Manifest};
use crate::chunk::Digest;
use crate::error::{Error, Result};

/// See the module docs. Memory: about 90 bytes per nonzero chunk place of the base.
#[derive(Debug)]
pub struct BaseImage {
    /// The base's identity (its footer's `meta_hash`, recomputed).
    pub id: [u8; 32],
    /// The base's manifest.
    pub manifest: Manifest,
    /// Per base disk ordinal: chunk offset → digest of the plaintext there.
    places: Vec<HashMap<u64, Digest>>,
    /// Digest → its first place (disk ordinal, offset) in archive order.
    by_digest: HashMap<Digest, (u32, u64)>,
    /// Per base disk ordinal: its capacity.
    caps: Vec<u64>,
}

/// One chunk place of an image: (disk ordinal, offset, digest).
pub type Place = (u32, u64, Digest);

impl BaseImage {
    /// An image from its places, in archive order (disk, then offset), each checked against
    /// `manifest`: a place on a chunk boundary inside its disk, strictly ascending.
    pub fn new(
        id: [u8; 32],
        manifest: Manifest,
        places: impl IntoIterator<Item = Place>,
    ) -> std::result::Result<Self, String> {
        let caps: Vec<u64> = manifest.disks().map(|(_, d)| d.meta.capacity).collect();
        let mut img = BaseImage {
            id,
            places: vec![HashMap::new(); caps.len()],
            by_digest: HashMap::new(),
            caps: caps.clone(),
            manifest,
        };
        let cs = img.manifest.chunk_size;
        let mut last: Option<(u32, u64)> = None;
        for (disk, offset, digest) in places {
            let fits = caps
                .get(disk as usize)
                .is_some_and(|&cap| offset < cap && offset % cs == 0)
                && last.is_none_or(|l| (disk, offset) > l);
            if !fits {
                return Err(format!(
                    "chunk place disk {disk} offset {offset:#x} is out of place"
                ));
            }
            last = Some((disk, offset));
            img.places[disk as usize].insert(offset, digest);
            img.by_digest.entry(digest).or_insert((disk, offset));
        }
        Ok(img)
    }

    /// Reads the image of the archive `input` (named `name` in errors): its layout is checked,
    /// its identity recomputed from every record header and compared with the footer, and the
    /// digests come from the data records' headers. Payloads are not read: a damaged chunk in
    /// the base shows when the incremental is verified or restored.
    pub fn from_archive(input: &mut dyn ReadSeek, name: &Path) -> Result<Self> {
        let named = |e: Error| Error::Usage(format!("base {}: {e}", name.display()));
        let mut ar = SeekableArchive::open(input).map_err(named)?;
        ar.check_layout().map_err(named)?;
        let mut places = Vec::with_capacity(ar.index.len());
        let id = ar
            .meta_hash(|h| {
                if h.kind.is_data() {
                    places.push((h.disk, h.offset, Digest(h.digest)));
                }
            })
            .map_err(named)?;
        if id != ar.footer.meta_hash {
            return Err(Error::Usage(format!(
                "base {}: its record headers do not hash to the footer's identity (damaged)",
                name.display()
            )));
        }
        debug_assert!(places.len() <= ar.index.len());
        let manifest = ar.manifest.clone();
        Self::new(id, manifest, places)
            .map_err(|w| Error::Usage(format!("base {}: {w}", name.display())))
    }

    /// The link an incremental of this image writes into its manifest.
    pub fn link(&self) -> BaseLink {
        let lineage = match &self.manifest.base {
            Some(b) => b.lineage.iter().cloned().chain([b.id.clone()]).collect(),
            None => Vec::new(),
        };
        BaseLink {
            id: super::id_hex(&self.id),
            created: self.manifest.created,
            lineage,
        }
    }

    /// The digest at `offset` of base disk `disk`; `None` where the image is zero.
    pub fn at(&self, disk: u32, offset: u64) -> Option<Digest> {
        self.places.get(disk as usize)?.get(&offset).copied()
    }

    /// The first place holding `digest`.
    pub fn find(&self, digest: &Digest) -> Option<(u32, u64)> {
        self.by_digest.get(digest).copied()
    }

    /// The base disk that a disk continues: the one of the same VM and disk name, else the
    /// one whose chain has the same base layer file (loose disks are named after their top
    /// descriptor, which a new snapshot changes; the base layer stays), when only one has.
    pub fn disk_for(
        &self,
        vm: &str,
        disk: &str,
        base_layer: Option<&str>,
    ) -> Option<&DiskManifest> {
        let v = self.manifest.vms.iter().find(|v| v.name == vm);
        if let Some(d) = v.and_then(|v| v.disks.iter().find(|d| d.name == disk)) {
            return Some(d);
        }
        let layer = base_layer?;
        let same = |d: &&DiskManifest| d.meta.chain.last().is_some_and(|l| l.file == layer);
        let mut all = self.manifest.disks().map(|(_, d)| d).filter(same);
        match (all.next(), all.next()) {
            (Some(d), None) => Some(d),
            _ => None,
        }
    }

    /// Every place in archive order.
    pub fn places(&self) -> Vec<Place> {
        let mut out: Vec<Place> = Vec::new();
        for (d, m) in self.places.iter().enumerate() {
            let mut ps: Vec<(u64, Digest)> = m.iter().map(|(o, g)| (*o, *g)).collect();
            ps.sort_unstable_by_key(|p| p.0);
            out.extend(ps.into_iter().map(|(o, g)| (d as u32, o, g)));
        }
        out
    }

    /// Bytes of the chunk at `offset` of base disk `disk`.
    pub fn chunk_len(&self, disk: u32, offset: u64) -> u64 {
        let cap = self.caps.get(disk as usize).copied().unwrap_or(0);
        self.manifest.chunk_size.min(cap.saturating_sub(offset))
    }

    /// Nonzero chunk places of the image.
    pub fn len(&self) -> usize {
        self.places.iter().map(HashMap::len).sum()
    }

    /// Whether the image is all zeros.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
