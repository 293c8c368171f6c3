//! The catalog file: a [`BaseImage`] on disk (formats/CATALOG.md). A backup writes it beside
//! its archive (`--catalog`), so that the next incremental can name the archive as its base
//! while the archive itself sits on tape or in object storage.
//!
//! Layout: a 64-byte header, the archive's manifest (JSON), one 48-byte entry per nonzero
//! chunk place in archive order, and the BLAKE3 of everything before it.

use std::io::Write;
use std::path::Path;

use super::image::{BaseImage, Place};
use crate::archive::format::{csum8, MAX_INDEX_ENTRIES, MAX_MANIFEST_BYTES};
use crate::archive::manifest::Manifest;
use crate::chunk::Digest;
use crate::error::{Error, Result};
use crate::input::source::{le_u32, le_u64};

/// blake3("vdar catalog v1")[..8] (checked by `tests::magic_is_derived`).
pub const CATALOG_MAGIC_V1: [u8; 8] = [0x48, 0x12, 0x5b, 0x74, 0x3a, 0xdf, 0x9f, 0xa1];
/// The catalog version this build writes and reads.
pub const CATALOG_VERSION: u32 = 1;
/// Size of the header.
pub const HEADER_BYTES: usize = 64;
/// Size of one entry.
pub const ENTRY_BYTES: usize = 48;
/// Size of the trailing BLAKE3.
pub const TRAILER_BYTES: usize = 32;

/// Encodes the catalog of the archive `id` with manifest `manifest` and image `places`.
pub fn encode(id: &[u8; 32], manifest: &Manifest, places: &[Place]) -> Vec<u8> {
    let json = serde_json::to_vec_pretty(manifest).expect("invariant: manifest serializes");
    let mut b = Vec::with_capacity(HEADER_BYTES + json.len() + places.len() * ENTRY_BYTES + 32);
    b.extend_from_slice(&CATALOG_MAGIC_V1);
    b.extend_from_slice(&CATALOG_VERSION.to_le_bytes());
    b.extend_from_slice(&(json.len() as u32).to_le_bytes());
    b.extend_from_slice(&(places.len() as u64).to_le_bytes());
    b.extend_from_slice(id);
    let c = csum8(&b);
    b.extend_from_slice(&c);
    b.extend_from_slice(&json);
    for (disk, offset, digest) in places {
        b.extend_from_slice(&disk.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&digest.0);
    }
    let h = *blake3::hash(&b).as_bytes();
    b.extend_from_slice(&h);
    b
}

/// Writes the catalog to `path` (through a temporary file renamed into place, so a failed
/// write never leaves a catalog that looks complete).
pub fn write(path: &Path, id: &[u8; 32], manifest: &Manifest, places: &[Place]) -> Result<()> {
    let bytes = encode(id, manifest, places);
    let tmp = path.with_extension("vcat.partial");
    let io = |e| Error::io(path, None, e);
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Whether `head` (the first bytes of a file) starts a catalog.
pub fn is_catalog(head: &[u8]) -> bool {
    head.starts_with(&CATALOG_MAGIC_V1)
}

/// The identity of the archive a catalog describes, from its header alone (`head`: at least
/// its first [`HEADER_BYTES`]): `None` when the header is not a catalog's or is damaged.
pub fn id_of(head: &[u8]) -> Option<[u8; 32]> {
    if head.len() < HEADER_BYTES || !is_catalog(head) || head[56..64] != csum8(&head[..56]) {
        return None;
    }
    head[24..56].try_into().ok()
}

/// Decodes a catalog read whole from `name`. Every length is checked against the file's
/// size before it is used, and the trailer's BLAKE3 before any entry is believed.
pub fn decode(b: &[u8], name: &Path) -> Result<BaseImage> {
    let bad = |at: u64, what: String| {
        Error::Usage(format!("catalog {}: byte {at}: {what}", name.display()))
    };
    if b.len() < HEADER_BYTES + TRAILER_BYTES || !is_catalog(b) {
        return Err(bad(0, "not a vdar catalog".into()));
    }
    if b[56..64] != csum8(&b[..56]) {
        return Err(bad(56, "header checksum mismatch".into()));
    }
    let version = le_u32(b, 8);
    if version != CATALOG_VERSION {
        return Err(bad(
            8,
            format!("catalog version {version} (this build reads {CATALOG_VERSION})"),
        ));
    }
    let json_len = u64::from(le_u32(b, 12));
    let count = le_u64(b, 16);
    if json_len > MAX_MANIFEST_BYTES || count > MAX_INDEX_ENTRIES {
        return Err(bad(
            12,
            format!("{json_len}-byte manifest or {count} entries out of range"),
        ));
    }
    let want = HEADER_BYTES as u64 + json_len + count * ENTRY_BYTES as u64 + TRAILER_BYTES as u64;
    if b.len() as u64 != want {
        return Err(bad(
            16,
            format!("{} bytes where the header implies {want}", b.len()),
        ));
    }
    let body = b.len() - TRAILER_BYTES;
    if blake3::hash(&b[..body]).as_bytes() != &b[body..] {
        return Err(bad(
            body as u64,
            "checksum mismatch (damaged catalog)".into(),
        ));
    }
    let mut id = [0u8; 32];
    id.copy_from_slice(&b[24..56]);
    let json_end = HEADER_BYTES + json_len as usize;
    let manifest: Manifest = serde_json::from_slice(&b[HEADER_BYTES..json_end])
        .map_err(|e| bad(HEADER_BYTES as u64, format!("manifest: {e}")))?;
    manifest
        .validate(HEADER_BYTES as u64)
        .map_err(|e| bad(HEADER_BYTES as u64, e.to_string()))?;
    let entries = &b[json_end..body];
    if let Some(i) = entries
        .chunks_exact(ENTRY_BYTES)
        .position(|e| e[4..8] != [0; 4])
    {
        let at = (json_end + i * ENTRY_BYTES + 4) as u64;
        return Err(bad(at, "reserved entry bytes are not zero".into()));
    }
    let places = entries.chunks_exact(ENTRY_BYTES).map(|e| {
        let mut d = [0u8; 32];
        d.copy_from_slice(&e[16..48]);
        (le_u32(e, 0), le_u64(e, 8), Digest(d))
    });
    BaseImage::new(id, manifest, places).map_err(|w| bad(json_end as u64, w))
}

/// Reads the catalog at `path`.
pub fn read(path: &Path) -> Result<BaseImage> {
    let b = std::fs::read(path).map_err(|e| Error::io(path, None, e))?;
    decode(&b, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_is_derived() {
        assert_eq!(
            CATALOG_MAGIC_V1,
            blake3::hash(b"vdar catalog v1").as_bytes()[..8]
        );
    }
}
