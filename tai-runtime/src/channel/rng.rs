//! A lock-free, seedable random source for picks and jitter.
//!
//! SplitMix64 over one atomic counter: each draw is one `fetch_add` and a few
//! multiplications, safe from any thread, and reproducible from a seed in tests.

use std::sync::atomic::{AtomicU64, Ordering};

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Random numbers for balancing decisions and backoff jitter.
#[derive(Debug)]
pub(crate) struct Rng(AtomicU64);

impl Rng {
    pub(crate) fn seeded(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    pub(crate) fn from_entropy() -> Self {
        Self::seeded(rand::random())
    }

    pub(crate) fn reseed(&self, seed: u64) {
        self.0.store(seed, Ordering::Relaxed);
    }

    pub(crate) fn next_u64(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), without modulo bias worth measuring for small n.
    pub(crate) fn below(&self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_draws_repeat_and_stay_in_range() {
        let a = Rng::seeded(9);
        let b = Rng::seeded(9);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let x = a.below(3);
            assert!(x < 3);
            b.below(3);
            let u = a.unit();
            assert!((0.0..1.0).contains(&u));
            b.unit();
        }
    }

    #[test]
    fn below_is_roughly_uniform() {
        let r = Rng::seeded(1);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[r.below(4)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}
