//! The chunk identity: a BLAKE3 digest of the chunk's plaintext.
//!
//! Disks are sparse at a finer grain than chunks: on the bench chain every 4 MiB chunk holds
//! some data, but two thirds of the bytes hashed were the zero runs between it. BLAKE3 is a tree
//! of 1 KiB leaves, and a subtree's chaining value depends only on its bytes and its position in
//! the chunk, so [`Digest::of_sparse`] takes the chaining value of a wholly-zero subtree from a
//! per-thread cache (position, length) and hashes only the subtrees that hold data. The result is
//! exactly `blake3::hash` of the whole chunk (tested against it), so archives do not change.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use super::ChunkBytes;

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

/// BLAKE3 of a chunk's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

/// Subtrees up to this size are hashed whole even when they hold some zeros: below it the
/// saving is small and BLAKE3's SIMD wants several 1 KiB leaves at once.
const LEAF_BYTES: usize = 16 << 10;

static ZEROS: [u8; LEAF_BYTES] = [0; LEAF_BYTES];

thread_local! {
    /// Chaining values of all-zero subtrees by (offset in the chunk, length). Chunk sizes are
    /// powers of two, so a thread sees at most two subtrees per tree level per distinct chunk
    /// length: a few hundred entries.
    static ZERO_CVS: RefCell<HashMap<(u64, u64), ChainingValue>> = RefCell::new(HashMap::new());
}

impl Digest {
    /// Hashes `data`.
    pub fn of(data: &[u8]) -> Self {
        Digest(*blake3::hash(data).as_bytes())
    }

    /// Hashes the whole chunk `b` (zero runs included) without building it: equal to
    /// [`Digest::of`] of [`ChunkBytes::to_plain`]. Zero runs are not hashed unless they share
    /// a small subtree with data.
    pub fn of_sparse(b: &ChunkBytes) -> Self {
        if b.zeros.is_empty() {
            return Digest::of(&b.packed);
        }
        if b.len <= blake3::CHUNK_LEN {
            return Digest::of(&b.to_plain());
        }
        // Prefix sums: zero bytes before zero run i (and, last, in all of them).
        let zeros_before = std::iter::once(0)
            .chain(b.zeros.iter().scan(0, |sum, z| {
                *sum += z.1;
                Some(*sum)
            }))
            .collect();
        let tree = Tree { b, zeros_before };
        let left = left_subtree_len(b.len as u64) as usize;
        let l = tree.cv(0, left);
        let r = tree.cv(left, b.len - left);
        Digest(*merge_subtrees_root(&l, &r, Mode::Hash).as_bytes())
    }
}

struct Tree<'a> {
    b: &'a ChunkBytes,
    /// Entry i: the zero bytes in zero runs `0..i` (to find data in `b.packed`).
    zeros_before: Vec<usize>,
}

enum Cover {
    Zero,
    /// No zero run meets the range; `i` zero runs lie before it.
    Data(usize),
    Mixed,
}

impl Tree<'_> {
    /// Chaining value of the (non-root) subtree `[start, start + len)`.
    fn cv(&self, start: usize, len: usize) -> ChainingValue {
        let hash = |bytes: &[u8]| {
            blake3::Hasher::new()
                .set_input_offset(start as u64)
                .update(bytes)
                .finalize_non_root()
        };
        match self.cover(start, len) {
            Cover::Zero => zero_cv(start as u64, len as u64),
            Cover::Data(i) => {
                let at = start - self.zeros_before[i];
                hash(&self.b.packed[at..at + len])
            }
            Cover::Mixed if len > LEAF_BYTES => {
                let left = left_subtree_len(len as u64) as usize;
                let l = self.cv(start, left);
                let r = self.cv(start + left, len - left);
                merge_subtrees_non_root(&l, &r, Mode::Hash)
            }
            Cover::Mixed => {
                let mut leaf = [0u8; LEAF_BYTES];
                self.b.copy_plain(start, &mut leaf[..len]);
                hash(&leaf[..len])
            }
        }
    }

    /// How the zero runs cover `[start, start + len)`.
    fn cover(&self, start: usize, len: usize) -> Cover {
        let end = start + len;
        // The first zero run that ends after `start`.
        let i = self.b.zeros.partition_point(|&(s, n)| s + n <= start);
        match self.b.zeros.get(i) {
            Some(&(s, n)) if s <= start && s + n >= end => Cover::Zero,
            Some(&(s, _)) if s < end => Cover::Mixed,
            _ => Cover::Data(i),
        }
    }
}

/// Chaining value of `len` zero bytes at `start` of a chunk (a subtree position), cached.
fn zero_cv(start: u64, len: u64) -> ChainingValue {
    if let Some(cv) = ZERO_CVS.with(|c| c.borrow().get(&(start, len)).copied()) {
        return cv;
    }
    let cv = if len as usize <= LEAF_BYTES {
        blake3::Hasher::new()
            .set_input_offset(start)
            .update(&ZEROS[..len as usize])
            .finalize_non_root()
    } else {
        let left = left_subtree_len(len);
        merge_subtrees_non_root(
            &zero_cv(start, left),
            &zero_cv(start + left, len - left),
            Mode::Hash,
        )
    };
    ZERO_CVS.with(|c| c.borrow_mut().insert((start, len), cv));
    cv
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift: reproducible layouts without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn sparse_digest_equals_blake3_of_the_whole_chunk() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let lens = [
            1,
            1023,
            1024,
            1025,
            4096,
            LEAF_BYTES,
            LEAF_BYTES + 1,
            65536,
            65536 + 512,
            300_000,
            1 << 20,
            (1 << 20) + 7 * 512,
            4 << 20,
        ];
        for &len in &lens {
            for case in 0..12 {
                let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8 | 1).collect();
                // Zero ranges: none, everything, or a random layout at byte, sector or
                // 64 KiB granularity (the grains of real layers).
                let grain = [1, 512, 65536][case % 3].min(len);
                let mut zeros = Vec::new();
                let mut at = 0;
                while at < len {
                    let n = (grain * (1 + rng.below(8))).min(len - at);
                    let zero = match case {
                        0 => false,
                        1 => true,
                        _ => rng.below(2) == 0,
                    };
                    if zero {
                        data[at..at + n].fill(0);
                        match zeros.last_mut() {
                            Some((s, l)) if *s + *l == at => *l += n,
                            _ => zeros.push((at, n)),
                        }
                    }
                    at += n;
                }
                let b = ChunkBytes::from_plain(&data, &zeros);
                assert_eq!(b.to_plain(), data);
                assert_eq!(
                    Digest::of_sparse(&b),
                    Digest::of(&data),
                    "len {len} case {case} zeros {zeros:?}"
                );
            }
        }
    }

    #[test]
    fn zero_subtrees_at_different_positions_differ() {
        // The cache key must include the position: BLAKE3 leaves carry their counter.
        assert_ne!(zero_cv(0, 4096), zero_cv(4096, 4096));
        assert_eq!(zero_cv(8192, 8192), zero_cv(8192, 8192));
    }
}
