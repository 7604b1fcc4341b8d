//! Seeded random fault plans: which connection, request and response gets which fault.
//!
//! This module does no I/O. A [`FaultPlan`] is turned into one [`ConnectionPlan`] per
//! accepted connection, and every decision comes from an RNG seeded from
//! `(seed, connection index, decision stream)`. Each kind of decision has its own stream, so
//! the faults chosen for the k-th request of the n-th connection do not depend on thread
//! timing, on how TCP happened to chunk the bytes, or on how many delays were drawn.

use std::ops::Range;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Environment variable read by [`FaultPlan::from_env_or_random`] to replay a seed.
pub const SEED_ENV: &str = "TIDESYNC_FAULT_SEED";

/// A reproducible random fault plan. All probabilities default to 0 and are clamped to
/// `0.0..=1.0`.
///
/// ```
/// use std::time::Duration;
/// use tidesync_testkit::FaultPlan;
///
/// let plan = FaultPlan::new(42)
///     .refuse(0.1)
///     .drop_mid_request(0.1)
///     .cut(0.2)
///     .delay(Duration::ZERO..Duration::from_millis(20));
/// assert_eq!(plan.seed(), 42);
/// assert_eq!(plan.connection(3), FaultPlan::new(42).refuse(0.1).drop_mid_request(0.1)
///     .cut(0.2).delay(Duration::ZERO..Duration::from_millis(20)).connection(3));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    seed: u64,
    p_refuse: f64,
    p_drop_mid_request: f64,
    p_cut_response: f64,
    delay: Range<Duration>,
}

impl FaultPlan {
    /// A plan with this seed and no faults yet.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            p_refuse: 0.0,
            p_drop_mid_request: 0.0,
            p_cut_response: 0.0,
            delay: Duration::ZERO..Duration::ZERO,
        }
    }

    /// A plan seeded from the [`SEED_ENV`] environment variable if it holds a `u64`,
    /// otherwise from a fresh random seed. The seed is printed to stderr, which the test
    /// harness shows when the test fails, so the run can be replayed.
    pub fn from_env_or_random() -> Self {
        let seed = std::env::var(SEED_ENV)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(rand::random);
        eprintln!("tidesync-testkit: fault plan seed {seed} (replay with {SEED_ENV}={seed})");
        Self::new(seed)
    }

    /// Refuse each new connection (accept and close) with probability `p`.
    pub fn refuse(mut self, p: f64) -> Self {
        self.p_refuse = clamp_probability(p);
        self
    }

    /// With probability `p` per request, forward only the first half of the request's first
    /// read chunk to the server, then close both sides: the server sees a truncated request.
    pub fn drop_mid_request(mut self, p: f64) -> Self {
        self.p_drop_mid_request = clamp_probability(p);
        self
    }

    /// Cut each response with probability `p` (see [`FaultProxy`](crate::FaultProxy)).
    pub fn cut(mut self, p: f64) -> Self {
        self.p_cut_response = clamp_probability(p);
        self
    }

    /// Add a uniformly random latency from `range` to each forwarded chunk, both directions.
    /// An empty range (`start >= end`) means a fixed `start`.
    pub fn delay(mut self, range: Range<Duration>) -> Self {
        self.delay = range;
        self
    }

    /// The seed, to print or to replay with [`FaultPlan::new`].
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Probability that a new connection is refused.
    pub fn p_refuse(&self) -> f64 {
        self.p_refuse
    }

    /// Probability that a request is dropped midway.
    pub fn p_drop_mid_request(&self) -> f64 {
        self.p_drop_mid_request
    }

    /// Probability that a response is cut.
    pub fn p_cut_response(&self) -> f64 {
        self.p_cut_response
    }

    /// The per-chunk delay range.
    pub fn delay_range(&self) -> Range<Duration> {
        self.delay.clone()
    }

    /// The decisions for the connection with this index (0 for the first connection
    /// accepted after the plan was installed). Pure: the same plan and index always give
    /// the same decisions.
    pub fn connection(&self, index: u64) -> ConnectionPlan {
        let rng = |stream: u64| StdRng::seed_from_u64(stream_seed(self.seed, index, stream));
        let refused = rng(0).random_bool(self.p_refuse);
        ConnectionPlan {
            index,
            refused,
            requests: DirectionDice {
                p_fault: self.p_drop_mid_request,
                fault_rng: rng(1),
                delay: self.delay.clone(),
                delay_rng: rng(2),
            },
            responses: DirectionDice {
                p_fault: self.p_cut_response,
                fault_rng: rng(3),
                delay: self.delay.clone(),
                delay_rng: rng(4),
            },
        }
    }
}

/// The plan's decisions for one connection.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionPlan {
    index: u64,
    refused: bool,
    requests: DirectionDice,
    responses: DirectionDice,
}

impl ConnectionPlan {
    /// The connection's index within the plan.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Whether the connection is refused.
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// Decisions for the client→server direction: a "fault" is dropping a request midway.
    pub fn requests(&mut self) -> &mut DirectionDice {
        &mut self.requests
    }

    /// Decisions for the server→client direction: a "fault" is cutting a response.
    pub fn responses(&mut self) -> &mut DirectionDice {
        &mut self.responses
    }

    /// Splits into (requests, responses), one for each forwarding thread.
    pub(crate) fn into_directions(self) -> (DirectionDice, DirectionDice) {
        (self.requests, self.responses)
    }
}

/// The decision streams for one direction of one connection.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectionDice {
    p_fault: f64,
    fault_rng: StdRng,
    delay: Range<Duration>,
    delay_rng: StdRng,
}

impl DirectionDice {
    /// Whether the next message (request or response) in this direction gets the fault.
    pub fn next_message_faulted(&mut self) -> bool {
        self.fault_rng.random_bool(self.p_fault)
    }

    /// The latency to add before forwarding the next chunk in this direction.
    pub fn next_chunk_delay(&mut self) -> Duration {
        if self.delay.start >= self.delay.end {
            return self.delay.start;
        }
        let lo = nanos(self.delay.start);
        let hi = nanos(self.delay.end);
        Duration::from_nanos(self.delay_rng.random_range(lo..hi))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn clamp_probability(p: f64) -> f64 {
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, 1.0)
    }
}

/// Independent seeds for each (connection, decision stream) pair.
fn stream_seed(seed: u64, index: u64, stream: u64) -> u64 {
    splitmix64(seed ^ splitmix64(index.wrapping_mul(8).wrapping_add(stream)))
}

/// The SplitMix64 finaliser: a cheap, well-mixing bijection on `u64`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decisions(plan: &FaultPlan, connections: u64) -> Vec<(bool, Vec<bool>, Vec<bool>)> {
        (0..connections)
            .map(|i| {
                let mut c = plan.connection(i);
                let drops = (0..8)
                    .map(|_| c.requests().next_message_faulted())
                    .collect();
                let cuts = (0..8)
                    .map(|_| c.responses().next_message_faulted())
                    .collect();
                (c.refused(), drops, cuts)
            })
            .collect()
    }

    #[test]
    fn same_seed_same_decisions_other_seed_others() {
        let plan = |seed| {
            FaultPlan::new(seed)
                .refuse(0.3)
                .drop_mid_request(0.3)
                .cut(0.3)
        };
        assert_eq!(decisions(&plan(7), 50), decisions(&plan(7), 50));
        assert_ne!(decisions(&plan(7), 50), decisions(&plan(8), 50));
    }

    #[test]
    fn probabilities_are_respected_roughly_and_clamped() {
        let plan = FaultPlan::new(1)
            .cut(0.25)
            .refuse(7.0)
            .drop_mid_request(f64::NAN);
        assert_eq!(plan.p_refuse(), 1.0);
        assert_eq!(plan.p_drop_mid_request(), 0.0);
        let cuts = (0..2000)
            .filter(|&i| plan.connection(i).responses().next_message_faulted())
            .count();
        assert!((400..600).contains(&cuts), "{cuts} cuts of 2000 at p=0.25");
        assert!((0..100).all(|i| plan.connection(i).refused()));
    }

    #[test]
    fn delays_stay_in_range_and_empty_range_is_fixed() {
        let range = Duration::from_millis(5)..Duration::from_millis(10);
        let mut dice = FaultPlan::new(3).delay(range.clone()).connection(0);
        for _ in 0..500 {
            assert!(range.contains(&dice.requests().next_chunk_delay()));
        }
        let fixed = Duration::from_millis(4);
        let mut dice = FaultPlan::new(3).delay(fixed..fixed).connection(0);
        assert_eq!(dice.responses().next_chunk_delay(), fixed);
    }

    #[test]
    fn drawing_delays_does_not_shift_fault_decisions() {
        let plan = FaultPlan::new(11)
            .cut(0.5)
            .delay(Duration::ZERO..Duration::from_millis(9));
        let mut a = plan.connection(2);
        let mut b = plan.connection(2);
        for _ in 0..17 {
            b.responses().next_chunk_delay();
        }
        let a_cuts: Vec<bool> = (0..20)
            .map(|_| a.responses().next_message_faulted())
            .collect();
        let b_cuts: Vec<bool> = (0..20)
            .map(|_| b.responses().next_message_faulted())
            .collect();
        assert_eq!(a_cuts, b_cuts);
    }
}
