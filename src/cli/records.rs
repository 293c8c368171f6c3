//! Fixed-size records for tape drives in fixed-block mode.
//!
//! Such a drive takes every `write` as whole records and refuses a length that is not a
//! multiple of its block size, while a `BufWriter` passes writes through at whatever size they
//! come. With `--block-size` the archive is padded to whole blocks, so cutting the stream into
//! writes of exactly one block loses nothing and leaves no short record.

use std::io::{self, Write};

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

#[cfg(test)]
mod tests {
    use super::*;

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
