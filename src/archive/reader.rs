//! The one-pass archive reader: turns a byte stream into checked records, resynchronising after
//! damage.
//!
//! [`StreamReader`] reads the file header and the manifest eagerly, then yields [`Event`]s. It
//! never seeks, so it works on pipes and tape. Every record header is checked (magic, checksum,
//! then its fields against the manifest) before its lengths are used; a payload is read in
//! pieces so that a lying length in a short input never causes a large allocation; plaintext is
//! decompressed with its declared size as the bound and its blake3 compared with the header.
//!
//! Damage handling: when a header does not check out, the reader scans forward for the next
//! record (or footer) magic whose header checksum holds, and reports the skipped bytes as
//! [`Event::Skipped`]. A record whose header holds but whose payload is bad is
//! [`Event::Damaged`]: its header still says exactly which disk bytes were lost.

use std::io::Read;
use std::ops::ControlFlow;

use super::format::*;
use super::manifest::Manifest;
use crate::error::{Error, Result};

/// A record whose header and payload checked out.
#[derive(Debug)]
pub struct Record {
    /// Stream offset of the record header.
    pub at: u64,
    /// The header.
    pub header: RecordHeader,
    /// The plaintext (empty when the reader was told not to decode; for Ref, the 12-byte
    /// payload).
    pub data: Vec<u8>,
}

/// What the reader found next.
#[derive(Debug)]
pub enum Event {
    /// A good record.
    Record(Record),
    /// A record with a good header and a bad or missing payload.
    Damaged {
        /// Stream offset of the record header.
        at: u64,
        /// The (trusted) header.
        header: RecordHeader,
        /// What is wrong.
        what: String,
    },
    /// Bytes that are not a record; the reader resumed at `to`.
    Skipped {
        /// First unreadable byte.
        from: u64,
        /// Where reading resumed.
        to: u64,
        /// What the first bad header looked like.
        what: String,
    },
    /// The stream ended before the footer. Last event.
    Truncated {
        /// Stream length.
        at: u64,
    },
    /// The footer. Last event. `problem` says why the metadata check failed, if it did.
    Footer {
        /// Stream offset of the footer.
        at: u64,
        /// The footer, if it decoded.
        footer: Footer,
        /// A failed cross-check (record count, index position, metadata hash).
        problem: Option<String>,
    },
}

/// Buffered forward-only input with a stream position and look-ahead for resynchronisation.
struct Input<'a> {
    src: &'a mut dyn Read,
    buf: Vec<u8>,
    head: usize,
    /// End of the valid bytes in `buf`.
    end: usize,
    /// Stream offset of `buf[head]`.
    pos: u64,
    eof: bool,
    /// The last 7 bytes consumed (fewer at the start, zero-padded in front): where a record
    /// magic may have begun that an unchecked payload swallowed.
    last7: [u8; 7],
}

/// Bytes requested from the source per read.
const READ_BYTES: usize = 256 << 10;

impl Input<'_> {
    fn avail(&self) -> usize {
        self.end - self.head
    }

    /// Buffers at least `n` bytes unless the stream ends first; returns what is buffered.
    /// Valid bytes are `buf[head..end]`; the rest of `buf` is reusable space, zeroed only when
    /// the buffer grows, so many tiny reads from a pipe cost no more than a few large ones.
    fn fill(&mut self, n: usize) -> Result<usize> {
        while self.avail() < n && !self.eof {
            if self.end == self.buf.len() {
                if self.head > 0 {
                    self.buf.copy_within(self.head..self.end, 0);
                    self.end -= self.head;
                    self.head = 0;
                }
                let want = self.end + READ_BYTES.max(n - self.avail());
                if self.buf.len() < want {
                    self.buf.resize(want, 0);
                }
            }
            let got = loop {
                match self.src.read(&mut self.buf[self.end..]) {
                    Ok(g) => break g,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::io("archive input", Some(self.pos), e)),
                }
            };
            self.end += got;
            if got == 0 {
                self.eof = true;
            }
        }
        Ok(self.avail())
    }

    fn peek(&self, n: usize) -> &[u8] {
        &self.buf[self.head..self.head + n]
    }

    fn consume(&mut self, n: usize) {
        let take = n.min(7);
        self.last7.copy_within(take.., 0);
        self.last7[7 - take..].copy_from_slice(&self.buf[self.head + n - take..self.head + n]);
        self.head += n;
        self.pos += n as u64;
    }

    /// Reads `n` bytes, growing the result as bytes arrive so that a false length costs at most
    /// what the stream really holds. Returns fewer bytes at end of stream.
    fn take(&mut self, n: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while (out.len() as u64) < n {
            let want = (n - out.len() as u64).min(4 << 20) as usize;
            let got = self.fill(want)?.min(want);
            if got == 0 {
                break;
            }
            out.extend_from_slice(self.peek(got));
            self.consume(got);
        }
        Ok(out)
    }

    /// Puts `bytes` (just consumed) back in front of the buffer, to rescan them.
    fn unread(&mut self, bytes: &[u8]) {
        let mut b = Vec::with_capacity(bytes.len() + self.avail());
        b.extend_from_slice(bytes);
        b.extend_from_slice(&self.buf[self.head..self.end]);
        self.end = b.len();
        self.buf = b;
        self.head = 0;
        self.pos -= bytes.len() as u64;
    }

    /// Skips `n` bytes; returns how many were there.
    fn skip(&mut self, n: u64) -> Result<u64> {
        let mut done = 0;
        while done < n {
            let want = (n - done).min(4 << 20) as usize;
            let got = self.fill(want)?.min(want);
            if got == 0 {
                break;
            }
            self.consume(got);
            done += got as u64;
        }
        Ok(done)
    }
}

/// Where the reader is in the archive's grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Records,
    /// The Index record ended at this offset; padding and the footer follow.
    AfterIndex {
        index_at: u64,
    },
    /// A payload ran past the end of the stream; report truncation next.
    Truncated,
    Done,
}

/// Reads an archive front to back. See the module docs.
pub struct StreamReader<'a> {
    input: Input<'a>,
    /// The file header.
    pub header: FileHeader,
    /// The manifest.
    pub manifest: Manifest,
    decode: bool,
    meta: blake3::Hasher,
    records: u64,
    index_at: Option<u64>,
    state: State,
    capacities: Vec<u64>,
    /// Events decoded ahead by [`StreamReader::decode_batch`], returned in order.
    ahead: std::collections::VecDeque<Event>,
    /// Whether to decode chunk records ahead in parallel (off only in the differential test).
    parallel: bool,
    /// The front manifest's digest; its copy after the index must match it.
    manifest_digest: [u8; 32],
    /// Whether the manifest copy is still to come after the index.
    copy_pending: bool,
    /// Where another archive was found to begin (everything from there is skipped).
    foreign_at: Option<u64>,
    /// Disks whose capacity nothing states (a rebuilt manifest's, without a disk end).
    open_ended: Vec<u32>,
}

/// Most chunk records decoded ahead at once, and their most plaintext bytes: bounds the memory
/// that parallel decoding adds (32 MiB of plaintext with 4 MiB chunks).
const AHEAD_RECORDS: usize = 8;
const AHEAD_BYTES: u64 = 32 << 20;

/// A chunk record read ahead but not yet decoded, with what is needed to un-read it.
struct Pending {
    at: u64,
    header: RecordHeader,
    header_bytes: [u8; RECORD_HEADER_BYTES],
    payload: Vec<u8>,
    /// The metadata hasher and record count before this record was read.
    meta_before: blake3::Hasher,
    records_before: u64,
}

impl<'a> StreamReader<'a> {
    /// Reads and validates the file header and the manifest. `decode`: whether to decompress
    /// and hash payloads (false for a quick listing; payloads are then skipped unchecked).
    /// Damage here is fatal: without the manifest nothing can be placed.
    pub fn new(src: &'a mut dyn Read, decode: bool) -> Result<Self> {
        let mut input = Input {
            src,
            buf: Vec::new(),
            head: 0,
            end: 0,
            pos: 0,
            eof: false,
            last7: [0; 7],
        };
        if input.fill(FILE_HEADER_BYTES)? < FILE_HEADER_BYTES {
            return Err(Error::archive(
                input.avail() as u64,
                "archive shorter than its header",
            ));
        }
        let hb: [u8; FILE_HEADER_BYTES] = input.peek(FILE_HEADER_BYTES).try_into().expect("len");
        let header = FileHeader::decode(&hb)?;
        input.consume(FILE_HEADER_BYTES);
        let mut meta = blake3::Hasher::new();
        meta.update(&hb);
        let at = input.pos;
        if input.fill(RECORD_HEADER_BYTES)? < RECORD_HEADER_BYTES {
            return Err(Error::archive(at, "archive ends before the manifest"));
        }
        let rb: [u8; RECORD_HEADER_BYTES] =
            input.peek(RECORD_HEADER_BYTES).try_into().expect("len");
        let mh = RecordHeader::decode(&rb, at)?;
        if mh.kind != RecordKind::Manifest || mh.codec != Codec::None {
            return Err(Error::archive(at, "first record is not a plain manifest"));
        }
        input.consume(RECORD_HEADER_BYTES);
        meta.update(&rb);
        let json = input.take(mh.stored_len)?;
        if (json.len() as u64) < mh.stored_len {
            return Err(Error::archive(
                input.pos,
                "archive ends inside the manifest",
            ));
        }
        if blake3::hash(&json).as_bytes() != &mh.digest {
            return Err(Error::archive(at, "manifest checksum mismatch"));
        }
        let manifest: Manifest = serde_json::from_slice(&json)
            .map_err(|e| Error::archive(at, format!("manifest: {e}")))?;
        let incremental = header.incompat_features & INCOMPAT_BASE_REFS != 0;
        if manifest.format_version != header.format_version
            || manifest.block_size != header.block_size
            || manifest.base.is_some() != incremental
        {
            return Err(Error::archive(
                at,
                "manifest disagrees with the file header",
            ));
        }
        manifest.validate(at)?;
        Ok(Self::assemble(
            input,
            header,
            (manifest, mh.digest),
            decode,
            meta,
        ))
    }

    /// The reader over `input` once the front is known; `meta`: the metadata hash so far.
    fn assemble(
        input: Input<'a>,
        header: FileHeader,
        (manifest, digest): (Manifest, [u8; 32]),
        decode: bool,
        meta: blake3::Hasher,
    ) -> Self {
        let capacities = manifest.disks().map(|(_, d)| d.meta.capacity).collect();
        StreamReader {
            input,
            header,
            manifest,
            decode,
            meta,
            records: 1,
            index_at: None,
            state: State::Records,
            capacities,
            ahead: std::collections::VecDeque::new(),
            parallel: true,
            manifest_digest: digest,
            copy_pending: header.incompat_features & INCOMPAT_MANIFEST_COPY != 0,
            foreign_at: None,
            open_ended: Vec::new(),
        }
    }

    /// A reader that starts at stream offset `at` of `src` (already positioned there) with a
    /// manifest found elsewhere: for a salvage whose front (file header or manifest) is
    /// damaged. The footer's metadata hash cannot match then; it is reported like any other
    /// footer problem. `digest`: the BLAKE3 of the manifest's JSON as stored, which a
    /// manifest copy met later must match.
    pub fn resume(
        src: &'a mut dyn Read,
        at: u64,
        header: FileHeader,
        (manifest, digest): (Manifest, [u8; 32]),
        decode: bool,
    ) -> Self {
        let input = Input {
            src,
            buf: Vec::new(),
            head: 0,
            end: 0,
            pos: at,
            eof: false,
            last7: [0; 7],
        };
        Self::assemble(
            input,
            header,
            (manifest, digest),
            decode,
            blake3::Hasher::new(),
        )
    }

    /// Disks whose capacity is only the end of their last record (a rebuilt manifest's):
    /// whatever lies past it is unknown.
    pub fn open_ended(&self) -> &[u32] {
        &self.open_ended
    }

    /// Marks disks as [`Self::open_ended`].
    pub fn set_open_ended(&mut self, disks: Vec<u32>) {
        self.open_ended = disks;
    }

    /// The BLAKE3 of the manifest's JSON as stored (its copy after the index must match).
    pub fn manifest_digest(&self) -> [u8; 32] {
        self.manifest_digest
    }

    /// Current stream offset.
    pub fn position(&self) -> u64 {
        self.input.pos
    }

    /// Checks a checksummed header against the manifest: is this a record that can occur here?
    fn check_context(&self, h: &RecordHeader) -> std::result::Result<(), String> {
        let m = &self.manifest;
        let disk_cap = || {
            self.capacities
                .get(h.disk as usize)
                .copied()
                .ok_or_else(|| format!("disk ordinal {} out of range", h.disk))
        };
        match h.kind {
            RecordKind::Manifest => {
                // Only the copy, right after the index (`next_event_serial` knows where).
                if h.offset == MANIFEST_COPY && self.copy_pending && self.index_at.is_some() {
                    Ok(())
                } else {
                    Err("manifest out of place".into())
                }
            }
            RecordKind::File => {
                let vm = m
                    .vms
                    .get(h.disk as usize)
                    .ok_or_else(|| format!("VM ordinal {} out of range", h.disk))?;
                let f = usize::try_from(h.offset)
                    .ok()
                    .and_then(|i| vm.files.get(i))
                    .ok_or_else(|| format!("file ordinal {} out of range", h.offset))?;
                if f.size != h.raw_len {
                    return Err(format!(
                        "file {:?}: {} bytes != {}",
                        f.name, h.raw_len, f.size
                    ));
                }
                Ok(())
            }
            RecordKind::BaseRef if self.header.incompat_features & INCOMPAT_BASE_REFS == 0 => {
                Err("base reference in an archive that is not an incremental".into())
            }
            RecordKind::BasePatch
                if self.header.incompat_features & INCOMPAT_BASE_PATCHES == 0
                    || self.header.incompat_features & INCOMPAT_BASE_REFS == 0 =>
            {
                Err("base patch in an archive that may not hold one".into())
            }
            RecordKind::Chunk | RecordKind::Ref | RecordKind::BaseRef | RecordKind::BasePatch => {
                let cap = disk_cap()?;
                if h.offset % m.chunk_size != 0 || h.offset >= cap {
                    return Err(format!("chunk offset {:#x} invalid", h.offset));
                }
                if h.raw_len != m.chunk_size.min(cap - h.offset) {
                    return Err(format!("chunk length {} invalid", h.raw_len));
                }
                Ok(())
            }
            RecordKind::DiskEnd => {
                if h.offset != disk_cap()? {
                    return Err("disk end != capacity".into());
                }
                Ok(())
            }
            RecordKind::Index => {
                if h.disk != NO_DISK {
                    return Err("index with a disk".into());
                }
                // Each entry describes a record of at least a header's size before the index.
                let max = self.input.pos / RECORD_HEADER_BYTES as u64 * INDEX_ENTRY_BYTES as u64;
                if h.raw_len > max {
                    return Err(format!("index of {} bytes > {max}", h.raw_len));
                }
                Ok(())
            }
        }
    }

    /// Tries to decode a record header at the current position (buffered bytes).
    fn try_header(&mut self) -> Result<std::result::Result<RecordHeader, String>> {
        let at = self.input.pos;
        if self.input.fill(RECORD_HEADER_BYTES)? < RECORD_HEADER_BYTES {
            return Ok(Err("short header".into()));
        }
        let rb: [u8; RECORD_HEADER_BYTES] = self
            .input
            .peek(RECORD_HEADER_BYTES)
            .try_into()
            .expect("len");
        let h = match RecordHeader::decode(&rb, at) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e.to_string())),
        };
        Ok(self.check_context(&h).map(|()| h))
    }

    /// Whether a valid footer starts at the current position.
    fn try_footer(&mut self) -> Result<Option<Footer>> {
        if self.input.fill(FOOTER_BYTES)? < FOOTER_BYTES {
            return Ok(None);
        }
        let fb: [u8; FOOTER_BYTES] = self.input.peek(FOOTER_BYTES).try_into().expect("len");
        // Decode at the position the footer claims, so that a footer moved by lost bytes is
        // still recognised; `footer_event` reports the mismatch.
        let claimed = u64::from_le_bytes(fb[24..32].try_into().expect("8 bytes"));
        Ok(Footer::decode(&fb, claimed).ok())
    }

    /// Scans forward from the current position (+1) to the next good record header or footer.
    /// Returns false at end of stream.
    fn resync(&mut self) -> Result<bool> {
        if self.another_archive()? {
            self.foreign_at = Some(self.input.pos);
            self.input.skip(u64::MAX)?;
            return Ok(false);
        }
        self.input.consume(1);
        loop {
            let avail = self.input.fill(READ_BYTES)?;
            if avail < 8 {
                self.input.consume(avail);
                return Ok(false);
            }
            let window = self.input.peek(avail);
            let hit = window
                .windows(8)
                .position(|w| is_resync_magic(w) || w == ARCHIVE_MAGIC_V1);
            match hit {
                None => self.input.consume(avail - 7),
                Some(i) => {
                    self.input.consume(i);
                    if self.another_archive()? {
                        // Its records are another archive's bytes, never this one's.
                        self.foreign_at = Some(self.input.pos);
                        self.input.skip(u64::MAX)?;
                        return Ok(false);
                    }
                    if self.try_header()?.is_ok() || self.try_footer()?.is_some() {
                        return Ok(true);
                    }
                    self.input.consume(1);
                }
            }
        }
    }

    /// Whether another archive starts at the current position: a file header that checks
    /// out, or a front manifest record (an archive appended after this one was cut short).
    fn another_archive(&mut self) -> Result<bool> {
        let n = self.input.fill(FILE_HEADER_BYTES)?;
        if n >= FILE_HEADER_BYTES {
            let b: &[u8; FILE_HEADER_BYTES] =
                self.input.peek(FILE_HEADER_BYTES).try_into().expect("len");
            if FileHeader::decode(b).is_ok() {
                return Ok(true);
            }
        }
        if n >= RECORD_HEADER_BYTES {
            let b: &[u8; RECORD_HEADER_BYTES] = self
                .input
                .peek(RECORD_HEADER_BYTES)
                .try_into()
                .expect("len");
            if let Ok(h) = RecordHeader::decode(b, self.input.pos) {
                return Ok(h.kind == RecordKind::Manifest && h.offset == MANIFEST_FRONT);
            }
        }
        Ok(false)
    }

    /// After a payload that did not decode: if a record or footer magic starts inside it,
    /// including one that runs on past its end (bytes lost just before the record's end),
    /// puts the payload back from there so the next record is not lost with this one.
    /// Returns whether anything was put back.
    fn rescan(&mut self, payload: &[u8]) -> Result<bool> {
        let tail_from = payload.len().saturating_sub(7);
        let hit = match payload.windows(8).position(is_resync_magic) {
            Some(i) => Some(i),
            None => self
                .straddling(&payload[tail_from..])?
                .map(|i| tail_from + i),
        };
        if let Some(i) = hit {
            self.input.unread(&payload[i..]);
        }
        Ok(hit.is_some())
    }

    /// Whether a record or footer magic begins in the last 7 bytes consumed (by a payload no
    /// checksum covers) and runs on into the next bytes; if so, puts those bytes back.
    fn swallowed_magic(&mut self) -> Result<bool> {
        let tail = self.input.last7;
        let hit = self.straddling(&tail)?;
        if let Some(i) = hit {
            self.input.unread(&tail[i..]);
        }
        Ok(hit.is_some())
    }

    /// Where in `tail` (at most 7 bytes just consumed) a record or footer magic begins that
    /// runs on into the next bytes, unless those are themselves a magic.
    fn straddling(&mut self, tail: &[u8]) -> Result<Option<usize>> {
        let n = self.input.fill(8)?.min(8);
        let next = self.input.peek(n);
        if n == 8 && is_resync_magic(next) {
            return Ok(None);
        }
        let window = [tail, next].concat();
        Ok(window
            .windows(8)
            .position(is_resync_magic)
            .filter(|&i| i < tail.len()))
    }

    /// Consumes zero bytes; whether the stream ends in them (false: stopped at a non-zero byte,
    /// which is not consumed).
    fn only_zeros_left(&mut self) -> Result<bool> {
        loop {
            let n = self.input.fill(READ_BYTES)?;
            if n == 0 {
                return Ok(true);
            }
            match self.input.peek(n).iter().position(|&b| b != 0) {
                Some(i) => {
                    self.input.consume(i);
                    return Ok(false);
                }
                None => self.input.consume(n),
            }
        }
    }

    fn footer_event(&mut self, footer: Footer) -> Result<Event> {
        let at = self.input.pos;
        self.input.consume(FOOTER_BYTES);
        self.state = State::Done;
        let meta = *self.meta.finalize().as_bytes();
        // The footer ends the archive only where the stream ends (zero bytes after it, a tape
        // copy's padding, aside): a footer met earlier (moved there, or a stray copy) is
        // reported, and the records after it are still read.
        let more = !self.only_zeros_left()?;
        if more {
            self.state = State::Records;
        }
        let problem = if more {
            Some(format!(
                "footer at {at:#x} is followed by more bytes: not the end of the archive"
            ))
        } else if footer.footer_offset != at {
            Some(format!(
                "footer at {at:#x} says it is at {:#x}: bytes missing or added",
                footer.footer_offset
            ))
        } else if Some(footer.index_offset) != self.index_at {
            Some(format!(
                "footer names the index at {:#x}, found at {:?}",
                footer.index_offset, self.index_at
            ))
        } else if footer.record_count != self.records {
            Some(format!(
                "footer counts {} records, read {}",
                footer.record_count, self.records
            ))
        } else if footer.meta_hash != meta {
            Some("metadata hash mismatch".into())
        } else {
            None
        };
        Ok(Event::Footer {
            at,
            footer,
            problem,
        })
    }

    /// The next event, or `None` after the last one.
    pub fn next_event(&mut self) -> Result<Option<Event>> {
        if let Some(ev) = self.ahead.pop_front() {
            return Ok(Some(ev));
        }
        if self.decode && self.parallel && self.state == State::Records {
            self.decode_batch()?;
            if let Some(ev) = self.ahead.pop_front() {
                return Ok(Some(ev));
            }
        }
        self.next_event_serial()
    }

    /// Reads up to [`AHEAD_RECORDS`] consecutive, well-framed chunk records, decompresses and
    /// verifies them on all cores, and queues their events in order. Decompression is most of
    /// a restore's CPU time; doing it here keeps the one-pass, no-seek reading order intact.
    ///
    /// Anything unusual (another record kind, a bad header, a short payload) ends the batch
    /// *before* that record, which [`Self::next_event_serial`] then handles. If a payload in the
    /// batch fails to decode, the records after it are put back exactly as they were read
    /// (bytes, metadata hash, record count), so damage handling (the rescan of a bad payload for
    /// records hidden inside it) sees the same stream as the serial reader would.
    fn decode_batch(&mut self) -> Result<()> {
        let mut batch: Vec<Pending> = Vec::new();
        let mut bytes = 0u64;
        while batch.len() < AHEAD_RECORDS && bytes < AHEAD_BYTES {
            let at = self.input.pos;
            if self.input.fill(RECORD_HEADER_BYTES)? < RECORD_HEADER_BYTES {
                break;
            }
            let header = match self.try_header()? {
                Ok(h) if h.kind == RecordKind::Chunk => h,
                _ => break,
            };
            let header_bytes: [u8; RECORD_HEADER_BYTES] = self
                .input
                .peek(RECORD_HEADER_BYTES)
                .try_into()
                .expect("len");
            let meta_before = self.meta.clone();
            let records_before = self.records;
            self.input.consume(RECORD_HEADER_BYTES);
            let payload = self.input.take(header.stored_len)?;
            if (payload.len() as u64) < header.stored_len {
                // Truncated: leave it to the serial path, which reports it.
                self.input
                    .unread(&[&header_bytes[..], &payload[..]].concat());
                break;
            }
            self.meta.update(&header_bytes);
            self.records += 1;
            bytes += header.raw_len;
            batch.push(Pending {
                at,
                header,
                header_bytes,
                payload,
                meta_before,
                records_before,
            });
        }
        use rayon::prelude::*;
        let decoded: Vec<std::result::Result<Option<Vec<u8>>, String>> = batch
            .par_iter()
            .map(|p| decode_borrowed(&p.header, &p.payload))
            .collect();
        let mut items = batch.into_iter().zip(decoded);
        while let Some((p, result)) = items.next() {
            match result {
                Ok(data) => self.ahead.push_back(Event::Record(Record {
                    at: p.at,
                    header: p.header,
                    data: data.unwrap_or(p.payload),
                })),
                Err(what) => {
                    // Put back everything read after the bad record, in stream order, and the
                    // reader state from before the first of them.
                    let rest: Vec<Pending> = items.map(|(q, _)| q).collect();
                    if let Some(first) = rest.first() {
                        self.meta = first.meta_before.clone();
                        self.records = first.records_before;
                        let raw: Vec<u8> = rest
                            .iter()
                            .flat_map(|q| q.header_bytes.iter().chain(q.payload.iter()))
                            .copied()
                            .collect();
                        self.input.unread(&raw);
                    }
                    // Then what the serial reader does with a bad payload: rescan it.
                    self.rescan(&p.payload)?;
                    self.ahead.push_back(Event::Damaged {
                        at: p.at,
                        header: p.header,
                        what,
                    });
                    break;
                }
            }
        }
        Ok(())
    }

    /// Reads the next event record by record; see [`Self::next_event`].
    fn next_event_serial(&mut self) -> Result<Option<Event>> {
        if let ControlFlow::Break(ev) = self.leave_state()? {
            return Ok(ev);
        }
        let at = self.input.pos;
        if self.input.fill(1)? == 0 {
            self.state = State::Done;
            return Ok(Some(Event::Truncated { at }));
        }
        let header = match self.try_header()? {
            Ok(h) => h,
            Err(what) => return self.unreadable(at, what).map(Some),
        };
        self.record(at, header).map(Some)
    }

    /// Leaves the state the last record left the stream in. `Break` with what to return
    /// instead of reading a record (the end, or the footer after the index).
    fn leave_state(&mut self) -> Result<ControlFlow<Option<Event>>> {
        match self.state {
            State::Done => return Ok(ControlFlow::Break(None)),
            State::Truncated => {
                self.state = State::Done;
                let at = self.input.pos;
                return Ok(ControlFlow::Break(Some(Event::Truncated { at })));
            }
            State::AfterIndex { .. } if self.copy_pending => {
                // The manifest copy comes first; read like any record (`check_context`).
                self.state = State::Records;
            }
            State::AfterIndex { index_at } => {
                // Padding, then the footer. Anything else is damage, handled by resync.
                let pad = footer_padding(self.input.pos, self.header.block_size);
                let _ = index_at;
                let n = (pad as usize).min(self.input.fill(pad as usize)?);
                if self.input.peek(n).iter().all(|&b| b == 0) && n as u64 == pad {
                    self.input.consume(n);
                }
                self.state = State::Records;
                if let Some(f) = self.try_footer()? {
                    return Ok(ControlFlow::Break(Some(self.footer_event(f)?)));
                }
            }
            State::Records => {}
        }
        Ok(ControlFlow::Continue(()))
    }

    /// No record header at `at` (`what` says why): the footer, or the unreadable bytes up to
    /// where reading resumes.
    fn unreadable(&mut self, at: u64, what: String) -> Result<Event> {
        if let Some(f) = self.try_footer()? {
            return self.footer_event(f);
        }
        let found = self.resync()?;
        let to = self.input.pos;
        if !found {
            // The stream ended in the unreadable bytes: it has no footer.
            self.state = State::Truncated;
        }
        let what = match self.foreign_at.take() {
            Some(f) => format!("{what}; another archive begins at {f:#x}, not read"),
            None => what,
        };
        Ok(Event::Skipped { from: at, to, what })
    }

    /// The record at `at` whose good `header` is next in the input.
    fn record(&mut self, at: u64, header: RecordHeader) -> Result<Event> {
        let hb: [u8; RECORD_HEADER_BYTES] = self
            .input
            .peek(RECORD_HEADER_BYTES)
            .try_into()
            .expect("len");
        self.input.consume(RECORD_HEADER_BYTES);
        self.meta.update(&hb);
        self.records += 1;
        if header.kind == RecordKind::Index {
            self.index_at = Some(at);
        }
        let keep = self.decode
            || matches!(
                header.kind,
                RecordKind::Ref | RecordKind::BaseRef | RecordKind::DiskEnd | RecordKind::Index
            );
        let Some(payload) = self.payload(&header, keep)? else {
            self.state = State::Truncated;
            let what = format!("archive truncated at {:#x}", self.input.pos);
            return Ok(Event::Damaged { at, header, what });
        };
        if let Some(what) = self.after_payload(at, &header, keep)? {
            return Ok(Event::Damaged { at, header, what });
        }
        if !keep {
            let data = Vec::new();
            return Ok(Event::Record(Record { at, header, data }));
        }
        match decode_keep(&header, payload) {
            Ok(data) => Ok(Event::Record(Record { at, header, data })),
            Err((what, payload)) => {
                // The header was good but the payload is not: if bytes went missing, the next
                // records may sit inside what was read as this payload. Rescan it.
                if self.rescan(&payload)? && header.kind == RecordKind::Index {
                    self.state = State::Records;
                }
                Ok(Event::Damaged { at, header, what })
            }
        }
    }

    /// The payload after `header`, read if `keep` and skipped (empty) if not; `None` if the
    /// stream ends inside it.
    fn payload(&mut self, header: &RecordHeader, keep: bool) -> Result<Option<Vec<u8>>> {
        if keep {
            let payload = self.input.take(header.stored_len)?;
            Ok(((payload.len() as u64) >= header.stored_len).then_some(payload))
        } else {
            let n = self.input.skip(header.stored_len)?;
            Ok((n == header.stored_len).then(Vec::new))
        }
    }

    /// What the record at `at` changes in the state once its payload is consumed (after the
    /// index comes the footer; the manifest copy is done with); the damage found, if any.
    fn after_payload(
        &mut self,
        at: u64,
        header: &RecordHeader,
        keep: bool,
    ) -> Result<Option<String>> {
        if header.kind == RecordKind::Index {
            self.state = State::AfterIndex { index_at: at };
        }
        if header.kind == RecordKind::Manifest {
            // The payload is consumed: the copy is done with either way.
            self.copy_pending = false;
            self.state = State::AfterIndex {
                index_at: self.index_at.unwrap_or(at),
            };
            if header.digest != self.manifest_digest {
                return Ok(Some("manifest copy differs from the front manifest".into()));
            }
        }
        // A payload no checksum covers (a Ref's, or any when not decoding) may have run into
        // the next record's magic when bytes went missing before its end.
        if (!keep || header.kind.is_reference()) && self.swallowed_magic()? {
            return Ok(Some(
                "payload runs into the next record (bytes missing)".into(),
            ));
        }
        Ok(None)
    }
}

/// Whether `w` (8 bytes) is a magic reading resumes at: a record's or the footer's.
fn is_resync_magic(w: &[u8]) -> bool {
    w == RECORD_MAGIC_V1 || w == FOOTER_MAGIC_V1
}

/// Decodes and checks a record payload against its header. For Ref records the payload is
/// returned as is (its digest describes the referenced chunk, checked on resolution).
pub fn decode_payload(h: &RecordHeader, payload: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    decode_keep(h, payload).map_err(|(what, _)| what)
}

/// [`decode_payload`] without taking the payload: `Ok(None)` means the payload is the
/// plaintext (codec None), so callers keep ownership for rollback.
fn decode_borrowed(
    h: &RecordHeader,
    payload: &[u8],
) -> std::result::Result<Option<Vec<u8>>, String> {
    let d = plaintext(h, payload)?;
    if blake3::hash(d.as_deref().unwrap_or(payload)).as_bytes() != &h.digest {
        return Err("checksum mismatch".into());
    }
    Ok(d)
}

/// A Chunk record's plaintext, not checked against its digest: for a caller that checks what
/// it makes of it (a chunk base patches are laid over). `Ok(None)`: the payload is the
/// plaintext (codec None).
pub fn plaintext(h: &RecordHeader, payload: &[u8]) -> std::result::Result<Option<Vec<u8>>, String> {
    match h.codec {
        Codec::None => Ok(None),
        Codec::Zstd => {
            // The declared plaintext size (already bounded by MAX_*) caps the output buffer, so
            // a decompression bomb cannot allocate more than the header admitted.
            let d = super::zstd_ctx::decompress(payload, h.raw_len as usize)
                .map_err(|e| format!("zstd: {e}"))?;
            if d.len() as u64 != h.raw_len {
                return Err(format!(
                    "decompressed to {} bytes, expected {}",
                    d.len(),
                    h.raw_len
                ));
            }
            Ok(Some(d))
        }
        Codec::SparseZstd => super::sparse::decode(payload, h.raw_len as usize).map(Some),
    }
}

/// [`decode_payload`], handing the payload back on failure (for rescanning).
fn decode_keep(
    h: &RecordHeader,
    payload: Vec<u8>,
) -> std::result::Result<Vec<u8>, (String, Vec<u8>)> {
    if h.kind.is_reference() {
        return Ok(payload);
    }
    if h.kind == RecordKind::BasePatch {
        return super::patch::decode(&payload, h.offset, h.raw_len as usize)
            .map_err(|w| (w, payload));
    }
    match decode_borrowed(h, &payload) {
        Ok(Some(data)) => Ok(data),
        Ok(None) => Ok(payload),
        Err(what) => Err((what, payload)),
    }
}

/// Decodes a Ref payload into (source disk, source offset).
pub fn decode_ref(payload: &[u8]) -> Option<(u32, u64)> {
    let d = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?);
    let o = u64::from_le_bytes(payload.get(4..12)?.try_into().ok()?);
    Some((d, o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::memdisk::MemDisk;
    use crate::pipeline::{backup, BackupOptions, DiskInput, DiskMeta, VmInput};

    fn archive() -> Vec<u8> {
        let mut data = crate::fixture::pattern(5, 0, 3 << 20);
        data.extend(crate::fixture::pattern(5, 0, 1 << 20)); // a duplicate: a Ref record
        let disk = MemDisk::new("d", data, &[(1 << 20, (1 << 20) + 65536)]);
        let vm = VmInput {
            origin: None,
            name: "vm".into(),
            files: vec![],
            disks: vec![DiskInput {
                name: "d".into(),
                meta: DiskMeta {
                    capacity: 4 << 20,
                    ..Default::default()
                },
                disk: Box::new(disk),
            }],
        };
        let opts = BackupOptions {
            chunk_size: 64 << 10,
            created: Some(0),
            ..Default::default()
        };
        let mut out = Vec::new();
        backup(vec![vm], &opts, &mut out, None).unwrap();
        out
    }

    fn events(bytes: &[u8], parallel: bool) -> Vec<String> {
        let mut src: &[u8] = bytes;
        let mut r = match StreamReader::new(&mut src, true) {
            Ok(r) => r,
            Err(e) => return vec![format!("open: {e}")],
        };
        r.parallel = parallel;
        let mut out = Vec::new();
        loop {
            match r.next_event() {
                Ok(Some(ev)) => out.push(format!("{ev:?}")),
                Ok(None) => break,
                Err(e) => {
                    out.push(format!("error: {e}"));
                    break;
                }
            }
        }
        out
    }

    /// Parallel read-ahead must be invisible: the same events as the serial reader, damaged or
    /// not, including the rollback when a payload inside a batch fails to decode.
    #[test]
    fn parallel_read_ahead_matches_serial_on_damaged_archives() {
        let good = archive();
        let mut cases = vec![good.clone()];
        for i in 1..40 {
            let mut b = good.clone();
            let at = good.len() * i / 40;
            b[at] ^= 0x5a;
            cases.push(b);
        }
        cases.push(good[..good.len() * 2 / 3].to_vec());
        let mut cut = good[..good.len() / 3].to_vec();
        cut.extend_from_slice(&good[good.len() / 2..]);
        cases.push(cut);
        for (i, c) in cases.iter().enumerate() {
            assert_eq!(events(c, true), events(c, false), "case {i}");
        }
    }
}
