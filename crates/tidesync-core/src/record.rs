//! A record as last-writer-wins registers, and the merge of a mutation onto it.
//!
//! State of one record:
//! - one register per top-level field: `(stamp, value or removed)`;
//! - a **liveness** register: `(stamp, live?)`, written by every mutation (`delete` → dead,
//!   `put`/`patch` → live, so a later write resurrects a deleted record);
//! - a **clear** stamp: the newest `put` or `delete`. Field writes older than it are void,
//!   which is how `put` removes fields it does not name and how `delete` forgets the old
//!   document (a resurrecting `patch` brings back only the fields it writes).
//!
//! Each part only ever moves to a greater stamp (a stamp is `(HLC, client id)`, unique per
//! write), so applying the same set of mutations in any order, any number of times, gives
//! the same record: merge is commutative, associative and idempotent. Property tests below
//! check exactly that. Policies other than last-writer-wins (`server_wins`, `strict`) are
//! decided by the server before it calls [`RecordState::apply`]; they are not this module's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidesync_protocol::{Doc, Op, RecordStamps, Stamp};

/// One top-level field: its value (`None` = removed) and the stamp of the write that set it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldRegister {
    /// Stamp of the winning write.
    pub stamp: Stamp,
    /// The value, `None` when that write removed the field.
    pub value: Option<Value>,
}

/// The merge state of one record. `Default` is a record that was never written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RecordState {
    fields: BTreeMap<String, FieldRegister>,
    liveness: Option<(Stamp, bool)>,
    cleared: Option<Stamp>,
}

/// What applying one mutation did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplyEffect {
    /// Fields the mutation now owns (it had the newest stamp for them).
    pub won: Vec<String>,
    /// Fields the mutation wrote but a newer write keeps.
    pub lost: Vec<String>,
    /// The liveness register moved to this mutation.
    pub liveness_won: bool,
    /// The clear stamp moved to this mutation (a `put` or `delete` newer than the last
    /// clear): field writes older than it are void now, even if every register it wrote
    /// lost to a newer write.
    pub cleared: bool,
}

impl ApplyEffect {
    /// True if the mutation changed nothing at all: every part of it was already superseded.
    pub fn is_noop(&self) -> bool {
        self.won.is_empty() && !self.liveness_won && !self.cleared
    }
}

/// A [`Change`](tidesync_protocol::Change)'s document and stamps do not describe one state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// A present field has no stamp.
    #[error("field {0:?} is in the document but has no stamp")]
    UnstampedField(String),
    /// A live record has no liveness stamp.
    #[error("the record has a document but no liveness stamp")]
    MissingLiveness,
}

impl RecordState {
    /// Merges one mutation with stamp `stamp` onto the record.
    pub fn apply(&mut self, op: &Op, stamp: &Stamp) -> ApplyEffect {
        let mut effect = ApplyEffect {
            liveness_won: self.set_liveness(stamp, !matches!(op, Op::Delete)),
            ..ApplyEffect::default()
        };
        match op {
            Op::Put { doc } => {
                effect.cleared = self.clear(stamp);
                for (field, value) in doc {
                    self.write_field(field, Some(value), stamp, &mut effect);
                }
            }
            Op::Patch { fields } => {
                for (field, value) in fields {
                    let value = (!value.is_null()).then_some(value);
                    self.write_field(field, value, stamp, &mut effect);
                }
            }
            Op::Delete => effect.cleared = self.clear(stamp),
        }
        effect
    }

    /// The document, or `None` if the record is deleted or was never written.
    pub fn doc(&self) -> Option<Doc> {
        if !self.is_live() {
            return None;
        }
        Some(
            self.fields
                .iter()
                .filter_map(|(field, reg)| Some((field.clone(), reg.value.clone()?)))
                .collect(),
        )
    }

    /// Whether the record currently exists.
    pub fn is_live(&self) -> bool {
        matches!(self.liveness, Some((_, true)))
    }

    /// The register of one field, if it was written since the last clear.
    pub fn field(&self, name: &str) -> Option<&FieldRegister> {
        self.fields.get(name)
    }

    /// The liveness register: the stamp of its last write and whether the record is live.
    pub fn liveness(&self) -> Option<(&Stamp, bool)> {
        self.liveness.as_ref().map(|(s, live)| (s, *live))
    }

    /// The stamp of the newest `put` or `delete` (field writes older than it are void).
    pub fn cleared(&self) -> Option<&Stamp> {
        self.cleared.as_ref()
    }

    /// Names of the fields that have a register (present or removed).
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().map(String::as_str)
    }

    /// The newest stamp anywhere in the record (for clocks that must observe it).
    pub fn max_stamp(&self) -> Option<&Stamp> {
        let fields = self.fields.values().map(|r| &r.stamp);
        let liveness = self.liveness.iter().map(|(s, _)| s);
        fields.chain(liveness).chain(self.cleared.iter()).max()
    }

    /// The wire form: document plus stamps (removed fields appear in `stamps.fields` only).
    pub fn to_wire(&self) -> (Option<Doc>, RecordStamps) {
        let stamps = RecordStamps {
            fields: self
                .fields
                .iter()
                .map(|(f, r)| (f.clone(), r.stamp.clone()))
                .collect(),
            liveness: self.liveness.as_ref().map(|(s, _)| s.clone()),
            cleared: self.cleared.clone(),
        };
        (self.doc(), stamps)
    }

    /// Rebuilds the state from its wire form. A stamped field missing from the document was
    /// removed; a deleted record (`doc == None`) keeps only its stamps.
    pub fn from_wire(doc: Option<&Doc>, stamps: &RecordStamps) -> Result<RecordState, StateError> {
        if let Some(doc) = doc {
            if let Some(field) = doc.keys().find(|f| !stamps.fields.contains_key(*f)) {
                return Err(StateError::UnstampedField(field.clone()));
            }
            if stamps.liveness.is_none() {
                return Err(StateError::MissingLiveness);
            }
        }
        let fields = stamps
            .fields
            .iter()
            .map(|(field, stamp)| {
                let value = doc.and_then(|d| d.get(field)).cloned();
                let reg = FieldRegister {
                    stamp: stamp.clone(),
                    value,
                };
                (field.clone(), reg)
            })
            .collect();
        Ok(RecordState {
            fields,
            liveness: stamps.liveness.clone().map(|s| (s, doc.is_some())),
            cleared: stamps.cleared.clone(),
        })
    }

    /// Like [`RecordState::from_wire`], taking the document's values instead of cloning them.
    pub fn from_wire_owned(
        doc: Option<Doc>,
        stamps: RecordStamps,
    ) -> Result<RecordState, StateError> {
        let live = doc.is_some();
        let mut doc = doc.unwrap_or_default();
        if live {
            if let Some(field) = doc.keys().find(|f| !stamps.fields.contains_key(*f)) {
                return Err(StateError::UnstampedField(field.clone()));
            }
            if stamps.liveness.is_none() {
                return Err(StateError::MissingLiveness);
            }
        }
        let fields = stamps
            .fields
            .into_iter()
            .map(|(field, stamp)| {
                let value = doc.remove(&field);
                (field, FieldRegister { stamp, value })
            })
            .collect();
        Ok(RecordState {
            fields,
            liveness: stamps.liveness.map(|s| (s, live)),
            cleared: stamps.cleared,
        })
    }

    /// Every register (present or removed field), in field order.
    pub fn registers(&self) -> impl Iterator<Item = (&str, &FieldRegister)> {
        self.fields.iter().map(|(f, r)| (f.as_str(), r))
    }

    fn set_liveness(&mut self, stamp: &Stamp, live: bool) -> bool {
        let newer = self.liveness.as_ref().is_none_or(|(s, _)| stamp > s);
        if newer {
            self.liveness = Some((stamp.clone(), live));
        }
        newer
    }

    /// Moves the clear stamp to `stamp` if it is newer; returns whether it moved.
    fn clear(&mut self, stamp: &Stamp) -> bool {
        if self.cleared.as_ref().is_none_or(|c| stamp > c) {
            self.cleared = Some(stamp.clone());
            // Registers older than the clear are void forever: forget them.
            self.fields.retain(|_, reg| reg.stamp >= *stamp);
            true
        } else {
            false
        }
    }

    fn write_field(
        &mut self,
        field: &str,
        value: Option<&Value>,
        stamp: &Stamp,
        effect: &mut ApplyEffect,
    ) {
        let void = self.cleared.as_ref().is_some_and(|c| stamp < c);
        let newer = self.fields.get(field).is_none_or(|reg| *stamp > reg.stamp);
        if void || !newer {
            effect.lost.push(field.to_owned());
            return;
        }
        self.fields.insert(
            field.to_owned(),
            FieldRegister {
                stamp: stamp.clone(),
                value: value.cloned(),
            },
        );
        effect.won.push(field.to_owned());
    }
}

#[cfg(test)]
mod tests;
