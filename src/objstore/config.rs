//! Where the object store is and who we are to it, taken the way the AWS CLI and SDKs take it,
//! so that a backup host already set up for `aws s3` needs nothing more:
//!
//! | what | first found of |
//! |---|---|
//! | credentials | `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`); the profile's `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token` in the credentials file, then in the config file |
//! | profile | `AWS_PROFILE`, `AWS_DEFAULT_PROFILE`, else `default` |
//! | files | `AWS_SHARED_CREDENTIALS_FILE` (default `~/.aws/credentials`: sections `[NAME]`), `AWS_CONFIG_FILE` (default `~/.aws/config`: `[default]`, `[profile NAME]`) |
//! | region | `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, else `us-east-1` |
//! | endpoint | `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, the profile's `endpoint_url`, else AWS (`https://s3.REGION.amazonaws.com`) |
//! | addressing | `VDAR_S3_ADDRESSING_STYLE=path\|virtual`, else the profile's `s3 = … addressing_style`, else path-style when an endpoint is set (MinIO, Garage, Ceph: their buckets are rarely DNS names) and virtual-hosted for AWS |
//!
//! vdar's own knobs, for tests and tuning: `VDAR_S3_PART_SIZE` (bytes) sets the first part
//! size of an upload (default 8 MiB; the growth rule is [`super::PartSizes`]);
//! `VDAR_S3_LIST_KEYS` the most keys asked for per listing page (default: the server's, 1,000).

use std::collections::HashMap;
use std::path::PathBuf;

use super::parts::PartSizes;
use super::sigv4::Credentials;
use crate::error::{Error, Result};

/// The environment variables read, with what each does: the man page's ENVIRONMENT section.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN", "credentials for s3:// archives; without them, the profile's in the credentials file, then in the config file"),
    ("AWS_PROFILE", "the profile in ~/.aws/credentials and ~/.aws/config (default: default)"),
    ("AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE", "other credentials and config files"),
    ("AWS_REGION, AWS_DEFAULT_REGION", "the signing region (else the profile's region, else us-east-1)"),
    ("AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL", "the S3 endpoint, http(s)://HOST[:PORT] (else the profile's endpoint_url, else AWS); requests are then path-style"),
    ("VDAR_S3_ADDRESSING_STYLE", "path or virtual: force the addressing style"),
    ("VDAR_S3_PART_SIZE", "bytes of the first upload parts (default 8 MiB; doubling every 1,000 parts)"),
    ("VDAR_S3_LIST_KEYS", "most keys per page when listing a prefix, 1 to 1000 (default: the server's)"),
];

/// Everything needed to talk to one store.
#[derive(Clone, Debug)]
pub struct S3Config {
    /// `scheme://host[:port]`, no trailing slash.
    pub endpoint: String,
    /// The signing region.
    pub region: String,
    /// Who signs.
    pub credentials: Credentials,
    /// `https://ENDPOINT/BUCKET/KEY` (true) or `https://BUCKET.ENDPOINT/KEY`.
    pub path_style: bool,
    /// Upload part sizes.
    pub parts: PartSizes,
    /// `max-keys` of each listing page (`None`: the server's default).
    pub list_keys: Option<u32>,
}

/// Where the settings came from, for the error that says none were found.
const HOW: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with \
                   ~/.aws/credentials";

impl S3Config {
    /// From the process environment and the AWS files it points to.
    pub fn from_env() -> Result<S3Config> {
        Self::from_lookup(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// From `env` (a lookup of environment variables) and the files it names.
    pub fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<S3Config> {
        let home = env("HOME").map(PathBuf::from);
        let file = |var: &str, rel: &str| {
            env(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(rel)))
        };
        let profile = env("AWS_PROFILE")
            .or_else(|| env("AWS_DEFAULT_PROFILE"))
            .unwrap_or_else(|| "default".into());
        let creds_file = read_ini(file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"))?;
        let config_file = read_ini(file("AWS_CONFIG_FILE", ".aws/config"))?;
        let config_section = if profile == "default" {
            "default".to_string()
        } else {
            format!("profile {profile}")
        };
        let from_files = |key: &str| {
            creds_file
                .get(&profile)
                .and_then(|s| s.get(key))
                .or_else(|| config_file.get(&config_section).and_then(|s| s.get(key)))
                .cloned()
        };
        let from_config = |key: &str| {
            config_file
                .get(&config_section)
                .and_then(|s| s.get(key))
                .cloned()
        };
        let credentials = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key), Some(secret_key)) => Credentials {
                access_key,
                secret_key,
                session_token: env("AWS_SESSION_TOKEN"),
            },
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::Usage(
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together".into(),
                ))
            }
            (None, None) => match (
                from_files("aws_access_key_id"),
                from_files("aws_secret_access_key"),
            ) {
                (Some(access_key), Some(secret_key)) => Credentials {
                    access_key,
                    secret_key,
                    session_token: from_files("aws_session_token"),
                },
                _ => {
                    return Err(Error::Usage(format!(
                        "no S3 credentials for profile {profile:?}: {HOW}"
                    )))
                }
            },
        };
        let region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| from_config("region"))
            .unwrap_or_else(|| "us-east-1".into());
        let given = env("AWS_ENDPOINT_URL_S3")
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or_else(|| from_config("endpoint_url"));
        let path_style = match env("VDAR_S3_ADDRESSING_STYLE")
            .or_else(|| from_config("s3.addressing_style"))
            .as_deref()
        {
            Some("path") => true,
            Some("virtual") => false,
            Some(other) => {
                return Err(Error::Usage(format!(
                    "S3 addressing style {other:?}: expected path or virtual"
                )))
            }
            None => given.is_some(),
        };
        let endpoint = match given {
            Some(e) => check_endpoint(&e)?,
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        let mut parts = PartSizes::default();
        if let Some(s) = env("VDAR_S3_PART_SIZE") {
            parts.first = s
                .parse()
                .ok()
                .filter(|&n: &u64| (1 << 10..=PartSizes::MAX_PART_BYTES).contains(&n))
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "VDAR_S3_PART_SIZE={s}: expected a number of bytes, 1 KiB to 5 GiB"
                    ))
                })?;
        }
        let list_keys = match env("VDAR_S3_LIST_KEYS") {
            None => None,
            Some(s) => Some(
                s.parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        Error::Usage(format!("VDAR_S3_LIST_KEYS={s}: expected 1 to 1000"))
                    })?,
            ),
        };
        Ok(S3Config {
            endpoint,
            region,
            credentials,
            path_style,
            parts,
            list_keys,
        })
    }
}

/// `http(s)://host[:port]` with nothing after it but an optional `/`.
fn check_endpoint(e: &str) -> Result<String> {
    let e = e.trim_end_matches('/');
    let rest = e
        .strip_prefix("https://")
        .or_else(|| e.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains('/') => Ok(e.to_string()),
        _ => Err(Error::Usage(format!(
            "S3 endpoint {e:?}: expected http(s)://HOST[:PORT]"
        ))),
    }
}

/// Sections of an AWS-style INI file: `[name]`, `key = value`, `#`/`;` comments, and nested
/// blocks (`s3 =` followed by indented `key = value` lines) as `s3.key`. A missing file is
/// empty; an unreadable one is an error (a credentials file we cannot read must not silently
/// send a backup somewhere else).
type Ini = HashMap<String, HashMap<String, String>>;

fn read_ini(path: Option<PathBuf>) -> Result<Ini> {
    let Some(path) = path else {
        return Ok(Ini::new());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(parse_ini(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ini::new()),
        Err(e) => Err(Error::io(&path, None, e)),
    }
}

fn parse_ini(text: &str) -> Ini {
    let mut out = Ini::new();
    let mut section = String::new();
    let mut nested: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            nested = None;
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        let indented = raw.starts_with([' ', '\t']);
        let key = match (&nested, indented) {
            (Some(n), true) => format!("{n}.{k}"),
            _ if v.is_empty() => {
                nested = Some(k);
                continue;
            }
            _ => {
                nested = None;
                k
            }
        };
        out.entry(section.clone()).or_default().insert(key, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn environment_wins_and_an_endpoint_means_path_style() {
        let c = S3Config::from_lookup(&lookup(&[
            ("HOME", "/nonexistent"),
            ("AWS_ACCESS_KEY_ID", "GK1"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_DEFAULT_REGION", "garage"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:3900/"),
            ("VDAR_S3_PART_SIZE", "1048576"),
        ]))
        .unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:3900");
        assert_eq!(c.region, "garage");
        assert!(c.path_style);
        assert_eq!(c.parts.first, 1 << 20);
        let aws = S3Config::from_lookup(&lookup(&[
            ("HOME", "/nonexistent"),
            ("AWS_ACCESS_KEY_ID", "A"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ]))
        .unwrap();
        assert_eq!(aws.endpoint, "https://s3.us-east-1.amazonaws.com");
        assert!(!aws.path_style);
        let none = S3Config::from_lookup(&lookup(&[("HOME", "/nonexistent")]));
        assert!(none.unwrap_err().to_string().contains("no S3 credentials"));
    }

    #[test]
    fn profiles_come_from_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        let config = dir.path().join("config");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = D\naws_secret_access_key = d\n\
             [backup]\naws_access_key_id = B\naws_secret_access_key = b\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "# comment\n[profile backup]\nregion = eu-west-3\nendpoint_url = https://s3.lan:9000\n\
             s3 =\n  addressing_style = virtual\n",
        )
        .unwrap();
        let c = S3Config::from_lookup(&lookup(&[
            ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
            ("AWS_PROFILE", "backup"),
        ]))
        .unwrap();
        assert_eq!(c.credentials.access_key, "B");
        assert_eq!(c.region, "eu-west-3");
        assert_eq!(c.endpoint, "https://s3.lan:9000");
        assert!(!c.path_style);
    }
}
