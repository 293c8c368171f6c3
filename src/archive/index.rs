//! Random access through the footer and the index, for seekable archives.
//!
//! [`SeekableArchive::open`] reads the file header and manifest at the front, the footer at the
//! end and the index it points to, checking each before trusting the next: the footer's
//! checksum and its own position, the index record's header checksum, its length against the
//! space between index and footer, and the index plaintext's BLAKE3. Records are then read
//! one at a time with [`SeekableArchive::read_record`]. The metadata hash over all record
//! headers is not checked here (that needs every header); `verify` checks it.

use std::io::{Read, Seek, SeekFrom};

use super::format::*;
use super::manifest::Manifest;
use super::reader::{decode_payload, StreamReader};
use crate::error::{Error, Result};

/// One record read through the index: header and checked plaintext, or what is wrong with it.
pub type RecordRead = std::result::Result<(RecordHeader, Vec<u8>), String>;

/// Something that can be read and seeked (a file, a cursor).
pub trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// An archive opened through its footer and index.
pub struct SeekableArchive<'a> {
    input: &'a mut dyn ReadSeek,
    /// The manifest.
    pub manifest: Manifest,
    /// The footer.
    pub footer: Footer,
    /// The index entries, in stream order.
    pub index: Vec<IndexEntry>,
    /// Archive length in bytes, up to the end of the footer (zero bytes after it, a tape
    /// copy's padding, are not part of it).
    pub len: u64,
    /// Stream offset of the first record after the manifest.
    pub records_start: u64,
    /// The file header.
    pub header: FileHeader,
    /// The front manifest's digest (its copy must match).
    manifest_digest: [u8; 32],
    /// Stream offset just past the index record.
    index_end: u64,
}

fn io(at: u64, e: std::io::Error) -> Error {
    Error::io("archive input", Some(at), e)
}

pub(super) fn read_at(input: &mut dyn ReadSeek, at: u64, buf: &mut [u8]) -> Result<()> {
    input.seek(SeekFrom::Start(at)).map_err(|e| io(at, e))?;
    input.read_exact(buf).map_err(|e| io(at, e))
}

impl<'a> SeekableArchive<'a> {
    /// Opens `input`. Fails when the front, the footer or the index is damaged (a salvaging
    /// caller then falls back to a stream pass).
    pub fn open(input: &'a mut dyn ReadSeek) -> Result<Self> {
        input.seek(SeekFrom::Start(0)).map_err(|e| io(0, e))?;
        let front = StreamReader::new(&mut *input, false)?;
        let records_start = front.position();
        let header = front.header;
        let manifest_digest = front.manifest_digest();
        let manifest = front.manifest;
        let len = input.seek(SeekFrom::End(0)).map_err(|e| io(0, e))?;
        let footer = footer_of(input, len)?;
        let fat = footer.footer_offset;
        let iat = footer.index_offset;
        if iat + (RECORD_HEADER_BYTES as u64) > fat {
            return Err(Error::archive(fat, "index offset outside the archive"));
        }
        let mut hb = [0u8; RECORD_HEADER_BYTES];
        read_at(input, iat, &mut hb)?;
        let h = RecordHeader::decode(&hb, iat)?;
        if h.kind != RecordKind::Index {
            return Err(Error::archive(iat, "footer does not point at the index"));
        }
        // Bounds before allocating: the payload lies between the header and the footer, and
        // every entry stands for a record of at least a header's size before the index.
        let room = fat - iat - RECORD_HEADER_BYTES as u64;
        let max_raw = iat / RECORD_HEADER_BYTES as u64 * INDEX_ENTRY_BYTES as u64;
        if h.stored_len > room || h.raw_len > max_raw {
            return Err(Error::archive(
                iat,
                format!(
                    "index of {}/{} bytes does not fit before the footer",
                    h.stored_len, h.raw_len
                ),
            ));
        }
        let mut payload = vec![0u8; h.stored_len as usize];
        read_at(input, iat + RECORD_HEADER_BYTES as u64, &mut payload)?;
        let raw =
            decode_payload(&h, payload).map_err(|w| Error::archive(iat, format!("index: {w}")))?;
        let mut index = Vec::with_capacity(raw.len() / INDEX_ENTRY_BYTES);
        for (i, e) in raw.chunks_exact(INDEX_ENTRY_BYTES).enumerate() {
            let e = IndexEntry::decode(e.try_into().expect("len"), iat)?;
            let end = e
                .record_offset
                .checked_add(u64::from(e.stored_len) + RECORD_HEADER_BYTES as u64);
            if end.is_none_or(|end| end > iat) {
                return Err(Error::archive(
                    iat,
                    format!("index entry {i} points outside the archive"),
                ));
            }
            index.push(e);
        }
        Ok(SeekableArchive {
            input,
            manifest,
            footer,
            index,
            len: fat + FOOTER_BYTES as u64,
            records_start,
            header,
            manifest_digest,
            index_end: iat + RECORD_HEADER_BYTES as u64 + h.stored_len,
        })
    }

    /// Checks that the index and the disk-end records account for every byte between the
    /// manifest and the index, in the order the format prescribes: per VM its files, then per
    /// disk its Chunk and Ref records at ascending chunk places followed by its DiskEnd record,
    /// whose record count must match. Each DiskEnd is read (96 bytes a disk). The footer's
    /// record count must agree too. Returns each disk's data record count.
    ///
    /// An index that passes has no room left for a record it does not list, so a chunk place
    /// it does not name is zero. `Err` names the first disagreement.
    pub fn check_layout(&mut self) -> Result<Vec<u64>> {
        let mut walk = LayoutWalk {
            pos: self.records_start,
            next: 0,
        };
        let mut counts = Vec::new();
        let m = self.manifest.clone();
        for (v, vm) in m.vms.iter().enumerate() {
            for (f, file) in vm.files.iter().enumerate() {
                let e = walk.take(&self.index, |e| {
                    e.kind == RecordKind::File
                        && e.disk as usize == v
                        && e.offset == f as u64
                        && u64::from(e.raw_len) == file.size
                })?;
                walk.pos += RECORD_HEADER_BYTES as u64 + u64::from(e.stored_len);
            }
            for d in &vm.disks {
                let cap = d.meta.capacity;
                let mut count = 0u64;
                let mut next_place = 0u64;
                while let Some(e) = self
                    .index
                    .get(walk.next)
                    .filter(|e| e.kind.is_data() && e.disk == d.id)
                {
                    let fits = e.offset >= next_place
                        && e.offset % m.chunk_size == 0
                        && e.offset < cap
                        && u64::from(e.raw_len) == m.chunk_size.min(cap - e.offset);
                    walk.take(&self.index, |_| fits)?;
                    walk.pos += RECORD_HEADER_BYTES as u64 + u64::from(e.stored_len);
                    next_place = e.offset + m.chunk_size;
                    count += 1;
                }
                self.check_disk_end(walk.pos, d.id, cap, count)?;
                walk.pos += RECORD_HEADER_BYTES as u64 + DISK_END_PAYLOAD_BYTES;
                counts.push(count);
            }
        }
        if walk.next != self.index.len() || walk.pos != self.footer.index_offset {
            return Err(Error::archive(
                walk.pos,
                format!(
                    "index entry {} of {} or bytes up to the index at {:#x} are not accounted for",
                    walk.next,
                    self.index.len(),
                    self.footer.index_offset
                ),
            ));
        }
        self.check_tail()?;
        let copy = u64::from(self.header.incompat_features & INCOMPAT_MANIFEST_COPY != 0);
        let want = 2 + copy + self.index.len() as u64 + counts.len() as u64;
        if self.footer.record_count != want {
            return Err(Error::archive(
                self.len - FOOTER_BYTES as u64,
                format!(
                    "footer counts {} records, index and disk ends {want}",
                    self.footer.record_count
                ),
            ));
        }
        Ok(counts)
    }

    /// Checks what lies between the index and the footer: the manifest copy (with its
    /// feature bit) and zero padding up to the footer, exactly.
    fn check_tail(&mut self) -> Result<()> {
        let fat = self.len - FOOTER_BYTES as u64;
        let mut at = self.index_end;
        if self.header.incompat_features & INCOMPAT_MANIFEST_COPY != 0 {
            let mut hb = [0u8; RECORD_HEADER_BYTES];
            if at + RECORD_HEADER_BYTES as u64 > fat {
                return Err(Error::archive(at, "manifest copy missing"));
            }
            read_at(self.input, at, &mut hb)?;
            let h = RecordHeader::decode(&hb, at)?;
            let start = at + RECORD_HEADER_BYTES as u64;
            let fits = h.kind == RecordKind::Manifest
                && h.offset == MANIFEST_COPY
                && h.digest == self.manifest_digest
                && h.stored_len <= fat - start;
            if !fits {
                return Err(Error::archive(
                    at,
                    "manifest copy does not match the manifest",
                ));
            }
            let mut json = vec![0u8; h.stored_len as usize];
            read_at(self.input, start, &mut json)?;
            if blake3::hash(&json).as_bytes() != &self.manifest_digest {
                return Err(Error::archive(at, "manifest copy damaged"));
            }
            at = start + h.stored_len;
        }
        let pad = footer_padding(at, self.header.block_size);
        if at + pad != fat {
            return Err(Error::archive(
                at,
                format!(
                    "{} bytes before the footer where {pad} are expected",
                    fat - at
                ),
            ));
        }
        let mut zeros = vec![0u8; pad as usize];
        read_at(self.input, at, &mut zeros)?;
        if let Some(i) = zeros.iter().position(|&b| b != 0) {
            return Err(Error::archive(
                at + i as u64,
                "padding before the footer is not zero",
            ));
        }
        Ok(())
    }

    /// Reads and checks the DiskEnd record expected at `at`.
    fn check_disk_end(&mut self, at: u64, disk: u32, capacity: u64, count: u64) -> Result<()> {
        let len = RECORD_HEADER_BYTES + DISK_END_PAYLOAD_BYTES as usize;
        if at + len as u64 > self.footer.index_offset {
            return Err(Error::archive(
                at,
                format!("disk end of disk {disk} missing"),
            ));
        }
        let mut b = vec![0u8; len];
        read_at(self.input, at, &mut b)?;
        let hb: &[u8; RECORD_HEADER_BYTES] = b[..RECORD_HEADER_BYTES].try_into().expect("len");
        let h = RecordHeader::decode(hb, at)?;
        let payload = b[RECORD_HEADER_BYTES..].to_vec();
        let ok = h.kind == RecordKind::DiskEnd
            && h.disk == disk
            && h.offset == capacity
            && h.stored_len == DISK_END_PAYLOAD_BYTES;
        let data = match decode_payload(&h, payload) {
            Ok(d) if ok => d,
            _ => {
                return Err(Error::archive(
                    at,
                    format!("disk end of disk {disk} damaged"),
                ))
            }
        };
        let claimed = u64::from_le_bytes(data[..8].try_into().expect("16-byte payload"));
        if claimed != count {
            return Err(Error::archive(
                at,
                format!("disk end of disk {disk} counts {claimed} records, the index {count}"),
            ));
        }
        Ok(())
    }

    /// Reads the header and raw payload of the record `e` names, checked against the entry.
    fn read_raw(&mut self, e: &IndexEntry) -> Result<RecordRead> {
        read_raw_at(self.input, e)
    }

    /// [`Self::read_record`] without decoding: the header and the stored payload.
    pub fn read_raw_entry(&mut self, e: &IndexEntry) -> Result<RecordRead> {
        self.read_raw(e)
    }

    /// The BLAKE3 of the file header and every record header in stream order, recomputed from
    /// the archive: what the footer's `meta_hash` claims. Call after [`Self::check_layout`],
    /// which makes every record between the manifest and the index one the walk meets.
    /// An incremental names its base by this hash, so a base is never taken on its footer's
    /// word. Calls `each` with every record header met.
    pub fn meta_hash(&mut self, mut each: impl FnMut(&RecordHeader)) -> Result<[u8; 32]> {
        let mut fh = [0u8; FILE_HEADER_BYTES];
        read_at(self.input, 0, &mut fh)?;
        let mut meta = blake3::Hasher::new();
        meta.update(&fh);
        let mut at = FILE_HEADER_BYTES as u64;
        let copy = self.header.incompat_features & INCOMPAT_MANIFEST_COPY != 0;
        let end = self.index_end;
        let mut records = 0u64;
        loop {
            let mut hb = [0u8; RECORD_HEADER_BYTES];
            read_at(self.input, at, &mut hb)?;
            let h = RecordHeader::decode(&hb, at)?;
            meta.update(&hb);
            each(&h);
            records += 1;
            at += h.record_len();
            if (at == end && !copy) || (at > end && h.kind == RecordKind::Manifest) {
                break;
            }
            if records > self.footer.record_count || at >= self.len {
                return Err(Error::archive(at, "records run past the footer"));
            }
        }
        Ok(*meta.finalize().as_bytes())
    }
}

/// What an archive says of itself without its index: the manifest (checked against its
/// digest at the front) and the footer, or why there is no good one (an archive still being
/// written, or cut short). Two small reads besides the front, so that an inventory of many
/// archives in object storage costs a few requests each.
pub struct Peek {
    /// The manifest.
    pub manifest: Manifest,
    /// The footer (its `meta_hash` is the archive's identity as the archive claims it).
    pub footer: Result<Footer>,
    /// The input's length in bytes.
    pub len: u64,
}

/// Reads the front and the footer of `input` ([`Peek`]). `Err` when the front is damaged.
pub fn peek(input: &mut dyn ReadSeek) -> Result<Peek> {
    input.seek(SeekFrom::Start(0)).map_err(|e| io(0, e))?;
    let manifest = StreamReader::new(&mut *input, false)?.manifest;
    let len = input.seek(SeekFrom::End(0)).map_err(|e| io(0, e))?;
    let footer = footer_of(input, len);
    Ok(Peek {
        manifest,
        footer,
        len,
    })
}

fn footer_of(input: &mut dyn ReadSeek, len: u64) -> Result<Footer> {
    let min = (FILE_HEADER_BYTES + 2 * RECORD_HEADER_BYTES + FOOTER_BYTES) as u64;
    if len < min {
        return Err(Error::archive(len, "archive too short for a footer"));
    }
    let fat = find_footer(input, len)?;
    let mut fb = [0u8; FOOTER_BYTES];
    read_at(input, fat, &mut fb)?;
    Footer::decode(&fb, fat)
}

/// Reads the header and raw payload of the record `e` names from `input`, checked against the
/// entry. `Ok(Err(what))` is a damaged record; `Err` an I/O failure.
pub fn read_raw_at(input: &mut dyn ReadSeek, e: &IndexEntry) -> Result<RecordRead> {
    let mut hb = [0u8; RECORD_HEADER_BYTES];
    read_at(input, e.record_offset, &mut hb)?;
    let h = match RecordHeader::decode(&hb, e.record_offset) {
        Ok(h) => h,
        Err(err) => return Ok(Err(err.to_string())),
    };
    if h.kind != e.kind
        || h.disk != e.disk
        || h.offset != e.offset
        || h.stored_len != u64::from(e.stored_len)
        || h.raw_len != u64::from(e.raw_len)
    {
        return Ok(Err("record does not match its index entry".into()));
    }
    let mut payload = vec![0u8; h.stored_len as usize];
    read_at(
        input,
        e.record_offset + RECORD_HEADER_BYTES as u64,
        &mut payload,
    )?;
    Ok(Ok((h, payload)))
}

impl SeekableArchive<'_> {
    /// Reads the record `e` names and returns its header and checked plaintext (for Ref, its
    /// 12-byte payload). `Ok(Err(what))` is a damaged record; `Err` an I/O failure.
    pub fn read_record(&mut self, e: &IndexEntry) -> Result<RecordRead> {
        Ok(self
            .read_raw(e)?
            .and_then(|(h, payload)| decode_payload(&h, payload).map(|d| (h, d))))
    }

    /// [`Self::read_record`] for several entries: the reads stay sequential (one archive
    /// handle), the decompression and checksums run on all cores. Restore's CPU time is
    /// almost all decompression, so this is what lets it outrun a single-threaded `zstd -d`.
    pub fn read_records(&mut self, es: &[IndexEntry]) -> Result<Vec<RecordRead>> {
        Ok(decode_raws(self.read_raws(es)?))
    }

    /// The first half of [`Self::read_records`]: headers and raw payloads, not yet decoded, so
    /// the caller can decode them elsewhere ([`decode_raws`]) while it does other work.
    pub fn read_raws(&mut self, es: &[IndexEntry]) -> Result<Vec<RecordRead>> {
        es.iter().map(|e| self.read_raw(e)).collect()
    }
}

/// Most zero bytes after the footer that a reader passes over: a tape copied with its last
/// block padded (`dd conv=sync`, a drive's fixed block) ends in fewer.
const MAX_TRAILING_ZEROS: u64 = 16 << 20;

/// Where the footer starts: it ends the file, or is followed only by zero bytes. The first
/// position (from the end) where a footer magic starts and everything after the footer is zero.
fn find_footer(input: &mut dyn ReadSeek, len: u64) -> Result<u64> {
    let last = len - FOOTER_BYTES as u64;
    // The usual case, with one small read: the footer ends the file.
    let mut magic = [0u8; 8];
    read_at(input, last, &mut magic)?;
    if magic == FOOTER_MAGIC_V1 {
        return Ok(last);
    }
    let span = (FOOTER_BYTES as u64 + MAX_TRAILING_ZEROS).min(len);
    let mut tail = vec![0u8; span as usize];
    read_at(input, len - span, &mut tail)?;
    let zeros = tail.iter().rev().take_while(|&&b| b == 0).count();
    // The footer itself may end in zero bytes: try every start from the end of the file back
    // to where the non-zero bytes end, nearest the end first.
    let nonzero_end = span as usize - zeros;
    for end in (nonzero_end..=span as usize).rev() {
        if end < FOOTER_BYTES {
            break;
        }
        if tail[end - FOOTER_BYTES..end - FOOTER_BYTES + 8] == FOOTER_MAGIC_V1 {
            return Ok(len - span + (end - FOOTER_BYTES) as u64);
        }
    }
    Ok(last)
}

/// A walk through the index in layout order.
struct LayoutWalk {
    /// Where the next record must start.
    pos: u64,
    /// The next index entry.
    next: usize,
}

impl LayoutWalk {
    /// Takes the next entry, which must start at `pos` and satisfy `fits`.
    fn take(
        &mut self,
        index: &[IndexEntry],
        fits: impl Fn(&IndexEntry) -> bool,
    ) -> Result<IndexEntry> {
        match index.get(self.next) {
            Some(e) if e.record_offset == self.pos && fits(e) => {
                self.next += 1;
                Ok(*e)
            }
            Some(e) => Err(Error::archive(
                self.pos,
                format!(
                    "index entry {} ({:?} of disk or VM {} at {:#x}, record at {:#x}) is not \
                     the record expected here",
                    self.next, e.kind, e.disk, e.offset, e.record_offset
                ),
            )),
            None => Err(Error::archive(
                self.pos,
                format!(
                    "index ends after {} entries; more records expected",
                    self.next
                ),
            )),
        }
    }
}

/// The second half of [`SeekableArchive::read_records`]: decompress and check raw records on
/// all cores.
pub fn decode_raws(raw: Vec<RecordRead>) -> Vec<RecordRead> {
    use rayon::prelude::*;
    raw.into_par_iter()
        .map(|r| r.and_then(|(h, payload)| decode_payload(&h, payload).map(|d| (h, d))))
        .collect()
}
