//! The portable engine: each request is read with positioned reads (`pread`), or written with
//! positioned writes (`pwrite`), when it is started, one sub-request after the other. It is the
//! fallback when io_uring is unavailable and the baseline the io_uring engine is benchmarked
//! against.

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::FileExt;

use super::{AlignedBuf, Completion, Engine, SubRead};

/// Synchronous pread engine.
#[derive(Debug, Default)]
pub struct PreadEngine {
    done: VecDeque<Completion>,
}

/// Reads all of `buf` at `offset` (std loops over short reads and EINTR); end of file is
/// `UnexpectedEof`, naming the byte where the read started.
fn read_full(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    file.read_exact_at(buf, offset)
        .map_err(|e| at_byte(e, offset))
}

/// Writes all of `buf` at `offset`; a write that accepts no bytes is `WriteZero`.
fn write_full(file: &std::fs::File, buf: &[u8], offset: u64) -> io::Result<()> {
    file.write_all_at(buf, offset)
        .map_err(|e| at_byte(e, offset))
}

/// Std's short-transfer errors say nothing of where; the engine's callers name the file.
fn at_byte(e: io::Error, offset: u64) -> io::Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::WriteZero => {
            io::Error::new(e.kind(), format!("{e} (request at byte {offset:#x})"))
        }
        _ => e,
    }
}

impl Engine for PreadEngine {
    fn start_write(
        &mut self,
        id: u64,
        mut buf: AlignedBuf,
        writes: Vec<SubRead>,
    ) -> io::Result<()> {
        let results = writes
            .iter()
            .map(|w| write_full(&w.file, &buf.spare()[w.at..w.at + w.len], w.offset))
            .collect();
        self.done.push_back(Completion { id, buf, results });
        Ok(())
    }

    fn start(&mut self, id: u64, mut buf: AlignedBuf, reads: Vec<SubRead>) -> io::Result<()> {
        let results = reads
            .iter()
            .map(|r| read_full(&r.file, &mut buf.spare()[r.at..r.at + r.len], r.offset))
            .collect();
        self.done.push_back(Completion { id, buf, results });
        Ok(())
    }

    fn wait(&mut self) -> io::Result<Option<Completion>> {
        Ok(self.done.pop_front())
    }

    fn name(&self) -> &'static str {
        "pread"
    }
}
