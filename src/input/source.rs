//! Byte sources: the files of a snapshot chain, opened once and read with positioned reads.
//!
//! Every layer file (descriptor extents, sparse extents, redo logs) is registered in one
//! [`FileTable`] per chain and named by a [`FileId`]. Extent readers only ever describe *where*
//! data lives (`FileId` + byte offset); the reading stage fetches it. That split is what lets the
//! same collapse logic feed pread, io_uring, or a SAN block map.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// Index of a file in a chain's [`FileTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// Opens `path` with `O_DIRECT`, for reading or (`write`) for writing. Callers keep a buffered
/// handle beside it for unaligned pieces, and treat a refusal (tmpfs) as "no direct handle"
/// or as an error, as their user asked.
pub fn open_direct(path: &std::path::Path, write: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .read(!write)
        .write(write)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path)
}

/// Something that can be read at arbitrary byte offsets: a local file or (later) a file
/// reassembled from LUN extents through a block map.
pub trait ByteSource: Send + Sync + std::fmt::Debug {
    /// The name used in error messages.
    fn path(&self) -> &Path;
    /// Length in bytes.
    fn len(&self) -> u64;
    /// Whether the source is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads exactly `buf.len()` bytes at `offset`; reading past the end is a [`Error::Corrupt`]
    /// naming the offset, never silent zeros.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    /// The next data region at or after `offset`, as `(start, end)`, or `None` when only holes
    /// remain. Sources that cannot tell report everything as data.
    fn next_data(&self, offset: u64) -> Result<Option<(u64, u64)>> {
        Ok((offset < self.len()).then(|| (offset, self.len())))
    }
    /// How many [`ByteSource::read_exact_at`] calls are worth running at once. Local sources
    /// say 1 (their device reads go to the I/O engine instead); a network source, where each
    /// call waits a round trip, says how many connections it keeps.
    fn concurrent_reads(&self) -> usize {
        1
    }
    /// Bytes of unwanted data worth reading through to join two nearby reads into one: 0 where a
    /// read costs little (local files, LUNs), more where every read is a round trip.
    fn gather_gap(&self) -> u64 {
        0
    }
    /// The open file behind this source, for readers (io_uring) that want the descriptor.
    fn as_file(&self) -> Option<&File> {
        None
    }
    /// Where the bytes `[offset, offset + len)` physically live, in order, for readers that
    /// issue their own I/O (`crate::blockio`). The pieces' lengths add up to `len`. A
    /// [`Piece::Copy`] (the default) tells the reader to call [`ByteSource::read_exact_at`];
    /// when a [`Piece::Read`] fails, the reader retries those bytes through `read_exact_at`
    /// too, so a source's own policy (path failover, precise errors) always gets the last word.
    fn locate(&self, offset: u64, len: u64) -> Result<Vec<Piece>> {
        check_range(self.path(), offset, len, self.len())?;
        Ok(vec![Piece::Copy { len }])
    }
}

/// A piece of a located range (see [`ByteSource::locate`]).
#[derive(Clone, Debug)]
pub enum Piece {
    /// `len` bytes at byte `offset` of `file`. `direct` is the same file opened with
    /// `O_DIRECT`, which a reader may use when offset, length and buffer are aligned to
    /// [`crate::blockio::DIRECT_ALIGN`]. The `Arc`s keep the descriptors open while a read
    /// is in flight.
    Read {
        /// The file or device.
        file: Arc<File>,
        /// The same, opened with `O_DIRECT`, if requested.
        direct: Option<Arc<File>>,
        /// Byte offset in `file`.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// `len` bytes of zeros that must not be read (holes, to-be-zeroed blocks).
    Zero {
        /// Length in bytes.
        len: u64,
    },
    /// `len` bytes with no physical placement: read them with `read_exact_at`.
    Copy {
        /// Length in bytes.
        len: u64,
    },
}

impl Piece {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Piece::Read { len, .. } | Piece::Zero { len } | Piece::Copy { len } => *len,
        }
    }
    /// Whether the piece is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The error for a read of `len` bytes at `offset` that runs past `size`.
pub(crate) fn check_range(path: &Path, offset: u64, len: u64, size: u64) -> Result<()> {
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(Error::corrupt(
            path,
            offset,
            format!("read of {len} bytes runs past the end of the file ({size} bytes)"),
        ));
    }
    Ok(())
}

/// A local file read with `pread`.
#[derive(Debug)]
pub struct LocalFile {
    path: PathBuf,
    file: Arc<File>,
    /// The same file opened with `O_DIRECT`, for aligned bulk reads.
    direct: Option<Arc<File>>,
    len: u64,
}

impl LocalFile {
    /// Opens `path` read-only.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, None, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, None, e))?.len();
        Ok(LocalFile {
            path: path.to_path_buf(),
            file: Arc::new(file),
            direct: None,
            len,
        })
    }

    /// Opens `path` read-only, plus an `O_DIRECT` handle that bulk readers use for aligned
    /// reads, so a backup of disks larger than memory does not push the host's page cache out.
    /// A file system that refuses `O_DIRECT` (tmpfs) leaves only the buffered handle.
    pub fn open_direct(path: &Path) -> Result<Self> {
        let mut f = Self::open(path)?;
        f.direct = open_direct(path, false).ok().map(Arc::new);
        Ok(f)
    }
}

impl ByteSource for LocalFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range(&self.path, offset, buf.len() as u64, self.len)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io(&self.path, Some(offset), e))
    }

    fn next_data(&self, offset: u64) -> Result<Option<(u64, u64)>> {
        if offset >= self.len {
            return Ok(None);
        }
        // SEEK_DATA/SEEK_HOLE find the holes of a thin -flat.vmdk on a local filesystem without
        // reading them. Filesystems without support report the whole file as data (POSIX).
        use rustix::fs::{seek, SeekFrom};
        let start = match seek(&self.file, SeekFrom::Data(offset)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => return Ok(None),
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => {
                return Ok(Some((offset, self.len)))
            }
            Err(e) => return Err(Error::io(&self.path, Some(offset), io::Error::from(e))),
        };
        let end = match seek(&self.file, SeekFrom::Hole(start)) {
            Ok(e) => e.min(self.len),
            Err(e) => return Err(Error::io(&self.path, Some(start), io::Error::from(e))),
        };
        Ok(Some((start.min(self.len), end)))
    }

    fn as_file(&self) -> Option<&File> {
        Some(&self.file)
    }

    fn locate(&self, offset: u64, len: u64) -> Result<Vec<Piece>> {
        check_range(&self.path, offset, len, self.len)?;
        Ok(vec![Piece::Read {
            file: self.file.clone(),
            direct: self.direct.clone(),
            offset,
            len,
        }])
    }
}

/// Opens byte sources by path. The local implementation opens files; the SAN implementation
/// resolves paths through a block map.
pub trait SourceOpener: Send + Sync {
    /// Opens `path`.
    fn open(&self, path: &Path) -> Result<Arc<dyn ByteSource>>;
    /// Whether `path` exists (used for parent resolution fallbacks); an error when that cannot
    /// be known.
    fn exists(&self, path: &Path) -> Result<bool>;
}

/// How the layer files (or, in SAN mode, the LUNs) are read.
///
/// The default is [`ReadPath::Direct`]: a backup reads each byte once, and on a backup proxy
/// the disks are not in the page cache. Measured cold on the 8 GiB bench chain
/// (tools/bench-readpath.sh, README "Performance"), direct reads are faster than buffered ones,
/// and warm the two are level; buffered reads also fill the page cache with the whole disk,
/// evicting what the proxy had cached. File systems that refuse `O_DIRECT` (tmpfs) and
/// unaligned pieces are read buffered, silently.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum ReadPath {
    /// Through the page cache.
    Buffered,
    /// `O_DIRECT` where the file system and alignment allow.
    #[default]
    Direct,
}

impl ReadPath {
    /// Whether files are also opened with `O_DIRECT`.
    pub fn is_direct(self) -> bool {
        self == ReadPath::Direct
    }
}

/// Opens local files.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalOpener {
    /// Also open each file with `O_DIRECT` (see [`LocalFile::open_direct`]).
    pub direct: bool,
}

impl LocalOpener {
    /// An opener reading the way `path` says.
    pub fn new(path: ReadPath) -> LocalOpener {
        LocalOpener {
            direct: path.is_direct(),
        }
    }
}

impl SourceOpener for LocalOpener {
    fn open(&self, path: &Path) -> Result<Arc<dyn ByteSource>> {
        Ok(Arc::new(if self.direct {
            LocalFile::open_direct(path)?
        } else {
            LocalFile::open(path)?
        }))
    }
    fn exists(&self, path: &Path) -> Result<bool> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(path, None, e)),
        }
    }
}

/// All files of one chain, indexed by [`FileId`].
#[derive(Debug, Default, Clone)]
pub struct FileTable {
    files: Vec<Arc<dyn ByteSource>>,
}

impl FileTable {
    /// Registers a source and returns its id.
    pub fn add(&mut self, source: Arc<dyn ByteSource>) -> FileId {
        let id = FileId(u32::try_from(self.files.len()).expect("invariant: < 2^32 files"));
        self.files.push(source);
        id
    }

    /// The source with id `id`.
    pub fn get(&self, id: FileId) -> &Arc<dyn ByteSource> {
        &self.files[id.0 as usize]
    }

    /// Number of registered files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is registered.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Reads each `(offset, buf)` of `reads` from `src`, [`ByteSource::concurrent_reads`] at a
/// time: a network source then waits about one round trip for the lot instead of one per read.
/// The error is that of the first failed read in order.
pub(crate) fn read_each(src: &dyn ByteSource, reads: &mut [(u64, &mut [u8])]) -> Result<()> {
    let serial = |group: &mut [(u64, &mut [u8])]| {
        group
            .iter_mut()
            .try_for_each(|(at, buf)| src.read_exact_at(buf, *at))
    };
    let ways = src.concurrent_reads().min(reads.len());
    if ways <= 1 {
        return serial(reads);
    }
    let first = reads[0].0;
    let per = reads.len().div_ceil(ways);
    std::thread::scope(|s| {
        let handles: Vec<_> = reads
            .chunks_mut(per)
            .map(|group| s.spawn(move || serial(group)))
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join().unwrap_or_else(|_| {
                let why = std::io::Error::other("reader thread panicked");
                Err(Error::io(src.path(), Some(first), why))
            })
        })
    })
}

/// Reads a little-endian integer from a byte slice at `at`. Callers pass slices they sized
/// themselves, so an out-of-range index is a programming error.
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("invariant: 4-byte slice"))
}

/// See [`le_u32`].
pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("invariant: 8-byte slice"))
}

/// An in-memory source, for unit tests and fuzz targets.
#[derive(Debug)]
pub struct MemSource {
    path: PathBuf,
    bytes: Vec<u8>,
    gather_gap: u64,
}

impl MemSource {
    /// Wraps `bytes` under the display name `name`.
    pub fn new(name: &str, bytes: Vec<u8>) -> Self {
        MemSource {
            path: PathBuf::from(name),
            bytes,
            gather_gap: 0,
        }
    }

    /// The same source, saying reads `gap` bytes apart are worth joining (as a network
    /// source does).
    pub fn gathering(mut self, gap: u64) -> Self {
        self.gather_gap = gap;
        self
    }
}

impl ByteSource for MemSource {
    fn path(&self) -> &Path {
        &self.path
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn gather_gap(&self) -> u64 {
        self.gather_gap
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|o| self.bytes.get(o..o.checked_add(buf.len())?))
            .ok_or_else(|| {
                Error::corrupt(
                    &self.path,
                    offset,
                    format!(
                        "read of {} bytes runs past the end of the file ({} bytes)",
                        buf.len(),
                        self.bytes.len()
                    ),
                )
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}
