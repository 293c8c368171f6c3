//! What a store holds: every archive (its identity, time, VMs and base) and every catalog
//! (the identity it describes), each read from a few small reads at its front and end.
//!
//! Identities are the footers' `meta_hash`, as each archive claims it: checking the claim
//! means reading every record header (what `verify` does), too much for a listing of a
//! prefix. The claim is under the footer's checksum, and a base that does not match it is
//! refused where it matters, when a restore or consolidate reads it.

use std::io::{Read, Seek, SeekFrom};

use serde::Serialize;

use super::store::Store;
use crate::archive::format::ARCHIVE_MAGIC_V1;
use crate::archive::index::{peek, ReadSeek};
use crate::archive::manifest::BaseLink;
use crate::archive::volume::{is_volume, VolumeHeader, HEADER_CORE_BYTES};
use crate::base::{catalog, id_hex};
use crate::error::Result;

/// What a store holds.
#[derive(Clone, Debug, Serialize)]
pub struct Inventory {
    /// The store (`/backups`, `s3://bucket/web/`).
    pub location: String,
    /// Its archives, oldest first.
    pub archives: Vec<ArchiveEntry>,
    /// Its catalogs (formats/CATALOG.md).
    pub catalogs: Vec<CatalogEntry>,
    /// Files that begin like an archive or a catalog but whose front cannot be read.
    pub damaged: Vec<DamagedEntry>,
    /// Later volumes of volume sets (never deleted: the first volume stands for the set).
    pub volumes: Vec<VolumeEntry>,
    /// Files that are neither (left alone by every command).
    pub others: usize,
}

/// A volume after the first of a volume set.
#[derive(Clone, Debug, Serialize)]
pub struct VolumeEntry {
    /// Its name.
    pub name: String,
    /// The set's id.
    pub set: String,
    /// The volume's number.
    pub number: u32,
}

/// One archive.
#[derive(Clone, Debug, Serialize)]
pub struct ArchiveEntry {
    /// Its name (a path, `s3://…`).
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its identity as its footer claims it; absent when it has no good footer.
    pub id: Option<String>,
    /// Why there is no identity: an archive still being written, or cut short.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
    /// Creation time (Unix seconds, the manifest's).
    pub created: u64,
    /// Its VMs' names, in archive order.
    pub vms: Vec<String>,
    /// How many disks it holds.
    pub disks: usize,
    /// The sum of their capacities.
    pub capacity: u64,
    /// The archive it is an incremental of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseLink>,
    /// The catalogs in the store that describe it.
    pub catalogs: Vec<String>,
    /// Set when this is volume 1 of a volume set (formats/VOLUME.md): its set id. The
    /// footer is on the last volume, so a set of more than one has no identity here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_set: Option<String>,
}

impl ArchiveEntry {
    /// The set of VMs it holds, as one key: the policy is applied to each such group.
    pub fn group(&self) -> String {
        let mut v = self.vms.clone();
        v.sort();
        v.join(",")
    }

    /// Every identity it needs besides itself: its base and the base's own bases.
    pub fn needs(&self) -> impl Iterator<Item = &str> {
        self.base
            .iter()
            .flat_map(|b| b.lineage.iter().chain(std::iter::once(&b.id)))
            .map(String::as_str)
    }
}

/// One catalog.
#[derive(Clone, Debug, Serialize)]
pub struct CatalogEntry {
    /// Its name.
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// The identity of the archive it describes.
    pub id: String,
}

/// A file that begins like vdar's but cannot be read.
#[derive(Clone, Debug, Serialize)]
pub struct DamagedEntry {
    /// Its name.
    pub name: String,
    /// "archive" or "catalog".
    pub kind: &'static str,
    /// What is wrong, with the byte offset.
    pub why: String,
}

/// Reads the inventory of `store`. Errors of the store itself (listing, opening) stop it;
/// damage in one archive is recorded and the rest is read.
pub fn read(store: &dyn Store) -> Result<Inventory> {
    let mut inv = Inventory {
        location: store.location(),
        archives: Vec::new(),
        catalogs: Vec::new(),
        damaged: Vec::new(),
        volumes: Vec::new(),
        others: 0,
    };
    for e in store.entries()? {
        let mut input = store.open(&e.name)?;
        let mut head = Vec::with_capacity(HEADER_CORE_BYTES);
        (&mut input)
            .take(HEADER_CORE_BYTES as u64)
            .read_to_end(&mut head)
            .map_err(|err| crate::Error::io(std::path::Path::new(&e.name), Some(0), err))?;
        let head = &head[..];
        if is_volume(head) {
            volume(&mut inv, e.name, head, input)?;
        } else if head.starts_with(&ARCHIVE_MAGIC_V1) {
            match peek(&mut input) {
                Ok(p) => inv.archives.push(archive_entry(&e.name, p)),
                Err(why) => inv.damaged.push(DamagedEntry {
                    name: e.name,
                    kind: "archive",
                    why: why.to_string(),
                }),
            }
        } else if catalog::is_catalog(head) {
            match catalog::id_of(head) {
                Some(id) => inv.catalogs.push(CatalogEntry {
                    name: e.name,
                    bytes: e.size,
                    id: id_hex(&id),
                }),
                None => inv.damaged.push(DamagedEntry {
                    name: e.name,
                    kind: "catalog",
                    why: "catalog header damaged (byte 0)".into(),
                }),
            }
        } else {
            inv.others += 1;
        }
    }
    for a in &mut inv.archives {
        a.catalogs = inv
            .catalogs
            .iter()
            .filter(|c| a.id.as_deref() == Some(&c.id))
            .map(|c| c.name.clone())
            .collect();
    }
    inv.archives
        .sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    Ok(inv)
}

/// A volume of a volume set: the first stands for its archive (read from after its header),
/// the others are listed as volumes.
fn volume(inv: &mut Inventory, name: String, head: &[u8], input: Box<dyn ReadSeek>) -> Result<()> {
    let damaged = |why: String| DamagedEntry {
        name: name.clone(),
        kind: "archive",
        why,
    };
    let h = match head.try_into().map(|b| VolumeHeader::decode(b, &name)) {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            inv.damaged.push(damaged(e.to_string()));
            return Ok(());
        }
        Err(_) => {
            inv.damaged.push(damaged("volume header cut short".into()));
            return Ok(());
        }
    };
    if h.number > 1 {
        inv.volumes.push(VolumeEntry {
            name,
            set: h.set_hex(),
            number: h.number,
        });
        return Ok(());
    }
    let mut data = Skipped::new(input, u64::from(h.header_bytes));
    match peek(&mut data) {
        Ok(p) => {
            let mut a = archive_entry(&name, p);
            a.volume_set = Some(h.set_hex());
            inv.archives.push(a);
        }
        Err(why) => inv.damaged.push(damaged(why.to_string())),
    }
    Ok(())
}

/// A reader whose start is `skip` bytes into `inner`: a volume's data after its header.
struct Skipped {
    inner: Box<dyn ReadSeek>,
    skip: u64,
}

impl Skipped {
    fn new(inner: Box<dyn ReadSeek>, skip: u64) -> Skipped {
        Skipped { inner, skip }
    }
}

impl Read for Skipped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Seek for Skipped {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let at = match to {
            SeekFrom::Start(n) => self.inner.seek(SeekFrom::Start(n + self.skip))?,
            other => self.inner.seek(other)?,
        };
        at.checked_sub(self.skip)
            .ok_or_else(|| std::io::Error::other("seek before a volume's data"))
    }
}

fn archive_entry(name: &str, p: crate::archive::index::Peek) -> ArchiveEntry {
    let m = p.manifest;
    let (id, incomplete) = match p.footer {
        Ok(f) => (Some(id_hex(&f.meta_hash)), None),
        Err(why) => (None, Some(why.to_string())),
    };
    let disks = m.vms.iter().flat_map(|v| &v.disks);
    ArchiveEntry {
        name: name.to_string(),
        bytes: p.len,
        id,
        incomplete,
        created: m.created,
        vms: m.vms.iter().map(|v| v.name.clone()).collect(),
        disks: disks.clone().count(),
        capacity: disks.map(|d| d.meta.capacity).sum(),
        base: m.base,
        catalogs: Vec::new(),
        volume_set: None,
    }
}
