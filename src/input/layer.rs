//! One link of a snapshot chain: a descriptor and its extents, mapped as one virtual disk.
//!
//! Format detection goes by magic, never by file name: `SPARSE` extents may be KDMV or COWD, and
//! a `.vmdk` passed on the command line may be a text descriptor or a monolithic KDMV file with
//! the descriptor embedded.

use std::path::{Path, PathBuf};

use super::descriptor::{resolve_relative, Access, Descriptor, ExtentType, MAX_DESCRIPTOR_BYTES};
use super::flat::{FlatExtent, ZeroExtent};
use super::in_use::{DiskAreas, InUseExtent};
use super::sparse::SparseExtent;
use super::{ExtentMap, FileTable, Run, SourceOpener};
use crate::error::{Error, Result};

/// First bytes of a hosted sparse extent.
pub const KDMV_MAGIC: &[u8; 4] = b"KDMV";
/// First bytes of a COWD (vmfsSparse) extent.
pub const COWD_MAGIC: &[u8; 4] = b"COWD";
/// First bytes of an SEsparse extent (u64 0xCAFEBABE, little-endian).
pub const SESPARSE_MAGIC: &[u8; 8] = &[0xbe, 0xba, 0xfe, 0xca, 0, 0, 0, 0];

/// One extent of a layer, placed in the layer's sector space.
pub struct PlacedExtent {
    /// First layer sector covered.
    pub start: u64,
    /// The file name (None for ZERO extents).
    pub path: Option<PathBuf>,
    /// The mapper.
    pub map: Box<dyn ExtentMap>,
}

/// An opened layer.
pub struct Layer {
    /// The descriptor file (or monolithic sparse file) this layer was opened from.
    pub path: PathBuf,
    /// Its parsed descriptor.
    pub descriptor: Descriptor,
    /// Extents in order; their `start`s are the running sums of the extent sizes.
    pub extents: Vec<PlacedExtent>,
    /// Size in sectors.
    pub capacity: u64,
    /// Index of the extent the last `map` used: the collapse walks forward, so this is the
    /// next answer almost always.
    cursor: usize,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer")
            .field("path", &self.path)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Layer {
    /// Opens the layer described by `path`, registering its files in `files`.
    pub fn open(path: &Path, opener: &dyn SourceOpener, files: &mut FileTable) -> Result<Layer> {
        let src = opener.open(path)?;
        let mut magic = [0u8; 8];
        let n = src.len().min(8) as usize;
        src.read_exact_at(&mut magic[..n], 0)?;

        if magic.starts_with(KDMV_MAGIC) {
            // Monolithic sparse or streamOptimized: one KDMV file with its descriptor inside.
            // Like qemu, use the file itself and ignore the name in the embedded extent line, so
            // a renamed file still opens (libvmdk gets this wrong).
            let id = files.add(src);
            let ext = SparseExtent::open(files, id)?;
            let text = ext.embedded_descriptor()?.ok_or_else(|| {
                Error::corrupt(
                    path,
                    0,
                    "sparse extent has no embedded descriptor: open the descriptor that names it",
                )
            })?;
            let descriptor = Descriptor::parse(path, text.as_bytes())?;
            let capacity = descriptor.capacity_sectors();
            if descriptor.extents.len() != 1 || capacity != ext.capacity_sectors() {
                return Err(Error::corrupt(
                    path,
                    0,
                    format!(
                        "embedded descriptor describes {} extents / {capacity} sectors, \
                         the sparse header {} sectors",
                        descriptor.extents.len(),
                        ext.capacity_sectors()
                    ),
                ));
            }
            return Ok(Layer {
                path: path.to_path_buf(),
                descriptor,
                extents: vec![PlacedExtent {
                    start: 0,
                    path: Some(path.to_path_buf()),
                    map: Box::new(ext),
                }],
                capacity,
                cursor: 0,
            });
        }
        if magic.starts_with(COWD_MAGIC) || magic == *SESPARSE_MAGIC {
            return Err(Error::Usage(format!(
                "{} is a redo-log extent, not a disk: open the descriptor that names it",
                path.display()
            )));
        }
        if src.len() > MAX_DESCRIPTOR_BYTES {
            return Err(Error::corrupt(
                path,
                0,
                format!(
                    "not a VMDK: no sparse magic, and {} bytes is too large for a descriptor",
                    src.len()
                ),
            ));
        }
        let mut text = vec![0u8; src.len() as usize];
        src.read_exact_at(&mut text, 0)?;
        let descriptor = Descriptor::parse(path, &text)?;
        Self::from_descriptor(path, descriptor, opener, files)
    }

    fn from_descriptor(
        path: &Path,
        descriptor: Descriptor,
        opener: &dyn SourceOpener,
        files: &mut FileTable,
    ) -> Result<Layer> {
        let mut extents = Vec::with_capacity(descriptor.extents.len());
        let mut start = 0u64;
        for (i, ed) in descriptor.extents.iter().enumerate() {
            if ed.access == Access::NoAccess {
                return Err(Error::unsupported(
                    path,
                    format!("extent {} is NOACCESS: its data cannot be read", i + 1),
                ));
            }
            let (epath, map): (Option<PathBuf>, Box<dyn ExtentMap>) = match ed.kind {
                ExtentType::Zero => (
                    None,
                    Box::new(ZeroExtent {
                        sectors: ed.sectors,
                    }),
                ),
                ExtentType::Device => {
                    return Err(Error::unsupported(
                        path,
                        format!(
                            "extent {} is a raw device mapping (RDM): back up the LUN itself",
                            i + 1
                        ),
                    ))
                }
                kind => {
                    let name = ed
                        .file
                        .as_deref()
                        .expect("invariant: parser requires a file");
                    let epath = resolve_relative(path, name);
                    let src = opener.open(&epath)?;
                    let mut magic = [0u8; 8];
                    let n = src.len().min(8) as usize;
                    src.read_exact_at(&mut magic[..n], 0)?;
                    let id = files.add(src);
                    let map: Box<dyn ExtentMap> = match kind {
                        ExtentType::Flat | ExtentType::Vmfs => {
                            Box::new(FlatExtent::open(files, id, ed.offset, ed.sectors)?)
                        }
                        ExtentType::Sparse if magic.starts_with(KDMV_MAGIC) => {
                            Box::new(SparseExtent::open(files, id)?)
                        }
                        ExtentType::Sparse | ExtentType::VmfsSparse
                            if magic.starts_with(COWD_MAGIC) =>
                        {
                            Box::new(super::cowd::open(files, id)?)
                        }
                        ExtentType::SeSparse if magic == *SESPARSE_MAGIC => {
                            Box::new(super::sesparse::open(files, id)?)
                        }
                        _ => {
                            return Err(Error::corrupt(
                                &epath,
                                0,
                                format!(
                                    "{kind:?} extent named by {} does not start with its magic \
                                     (found {:02x?})",
                                    path.display(),
                                    &magic[..n]
                                ),
                            ))
                        }
                    };
                    // A sparse extent must cover its extent line. A larger one is legal (split
                    // KDMV extents of a twoGb disk round up to whole grain tables).
                    if map.sectors() < ed.sectors {
                        return Err(Error::corrupt(
                            &epath,
                            0,
                            format!(
                                "extent holds {} sectors but {} says {}",
                                map.sectors(),
                                path.display(),
                                ed.sectors
                            ),
                        ));
                    }
                    (Some(epath), map)
                }
            };
            extents.push(PlacedExtent {
                start,
                path: epath,
                map,
            });
            start = start
                .checked_add(ed.sectors)
                .ok_or_else(|| Error::corrupt(path, 0, "extent sizes overflow"))?;
        }
        Ok(Layer {
            path: path.to_path_buf(),
            capacity: start,
            descriptor,
            extents,
            cursor: 0,
        })
    }

    /// Reads this layer's flat extents only inside `areas` (disk areas in use); returns how
    /// many extents that masked. Only a base has flat extents.
    pub fn mask_flat_extents(&mut self, areas: &std::sync::Arc<DiskAreas>) -> usize {
        let mut masked = 0;
        for e in self.extents.iter_mut().filter(|e| e.map.kind() == "flat") {
            let inner = std::mem::replace(&mut e.map, Box::new(ZeroExtent { sectors: 0 }));
            e.map = Box::new(InUseExtent::new(inner, areas.clone(), e.start));
            masked += 1;
        }
        masked
    }

    /// Maps layer sector `lba` (`< capacity`) for at most `max` sectors; never crosses an extent.
    pub fn map(&mut self, lba: u64, max: u64) -> Result<Run> {
        debug_assert!(lba < self.capacity && max >= 1);
        let ends = |e: &PlacedExtent, next: Option<&PlacedExtent>| {
            next.map(|n| n.start).unwrap_or(self.capacity) > lba && e.start <= lba
        };
        if !ends(
            &self.extents[self.cursor],
            self.extents.get(self.cursor + 1),
        ) {
            self.cursor = self.extents.partition_point(|e| e.start <= lba) - 1;
        }
        let end = self
            .extents
            .get(self.cursor + 1)
            .map(|n| n.start)
            .unwrap_or(self.capacity);
        let ext = &mut self.extents[self.cursor];
        let rel = lba - ext.start;
        let run = ext.map.map(rel, max.min(end - lba))?;
        debug_assert!(run.sectors >= 1 && run.sectors <= max.min(end - lba));
        Ok(run)
    }

    /// Short name of the layer's format for `inspect`.
    pub fn format(&self) -> String {
        self.descriptor.create_type.clone()
    }

    /// Warnings from the layer's extents.
    pub fn warnings(&self) -> Vec<String> {
        self.extents
            .iter()
            .flat_map(|e| {
                let p = e
                    .path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                e.map
                    .warnings()
                    .into_iter()
                    .map(move |w| format!("{p}: {w}"))
            })
            .collect()
    }
}
