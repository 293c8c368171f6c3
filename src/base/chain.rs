//! The base archives a restore, verify or consolidate of an incremental reads BaseRefs from.
//!
//! Each base is a seekable archive (a file, or an object read with ranged GETs), opened once:
//! its layout is checked and its identity recomputed from its record headers, so an archive is
//! taken for a base only if it is that base.
//! A BaseRef names a place of the base's restored image; what the base holds there may itself
//! be a Ref (followed within the base) or a BaseRef (followed into the base's base), down to
//! the Chunk record whose bytes are checked against the digest the incremental recorded.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::{id_hex, id_short, BaseImage};
use crate::archive::format::{IndexEntry, RecordHeader, RecordKind};
use crate::archive::index::{read_raw_at, ReadSeek, SeekableArchive};
use crate::archive::manifest::{BaseLink, Manifest};
use crate::archive::reader::decode_ref;

use super::recipe::Layer;
pub use super::recipe::Recipe;
use crate::error::{Error, Result};

/// One base archive, open.
struct Opened {
    name: PathBuf,
    input: Box<dyn ReadSeek + Send>,
    manifest: Manifest,
    /// Its data records by chunk place.
    places: HashMap<(u32, u64), IndexEntry>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("name", &self.name)
            .field("places", &self.places.len())
            .finish_non_exhaustive()
    }
}

/// A base restored already: its raw images, and its catalog for the digests.
#[derive(Debug)]
struct Restored {
    /// The restore directory, for messages.
    name: PathBuf,
    image: BaseImage,
    /// Per disk of the base: its raw image, if restored.
    files: Vec<Option<(PathBuf, File)>>,
}

/// The base archives given to a restore, by identity, and bases given as the raw images a
/// restore of them wrote (a chain from tape: one pass per archive, oldest first).
#[derive(Debug, Default)]
pub struct BaseChain {
    archives: HashMap<[u8; 32], Opened>,
    restored: HashMap<[u8; 32], Restored>,
}

/// Parses an identity written as 64 hex digits.
pub fn parse_id(s: &str) -> Option<[u8; 32]> {
    if !crate::archive::manifest::is_archive_id(s) {
        return None;
    }
    let mut id = [0u8; 32];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(id)
}

impl BaseChain {
    /// Opens the archives at `paths`: each must be an intact seekable archive.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut chain = BaseChain::default();
        for p in paths {
            chain.add(p)?;
        }
        Ok(chain)
    }

    fn add(&mut self, path: &Path) -> Result<()> {
        let file = File::open(path).map_err(|e| Error::io(path, None, e))?;
        self.add_archive(path, Box::new(file))
    }

    /// Adds the base archive `input`, named `name` in messages. Its layout is checked and its
    /// identity recomputed from its record headers (every header is read).
    pub fn add_archive(&mut self, name: &Path, mut input: Box<dyn ReadSeek + Send>) -> Result<()> {
        let named = |e: Error| Error::Usage(format!("base {}: {e}", name.display()));
        let mut ar = SeekableArchive::open(&mut *input).map_err(named)?;
        ar.check_layout().map_err(named)?;
        let id = ar.meta_hash(|_| {}).map_err(named)?;
        if id != ar.footer.meta_hash {
            return Err(Error::Usage(format!(
                "base {}: its record headers do not hash to the footer's identity (damaged)",
                name.display()
            )));
        }
        let places = ar
            .index
            .iter()
            .filter(|e| e.kind.is_data())
            .map(|e| ((e.disk, e.offset), *e))
            .collect();
        let manifest = ar.manifest.clone();
        self.archives.insert(
            id,
            Opened {
                name: name.to_path_buf(),
                input,
                manifest,
                places,
            },
        );
        Ok(())
    }

    /// Adds the base described by `image` (its catalog) as restored: `files` are its raw
    /// images in disk order (`None`: a disk not restored). Every chunk read from them is checked
    /// against the digest the incremental recorded, so an image changed since is found out.
    pub fn add_restored(
        &mut self,
        dir: &Path,
        image: BaseImage,
        files: Vec<Option<(PathBuf, File)>>,
    ) {
        self.restored.insert(
            image.id,
            Restored {
                name: dir.to_path_buf(),
                image,
                files,
            },
        );
    }

    /// Checks that every archive `link` needs (the base and its lineage) was given; the error
    /// names the first one missing by identity and creation time. A restored base ends the
    /// chain: its images hold everything older.
    pub fn check(&self, archive: &str, link: &BaseLink) -> Result<()> {
        let mut need = vec![(link.id.clone(), Some(link.created))];
        need.extend(link.lineage.iter().rev().map(|l| (l.clone(), None)));
        for (id, created) in need {
            let id_bytes = parse_id(&id);
            if id_bytes.is_some_and(|i| self.restored.contains_key(&i)) {
                return Ok(());
            }
            let known = id_bytes.is_some_and(|i| self.archives.contains_key(&i));
            if !known {
                let when = created
                    .map(|c| {
                        let (y, mo, d, h, mi, s) = crate::clock::utc_fields(c);
                        format!(" (created {y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC)")
                    })
                    .unwrap_or_default();
                return Err(Error::Usage(format!(
                    "{archive} is an incremental: it needs base archive {id}{when}; give it \
                     with --base (every archive of the chain back to the full one)"
                )));
            }
        }
        Ok(())
    }

    /// The plaintext at `src` (disk, offset) of the restored image of base `id`, checked
    /// against `digest` and `len`. `Ok(Err(why))`: the base cannot supply it (damaged, or
    /// the place is not what the incremental recorded); the reason names the base.
    pub fn fetch(
        &mut self,
        id: &[u8; 32],
        src: (u32, u64),
        len: u64,
        digest: &[u8; 32],
    ) -> Result<std::result::Result<Vec<u8>, String>> {
        Ok(self
            .recipe(id, src, len, digest)?
            .and_then(Recipe::into_bytes))
    }

    /// [`Self::fetch`] without decoding: the records that hold the bytes, as stored. Nothing
    /// is checked yet; [`Recipe::into_bytes`] checks the bytes against `digest`.
    pub fn recipe(
        &mut self,
        id: &[u8; 32],
        src: (u32, u64),
        len: u64,
        digest: &[u8; 32],
    ) -> Result<std::result::Result<Recipe, String>> {
        let mut layers = Vec::new();
        let (mut id, mut src, mut digest) = (*id, src, *digest);
        // Each patch goes to an older archive, so a chain of N archives holds fewer than N.
        for _ in 0..=self.archives.len() {
            let (h, stored, prefix, next) = match self.record(&id, src, len, &digest)? {
                Ok(r) => r,
                Err(why) => return Ok(Err(why)),
            };
            if h.kind == RecordKind::Chunk {
                layers.reverse();
                return Ok(Ok(Recipe {
                    bottom: h,
                    stored,
                    prefix,
                    layers,
                }));
            }
            let fail = |w: &str| Ok(Err(format!("{prefix}{w}")));
            let checked = crate::archive::patch::checked_base(&stored, h.offset, len as usize);
            let (base_src, base_digest) = match checked {
                Ok(b) => b,
                Err(w) => return fail(&w),
            };
            let Some(next) = next else {
                return fail("base patch without a base");
            };
            layers.push(Layer {
                header: h,
                stored,
                prefix,
            });
            (id, src, digest) = (next, base_src, base_digest);
        }
        Ok(Err("base patches loop".into()))
    }

    /// The Chunk or BasePatch record that holds the `len` bytes `digest` at `src` of the
    /// restored image of base `id`, following Refs within an archive and BaseRefs into older
    /// ones; with the prefix naming its archive in messages and that archive's own base.
    #[allow(clippy::type_complexity)]
    fn record(
        &mut self,
        id: &[u8; 32],
        src: (u32, u64),
        len: u64,
        digest: &[u8; 32],
    ) -> Result<std::result::Result<(RecordHeader, Vec<u8>, String, Option<[u8; 32]>), String>>
    {
        let (mut id, mut src) = (*id, src);
        // A Ref names a Chunk record only (formats/ARCHIVE.md, "Base patches").
        let mut via_ref = false;
        // Each hop goes to an earlier place of the same archive or to an older archive.
        for _ in 0..=(self.archives.len() + 1) * 2 + 1 {
            if let Some(r) = self.restored.get(&id) {
                return r.read(src, len, digest);
            }
            let Some(a) = self.archives.get_mut(&id) else {
                return Ok(Err(format!("base archive {} is not given", id_hex(&id))));
            };
            let prefix = format!("base {} ({}): ", id_short(&id), a.name.display());
            let what = |w: &str| format!("{prefix}{w}");
            let Some(e) = a.places.get(&src).copied() else {
                return Ok(Err(what(&format!(
                    "no chunk at disk {} offset {:#x}",
                    src.0, src.1
                ))));
            };
            let (h, payload) = match read_raw_at(&mut *a.input, &e)? {
                Ok(r) => r,
                Err(w) => return Ok(Err(what(&w))),
            };
            if h.raw_len != len || h.digest != *digest {
                return Ok(Err(what(&format!(
                    "the chunk at disk {} offset {:#x} is not the one recorded",
                    src.0, src.1
                ))));
            }
            let next = a.manifest.base.as_ref().and_then(|b| parse_id(&b.id));
            match h.kind {
                RecordKind::Chunk => return Ok(Ok((h, payload, prefix, next))),
                RecordKind::Ref => match decode_ref(&payload).filter(|s| *s < src) {
                    Some(s) => (src, via_ref) = (s, true),
                    None => return Ok(Err(what("bad reference"))),
                },
                RecordKind::BasePatch if via_ref => {
                    return Ok(Err(what("reference to a base patch")));
                }
                RecordKind::BasePatch => return Ok(Ok((h, payload, prefix, next))),
                _ => match (next, decode_ref(&payload)) {
                    (Some(n), Some(s)) => (id, src, via_ref) = (n, s, false),
                    _ => return Ok(Err(what("bad base reference"))),
                },
            }
        }
        Ok(Err("base references loop".into()))
    }

    /// Number of bases given.
    pub fn len(&self) -> usize {
        self.archives.len() + self.restored.len()
    }

    /// Whether none was given.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Restored {
    /// The chunk at `src` of the restored image, as a Chunk record of codec none (decoding it
    /// checks its BLAKE3).
    #[allow(clippy::type_complexity)]
    fn read(
        &self,
        src: (u32, u64),
        len: u64,
        digest: &[u8; 32],
    ) -> Result<std::result::Result<(RecordHeader, Vec<u8>, String, Option<[u8; 32]>), String>>
    {
        let prefix = format!(
            "base {} (restored in {}): ",
            id_short(&self.image.id),
            self.name.display()
        );
        let what = |w: String| Ok(Err(format!("{prefix}{w}")));
        if self.image.at(src.0, src.1).map(|d| d.0) != Some(*digest)
            || self.image.chunk_len(src.0, src.1) != len
        {
            return what(format!(
                "its catalog has no such chunk at disk {} offset {:#x}",
                src.0, src.1
            ));
        }
        let Some(Some((path, f))) = self.files.get(src.0 as usize) else {
            return what(format!("disk {} was not restored there", src.0));
        };
        let mut buf = vec![0u8; len as usize];
        use std::os::unix::fs::FileExt;
        if let Err(e) = f.read_exact_at(&mut buf, src.1) {
            return Err(Error::io(path, Some(src.1), e));
        }
        let h = RecordHeader {
            kind: RecordKind::Chunk,
            codec: crate::archive::format::Codec::None,
            disk: src.0,
            offset: src.1,
            stored_len: len,
            raw_len: len,
            digest: *digest,
        };
        // A restored image holds everything older: the chain ends here.
        Ok(Ok((h, buf, prefix, None)))
    }
}
