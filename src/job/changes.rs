//! Where an incremental learns what changed, per disk, best first:
//!
//! 1. **CBT**: a changed-areas list ([`ChangedAreas`], formats/JSON.md "Changed areas"), what
//!    vSphere's `QueryChangedDiskAreas` answers. Its `since` must be the change id the base
//!    recorded for the disk; its `change_id` is recorded in the new archive.
//! 2. **Redo logs**: the disk's chain is the base's chain with layers on top (the base was
//!    taken from snapshot S, and S's child is now frozen under a newer snapshot): what those
//!    layers hold, zeroed and unmapped grains included, is exactly what changed.
//! 3. **Dedup**: no hint. Every chunk is read and hashed; only chunks the base lacks are stored.
//!
//! A disk whose base counterpart differs in capacity or ddb uuid, or whose change list does not
//! follow on from the base, is read whole (3) with the reason reported: a hint that might be
//! wrong costs time, never a wrong image.

use std::path::Path;

use serde::Deserialize;

use crate::archive::manifest::{DiskManifest, LayerInfo};
use crate::base::image::BaseImage;
use crate::base::plan::{ChangeSource, ChunkSet, DiskPlan};
use crate::error::{Error, Result};
use crate::input::descriptor::Descriptor;
use crate::input::in_use::DiskAreas;
use crate::pipeline::{DiskInput, VmFile, VmInput};

/// Largest changed-areas file read (16 bytes of area per ~40 bytes of JSON: millions of areas).
pub const MAX_CHANGED_AREAS_BYTES: u64 = 256 << 20;

/// A changed-areas file: per disk, the areas changed between two CBT change ids.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangedAreas {
    /// One entry per disk.
    pub disks: Vec<ChangedDisk>,
}

/// The changed areas of one disk.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangedDisk {
    /// The VM's name in the backup (may be left out when only one VM has a disk of this name).
    #[serde(default)]
    pub vm: Option<String>,
    /// The disk's name in the backup (`scsi0:0`, or its descriptor's stem for loose disks).
    pub disk: String,
    /// The change id the areas are relative to (the base's), as vSphere writes it.
    pub since: String,
    /// The change id of the state being backed up.
    pub change_id: String,
    /// The changed areas, in bytes, ascending and disjoint.
    pub areas: Vec<Area>,
}

/// One changed area (`DiskChangeExtent`).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Area {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub length: u64,
}

impl ChangedAreas {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let io = |e| Error::io(path, None, e);
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_CHANGED_AREAS_BYTES {
            return Err(Error::Usage(format!(
                "{}: {len} bytes is larger than a changed-areas list can be",
                path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Self::parse(&bytes, path)
    }

    /// Parses the bytes of a changed-areas file named `path` in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::Usage(format!(
                "{}: line {} column {}: not a changed-areas list: {e}",
                path.display(),
                e.line(),
                e.column()
            ))
        })
    }

    /// The entry for disk `disk` of VM `vm`.
    fn entry(&self, vm: &str, disk: &str) -> Option<&ChangedDisk> {
        self.disks
            .iter()
            .find(|d| d.disk == disk && d.vm.as_deref().is_none_or(|v| v == vm))
    }
}

/// How [`plan`] plans.
#[derive(Clone, Copy, Debug)]
pub struct PlanOptions {
    /// The backup's chunk size (the base's).
    pub chunk_size: u64,
    /// Read every chunk whatever the hints say (a dedup incremental): for a change list the
    /// user does not trust.
    pub read_all: bool,
}

/// The plan of every disk of `vms` (in disk order) against `base`; records the `change_id` of
/// each CBT entry it takes in its disk's meta. `chunk_size`: the backup's (and the base's).
pub fn plan(
    base: &BaseImage,
    vms: &mut [VmInput],
    cbt: Option<&ChangedAreas>,
    opts: PlanOptions,
) -> Result<Vec<DiskPlan>> {
    let mut plans = Vec::new();
    for vm in vms.iter_mut() {
        for d in &mut vm.disks {
            let entry = cbt.and_then(|c| c.entry(&vm.name, &d.name));
            let uuids = layer_uuids(&vm.files, d);
            let mut p = plan_disk(base, &vm.name, d, &uuids, entry, opts.chunk_size)?;
            // Only a list that follows on from the base says which state this is: a refused
            // one's change id would send the next incremental after a state never backed up.
            if let (Some(e), Some(ChangeSource::Cbt)) = (entry, p.source) {
                d.meta.change_id = Some(e.change_id.clone());
            }
            if opts.read_all && p.changed.is_some() {
                (p.changed, p.source) = (None, Some(ChangeSource::Dedup));
            }
            plans.push(p);
        }
    }
    Ok(plans)
}

/// The plan of disk `d` of VM `vm`, given its CBT entry if any.
fn plan_disk(
    base: &BaseImage,
    vm: &str,
    d: &mut DiskInput,
    uuids: &[String],
    entry: Option<&ChangedDisk>,
    chunk_size: u64,
) -> Result<DiskPlan> {
    let base_layer = d.meta.chain.last().map(|l| l.file.as_str());
    let Some(bd) = base.disk_for(vm, &d.name, base_layer) else {
        return Ok(DiskPlan {
            source: Some(ChangeSource::Dedup),
            fallback: Some("the base has no disk of this VM and name".into()),
            ..Default::default()
        });
    };
    let capacity = d.disk.capacity();
    let mut p = DiskPlan {
        base_disk: Some(bd.id),
        source: Some(ChangeSource::Dedup),
        ..Default::default()
    };
    if let Err(why) = same_disk(bd, capacity, uuids) {
        p.fallback = Some(why);
        return Ok(p);
    }
    let found = match entry {
        Some(e) => {
            let since = base_change_id(base, vm, bd);
            cbt_set(e, since.as_deref(), capacity, chunk_size).map(|s| (s, ChangeSource::Cbt))
        }
        None => match redo_layers(&bd.meta.chain, &d.meta.chain) {
            // No layers on top of the base's chain: nothing proves what did not change.
            None => return Ok(p),
            Some(k) => match d.disk.top_layer_areas(k)? {
                Some(areas) => Ok((
                    ChunkSet::covering(areas, chunk_size, capacity),
                    ChangeSource::RedoLog,
                )),
                None => Err("its redo logs cannot be read alone".into()),
            },
        },
    };
    match found {
        Ok((set, source)) => (p.changed, p.source) = (Some(set), Some(source)),
        Err(why) => p.fallback = Some(why),
    }
    Ok(p)
}

/// For a full backup given a changed-areas list: records each disk's `change_id`, so that the
/// next incremental can start from it. Every entry must be relative to `*` (all areas in use):
/// changes since some other state need that state as a base.
pub fn record_change_ids(vms: &mut [VmInput], cbt: &ChangedAreas) -> Result<()> {
    if let Some(e) = cbt.disks.iter().find(|e| e.since != "*") {
        return Err(Error::Usage(format!(
            "disk {:?}: changed areas since {:?} need that state's archive as --base (a full \
             backup takes a list since \"*\")",
            e.disk, e.since
        )));
    }
    for vm in vms.iter_mut() {
        for d in &mut vm.disks {
            if let Some(e) = cbt.entry(&vm.name, &d.name) {
                d.meta.change_id = Some(e.change_id.clone());
            }
        }
    }
    Ok(())
}

/// The change id the base recorded for disk `disk` of VM `vm` (the base disk matched by VM
/// and disk name): what to ask a server for the changes since.
pub fn recorded_change_id(base: &BaseImage, vm: &str, disk: &str) -> Option<String> {
    base_change_id(base, vm, base.disk_for(vm, disk, None)?)
}

/// The change id the base recorded for disk `bd` of VM `vm`: its own, or its vSphere origin's.
fn base_change_id(base: &BaseImage, vm: &str, bd: &DiskManifest) -> Option<String> {
    if let Some(c) = &bd.meta.change_id {
        return Some(c.clone());
    }
    let v = base.manifest.vms.iter().find(|v| v.name == vm)?;
    let o = v.origin.as_ref()?;
    o.disks
        .iter()
        .find(|d| d.device == bd.name)
        .and_then(|d| d.change_id.clone())
}

/// Every `ddb.uuid` of disk `d`'s chain: the merged one, and each text descriptor's (kept among
/// `files`). A redo log may carry a uuid of its own (hosted products, our fixture writer) or
/// none (ESXi), so the disk is known by all of them.
fn layer_uuids(files: &[VmFile], d: &DiskInput) -> Vec<String> {
    let mut out: Vec<String> = ddb_uuid(&d.meta.ddb).into_iter().collect();
    for layer in &d.meta.chain {
        let Some(f) = files.iter().find(|f| f.name == layer.file) else {
            continue;
        };
        let Ok(desc) = Descriptor::parse(Path::new(&layer.file), &f.bytes) else {
            continue;
        };
        if let Some(u) = desc.ddb("ddb.uuid") {
            if !out.iter().any(|o| o == u) {
                out.push(u.to_string());
            }
        }
    }
    out
}

fn ddb_uuid(ddb: &[(String, String)]) -> Option<String> {
    ddb.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("ddb.uuid"))
        .map(|(_, v)| v.clone())
}

/// Whether a disk of `capacity`, whose chain's layers carry `uuids`, is the base's disk `bd`
/// grown no older: the base's uuid (its top layer's, or the nearest below) must be one of them,
/// since the disk now is the base's chain with layers on top or the same base disk under newer
/// snapshots.
fn same_disk(
    bd: &DiskManifest,
    capacity: u64,
    uuids: &[String],
) -> std::result::Result<(), String> {
    if bd.meta.capacity != capacity {
        return Err(format!(
            "its capacity changed from {} to {capacity} bytes since the base",
            bd.meta.capacity
        ));
    }
    match ddb_uuid(&bd.meta.ddb) {
        Some(a) if !uuids.is_empty() && !uuids.contains(&a) => Err(format!(
            "none of its layers has the base's ddb.uuid {a:?} (its own: {:?}): another disk",
            uuids[0]
        )),
        _ => Ok(()),
    }
}

/// The chunks a CBT entry says changed, if it follows on from the base's change id.
fn cbt_set(
    e: &ChangedDisk,
    base_change_id: Option<&str>,
    capacity: u64,
    chunk_size: u64,
) -> std::result::Result<ChunkSet, String> {
    match base_change_id {
        Some(b) if b == e.since => {}
        Some(b) => {
            return Err(format!(
                "its changed areas start from change id {:?}, the base is at {b:?}",
                e.since
            ))
        }
        None => return Err("the base recorded no change id for it".into()),
    }
    let areas = DiskAreas::from_bytes(capacity, e.areas.iter().map(|a| (a.start, a.length)))
        .map_err(|w| format!("changed areas: {w}"))?;
    Ok(ChunkSet::covering(
        areas.byte_ranges(),
        chunk_size,
        capacity,
    ))
}

/// How many layers the disk's chain `now` has on top of the base's chain `then`, when `then`
/// is exactly what lies under them (same files, formats and content ids): at least one.
fn redo_layers(then: &[LayerInfo], now: &[LayerInfo]) -> Option<usize> {
    let k = now.len().checked_sub(then.len()).filter(|&k| k > 0)?;
    let same = |a: &LayerInfo, b: &LayerInfo| {
        a.file == b.file && a.format == b.format && a.cid == b.cid && a.parent_cid == b.parent_cid
    };
    now[k..]
        .iter()
        .zip(then)
        .all(|(a, b)| same(a, b))
        .then_some(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::manifest::DiskMeta;

    fn layer(file: &str, cid: u32, parent: u32) -> LayerInfo {
        LayerInfo {
            file: file.into(),
            format: "vmfsSparse".into(),
            cid,
            parent_cid: parent,
            ..Default::default()
        }
    }

    #[test]
    fn redo_layers_need_the_base_chain_underneath_unchanged() {
        let base = vec![layer("a-000001.vmdk", 2, 1), layer("a.vmdk", 1, u32::MAX)];
        let mut now = vec![layer("a-000002.vmdk", 3, 2)];
        now.extend(base.clone());
        assert_eq!(redo_layers(&base, &now), Some(1));
        assert_eq!(redo_layers(&base, &base), None, "nothing on top: no proof");
        let mut written = now.clone();
        written[1].cid = 7; // the frozen log was written after all
        assert_eq!(redo_layers(&base, &written), None);
        assert_eq!(redo_layers(&now, &base), None);
    }

    fn uuid_ddb(u: &str) -> Vec<(String, String)> {
        vec![("ddb.uuid".into(), u.into())]
    }

    #[test]
    fn a_disk_is_known_by_the_uuid_of_any_layer() {
        let bd = DiskManifest {
            id: 0,
            name: "d".into(),
            meta: DiskMeta {
                capacity: 1 << 20,
                ddb: uuid_ddb("aa"),
                ..Default::default()
            },
        };
        // The base's top layer now lies under a redo log that has a uuid of its own.
        let text = "# Disk DescriptorFile\nversion=1\nCID=00000002\nparentCID=ffffffff\n\
                    createType=\"vmfs\"\nRW 2048 VMFS \"a-flat.vmdk\"\nddb.uuid = \"aa\"\n";
        let d = DiskInput {
            name: "d".into(),
            meta: DiskMeta {
                capacity: 1 << 20,
                ddb: uuid_ddb("bb"),
                chain: vec![layer("a-000001.vmdk", 3, 2), layer("a.vmdk", 2, u32::MAX)],
                ..Default::default()
            },
            disk: Box::new(crate::fixture::memdisk::MemDisk::new(
                "d",
                vec![0; 1 << 20],
                &[],
            )),
        };
        let files = [VmFile {
            name: "a.vmdk".into(),
            source: None,
            bytes: text.as_bytes().to_vec(),
        }];
        let uuids = layer_uuids(&files, &d);
        assert_eq!(uuids, ["bb", "aa"]);
        assert!(same_disk(&bd, 1 << 20, &uuids).is_ok());
        let other = same_disk(&bd, 1 << 20, &uuids[..1]).unwrap_err();
        assert!(other.contains("another disk"), "{other}");
        assert!(same_disk(&bd, 2 << 20, &uuids)
            .unwrap_err()
            .contains("capacity"));
    }
}
