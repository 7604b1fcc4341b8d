//! Polling for a condition with a deadline.

use std::thread;
use std::time::{Duration, Instant};

/// Calls `cond` until it returns `true` or `timeout` has passed; returns whether it did.
///
/// Polls at 1 ms, backing off to 20 ms, and always checks once more at the deadline. Use it
/// for things that happen on another thread (a counter reaching a value, a connection
/// closing) instead of a fixed `sleep`: `assert!(wait_until(Duration::from_secs(5), || ...))`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_true_once_the_condition_holds() {
        let start = Instant::now();
        let mut calls = 0;
        assert!(wait_until(Duration::from_secs(5), || {
            calls += 1;
            calls == 4
        }));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn returns_false_after_the_timeout() {
        let start = Instant::now();
        assert!(!wait_until(Duration::from_millis(50), || false));
        assert!(start.elapsed() >= Duration::from_millis(50));
    }
}
