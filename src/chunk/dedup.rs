//! The dedup table: digest of every stored chunk → where it was stored.
//!
//! One table per archive, shared by all disks and VMs, so a chunk repeated anywhere in the
//! archive is stored once. It is the only structure whose size grows with the input: per unique
//! stored chunk, a 32-byte digest + 16-byte location (u32 disk padded, u64 offset) + 1 control
//! byte of hashbrown, i.e. 49 bytes at full load and up to ~112 bytes just after a resize
//! (load 7/16). At the default 4 MiB chunk size that is ≤ 28 MiB per TiB of unique data.

use std::collections::HashMap;

use super::Digest;

/// Where a chunk was stored: disk ordinal and byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLoc {
    /// Disk ordinal.
    pub disk: u32,
    /// Byte offset in that disk.
    pub offset: u64,
}

/// Digest → first location. See the module docs for its memory cost.
#[derive(Debug, Default)]
pub struct DedupTable {
    map: HashMap<Digest, ChunkLoc>,
}

impl DedupTable {
    /// Returns the earlier location of `digest`, or records `loc` as its first and returns None.
    pub fn check_insert(&mut self, digest: Digest, loc: ChunkLoc) -> Option<ChunkLoc> {
        match self.map.entry(digest) {
            std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(loc);
                None
            }
        }
    }

    /// Where `digest` was stored, if it was.
    pub fn get(&self, digest: &Digest) -> Option<ChunkLoc> {
        self.map.get(digest).copied()
    }

    /// Whether `digest` was stored already.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.map.contains_key(digest)
    }

    /// Unique chunks stored.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing was stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
