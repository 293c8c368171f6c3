//! `verify` with progress: archive bytes read, against the file's size when the archive is a
//! file (a stream's size is not known, so it shows bytes and a rate only).

use std::io::{self, Read, Seek, SeekFrom};

use crate::verify::VerifyReport;

use super::archive_input::Archive;
use super::progress::Meter;

/// Verifies `input`, drawing progress as its bytes are read.
pub fn verify(input: Archive, bases: Option<crate::restore::Bases>) -> crate::Result<VerifyReport> {
    let meter = Meter::new();
    let (result, read) = match input {
        Archive::Stream(r) => {
            let mut c = Counted::new(r, 0, &meter);
            (crate::verify::verify_with(&mut c, bases), c.read)
        }
        Archive::Seekable(mut f) => {
            let mut c = Counted::new(&mut *f.input, f.len, &meter);
            let r = crate::verify::verify_file_with(&mut c, bases);
            let read = c.read;
            f.log_fetched();
            (r, read)
        }
    };
    meter.finish(|secs| detail(read, secs));
    result
}

fn detail(read: u64, secs: f64) -> String {
    format!("archive: {:.0} MB/s", read as f64 / secs.max(0.001) / 1e6)
}

/// A reader that reports the bytes read through it. A seekable verify also reads the index
/// at the end; those few bytes count too, so the total is approached, never passed by much.
struct Counted<'a, R> {
    inner: R,
    read: u64,
    total: u64,
    meter: &'a Meter,
}

impl<'a, R> Counted<'a, R> {
    fn new(inner: R, total: u64, meter: &'a Meter) -> Self {
        Counted {
            inner,
            read: 0,
            total,
            meter,
        }
    }
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        let read = self.read;
        let total = if self.total > 0 {
            self.total.max(read)
        } else {
            0
        };
        self.meter
            .update("archive", read, total, |secs| detail(read, secs));
        Ok(n)
    }
}

impl<R: Seek> Seek for Counted<'_, R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}
