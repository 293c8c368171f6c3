//! Opening the archive a command names: `-` (stdin, a tape when it is one), a regular file
//! (read through its index), an object `s3://BUCKET/KEY` (through its index too, with ranged
//! GETs), a tape drive in whole records, or anything else in one pass; and naming that archive
//! in errors about its bytes. `--stream` reads a file or an object in one pass as well.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use anyhow::Context;

use crate::archive::index::ReadSeek;
use crate::archive::volume::{is_volume, Reopen, VolumeReader};
use crate::cancel::Cancel;
use crate::output::records::{RecordReader, TAPE_READ_BYTES};

pub(super) fn open(path: &Path) -> anyhow::Result<File> {
    File::open(path).with_context(|| format!("{}: cannot open", path.display()))
}

pub(super) fn stdin() -> BufReader<io::StdinLock<'static>> {
    BufReader::with_capacity(1 << 20, io::stdin().lock())
}

/// An archive named on the command line.
pub(super) enum Archive {
    /// `-`, or a file that cannot seek to its end (a tape drive, a FIFO, a block device whose
    /// end is not the archive's): read in one pass.
    Stream(Box<dyn Read>),
    /// A regular file or an object: the index at its end gives random access.
    Seekable(Seekable),
}

/// An archive read with random access.
pub(super) struct Seekable {
    /// A buffered file, or an object's ranged reader.
    pub input: Box<dyn ReadSeek>,
    /// Its size in bytes (for progress).
    pub len: u64,
    /// What an object's reader fetched, to report at `-v`.
    #[cfg(feature = "s3")]
    pub fetched: Option<(String, std::sync::Arc<crate::objstore::FetchStats>)>,
}

impl Seekable {
    /// Logs (at `-v`) what was fetched from object storage.
    pub fn log_fetched(&self) {
        #[cfg(feature = "s3")]
        if let Some((name, stats)) = &self.fetched {
            let (bytes, requests) = stats.get();
            log::debug!("{name}: fetched {bytes} bytes in {requests} requests");
        }
    }
}

/// Opens `path`, in one pass when `stream` even if it could seek. A volume set (its first
/// volume at `path`) is read in one pass, the next volumes loaded by `next_volume` (a shell
/// command) or asked for at the terminal; `cancel` stops the command (without it, a set read
/// through a command installs the signal handlers that set one).
pub(super) fn archive_with(
    path: &Path,
    stream: bool,
    next_volume: Option<&str>,
    cancel: Option<&Cancel>,
) -> anyhow::Result<Archive> {
    #[cfg(feature = "s3")]
    if let Some(name) = path
        .to_str()
        .filter(|p| crate::objstore::ObjectUrl::is_object(p))
    {
        return object(name, stream);
    }
    match local(path)? {
        Archive::Seekable(mut s) => {
            let mut magic = [0u8; 8];
            let n = s.input.read(&mut magic).unwrap_or(0);
            s.input
                .seek(io::SeekFrom::Start(0))
                .with_context(|| format!("{}: cannot seek", path.display()))?;
            if is_volume(&magic[..n]) {
                return volumes(path, Box::new(s.input), next_volume, cancel);
            }
            Ok(if stream {
                Archive::Stream(Box::new(s.input))
            } else {
                Archive::Seekable(s)
            })
        }
        Archive::Stream(r) => {
            let mut r = BufReader::with_capacity(1 << 20, r);
            let head = r
                .fill_buf()
                .with_context(|| format!("{}: cannot read", path.display()))?;
            if is_volume(head) {
                return volumes(path, Box::new(r), next_volume, cancel);
            }
            Ok(Archive::Stream(Box::new(r)))
        }
    }
}

/// A volume set whose first volume `first` is: read through [`VolumeReader`], reopening
/// `path` for each next volume (standard input cannot be reopened: one volume only).
fn volumes(
    path: &Path,
    first: Box<dyn Read>,
    next_volume: Option<&str>,
    cancel: Option<&Cancel>,
) -> anyhow::Result<Archive> {
    let (reopen, changer) = if path == Path::new("-") {
        (None, None)
    } else {
        let p = path.to_path_buf();
        let reopen: Reopen = Box::new(move || reopen_volume(&p));
        // verify and list stop at the first signal like any process, unless a changer
        // command runs: that one must be ended, not left behind.
        let cancel = match (cancel, next_volume) {
            (Some(c), _) => c.clone(),
            (None, Some(_)) => super::signals::on_interrupt()?,
            (None, None) => Cancel::default(),
        };
        (
            Some(reopen),
            Some(super::volumes::changer(next_volume, path, &cancel)),
        )
    };
    let r = VolumeReader::open(&path.display().to_string(), first, reopen, changer)?;
    Ok(Archive::Stream(Box::new(r)))
}

/// Opens the next volume at `path`: a tape drive in whole records, anything else buffered.
fn reopen_volume(path: &Path) -> io::Result<Box<dyn Read>> {
    let f = File::open(path)?;
    Ok(if f.metadata()?.file_type().is_char_device() {
        Box::new(RecordReader::new(f, TAPE_READ_BYTES))
    } else {
        Box::new(BufReader::with_capacity(1 << 20, f))
    })
}

/// An object: a ranged reader, one pass with large requests when `stream`.
#[cfg(feature = "s3")]
fn object(name: &str, stream: bool) -> anyhow::Result<Archive> {
    use crate::objstore::{Client, ObjectReader, ObjectUrl};
    let obj = ObjectUrl::parse(name)?;
    let client = std::sync::Arc::new(Client::from_env()?);
    let r = ObjectReader::open(client, obj)?;
    if stream {
        return Ok(Archive::Stream(Box::new(r.sequential())));
    }
    Ok(Archive::Seekable(Seekable {
        len: r.len(),
        fetched: Some((name.to_string(), r.stats())),
        input: Box::new(r),
    }))
}

/// A base archive or catalog, or a consolidate input, with random access: a file, or an object
/// `s3://BUCKET/KEY` read with ranged GETs.
pub(super) fn seekable(path: &Path) -> anyhow::Result<Box<dyn ReadSeek + Send>> {
    #[cfg(feature = "s3")]
    if let Some(name) = path
        .to_str()
        .filter(|p| crate::objstore::ObjectUrl::is_object(p))
    {
        use crate::objstore::{Client, ObjectReader, ObjectUrl};
        let obj = ObjectUrl::parse(name)?;
        let client = std::sync::Arc::new(Client::from_env()?);
        return Ok(Box::new(ObjectReader::open(client, obj)?));
    }
    Ok(Box::new(open(path)?))
}

/// Opens `path` with random access where it allows it.
pub(super) fn archive(path: &Path) -> anyhow::Result<Archive> {
    archive_with(path, false, None, None)
}

fn local(path: &Path) -> anyhow::Result<Archive> {
    if path == Path::new("-") {
        // `vdar restore - < /dev/nst0` reads a tape too.
        let tape = rustix::fs::fstat(io::stdin().as_fd()).is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::CharacterDevice
        });
        return Ok(Archive::Stream(if tape {
            Box::new(RecordReader::new(io::stdin().lock(), TAPE_READ_BYTES))
        } else {
            Box::new(stdin())
        }));
    }
    let f = open(path)?;
    let kind = f
        .metadata()
        .with_context(|| format!("{}: cannot stat", path.display()))?
        .file_type();
    if kind.is_dir() {
        anyhow::bail!("{}: is a directory, not an archive", path.display());
    }
    Ok(if kind.is_file() {
        Archive::Seekable(Seekable {
            len: f.metadata().map(|m| m.len()).unwrap_or(0),
            input: Box::new(BufReader::with_capacity(1 << 20, f)),
            #[cfg(feature = "s3")]
            fetched: None,
        })
    } else if kind.is_char_device() {
        // A tape drive: every read a whole number of blocks, large enough for any record.
        Archive::Stream(Box::new(RecordReader::new(f, TAPE_READ_BYTES)))
    } else {
        Archive::Stream(Box::new(BufReader::with_capacity(1 << 20, f)))
    })
}

/// Names the archive in errors about its bytes (the library knows only their offsets); with
/// `hint`, says what to do about a damaged one.
pub(super) fn about_archive(e: crate::Error, path: &Path, hint: bool) -> anyhow::Error {
    match e {
        crate::Error::ArchiveCorrupt { .. } | crate::Error::UnsupportedVersion { .. } => {
            let name = if path == Path::new("-") {
                "standard input".to_string()
            } else {
                path.display().to_string()
            };
            // Salvage helps a damaged archive, not a file that is no archive at all; and such a
            // file has no "archive byte" to point at: say what it is instead.
            if let crate::Error::ArchiveCorrupt { what, .. } = &e {
                if what.starts_with("not a vdar archive") {
                    return anyhow::anyhow!("{name} is {what}");
                }
            }
            let hint = if hint && matches!(e, crate::Error::ArchiveCorrupt { .. }) {
                "\n  `vdar verify` names every damaged record; `vdar restore --salvage` restores \
                 everything intact"
            } else {
                ""
            };
            anyhow::anyhow!("{name}: {e}{hint}")
        }
        e => e.into(),
    }
}
