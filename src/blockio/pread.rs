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

/// Reads all of `buf` at `offset`, looping over short reads; end of file is `UnexpectedEof`.
fn read_full(file: &std::fs::File, buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        match file.read_at(&mut buf[at..], offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("end of file at byte {offset:#x}"),
                ))
            }
            Ok(n) => {
                at += n;
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes all of `buf` at `offset`, looping over short writes; a write that accepts no bytes is
/// `WriteZero`.
fn write_full(file: &std::fs::File, buf: &[u8], mut offset: u64) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        match file.write_at(&buf[at..], offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("device accepted no bytes at byte {offset:#x}"),
                ))
            }
            Ok(n) => {
                at += n;
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
