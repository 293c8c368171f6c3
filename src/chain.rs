//! Snapshot-chain collapse: the virtual disk as ordered runs of data or zeros.
//!
//! Later stages see a chain only through [`VirtualDisk`]: runs in ascending order that cover
//! `[0, capacity)` exactly, each either zeros or bytes at a known place. They never read
//! unallocated or zero space, and they read data runs in large sequential pieces.

use crate::error::Result;
use crate::input::read::read_source;
use crate::input::{FileTable, Source};

/// A run of a collapsed virtual disk. Offsets and lengths are bytes, multiples of 512.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskRun {
    /// Byte offset in the virtual disk.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// [`Source::Data`], [`Source::Deflate`] or [`Source::Zero`]; never `Unallocated`.
    pub source: Source,
}

impl DiskRun {
    /// Whether the run reads as zeros.
    pub fn is_zero(&self) -> bool {
        matches!(self.source, Source::Zero | Source::Unallocated)
    }

    /// The source of the part of this run that starts `skip` bytes in.
    pub fn source_at(&self, skip: u64) -> Source {
        match self.source {
            Source::Data { file, offset } => Source::Data {
                file,
                offset: offset + skip,
            },
            Source::Deflate {
                file,
                record,
                skip: s,
                grain_bytes,
                marker,
            } => Source::Deflate {
                file,
                record,
                skip: s + u32::try_from(skip).expect("invariant: deflate runs stay inside a grain"),
                grain_bytes,
                marker,
            },
            other => other,
        }
    }
}

/// A collapsed virtual disk.
pub trait VirtualDisk: Send {
    /// Size of the virtual disk in bytes.
    fn capacity(&self) -> u64;
    /// The next run, or `None` after the run that ends at `capacity`.
    fn next_run(&mut self) -> Result<Option<DiskRun>>;
    /// The files that [`DiskRun::source`] refers to.
    fn files(&self) -> &FileTable;
    /// The byte ranges, sorted and merged, that the top `layers` layers of the disk's chain
    /// hold anything for (data, or explicit zeros that hide what is below): what changed
    /// since the layer under them was frozen. `None` when the disk is not a chain of layers
    /// or has no more than `layers` of them.
    fn top_layer_areas(&mut self, layers: usize) -> Result<Option<Vec<(u64, u64)>>> {
        let _ = layers;
        Ok(None)
    }
    /// Drops every byte before `offset` (a sector multiple, not before the start of the run
    /// the next call would return): the next run starts there, and what lies between is never
    /// resolved. An incremental skips what its change list leaves out this way; mapping the
    /// whole chain was most of the time of a small incremental. `false`: this disk cannot
    /// skip (its runs must be read through).
    fn skip_to(&mut self, offset: u64) -> Result<bool> {
        let _ = offset;
        Ok(false)
    }
}

/// Reads `buf.len()` bytes of `run`, starting `skip` bytes into it.
pub fn read_run(files: &FileTable, run: &DiskRun, skip: u64, buf: &mut [u8]) -> Result<()> {
    debug_assert!(skip + buf.len() as u64 <= run.len);
    read_source(files, &run.source_at(skip), buf)
}

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::input::descriptor::CID_NO_PARENT;
use crate::input::layer::Layer;
use crate::input::{LocalOpener, SourceOpener, SECTOR};

/// Most layers a chain may have. ESX allows 32 snapshots per disk; anything far beyond that is a
/// loop the path check missed (different spellings of one file) or a hostile input.
pub const MAX_CHAIN_LAYERS: usize = 256;

/// How to open a chain.
pub struct ChainOptions<'a> {
    /// Accept a child whose parentCID does not match its parent's CID.
    pub ignore_cid: bool,
    /// Where the files come from.
    pub opener: &'a dyn SourceOpener,
}

impl Default for ChainOptions<'_> {
    fn default() -> Self {
        ChainOptions {
            ignore_cid: false,
            opener: &LocalOpener { direct: false },
        }
    }
}

/// An opened snapshot chain, top layer first.
#[derive(Debug)]
pub struct Chain {
    /// Layers from the top (newest) down to the base.
    pub layers: Vec<Layer>,
    /// All files of all layers.
    pub files: FileTable,
    /// Non-fatal findings (unclean shutdown, CID override), for the user.
    pub warnings: Vec<String>,
}

impl Chain {
    /// Opens the chain whose top descriptor is `top`, following parentFileNameHint to the base.
    pub fn open(top: &Path, opts: &ChainOptions<'_>) -> Result<Chain> {
        let mut files = FileTable::default();
        let mut layers: Vec<Layer> = Vec::new();
        let mut warnings = Vec::new();
        let mut seen: Vec<PathBuf> = Vec::new();
        let mut path = top.to_path_buf();
        loop {
            let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if seen.contains(&key) {
                return Err(Error::Chain {
                    path: path.clone(),
                    what: "snapshot chain loops back to this file".into(),
                });
            }
            if layers.len() >= MAX_CHAIN_LAYERS {
                return Err(Error::Chain {
                    path: path.clone(),
                    what: format!("chain deeper than {MAX_CHAIN_LAYERS} layers"),
                });
            }
            seen.push(key);
            let layer = Layer::open(&path, opts.opener, &mut files)?;
            warnings.extend(layer.warnings());

            if let Some(child) = layers.last() {
                let (pcid, cid) = (child.descriptor.parent_cid, layer.descriptor.cid);
                if pcid != cid {
                    if !opts.ignore_cid {
                        return Err(Error::ChainMismatch {
                            child: child.path.clone(),
                            parent: layer.path.clone(),
                            child_pcid: pcid,
                            parent_cid: cid,
                        });
                    }
                    warnings.push(format!(
                        "{}: parentCID {pcid:08x} does not match CID {cid:08x} of {} \
                         (ignored by --ignore-cid)",
                        child.path.display(),
                        layer.path.display()
                    ));
                }
                // VMware cannot grow a disk that has snapshots, so differing sizes mean the
                // hint points at the wrong file.
                if child.capacity != layer.capacity {
                    return Err(Error::Chain {
                        path: child.path.clone(),
                        what: format!(
                            "size {} sectors differs from parent {} ({} sectors)",
                            child.capacity,
                            layer.path.display(),
                            layer.capacity
                        ),
                    });
                }
            }

            let d = &layer.descriptor;
            let next = match (&d.parent_hint, d.parent_cid) {
                (None, CID_NO_PARENT) => None,
                (Some(hint), pcid) if pcid != CID_NO_PARENT => {
                    Some(resolve_parent(&layer.path, hint, opts.opener)?)
                }
                (Some(_), _) => {
                    return Err(Error::Chain {
                        path: layer.path.clone(),
                        what: "parentFileNameHint given but parentCID is ffffffff (no parent)"
                            .into(),
                    })
                }
                (None, pcid) => {
                    return Err(Error::Chain {
                        path: layer.path.clone(),
                        what: format!("parentCID {pcid:08x} given but no parentFileNameHint"),
                    })
                }
            };
            layers.push(layer);
            match next {
                Some(p) => path = p,
                None => break,
            }
        }
        Ok(Chain {
            layers,
            files,
            warnings,
        })
    }

    /// Virtual size in bytes.
    pub fn capacity(&self) -> u64 {
        self.layers[0].capacity * SECTOR
    }

    /// Reads the base's flat extents only inside `areas`, the disk's areas in use as its server
    /// reports them; returns whether the base had any (a sparse base keeps its grain tables).
    pub fn mask_base(&mut self, areas: &std::sync::Arc<crate::input::in_use::DiskAreas>) -> bool {
        self.layers
            .last_mut()
            .is_some_and(|base| base.mask_flat_extents(areas) > 0)
    }

    /// The collapsed disk: per sector, the topmost layer that has it.
    pub fn collapse(self) -> CollapsedDisk {
        CollapsedDisk {
            capacity: self.layers[0].capacity,
            pos: 0,
            pending: None,
            chain: self,
        }
    }

    /// Maps layer `index` alone over its whole capacity and returns
    /// `(allocated bytes, explicit zero bytes)`.
    pub fn layer_usage(&mut self, index: usize) -> Result<(u64, u64)> {
        let layer = &mut self.layers[index];
        let (mut data, mut zero, mut pos) = (0, 0, 0);
        while pos < layer.capacity {
            let run = layer.map(pos, layer.capacity - pos)?;
            match run.source {
                Source::Data { .. } | Source::Deflate { .. } => data += run.sectors,
                Source::Zero => zero += run.sectors,
                Source::Unallocated => {}
            }
            pos += run.sectors;
        }
        Ok((data * SECTOR, zero * SECTOR))
    }
}

/// Finds the parent named by `hint`: as written (absolute, or relative to the child), then by
/// its base name beside the child, because ESX writes absolute `/vmfs/volumes/...` hints that do
/// not exist on a backup proxy holding a copy of the VM folder.
fn resolve_parent(child: &Path, hint: &str, opener: &dyn SourceOpener) -> Result<PathBuf> {
    let direct = crate::input::descriptor::resolve_relative(child, hint);
    if opener.exists(&direct)? {
        return Ok(direct);
    }
    let base = Path::new(hint)
        .file_name()
        .map(|b| child.parent().unwrap_or_else(|| Path::new(".")).join(b));
    match base {
        Some(b) if b != direct && opener.exists(&b)? => Ok(b),
        _ => Err(Error::Chain {
            path: child.to_path_buf(),
            what: format!(
                "parent {hint:?} not found (tried {}{})",
                direct.display(),
                base.filter(|b| *b != direct)
                    .map(|b| format!(" and {}", b.display()))
                    .unwrap_or_default()
            ),
        }),
    }
}

/// A chain collapsed on the fly into [`DiskRun`]s.
#[derive(Debug)]
pub struct CollapsedDisk {
    chain: Chain,
    capacity: u64,
    /// Next sector to resolve.
    pos: u64,
    /// A run held back to merge with its successor.
    pending: Option<DiskRun>,
}

impl CollapsedDisk {
    /// The chain behind this disk.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Resolves sectors from `pos` down the layers: the first layer with anything but
    /// Unallocated wins; each lower layer is asked only about the span the upper one left open.
    fn resolve(&mut self, pos: u64) -> Result<Run> {
        let mut max = self.capacity - pos;
        for layer in &mut self.chain.layers {
            let run = layer.map(pos, max)?;
            if run.source != Source::Unallocated {
                return Ok(run);
            }
            max = run.sectors;
        }
        // Unallocated all the way down reads as zeros.
        Ok(Run {
            sectors: max,
            source: Source::Zero,
        })
    }
}

use crate::input::Run;

/// Merges `b` into `a` when it continues it in both the disk and the file.
fn merge(a: &mut DiskRun, b: &DiskRun) -> bool {
    let joins = match (a.source, b.source) {
        (Source::Zero, Source::Zero) => true,
        (
            Source::Data {
                file: f1,
                offset: o1,
            },
            Source::Data {
                file: f2,
                offset: o2,
            },
        ) => f1 == f2 && o1 + a.len == o2,
        _ => false,
    };
    if joins {
        a.len += b.len;
    }
    joins
}

impl VirtualDisk for CollapsedDisk {
    fn capacity(&self) -> u64 {
        self.capacity * SECTOR
    }

    fn top_layer_areas(&mut self, layers: usize) -> Result<Option<Vec<(u64, u64)>>> {
        if layers == 0 || layers >= self.chain.layers.len() {
            return Ok(None);
        }
        let mut areas: Vec<(u64, u64)> = Vec::new();
        for layer in &mut self.chain.layers[..layers] {
            let mut pos = 0;
            while pos < layer.capacity {
                let run = layer.map(pos, layer.capacity - pos)?;
                if run.source != Source::Unallocated {
                    areas.push((pos * SECTOR, (pos + run.sectors) * SECTOR));
                }
                pos += run.sectors;
            }
        }
        areas.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(areas.len());
        for (s, e) in areas {
            match merged.last_mut() {
                Some(last) if last.1 >= s => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        Ok(Some(merged))
    }

    fn next_run(&mut self) -> Result<Option<DiskRun>> {
        while self.pos < self.capacity {
            let run = self.resolve(self.pos)?;
            let next = DiskRun {
                offset: self.pos * SECTOR,
                len: run.sectors * SECTOR,
                source: run.source,
            };
            self.pos += run.sectors;
            match &mut self.pending {
                Some(p) => {
                    if !merge(p, &next) {
                        return Ok(Some(std::mem::replace(p, next)));
                    }
                }
                None => self.pending = Some(next),
            }
        }
        Ok(self.pending.take())
    }

    fn files(&self) -> &FileTable {
        &self.chain.files
    }

    fn skip_to(&mut self, offset: u64) -> Result<bool> {
        match &mut self.pending {
            Some(p) if p.offset + p.len > offset => {
                let cut = offset.saturating_sub(p.offset);
                *p = DiskRun {
                    offset: p.offset + cut,
                    len: p.len - cut,
                    source: p.source_at(cut),
                };
            }
            _ => {
                self.pending = None;
                self.pos = self.pos.max(offset / SECTOR).min(self.capacity);
            }
        }
        Ok(true)
    }
}
