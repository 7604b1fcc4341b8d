//! Exponential backoff with full jitter ("AWS architecture blog: exponential backoff and
//! jitter"): the n-th retry waits a uniformly random time in `[0, min(cap, base · 2ⁿ)]`.
//! Randomness comes from a seeded generator owned by the caller, so runs replay exactly.

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The ceiling of the first retry's delay.
    pub base_ms: u64,
    /// No delay is ever longer than this.
    pub cap_ms: u64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base_ms: 500,
            cap_ms: 60_000,
        }
    }
}

impl BackoffPolicy {
    /// The delay before retry number `attempt` (0-based), drawn with `rng`.
    pub fn delay_ms(&self, attempt: u32, rng: &mut SplitMix64) -> u64 {
        let ceiling = self
            .base_ms
            .saturating_mul(1u64 << attempt.min(32))
            .min(self.cap_ms);
        rng.below(ceiling.saturating_add(1))
    }
}

/// A small, fast, seedable generator (SplitMix64). Not for cryptography.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_stay_under_the_cap_and_are_jittered() {
        let policy = BackoffPolicy {
            base_ms: 100,
            cap_ms: 5_000,
        };
        let mut rng = SplitMix64::new(7);
        for attempt in 0..40 {
            let ceiling = (100u64 << attempt.min(32)).min(5_000);
            for _ in 0..50 {
                assert!(policy.delay_ms(attempt, &mut rng) <= ceiling);
            }
        }
        let late: Vec<u64> = (0..100).map(|_| policy.delay_ms(30, &mut rng)).collect();
        assert!(
            late.iter().any(|d| *d < 2_500) && late.iter().any(|d| *d > 2_500),
            "full jitter spreads over [0, cap]"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let policy = BackoffPolicy::default();
        let run = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..10)
                .map(|a| policy.delay_ms(a, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }
}
