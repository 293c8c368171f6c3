//! The `network` transport: datastore files read over the server's HTTPS file access
//! (`GET /folder/PATH?dcPath=DC&dsName=DS` with `Range`), the way Proxmox VE's ESXi importer and
//! `govc datastore.download` read them. No SAN access needed.
//!
//! It plugs in as a [`SourceOpener`] (paths `/vmfs/volumes/DS/PATH`, see [`super::layout`]), so
//! the extent readers work unchanged: they read sparse headers and grain tables first, and the
//! collapse then asks only for allocated grains. Each read is one ranged GET, or, for reads of
//! at least [`SPLIT_BYTES`] × 2, several GETs in flight on as many pooled connections.
//!
//! Every answer is checked before a byte is used: status 206, a `Content-Range` that is
//! exactly the range asked for, and a body of exactly that length. A body that ends early
//! (a reset, a proxy timeout) is resumed where it broke; 502/503/504 and resets are retried
//! with backoff ([`super::http`]); anything else fails naming the file and byte offset.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::http::{classify, with_retries, Failure, RetryPolicy};
use crate::error::{Error, Result};
use crate::input::{ByteSource, SourceOpener};

/// Reads shorter than twice this go out as one request.
pub const SPLIT_BYTES: usize = 1 << 20;

/// Reads this close in one file go out as one request: a request costs the server far more
/// than a few kilobytes (about 200 µs of vcsim's CPU each on loopback), and the grains of a
/// redo log split a base's reads by a grain or two.
pub const GATHER_GAP: u64 = 64 << 10;

/// Bytes and requests fetched, for reports and the benchmark.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Body bytes received.
    pub bytes: AtomicU64,
    /// Requests sent (retries included).
    pub requests: AtomicU64,
}

/// One server's datastore file access.
#[derive(Clone)]
pub struct DatastoreFiles {
    inner: Arc<Inner>,
}

struct Inner {
    agent: ureq::Agent,
    /// `scheme://host:port`.
    base: String,
    /// `dcPath`.
    datacenter: String,
    /// Datastore (name, uuid) pairs: `/vmfs/volumes/<uuid>/` means `<name>`.
    datastores: Vec<(String, String)>,
    cookie: Option<String>,
    retry: RetryPolicy,
    connections: usize,
    fetched: Fetched,
}

impl std::fmt::Debug for DatastoreFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatastoreFiles({})", self.inner.base)
    }
}

/// Where a file is served.
struct Located {
    url: String,
}

impl DatastoreFiles {
    /// The file access of the server whose API endpoint is `sdk_url`, for VMs in `datacenter`.
    /// `datastores` maps names to `ds:///vmfs/volumes/<uuid>/` URLs.
    pub fn new(
        agent: ureq::Agent,
        sdk_url: &str,
        datacenter: &str,
        datastores: &[(String, String)],
        cookie: Option<String>,
        retry: RetryPolicy,
        connections: usize,
    ) -> Result<DatastoreFiles> {
        let base = base_of(sdk_url)?;
        let datastores = datastores
            .iter()
            .map(|(name, url)| {
                let uuid = url
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                (name.clone(), uuid)
            })
            .collect();
        Ok(DatastoreFiles {
            inner: Arc::new(Inner {
                agent,
                base,
                datacenter: datacenter.to_string(),
                datastores,
                cookie,
                retry,
                connections: connections.max(1),
                fetched: Fetched::default(),
            }),
        })
    }

    /// What has been fetched so far.
    pub fn fetched(&self) -> (u64, u64) {
        let f = &self.inner.fetched;
        (
            f.bytes.load(Ordering::Relaxed),
            f.requests.load(Ordering::Relaxed),
        )
    }

    fn locate(&self, path: &Path) -> Result<Located> {
        let s = path.to_str().ok_or_else(|| not_datastore(path))?;
        let rest = s
            .strip_prefix("/vmfs/volumes/")
            .ok_or_else(|| not_datastore(path))?;
        let (ds, file) = rest.split_once('/').ok_or_else(|| not_datastore(path))?;
        let name = self
            .inner
            .datastores
            .iter()
            .find(|(n, u)| n == ds || (!u.is_empty() && u == ds))
            .map(|(n, _)| n.as_str())
            .unwrap_or(ds);
        Ok(Located {
            url: format!(
                "{}/folder/{}?dcPath={}&dsName={}",
                self.inner.base,
                encode(file, true),
                encode(&self.inner.datacenter, false),
                encode(name, false)
            ),
        })
    }
}

fn not_datastore(path: &Path) -> Error {
    Error::Usage(format!(
        "{}: not a datastore path (/vmfs/volumes/DATASTORE/...)",
        path.display()
    ))
}

/// `scheme://host:port` of an endpoint URL.
fn base_of(url: &str) -> Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .filter(|(s, _)| *s == "https" || *s == "http")
        .ok_or_else(|| Error::Usage(format!("{url:?}: not an http(s):// URL")))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(Error::Usage(format!("{url:?}: no host")));
    }
    Ok(format!("{scheme}://{host}"))
}

/// Percent-encodes everything but unreserved characters (and `/` when `keep_slash`).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl SourceOpener for DatastoreFiles {
    fn open(&self, path: &Path) -> Result<Arc<dyn ByteSource>> {
        let at = self.locate(path)?;
        let len = self.size(path, &at)?.ok_or_else(|| {
            Error::io(
                path,
                None,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such file on the datastore (HTTP 404)",
                ),
            )
        })?;
        Ok(Arc::new(RemoteFile {
            path: path.to_path_buf(),
            url: at.url,
            len,
            files: self.clone(),
        }))
    }

    fn exists(&self, path: &Path) -> Result<bool> {
        // A path outside every datastore cannot be there; a server that does not answer is an
        // error, not an absence (it would drop files from the archive, or let a restore
        // overwrite without --force).
        match self.locate(path) {
            Ok(at) => Ok(self.size(path, &at)?.is_some()),
            Err(_) => Ok(false),
        }
    }
}

impl DatastoreFiles {
    /// Uploads the local file `from` to the datastore path `to` (`/vmfs/volumes/DS/PATH`)
    /// with one PUT of known length (the file access takes no chunked bodies). Transient
    /// failures start the upload again from the beginning. Returns the bytes sent.
    pub fn upload(&self, from: &Path, to: &Path) -> Result<u64> {
        let at = self.locate(to)?;
        let inner = &self.inner;
        let len = std::fs::metadata(from)
            .map_err(|e| Error::io(from, None, e))?
            .len();
        let put = || -> std::result::Result<(), Failure> {
            let file = std::fs::File::open(from).map_err(|e| Failure::Fatal(e.to_string()))?;
            let mut req = inner
                .agent
                .put(&at.url)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Length", &len.to_string());
            if let Some(c) = &inner.cookie {
                req = req.header("Cookie", c);
            }
            let resp = req
                .send(ureq::SendBody::from_owned_reader(file))
                .map_err(classify)?;
            match resp.status().as_u16() {
                200 | 201 | 204 => Ok(()),
                s @ (502..=504) => Err(Failure::Transient(format!("HTTP {s}"))),
                s => Err(Failure::Fatal(format!("HTTP {s}"))),
            }
        };
        with_retries(&inner.retry, put).map_err(|why| Error::Remote {
            server: inner.base.clone(),
            what: format!("uploading {} to {}: {why}", from.display(), to.display()),
        })?;
        Ok(len)
    }

    /// The file's size, from a one-byte ranged GET (`Content-Range: bytes 0-0/SIZE`; an empty
    /// file answers 416 with `bytes */0`), or `None` for a 404. HEAD would do, but not every
    /// server answers it.
    fn size(&self, path: &Path, at: &Located) -> Result<Option<u64>> {
        let inner = &self.inner;
        with_retries(&inner.retry, || {
            let mut resp = self.get(&at.url, "bytes=0-0")?;
            let status = resp.status().as_u16();
            let total = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit('/').next())
                .and_then(|t| t.trim().parse::<u64>().ok());
            // Drain the byte so the connection goes back to the pool.
            let _ = resp.body_mut().read_to_vec();
            match (status, total) {
                (206 | 416, Some(t)) => Ok(Some(t)),
                (404, _) => Ok(None),
                (s @ (502..=504), _) => Err(Failure::Transient(format!("HTTP {s}"))),
                (s, _) => Err(Failure::Fatal(format!(
                    "HTTP {s} without a usable Content-Range to a ranged GET"
                ))),
            }
        })
        .map_err(|why| Error::io(path, None, std::io::Error::other(why)))
    }

    fn get(
        &self,
        url: &str,
        range: &str,
    ) -> std::result::Result<ureq::http::Response<ureq::Body>, Failure> {
        let inner = &self.inner;
        let mut req = inner.agent.get(url).header("Range", range);
        if let Some(c) = &inner.cookie {
            req = req.header("Cookie", c);
        }
        inner.fetched.requests.fetch_add(1, Ordering::Relaxed);
        req.call().map_err(classify)
    }

    /// Fills `buf` from byte `offset`, resuming a body that ends early.
    fn read_range(
        &self,
        url: &str,
        buf: &mut [u8],
        offset: u64,
    ) -> std::result::Result<(), String> {
        let mut done = 0usize;
        with_retries(&self.inner.retry, || {
            while done < buf.len() {
                let start = offset + done as u64;
                let end = offset + buf.len() as u64 - 1;
                let mut resp = self.get(url, &format!("bytes={start}-{end}"))?;
                let status = resp.status().as_u16();
                match status {
                    206 => {}
                    502..=504 => return Err(Failure::Transient(format!("HTTP {status}"))),
                    _ => return Err(Failure::Fatal(format!("HTTP {status} to a ranged GET"))),
                }
                let got = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let want = format!("bytes {start}-{end}/");
                if !got.starts_with(&want) {
                    return Err(Failure::Fatal(format!(
                        "asked for bytes {start}-{end}, the server sent {got:?}"
                    )));
                }
                let mut body = resp.body_mut().as_reader();
                let n = read_full(&mut body, &mut buf[done..]);
                self.inner
                    .fetched
                    .bytes
                    .fetch_add(n as u64, Ordering::Relaxed);
                done += n;
                if done < buf.len() {
                    return Err(Failure::Transient(format!(
                        "the answer for bytes {start}-{end} ended after {n} bytes"
                    )));
                }
            }
            Ok(())
        })
    }
}

/// Reads until `buf` is full or the body ends (or breaks); how many bytes arrived.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

/// One datastore file.
#[derive(Debug)]
struct RemoteFile {
    path: PathBuf,
    url: String,
    len: u64,
    files: DatastoreFiles,
}

impl ByteSource for RemoteFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn concurrent_reads(&self) -> usize {
        self.files.inner.connections
    }

    fn gather_gap(&self) -> u64 {
        GATHER_GAP
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        crate::input::source::check_range(&self.path, offset, buf.len() as u64, self.len)?;
        let ways = self
            .files
            .inner
            .connections
            .min(buf.len() / SPLIT_BYTES)
            .max(1);
        let located =
            |e: String, at: u64| Error::io(&self.path, Some(at), std::io::Error::other(e));
        if ways == 1 {
            return self
                .files
                .read_range(&self.url, buf, offset)
                .map_err(|e| located(e, offset));
        }
        // Split into `ways` pieces, each on its own connection.
        let piece = buf.len().div_ceil(ways);
        std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks_mut(piece)
                .enumerate()
                .map(|(i, part)| {
                    let at = offset + (i * piece) as u64;
                    s.spawn(move || {
                        self.files
                            .read_range(&self.url, part, at)
                            .map_err(|e| located(e, at))
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| located("reader thread panicked".into(), offset))??;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_encoded_and_uuids_map_to_names() {
        let f = DatastoreFiles::new(
            ureq::Agent::new_with_defaults(),
            "https://vc.example:8443/sdk",
            "DC 1",
            &[("ds1".into(), "ds:///vmfs/volumes/5f3a-77/".into())],
            None,
            RetryPolicy::default(),
            4,
        )
        .unwrap();
        let at = f
            .locate(Path::new("/vmfs/volumes/5f3a-77/web vm/web#1.vmdk"))
            .unwrap();
        assert_eq!(
            at.url,
            "https://vc.example:8443/folder/web%20vm/web%231.vmdk?dcPath=DC%201&dsName=ds1"
        );
        assert!(f.locate(Path::new("/tmp/x.vmdk")).is_err());
        assert!(base_of("ftp://x").is_err());
    }
}
