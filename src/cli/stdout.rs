//! Report text on standard output. `println!` panics when stdout is a pipe whose reader has
//! gone (`vdar list | head`); these return an error instead, which exits 2 like any other.

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
