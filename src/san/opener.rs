//! SAN mode's [`SourceOpener`]: files of the chain are looked up in the block map and read from
//! the LUNs, so [`crate::chain::Chain::open`] collapses a chain that exists only as LUN blocks.
//!
//! Name rule: a path asked for matches a mapped file when the whole path equals the map's
//! `path`, or else when its file name equals the mapped path's file name
//! ([`super::blockmap::file_name_of`]) and no other mapped file has that name. Chain resolution
//! joins parent hints to the child's directory, so only the file name is stable; two mapped
//! files with one name (two VMs) are ambiguous and must be asked for by full datastore path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::blockmap::{file_name_of, BlockMap, MappedFile, RunKind};
use super::lun::{LunSet, LvMap};
use super::lvm::VmfsUuid;
use crate::error::{Error, Result};
use crate::input::source::check_range;
use crate::input::{ByteSource, MemSource, Piece, SourceOpener};

/// Opens the files of a block map from LUNs.
#[derive(Debug)]
pub struct BlockMapOpener {
    map_path: PathBuf,
    map: BlockMap,
    luns: Arc<LunSet>,
    /// Per volume id, its LV map.
    volumes: HashMap<String, Arc<LvMap>>,
}

impl BlockMapOpener {
    /// Binds `map` (read from `map_path`) to the LUNs: resolves every volume the files use to
    /// a logical volume found on `luns` and builds its PE map.
    pub fn new(map_path: &Path, map: BlockMap, luns: LunSet) -> Result<BlockMapOpener> {
        let luns = Arc::new(luns);
        let mut volumes = HashMap::new();
        let found = luns.lv_uuids();
        for v in &map.volumes {
            if !map
                .files
                .iter()
                .any(|f| f.volume.as_deref() == Some(v.id.as_str()))
            {
                continue;
            }
            let uuid = if v.lv_uuid.is_empty() {
                // The generator could not tell which LVID component is the LV UUID: accept
                // exactly one component that names an LV on the LUNs (formats/BLOCKMAP.md).
                let raw = v.lvid_raw.as_deref().unwrap_or_default();
                let hits: Vec<VmfsUuid> = raw
                    .split('/')
                    .filter_map(|c| c.parse::<VmfsUuid>().ok())
                    .filter(|u| found.contains(u))
                    .collect();
                match hits.as_slice() {
                    [u] => *u,
                    _ => {
                        return Err(Error::BlockMap {
                            path: map_path.into(),
                            what: format!(
                                "volume {:?}: {} components of lvidRaw {raw:?} name a logical \
                                 volume on the LUNs given; exactly 1 must",
                                v.id,
                                hits.len()
                            ),
                        })
                    }
                }
            } else {
                v.lv_uuid.parse().map_err(|e| Error::BlockMap {
                    path: map_path.into(),
                    what: format!("volume {:?}: {e}", v.id),
                })?
            };
            let lv = LvMap::build(&luns, uuid)?;
            for e in &v.extents {
                if let Some(pv) = &e.pv_uuid {
                    let known = luns
                        .pvs()
                        .iter()
                        .any(|p| p.header.pv_uuid.to_string() == *pv);
                    if !known {
                        return Err(Error::BlockMap {
                            path: map_path.into(),
                            what: format!(
                                "volume {:?} extent {}: PV {pv} is not on any LUN given",
                                v.id, e.ordinal
                            ),
                        });
                    }
                }
            }
            volumes.insert(v.id.clone(), Arc::new(lv));
        }
        Ok(BlockMapOpener {
            map_path: map_path.into(),
            map,
            luns,
            volumes,
        })
    }

    /// The block map.
    pub fn map(&self) -> &BlockMap {
        &self.map
    }

    /// The LUNs.
    pub fn luns(&self) -> &LunSet {
        &self.luns
    }

    /// The block-map file's path.
    pub fn map_path(&self) -> &Path {
        &self.map_path
    }

    /// The LV map bound to volume `id` (volumes no file uses are not bound).
    pub fn lv_map(&self, id: &str) -> Option<Arc<LvMap>> {
        self.volumes.get(id).cloned()
    }

    /// The mapped file that `path` names (see the module docs for the rule).
    pub fn find(&self, path: &Path) -> Result<&MappedFile> {
        let s = path.to_string_lossy();
        if let Some(f) = self.map.files.iter().find(|f| f.path == s) {
            return Ok(f);
        }
        let name = file_name_of(&s);
        let hits: Vec<&MappedFile> = self
            .map
            .files
            .iter()
            .filter(|f| file_name_of(&f.path) == name)
            .collect();
        match hits.as_slice() {
            [f] => Ok(f),
            [] => Err(Error::BlockMap {
                path: self.map_path.clone(),
                what: format!("no mapped file is named {name:?} (asked for {s})"),
            }),
            many => Err(Error::BlockMap {
                path: self.map_path.clone(),
                what: format!(
                    "{} mapped files are named {name:?} ({}): give the full datastore path",
                    many.len(),
                    many.iter()
                        .map(|f| f.path.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    fn source_for(&self, f: &MappedFile) -> Arc<dyn ByteSource> {
        if let Some(text) = &f.text {
            return Arc::new(MemSource::new(&f.path, text.clone().into_bytes()));
        }
        let vol = f.volume.as_deref().expect("invariant: checked map");
        Arc::new(BlockMapSource {
            path: PathBuf::from(&f.path),
            file: f.clone(),
            lv: self.volumes[vol].clone(),
            luns: self.luns.clone(),
        })
    }

    /// Checks every probe of every mapped file against the LUNs; `stage` ("before copy",
    /// "after copy") goes into the error. Returns the number of probes checked.
    pub fn check_probes(&self, stage: &'static str) -> Result<usize> {
        let mut n = 0;
        for f in &self.map.files {
            if f.probes.is_empty() {
                continue;
            }
            let src = self.source_for(f);
            for p in &f.probes {
                let mut buf = vec![0u8; p.len as usize];
                src.read_exact_at(&mut buf, p.off)?;
                let found = hex(&Sha256::digest(&buf));
                if !found.eq_ignore_ascii_case(&p.sha256) {
                    return Err(Error::ProbeMismatch(Box::new(
                        crate::error::ProbeMismatch {
                            map: self.map_path.clone(),
                            file: f.path.clone(),
                            offset: p.off,
                            len: p.len,
                            stage,
                            expected: p.sha256.to_ascii_lowercase(),
                            found,
                        },
                    )));
                }
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Lowercase hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl SourceOpener for BlockMapOpener {
    fn open(&self, path: &Path) -> Result<Arc<dyn ByteSource>> {
        Ok(self.source_for(self.find(path)?))
    }

    fn exists(&self, path: &Path) -> Result<bool> {
        Ok(self.find(path).is_ok())
    }
}

/// A mapped file read from the LUNs.
#[derive(Debug)]
pub struct BlockMapSource {
    path: PathBuf,
    file: MappedFile,
    lv: Arc<LvMap>,
    luns: Arc<LunSet>,
}

/// A piece of a file range: zeros, or bytes on a PV.
enum Span {
    Zero(u64),
    Dev { pv: usize, p_offset: u64, len: u64 },
}

impl BlockMapSource {
    /// The spans of file bytes `[offset, offset + len)`, in order.
    fn spans(&self, offset: u64, len: u64) -> Result<Vec<Span>> {
        check_range(&self.path, offset, len, self.file.size)?;
        let runs = &self.file.runs;
        let end = offset + len;
        let mut out = Vec::new();
        let mut k = runs.partition_point(|r| r.off + r.len <= offset);
        let mut pos = offset;
        while pos < end {
            let r = &runs[k];
            let n = (r.off + r.len).min(end) - pos;
            match r.kind {
                // To-be-zeroed blocks hold stale data of deleted files: never read them.
                RunKind::Tbz | RunKind::Hole => out.push(Span::Zero(n)),
                RunKind::Data => {
                    let lv = r.lv.expect("invariant: checked map") + (pos - r.off);
                    let ranges = self.lv.resolve(lv, n).map_err(|what| {
                        Error::corrupt(&self.path, pos, format!("block map run {k}: {what}"))
                    })?;
                    out.extend(ranges.into_iter().map(|d| Span::Dev {
                        pv: d.pv,
                        p_offset: d.p_offset,
                        len: d.len,
                    }));
                }
            }
            pos += n;
            k += 1;
        }
        Ok(out)
    }
}

impl ByteSource for BlockMapSource {
    fn path(&self) -> &Path {
        &self.path
    }

    fn len(&self) -> u64 {
        self.file.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut at = 0usize;
        for s in self.spans(offset, buf.len() as u64)? {
            match s {
                Span::Zero(n) => {
                    buf[at..at + n as usize].fill(0);
                    at += n as usize;
                }
                Span::Dev { pv, p_offset, len } => {
                    self.luns
                        .read_pv(pv, &mut buf[at..at + len as usize], p_offset)?;
                    at += len as usize;
                }
            }
        }
        Ok(())
    }

    fn next_data(&self, offset: u64) -> Result<Option<(u64, u64)>> {
        let runs = &self.file.runs;
        let mut k = runs.partition_point(|r| r.off + r.len <= offset);
        while k < runs.len() && runs[k].kind != RunKind::Data {
            k += 1;
        }
        let Some(first) = runs.get(k) else {
            return Ok(None);
        };
        let start = first.off.max(offset);
        let mut end = first.off + first.len;
        while let Some(r) = runs.get(k + 1).filter(|r| r.kind == RunKind::Data) {
            end = r.off + r.len;
            k += 1;
        }
        Ok(Some((start, end)))
    }

    fn locate(&self, offset: u64, len: u64) -> Result<Vec<Piece>> {
        Ok(self
            .spans(offset, len)?
            .into_iter()
            .map(|s| match s {
                Span::Zero(len) => Piece::Zero { len },
                Span::Dev { pv, p_offset, len } => {
                    let (file, direct) = self.luns.active_files(pv);
                    Piece::Read {
                        file,
                        direct,
                        offset: self.luns.pvs()[pv].part_start + p_offset,
                        len,
                    }
                }
            })
            .collect())
    }
}
