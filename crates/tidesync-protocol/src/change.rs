//! Changes: the server's state of one record, as handed out by pull.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{CollectionName, Doc, RecordId, SpaceName, Stamp};

/// The last-writer-wins stamps of a record, enough for a client to merge its own pending
/// mutations onto the server state exactly as the server would.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RecordStamps {
    /// Per present field: the stamp of the write that set it.
    #[serde(default)]
    pub fields: BTreeMap<String, Stamp>,
    /// Stamp of the last write to the liveness register (delete, or put/patch that made the
    /// record live). `None` only for a record that was never written.
    #[serde(default)]
    pub liveness: Option<Stamp>,
    /// Stamp of the last `put` or `delete`: field writes older than it are void.
    #[serde(default)]
    pub cleared: Option<Stamp>,
}

/// The current state of one record after the server version `version` of its space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The record's space.
    pub space: SpaceName,
    /// The record's collection.
    pub collection: CollectionName,
    /// The record's id.
    pub id: RecordId,
    /// The space version at which the record last changed.
    pub version: u64,
    /// Whether the record is deleted (then `doc` is `null`).
    pub deleted: bool,
    /// The document, `null` when deleted.
    pub doc: Option<Doc>,
    /// The stamps behind the document.
    pub stamps: RecordStamps,
}
