//! The library's one error type.
//!
//! Every variant carries the context a backup administrator needs to act on it: the file and, for
//! anything read from disk, the byte offset. Context is added where a layer boundary is crossed
//! (the extent reader knows its file; the chain knows which layer), never by string-pasting later.

use std::io;
use std::path::PathBuf;

/// Errors from every stage of vdar.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error on a named file, at a byte offset when one applies.
    ///
    /// The message includes the operating system's; the cause is not also exposed as
    /// `source()`, or error chains (`{:#}`) would print it twice.
    #[error("{}{}: {cause}", path.display(), fmt_offset(*offset))]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// Byte offset of the failed operation, if it had one.
        offset: Option<u64>,
        /// The underlying error.
        cause: io::Error,
    },
    /// Bytes on disk that violate their format.
    #[error("{}: byte {offset:#x}: {what}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the offending structure.
        offset: u64,
        /// What is wrong, with the bad value and the limit.
        what: String,
    },
    /// A syntax error in a text file (descriptor, .vmx, .vmsd, block-map text).
    #[error("{}: line {line}: {what}", path.display())]
    Syntax {
        /// The text file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What could not be understood.
        what: String,
    },
    /// A well-formed input that uses a feature vdar does not implement.
    #[error("{}: unsupported: {what}", path.display())]
    Unsupported {
        /// The file using the feature.
        path: PathBuf,
        /// The feature.
        what: String,
    },
    /// A child's parentCID does not match its parent's CID.
    #[error(
        "{}: parentCID {child_pcid:08x} does not match CID {parent_cid:08x} of its parent {}: \
         the parent was modified after the snapshot was taken (--ignore-cid overrides)",
        child.display(),
        parent.display()
    )]
    ChainMismatch {
        /// The child descriptor.
        child: PathBuf,
        /// The parent descriptor.
        parent: PathBuf,
        /// The child's parentCID.
        child_pcid: u32,
        /// The parent's CID.
        parent_cid: u32,
    },
    /// A structurally invalid snapshot chain (loop, missing parent, size mismatch).
    #[error("{}: {what}", path.display())]
    Chain {
        /// The descriptor where the problem was found.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A vSphere server refused a request or answered with a fault (wrong password, unknown
    /// object, failed task), or could not be reached.
    #[error("vSphere {server}: {what}")]
    Remote {
        /// The API endpoint.
        server: String,
        /// What was asked and what the server said.
        what: String,
    },
    /// An object store (the S3 API) refused a request, answered something that cannot be
    /// right (a short body, a range it was not asked for), or could not be reached. `object`
    /// is `s3://BUCKET/KEY`; `what` names the request, the endpoint and what the server said.
    #[error("{object}{}: {what}", fmt_offset(*offset))]
    ObjectStore {
        /// The object, as `s3://BUCKET/KEY`.
        object: String,
        /// Byte offset in the object, for reads and part uploads.
        offset: Option<u64>,
        /// What was asked, of which endpoint, and what happened.
        what: String,
    },
    /// Stopped through a [`Cancel`](crate::cancel::Cancel) flag (the value it was set to).
    #[error("interrupted")]
    Interrupted(usize),
    /// Invalid request from the caller (bad option combination, unknown VM or snapshot name).
    #[error("{0}")]
    Usage(String),
    /// An archive that violates formats/ARCHIVE.md, at a byte offset of the archive stream.
    #[error("archive byte {offset:#x}: {what}")]
    ArchiveCorrupt {
        /// Byte offset in the archive stream of the offending structure.
        offset: u64,
        /// What is wrong, with the bad value and the limit.
        what: String,
    },
    /// An archive written by a newer format version than this build reads.
    #[error("archive written by a newer version of vdar (format v{found} > v{supported})")]
    UnsupportedVersion {
        /// The archive's format version.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A VM, disk or file name that could escape the restore directory or collide on disk.
    #[error("unsafe name {name:?}: {why}")]
    UnsafeName {
        /// The name as found (archive or backup request).
        name: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// A restore target that exists already and `force` was not given.
    #[error("{}: already exists (use --force to replace it)", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A block map (formats/BLOCKMAP.md) that is malformed or inconsistent: runs that overlap,
    /// leave gaps, miss the end of their file, or name an unknown volume.
    #[error("{}: {what}", path.display())]
    BlockMap {
        /// The block-map file (or `-t0` text) at fault.
        path: PathBuf,
        /// What is wrong, naming the mapped file and byte offsets.
        what: String,
    },
    /// A LUN (device or image file) that does not hold what the block map needs: no VMFS LVM
    /// header, a truncated device, an extent claimed twice, a logical volume with missing PEs.
    #[error("{}{}: {what}", path.display(), fmt_offset(*offset))]
    Lun {
        /// The device path (or the first path of the LUN).
        path: PathBuf,
        /// Byte offset on the device, when one applies.
        offset: Option<u64>,
        /// What is wrong.
        what: String,
    },
    /// A probe hash computed on the ESX host does not match the bytes read from the LUNs: the
    /// file moved since the map was taken, or the map is wrong. The copy must not be trusted.
    /// Boxed: it is the largest variant and errors travel through every `Result`.
    #[error("{0}")]
    ProbeMismatch(Box<ProbeMismatch>),
    /// SAN write-back refuses its target before writing anything: no single flat file of the
    /// disk's size in the map, or a target that is not fully allocated and zeroed
    /// (lazy-zeroed or thin), so that ESX would not read back what is written.
    #[error("{}: cannot write back into {file}: {what}", map.display())]
    WriteBackTarget {
        /// The block-map file.
        map: PathBuf,
        /// The target file as named in the map (or what was asked for).
        file: String,
        /// Why, naming sizes and byte ranges.
        what: String,
    },
    /// SAN write-back read the target back after writing and found bytes that differ from the
    /// archive. Boxed like [`Error::ProbeMismatch`].
    #[error("{0}")]
    WriteBackMismatch(Box<WriteBackMismatch>),
}

fn fmt_offset(offset: Option<u64>) -> String {
    offset.map(|o| format!(": byte {o:#x}")).unwrap_or_default()
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path` at `offset`. An object store's error that travelled through
    /// `std::io` (a ranged reader behind `Read`, an upload behind `Write`) comes out as itself:
    /// it already names the object and the offset, better than the layer that saw it pass. So
    /// does a refusal (`Usage`) from below `std::io`, such as a wrong volume of a set, and a
    /// stop (`Interrupted`) seen while waiting for a drive.
    pub fn io(path: impl Into<PathBuf>, offset: Option<u64>, source: io::Error) -> Self {
        if source
            .get_ref()
            .and_then(|e| e.downcast_ref::<Error>())
            .is_some_and(|e| {
                matches!(
                    e,
                    Error::ObjectStore { .. } | Error::Usage(_) | Error::Interrupted(_)
                )
            })
        {
            let inner = source.into_inner().expect("invariant: checked above");
            return *inner.downcast::<Error>().expect("invariant: checked above");
        }
        Error::Io {
            path: path.into(),
            offset,
            cause: source,
        }
    }

    /// Corrupt bytes in `path` at `offset`.
    pub fn corrupt(path: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            offset,
            what: what.into(),
        }
    }

    /// Corrupt archive bytes at stream offset `offset`.
    pub fn archive(offset: u64, what: impl Into<String>) -> Self {
        Error::ArchiveCorrupt {
            offset,
            what: what.into(),
        }
    }

    /// An unsupported feature in `path`.
    pub fn unsupported(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Unsupported {
            path: path.into(),
            what: what.into(),
        }
    }
}

/// Details of [`Error::ProbeMismatch`].
#[derive(Debug)]
pub struct ProbeMismatch {
    /// The block-map file.
    pub map: PathBuf,
    /// The mapped file's path as written in the map.
    pub file: String,
    /// Probe start in the file.
    pub offset: u64,
    /// Probe length.
    pub len: u64,
    /// `before copy` or `after copy`.
    pub stage: &'static str,
    /// Hash recorded in the map.
    pub expected: String,
    /// Hash of the bytes read.
    pub found: String,
}

impl std::fmt::Display for ProbeMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: probe of {} bytes {:#x}..{:#x} ({}): sha256 {} != {} from the host: the file \
             moved or the block map is wrong",
            self.map.display(),
            self.file,
            self.offset,
            self.offset + self.len,
            self.stage,
            self.found,
            self.expected
        )
    }
}

/// Details of [`Error::WriteBackMismatch`].
#[derive(Debug)]
pub struct WriteBackMismatch {
    /// The block-map file.
    pub map: PathBuf,
    /// The target file as named in the map.
    pub file: String,
    /// The mismatching ranges found (at most [`WriteBackMismatch::MAX_LISTED`]).
    pub ranges: Vec<MismatchedRange>,
    /// How many ranges mismatched in all.
    pub total: usize,
}

impl WriteBackMismatch {
    /// Most ranges kept and listed.
    pub const MAX_LISTED: usize = 16;
}

/// One range of a written disk that does not read back as archived.
#[derive(Debug, Clone)]
pub struct MismatchedRange {
    /// Disk (and target file) byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// The LUN path holding the range's first byte.
    pub lun: PathBuf,
    /// Device byte offset of the range's first byte on that LUN.
    pub device_offset: u64,
    /// What differs (digests, or "not zero").
    pub what: String,
}

impl std::fmt::Display for WriteBackMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}: {} range(s) read back differently from the archive after writing",
            self.map.display(),
            self.file,
            self.total
        )?;
        for r in &self.ranges {
            write!(
                f,
                "; disk bytes {:#x}..{:#x} at {} device byte {:#x}: {}",
                r.offset,
                r.offset + r.len,
                r.lun.display(),
                r.device_offset,
                r.what
            )?;
        }
        Ok(())
    }
}
