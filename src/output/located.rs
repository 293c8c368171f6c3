//! Write errors that say where the output stopped taking bytes.
//!
//! Buffers sit between the code that produces bytes and the file descriptor, so the producer's
//! position is not where a write failed. The writer at the bottom knows: [`Located`] (streams),
//! [`super::DirectFile`] and the write-behind thread tag their errors with [`FailedWrite`],
//! which travels inside the `io::Error` through the buffers and the library's error above them;
//! the front end names the output with it.

use std::fmt;
use std::io::{self, Write};

/// A write that failed, and where.
#[derive(Debug)]
pub struct FailedWrite {
    /// Output offset of the first byte not written.
    pub at: u64,
    /// What the kernel said.
    pub cause: io::Error,
}

impl fmt::Display for FailedWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cause.kind() == io::ErrorKind::BrokenPipe {
            write!(
                f,
                "reader closed the pipe at byte {:#x}: output is incomplete",
                self.at
            )
        } else {
            write!(f, "write at byte {:#x}: {}", self.at, self.cause)
        }
    }
}

impl std::error::Error for FailedWrite {}

impl FailedWrite {
    /// `cause`, tagged with the offset `at`.
    pub fn wrap(at: u64, cause: io::Error) -> io::Error {
        FailedWrite { at, cause }.into_io()
    }

    /// This failure as an `io::Error` of the same kind.
    pub fn into_io(self) -> io::Error {
        io::Error::new(self.cause.kind(), self)
    }

    /// The failed write inside `e`, if it is one.
    pub fn find(e: &io::Error) -> Option<&FailedWrite> {
        e.get_ref().and_then(|x| x.downcast_ref::<FailedWrite>())
    }

    /// The failed write inside the library error `e`, if it carries one.
    pub fn in_error(e: &crate::Error) -> Option<&FailedWrite> {
        match e {
            crate::Error::Io { cause, .. } => FailedWrite::find(cause),
            _ => None,
        }
    }
}

/// Passes writes through and tags a failed one with its offset (the bytes accepted before it).
pub struct Located<W> {
    inner: W,
    at: u64,
}

impl<W: Write> Located<W> {
    /// `inner`, written from offset 0.
    pub fn new(inner: W) -> Self {
        Located { inner, at: 0 }
    }
}

impl<W: Write> Write for Located<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self
            .inner
            .write(buf)
            .map_err(|e| FailedWrite::wrap(self.at, e))?;
        self.at += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner
            .flush()
            .map_err(|e| FailedWrite::wrap(self.at, e))
    }
}
