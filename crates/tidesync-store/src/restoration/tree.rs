//! [`RestorationTree`]: the in-memory restoration state of both lifetimes, and how committed
//! changes are applied to it.
//!
//! Buckets are stored flat, keyed by their path string, and exist only while they hold
//! entries: an empty bucket and a missing one are the same thing. Nothing here recurses over
//! the tree, so a deep path cannot exhaust the stack.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::batch::{PlannedChange, RestorationBatch, RestorationChange};
use super::bucket::Bucket;
use super::codec::{self, EncodeError};
use super::error::RestorationError;
use super::path::BucketPath;
use super::value::Value;

/// How long restoration state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lifetime {
    /// Cleared when the app starts fresh; kept when the OS killed the app and restores it.
    Session,
    /// Always kept.
    Persistent,
}

impl Lifetime {
    /// Both lifetimes.
    pub const ALL: [Lifetime; 2] = [Lifetime::Session, Lifetime::Persistent];

    /// The stored form: `0` for session, `1` for persistent.
    pub fn as_i64(self) -> i64 {
        match self {
            Lifetime::Session => 0,
            Lifetime::Persistent => 1,
        }
    }

    /// Parses the stored form; `None` for any other number.
    pub fn from_i64(n: i64) -> Option<Lifetime> {
        match n {
            0 => Some(Lifetime::Session),
            1 => Some(Lifetime::Persistent),
            _ => None,
        }
    }

    fn index(self) -> usize {
        match self {
            Lifetime::Session => 0,
            Lifetime::Persistent => 1,
        }
    }
}

/// One restoration entry: a typed, versioned value.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The entry type (see [`super::validate_tag`]), e.g. `checkout.draft`.
    pub tag: String,
    /// The version of the type the value is in (>= 1).
    pub version: u32,
    /// The data.
    pub value: Value,
}

impl Entry {
    /// A new entry.
    pub fn new(tag: impl Into<String>, version: u32, value: impl Into<Value>) -> Self {
        Entry {
            tag: tag.into(),
            version,
            value: value.into(),
        }
    }

    /// The length of the encoded value (see [`codec::encode`]).
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        codec::encoded_len(&self.value)
    }
}

/// The size of an entry as counted against [`RestorationLimits`]: encoded value bytes (including
/// the format version byte) plus the byte lengths of the key and the tag. The bucket path is not
/// counted (it is bounded by [`super::MAX_PATH_BYTES`]).
pub fn entry_size(encoded_len: usize, key: &str, tag: &str) -> usize {
    encoded_len
        .saturating_add(key.len())
        .saturating_add(tag.len())
}

/// Size limits, in bytes as counted by [`entry_size`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestorationLimits {
    /// The largest single entry. Default 64 KiB.
    pub max_entry_bytes: usize,
    /// The largest total over all entries of both lifetimes. Default 4 MiB.
    pub max_tree_bytes: usize,
}

impl Default for RestorationLimits {
    fn default() -> Self {
        RestorationLimits {
            max_entry_bytes: 64 * 1024,
            max_tree_bytes: 4 * 1024 * 1024,
        }
    }
}

/// An entry and its counted size.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) entry: Entry,
    pub(crate) size: usize,
}

/// The buckets of one lifetime: path string → key → entry. Only non-empty buckets are stored.
pub(crate) type Buckets = BTreeMap<String, BTreeMap<String, Slot>>;

/// The buckets at `prefix` and below it, in path order.
pub(crate) fn buckets_under<'a>(
    buckets: &'a Buckets,
    prefix: &BucketPath,
) -> Box<dyn Iterator<Item = (&'a String, &'a BTreeMap<String, Slot>)> + 'a> {
    if prefix.is_root() {
        return Box::new(buckets.iter());
    }
    // Paths below `p` are exactly those in ["p/", "p0"): '0' is the byte after '/'.
    let own = buckets.get_key_value(prefix.as_str());
    let low = format!("{}/", prefix.as_str());
    let high = format!("{}0", prefix.as_str());
    let below = buckets.range::<str, _>((
        Bound::Included(low.as_str()),
        Bound::Excluded(high.as_str()),
    ));
    Box::new(own.into_iter().chain(below))
}

/// The restoration state of both lifetimes, with its limits.
///
/// Read it through [`root`](Self::root); change it by planning ([`plan`](Self::plan),
/// [`batch`](Self::batch)), persisting the planned changes, and then [`apply`](Self::apply)ing
/// them once the transaction has committed.
#[derive(Debug, Clone, Default)]
pub struct RestorationTree {
    lifetimes: [Buckets; 2],
    limits: RestorationLimits,
    total_bytes: usize,
    entry_count: usize,
}

impl RestorationTree {
    /// An empty tree.
    pub fn new(limits: RestorationLimits) -> Self {
        RestorationTree {
            limits,
            ..RestorationTree::default()
        }
    }

    /// The limits changes are checked against.
    pub fn limits(&self) -> RestorationLimits {
        self.limits
    }

    /// The root bucket of `lifetime`.
    pub fn root(&self, lifetime: Lifetime) -> Bucket<'_> {
        Bucket::new(self.buckets(lifetime), lifetime, Some(BucketPath::root()))
    }

    /// The bucket at `path` in `lifetime` (empty if nothing is stored there).
    pub fn bucket(&self, lifetime: Lifetime, path: &BucketPath) -> Bucket<'_> {
        Bucket::new(self.buckets(lifetime), lifetime, Some(path.clone()))
    }

    /// The number of entries in both lifetimes.
    pub fn entry_count(&self) -> usize {
        self.entry_count
    }

    /// The counted size of all entries of both lifetimes (see [`entry_size`]).
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Every entry of `lifetime` as `(path, key, entry)`, in path and key order.
    pub fn entries(&self, lifetime: Lifetime) -> impl Iterator<Item = (&str, &str, &Entry)> {
        self.buckets(lifetime).iter().flat_map(|(path, entries)| {
            entries
                .iter()
                .map(move |(key, slot)| (path.as_str(), key.as_str(), &slot.entry))
        })
    }

    /// Starts planning a group of changes that will commit together.
    pub fn batch(&self) -> RestorationBatch<'_> {
        RestorationBatch::new(self)
    }

    /// Validates one change against the current tree; see [`RestorationBatch::plan`].
    pub fn plan(&self, change: RestorationChange) -> Result<PlannedChange, RestorationError> {
        self.batch().check(change)
    }

    /// Applies a change after its transaction committed. Never fails: apply the changes of a
    /// batch in order, and plan the next batch only after applying the previous one (otherwise
    /// the limits checked while planning may not hold).
    pub fn apply(&mut self, change: PlannedChange) {
        match change {
            PlannedChange::Write(write) => {
                let (lifetime, path, key, entry, size) = write.into_parts();
                let bucket = self.lifetimes[lifetime.index()]
                    .entry(path.as_str().to_owned())
                    .or_default();
                let old = bucket.insert(key.as_str().to_owned(), Slot { entry, size });
                self.total_bytes = self.total_bytes.saturating_add(size);
                self.entry_count += 1;
                if let Some(old) = old {
                    self.forget(old.size, 1);
                }
            }
            PlannedChange::Remove {
                lifetime,
                path,
                key,
            } => {
                let buckets = &mut self.lifetimes[lifetime.index()];
                let Some(bucket) = buckets.get_mut(path.as_str()) else {
                    return;
                };
                let removed = bucket.remove(key.as_str());
                if bucket.is_empty() {
                    buckets.remove(path.as_str());
                }
                if let Some(old) = removed {
                    self.forget(old.size, 1);
                }
            }
            PlannedChange::RemoveBucket { lifetime, path } => {
                let buckets = &mut self.lifetimes[lifetime.index()];
                let doomed: Vec<String> = buckets_under(buckets, &path)
                    .map(|(p, _)| p.clone())
                    .collect();
                let (mut bytes, mut count) = (0usize, 0usize);
                for p in doomed {
                    if let Some(bucket) = buckets.remove(&p) {
                        count += bucket.len();
                        bytes = bucket.values().fold(bytes, |b, s| b.saturating_add(s.size));
                    }
                }
                self.forget(bytes, count);
            }
            PlannedChange::ClearLifetime(lifetime) => {
                let buckets = std::mem::take(&mut self.lifetimes[lifetime.index()]);
                let slots = buckets.values().flat_map(BTreeMap::values);
                let (bytes, count) = slots.fold((0usize, 0usize), |(b, c), s| {
                    (b.saturating_add(s.size), c + 1)
                });
                self.forget(bytes, count);
            }
        }
    }

    /// Applies the changes of a committed batch, in order.
    pub fn apply_all(&mut self, changes: impl IntoIterator<Item = PlannedChange>) {
        for change in changes {
            self.apply(change);
        }
    }

    pub(crate) fn buckets(&self, lifetime: Lifetime) -> &Buckets {
        &self.lifetimes[lifetime.index()]
    }

    /// The counted size of the entry at `path`/`key`, if there is one.
    pub(crate) fn size_of(&self, lifetime: Lifetime, path: &str, key: &str) -> Option<usize> {
        self.buckets(lifetime).get(path)?.get(key).map(|s| s.size)
    }

    /// Inserts a loaded entry (no limit checks: the loader does them).
    pub(crate) fn insert_loaded(
        &mut self,
        lifetime: Lifetime,
        path: String,
        key: String,
        slot: Slot,
    ) {
        let size = slot.size;
        let old = self.lifetimes[lifetime.index()]
            .entry(path)
            .or_default()
            .insert(key, slot);
        self.total_bytes = self.total_bytes.saturating_add(size);
        self.entry_count += 1;
        if let Some(old) = old {
            self.forget(old.size, 1);
        }
    }

    fn forget(&mut self, bytes: usize, count: usize) {
        self.total_bytes = self.total_bytes.saturating_sub(bytes);
        self.entry_count = self.entry_count.saturating_sub(count);
    }
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
