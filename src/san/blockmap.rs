//! The block map (formats/BLOCKMAP.md, schema `vmfs-blockmap/1`): for each file of a VM's
//! snapshot chain, where its bytes lie on a VMFS logical volume, as produced on the ESX host.
//!
//! [`BlockMap::load`] parses the JSON and then checks it strictly: runs sorted, non-overlapping,
//! gap-free and covering `[0, size)` exactly; data runs carry an LV offset; every file names a
//! declared volume; probes lie inside their file. Nothing downstream re-checks these invariants.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The `schema` string of this version.
pub const BLOCKMAP_SCHEMA_V1: &str = "vmfs-blockmap/1";
/// Largest block-map file accepted: a 64 TiB VMDK fragmented into 1 MiB blocks is ~64 M runs,
/// far beyond what a host ever produces; 256 MiB of JSON is ample.
pub const MAX_BLOCKMAP_BYTES: u64 = 256 << 20;
/// Largest embedded descriptor text (the reader's own descriptor limit is smaller still).
pub const MAX_EMBEDDED_TEXT_BYTES: usize = 1 << 20;

/// A whole block map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlockMap {
    /// Always [`BLOCKMAP_SCHEMA_V1`].
    pub schema: String,
    /// Free-form provenance (host, build, time, tool): kept, never interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated: Option<serde_json::Value>,
    /// The VMFS datastores the files live on.
    pub volumes: Vec<Volume>,
    /// The mapped files.
    pub files: Vec<MappedFile>,
}

/// A VMFS datastore (one logical volume, one or more extents).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    /// Name used by [`MappedFile::volume`].
    pub id: String,
    /// Datastore label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// FS UUID (`/vmfs/volumes/<uuid>`), informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_uuid: Option<String>,
    /// LV UUID matched against the LVM headers found on the LUNs. Empty: match the UUID
    /// components of `lvid_raw` instead (exactly one must match).
    #[serde(default)]
    pub lv_uuid: String,
    /// The unparsed `LVID:` token of `vmkfstools -t0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvid_raw: Option<String>,
    /// VMFS major version, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmfs_major: Option<u32>,
    /// Extents as the host lists them (`esxcli storage vmfs extent list`), informational:
    /// LUNs are identified by their LVM signature.
    #[serde(default)]
    pub extents: Vec<VolumeExtent>,
}

/// One extent (LUN partition) of a datastore, as the host reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeExtent {
    /// Extent number.
    pub ordinal: u32,
    /// ESX device name (`naa.…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub naa: Option<String>,
    /// Partition number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// PV UUID, when known; checked against the LUN's LVM header when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pv_uuid: Option<String>,
}

/// One file of the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MappedFile {
    /// Datastore path, e.g. `[DS01] vm1/vm1-flat.vmdk` or `/vmfs/volumes/DS01/vm1/…`.
    pub path: String,
    /// `flat`, `delta`, `sesparse`, `descriptor`…, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// [`Volume::id`] of the volume holding the runs (absent for embedded text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// The file's bytes, for small text files (descriptors) that VMFS keeps inline and that
    /// the host copies verbatim. Exclusive with `runs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Sorted runs covering `[0, size)` exactly.
    #[serde(default)]
    pub runs: Vec<MapRun>,
    /// Hashes of file ranges computed on the host, checked before and after the copy.
    #[serde(default)]
    pub probes: Vec<Probe>,
}

/// What a run of a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    /// Allocated: read `len` bytes at LV offset `lv` (`VMFS --`).
    Data,
    /// Allocated but to-be-zeroed (`VMFS Z-`): zeros, and never read: the blocks hold stale data.
    Tbz,
    /// Not allocated (`NOMP`): zeros.
    Hole,
}

/// One run of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapRun {
    /// Offset in the file.
    pub off: u64,
    /// Length in bytes, at least 1.
    pub len: u64,
    /// Data, to-be-zeroed or hole.
    pub kind: RunKind,
    /// Logical-volume byte offset (required for data, diagnostic only for tbz).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lv: Option<u64>,
}

/// A host-side hash of a file range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// Offset in the file.
    pub off: u64,
    /// Length in bytes.
    pub len: u64,
    /// SHA-256 of the bytes, 64 lowercase hex digits.
    pub sha256: String,
}

/// Largest probe: probes are read twice, so they must stay cheap.
pub const MAX_PROBE_BYTES: u64 = 64 << 20;

impl BlockMap {
    /// Reads and checks the block map at `path`.
    pub fn load(path: &Path) -> Result<BlockMap> {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, None, e))?;
        let len = f.metadata().map_err(|e| Error::io(path, None, e))?.len();
        if len > MAX_BLOCKMAP_BYTES {
            return Err(Error::BlockMap {
                path: path.into(),
                what: format!("{len} bytes is larger than the {MAX_BLOCKMAP_BYTES}-byte limit"),
            });
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, None, e))?;
        Self::parse(path, &bytes)
    }

    /// Parses and checks block-map JSON; `path` names it in errors.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<BlockMap> {
        let map: BlockMap = serde_json::from_slice(bytes).map_err(|e| Error::BlockMap {
            path: path.into(),
            what: format!("not a block map: {e}"),
        })?;
        map.check(path)?;
        Ok(map)
    }

    /// Checks every invariant listed in the module docs.
    pub fn check(&self, path: &Path) -> Result<()> {
        let err = |what: String| Error::BlockMap {
            path: PathBuf::from(path),
            what,
        };
        if self.schema != BLOCKMAP_SCHEMA_V1 {
            return Err(err(format!(
                "schema {:?} is not {BLOCKMAP_SCHEMA_V1:?}",
                self.schema
            )));
        }
        let mut ids = HashSet::new();
        for v in &self.volumes {
            if !ids.insert(v.id.as_str()) {
                return Err(err(format!("volume id {:?} declared twice", v.id)));
            }
            if !v.lv_uuid.is_empty() {
                v.lv_uuid
                    .parse::<super::VmfsUuid>()
                    .map_err(|e| err(format!("volume {:?}: lvUuid {e}", v.id)))?;
            } else if v.lvid_raw.is_none() {
                return Err(err(format!(
                    "volume {:?} has neither lvUuid nor lvidRaw",
                    v.id
                )));
            }
        }
        let mut paths = HashSet::new();
        for f in &self.files {
            if !paths.insert(f.path.as_str()) {
                return Err(err(format!("file {:?} mapped twice", f.path)));
            }
            check_file(f, &ids).map_err(|w| err(format!("file {:?}: {w}", f.path)))?;
        }
        Ok(())
    }

    /// Serializes as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("invariant: a BlockMap always serializes")
    }
}

fn check_file(f: &MappedFile, volumes: &HashSet<&str>) -> std::result::Result<(), String> {
    if let Some(text) = &f.text {
        if !f.runs.is_empty() {
            return Err("has both text and runs".into());
        }
        if text.len() > MAX_EMBEDDED_TEXT_BYTES || text.len() as u64 != f.size {
            return Err(format!(
                "embedded text is {} bytes, size says {} (limit {MAX_EMBEDDED_TEXT_BYTES})",
                text.len(),
                f.size
            ));
        }
    } else {
        let vol = f.volume.as_deref().ok_or("has runs but no volume")?;
        if !volumes.contains(vol) {
            return Err(format!("volume {vol:?} is not declared in volumes"));
        }
        let mut pos = 0u64;
        for (i, r) in f.runs.iter().enumerate() {
            if r.len == 0 {
                return Err(format!("run {i} at byte {:#x} has length 0", r.off));
            }
            if r.off < pos {
                return Err(format!(
                    "run {i} at byte {:#x} overlaps the previous run, which ends at {pos:#x}",
                    r.off
                ));
            }
            if r.off > pos {
                return Err(format!(
                    "bytes {pos:#x}..{:#x} are not covered by any run (gap before run {i})",
                    r.off
                ));
            }
            pos = r
                .off
                .checked_add(r.len)
                .ok_or_else(|| format!("run {i} at byte {:#x}: length overflows", r.off))?;
            match (r.kind, r.lv) {
                (RunKind::Data, None) => {
                    return Err(format!(
                        "data run {i} at byte {:#x} has no lv offset",
                        r.off
                    ))
                }
                (RunKind::Data | RunKind::Tbz, Some(lv)) if lv.checked_add(r.len).is_none() => {
                    return Err(format!("run {i}: lv {lv:#x} + {} overflows", r.len))
                }
                _ => {}
            }
        }
        if pos != f.size {
            return Err(if pos < f.size {
                format!(
                    "runs end at byte {pos:#x} but the file is {:#x} bytes: bytes {pos:#x}..{:#x} \
                     are not covered",
                    f.size, f.size
                )
            } else {
                format!(
                    "runs end at byte {pos:#x}, past the end of the {:#x}-byte file",
                    f.size
                )
            });
        }
    }
    for (i, p) in f.probes.iter().enumerate() {
        let in_file = p.off.checked_add(p.len).is_some_and(|e| e <= f.size);
        if p.len == 0 || p.len > MAX_PROBE_BYTES || !in_file {
            return Err(format!(
                "probe {i} ({} bytes at {:#x}) is empty, larger than {MAX_PROBE_BYTES} or \
                 outside the {:#x}-byte file",
                p.len, p.off, f.size
            ));
        }
        if p.sha256.len() != 64 || !p.sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "probe {i}: sha256 {:?} is not 64 hex digits",
                p.sha256
            ));
        }
    }
    Ok(())
}

/// The file-name part of a datastore path: `[DS01] vm/vm-flat.vmdk` and
/// `/vmfs/volumes/DS01/vm/vm-flat.vmdk` both give `vm-flat.vmdk`.
pub fn file_name_of(path: &str) -> &str {
    let p = path.rsplit(['/', '\\']).next().unwrap_or(path);
    match p.rfind("] ") {
        Some(i) => &p[i + 2..],
        None => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(runs: &str) -> Result<BlockMap> {
        let json = format!(
            r#"{{"schema":"vmfs-blockmap/1","volumes":[{{"id":"v0","lvUuid":"49edf842-dcb35d37-b383-0021280083cf"}}],
            "files":[{{"path":"[ds] vm/a-flat.vmdk","size":4096,"volume":"v0","runs":[{runs}]}}]}}"#
        );
        BlockMap::parse(Path::new("m.json"), json.as_bytes())
    }

    #[test]
    fn accepts_a_covering_map() {
        let m = map(r#"{"off":0,"len":1024,"kind":"data","lv":1048576},
                       {"off":1024,"len":1024,"kind":"tbz"},{"off":2048,"len":2048,"kind":"hole"}"#)
        .unwrap();
        assert_eq!(m.files[0].runs.len(), 3);
        let again = BlockMap::parse(Path::new("m"), m.to_json().as_bytes()).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn rejects_bad_runs_with_offsets() {
        let e = map(r#"{"off":0,"len":2048,"kind":"hole"},{"off":1024,"len":3072,"kind":"hole"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlaps") && e.contains("0x800"), "{e}");
        let e = map(r#"{"off":0,"len":1024,"kind":"hole"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not covered") && e.contains("0x400"), "{e}");
        let e = map(r#"{"off":0,"len":1024,"kind":"hole"},{"off":2048,"len":2048,"kind":"hole"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gap"), "{e}");
        let e = map(r#"{"off":0,"len":4096,"kind":"data"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no lv"), "{e}");
        let e = map(r#"{"off":0,"len":4096,"kind":"cow"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant"), "{e}");
        assert!(map(r#"{"off":0,"len":-1,"kind":"hole"}"#).is_err());
        assert!(map(r#"{"off":0,"len":8192,"kind":"hole"}"#).is_err());
    }

    #[test]
    fn file_names_of_datastore_paths() {
        assert_eq!(file_name_of("[DS01] vm1/vm1-flat.vmdk"), "vm1-flat.vmdk");
        assert_eq!(file_name_of("[DS 01] vm1.vmdk"), "vm1.vmdk");
        assert_eq!(file_name_of("/vmfs/volumes/ds/vm/x.vmdk"), "x.vmdk");
        assert_eq!(file_name_of("x.vmdk"), "x.vmdk");
    }
}
