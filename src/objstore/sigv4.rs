//! AWS Signature Version 4 for S3 requests, in the `Authorization` header.
//!
//! Written here rather than taken from a crate: `aws-sigv4` brings the AWS SDK's runtime
//! crates (smithy, http 0.2 and 1.x types) for what is about a hundred lines, and the small
//! S3 crates sign presigned URLs only or bring their own HTTP stack. The rules followed are
//! the published ones ("Create a signed AWS API request", and the S3 variant "Signature
//! Calculations for the Authorization Header"), checked against AWS's own examples in the
//! tests below. HMAC comes from RustCrypto's `hmac` over the `sha2` vdar already uses.
//!
//! S3 specifics: the path is URI-encoded once (not twice, as other services do), `/` kept;
//! the payload hash is sent as `x-amz-content-sha256` and signed, so the server refuses a
//! body changed on the way (what an unencrypted endpoint on a LAN needs).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The SHA-256 of an empty payload, hex.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Access key, secret and, for temporary credentials, the session token.
#[derive(Clone)]
pub struct Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_key: String,
    /// `AWS_SESSION_TOKEN`, sent as `x-amz-security-token`.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    /// Never prints the secret or the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// What a request is, as far as the signature is concerned.
pub struct Request<'a> {
    /// `GET`, `PUT`, ...
    pub method: &'a str,
    /// The `Host` header's value, exactly as sent.
    pub host: &'a str,
    /// The path, not yet encoded (`/bucket/key` or `/key`).
    pub path: &'a str,
    /// Query parameters, not yet encoded, in any order.
    pub query: &'a [(&'a str, String)],
    /// Headers to sign besides host and the `x-amz-*` ones added here (lowercase names).
    pub headers: &'a [(&'a str, String)],
    /// Hex SHA-256 of the body.
    pub payload_sha256: &'a str,
}

/// The headers to add to a request: `x-amz-date`, `x-amz-content-sha256`, the security token
/// when there is one, and `authorization`.
pub fn sign(
    req: &Request<'_>,
    creds: &Credentials,
    region: &str,
    amz_date: &str,
) -> Vec<(&'static str, String)> {
    let mut added: Vec<(&'static str, String)> = vec![
        ("x-amz-content-sha256", req.payload_sha256.to_string()),
        ("x-amz-date", amz_date.to_string()),
    ];
    if let Some(t) = &creds.session_token {
        added.push(("x-amz-security-token", t.clone()));
    }
    let mut headers: Vec<(String, String)> = vec![("host".into(), req.host.to_string())];
    headers.extend(
        req.headers
            .iter()
            .chain(added.iter())
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string())),
    );
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let canonical = canonical_request(req, &headers, &signed);
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let key = signing_key(&creds.secret_key, date, region, "s3");
    let signature = hex(&hmac(&key, to_sign.as_bytes()));
    added.push((
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            creds.access_key
        ),
    ));
    added
}

fn canonical_request(req: &Request<'_>, headers: &[(String, String)], signed: &str) -> String {
    let mut query: Vec<(String, String)> = req
        .query
        .iter()
        .map(|(k, v)| (uri_encode(k, true), uri_encode(v, true)))
        .collect();
    query.sort();
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut out = format!(
        "{}\n{}\n{}\n",
        req.method,
        uri_encode(req.path, false),
        query.join("&")
    );
    for (k, v) in headers {
        out += &format!("{k}:{v}\n");
    }
    out += &format!("\n{signed}\n{}", req.payload_sha256);
    out
}

/// The signing key for one day, region and service.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("invariant: HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// RFC 3986 percent-encoding as SigV4 wants it: unreserved characters kept, everything else
/// `%XX` in uppercase; `/` kept in paths (`slash` false) and encoded in query parts.
pub fn uri_encode(s: &str, slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if !slash => out.push('/'),
            _ => out += &format!("%{b:02X}"),
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time.
pub fn amz_date(unix_secs: u64) -> String {
    let (y, mo, d, h, mi, s) = crate::clock::utc_fields(unix_secs);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_creds() -> Credentials {
        Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    /// AWS's S3 example "GET Object" (Signature Calculations for the Authorization Header:
    /// Transferring Payload in a Single Chunk): `GET /test.txt` with `Range: bytes=0-9`.
    #[test]
    fn aws_example_get_object() {
        let req = Request {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            query: &[],
            headers: &[("range", "bytes=0-9".into())],
            payload_sha256: EMPTY_SHA256,
        };
        let h = sign(&req, &example_creds(), "us-east-1", "20130524T000000Z");
        let auth = &h.iter().find(|(k, _)| *k == "authorization").unwrap().1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// The same page's "GET Bucket Lifecycle" and "Get Bucket (List Objects)" examples: a
    /// query without a value, and one with parameters to sort.
    #[test]
    fn aws_example_queries() {
        let lifecycle = Request {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/",
            query: &[("lifecycle", String::new())],
            headers: &[],
            payload_sha256: EMPTY_SHA256,
        };
        let h = sign(
            &lifecycle,
            &example_creds(),
            "us-east-1",
            "20130524T000000Z",
        );
        assert!(h.last().unwrap().1.ends_with(
            "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        ));
        let list = Request {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/",
            query: &[("prefix", "J".into()), ("max-keys", "2".into())],
            headers: &[],
            payload_sha256: EMPTY_SHA256,
        };
        let h = sign(&list, &example_creds(), "us-east-1", "20130524T000000Z");
        assert!(h.last().unwrap().1.ends_with(
            "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        ));
    }

    #[test]
    fn encoding_and_dates() {
        assert_eq!(uri_encode("/a b/c~d+é", false), "/a%20b/c~d%2B%C3%A9");
        assert_eq!(uri_encode("a/b=", true), "a%2Fb%3D");
        assert_eq!(amz_date(1_369_353_600), "20130524T000000Z");
        assert_eq!(sha256_hex(b""), EMPTY_SHA256);
        assert!(!format!("{:?}", example_creds()).contains("EXAMPLEKEY"));
    }
}
