//! A chunk of a base chain as its records hold it, read but not yet decoded.
//!
//! Finding a base chunk needs the open base archives (one lock); decoding it (zstd, the base
//! patches laid over it, BLAKE3 at every step) needs nothing, so a restore finds a batch of
//! chunks under the lock and decodes them on all cores.

use crate::archive::format::RecordHeader;
use crate::archive::patch::Patch;
use crate::archive::reader::{decode_payload, plaintext};

/// A BasePatch record of a [`Recipe`], as stored.
#[derive(Debug, Clone)]
pub struct Layer {
    pub(super) header: RecordHeader,
    pub(super) stored: Vec<u8>,
    /// Names its archive in messages: `base <id> (<file>): `, or empty for the top archive.
    pub(super) prefix: String,
}

/// See the module docs: the Chunk record at the bottom of a chunk's lineage and the base
/// patches over it, oldest first.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The header of the Chunk record holding the bottom bytes.
    pub bottom: RecordHeader,
    /// Its payload, as stored.
    pub stored: Vec<u8>,
    /// Names the bottom record's archive in messages.
    pub prefix: String,
    pub(super) layers: Vec<Layer>,
}

impl Recipe {
    /// A Chunk record on its own (`prefix` names its archive).
    pub fn plain(bottom: RecordHeader, stored: Vec<u8>, prefix: String) -> Self {
        Recipe {
            bottom,
            stored,
            prefix,
            layers: Vec::new(),
        }
    }

    /// Whether the bytes are one stored Chunk record, to be copied as it is.
    pub fn is_plain(&self) -> bool {
        self.layers.is_empty()
    }

    /// Lays the BasePatch record `header`, `stored` (of the archive `prefix` names) over the
    /// bytes so far. Its base must be what the recipe yields; [`Self::into_bytes`] checks.
    pub fn patch(&mut self, header: RecordHeader, stored: Vec<u8>, prefix: String) {
        self.layers.push(Layer {
            header,
            stored,
            prefix,
        });
    }

    /// The bytes, checked against the newest record's digest. The error names the record's
    /// archive.
    ///
    /// With patches, only the result is hashed: it is what a restore writes, and a change a
    /// patch overwrote may be damaged below without harm. When the result is wrong, every
    /// record is checked in turn to name the damaged one.
    pub fn into_bytes(self) -> Result<Vec<u8>, String> {
        if self.layers.is_empty() {
            return decode_payload(&self.bottom, self.stored)
                .map_err(|w| format!("{}{w}", self.prefix));
        }
        match self.laid() {
            Ok(b)
                if self
                    .layers
                    .last()
                    .is_some_and(|t| hash_is(&b, &t.header.digest)) =>
            {
                Ok(b)
            }
            _ => self.into_checked(),
        }
    }

    /// [`Self::into_bytes`] with the decoded patch `top` laid over last, its result checked
    /// against `digest`: for a reader that decoded the newest archive's patch itself (one pass).
    pub fn under(self, top: &Patch<'_>, digest: &[u8; 32]) -> Result<Vec<u8>, String> {
        if let Ok(b) = self.laid() {
            let b = top.overlay(b);
            if hash_is(&b, digest) {
                return Ok(b);
            }
        }
        top.apply(self.into_checked()?, digest)
    }

    /// The patches laid over the bottom chunk, unchecked but for each patch's own digest.
    fn laid(&self) -> Result<Vec<u8>, String> {
        let mut bytes = match plaintext(&self.bottom, &self.stored)? {
            Some(b) => b,
            None => self.stored.clone(),
        };
        for l in &self.layers {
            let decoded = decode_payload(&l.header, l.stored.clone())?;
            let patch = Patch::parse(&decoded, l.header.raw_len as usize)?;
            if bytes.len() as u64 != l.header.raw_len {
                return Err("base patch over a chunk of another size".into());
            }
            bytes = patch.overlay(bytes);
        }
        Ok(bytes)
    }

    /// The bytes, each record checked against its digest: the bottom chunk, then each patch's
    /// result.
    fn into_checked(self) -> Result<Vec<u8>, String> {
        let mut bytes =
            decode_payload(&self.bottom, self.stored).map_err(|w| format!("{}{w}", self.prefix))?;
        for l in self.layers {
            let named = |w: String| format!("{}{w}", l.prefix);
            let decoded = decode_payload(&l.header, l.stored).map_err(named)?;
            let patch = Patch::parse(&decoded, l.header.raw_len as usize).map_err(named)?;
            if bytes.len() as u64 != l.header.raw_len {
                return Err(named("base patch over a chunk of another size".into()));
            }
            bytes = patch.apply(bytes, &l.header.digest).map_err(named)?;
        }
        Ok(bytes)
    }
}

fn hash_is(bytes: &[u8], digest: &[u8; 32]) -> bool {
    blake3::hash(bytes).as_bytes() == digest
}
