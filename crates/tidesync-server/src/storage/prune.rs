//! What one prune batch means, for every backend: which rows go (tombstones and remembered
//! rejections written at or before the cutoff, oldest first, at most `batch` rows in all),
//! and what the horizon of a space becomes (the newest version of its pruned tombstones).
//! A backend selects, deletes and moves the horizons in one transaction; the background
//! loop that calls it is [`crate::horizon`].
//!
//! The horizon is why pruning is safe: a client whose cursor for a space is below the
//! space's horizon may hold a record whose delete it never received, so its pull is answered
//! `cursor_reset` ([`crate::storage::page`]) and it downloads the space again.

use std::collections::BTreeMap;

use tidesync_protocol::SpaceName;

use crate::storage::StorageError;

/// One prune batch: what to look for and how much to delete in one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prune {
    /// Tombstones deleted at or before this time (ms since the epoch, `deleted_at`) go.
    pub cutoff_ms: u64,
    /// Rejections remembered at or before this time (`rejected_at`) go. The pruner uses
    /// one cutoff for both (`retain_deleted`); the simulation keeps rejections (0), since a
    /// retry later than their retention is the documented bound, not a fault to find.
    pub rejections_cutoff_ms: u64,
    /// Most rows deleted in this batch, tombstones and rejections together (at least 1).
    pub batch: u32,
}

impl Prune {
    /// The tombstones this batch may delete: the whole batch.
    pub fn tombstone_budget(&self) -> u64 {
        u64::from(self.batch.max(1))
    }

    /// The rejections it may delete once `tombstones` were deleted: what is left.
    pub fn rejection_budget(&self, tombstones: u64) -> u64 {
        self.tombstone_budget().saturating_sub(tombstones)
    }
}

/// What one prune batch deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Tombstones deleted.
    pub tombstones: u64,
    /// Remembered rejections deleted.
    pub rejections: u64,
}

impl Pruned {
    /// Whether the batch used its whole budget: more rows may wait.
    pub fn filled(&self, prune: &Prune) -> bool {
        self.tombstones + self.rejections >= prune.tombstone_budget()
    }

    /// Both counts added.
    pub fn add(&mut self, other: Pruned) {
        self.tombstones += other.tombstones;
        self.rejections += other.rejections;
    }
}

/// The new horizon candidates of a batch: per space, the newest version among its
/// `pruned` tombstones (as read: space name, version). A backend stores
/// `max(horizon, candidate)`, so a horizon never moves back, whichever node pruned first.
pub(crate) fn horizons<'a>(
    pruned: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<BTreeMap<SpaceName, u64>, StorageError> {
    let mut out = BTreeMap::<SpaceName, u64>::new();
    for (space, version) in pruned {
        let space = SpaceName::new(space).map_err(|e| {
            StorageError::Internal(format!("a stored tombstone's space is invalid: {e}"))
        })?;
        let v = out.entry(space).or_default();
        *v = (*v).max(version);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_get_what_tombstones_left_of_the_batch() {
        let prune = Prune {
            cutoff_ms: 0,
            rejections_cutoff_ms: 0,
            batch: 10,
        };
        assert_eq!(prune.rejection_budget(4), 6);
        assert_eq!(prune.rejection_budget(10), 0);
        assert!(Pruned {
            tombstones: 4,
            rejections: 6
        }
        .filled(&prune));
        assert!(!Pruned {
            tombstones: 4,
            rejections: 5
        }
        .filled(&prune));
        let empty = Prune {
            cutoff_ms: 0,
            rejections_cutoff_ms: 0,
            batch: 0,
        };
        assert_eq!(empty.tombstone_budget(), 1, "a batch always makes progress");
    }

    #[test]
    fn a_space_horizon_is_its_newest_pruned_tombstone() {
        let h = horizons([("a", 3), ("b", 9), ("a", 7), ("a", 5)]).expect("valid");
        let a = SpaceName::new("a").expect("valid");
        let b = SpaceName::new("b").expect("valid");
        assert_eq!(h, BTreeMap::from([(a, 7), (b, 9)]));
    }
}
