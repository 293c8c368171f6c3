//! Standard output and other outputs: report text without `println!` (which panics when stdout
//! is a pipe whose reader has gone, `vdar list | head`), and write errors named after the
//! output: [`output_error`] turns any error carrying a [`FailedWrite`] (tagged by the library's
//! write path, `crate::output`) into the message.

use std::fmt;
use std::io::{self, Write};

use crate::output::FailedWrite;

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

/// Names `output` in an error that carries a [`FailedWrite`], directly or inside the library's
/// I/O error; any other error is returned as it is.
pub fn output_error(output: &str, e: anyhow::Error) -> anyhow::Error {
    let failed = match e.downcast_ref::<crate::Error>() {
        Some(e) => FailedWrite::in_error(e),
        None => e.downcast_ref::<io::Error>().and_then(FailedWrite::find),
    };
    match failed {
        Some(w) => anyhow::anyhow!("{output}: {w}"),
        None => e,
    }
}
