//! Object storage (the S3 API): archives written to and read from `s3://BUCKET/KEY`.
//!
//! - [`config`]: endpoint, region, credentials and addressing style, taken the way the AWS
//!   tools take them (environment, then `~/.aws/credentials` and `~/.aws/config`).
//! - [`sigv4`]: AWS Signature Version 4 over each request, payload hashed.
//! - [`client`]: one HTTP agent per store, one retry rule (5xx, resets, timeouts, short
//!   bodies) and S3's error answers turned into [`crate::Error::ObjectStore`], which names the
//!   object, the byte offset and the endpoint.
//! - [`upload`]: the write path of `-o s3://…`: a streaming multipart upload with a fixed byte
//!   budget of part buffers, several parts in flight, part sizes growing so that a stream of
//!   unknown length stays under 10,000 parts up to 5 TiB; aborted unless completed.
//! - [`reader`]: `Read + Seek` over an object with ranged GETs and a read-ahead window that
//!   grows on sequential reads, counting the bytes and requests it fetched.
//!
//! Where it sits: below `output` (which opens an upload for `-o s3://…`) and beside the input
//! side; it knows nothing of the archive format. The archive's own BLAKE3 checks stay the
//! integrity proof of what was stored: a multipart ETag is not a digest of the object.

pub mod client;
pub mod config;
pub mod parts;
pub mod reader;
pub mod sigv4;
pub mod upload;
mod xml;

pub use client::{Client, FetchStats, ListedObject};
pub use config::S3Config;
pub use parts::PartSizes;
pub use reader::ObjectReader;
pub use upload::{Upload, UploadSummary};

use crate::error::{Error, Result};

/// The scheme prefix of an object name on the command line.
pub const SCHEME: &str = "s3://";

/// An object named `s3://BUCKET/KEY`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectUrl {
    /// The bucket.
    pub bucket: String,
    /// The key (may contain `/`).
    pub key: String,
}

impl ObjectUrl {
    /// Whether `name` (as given on the command line) names an object.
    pub fn is_object(name: &str) -> bool {
        name.starts_with(SCHEME)
    }

    /// Parses `s3://BUCKET/KEY`. The bucket must follow S3's naming rules closely enough to be
    /// a host name label and a path segment; the key must not be empty.
    pub fn parse(name: &str) -> Result<ObjectUrl> {
        let bad = |why: &str| Error::Usage(format!("{name}: {why} (expected s3://BUCKET/KEY)"));
        let rest = name
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("not an s3:// name"))?;
        let (bucket, key) = rest.split_once('/').ok_or_else(|| bad("no key"))?;
        if key.is_empty() {
            return Err(bad("no key"));
        }
        ObjectUrl::named(name, bucket, key)
    }

    /// Parses `s3://BUCKET` or `s3://BUCKET/PREFIX` (a place archives are listed under); the
    /// result's key is the prefix, possibly empty.
    pub fn parse_prefix(name: &str) -> Result<ObjectUrl> {
        let rest = name.strip_prefix(SCHEME).ok_or_else(|| {
            Error::Usage(format!(
                "{name}: not an s3:// name (expected s3://BUCKET/PREFIX)"
            ))
        })?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        ObjectUrl::named(name, bucket, key)
    }

    /// Whether `name` names a place to list rather than one object: no key, or one ending
    /// in `/`.
    pub fn is_prefix(name: &str) -> bool {
        name.strip_prefix(SCHEME).is_some_and(|rest| {
            rest.split_once('/')
                .is_none_or(|(_, k)| k.is_empty() || k.ends_with('/'))
        })
    }

    fn named(name: &str, bucket: &str, key: &str) -> Result<ObjectUrl> {
        let bad = |why: &str| Error::Usage(format!("{name}: {why} (expected s3://BUCKET/KEY)"));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(bad(
                "bucket names are 3 to 63 lowercase letters, digits, '-' or '.'",
            ));
        }
        // S3 keys are at most 1024 bytes of UTF-8.
        if key.len() > 1024 {
            return Err(bad("key longer than 1024 bytes"));
        }
        Ok(ObjectUrl {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }
}

impl std::fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.bucket, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_parse_and_print_back() {
        let u = ObjectUrl::parse("s3://backups/web01/2026-12-07.vdar").unwrap();
        assert_eq!(u.bucket, "backups");
        assert_eq!(u.key, "web01/2026-12-07.vdar");
        assert_eq!(u.to_string(), "s3://backups/web01/2026-12-07.vdar");
        for bad in [
            "s3://backups",
            "s3://backups/",
            "s3://B/x",
            "s3://ab/x",
            "/tmp/x",
        ] {
            assert!(ObjectUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(ObjectUrl::is_object("s3://a/b") && !ObjectUrl::is_object("./s3:/a"));
        let p = ObjectUrl::parse_prefix("s3://backups").unwrap();
        assert_eq!((p.bucket.as_str(), p.key.as_str()), ("backups", ""));
        assert_eq!(
            ObjectUrl::parse_prefix("s3://backups/web/").unwrap().key,
            "web/"
        );
        assert!(ObjectUrl::parse_prefix("s3://B").is_err());
        assert!(ObjectUrl::is_prefix("s3://backups") && ObjectUrl::is_prefix("s3://backups/"));
        assert!(ObjectUrl::is_prefix("s3://backups/web/"));
        assert!(!ObjectUrl::is_prefix("s3://backups/web/a.vdar"));
    }
}
