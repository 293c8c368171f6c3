//! Opening an output by the name a user gave: `-` is standard output (refused when it is a
//! terminal), an existing device or FIFO is written in place, anything else is a regular file
//! staged as `NAME.partial` ([`super::staged`]) and renamed into place by the caller's commit.
//!
//! A device or FIFO (a tape drive, `/dev/null`, a named pipe) is written in place because a
//! `.partial` sibling renamed over it would replace the device node. A block device holds a
//! file system or a LUN, so writing over it needs `force`.

use std::fs::File;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::staged::Staged;
use crate::error::{Error, Result};

/// What the front end asked for.
#[derive(Clone, Copy, Debug)]
pub struct OutputSpec<'a> {
    /// The output's name; `-` is standard output.
    pub path: &'a Path,
    /// Replace an existing file; write over a block device.
    pub force: bool,
    /// What is written, for refusals ("an archive", "a disk image").
    pub what: &'a str,
}

impl OutputSpec<'_> {
    /// The name errors use: `stdout`, or the path as given.
    pub fn name(&self) -> String {
        if self.is_stdout() {
            "stdout".to_string()
        } else {
            self.path.display().to_string()
        }
    }

    /// The name when it is an object in object storage (`s3://BUCKET/KEY`).
    pub fn object_name(&self) -> Option<&str> {
        self.path.to_str().filter(|p| p.starts_with("s3://"))
    }

    fn is_stdout(&self) -> bool {
        self.path == Path::new("-")
    }
}

/// An opened output.
#[derive(Debug)]
pub enum Opened {
    /// Standard output, a device or a FIFO: written in one pass, in place.
    Stream {
        /// The open descriptor.
        file: File,
        /// A character device (a tape drive takes each write as records).
        tape: bool,
    },
    /// A regular file, written as `partial` and renamed by `staged`'s commit.
    Staged {
        /// The staging (holds the lock; removes the partial file when dropped uncommitted).
        staged: Staged,
        /// The partial file's path.
        partial: PathBuf,
        /// The partial file, opened read-write and empty.
        file: File,
    },
}

/// Refuses to send `what` (an image, an archive, an OVA) to a terminal: it would flood it, and
/// what the user meant was a file or a pipe.
pub fn refuse_terminal(what: &str) -> Result<()> {
    if std::io::stdout().is_terminal() {
        return Err(Error::Usage(format!(
            "refusing to write {what} to a terminal: redirect it to a file or a pipe"
        )));
    }
    Ok(())
}

/// Opens the output `spec` names. An object name (`s3://…`) is refused here: only a byte
/// stream ([`super::StreamOut`]) can go to object storage, an image needs random writes.
pub fn open(spec: &OutputSpec<'_>) -> Result<Opened> {
    if let Some(name) = spec.object_name() {
        return Err(Error::Usage(format!(
            "{name}: {} cannot be written to object storage; write it to a file",
            spec.what
        )));
    }
    if spec.is_stdout() {
        refuse_terminal(spec.what)?;
        let fd = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::io("stdout", None, e))?;
        let file = File::from(fd);
        // Stdout redirected to a tape drive is one too.
        let tape = file
            .metadata()
            .is_ok_and(|m| m.file_type().is_char_device());
        return Ok(Opened::Stream { file, tape });
    }
    let path = spec.path;
    let kind = match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => m.file_type(),
        _ => {
            let mut staged = Staged::default();
            let (partial, file) = staged.create(path, spec.force)?;
            return Ok(Opened::Staged {
                staged,
                partial,
                file,
            });
        }
    };
    if kind.is_dir() {
        return Err(Error::Usage(format!("{}: is a directory", path.display())));
    }
    if kind.is_block_device() && !spec.force {
        return Err(Error::Usage(format!(
            "{}: is a block device; writing {} onto it destroys what it holds (use --force)",
            path.display(),
            spec.what
        )));
    }
    let file = File::options()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, None, e))?;
    Ok(Opened::Stream {
        file,
        tape: kind.is_char_device(),
    })
}
