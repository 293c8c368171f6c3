//! Standard output and other outputs: report text without `println!` (which panics when stdout
//! is a pipe whose reader has gone, `vdar list | head`), and write errors that say where the
//! output stopped taking bytes.
//!
//! Buffers sit between the code that produces bytes and the file descriptor, so the producer's
//! position is not where a write failed. The writer at the bottom knows: [`Located`] (streams)
//! and the archive file's write-behind thread tag their errors with [`FailedWrite`], and
//! [`output_error`] turns any error carrying one into the message.

use std::fmt;
use std::io::{self, Write};

/// Writes one line to stdout.
pub fn line(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| {
            if e.kind() == io::ErrorKind::BrokenPipe {
                anyhow::anyhow!("stdout: reader closed the pipe: output is incomplete")
            } else {
                anyhow::anyhow!("stdout: {e}")
            }
        })
}

/// A write that failed, and where. It travels inside the `io::Error` through the buffers and
/// the library's error above them.
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
        io::Error::new(cause.kind(), FailedWrite { at, cause })
    }

    /// The failed write inside `e`, if it is one.
    pub fn find(e: &io::Error) -> Option<&FailedWrite> {
        e.get_ref().and_then(|x| x.downcast_ref::<FailedWrite>())
    }
}

/// Names `output` in an error that carries a [`FailedWrite`], directly or inside the library's
/// I/O error; any other error is returned as it is.
pub fn output_error(output: &str, e: anyhow::Error) -> anyhow::Error {
    let failed = match e.downcast_ref::<crate::Error>() {
        Some(crate::Error::Io { cause, .. }) => FailedWrite::find(cause),
        _ => e.downcast_ref::<io::Error>().and_then(FailedWrite::find),
    };
    match failed {
        Some(w) => anyhow::anyhow!("{output}: {w}"),
        None => e,
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

/// Refuses to send binary output (an image, an archive, an OVA) to a terminal: it would flood
/// it, and what the user meant was a file or a pipe.
pub(crate) fn refuse_terminal(what: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        anyhow::bail!("refusing to write {what} to a terminal: use -o FILE, --to DIR or a pipe");
    }
    Ok(())
}
