//! The write path of `-o s3://BUCKET/KEY`: a byte stream of unknown length stored as one
//! object, by a streaming multipart upload.
//!
//! - Parts fill one at a time in the writer's thread and go to [`UPLOAD_THREADS`] uploaders;
//!   at most [`IN_FLIGHT_BYTES`] of parts are queued or uploading at once (a part larger than
//!   that goes alone), so memory is that budget plus the part being filled, whatever the
//!   archive's size, until parts outgrow the budget (archives past about 55 GiB with the
//!   default sizes, see [`super::PartSizes`]), where it is two parts.
//! - Part sizes grow in steps ([`super::PartSizes`]) so that a stream of unknown length stays within
//!   S3's 10,000 parts up to 5 TiB, the largest object S3 allows.
//! - A stream that ends before its first part is full is stored with one PUT: no multipart
//!   upload is created for a small archive.
//! - The upload is completed only by [`Upload::finish`], which the output's commit calls
//!   once the archive writer has finished cleanly. Dropped before that (an error anywhere in
//!   the pipeline, a failed part, SIGINT/SIGTERM, which stop the backup through its error
//!   path), it is aborted: the parts are discarded and no object appears at the key, so an
//!   interrupted backup never leaves an object that looks like an archive. A process killed
//!   outright cannot abort: its upload stays listed as in progress (never as an object) until
//!   a lifecycle rule or `aws s3api abort-multipart-upload` removes it.
//! - Each part is retried on its own under the client's retry rule ([`super::client`]).

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crossbeam_channel::{unbounded, Sender};

use super::client::Client;
use super::parts::PartSizes;
use super::ObjectUrl;
use crate::error::{Error, Result};

/// Parts uploading at once.
pub const UPLOAD_THREADS: usize = 4;
/// Bytes of parts queued or uploading at once: four parts of the first size in flight.
pub const IN_FLIGHT_BYTES: u64 = 64 << 20;

/// What a finished upload stored.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct UploadSummary {
    /// Object size.
    pub bytes: u64,
    /// Parts (0: stored with one PUT).
    pub parts: u32,
    /// Most parts queued or uploading at one time.
    pub most_in_flight: u32,
}

/// One part on its way to an uploader.
struct Part {
    n: u32,
    offset: u64,
    data: Vec<u8>,
}

/// What the uploaders and the writer share.
#[derive(Default)]
struct State {
    /// Bytes of parts queued or uploading.
    in_flight: u64,
    /// Parts queued or uploading, and the most there were at once.
    parts_in_flight: u32,
    most_in_flight: u32,
    /// The first failure; the writer reports it at its next write, the upload is aborted.
    failed: Option<Error>,
    /// Parts stored: (number, ETag).
    done: Vec<(u32, String)>,
    /// Buffers of finished parts, reused so that the writer does not fault in fresh memory
    /// for every part.
    free: Vec<Vec<u8>>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A multipart upload in progress.
struct Multipart {
    id: String,
    shared: Arc<Shared>,
    to_uploaders: Option<Sender<Part>>,
    uploaders: Vec<JoinHandle<()>>,
}

impl Multipart {
    /// Closes the queue and waits for the uploaders.
    fn drain(&mut self) {
        self.to_uploaders = None;
        for u in self.uploaders.drain(..) {
            let _ = u.join();
        }
    }
}

/// A streaming upload of one object; [`Upload::finish`] completes it, dropping aborts it.
pub struct Upload {
    client: Arc<Client>,
    obj: ObjectUrl,
    sizes: PartSizes,
    /// The part being filled.
    buf: Vec<u8>,
    /// Its number.
    part: u32,
    /// Object offset of `buf[0]`.
    pos: u64,
    multipart: Option<Multipart>,
    finished: bool,
}

impl Upload {
    /// Prepares an upload to `obj`. Unless `force`, an existing object is refused (a HEAD
    /// first, as a local archive file is not replaced without `--force`); the HEAD also checks
    /// the bucket and the credentials before any backup work starts.
    pub fn create(client: Arc<Client>, obj: ObjectUrl, force: bool) -> Result<Upload> {
        let exists = client.head(&obj)?.is_some();
        if exists && !force {
            return Err(Error::Exists {
                path: PathBuf::from(obj.to_string()),
            });
        }
        let sizes = client.config().parts;
        Ok(Upload {
            buf: Vec::with_capacity(sizes.size_of(1) as usize),
            client,
            obj,
            sizes,
            part: 1,
            pos: 0,
            multipart: None,
            finished: false,
        })
    }

    /// The object, for messages.
    pub fn object(&self) -> &ObjectUrl {
        &self.obj
    }

    fn part_size(&self) -> usize {
        self.sizes.size_of(self.part) as usize
    }

    /// Starts the multipart upload and its uploaders (at the first full part).
    fn start(&mut self) -> Result<()> {
        if self.multipart.is_none() {
            let id = self.client.create_multipart(&self.obj)?;
            log::debug!("{}: multipart upload {id} started", self.obj);
            let shared = Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
            });
            let (tx, rx) = unbounded::<Part>();
            let uploaders = (0..UPLOAD_THREADS)
                .map(|_| {
                    let (rx, shared) = (rx.clone(), shared.clone());
                    let (client, obj, id) = (self.client.clone(), self.obj.clone(), id.clone());
                    std::thread::spawn(move || {
                        for p in rx {
                            upload_one(&client, &obj, &id, p, &shared);
                        }
                    })
                })
                .collect();
            self.multipart = Some(Multipart {
                id,
                shared,
                to_uploaders: Some(tx),
                uploaders,
            });
        }
        Ok(())
    }

    /// Hands the filled part to the uploaders, once the budget has room for it, and starts
    /// the next.
    fn ship(&mut self) -> Result<()> {
        let len = self.buf.len() as u64;
        let (n, offset) = (self.part, self.pos);
        let next_size = self.sizes.size_of(n + 1) as usize;
        self.start()?;
        let mp = self.multipart.as_mut().expect("invariant: started");
        let mut st = mp.shared.lock();
        while st.failed.is_none() && st.in_flight > 0 && st.in_flight + len > IN_FLIGHT_BYTES {
            st = mp
                .shared
                .changed
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
        if let Some(e) = st.failed.take() {
            // The error goes to the caller; the latch stays set so nothing more is sent.
            st.failed = Some(Error::Usage("a part failed".into()));
            return Err(e);
        }
        st.in_flight += len;
        st.parts_in_flight += 1;
        st.most_in_flight = st.most_in_flight.max(st.parts_in_flight);
        // A buffer of the size the next part needs; smaller ones (from before a size step)
        // are dropped.
        st.free.retain(|b| b.capacity() >= next_size);
        let next = st
            .free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(next_size));
        drop(st);
        let data = std::mem::replace(&mut self.buf, next);
        mp.to_uploaders
            .as_ref()
            .expect("invariant: open until finish")
            .send(Part { n, offset, data })
            .expect("invariant: uploaders run until the queue closes");
        self.part += 1;
        self.pos += len;
        if self.part > PartSizes::MAX_PARTS {
            return Err(Error::ObjectStore {
                object: self.obj.to_string(),
                offset: Some(self.pos),
                what: format!(
                    "more than {} parts: the stream is larger than the object store allows",
                    PartSizes::MAX_PARTS
                ),
            });
        }
        Ok(())
    }

    /// Stores what is left and completes the object. Called once the whole archive was
    /// written; an error leaves no object (the upload is aborted when `self` drops).
    pub fn finish(mut self) -> Result<UploadSummary> {
        if self.multipart.is_none() {
            self.client.put_object(&self.obj, &self.buf)?;
            self.finished = true;
            return Ok(UploadSummary {
                bytes: self.buf.len() as u64,
                parts: 0,
                most_in_flight: 0,
            });
        }
        if !self.buf.is_empty() {
            self.ship()?;
        }
        let mp = self.multipart.as_mut().expect("invariant: started");
        mp.drain();
        let mut st = mp.shared.lock();
        if let Some(e) = st.failed.take() {
            return Err(e);
        }
        let mut parts = std::mem::take(&mut st.done);
        let most_in_flight = st.most_in_flight;
        drop(st);
        parts.sort();
        let want = self.part - 1;
        if parts.len() != want as usize {
            return Err(Error::ObjectStore {
                object: self.obj.to_string(),
                offset: None,
                what: format!("{} of {want} parts stored", parts.len()),
            });
        }
        let id = mp.id.clone();
        self.client.complete_multipart(&self.obj, &id, &parts)?;
        self.finished = true;
        log::debug!(
            "{}: {} bytes in {want} parts, at most {most_in_flight} in flight, complete",
            self.obj,
            self.pos
        );
        Ok(UploadSummary {
            bytes: self.pos,
            parts: want,
            most_in_flight,
        })
    }
}

/// One uploader's work on one part: skipped once the upload failed, so an abort comes soon.
fn upload_one(client: &Client, obj: &ObjectUrl, id: &str, p: Part, shared: &Shared) {
    let failed = shared.lock().failed.is_some();
    let r = if failed {
        None
    } else {
        Some(client.upload_part(obj, id, p.n, p.offset, &p.data))
    };
    let mut st = shared.lock();
    st.in_flight -= p.data.len() as u64;
    st.parts_in_flight -= 1;
    match r {
        Some(Ok(etag)) => st.done.push((p.n, etag)),
        Some(Err(e)) => {
            st.failed.get_or_insert(e);
        }
        None => {}
    }
    let mut data = p.data;
    data.clear();
    st.free.push(data);
    drop(st);
    shared.changed.notify_all();
}

impl Write for Upload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.part_size() - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.part_size() {
            self.ship().map_err(io::Error::other)?;
        }
        Ok(n)
    }

    /// Nothing to do before [`Upload::finish`]: only whole parts leave early.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Some(mp) = self.multipart.as_mut() else {
            // Nothing was stored yet: nothing to take back.
            return;
        };
        // Stop queued parts from going out, wait for those uploading, then drop them all.
        mp.shared
            .lock()
            .failed
            .get_or_insert_with(|| Error::Usage("the upload was abandoned".into()));
        mp.drain();
        let id = mp.id.clone();
        match self.client.abort_multipart(&self.obj, &id) {
            Ok(()) => log::info!(
                "{}: upload abandoned and aborted: no object was stored",
                self.obj
            ),
            Err(e) => log::warn!(
                "{e}; the unfinished upload {id} stays listed (no object exists at the key): \
                 remove it with `aws s3api abort-multipart-upload --bucket {} --key {} \
                 --upload-id {id}` or a lifecycle rule",
                self.obj.bucket,
                self.obj.key
            ),
        }
    }
}
