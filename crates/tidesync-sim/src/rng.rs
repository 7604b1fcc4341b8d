//! The simulation's only source of randomness: a seeded SplitMix64 (the same generator the
//! sync machine uses for its backoff jitter), so a seed means the same run on every machine
//! and every version of every dependency.

use tidesync_core::sync::SplitMix64;

/// A seeded generator with the few helpers the simulation needs.
#[derive(Debug, Clone)]
pub(crate) struct Rng(SplitMix64);

impl Rng {
    /// A generator from `seed`.
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(SplitMix64::new(seed))
    }

    /// A child generator: its draws do not shift this generator's later draws beyond the
    /// one draw taken here, so adding draws in one subsystem does not reshuffle another.
    pub(crate) fn fork(&mut self) -> Rng {
        Rng::new(self.0.next_u64())
    }

    /// 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.0.below(hi.saturating_sub(lo).saturating_add(1))
    }

    /// An index in `0..n` (`n > 0`).
    pub(crate) fn index(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.0.below(100) < percent
    }
}
