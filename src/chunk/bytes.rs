//! A read chunk's bytes in sparse form: the data runs packed end to end, and the zero runs
//! between them as ranges.
//!
//! Disks are sparse at a finer grain than chunks (on the bench chain 1209 of 1536 chunks held
//! zero runs, two thirds of all chunk bytes). On the backup path the zeros are never written
//! out: the reader places only data, hashing takes the zero subtrees' BLAKE3 values from a cache
//! ([`Digest::of_sparse`]), and the sparse codec stores only the runs. [`ChunkBytes::to_plain`]
//! builds the whole chunk where a consumer needs it.

use super::Digest;

/// The bytes of one read chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkBytes {
    /// The data runs' bytes, in chunk order, with nothing between them (the whole chunk when
    /// `zeros` is empty).
    pub packed: Vec<u8>,
    /// The chunk's zero runs `(start, len)`: ascending, maximal, not empty.
    pub zeros: Vec<(usize, usize)>,
    /// The chunk's length.
    pub len: usize,
}

impl ChunkBytes {
    /// A chunk without zero runs.
    pub fn dense(bytes: Vec<u8>) -> Self {
        ChunkBytes {
            len: bytes.len(),
            packed: bytes,
            zeros: Vec::new(),
        }
    }

    /// The chunk `plain` in sparse form, with zero runs `zeros` (ascending, maximal; the bytes
    /// there are dropped, whatever they are).
    pub fn from_plain(plain: &[u8], zeros: &[(usize, usize)]) -> Self {
        let mut b = ChunkBytes {
            packed: Vec::new(),
            zeros: zeros.to_vec(),
            len: plain.len(),
        };
        let runs: Vec<_> = b.data_runs().collect();
        for (s, e) in runs {
            b.packed.extend_from_slice(&plain[s..e]);
        }
        b
    }

    /// The data runs `[start, end)`: the complement of `zeros`, ascending.
    pub fn data_runs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let mut at = 0;
        let len = self.len;
        self.zeros
            .iter()
            .map(Some)
            .chain([None])
            .filter_map(move |z| {
                let (s, n) = z.copied().unwrap_or((len, 0));
                let r = (at, s);
                at = s + n;
                (r.0 < r.1).then_some(r)
            })
    }

    /// Bytes outside the zero runs (what was read).
    pub fn data_len(&self) -> usize {
        self.len - self.zeros.iter().map(|z| z.1).sum::<usize>()
    }

    /// Whether every byte is zero.
    pub fn is_zero(&self) -> bool {
        is_zero(&self.packed)
    }

    /// BLAKE3 of the whole chunk (zero runs included), without building it.
    pub fn digest(&self) -> Digest {
        Digest::of_sparse(self)
    }

    /// Writes chunk bytes `[start, start + out.len())` into `out`, which must hold zeros.
    pub fn copy_plain(&self, start: usize, out: &mut [u8]) {
        let end = start + out.len();
        // Zero bytes before the first zero run that ends after `start`.
        let mut i = self.zeros.partition_point(|&(s, n)| s + n <= start);
        let mut skipped: usize = self.zeros[..i].iter().map(|z| z.1).sum();
        let mut p = start;
        while p < end {
            match self.zeros.get(i) {
                Some(&(s, n)) if s <= p => {
                    p = s + n;
                    skipped += n;
                    i += 1;
                }
                next => {
                    let stop = next.map_or(end, |z| z.0.min(end));
                    out[p - start..stop - start]
                        .copy_from_slice(&self.packed[p - skipped..stop - skipped]);
                    p = stop;
                }
            }
        }
    }

    /// The whole chunk.
    pub fn to_plain(&self) -> Vec<u8> {
        if self.zeros.is_empty() {
            return self.packed.clone();
        }
        let mut out = vec![0; self.len];
        self.copy_plain(0, &mut out);
        out
    }
}

/// Whether `b` is all zeros. Word-wise OR so the compiler vectorises it; no early exit per
/// byte (most data grains fail on the first word anyway).
pub fn is_zero(b: &[u8]) -> bool {
    let mut words = b.chunks_exact(64);
    for w in &mut words {
        let mut acc = 0u64;
        for x in w.chunks_exact(8) {
            let mut a = [0u8; 8];
            a.copy_from_slice(x);
            acc |= u64::from_ne_bytes(a);
        }
        if acc != 0 {
            return false;
        }
    }
    words.remainder().iter().all(|&x| x == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_runs_are_the_complement_of_the_zero_runs() {
        let runs = |len, z: &[(usize, usize)]| {
            let b = ChunkBytes {
                packed: Vec::new(),
                zeros: z.to_vec(),
                len,
            };
            b.data_runs().collect::<Vec<_>>()
        };
        assert_eq!(runs(10, &[]), [(0, 10)]);
        assert_eq!(runs(10, &[(0, 2), (5, 1)]), [(2, 5), (6, 10)]);
        assert_eq!(runs(10, &[(3, 7)]), [(0, 3)]);
        assert_eq!(runs(10, &[(0, 10)]), []);
    }

    #[test]
    fn plain_bytes_come_back_from_any_window() {
        let plain: Vec<u8> = (0..5000u32)
            .map(|i| {
                if (1000..1500).contains(&i) || !(7..4000).contains(&i) {
                    0
                } else {
                    (i % 250) as u8 + 1
                }
            })
            .collect();
        let b = ChunkBytes::from_plain(&plain, &[(0, 7), (1000, 500), (4000, 1000)]);
        assert_eq!(b.packed.len(), 5000 - 1507);
        assert_eq!(b.data_len(), b.packed.len());
        assert_eq!(b.to_plain(), plain);
        for (s, l) in [
            (0, 1),
            (5, 10),
            (999, 2),
            (1000, 500),
            (1499, 3),
            (3990, 1010),
            (0, 5000),
        ] {
            let mut out = vec![0; l];
            b.copy_plain(s, &mut out);
            assert_eq!(out, plain[s..s + l], "{s}+{l}");
        }
        assert!(!b.is_zero());
        assert!(ChunkBytes::from_plain(&[0; 100], &[(10, 20)]).is_zero());
    }
}
