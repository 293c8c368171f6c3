//! A read chunk's bytes in sparse form: the data runs packed end to end, and the zero runs
//! between them as ranges.
//!
//! Disks are sparse at a finer grain than chunks (on the bench chain 1209 of 1536 chunks held
//! zero runs, two thirds of all chunk bytes). On the backup path the zeros are never written
//! out: the reader places only data, hashing takes the zero subtrees' BLAKE3 values from a cache
//! ([`Digest::of_sparse`]), and the sparse codec stores only the runs. [`ChunkBytes::to_plain`]
//! builds the whole chunk where a consumer needs it.

use super::Digest;

/// The grain at which zero runs are found by content: 4 KiB, the block of the file systems and
/// LUN formats vdar reads, so whole unallocated blocks map to whole zero blocks.
pub const ZERO_BLOCK: usize = 4096;

/// The bytes of one read chunk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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

    /// Makes the zero runs exactly the chunk's all-zero [`ZERO_BLOCK`]-byte blocks (counted from
    /// the chunk's start, the last one possibly short), whether the disk reported them
    /// unallocated or they were read as zeros.
    ///
    /// The allocation a disk reports is not a function of its contents: ext4 reports preallocated
    /// extents whose pages are cached as data, and a chain and its flattened image allocate
    /// differently. After this the runs, and so the archive bytes, depend on the bytes alone.
    /// Zero blocks that were read are also kept from hashing and compression.
    pub fn canonicalize(&mut self) {
        let blocks = self.len.div_ceil(ZERO_BLOCK);
        let mut nonzero = vec![false; blocks];
        let mut at = 0;
        for (s, e) in self.data_runs() {
            let mut p = s;
            while p < e {
                let k = p / ZERO_BLOCK;
                let stop = ((k + 1) * ZERO_BLOCK).min(e);
                if !nonzero[k] && !is_zero(&self.packed[at + p - s..at + stop - s]) {
                    nonzero[k] = true;
                }
                p = stop;
            }
            at += e - s;
        }
        let mut zeros = Vec::new();
        let mut k = 0;
        while k < blocks {
            if nonzero[k] {
                k += 1;
                continue;
            }
            let first = k;
            while k < blocks && !nonzero[k] {
                k += 1;
            }
            let end = (k * ZERO_BLOCK).min(self.len);
            zeros.push((first * ZERO_BLOCK, end - first * ZERO_BLOCK));
        }
        if zeros == self.zeros {
            return;
        }
        // A nonzero block that was partly unallocated gains data bytes; otherwise data only
        // shrinks and moves towards the front, in place, keeping the pooled buffer.
        let grows = self
            .zeros
            .iter()
            .any(|&(s, n)| (s / ZERO_BLOCK..(s + n).div_ceil(ZERO_BLOCK)).any(|k| nonzero[k]));
        let old = std::mem::replace(&mut self.zeros, zeros);
        let new_runs: Vec<_> = self.data_runs().collect();
        if grows {
            let mut packed = Vec::with_capacity(self.len);
            let old = ChunkBytes {
                packed: std::mem::take(&mut self.packed),
                zeros: old,
                len: self.len,
            };
            for (s, e) in new_runs {
                let at = packed.len();
                packed.resize(at + e - s, 0);
                old.copy_plain(s, &mut packed[at..]);
            }
            self.packed = packed;
            return;
        }
        let mut to = 0;
        let mut gap = 0;
        let mut skipped = 0;
        for (s, e) in new_runs {
            // Zero bytes of the old runs before `s` (none of them contains `s`).
            while gap < old.len() && old[gap].0 < s {
                skipped += old[gap].1;
                gap += 1;
            }
            self.packed.copy_within(s - skipped..e - skipped, to);
            to += e - s;
        }
        self.packed.truncate(to);
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

    /// Zero runs of whole zero blocks, found the slow way.
    fn zero_blocks(plain: &[u8]) -> Vec<(usize, usize)> {
        let mut zeros: Vec<(usize, usize)> = Vec::new();
        for (k, b) in plain.chunks(ZERO_BLOCK).enumerate() {
            if b.iter().all(|&x| x == 0) {
                match zeros.last_mut() {
                    Some(z) if z.0 + z.1 == k * ZERO_BLOCK => z.1 += b.len(),
                    _ => zeros.push((k * ZERO_BLOCK, b.len())),
                }
            }
        }
        zeros
    }

    #[test]
    fn canonical_runs_depend_on_the_bytes_alone() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n) as usize
        };
        for round in 0..300 {
            let len = [65536, 65536 + 512, 40960, 12345][round % 4];
            let mut plain = vec![0u8; len];
            // Data with zero stretches at byte, sector and block grain.
            let mut p = 0;
            while p < len {
                let n = (1 + next(3 * ZERO_BLOCK as u64)).min(len - p);
                if next(2) == 0 {
                    plain[p..p + n]
                        .iter_mut()
                        .for_each(|b| *b = 1 + next(255) as u8);
                }
                p += n;
            }
            // Any claimed allocation whose unallocated parts hold zeros.
            let mut zeros: Vec<(usize, usize)> = Vec::new();
            let mut p = 0;
            while p < len {
                let n = (1 + next([512, 4096, 20000][round % 3])).min(len - p);
                if plain[p..p + n].iter().all(|&b| b == 0) && next(3) != 0 {
                    match zeros.last_mut() {
                        Some(z) if z.0 + z.1 == p => z.1 += n,
                        _ => zeros.push((p, n)),
                    }
                }
                p += n;
            }
            let mut b = ChunkBytes::from_plain(&plain, &zeros);
            b.canonicalize();
            assert_eq!(b.zeros, zero_blocks(&plain), "round {round}");
            assert_eq!(b.to_plain(), plain, "round {round}");
            assert_eq!(b.packed.len(), b.data_len(), "round {round}");
        }
    }

    #[test]
    fn canonical_runs_keep_the_buffer_unless_data_grows() {
        let mut plain = vec![7u8; 8 * ZERO_BLOCK];
        plain[ZERO_BLOCK..3 * ZERO_BLOCK].fill(0);
        // Read zeros become a zero run, in place.
        let mut b = ChunkBytes::dense(plain.clone());
        let buf = b.packed.as_ptr();
        b.canonicalize();
        assert_eq!(b.zeros, [(ZERO_BLOCK, 2 * ZERO_BLOCK)]);
        assert_eq!(b.packed.as_ptr(), buf);
        assert_eq!(b.to_plain(), plain);
        // A sector hole beside data: the block is data, zeros and all.
        plain[5 * ZERO_BLOCK..5 * ZERO_BLOCK + 512].fill(0);
        let mut b = ChunkBytes::from_plain(
            &plain,
            &[(ZERO_BLOCK, 2 * ZERO_BLOCK), (5 * ZERO_BLOCK, 512)],
        );
        b.canonicalize();
        assert_eq!(b.zeros, [(ZERO_BLOCK, 2 * ZERO_BLOCK)]);
        assert_eq!(b.to_plain(), plain);
        // Already canonical: untouched.
        let before = b.clone();
        b.canonicalize();
        assert_eq!(b, before);
        // All zeros.
        let mut b = ChunkBytes::from_plain(&[0; 10000], &[(100, 200)]);
        b.canonicalize();
        assert_eq!(b.zeros, [(0, 10000)]);
        assert!(b.packed.is_empty());
    }

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
    }
}
