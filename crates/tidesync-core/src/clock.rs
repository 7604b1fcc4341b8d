//! The hybrid logical clock (HLC).
//!
//! Every write gets a stamp strictly greater than every stamp this clock produced or observed
//! before, and as close to wall-clock time as that allows:
//! - wall clock ahead of the last stamp → `(wall, 0)`;
//! - wall clock equal or *behind* (NTP step, manual change) → `(last.millis, last.counter + 1)`:
//!   the clock never goes backwards, it waits for the wall clock to catch up;
//! - counter exhausted (65,536 stamps in one millisecond) → the millisecond part is borrowed
//!   from the future: `(last.millis + 1, 0)`.
//!
//! Monotonic across restarts: the owner persists [`HlcClock::last`] with every write and
//! resumes with [`HlcClock::resume`]. The only failure is the 48-bit millisecond space running
//! out (year 10889, or a remote stamp pushed there), reported as [`ClockError::Exhausted`].

use tidesync_protocol::Hlc;

/// The clock cannot produce a stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// The 48-bit millisecond space is used up.
    #[error("the hybrid logical clock is exhausted (last stamp {0}); the stored clock value is corrupt or a peer sent a stamp from the far future")]
    Exhausted(Hlc),
}

/// A hybrid logical clock. See the module docs for the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    /// A clock that has never ticked.
    pub fn new() -> HlcClock {
        HlcClock::default()
    }

    /// A clock continuing after `last`, the last stamp it handed out or observed (as
    /// persisted before a restart).
    pub fn resume(last: Hlc) -> HlcClock {
        HlcClock { last }
    }

    /// The last stamp produced or observed: persist this to stay monotonic across restarts.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A new stamp for a local event, given the wall clock in milliseconds since the epoch.
    pub fn tick(&mut self, wall_ms: u64) -> Result<Hlc, ClockError> {
        let last = self.last;
        let next = if wall_ms > last.millis() {
            Hlc::new(wall_ms.min(Hlc::MAX_MILLIS), 0)
        } else if last.counter() < u16::MAX {
            Hlc::new(last.millis(), last.counter() + 1)
        } else {
            Hlc::new(last.millis() + 1, 0)
        };
        match next {
            Some(next) if next > last => {
                self.last = next;
                Ok(next)
            }
            _ => Err(ClockError::Exhausted(last)),
        }
    }

    /// Takes note of a stamp made elsewhere, so that the next local stamp is greater.
    pub fn observe(&mut self, remote: Hlc) {
        self.last = self.last.max(remote);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hlc(ms: u64, c: u16) -> Hlc {
        Hlc::new(ms, c).expect("fits")
    }

    #[test]
    fn follows_the_wall_clock_when_it_moves_forward() {
        let mut clock = HlcClock::new();
        assert_eq!(clock.tick(1000), Ok(hlc(1000, 0)));
        assert_eq!(clock.tick(1000), Ok(hlc(1000, 1)));
        assert_eq!(clock.tick(1005), Ok(hlc(1005, 0)));
    }

    #[test]
    fn never_goes_backwards_when_the_wall_clock_does() {
        let mut clock = HlcClock::resume(hlc(5000, 3));
        assert_eq!(
            clock.tick(1000),
            Ok(hlc(5000, 4)),
            "wall clock stepped back 4 s"
        );
        assert_eq!(clock.tick(4999), Ok(hlc(5000, 5)));
        assert_eq!(clock.tick(5001), Ok(hlc(5001, 0)));
    }

    #[test]
    fn counter_overflow_borrows_the_next_millisecond() {
        let mut clock = HlcClock::resume(hlc(7, u16::MAX));
        assert_eq!(clock.tick(7), Ok(hlc(8, 0)));
        assert_eq!(clock.tick(7), Ok(hlc(8, 1)));
    }

    #[test]
    fn observed_stamps_are_exceeded_by_the_next_tick() {
        let mut clock = HlcClock::resume(hlc(100, 0));
        clock.observe(hlc(900, 42));
        assert_eq!(clock.tick(150), Ok(hlc(900, 43)));
        clock.observe(hlc(10, 0));
        assert_eq!(
            clock.last(),
            hlc(900, 43),
            "observing an old stamp changes nothing"
        );
    }

    #[test]
    fn exhaustion_is_an_error_not_a_wrap() {
        let mut clock = HlcClock::resume(hlc(Hlc::MAX_MILLIS, u16::MAX));
        assert!(matches!(clock.tick(0), Err(ClockError::Exhausted(_))));
        assert_eq!(clock.last(), hlc(Hlc::MAX_MILLIS, u16::MAX));
        let mut clock = HlcClock::new();
        assert_eq!(clock.tick(u64::MAX), Ok(hlc(Hlc::MAX_MILLIS, 0)));
    }

    #[test]
    fn a_million_ticks_in_one_millisecond_stay_strictly_increasing() {
        let mut clock = HlcClock::new();
        let mut prev = Hlc::ZERO;
        for _ in 0..1_000_000 {
            let next = clock.tick(1).expect("tick");
            assert!(next > prev);
            prev = next;
        }
        assert!(
            prev.millis() > 1,
            "overflowed counters borrowed later milliseconds"
        );
    }
}
