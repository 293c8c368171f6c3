//! One object store: the HTTP agent, signed requests, the retry rule, and S3's answers turned
//! into errors that name the object, the endpoint and what the server said.
//!
//! Retries: a try that meets a 5xx (500, 502, 503 `SlowDown`, 504), 429, a reset, a refused
//! connection or a timeout is repeated after a wait that doubles from 200 ms up to 3 s, six
//! tries in all (about 6 s): a node restarting or a load balancer switching over passes in
//! that time, and an endpoint that is really gone fails the backup within seconds. Every
//! operation used here can be repeated: a part upload or a PUT replaces what an earlier try
//! may have stored, an abort of an aborted upload is a 404 we accept, and a Complete retried
//! after a lost answer finds the object complete (we accept its `NoSuchUpload` only after a
//! HEAD shows the object).

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ureq::http::Response;
use ureq::{Agent, Body};

use super::config::S3Config;
use super::sigv4::{self, sha256_hex, EMPTY_SHA256};
use super::{xml, ObjectUrl};
use crate::error::{Error, Result};

/// Bytes and requests a reader fetched (a bench and the tests read them).
#[derive(Debug, Default)]
pub struct FetchStats {
    /// Body bytes received.
    pub bytes: AtomicU64,
    /// Requests sent (retries included).
    pub requests: AtomicU64,
}

impl FetchStats {
    /// `(bytes, requests)` so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.bytes.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
        )
    }
}

/// How often and how patiently a failed try is repeated.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Tries in all (at least 1).
    pub attempts: u32,
    /// Wait before the second try; doubles after each.
    pub first_delay: Duration,
    /// Longest wait.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The wait after the `n`-th failed try (from 1).
    pub fn delay(&self, n: u32) -> Duration {
        self.first_delay
            .saturating_mul(1 << n.saturating_sub(1).min(16))
            .min(self.max_delay)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(3),
        }
    }
}

/// How one try failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth another try.
    Transient(String),
    /// Final: a 4xx, a malformed answer.
    Fatal(String),
}

/// A request, before signing.
pub(crate) struct Call<'a> {
    pub method: &'static str,
    pub bucket: &'a str,
    /// Empty for a bucket-level request.
    pub key: &'a str,
    pub query: Vec<(&'static str, String)>,
    /// Extra headers, lowercase names; all are signed.
    pub headers: Vec<(&'static str, String)>,
    /// `None`: no body at all (GET, HEAD, DELETE).
    pub body: Option<&'a [u8]>,
}

impl<'a> Call<'a> {
    pub fn new(method: &'static str, obj: &'a ObjectUrl) -> Self {
        Call {
            method,
            bucket: &obj.bucket,
            key: &obj.key,
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
        }
    }
}

/// A client of one store.
pub struct Client {
    agent: Agent,
    cfg: S3Config,
    /// The retry rule (tests shorten it).
    pub retry: RetryPolicy,
}

/// What a HEAD tells.
#[derive(Clone, Debug)]
pub struct ObjectInfo {
    /// Content-Length.
    pub len: u64,
    /// The ETag, quotes included, for `If-Match`.
    pub etag: Option<String>,
}

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Most objects one listing collects (a prefix of nightly archives kept for decades holds far
/// fewer; the bound keeps a hostile server from growing the list without end).
pub const MAX_LISTED: usize = 1_000_000;

impl Client {
    /// A client for `cfg`.
    pub fn new(cfg: S3Config) -> Client {
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .tls_config(tls)
            .max_idle_connections_per_host(16)
            .max_idle_connections(32)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_send_body(Some(Duration::from_secs(300)))
            .timeout_recv_body(Some(Duration::from_secs(300)))
            .user_agent(concat!("vdar/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent: config.new_agent(),
            cfg,
            retry: RetryPolicy::default(),
        }
    }

    /// A client configured from the environment ([`S3Config::from_env`]).
    pub fn from_env() -> Result<Client> {
        Ok(Client::new(S3Config::from_env()?))
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> &str {
        &self.cfg.endpoint
    }

    /// The configuration.
    pub fn config(&self) -> &S3Config {
        &self.cfg
    }

    /// The URL, `Host` value and the path that is signed, for a bucket and key.
    fn locate(&self, bucket: &str, key: &str) -> (String, String, String) {
        let (scheme, authority) = self
            .cfg
            .endpoint
            .split_once("://")
            .expect("invariant: endpoint checked in config");
        let key_path = format!("/{key}");
        let (host, path) = if self.cfg.path_style {
            let path = if key.is_empty() {
                format!("/{bucket}")
            } else {
                format!("/{bucket}{key_path}")
            };
            (authority.to_string(), path)
        } else {
            (format!("{bucket}.{authority}"), key_path)
        };
        let url = format!("{scheme}://{host}{}", sigv4::uri_encode(&path, false));
        (url, host, path)
    }

    /// Sends one try of `call`, signed now. Counts a request in `stats` when given.
    pub(crate) fn send(
        &self,
        call: &Call<'_>,
        stats: Option<&FetchStats>,
    ) -> std::result::Result<Response<Body>, Failure> {
        let (url, host, path) = self.locate(call.bucket, call.key);
        let payload = call.body.map(sha256_hex);
        let payload_hash = payload.as_deref().unwrap_or(EMPTY_SHA256);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let signed = sigv4::sign(
            &sigv4::Request {
                method: call.method,
                host: &host,
                path: &path,
                query: &call.query,
                headers: &call.headers,
                payload_sha256: payload_hash,
            },
            &self.cfg.credentials,
            &self.cfg.region,
            &sigv4::amz_date(now),
        );
        let mut url = url;
        if !call.query.is_empty() {
            let q: Vec<String> = call
                .query
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        sigv4::uri_encode(k, true)
                    } else {
                        format!(
                            "{}={}",
                            sigv4::uri_encode(k, true),
                            sigv4::uri_encode(v, true)
                        )
                    }
                })
                .collect();
            url = format!("{url}?{}", q.join("&"));
        }
        let mut b = ureq::http::Request::builder()
            .method(call.method)
            .uri(&url)
            .header("host", &host);
        for (k, v) in call.headers.iter().chain(signed.iter()) {
            b = b.header(*k, v);
        }
        if let Some(s) = stats {
            s.requests.fetch_add(1, Ordering::Relaxed);
        }
        let sent = match call.body {
            Some(body) => b
                .body(body)
                .map_err(|e| Failure::Fatal(e.to_string()))
                .and_then(|r| self.agent.run(r).map_err(classify)),
            None => b
                .body(())
                .map_err(|e| Failure::Fatal(e.to_string()))
                .and_then(|r| self.agent.run(r).map_err(classify)),
        }?;
        Ok(sent)
    }

    /// Runs `f` under the retry rule; the error says how many tries were made.
    pub(crate) fn with_retries<T>(
        &self,
        mut f: impl FnMut() -> std::result::Result<T, Failure>,
    ) -> std::result::Result<T, String> {
        let attempts = self.retry.attempts.max(1);
        let mut n = 0;
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(why)) => return Err(why),
                Err(Failure::Transient(why)) => {
                    n += 1;
                    if n >= attempts {
                        return Err(format!("{why} (gave up after {attempts} tries)"));
                    }
                    let delay = self.retry.delay(n);
                    log::debug!("{why}; retrying in {delay:?}");
                    std::thread::sleep(delay);
                }
            }
        }
    }

    /// The error for `what` (the operation) on `obj` that failed with `why`.
    pub(crate) fn error(
        &self,
        obj: &ObjectUrl,
        offset: Option<u64>,
        what: &str,
        why: String,
    ) -> Error {
        Error::ObjectStore {
            object: obj.to_string(),
            offset,
            what: format!("{what} at {}: {why}", self.cfg.endpoint),
        }
    }

    /// Sends `call` with retries and accepts a 2xx; returns its body. `what` names the
    /// operation in errors.
    pub(crate) fn call(
        &self,
        obj: &ObjectUrl,
        offset: Option<u64>,
        what: &str,
        call: &Call<'_>,
    ) -> Result<(Response<Body>, Vec<u8>)> {
        self.with_retries(|| {
            let mut resp = self.send(call, None)?;
            let body = read_small(&mut resp);
            check_status(&resp, &body).map(|()| (resp, body))
        })
        .map_err(|why| self.error(obj, offset, what, why))
    }

    /// HEAD of the object: its size and ETag, or `None` when there is no such object (a bucket
    /// that does not exist is an error saying so).
    pub fn head(&self, obj: &ObjectUrl) -> Result<Option<ObjectInfo>> {
        let r = self.with_retries(|| {
            let resp = self.send(&Call::new("HEAD", obj), None)?;
            let status = resp.status().as_u16();
            if status == 404 {
                return Ok(None);
            }
            // A HEAD answer has no body to say why: ask again with a GET, which has one.
            if !(200..300).contains(&status) {
                let mut get = Call::new("GET", obj);
                get.headers.push(("range", "bytes=0-0".into()));
                let mut resp = self.send(&get, None)?;
                let body = read_small(&mut resp);
                check_status(&resp, &body)?;
                return Err(Failure::Fatal(format!("HEAD answered HTTP {status}")));
            }
            let header = |h: &str| {
                resp.headers()
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let len = header("content-length")
                .and_then(|l| l.parse().ok())
                .ok_or_else(|| Failure::Fatal("HEAD without a Content-Length".into()))?;
            Ok(Some(ObjectInfo {
                len,
                etag: header("etag"),
            }))
        });
        match r.map_err(|why| self.error(obj, None, "HEAD", why))? {
            Some(info) => Ok(Some(info)),
            None => {
                self.check_bucket(obj)?;
                Ok(None)
            }
        }
    }

    /// Fails, saying so, when the object's bucket does not exist (or cannot be used).
    fn check_bucket(&self, obj: &ObjectUrl) -> Result<()> {
        let bucket = ObjectUrl {
            bucket: obj.bucket.clone(),
            key: String::new(),
        };
        let mut call = Call::new("GET", &bucket);
        call.query = vec![("list-type", "2".into()), ("max-keys", "1".into())];
        self.call(obj, None, "listing the bucket", &call)
            .map(|_| ())
    }

    /// Stores `data` as the whole object, in one PUT.
    pub fn put_object(&self, obj: &ObjectUrl, data: &[u8]) -> Result<()> {
        let mut call = Call::new("PUT", obj);
        call.body = Some(data);
        call.headers
            .push(("content-type", "application/octet-stream".into()));
        self.call(obj, None, "PUT", &call).map(|_| ())
    }

    /// Starts a multipart upload; returns its upload id.
    pub fn create_multipart(&self, obj: &ObjectUrl) -> Result<String> {
        let mut call = Call::new("POST", obj);
        call.query = vec![("uploads", String::new())];
        call.body = Some(&[]);
        call.headers
            .push(("content-type", "application/octet-stream".into()));
        let (_, body) = self.call(obj, None, "CreateMultipartUpload", &call)?;
        xml::text_of(&body, "UploadId").ok_or_else(|| {
            self.error(
                obj,
                None,
                "CreateMultipartUpload",
                "the answer holds no UploadId".into(),
            )
        })
    }

    /// Uploads part `n` (from 1) holding the object's bytes from `offset`; returns its ETag.
    pub fn upload_part(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        n: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<String> {
        let mut call = Call::new("PUT", obj);
        call.query = vec![
            ("partNumber", n.to_string()),
            ("uploadId", upload_id.to_string()),
        ];
        call.body = Some(data);
        let what = format!("UploadPart {n} ({} bytes)", data.len());
        let (resp, _) = self.call(obj, Some(offset), &what, &call)?;
        resp.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| self.error(obj, Some(offset), &what, "no ETag in the answer".into()))
    }

    /// Completes the upload from its parts' ETags, in part order.
    pub fn complete_multipart(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<()> {
        let mut doc = String::from("<CompleteMultipartUpload>");
        for (n, etag) in parts {
            doc += &format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
                xml::escape(etag)
            );
        }
        doc += "</CompleteMultipartUpload>";
        let mut call = Call::new("POST", obj);
        call.query = vec![("uploadId", upload_id.to_string())];
        call.body = Some(doc.as_bytes());
        call.headers
            .push(("content-type", "application/xml".into()));
        let what = format!("CompleteMultipartUpload of {} parts", parts.len());
        let r = self.with_retries(|| {
            let mut resp = self.send(&call, None)?;
            let body = read_small(&mut resp);
            check_status(&resp, &body)?;
            // S3 may answer 200 and then report a failure in the body (the answer starts
            // before the parts are assembled).
            match xml::error_of(&body) {
                Some((code, msg)) => Err(classify_code(200, &code, &msg)),
                None => Ok(()),
            }
        });
        match r {
            Ok(()) => Ok(()),
            // A retry after a lost answer: the first try completed it.
            Err(why) if why.contains("NoSuchUpload") && self.head(obj)?.is_some() => Ok(()),
            Err(why) => Err(self.error(obj, None, &what, why)),
        }
    }

    /// Aborts the upload: its parts are dropped and no object appears. An upload already
    /// gone (aborted by an earlier try) is not an error.
    pub fn abort_multipart(&self, obj: &ObjectUrl, upload_id: &str) -> Result<()> {
        let mut call = Call::new("DELETE", obj);
        call.query = vec![("uploadId", upload_id.to_string())];
        let r = self.with_retries(|| {
            let mut resp = self.send(&call, None)?;
            let body = read_small(&mut resp);
            if resp.status().as_u16() == 404 {
                return Ok(());
            }
            check_status(&resp, &body)
        });
        r.map_err(|why| self.error(obj, None, "AbortMultipartUpload", why))
    }

    /// The multipart uploads in progress in `bucket` under `prefix`: (key, upload id).
    pub fn list_multipart_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<(String, String)>> {
        let b = ObjectUrl {
            bucket: bucket.to_string(),
            key: String::new(),
        };
        let mut call = Call::new("GET", &b);
        call.query = vec![("uploads", String::new()), ("prefix", prefix.to_string())];
        let (_, body) = self.call(&b, None, "ListMultipartUploads", &call)?;
        Ok(xml::uploads_of(&body))
    }

    /// Every object in `bucket` whose key starts with `prefix`, in key order, following
    /// ListObjectsV2's continuation tokens (at most [`MAX_LISTED`] objects).
    pub fn list_objects(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>> {
        let b = ObjectUrl {
            bucket: bucket.to_string(),
            key: String::new(),
        };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut call = Call::new("GET", &b);
            call.query = vec![("list-type", "2".into()), ("prefix", prefix.to_string())];
            if let Some(n) = self.config().list_keys {
                call.query.push(("max-keys", n.to_string()));
            }
            if let Some(t) = &token {
                call.query.push(("continuation-token", t.clone()));
            }
            let (_, body) = self.call(&b, None, "ListObjectsV2", &call)?;
            let page = xml::objects_of(&body).ok_or_else(|| {
                self.error(&b, None, "ListObjectsV2", "answer is not a listing".into())
            })?;
            out.extend(
                page.objects
                    .into_iter()
                    .map(|(key, size)| ListedObject { key, size }),
            );
            if out.len() > MAX_LISTED {
                return Err(self.error(
                    &b,
                    None,
                    "ListObjectsV2",
                    format!("more than {MAX_LISTED} objects under {prefix:?}"),
                ));
            }
            match page.next {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    /// Deletes the object (a missing one is not an error).
    pub fn delete_object(&self, obj: &ObjectUrl) -> Result<()> {
        self.call(obj, None, "DELETE", &Call::new("DELETE", obj))
            .map(|_| ())
    }
}

/// An error answer's body, or a success's small body (XML documents); at most 1 MiB is kept,
/// a body that cannot be read is empty (the status still tells what happened).
pub(crate) fn read_small(resp: &mut Response<Body>) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = resp
        .body_mut()
        .as_reader()
        .take(1 << 20)
        .read_to_end(&mut out);
    out
}

/// `Ok` for a 2xx; otherwise what failed, transient or not, with S3's code and message.
pub(crate) fn check_status(resp: &Response<Body>, body: &[u8]) -> std::result::Result<(), Failure> {
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let (code, msg) = xml::error_of(body).unwrap_or_default();
    Err(classify_code(status, &code, &msg))
}

/// Names the failure, with a hint for what the administrator can fix.
fn classify_code(status: u16, code: &str, msg: &str) -> Failure {
    let hint = match code {
        "NoSuchBucket" => " (the bucket does not exist: create it, or check the name)",
        "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "AccessDenied"
        | "InvalidToken"
        | "ExpiredToken" => {
            " (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE, and the key's \
             rights on the bucket)"
        }
        "AuthorizationHeaderMalformed" | "InvalidRegion" => " (check AWS_REGION)",
        _ => "",
    };
    let why = match (code.is_empty(), msg.is_empty()) {
        (true, _) => format!("HTTP {status}"),
        (false, true) => format!("HTTP {status} {code}{hint}"),
        (false, false) => format!("HTTP {status} {code}: {msg}{hint}"),
    };
    match status {
        429 | 500 | 502 | 503 | 504 => Failure::Transient(why),
        200 if matches!(code, "InternalError" | "SlowDown") => Failure::Transient(why),
        _ => Failure::Fatal(why),
    }
}

/// Whether a transport error is worth another try: the network, not the request, failed.
pub(crate) fn classify(e: ureq::Error) -> Failure {
    let why = e.to_string();
    match e {
        // rustls reports a refused certificate as InvalidData: retrying cannot fix that.
        ureq::Error::Io(ref io) if io.kind() == std::io::ErrorKind::InvalidData => {
            Failure::Fatal(why)
        }
        ureq::Error::Io(_)
        | ureq::Error::Timeout(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Protocol(_) => Failure::Transient(why),
        _ => Failure::Fatal(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objstore::sigv4::Credentials;

    fn client(path_style: bool) -> Client {
        Client::new(S3Config {
            endpoint: "http://127.0.0.1:3900".into(),
            region: "garage".into(),
            credentials: Credentials {
                access_key: "a".into(),
                secret_key: "s".into(),
                session_token: None,
            },
            path_style,
            parts: Default::default(),
            list_keys: None,
        })
    }

    #[test]
    fn path_and_virtual_hosted_addressing() {
        let (url, host, path) = client(true).locate("b", "x y/z.vdar");
        assert_eq!(url, "http://127.0.0.1:3900/b/x%20y/z.vdar");
        assert_eq!(
            (host.as_str(), path.as_str()),
            ("127.0.0.1:3900", "/b/x y/z.vdar")
        );
        let (url, host, _) = client(false).locate("b", "k");
        assert_eq!(url, "http://b.127.0.0.1:3900/k");
        assert_eq!(host, "b.127.0.0.1:3900");
    }

    #[test]
    fn statuses_are_classified_with_hints() {
        assert!(matches!(
            classify_code(503, "SlowDown", ""),
            Failure::Transient(_)
        ));
        match classify_code(403, "InvalidAccessKeyId", "no such key") {
            Failure::Fatal(w) => assert!(w.contains("AWS_ACCESS_KEY_ID"), "{w}"),
            f => panic!("{f:?}"),
        }
        match classify_code(404, "NoSuchBucket", "") {
            Failure::Fatal(w) => assert!(w.contains("bucket does not exist"), "{w}"),
            f => panic!("{f:?}"),
        }
    }
}
