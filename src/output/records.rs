//! Records for tape drives.
//!
//! A drive in fixed-block mode takes every `write` as whole records and refuses a length that
//! is not a multiple of its block size, while a `BufWriter` passes writes through at whatever
//! size they come. With `--block-size` the archive is padded to whole blocks, so cutting the
//! stream into writes of exactly one block loses nothing and leaves no short record.
//!
//! Reading has the same constraint (fixed-block mode: whole blocks per `read`), and in
//! variable-block mode a `read` shorter than the record fails. So a tape is read in requests of
//! [`TAPE_READ_BYTES`], the largest block size, which vdar only writes as powers of two.

use std::io::{self, Read, Write};

/// Writes `inner` in writes of exactly `block` bytes (the last one shorter only if the stream
/// itself is not a whole number of blocks).
pub struct RecordWriter<W: Write> {
    inner: W,
    record: Vec<u8>,
    block: usize,
}

impl<W: Write> RecordWriter<W> {
    /// A writer emitting `block`-byte records (`block` > 0).
    pub fn new(inner: W, block: usize) -> Self {
        RecordWriter {
            inner,
            record: Vec::with_capacity(block),
            block,
        }
    }
}

impl<W: Write> Write for RecordWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(self.block - self.record.len());
        self.record.extend_from_slice(&data[..n]);
        if self.record.len() == self.block {
            self.inner.write_all(&self.record)?;
            self.record.clear();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.record.is_empty() {
            self.inner.write_all(&self.record)?;
            self.record.clear();
        }
        self.inner.flush()
    }
}

/// Bytes per `read` from a tape drive: the largest `--block-size`, a multiple of every other.
pub const TAPE_READ_BYTES: usize = 16 << 20;

/// Reads `inner` only in requests of exactly `request` bytes, whatever size its caller asks for
/// (a `BufReader` passes large reads through at their own size).
pub struct RecordReader<R: Read> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

impl<R: Read> RecordReader<R> {
    /// A reader whose every read of `inner` asks for `request` bytes.
    pub fn new(inner: R, request: usize) -> Self {
        RecordReader {
            inner,
            buf: vec![0; request],
            pos: 0,
            end: 0,
        }
    }
}

impl<R: Read> Read for RecordReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.end {
            self.end = self.inner.read(&mut self.buf)?;
            self.pos = 0;
        }
        let n = out.len().min(self.end - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tape: `fixed` mode refuses reads that are not whole blocks; variable mode returns one
    /// record per read and refuses a read shorter than the record.
    struct Tape {
        records: std::collections::VecDeque<Vec<u8>>,
        fixed: Option<usize>,
    }
    impl Read for Tape {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            match self.fixed {
                Some(b) if out.len() % b != 0 => Err(io::ErrorKind::InvalidInput.into()),
                Some(_) => {
                    let mut n = 0;
                    while n < out.len() {
                        let Some(r) = self.records.pop_front() else {
                            break;
                        };
                        out[n..n + r.len()].copy_from_slice(&r);
                        n += r.len();
                    }
                    Ok(n)
                }
                None => match self.records.pop_front() {
                    Some(r) if r.len() > out.len() => Err(io::ErrorKind::OutOfMemory.into()),
                    Some(r) => {
                        out[..r.len()].copy_from_slice(&r);
                        Ok(r.len())
                    }
                    None => Ok(0),
                },
            }
        }
    }

    #[test]
    fn tapes_read_back_in_both_modes() {
        let data: Vec<u8> = (0..(3 << 20) as u32).map(|i| (i % 251) as u8).collect();
        for block in [512, 64 << 10, 1 << 20, 2 << 20] {
            let mut w = RecordWriter::new(Lengths::default(), block);
            w.write_all(&data).unwrap();
            w.flush().unwrap();
            let records: Vec<Vec<u8>> = w.inner.1.chunks(block).map(<[u8]>::to_vec).collect();
            for fixed in [Some(block), None] {
                let tape = Tape {
                    records: records.iter().cloned().collect(),
                    fixed,
                };
                let mut back = Vec::new();
                // Asked for in odd sizes, as the archive reader does.
                let mut r = RecordReader::new(tape, TAPE_READ_BYTES);
                let mut piece = vec![0; 777_777];
                loop {
                    let n = r.read(&mut piece).unwrap();
                    if n == 0 {
                        break;
                    }
                    back.extend_from_slice(&piece[..n]);
                }
                assert_eq!(back, data, "block {block}, fixed {fixed:?}");
                // Unwrapped, the same tape fails in one mode or the other.
                let mut plain = Tape {
                    records: records.iter().cloned().collect(),
                    fixed,
                };
                if fixed.is_some() || block > piece.len() {
                    assert!(plain.read(&mut piece).is_err(), "block {block} {fixed:?}");
                }
            }
        }
    }

    /// Records every write's length.
    #[derive(Default)]
    struct Lengths(Vec<usize>, Vec<u8>);
    impl Write for Lengths {
        fn write(&mut self, d: &[u8]) -> io::Result<usize> {
            self.0.push(d.len());
            self.1.extend_from_slice(d);
            Ok(d.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_write_is_one_whole_record() {
        let data: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        let mut w = RecordWriter::new(Lengths::default(), 512);
        for piece in [&data[..1], &data[1..700], &data[700..3000], &data[3000..]] {
            w.write_all(piece).unwrap();
        }
        w.flush().unwrap();
        assert_eq!(w.inner.0, vec![512; 8]);
        assert_eq!(w.inner.1, data);
        // A stream that does not end on a block still loses nothing.
        let mut w = RecordWriter::new(Lengths::default(), 512);
        w.write_all(&data[..600]).unwrap();
        w.flush().unwrap();
        assert_eq!(w.inner.0, vec![512, 88]);
    }
}
