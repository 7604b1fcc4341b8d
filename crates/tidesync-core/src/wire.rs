//! A record state as its wire form in JSON text: the document (`null` when the record is not
//! live) and its [`RecordStamps`].
//!
//! Servers and clients store records in this form, so a pull hands the text out (server) and
//! keeps it (client) without parsing it; only a merge (push on the server, rebase on the
//! client) turns it back into a [`RecordState`]. Encoding serializes straight from the
//! registers, without building the document or cloning a value.

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};
use tidesync_protocol::{Doc, RecordStamps};

use crate::record::{RecordState, StateError};

/// A record state's document and stamps, as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireJson {
    /// The document, `None` when the record is deleted or was never written.
    pub doc: Option<String>,
    /// The stamps.
    pub stamps: String,
}

/// Stored wire text that is not a record state.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not JSON of the expected shape.
    #[error("unreadable {what}: {source}")]
    Json {
        /// `"document"`, `"stamps"` or `"record"`.
        what: &'static str,
        /// The parse error.
        source: serde_json::Error,
    },
    /// Document and stamps do not describe one state.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Serializes a state's wire form.
pub fn encode(state: &RecordState) -> WireJson {
    let doc = state.is_live().then(|| to_json(&DocView(state)));
    WireJson {
        doc,
        stamps: to_json(&StampsView(state)),
    }
}

/// Parses a stored wire form back into a state.
pub fn decode(doc: Option<&str>, stamps: &str) -> Result<RecordState, WireError> {
    let doc: Option<Doc> = doc
        .map(serde_json::from_str)
        .transpose()
        .map_err(|source| WireError::Json {
            what: "document",
            source,
        })?;
    let stamps: RecordStamps = serde_json::from_str(stamps).map_err(|source| WireError::Json {
        what: "stamps",
        source,
    })?;
    Ok(RecordState::from_wire_owned(doc, stamps)?)
}

/// Both parts as one JSON object, `{"doc":…,"stamps":…}`, for a single column.
pub fn join(doc: Option<&str>, stamps: &str) -> String {
    let doc = doc.unwrap_or("null");
    let mut out = String::with_capacity(20 + doc.len() + stamps.len());
    out.push_str("{\"doc\":");
    out.push_str(doc);
    out.push_str(",\"stamps\":");
    out.push_str(stamps);
    out.push('}');
    out
}

/// Parses what [`join`] made.
pub fn decode_joined(json: &str) -> Result<RecordState, WireError> {
    #[derive(Deserialize)]
    struct Joined {
        doc: Option<Doc>,
        stamps: RecordStamps,
    }
    let joined: Joined = serde_json::from_str(json).map_err(|source| WireError::Json {
        what: "record",
        source,
    })?;
    Ok(RecordState::from_wire_owned(joined.doc, joined.stamps)?)
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Maps with string keys, JSON values and stamps always serialize.
    serde_json::to_string(value).unwrap_or_else(|_| unreachable!("wire form always serializes"))
}

struct DocView<'a>(&'a RecordState);

impl Serialize for DocView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (field, reg) in self.0.registers() {
            if let Some(value) = &reg.value {
                map.serialize_entry(field, value)?;
            }
        }
        map.end()
    }
}

struct StampsView<'a>(&'a RecordState);

impl Serialize for StampsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Fields<'a>(&'a RecordState);
        impl Serialize for Fields<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.registers().map(|(f, r)| (f, &r.stamp)))
            }
        }
        let mut st = s.serialize_struct("RecordStamps", 3)?;
        st.serialize_field("fields", &Fields(self.0))?;
        st.serialize_field("liveness", &self.0.liveness().map(|(s, _)| s))?;
        st.serialize_field("cleared", &self.0.cleared())?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidesync_protocol::{ClientId, Hlc, Op, Stamp};

    fn stamp(n: u16) -> Stamp {
        Stamp::new(
            Hlc::new(100, n).expect("fits"),
            ClientId::new("c").expect("valid"),
        )
    }

    fn states() -> Vec<RecordState> {
        let doc = |v: serde_json::Value| match v {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        };
        let mut live = RecordState::default();
        live.apply(
            &Op::Put {
                doc: doc(serde_json::json!({"a": 1, "b": {"x": [1, "two"]}})),
            },
            &stamp(1),
        );
        live.apply(
            &Op::Patch {
                fields: doc(serde_json::json!({"a": null, "c": "é\"q"})),
            },
            &stamp(2),
        );
        let mut deleted = live.clone();
        deleted.apply(&Op::Delete, &stamp(3));
        vec![RecordState::default(), live, deleted]
    }

    #[test]
    fn encoding_matches_to_wire_and_decodes_to_the_same_state() {
        for state in states() {
            let wire = encode(&state);
            let (doc, stamps) = state.to_wire();
            assert_eq!(
                wire.doc,
                doc.as_ref().map(|d| serde_json::to_string(d).expect("doc"))
            );
            assert_eq!(wire.stamps, serde_json::to_string(&stamps).expect("stamps"));
            assert_eq!(
                decode(wire.doc.as_deref(), &wire.stamps).expect("decode"),
                state
            );
            let joined = join(wire.doc.as_deref(), &wire.stamps);
            assert_eq!(decode_joined(&joined).expect("joined"), state);
        }
    }

    #[test]
    fn inconsistent_or_unreadable_text_is_an_error() {
        assert!(matches!(
            decode(Some(r#"{"a":1}"#), r#"{"fields":{},"liveness":null}"#),
            Err(WireError::State(_))
        ));
        assert!(matches!(
            decode(Some("[1]"), "{}"),
            Err(WireError::Json {
                what: "document",
                ..
            })
        ));
        assert!(matches!(
            decode_joined("{\"doc\":null}"),
            Err(WireError::Json { what: "record", .. })
        ));
    }
}
