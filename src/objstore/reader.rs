//! `Read + Seek` over one object, with ranged GETs: what the archive's random-access reader
//! (the index at the end) needs to restore one disk of a large archive without fetching the
//! rest.
//!
//! - The size comes from a HEAD, and so does the ETag: every GET carries `If-Match`, so an
//!   object replaced while it is read fails the read instead of mixing two archives.
//! - Small reads are served from a read-ahead window. It starts at [`MIN_WINDOW_BYTES`] after
//!   a seek (the index walk reads 96-byte records spread over the archive: a large window there
//!   would fetch data nobody wants) and doubles on each read that continues where the last
//!   fetch ended, up to the reader's maximum. A read at least as large as the window (a
//!   record's payload) is fetched straight into the caller's buffer, for exactly its bytes.
//! - Every answer is checked: status 206, `Content-Range` naming exactly the bytes asked for
//!   and the object's size, and a body of that length. A body that ends early, a reset, a
//!   5xx or a timeout is retried under the client's rule, resuming from the first byte not
//!   received; when the tries run out, the error names the object and that byte's offset.
//!   Nothing is ever returned as data that did not arrive.
//! - [`FetchStats`] counts the body bytes and the requests, for the bench and the tests.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::client::{check_status, read_small, Call, Client, Failure, FetchStats};
use super::ObjectUrl;
use crate::error::{Error, Result};

/// The read-ahead window after a seek.
pub const MIN_WINDOW_BYTES: usize = 64 << 10;
/// The largest window for random access: what a restore of one disk may fetch past the last
/// byte it needs.
pub const MAX_WINDOW_BYTES: usize = 1 << 20;
/// Most tries for one read, resumed ones included.
pub const MAX_TRIES_PER_READ: u32 = 64;
/// The window of a one-pass read (`--stream`): fewer, larger requests.
pub const STREAM_WINDOW_BYTES: usize = 8 << 20;

/// A reader of one object.
pub struct ObjectReader {
    client: Arc<Client>,
    obj: ObjectUrl,
    len: u64,
    etag: Option<String>,
    pos: u64,
    /// The window's bytes, from object offset `buf_at`.
    buf: Vec<u8>,
    buf_at: u64,
    window: usize,
    min_window: usize,
    max_window: usize,
    /// Where the last fetch ended: a read starting there is sequential.
    fetched_to: u64,
    stats: Arc<FetchStats>,
}

impl ObjectReader {
    /// Opens `obj` for random access (a HEAD for its size; a missing object or bucket is an
    /// error saying which).
    pub fn open(client: Arc<Client>, obj: ObjectUrl) -> Result<ObjectReader> {
        let info = client.head(&obj)?.ok_or_else(|| Error::ObjectStore {
            object: obj.to_string(),
            offset: None,
            what: format!("no such object at {}", client.endpoint()),
        })?;
        Ok(ObjectReader {
            client,
            obj,
            len: info.len,
            etag: info.etag,
            pos: 0,
            buf: Vec::new(),
            buf_at: 0,
            window: MIN_WINDOW_BYTES,
            min_window: MIN_WINDOW_BYTES,
            max_window: MAX_WINDOW_BYTES,
            fetched_to: u64::MAX,
            stats: Arc::new(FetchStats::default()),
        })
    }

    /// Reads in one pass, front to back, in [`STREAM_WINDOW_BYTES`] requests.
    pub fn sequential(mut self) -> ObjectReader {
        self.min_window = STREAM_WINDOW_BYTES;
        self.max_window = STREAM_WINDOW_BYTES;
        self.window = STREAM_WINDOW_BYTES;
        self
    }

    /// The object's size.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The counters of what this reader fetched.
    pub fn stats(&self) -> Arc<FetchStats> {
        self.stats.clone()
    }

    /// Fills `out` with the object's bytes from `at` (the range lies inside the object).
    ///
    /// The client's retry rule, with one change for answers that break off: a try that
    /// brought bytes is resumed at once and does not count against the tries (a connection
    /// dropped mid-body says nothing about the server's load), up to
    /// [`MAX_TRIES_PER_READ`] tries in all, so a link that always breaks still ends in an error.
    fn fetch(&self, at: u64, out: &mut [u8]) -> Result<()> {
        let policy = self.client.retry;
        let (mut done, mut failed, mut tries) = (0usize, 0u32, 0u32);
        while done < out.len() {
            let (start, end) = (at + done as u64, at + out.len() as u64 - 1);
            let before = done;
            let why = match self.get_range(start, end, &mut out[done..], &mut done) {
                Ok(()) => continue,
                Err(Failure::Fatal(why)) => Some(why),
                Err(Failure::Transient(why)) => {
                    tries += 1;
                    failed = if done > before { 0 } else { failed + 1 };
                    if failed >= policy.attempts.max(1) || tries >= MAX_TRIES_PER_READ {
                        Some(format!("{why} (gave up after {tries} tries)"))
                    } else {
                        log::debug!("{}: {why}; resuming at byte {}", self.obj, at + done as u64);
                        if failed > 0 {
                            std::thread::sleep(policy.delay(failed));
                        }
                        None
                    }
                }
            };
            if let Some(why) = why {
                return Err(self.client.error(
                    &self.obj,
                    Some(at + done as u64),
                    "ranged GET",
                    why,
                ));
            }
        }
        Ok(())
    }

    /// One GET of bytes `start..=end` into `out`; `done` advances by what arrived, so a retry
    /// resumes after it.
    fn get_range(
        &self,
        start: u64,
        end: u64,
        out: &mut [u8],
        done: &mut usize,
    ) -> std::result::Result<(), Failure> {
        let mut call = Call::new("GET", &self.obj);
        call.headers.push(("range", format!("bytes={start}-{end}")));
        if let Some(tag) = &self.etag {
            call.headers.push(("if-match", tag.clone()));
        }
        let mut resp = self.client.send(&call, Some(&self.stats))?;
        let status = resp.status().as_u16();
        match status {
            206 => {}
            412 => {
                return Err(Failure::Fatal(
                    "the object changed while it was being read (its ETag no longer matches)"
                        .into(),
                ))
            }
            416 => {
                return Err(Failure::Fatal(format!(
                    "bytes {start}-{end} are past the object's end: it is shorter than the \
                     {} bytes its HEAD reported",
                    self.len
                )))
            }
            200 => {
                return Err(Failure::Fatal(
                    "the server ignored the Range header and sent the whole object".into(),
                ))
            }
            _ => {
                let body = read_small(&mut resp);
                check_status(&resp, &body)?;
                return Err(Failure::Fatal(format!("HTTP {status} to a ranged GET")));
            }
        }
        let header = |h: &str| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let range = header("content-range");
        let want = format!("bytes {start}-{end}/{}", self.len);
        if range != want {
            return Err(Failure::Fatal(format!(
                "asked for bytes {start}-{end}, the answer is for {range:?} (expected {want:?})"
            )));
        }
        let length = header("content-length");
        if !length.is_empty() && length.parse::<u64>().ok() != Some(end - start + 1) {
            return Err(Failure::Fatal(format!(
                "the answer for bytes {start}-{end} has Content-Length {length}"
            )));
        }
        let mut body = resp.body_mut().as_reader();
        let mut n = 0;
        let broke = loop {
            if n == out.len() {
                break None;
            }
            match body.read(&mut out[n..]) {
                Ok(0) => break Some("ended".to_string()),
                Ok(k) => n += k,
                Err(e) => break Some(format!("broke ({e})")),
            }
        };
        self.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
        *done += n;
        match broke {
            None => Ok(()),
            Some(how) => Err(Failure::Transient(format!(
                "the answer for bytes {start}-{end} {how} after {n} of {} bytes",
                end - start + 1
            ))),
        }
    }
}

impl Read for ObjectReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.pos >= self.len {
            return Ok(0);
        }
        let buf_end = self.buf_at + self.buf.len() as u64;
        if self.pos >= self.buf_at && self.pos < buf_end {
            let from = (self.pos - self.buf_at) as usize;
            let n = out.len().min(self.buf.len() - from);
            out[..n].copy_from_slice(&self.buf[from..from + n]);
            self.pos += n as u64;
            return Ok(n);
        }
        let remaining = self.len - self.pos;
        self.window = if self.pos == self.fetched_to {
            (self.window * 2).min(self.max_window)
        } else {
            self.min_window
        };
        let at = self.pos;
        if out.len() >= self.window {
            // A large read: exactly its bytes, straight into the caller's buffer.
            let n = (out.len() as u64).min(remaining) as usize;
            self.fetch(at, &mut out[..n]).map_err(io::Error::other)?;
            self.pos += n as u64;
            self.fetched_to = self.pos;
            return Ok(n);
        }
        let n = (self.window as u64).min(remaining) as usize;
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(n, 0);
        let fetched = self.fetch(at, &mut buf);
        if let Err(e) = fetched {
            buf.clear();
            self.buf = buf;
            return Err(io::Error::other(e));
        }
        self.buf = buf;
        self.buf_at = at;
        self.fetched_to = at + n as u64;
        self.read(out)
    }
}

impl Seek for ObjectReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: seek to before the start", self.obj),
            )
        })?;
        Ok(self.pos)
    }
}
