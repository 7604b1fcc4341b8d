//! [`Adaptive`]: a push batch or pull page size that starts small and grows while a backlog
//! remains.
//!
//! The first batch of a backlog is small, so the first changes land (and the app paints
//! them) quickly even on a slow link; each batch that leaves more behind multiplies the next
//! one by [`GROWTH`], up to the configured largest size (by default the server's limits), so
//! a bulk transfer pays few round trips and commits without any tuning. A timeout halves the
//! size; a `413` also lowers the cap to the halved size, since the server said where its
//! limit is. A drained backlog keeps the size (a steady stream of work keeps its large
//! batches); a new sync session (start, resume, the network back) starts small again.

/// How much the next batch grows while a backlog remains.
pub(crate) const GROWTH: usize = 4;

/// The size of the next batch. See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Adaptive {
    start: usize,
    cap: usize,
    current: usize,
}

impl Adaptive {
    /// Starts at `start` (at most `cap`), never above `cap`.
    pub(crate) fn new(start: usize, cap: usize) -> Adaptive {
        let cap = cap.max(1);
        let start = start.clamp(1, cap);
        Adaptive {
            start,
            cap,
            current: start,
        }
    }

    /// The next batch's size.
    pub(crate) fn size(&self) -> usize {
        self.current
    }

    /// A batch went through: grow if a backlog remains.
    pub(crate) fn went_through(&mut self, backlog: bool) {
        if backlog {
            self.current = self.current.saturating_mul(GROWTH).min(self.cap);
        }
    }

    /// A new sync session (start, resume, the network back): start small again.
    pub(crate) fn restart(&mut self) {
        self.current = self.start;
    }

    /// A batch timed out: halve. Returns whether it shrank.
    pub(crate) fn timed_out(&mut self) -> bool {
        let before = self.current;
        self.current = (self.current / 2).max(1);
        self.start = self.start.min(self.current);
        self.current < before
    }

    /// The server found a batch too large (413): halve, and never go back above that.
    /// Returns whether it shrank (a batch of one cannot).
    pub(crate) fn too_large(&mut self) -> bool {
        let shrank = self.timed_out();
        self.cap = self.current;
        shrank
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_grows_while_a_backlog_remains_and_starts_small_again_with_a_new_session() {
        let mut size = Adaptive::new(250, 10_000);
        let mut seen = vec![size.size()];
        for _ in 0..4 {
            size.went_through(true);
            seen.push(size.size());
        }
        assert_eq!(seen, [250, 1_000, 4_000, 10_000, 10_000]);
        size.went_through(false);
        assert_eq!(size.size(), 10_000, "a steady stream keeps its size");
        size.restart();
        assert_eq!(size.size(), 250);
    }

    #[test]
    fn a_timeout_halves_it_and_a_413_caps_it() {
        let mut size = Adaptive::new(100, 1_000);
        size.went_through(true);
        assert!(size.timed_out());
        assert_eq!(size.size(), 200);
        size.went_through(true);
        assert_eq!(size.size(), 800);
        assert!(size.too_large());
        assert_eq!(size.size(), 400);
        size.went_through(true);
        assert_eq!(size.size(), 400, "never above what the server refused");
        let mut one = Adaptive::new(1, 1);
        assert!(!one.too_large(), "a batch of one cannot shrink");
    }

    #[test]
    fn the_start_never_exceeds_the_cap() {
        let size = Adaptive::new(250, 7);
        assert_eq!(size.size(), 7);
    }
}
