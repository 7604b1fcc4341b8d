//! Loading the tree from stored rows at open: [`RestorationTree::load`].
//!
//! Loading never fails and never panics: a restoration problem must never stop the app from
//! opening. Every row that cannot be restored is dropped, reported as a [`RestorationIssue`],
//! and a [`Repair`] tells the store how to bring the database in line with the loaded tree.

use std::fmt;

use super::codec;
use super::error::{RestorationError, SizeSubject};
use super::path::{validate_tag, BucketPath, EntryKey};
use super::schema::{RestorationSchema, UpgradeError};
use super::tree::{entry_size, Entry, Lifetime, RestorationLimits, RestorationTree, Slot};

/// One raw restoration row as the store reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The lifetime.
    pub lifetime: Lifetime,
    /// The bucket path (segments joined by `/`, `""` for the root).
    pub path: String,
    /// The entry key.
    pub key: String,
    /// The type tag.
    pub tag: String,
    /// The stored version.
    pub version: u32,
    /// The encoded value.
    pub bytes: Vec<u8>,
}

/// Why a row was dropped at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IssueKind {
    /// The row's columns do not hold the types tidesync writes (unknown lifetime, text that
    /// is not UTF-8, ...): the file was modified outside tidesync.
    Unreadable,
    /// The path breaks the naming rules.
    InvalidPath,
    /// The key breaks the naming rules.
    InvalidKey,
    /// The tag breaks the naming rules.
    InvalidTag,
    /// The version is 0.
    InvalidVersion,
    /// A second row for the same lifetime, path and key (the first one was kept).
    Duplicate,
    /// The bytes are not a valid encoding.
    Undecodable,
    /// The version is newer than the schema knows.
    TooNew,
    /// No migration leads from the stored version to the current one.
    MissingMigration,
    /// A migration failed (or produced a value that cannot be encoded).
    MigrationFailed,
    /// The entry alone exceeds `max_entry_bytes`.
    EntryTooLarge,
    /// Keeping the entry would exceed `max_tree_bytes`.
    TreeFull,
}

/// A row that was dropped at load, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorationIssue {
    /// The row's lifetime.
    pub lifetime: Lifetime,
    /// The row's path, as stored.
    pub path: String,
    /// The row's key, as stored.
    pub key: String,
    /// The row's tag, as stored.
    pub tag: String,
    /// The kind of problem.
    pub kind: IssueKind,
    /// A message for logs and developers.
    pub message: String,
}

impl fmt::Display for RestorationIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dropped restoration entry {:?}/{:?} ({:?}, type {:?}): {}",
            self.path, self.key, self.lifetime, self.tag, self.message
        )
    }
}

/// A change the store should make to its rows so that they match the loaded tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// Delete the row `(lifetime, path, key)` (raw strings, as read).
    Delete {
        /// The lifetime.
        lifetime: Lifetime,
        /// The path, as read.
        path: String,
        /// The key, as read.
        key: String,
    },
    /// Replace the row's tag, version and bytes with the migrated entry.
    Rewrite {
        /// The lifetime.
        lifetime: Lifetime,
        /// The path.
        path: String,
        /// The key.
        key: String,
        /// The tag.
        tag: String,
        /// The new version.
        version: u32,
        /// The new encoded value.
        bytes: Vec<u8>,
    },
}

/// The result of [`RestorationTree::load`].
#[derive(Debug)]
pub struct Loaded {
    /// The restored tree.
    pub tree: RestorationTree,
    /// The rows that were dropped.
    pub issues: Vec<RestorationIssue>,
    /// The row changes that make the database match `tree`.
    pub repairs: Vec<Repair>,
}

/// Why a row is dropped, and the message for the issue.
struct Dropped(IssueKind, String);

/// A row that is kept: where it goes, and its new bytes if it was migrated.
struct Kept {
    path: String,
    key: String,
    slot: Slot,
    rewrite: Option<Vec<u8>>,
}

impl RestorationTree {
    /// Builds the tree from stored rows, upgrading entries through `schema`.
    ///
    /// Rows are taken in the given order (pass them sorted, e.g. `ORDER BY lifetime, path, key`,
    /// so that which rows are dropped when the tree is full is deterministic). A row is dropped,
    /// reported and deleted if its path, key, tag or version is invalid, its bytes do not
    /// decode, its version is newer than the schema's, its migration is missing or fails, or it
    /// breaks a size limit. A migrated row is kept at its new version and rewritten. A
    /// duplicate `(lifetime, path, key)` row is reported but gets no repair (a `Delete` would
    /// also delete the kept row; the store's primary key makes duplicates impossible anyway).
    pub fn load(
        rows: impl IntoIterator<Item = StoredEntry>,
        schema: &RestorationSchema,
        limits: RestorationLimits,
    ) -> Loaded {
        let mut loaded = Loaded {
            tree: RestorationTree::new(limits),
            issues: Vec::new(),
            repairs: Vec::new(),
        };
        for row in rows {
            match load_row(&loaded.tree, &row, schema) {
                Ok(Kept {
                    path,
                    key,
                    slot,
                    rewrite,
                }) => {
                    if let Some(bytes) = rewrite {
                        loaded.repairs.push(Repair::Rewrite {
                            lifetime: row.lifetime,
                            path: row.path,
                            key: row.key,
                            tag: slot.entry.tag.clone(),
                            version: slot.entry.version,
                            bytes,
                        });
                    }
                    loaded.tree.insert_loaded(row.lifetime, path, key, slot);
                }
                Err(Dropped(kind, message)) => {
                    if kind != IssueKind::Duplicate {
                        loaded.repairs.push(Repair::Delete {
                            lifetime: row.lifetime,
                            path: row.path.clone(),
                            key: row.key.clone(),
                        });
                    }
                    loaded.issues.push(RestorationIssue {
                        lifetime: row.lifetime,
                        path: row.path,
                        key: row.key,
                        tag: row.tag,
                        kind,
                        message,
                    });
                }
            }
        }
        loaded
    }
}

/// Checks one row; returns the entry to keep and, if it was migrated, its new bytes.
fn load_row(
    tree: &RestorationTree,
    row: &StoredEntry,
    schema: &RestorationSchema,
) -> Result<Kept, Dropped> {
    let dropped = |kind| move |e: RestorationError| Dropped(kind, e.to_string());
    let path = BucketPath::parse(&row.path).map_err(dropped(IssueKind::InvalidPath))?;
    let key = EntryKey::new(&row.key).map_err(dropped(IssueKind::InvalidKey))?;
    validate_tag(&row.tag).map_err(dropped(IssueKind::InvalidTag))?;
    if row.version == 0 {
        let err = RestorationError::InvalidVersion {
            tag: row.tag.clone(),
        };
        return Err(dropped(IssueKind::InvalidVersion)(err));
    }
    if tree
        .size_of(row.lifetime, path.as_str(), key.as_str())
        .is_some()
    {
        let message = "another row with the same lifetime, path and key was loaded first".into();
        return Err(Dropped(IssueKind::Duplicate, message));
    }
    let value = codec::decode(&row.bytes)
        .map_err(|e| Dropped(IssueKind::Undecodable, format!("undecodable value: {e}")))?;
    let upgraded = schema.upgrade(&row.tag, row.version, value).map_err(|e| {
        let kind = match e {
            UpgradeError::TooNew { .. } => IssueKind::TooNew,
            UpgradeError::MissingMigration { .. } => IssueKind::MissingMigration,
            UpgradeError::MigrationFailed { .. } => IssueKind::MigrationFailed,
        };
        Dropped(kind, e.to_string())
    })?;
    let rewrite = if upgraded.migrated() {
        let bytes = codec::encode(&upgraded.value).map_err(|e| {
            let message = format!(
                "migration to version {} produced a value that cannot be stored: {e}",
                upgraded.version
            );
            Dropped(IssueKind::MigrationFailed, message)
        })?;
        Some(bytes)
    } else {
        None
    };
    let encoded_len = rewrite.as_ref().map_or(row.bytes.len(), Vec::len);
    let size = entry_size(encoded_len, key.as_str(), &row.tag);
    let limits = tree.limits();
    if size > limits.max_entry_bytes {
        let what = SizeSubject::Entry {
            lifetime: row.lifetime,
            path: row.path.clone(),
            key: row.key.clone(),
        };
        let err = RestorationError::TooLarge {
            what,
            size,
            limit: limits.max_entry_bytes,
        };
        return Err(dropped(IssueKind::EntryTooLarge)(err));
    }
    let total = tree.total_bytes().saturating_add(size);
    if total > limits.max_tree_bytes {
        let err = RestorationError::TooLarge {
            what: SizeSubject::Tree,
            size: total,
            limit: limits.max_tree_bytes,
        };
        return Err(dropped(IssueKind::TreeFull)(err));
    }
    let entry = Entry {
        tag: row.tag.clone(),
        version: upgraded.version,
        value: upgraded.value,
    };
    Ok(Kept {
        path: path.as_str().to_owned(),
        key: key.as_str().to_owned(),
        slot: Slot { entry, size },
        rewrite,
    })
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
