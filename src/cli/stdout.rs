//! Standard output and other streams: report text without `println!` (which panics when stdout
//! is a pipe whose reader has gone, `vdar list | head`), and errors that say where a stream
//! stopped taking bytes.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes a stream has accepted, shared with whoever reports its errors.
pub type Accepted = Arc<AtomicU64>;

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

/// A write error on a stream, `at` being the first byte the stream did not accept; a closed
/// pipe means the reader got truncated output, which must not look like success.
pub fn pipe_error(e: &io::Error, name: &str, at: u64) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        anyhow::anyhow!("{name}: reader closed the pipe at byte {at:#x}: output is incomplete")
    } else {
        anyhow::anyhow!("{name}: write at byte {at:#x}: {e}")
    }
}

/// Counts the bytes the writer below accepted. Buffers above it hide where a write failed;
/// the count names the first byte that did not go out.
pub struct Counted<W> {
    inner: W,
    accepted: Accepted,
}

impl<W: Write> Counted<W> {
    /// The wrapper and a handle on its count.
    pub fn new(inner: W) -> (Self, Accepted) {
        let accepted = Accepted::default();
        (
            Counted {
                inner,
                accepted: accepted.clone(),
            },
            accepted,
        )
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.accepted.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
