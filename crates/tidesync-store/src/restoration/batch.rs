//! Planning changes: [`RestorationChange`] in, validated [`PlannedChange`] out.
//!
//! Writing is two-step because the store commits to SQLite first and updates memory only after
//! the commit: plan (validate, encode, check limits) → persist the planned changes in the
//! transaction → [`RestorationTree::apply`] them after it commits. If the transaction rolls
//! back, drop the planned changes; the tree never saw them.

use std::collections::BTreeMap;

use super::codec;
use super::error::{RestorationError, SizeSubject};
use super::path::{validate_tag, BucketPath, EntryKey};
use super::tree::{buckets_under, entry_size, Entry, Lifetime, RestorationTree};

/// A change the app asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum RestorationChange {
    /// Create or replace the entry at `path`/`key`.
    Write {
        /// The lifetime to write to.
        lifetime: Lifetime,
        /// The bucket.
        path: BucketPath,
        /// The key in the bucket.
        key: EntryKey,
        /// The entry.
        entry: Entry,
    },
    /// Remove the entry at `path`/`key` (no-op if there is none).
    Remove {
        /// The lifetime.
        lifetime: Lifetime,
        /// The bucket.
        path: BucketPath,
        /// The key in the bucket.
        key: EntryKey,
    },
    /// Remove the bucket at `path` and everything below it (the root: the whole lifetime).
    RemoveBucket {
        /// The lifetime.
        lifetime: Lifetime,
        /// The bucket.
        path: BucketPath,
    },
    /// Remove every entry of a lifetime.
    ClearLifetime(Lifetime),
}

/// A validated write, with exactly the bytes the store must persist.
/// Only planning creates one, so applying it cannot break the tree's accounting.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedWrite {
    lifetime: Lifetime,
    path: BucketPath,
    key: EntryKey,
    entry: Entry,
    bytes: Vec<u8>,
    size: usize,
}

impl PlannedWrite {
    /// The lifetime (store it with [`Lifetime::as_i64`]).
    pub fn lifetime(&self) -> Lifetime {
        self.lifetime
    }
    /// The bucket path as stored: segments joined by `/`, `""` for the root.
    pub fn path(&self) -> &str {
        self.path.as_str()
    }
    /// The entry key.
    pub fn key(&self) -> &str {
        self.key.as_str()
    }
    /// The entry's type tag.
    pub fn tag(&self) -> &str {
        &self.entry.tag
    }
    /// The entry's version.
    pub fn version(&self) -> u32 {
        self.entry.version
    }
    /// The encoded value: store exactly these bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The counted size (see [`super::entry_size`]).
    pub fn size(&self) -> usize {
        self.size
    }
    /// The entry being written.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    pub(crate) fn into_parts(self) -> (Lifetime, BucketPath, EntryKey, Entry, usize) {
        (self.lifetime, self.path, self.key, self.entry, self.size)
    }
}

/// A validated change: persist it, then [`RestorationTree::apply`] it after the commit.
///
/// For the store: a `Write` is an upsert of `(lifetime, path, key)`; a `Remove` a delete of
/// that row; `RemoveBucket` deletes the rows whose path equals `path` or starts with `path/`
/// (all rows of the lifetime for the root; do not use `LIKE`, segments may contain `%` and `_`);
/// `ClearLifetime` deletes every row of the lifetime.
#[derive(Debug, Clone, PartialEq)]
pub enum PlannedChange {
    /// Upsert this entry.
    Write(PlannedWrite),
    /// Delete one entry.
    Remove {
        /// The lifetime.
        lifetime: Lifetime,
        /// The bucket.
        path: BucketPath,
        /// The key.
        key: EntryKey,
    },
    /// Delete a bucket and everything below it.
    RemoveBucket {
        /// The lifetime.
        lifetime: Lifetime,
        /// The bucket.
        path: BucketPath,
    },
    /// Delete every entry of a lifetime.
    ClearLifetime(Lifetime),
}

/// Overlay key: (lifetime, path, key).
type Slot = (Lifetime, String, String);

/// Plans several changes that commit together, each checked against the tree as it will be
/// after the changes planned before it (limits are cumulative). Borrowing the tree keeps it
/// from changing while a batch is planned.
#[derive(Debug)]
pub struct RestorationBatch<'a> {
    tree: &'a RestorationTree,
    /// Sizes of entries this batch wrote (`Some`) or removed (`None`).
    overlay: BTreeMap<Slot, Option<usize>>,
    /// Buckets removed by this batch, in order (the root for `ClearLifetime`).
    removed: Vec<(Lifetime, BucketPath)>,
    total_bytes: usize,
    planned: Vec<PlannedChange>,
}

impl<'a> RestorationBatch<'a> {
    pub(crate) fn new(tree: &'a RestorationTree) -> Self {
        RestorationBatch {
            tree,
            overlay: BTreeMap::new(),
            removed: Vec::new(),
            total_bytes: tree.total_bytes(),
            planned: Vec::new(),
        }
    }

    /// Validates `change` and adds it to the batch. On error the batch is unchanged.
    ///
    /// A write is rejected if its tag or version is invalid, its value nests too deep, its
    /// size exceeds `max_entry_bytes`, or it would grow the tree beyond `max_tree_bytes`
    /// (a write that does not grow the tree is accepted even if the tree is over the limit).
    pub fn plan(&mut self, change: RestorationChange) -> Result<(), RestorationError> {
        let planned = self.check(change)?;
        self.planned.push(planned);
        Ok(())
    }

    /// What the tree's total size will be after the planned changes.
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// The planned changes, in order: persist them, then apply them after the commit.
    pub fn finish(self) -> Vec<PlannedChange> {
        self.planned
    }

    pub(crate) fn check(
        &mut self,
        change: RestorationChange,
    ) -> Result<PlannedChange, RestorationError> {
        match change {
            RestorationChange::Write {
                lifetime,
                path,
                key,
                entry,
            } => {
                let (write, new_total) = self.check_write(lifetime, path, key, entry)?;
                let slot = (
                    lifetime,
                    write.path.as_str().to_owned(),
                    write.key.as_str().to_owned(),
                );
                self.overlay.insert(slot, Some(write.size));
                self.total_bytes = new_total;
                Ok(PlannedChange::Write(write))
            }
            RestorationChange::Remove {
                lifetime,
                path,
                key,
            } => {
                let slot = (lifetime, path.as_str().to_owned(), key.as_str().to_owned());
                let old = self.current_size(&slot).unwrap_or(0);
                self.total_bytes = self.total_bytes.saturating_sub(old);
                self.overlay.insert(slot, None);
                Ok(PlannedChange::Remove {
                    lifetime,
                    path,
                    key,
                })
            }
            RestorationChange::RemoveBucket { lifetime, path } => {
                self.remove_under(lifetime, &path);
                Ok(PlannedChange::RemoveBucket { lifetime, path })
            }
            RestorationChange::ClearLifetime(lifetime) => {
                self.remove_under(lifetime, &BucketPath::root());
                Ok(PlannedChange::ClearLifetime(lifetime))
            }
        }
    }

    fn check_write(
        &self,
        lifetime: Lifetime,
        path: BucketPath,
        key: EntryKey,
        entry: Entry,
    ) -> Result<(PlannedWrite, usize), RestorationError> {
        validate_tag(&entry.tag)?;
        if entry.version == 0 {
            return Err(RestorationError::InvalidVersion { tag: entry.tag });
        }
        let bytes = codec::encode(&entry.value)?;
        let size = entry_size(bytes.len(), key.as_str(), &entry.tag);
        let limits = self.tree.limits();
        if size > limits.max_entry_bytes {
            let what = SizeSubject::Entry {
                lifetime,
                path: path.as_str().to_owned(),
                key: key.as_str().to_owned(),
            };
            return Err(RestorationError::TooLarge {
                what,
                size,
                limit: limits.max_entry_bytes,
            });
        }
        let slot = (lifetime, path.as_str().to_owned(), key.as_str().to_owned());
        let old = self.current_size(&slot).unwrap_or(0);
        let new_total = self.total_bytes.saturating_sub(old).saturating_add(size);
        if new_total > limits.max_tree_bytes && new_total > self.total_bytes {
            let what = SizeSubject::Tree;
            return Err(RestorationError::TooLarge {
                what,
                size: new_total,
                limit: limits.max_tree_bytes,
            });
        }
        Ok((
            PlannedWrite {
                lifetime,
                path,
                key,
                entry,
                bytes,
                size,
            },
            new_total,
        ))
    }

    /// The size of the entry at `slot` as it will be after the planned changes.
    fn current_size(&self, slot: &Slot) -> Option<usize> {
        if let Some(planned) = self.overlay.get(slot) {
            return *planned;
        }
        let (lifetime, path, key) = slot;
        if self.is_removed(*lifetime, path) {
            return None;
        }
        self.tree.size_of(*lifetime, path, key)
    }

    fn is_removed(&self, lifetime: Lifetime, path: &str) -> bool {
        self.removed
            .iter()
            .any(|(l, p)| *l == lifetime && p.contains(path))
    }

    /// Accounts for removing everything at and below `prefix`.
    fn remove_under(&mut self, lifetime: Lifetime, prefix: &BucketPath) {
        let mut freed = 0usize;
        // Entries of the tree not yet overwritten or removed by this batch.
        for (path, entries) in buckets_under(self.tree.buckets(lifetime), prefix) {
            if self.is_removed(lifetime, path) {
                continue;
            }
            for (key, slot) in entries {
                let overlay_key = (lifetime, path.clone(), key.clone());
                if !self.overlay.contains_key(&overlay_key) {
                    freed = freed.saturating_add(slot.size);
                }
            }
        }
        // Entries this batch wrote.
        self.overlay.retain(|(l, path, _), size| {
            let doomed = *l == lifetime && prefix.contains(path);
            if doomed {
                freed = freed.saturating_add(size.unwrap_or(0));
            }
            !doomed
        });
        self.removed.push((lifetime, prefix.clone()));
        self.total_bytes = self.total_bytes.saturating_sub(freed);
    }
}
