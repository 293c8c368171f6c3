//! The sizes of an upload's parts: small first, so that memory stays small for the common
//! archive sizes, growing so that a stream of unknown length still fits S3's limits.

/// The size of each part: `first` for parts 1 to 1,000, then doubling every 1,000 parts, at
/// most 5 GiB. From 8 MiB this reaches 7.8 GiB after 1,000 parts, 117 GiB after 4,000 and
/// 7.8 TiB after 10,000 (the last thousand at 4 GiB): an unknown stream of up to 5 TiB fits.
/// Small parts first keep memory small for the common archive sizes; doubling, rather than
/// a size chosen for 5 TiB from the start, is what lets them stay small.
#[derive(Clone, Copy, Debug)]
pub struct PartSizes {
    /// Size of parts 1 to [`PartSizes::STEP_PARTS`].
    pub first: u64,
}

impl Default for PartSizes {
    fn default() -> Self {
        PartSizes { first: 8 << 20 }
    }
}

impl PartSizes {
    /// S3's limit on parts per upload.
    pub const MAX_PARTS: u32 = 10_000;
    /// S3's limit on one part.
    pub const MAX_PART_BYTES: u64 = 5 << 30;
    /// Parts per size step.
    pub const STEP_PARTS: u32 = 1_000;

    /// The size of part `n` (from 1).
    pub fn size_of(&self, n: u32) -> u64 {
        let step = (n.saturating_sub(1) / Self::STEP_PARTS).min(32);
        self.first
            .saturating_mul(1 << step)
            .min(Self::MAX_PART_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sizes_fit_five_tib_in_ten_thousand_parts() {
        let s = PartSizes::default();
        let total: u64 = (1..=PartSizes::MAX_PARTS).map(|n| s.size_of(n)).sum();
        assert!(total >= 5 << 40, "{total}");
        assert_eq!(s.size_of(1), 8 << 20);
        assert_eq!(s.size_of(1000), 8 << 20);
        assert_eq!(s.size_of(1001), 16 << 20);
        assert!((1..=PartSizes::MAX_PARTS)
            .all(|n| s.size_of(n) <= PartSizes::MAX_PART_BYTES && s.size_of(n) >= 5 << 20));
        // What an archive of 100 GiB ends with: 64 MiB parts.
        let mut sum = 0;
        let mut n = 1;
        while sum < 100u64 << 30 {
            sum += s.size_of(n);
            n += 1;
        }
        assert_eq!(s.size_of(n), 64 << 20);
    }
}
