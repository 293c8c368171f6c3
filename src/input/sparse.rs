//! Placeholder until the sparse reader lands: refuses every file.

use super::{ExtentMap, FileId, FileTable, Run};
use crate::error::{Error, Result};

/// Placeholder.
#[derive(Debug)]
pub struct SparseExtent;

impl SparseExtent {
    /// Placeholder.
    pub fn open(files: &FileTable, file: FileId) -> Result<Self> {
        Err(Error::unsupported(files.get(file).path(), "sparse extents"))
    }
    /// Placeholder.
    pub fn capacity_sectors(&self) -> u64 {
        0
    }
}

impl ExtentMap for SparseExtent {
    fn sectors(&self) -> u64 {
        0
    }
    fn map(&mut self, _lba: u64, _max: u64) -> Result<Run> {
        unreachable!()
    }
    fn grain_sectors(&self) -> u64 {
        1
    }
    fn kind(&self) -> &'static str {
        "sparse"
    }
}

impl SparseExtent {
    /// Placeholder.
    pub fn embedded_descriptor(&self) -> Result<Option<String>> {
        Ok(None)
    }
}
