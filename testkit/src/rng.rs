//! The seeded xorshift64 generator.

/// A small deterministic generator: Marsaglia's xorshift64 with the shifts 13, 7, 17.
///
/// Each step updates the state and returns it, so the sequence of a seed is the sequence
/// of the inline copies this type replaced: a golden or seeded test keeps its values.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The state a seed of zero is replaced with (zero is xorshift's one fixed point).
    pub const ZERO_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

    /// A generator starting from `seed` as its state, unchanged (a seed of zero becomes
    /// [`Rng::ZERO_SEED`]). Scramble related seeds yourself if they must diverge at once,
    /// e.g. `Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)`.
    #[must_use]
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 { Self::ZERO_SEED } else { seed })
    }

    /// The next value: `x ^= x << 13; x ^= x >> 7; x ^= x << 17`, returning the new state.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value below `n` (`next_u64() % n`). Panics if `n` is zero.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// An index below `len` (`next_u64() % len`). Panics if `len` is zero.
    pub fn index(&mut self, len: usize) -> usize {
        (self.next_u64() % len as u64) as usize
    }

    /// One of `items`, uniformly (one step: `items[index(items.len())]`). Panics if `items`
    /// is empty.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.index(items.len())]
    }

    /// True with probability `percent` in 100 (`below(100) < percent`).
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    /// The inline generator the copies wrote, for comparison.
    fn inline(mut x: u64, n: usize) -> Vec<u64> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            })
            .collect()
    }

    #[test]
    fn the_sequence_is_the_inline_copies_one() {
        for seed in [1, 42, 0x5eed, 0x2545_f491_4f6c_dd1d, 0x9e37_79b9_7f4a_7c15, u64::MAX] {
            let mut rng = Rng::new(seed);
            let got: Vec<u64> = (0..1000).map(|_| rng.next_u64()).collect();
            assert_eq!(got, inline(seed, 1000), "seed {seed:#x}");
        }
        // Pinned values: a change to the algorithm changes them.
        let mut rng = Rng::new(1);
        assert_eq!(rng.next_u64(), 0x4082_2041);
        assert_eq!(rng.next_u64(), 0x1000_4106_0c01_1441);
    }

    #[test]
    fn zero_is_no_fixed_point_and_helpers_use_one_step() {
        let mut zero = Rng::new(0);
        assert_eq!(zero.next_u64(), Rng::new(Rng::ZERO_SEED).next_u64());
        assert_ne!(zero.next_u64(), 0);
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(a.below(10), b.next_u64() % 10);
        assert_eq!(a.index(3), (b.next_u64() % 3) as usize);
        assert_eq!(a.pick(&[1, 2, 3, 4, 5]), [1, 2, 3, 4, 5][(b.next_u64() % 5) as usize]);
        assert_eq!(a.chance(30), b.next_u64() % 100 < 30);
    }
}
