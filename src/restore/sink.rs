//! [`Grainer`] cuts the ordered piece stream a [`super::DiskSink`] receives into grains for the
//! sparse formats, without copying a grain that arrives whole.

use crate::chunk::bytes::is_zero;
use crate::error::{Error, Result};

/// One grain's worth of output from [`Grainer`].
pub(crate) enum Grain<'a> {
    /// Grain `index` holds these bytes (shorter than a grain only for the last one).
    Data(u64, &'a [u8]),
    /// Grains `first..first + count` are all zero. Today's sinks skip them whatever the range
    /// (unallocated reads as zero in a base disk); the range is kept for sinks that must mark
    /// zeros explicitly, and for the tests.
    #[allow(dead_code)]
    Zero(u64, u64),
}

/// Cuts an ordered piece stream into grains. Invariant: `buf` holds the bytes of the current
/// partial grain, so `buf.len() == pos % grain` (it is empty at every grain boundary).
pub(crate) struct Grainer {
    grain: u64,
    capacity: u64,
    pos: u64,
    buf: Vec<u8>,
}

impl Grainer {
    /// For a disk of `capacity` bytes cut in grains of `grain` bytes.
    pub(crate) fn new(grain: u64, capacity: u64) -> Self {
        Grainer {
            grain,
            capacity,
            pos: 0,
            buf: Vec::new(),
        }
    }

    /// Length of the grain holding `pos` (the last one may be short).
    fn grain_len(&self) -> u64 {
        let start = self.pos / self.grain * self.grain;
        self.grain.min(self.capacity - start)
    }

    fn check(&self, offset: u64, len: u64) -> Result<()> {
        if offset != self.pos || self.capacity - self.pos < len {
            return Err(Error::Usage(format!(
                "internal: piece {offset:#x}+{len:#x} out of order (expected {:#x}, capacity \
                 {:#x})",
                self.pos, self.capacity
            )));
        }
        Ok(())
    }

    /// Emits the buffered grain once it is complete.
    fn flush_full(&mut self, emit: &mut dyn FnMut(Grain<'_>) -> Result<()>) -> Result<()> {
        if self.buf.len() as u64 == self.grain_len_of_buf() {
            let idx = (self.pos - 1) / self.grain;
            let g = if is_zero(&self.buf) {
                Grain::Zero(idx, 1)
            } else {
                Grain::Data(idx, &self.buf)
            };
            emit(g)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Length of the grain the buffer belongs to (the one holding `pos - 1`).
    fn grain_len_of_buf(&self) -> u64 {
        if self.buf.is_empty() {
            return u64::MAX;
        }
        let start = (self.pos - 1) / self.grain * self.grain;
        self.grain.min(self.capacity - start)
    }

    /// Data at `offset` (must be the current position).
    pub(crate) fn data(
        &mut self,
        offset: u64,
        mut data: &[u8],
        emit: &mut dyn FnMut(Grain<'_>) -> Result<()>,
    ) -> Result<()> {
        self.check(offset, data.len() as u64)?;
        while !data.is_empty() {
            let glen = self.grain_len() as usize;
            if self.buf.is_empty() && data.len() >= glen {
                // Whole grain in the piece: no copy.
                let (head, rest) = data.split_at(glen);
                let idx = self.pos / self.grain;
                emit(if is_zero(head) {
                    Grain::Zero(idx, 1)
                } else {
                    Grain::Data(idx, head)
                })?;
                self.pos += glen as u64;
                data = rest;
            } else {
                let take = (glen - self.buf.len()).min(data.len());
                self.buf.extend_from_slice(&data[..take]);
                self.pos += take as u64;
                data = &data[take..];
                self.flush_full(emit)?;
            }
        }
        Ok(())
    }

    /// `len` zeros at `offset` (must be the current position).
    pub(crate) fn zero(
        &mut self,
        offset: u64,
        mut len: u64,
        emit: &mut dyn FnMut(Grain<'_>) -> Result<()>,
    ) -> Result<()> {
        self.check(offset, len)?;
        while len > 0 {
            let glen = self.grain_len();
            if self.buf.is_empty() && len >= glen {
                let end = self.pos + len;
                // Whole grains covered; the short last grain counts when the run reaches it.
                let end_grain = if end == self.capacity {
                    end.div_ceil(self.grain)
                } else {
                    end / self.grain
                };
                let first = self.pos / self.grain;
                emit(Grain::Zero(first, end_grain - first))?;
                let new_pos = (end_grain * self.grain).min(self.capacity);
                len -= new_pos - self.pos;
                self.pos = new_pos;
            } else {
                let take = (glen - self.buf.len() as u64).min(len);
                self.buf.resize(self.buf.len() + take as usize, 0);
                self.pos += take;
                len -= take;
                self.flush_full(emit)?;
            }
        }
        Ok(())
    }

    /// Whether every byte up to the capacity has been seen.
    pub(crate) fn complete(&self) -> bool {
        self.pos == self.capacity && self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays pieces and rebuilds the image from the grains emitted.
    fn rebuild(grain: u64, cap: u64, pieces: &[(u64, Option<Vec<u8>>, u64)]) -> Vec<u8> {
        let mut g = Grainer::new(grain, cap);
        let mut img = vec![0xAAu8; cap as usize];
        let mut seen = vec![false; cap.div_ceil(grain) as usize];
        let mut emit = |x: Grain<'_>| {
            match x {
                Grain::Data(i, d) => {
                    assert!(!seen[i as usize]);
                    seen[i as usize] = true;
                    let s = (i * grain) as usize;
                    assert_eq!(d.len() as u64, grain.min(cap - i * grain));
                    img[s..s + d.len()].copy_from_slice(d);
                }
                Grain::Zero(f, n) => {
                    for i in f..f + n {
                        assert!(!seen[i as usize]);
                        seen[i as usize] = true;
                        let s = (i * grain) as usize;
                        let e = ((i + 1) * grain).min(cap) as usize;
                        img[s..e].fill(0);
                    }
                }
            }
            Ok(())
        };
        for (off, d, len) in pieces {
            match d {
                Some(d) => g.data(*off, d, &mut emit).unwrap(),
                None => g.zero(*off, *len, &mut emit).unwrap(),
            }
        }
        assert!(g.complete());
        assert!(seen.iter().all(|&s| s));
        img
    }

    #[test]
    fn grainer_reassembles_unaligned_pieces() {
        let cap = 10 * 512 + 7 * 512; // 17 sectors, grain 4 sectors: short last grain
        let grain = 2048;
        let a: Vec<u8> = (0..3000u32).map(|i| (i % 251 + 1) as u8).collect();
        let b: Vec<u8> = (0..1000u32).map(|i| (i % 7 + 1) as u8).collect();
        let pieces = vec![
            (0, Some(a.clone()), 0),
            (3000, None, 2000),
            (5000, Some(b.clone()), 0),
            (6000, None, cap - 6000),
        ];
        let img = rebuild(grain, cap, &pieces);
        assert_eq!(&img[..3000], &a[..]);
        assert!(img[3000..5000].iter().all(|&x| x == 0));
        assert_eq!(&img[5000..6000], &b[..]);
        assert!(img[6000..].iter().all(|&x| x == 0));
        // Whole-grain pieces and a zero run to the (short) end.
        let full: Vec<u8> = vec![9u8; 4096];
        let img = rebuild(
            grain,
            cap,
            &[(0, Some(full.clone()), 0), (4096, None, cap - 4096)],
        );
        assert_eq!(&img[..4096], &full[..]);
    }

    #[test]
    fn grainer_refuses_out_of_order() {
        let mut g = Grainer::new(512, 4096);
        let mut emit = |_: Grain<'_>| Ok(());
        g.data(0, &[1; 512], &mut emit).unwrap();
        assert!(g.data(0, &[1; 512], &mut emit).is_err());
        assert!(g.zero(512, 8192, &mut emit).is_err());
    }
}
