//! The VMDK text descriptor (formats/DESCRIPTOR.md): standalone files and the text embedded in
//! KDMV sparse extents.
//!
//! The parser classifies each line by its shape, not by the comment headers around it, because
//! producers disagree on those headers. Every `ddb.*` key is kept verbatim and in order: restoring
//! to ESX writes them back.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sniff::excerpt;

/// Largest descriptor accepted, in bytes. Real descriptors are well under 4 KiB; a split disk of
/// the largest size has a few thousand extent lines.
pub const MAX_DESCRIPTOR_BYTES: u64 = 1 << 20;

/// `parentCID` value meaning "no parent".
pub const CID_NO_PARENT: u32 = 0xffff_ffff;

/// Access mode of an extent line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Access {
    /// `RW`
    Rw,
    /// `RDONLY`
    RdOnly,
    /// `NOACCESS`
    NoAccess,
}

/// Type of an extent line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ExtentType {
    /// `FLAT`: raw file with a start sector.
    Flat,
    /// `VMFS`: raw ESX flat file, start sector 0.
    Vmfs,
    /// `SPARSE`: a KDMV (hosted) or COWD file, decided by its magic.
    Sparse,
    /// `VMFSSPARSE`: a COWD redo log.
    VmfsSparse,
    /// `SESPARSE`: an SEsparse redo log.
    SeSparse,
    /// `ZERO`: no file; reads as zeros.
    Zero,
    /// `VMFSRDM` / `VMFSRAW`: device-backed, not archivable as a file.
    Device,
}

/// One extent line: `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ExtentDesc {
    /// Access mode.
    pub access: Access,
    /// Length in sectors.
    pub sectors: u64,
    /// Extent type.
    pub kind: ExtentType,
    /// File name as written (relative to the descriptor's directory unless absolute).
    pub file: Option<String>,
    /// FLAT only: start sector inside the file.
    pub offset: u64,
}

/// A parsed descriptor.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Descriptor {
    /// `version` (1, 2 or 3).
    pub version: u32,
    /// `CID`.
    pub cid: u32,
    /// `parentCID`; [`CID_NO_PARENT`] for a base disk.
    pub parent_cid: u32,
    /// `createType`, as written.
    pub create_type: String,
    /// `parentFileNameHint`, as written.
    pub parent_hint: Option<String>,
    /// `encoding`, if given.
    pub encoding: Option<String>,
    /// Extent lines in order; the virtual disk is their concatenation.
    pub extents: Vec<ExtentDesc>,
    /// Every `ddb.*` key with its unquoted value, verbatim and in file order.
    pub ddb: Vec<(String, String)>,
    /// Other header keys (`isNativeSnapshot`, `changeTrackPath`, ...), verbatim and in order.
    pub other: Vec<(String, String)>,
    /// The original text, up to the first NUL.
    pub text: String,
}

impl Descriptor {
    /// Total size in sectors: the sum of the extent sizes.
    pub fn capacity_sectors(&self) -> u64 {
        self.extents.iter().map(|e| e.sectors).sum()
    }

    /// Whether this descriptor names a parent.
    pub fn has_parent(&self) -> bool {
        self.parent_cid != CID_NO_PARENT || self.parent_hint.is_some()
    }

    /// A `ddb.*` value by key (ASCII case-insensitive, as VMware treats keys).
    pub fn ddb(&self, key: &str) -> Option<&str> {
        self.ddb
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Reads and parses a standalone descriptor file.
    pub fn read(path: &Path) -> Result<Descriptor> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, None, e))?;
        if meta.len() > MAX_DESCRIPTOR_BYTES {
            return Err(Error::corrupt(
                path,
                0,
                format!(
                    "descriptor of {} bytes exceeds {MAX_DESCRIPTOR_BYTES}",
                    meta.len()
                ),
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, None, e))?;
        Descriptor::parse(path, &bytes)
    }

    /// Parses descriptor bytes. `path` names the file in errors. Text after the first NUL is
    /// padding and ignored.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Descriptor> {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        // File names may be in a legacy code page (`encoding="windows-1252"`); decode lossily so
        // ASCII structure still parses and a non-UTF-8 name fails later, at open, by name.
        let text = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let syntax = |line: usize, what: String| Error::Syntax {
            path: path.to_path_buf(),
            line,
            what,
        };

        let mut version = None;
        let mut cid = None;
        let mut parent_cid = None;
        let mut create_type = None;
        let mut parent_hint = None;
        let mut encoding = None;
        let mut extents = Vec::new();
        let mut ddb = Vec::new();
        let mut other = Vec::new();

        for (i, raw) in text.lines().enumerate() {
            let lineno = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if version.is_none() {
                // VMware insists on `version=` first; anything else means this is not a
                // descriptor (or a damaged one), and guessing further would misread it.
                let v = line
                    .strip_prefix("version")
                    .and_then(|r| r.trim_start().strip_prefix('='))
                    .ok_or_else(|| syntax(lineno, not_a_descriptor(bytes, line)))?;
                let v: u32 = unquote(v.trim())
                    .parse()
                    .map_err(|_| syntax(lineno, format!("bad version {v:?}")))?;
                if !(1..=3).contains(&v) {
                    return Err(Error::unsupported(
                        path,
                        format!("descriptor version {v} (1 to 3 are known)"),
                    ));
                }
                version = Some(v);
                continue;
            }
            if let Some(ext) = parse_extent_line(line).map_err(|w| syntax(lineno, w))? {
                extents.push(ext);
                continue;
            }
            let (key, value) = line.split_once('=').ok_or_else(|| {
                syntax(
                    lineno,
                    format!("not key=value or an extent: {}", excerpt(line)),
                )
            })?;
            let key = key.trim();
            let value = unquote(value.trim()).to_string();
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(syntax(lineno, format!("bad key {key:?}")));
            }
            let hex = |v: &str| {
                u32::from_str_radix(v, 16)
                    .map_err(|_| syntax(lineno, format!("{key}={v:?} is not 8 hex digits")))
            };
            match key {
                "CID" => cid = Some(hex(&value)?),
                "parentCID" => parent_cid = Some(hex(&value)?),
                "createType" => create_type = Some(value),
                "parentFileNameHint" => parent_hint = Some(value),
                "encoding" => encoding = Some(value),
                k if k.starts_with("ddb.") => ddb.push((k.to_string(), value)),
                k => other.push((k.to_string(), value)),
            }
        }

        let version = version.ok_or_else(|| syntax(1, "no version= line".into()))?;
        let create_type =
            create_type.ok_or_else(|| syntax(0, "no createType= line".to_string()))?;
        if extents.is_empty() {
            return Err(syntax(0, "no extent lines".into()));
        }
        Ok(Descriptor {
            version,
            // A descriptor without CID is legal for a base that was never opened by VMware;
            // treat it like the never-written marker value.
            cid: cid.unwrap_or(0xffff_fffe),
            parent_cid: parent_cid.unwrap_or(CID_NO_PARENT),
            create_type,
            parent_hint,
            encoding,
            extents,
            ddb,
            other,
            text,
        })
    }
}

/// Why a first line that is not `version=` makes this no descriptor, quoting at most a short
/// excerpt of it, and what the file looks like instead when that is known.
fn not_a_descriptor(bytes: &[u8], line: &str) -> String {
    match crate::sniff::looks_like(bytes) {
        Some(what) if !what.ends_with("descriptor") => format!("not a VMDK descriptor ({what})"),
        _ => format!("expected version=N first, found {}", excerpt(line)),
    }
}

/// Strips one pair of surrounding double quotes.
fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// Parses `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`; `Ok(None)` when the line is not an extent line.
fn parse_extent_line(line: &str) -> std::result::Result<Option<ExtentDesc>, String> {
    let (first, rest) = match line.split_once(char::is_whitespace) {
        Some(p) => p,
        None => return Ok(None),
    };
    let access = match first {
        "RW" => Access::Rw,
        "RDONLY" => Access::RdOnly,
        "NOACCESS" => Access::NoAccess,
        _ => return Ok(None),
    };
    let rest = rest.trim_start();
    let (size, rest) = rest
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("extent line without type: {}", excerpt(line)))?;
    let sectors: u64 = size
        .parse()
        .map_err(|_| format!("extent size {size:?} is not a sector count"))?;
    let rest = rest.trim_start();
    let (kind_s, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let kind = match kind_s {
        "FLAT" => ExtentType::Flat,
        "VMFS" => ExtentType::Vmfs,
        "SPARSE" => ExtentType::Sparse,
        "VMFSSPARSE" => ExtentType::VmfsSparse,
        "SESPARSE" => ExtentType::SeSparse,
        "ZERO" => ExtentType::Zero,
        "VMFSRDM" | "VMFSRAW" | "VMFSPASSTHROUGHRAWDEVICEMAP" => ExtentType::Device,
        other => return Err(format!("unknown extent type {other:?}")),
    };
    let rest = rest.trim();
    let (file, rest) = if let Some(r) = rest.strip_prefix('"') {
        let close = r
            .find('"')
            .ok_or_else(|| format!("unterminated file name in {}", excerpt(line)))?;
        (Some(r[..close].to_string()), r[close + 1..].trim())
    } else if rest.is_empty() {
        (None, "")
    } else {
        return Err(format!(
            "file name must be double-quoted in {}",
            excerpt(line)
        ));
    };
    // Device extents carry extra fields after the offset; only FLAT's offset matters to us.
    let offset = match (kind, rest.split_whitespace().next()) {
        (ExtentType::Flat, Some(o)) => o
            .parse()
            .map_err(|_| format!("extent offset {o:?} is not a sector number"))?,
        (ExtentType::Flat, None) => return Err("FLAT extent without a start sector".into()),
        (_, _) => 0,
    };
    if kind != ExtentType::Zero && file.is_none() {
        return Err(format!("{kind_s} extent without a file name"));
    }
    if sectors == 0 {
        return Err("extent of 0 sectors".into());
    }
    Ok(Some(ExtentDesc {
        access,
        sectors,
        kind,
        file,
        offset,
    }))
}

/// Resolves an extent or parent file name against the directory of the descriptor naming it.
pub fn resolve_relative(descriptor: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        descriptor
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESX_DELTA: &str = "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=fb183c20\n\
        parentCID=d6fbeb4a\nisNativeSnapshot=\"no\"\ncreateType=\"seSparse\"\n\
        parentFileNameHint=\"/vmfs/volumes/5e7a/vm/vm-000001.vmdk\"\n# Extent description\n\
        RW 83886080 SESPARSE \"vm-000002-sesparse.vmdk\"\n\n# The Disk Data Base \n#DDB\n\n\
        ddb.grain = \"8\"\nddb.longContentID = \"1a2b3c4d5e6f7a8b9c0d1e2ffb183c20\"\n\
        ddb.thinProvisioned = \"1\"\nddb.uuid = \"60 00 C2 97 ee 00 4e ed-cb 09 ab 10 91 3f 7f 99\"\n";

    fn parse(s: &str) -> Result<Descriptor> {
        Descriptor::parse(Path::new("t.vmdk"), s.as_bytes())
    }

    #[test]
    fn esx_sesparse_delta() {
        let d = parse(ESX_DELTA).unwrap();
        assert_eq!(d.cid, 0xfb183c20);
        assert_eq!(d.parent_cid, 0xd6fbeb4a);
        assert_eq!(d.create_type, "seSparse");
        assert_eq!(
            d.parent_hint.as_deref(),
            Some("/vmfs/volumes/5e7a/vm/vm-000001.vmdk")
        );
        assert_eq!(d.extents.len(), 1);
        assert_eq!(d.extents[0].kind, ExtentType::SeSparse);
        assert_eq!(d.capacity_sectors(), 83886080);
        assert_eq!(d.ddb.len(), 4);
        assert_eq!(d.ddb("DDB.THINPROVISIONED"), Some("1"));
        assert_eq!(d.other, vec![("isNativeSnapshot".into(), "no".into())]);
    }

    #[test]
    fn extents_of_every_kind_and_crlf_and_nul_padding() {
        let s = "version=1\r\nCID=fffffffe\r\nparentCID=ffffffff\r\ncreateType=\"custom\"\r\n\
            RW 2048 FLAT \"a b-flat.vmdk\" 0\r\nRDONLY 100 FLAT \"x\" 7\r\nNOACCESS 8 ZERO\r\n\
            RW 4 VMFS \"v-flat.vmdk\"\r\nRW 4 SPARSE \"s.vmdk\"\r\nRW 4 VMFSSPARSE \"d.vmdk\"\r\n\0\0junk";
        let d = parse(s).unwrap();
        assert_eq!(d.extents.len(), 6);
        assert_eq!(d.extents[0].file.as_deref(), Some("a b-flat.vmdk"));
        assert_eq!(d.extents[1].access, Access::RdOnly);
        assert_eq!(d.extents[1].offset, 7);
        assert_eq!(d.extents[2].kind, ExtentType::Zero);
        assert_eq!(d.extents[2].file, None);
        assert!(!d.has_parent());
        assert_eq!(d.capacity_sectors(), 2048 + 100 + 8 + 12);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = parse("version=1\nCID=xyz\ncreateType=\"vmfs\"\nRW 1 VMFS \"f\"\n").unwrap_err();
        assert!(matches!(e, Error::Syntax { line: 2, .. }), "{e}");
        let e = parse("# c\nCID=1\n").unwrap_err();
        assert!(matches!(e, Error::Syntax { line: 2, .. }), "{e}");
        let e = parse("version=1\ncreateType=\"vmfs\"\nRW x VMFS \"f\"\n").unwrap_err();
        assert!(matches!(e, Error::Syntax { line: 3, .. }), "{e}");
        let e = parse("version=1\ncreateType=\"vmfs\"\nRW 5 BOGUS \"f\"\n").unwrap_err();
        assert!(matches!(e, Error::Syntax { line: 3, .. }), "{e}");
        let e = parse("version=1\ncreateType=\"vmfs\"\nRW 5 FLAT \"f\n").unwrap_err();
        assert!(matches!(e, Error::Syntax { line: 3, .. }), "{e}");
        let e = parse("version=1\ncreateType=\"vmfs\"\nRW 5 FLAT \"f\"\n").unwrap_err();
        assert!(e.to_string().contains("start sector"), "{e}");
        let e = parse("version=1\ncreateType=\"vmfs\"\njust words\n").unwrap_err();
        assert!(matches!(e, Error::Syntax { line: 3, .. }), "{e}");
        let e = parse("version=9\n").unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        let e = parse("version=1\ncreateType=\"vmfs\"\n").unwrap_err();
        assert!(e.to_string().contains("no extent"), "{e}");
    }

    #[test]
    fn relative_and_absolute_names() {
        let d = Path::new("/data/vm/vm-000001.vmdk");
        assert_eq!(
            resolve_relative(d, "vm-flat.vmdk"),
            PathBuf::from("/data/vm/vm-flat.vmdk")
        );
        assert_eq!(
            resolve_relative(d, "/vmfs/volumes/ds/vm/vm.vmdk"),
            PathBuf::from("/vmfs/volumes/ds/vm/vm.vmdk")
        );
    }
}
