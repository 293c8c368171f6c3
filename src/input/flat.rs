//! FLAT / VMFS extents (raw files) and ZERO extents (no file).
//!
//! A flat extent has no allocation table: every sector is "allocated". The one exception vdar
//! exploits is the file system's own: a thin `-flat.vmdk` copied to a local file system is a
//! sparse file, and SEEK_DATA/SEEK_HOLE tell where its holes are without reading them. Holes map
//! to [`Source::Zero`] (they read as zeros and a flat extent is only ever a base).

use std::sync::Arc;

use super::{ByteSource, ExtentMap, FileId, FileTable, Run, Source, SECTOR};
use crate::error::{Error, Result};

/// A raw extent: sectors `[0, sectors)` are bytes `[start, start + sectors*512)` of a file.
#[derive(Debug)]
pub struct FlatExtent {
    src: Arc<dyn ByteSource>,
    file: FileId,
    start: u64,
    sectors: u64,
    /// Last SEEK_DATA answer: `[probe, data_start)` is a hole and `[data_start, data_end)` data,
    /// in file bytes. Saves two syscalls per call when the collapse asks about consecutive gaps
    /// of a fragmented redo log above.
    cache: Option<(u64, u64, u64)>,
}

impl FlatExtent {
    /// Opens `file` as a flat extent of `sectors` sectors starting at sector `start_sector`.
    pub fn open(files: &FileTable, file: FileId, start_sector: u64, sectors: u64) -> Result<Self> {
        let src = files.get(file).clone();
        let start = start_sector
            .checked_mul(SECTOR)
            .ok_or_else(|| Error::corrupt(src.path(), 0, "extent offset overflows"))?;
        let need = sectors
            .checked_mul(SECTOR)
            .and_then(|n| n.checked_add(start))
            .ok_or_else(|| Error::corrupt(src.path(), 0, "extent size overflows"))?;
        // A flat file shorter than its extent line is a truncated copy; reading the missing tail
        // as zeros (what qemu does) would archive a disk that silently lost data.
        if src.len() < need {
            return Err(Error::corrupt(
                src.path(),
                src.len(),
                format!(
                    "flat extent needs {need} bytes ({sectors} sectors from sector {start_sector}) \
                     but the file has {} bytes: truncated",
                    src.len()
                ),
            ));
        }
        Ok(FlatExtent {
            src,
            file,
            start,
            sectors,
            cache: None,
        })
    }
}

impl ExtentMap for FlatExtent {
    fn sectors(&self) -> u64 {
        self.sectors
    }

    fn map(&mut self, lba: u64, max: u64) -> Result<Run> {
        let pos = self.start + lba * SECTOR;
        let limit = pos + max * SECTOR;
        let (probe, data_start, data_end) = match self.cache {
            Some(c @ (probe, _, end)) if probe <= pos && pos < end => c,
            _ => {
                let (s, e) = self.src.next_data(pos)?.unwrap_or((u64::MAX, u64::MAX));
                self.cache = Some((pos, s, e));
                (pos, s, e)
            }
        };
        debug_assert!(probe <= pos);
        // Holes are file-system blocks, so their edges are sector multiples; round defensively
        // anyway so a run is never a fraction of a sector.
        if pos < data_start {
            let end = data_start.min(limit);
            let sectors = ((end - pos) / SECTOR).max(1);
            return Ok(Run {
                sectors,
                source: Source::Zero,
            });
        }
        let end = data_end.min(limit);
        let sectors = (end - pos).div_ceil(SECTOR).max(1).min(max);
        Ok(Run {
            sectors,
            source: Source::Data {
                file: self.file,
                offset: pos,
            },
        })
    }

    fn grain_sectors(&self) -> u64 {
        1
    }

    fn kind(&self) -> &'static str {
        "flat"
    }
}

/// A ZERO extent: no file, reads as zeros.
#[derive(Debug)]
pub struct ZeroExtent {
    /// Length in sectors.
    pub sectors: u64,
}

impl ExtentMap for ZeroExtent {
    fn sectors(&self) -> u64 {
        self.sectors
    }

    fn map(&mut self, _lba: u64, max: u64) -> Result<Run> {
        Ok(Run {
            sectors: max,
            source: Source::Zero,
        })
    }

    fn grain_sectors(&self) -> u64 {
        1
    }

    fn kind(&self) -> &'static str {
        "zero"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::MemSource;

    #[test]
    fn maps_whole_extent_as_one_run_and_rejects_truncation() {
        let mut files = FileTable::default();
        let id = files.add(Arc::new(MemSource::new("f", vec![1u8; 8192])));
        let mut e = FlatExtent::open(&files, id, 2, 14).unwrap();
        let r = e.map(0, 14).unwrap();
        assert_eq!(r.sectors, 14);
        assert_eq!(
            r.source,
            Source::Data {
                file: id,
                offset: 1024
            }
        );
        let r = e.map(3, 5).unwrap();
        assert_eq!(r.sectors, 5);
        assert_eq!(
            r.source,
            Source::Data {
                file: id,
                offset: 2560
            }
        );
        let err = FlatExtent::open(&files, id, 2, 15).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
