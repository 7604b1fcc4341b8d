//! [`RestorationSchema`]: the registered entry types, their current versions and migrations.
//!
//! ```
//! # use tidesync_store::restoration::{RestorationSchema, Value};
//! let schema = RestorationSchema::builder()
//!     .register("checkout.draft", 3)
//!     .migration("checkout.draft", 1, |v| Ok(Value::List(vec![v])))
//!     .migration("checkout.draft", 2, |v| Ok(v))
//!     .build()
//!     .expect("a consistent schema");
//! let up = schema.upgrade("checkout.draft", 1, Value::Int(5)).expect("migrates");
//! assert_eq!((up.from_version, up.version), (1, 3));
//! ```
//!
//! Rules, checked by [`RestorationSchemaBuilder::build`] (order of the builder calls does not
//! matter): tags follow [`super::validate_tag`] and are registered once; versions start at 1;
//! a migration `from` upgrades version `from` to `from + 1`, so `from` lies in
//! `1..current`, its tag is registered and each `from` appears once; the migrations of a tag
//! form one unbroken chain ending at `current - 1`. A chain may start above 1: entries older
//! than its start cannot be upgraded and are dropped at load.
//!
//! **A tag that is not registered passes through [`RestorationSchema::upgrade`] unchanged**, at
//! whatever version it was stored: the schema only governs the types it knows.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::error::RestorationError;
use super::path::{validate_tag, NameRule};
use super::value::Value;

/// A migration from one version of an entry type to the next. An `Err` message says why the
/// value cannot be upgraded; the entry is then dropped and reported.
pub type Migration = Box<dyn Fn(Value) -> Result<Value, String> + Send + Sync>;

/// An inconsistent schema definition (a developer mistake, found at startup).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// A registered tag breaks the tag rules.
    #[error("restoration schema: invalid type tag {tag:?}: {rule}")]
    InvalidTag {
        /// The tag.
        tag: String,
        /// The rule it breaks.
        rule: NameRule,
    },
    /// A tag is registered at version 0.
    #[error("restoration schema: {tag:?} registered at version 0; versions start at 1")]
    ZeroVersion {
        /// The tag.
        tag: String,
    },
    /// A tag is registered twice.
    #[error("restoration schema: {tag:?} is registered twice; register each type once")]
    DuplicateTag {
        /// The tag.
        tag: String,
    },
    /// A migration names a tag that is not registered.
    #[error(
        "restoration schema: migration from version {from} of {tag:?}, which is not registered; \
         call register({tag:?}, current_version) too"
    )]
    UnregisteredMigration {
        /// The tag.
        tag: String,
        /// The migration's source version.
        from: u32,
    },
    /// Two migrations of the same tag start at the same version.
    #[error("restoration schema: two migrations from version {from} of {tag:?}")]
    DuplicateMigration {
        /// The tag.
        tag: String,
        /// The duplicated source version.
        from: u32,
    },
    /// A migration starts at 0 or at/after the current version.
    #[error(
        "restoration schema: migration from version {from} of {tag:?} is out of range; \
         the current version is {current}, so migrations start at 1 to {}",
        current.saturating_sub(1)
    )]
    MigrationOutOfRange {
        /// The tag.
        tag: String,
        /// The migration's source version.
        from: u32,
        /// The tag's current version.
        current: u32,
    },
    /// The migrations of a tag skip a version.
    #[error(
        "restoration schema: {tag:?} has migrations below version {missing} but none from \
         {missing}; add .migration({tag:?}, {missing}, ...) or remove the older ones"
    )]
    GapInChain {
        /// The tag.
        tag: String,
        /// The version without a migration.
        missing: u32,
    },
}

/// An entry could not be brought to the current version of its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// The stored version is newer than the schema's current version.
    #[error(
        "{tag:?} entry has version {stored}, but this app only knows versions up to {current} \
         (it was written by a newer app version)"
    )]
    TooNew {
        /// The tag.
        tag: String,
        /// The stored version.
        stored: u32,
        /// The schema's current version.
        current: u32,
    },
    /// No migration leads from `from` towards the current version.
    #[error(
        "{tag:?} entry is at version {from}, and there is no migration from it to the current \
         version {current}; register .migration({tag:?}, {from}, ...) to keep such entries"
    )]
    MissingMigration {
        /// The tag.
        tag: String,
        /// The version without a migration.
        from: u32,
        /// The schema's current version.
        current: u32,
    },
    /// A migration returned an error (or panicked).
    #[error("migrating {tag:?} from version {from} to {} failed: {message}", from + 1)]
    MigrationFailed {
        /// The tag.
        tag: String,
        /// The failed step's source version.
        from: u32,
        /// The migration's message.
        message: String,
    },
}

/// The result of [`RestorationSchema::upgrade`].
#[derive(Debug, Clone, PartialEq)]
pub struct Upgraded {
    /// The value at `version`.
    pub value: Value,
    /// The version the value was stored at.
    pub from_version: u32,
    /// The version of `value` now.
    pub version: u32,
}

impl Upgraded {
    /// `true` if at least one migration ran (the stored bytes should be rewritten).
    pub fn migrated(&self) -> bool {
        self.from_version != self.version
    }
}

struct EntryType {
    current: u32,
    migrations: BTreeMap<u32, Migration>,
}

/// The registered entry types. Build one with [`RestorationSchema::builder`];
/// [`RestorationSchema::default`] knows no types (everything passes through).
#[derive(Default)]
pub struct RestorationSchema {
    types: BTreeMap<String, EntryType>,
}

impl fmt::Debug for RestorationSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (tag, t) in &self.types {
            let froms: Vec<u32> = t.migrations.keys().copied().collect();
            map.entry(
                tag,
                &format_args!("v{} (migrations from {froms:?})", t.current),
            );
        }
        map.finish()
    }
}

impl RestorationSchema {
    /// Starts a schema definition.
    pub fn builder() -> RestorationSchemaBuilder {
        RestorationSchemaBuilder::default()
    }

    /// The current version of `tag`, or `None` if it is not registered.
    pub fn current_version(&self, tag: &str) -> Option<u32> {
        self.types.get(tag).map(|t| t.current)
    }

    /// Checks that an entry about to be written is not newer than the schema knows (it would be
    /// dropped at the next load). Unregistered tags and older versions are accepted.
    pub fn check_write(&self, tag: &str, version: u32) -> Result<(), UpgradeError> {
        match self.current_version(tag) {
            Some(current) if version > current => Err(UpgradeError::TooNew {
                tag: tag.to_owned(),
                stored: version,
                current,
            }),
            _ => Ok(()),
        }
    }

    /// Brings `value`, stored at `stored_version`, to the current version of `tag` by running
    /// the migrations in order. Unregistered tags pass through unchanged.
    pub fn upgrade(
        &self,
        tag: &str,
        stored_version: u32,
        value: Value,
    ) -> Result<Upgraded, UpgradeError> {
        let Some(entry_type) = self.types.get(tag) else {
            return Ok(Upgraded {
                value,
                from_version: stored_version,
                version: stored_version,
            });
        };
        let current = entry_type.current;
        if stored_version > current {
            return Err(UpgradeError::TooNew {
                tag: tag.to_owned(),
                stored: stored_version,
                current,
            });
        }
        let mut value = value;
        for from in stored_version..current {
            let migration =
                entry_type
                    .migrations
                    .get(&from)
                    .ok_or_else(|| UpgradeError::MissingMigration {
                        tag: tag.to_owned(),
                        from,
                        current,
                    })?;
            let failed = |message| UpgradeError::MigrationFailed {
                tag: tag.to_owned(),
                from,
                message,
            };
            // A panicking migration must not stop the app from opening: it fails the entry.
            value = catch_unwind(AssertUnwindSafe(|| migration(value)))
                .map_err(|panic| failed(format!("migration panicked: {}", panic_text(&panic))))?
                .map_err(failed)?;
        }
        Ok(Upgraded {
            value,
            from_version: stored_version,
            version: current,
        })
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// Collects registrations and migrations; [`build`](Self::build) checks them together.
#[derive(Default)]
pub struct RestorationSchemaBuilder {
    registrations: Vec<(String, u32)>,
    migrations: Vec<(String, u32, Migration)>,
}

impl fmt::Debug for RestorationSchemaBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestorationSchemaBuilder")
            .field("registrations", &self.registrations)
            .field("migrations", &self.migrations.len())
            .finish()
    }
}

impl RestorationSchemaBuilder {
    /// Registers entry type `tag` at version `current` (the version the app writes).
    pub fn register(mut self, tag: &str, current: u32) -> Self {
        self.registrations.push((tag.to_owned(), current));
        self
    }

    /// Adds the migration of `tag` from version `from` to `from + 1`.
    pub fn migration<F>(mut self, tag: &str, from: u32, migrate: F) -> Self
    where
        F: Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    {
        self.migrations
            .push((tag.to_owned(), from, Box::new(migrate)));
        self
    }

    /// Checks the definition (see the module docs) and returns the schema.
    pub fn build(self) -> Result<RestorationSchema, RestorationError> {
        let mut types: BTreeMap<String, EntryType> = BTreeMap::new();
        for (tag, current) in self.registrations {
            if let Err(RestorationError::InvalidTag { tag, rule }) = validate_tag(&tag) {
                return Err(SchemaError::InvalidTag { tag, rule }.into());
            }
            if current == 0 {
                return Err(SchemaError::ZeroVersion { tag }.into());
            }
            if types.contains_key(&tag) {
                return Err(SchemaError::DuplicateTag { tag }.into());
            }
            let migrations = BTreeMap::new();
            types.insert(
                tag,
                EntryType {
                    current,
                    migrations,
                },
            );
        }
        for (tag, from, migrate) in self.migrations {
            let Some(entry_type) = types.get_mut(&tag) else {
                return Err(SchemaError::UnregisteredMigration { tag, from }.into());
            };
            let current = entry_type.current;
            if from == 0 || from >= current {
                return Err(SchemaError::MigrationOutOfRange { tag, from, current }.into());
            }
            if entry_type.migrations.insert(from, migrate).is_some() {
                return Err(SchemaError::DuplicateMigration { tag, from }.into());
            }
        }
        for (tag, entry_type) in &types {
            // Versions with a migration must run unbroken up to `current - 1`.
            if let Some(&oldest) = entry_type.migrations.keys().next() {
                if let Some(missing) =
                    (oldest..entry_type.current).find(|v| !entry_type.migrations.contains_key(v))
                {
                    let tag = tag.clone();
                    return Err(SchemaError::GapInChain { tag, missing }.into());
                }
            }
        }
        Ok(RestorationSchema { types })
    }
}

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;
