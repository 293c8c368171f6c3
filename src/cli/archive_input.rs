//! Opening the archive a command names: `-` (stdin, a tape when it is one), a regular file
//! (read through its index), a tape drive in whole records, or anything else in one pass; and
//! naming that archive in errors about its bytes.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use anyhow::Context;

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
    /// A regular file: the index at its end gives random access.
    Seekable(BufReader<File>),
}

pub(super) fn archive(path: &Path) -> anyhow::Result<Archive> {
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
        Archive::Seekable(BufReader::with_capacity(1 << 20, f))
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
