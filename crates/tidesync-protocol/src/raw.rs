//! Changes whose document and stamps stay JSON text: the fast path of pull.
//!
//! A server stores each record's document and stamps as the JSON it sends, so a pull splices
//! them into the response without parsing them; a client stores them as it received them.
//! [`RawChange`] serializes byte-for-byte like [`Change`], so the wire format is one.
//! Nothing trusts the text blindly: building a `RawChange` from stored text checks that it is
//! JSON, and [`RawChange::check`] checks that document and stamps describe one record state
//! (without building it) before a client stores it.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::{Change, CollectionName, Hlc, RecordId, SpaceName, Stamp};

/// A [`Change`] with its `doc` and `stamps` kept as JSON text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawChange {
    /// The record's space.
    pub space: SpaceName,
    /// The record's collection.
    pub collection: CollectionName,
    /// The record's id.
    pub id: RecordId,
    /// The space version at which the record last changed.
    pub version: u64,
    /// Whether the record is deleted (then `doc` is `None`).
    pub deleted: bool,
    /// The document as JSON text (an object), `None` when deleted.
    pub doc: Option<Box<RawValue>>,
    /// The [`RecordStamps`](crate::RecordStamps) as JSON text.
    pub stamps: Box<RawValue>,
}

/// A change whose document and stamps do not describe one record state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inconsistent change {0}")]
pub struct ChangeError(String);

impl RawChange {
    /// Checks, without building the record state, that `doc` and `stamps` describe one:
    /// `deleted` agrees with `doc`, the document is an object whose every field has a stamp,
    /// a live record has a liveness stamp, and every stamp is well formed. Returns the newest
    /// HLC among the stamps (a client's clock must observe it).
    pub fn check(&self) -> Result<Option<Hlc>, ChangeError> {
        self.check_parts().map_err(|ChangeError(e)| {
            ChangeError(format!(
                "{}/{}/{} at version {}: {e}",
                self.space, self.collection, self.id, self.version
            ))
        })
    }

    fn check_parts(&self) -> Result<Option<Hlc>, ChangeError> {
        if self.deleted != self.doc.is_none() {
            return Err(ChangeError(format!(
                "`deleted` is {} but the document is {}",
                self.deleted,
                if self.doc.is_some() {
                    "present"
                } else {
                    "null"
                }
            )));
        }
        let mut stamps: StampsRef<'_> = serde_json::from_str(self.stamps.get())
            .map_err(|e| ChangeError(format!("unreadable stamps: {e}")))?;
        let mut newest: Option<Hlc> = None;
        let mut observe = |stamp: &str| -> Result<(), ChangeError> {
            let hlc = Stamp::check_wire(stamp).map_err(|e| ChangeError(e.to_string()))?;
            newest = newest.max(Some(hlc));
            Ok(())
        };
        for (_, stamp) in &stamps.fields.0 {
            observe(stamp)?;
        }
        for stamp in stamps.liveness.iter().chain(stamps.cleared.iter()) {
            observe(stamp)?;
        }
        if let Some(doc) = &self.doc {
            if stamps.liveness.is_none() {
                return Err(ChangeError(
                    "the record has a document but no liveness stamp".into(),
                ));
            }
            stamps.fields.0.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let mut de = serde_json::Deserializer::from_str(doc.get());
            de.deserialize_map(StampedKeys(&stamps.fields.0))
                .map_err(|e| ChangeError(format!("document: {e}")))?;
        }
        Ok(newest)
    }

    /// The typed [`Change`] (parses the document and the stamps).
    pub fn parse(&self) -> Result<Change, serde_json::Error> {
        Ok(Change {
            space: self.space.clone(),
            collection: self.collection.clone(),
            id: self.id.clone(),
            version: self.version,
            deleted: self.deleted,
            doc: self
                .doc
                .as_ref()
                .map(|d| serde_json::from_str(d.get()))
                .transpose()?,
            stamps: serde_json::from_str(self.stamps.get())?,
        })
    }
}

impl Change {
    /// The same change with its document and stamps serialized.
    pub fn to_raw(&self) -> RawChange {
        RawChange {
            space: self.space.clone(),
            collection: self.collection.clone(),
            id: self.id.clone(),
            version: self.version,
            deleted: self.deleted,
            doc: self.doc.as_ref().map(to_raw_value),
            stamps: to_raw_value(&self.stamps),
        }
    }
}

/// A [`RawChange`] that passed [`RawChange::check`], with the newest HLC among its stamps.
/// Only [`RawChange::into_checked`] builds one, so holding it proves the check ran: a client
/// checks pages on its network thread and its store does not check them again.
#[derive(Debug, Clone)]
pub struct CheckedChange {
    raw: RawChange,
    newest: Option<Hlc>,
}

impl CheckedChange {
    /// The change.
    pub fn raw(&self) -> &RawChange {
        &self.raw
    }

    /// The newest HLC among its stamps.
    pub fn newest(&self) -> Option<Hlc> {
        self.newest
    }
}

impl RawChange {
    /// [`RawChange::check`], keeping the result with the change.
    pub fn into_checked(self) -> Result<CheckedChange, ChangeError> {
        let newest = self.check()?;
        Ok(CheckedChange { raw: self, newest })
    }
}

/// A pulled change in any form, as code that stores it needs it: raw text plus the newest
/// HLC of its stamps, checked. Typed changes (tests, tools) are serialized, raw ones checked,
/// checked ones taken as they are.
pub trait PulledChange {
    /// The raw form and the newest HLC, or why the change does not describe one state.
    fn checked(&self) -> Result<(Cow<'_, RawChange>, Option<Hlc>), ChangeError>;
}

impl PulledChange for CheckedChange {
    fn checked(&self) -> Result<(Cow<'_, RawChange>, Option<Hlc>), ChangeError> {
        Ok((Cow::Borrowed(&self.raw), self.newest))
    }
}

impl PulledChange for RawChange {
    fn checked(&self) -> Result<(Cow<'_, RawChange>, Option<Hlc>), ChangeError> {
        let newest = self.check()?;
        Ok((Cow::Borrowed(self), newest))
    }
}

impl PulledChange for Change {
    fn checked(&self) -> Result<(Cow<'_, RawChange>, Option<Hlc>), ChangeError> {
        let raw = self.to_raw();
        let newest = raw.check()?;
        Ok((Cow::Owned(raw), newest))
    }
}

fn to_raw_value<T: Serialize>(value: &T) -> Box<RawValue> {
    // Maps with string keys, strings and numbers always serialize.
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| {
        RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!())
    })
}

/// [`RecordStamps`](crate::RecordStamps), borrowed from the JSON text.
#[derive(Deserialize)]
struct StampsRef<'a> {
    #[serde(borrow, default)]
    fields: FieldStamps<'a>,
    #[serde(borrow, default)]
    liveness: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    cleared: Option<Cow<'a, str>>,
}

/// `{"field": "stamp", ...}` as a vector (no map to build).
#[derive(Default)]
struct FieldStamps<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'de: 'a, 'a> Deserialize<'de> for FieldStamps<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = FieldStamps<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of field stamps")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(entry) = map.next_entry::<Cow<'a, str>, Cow<'a, str>>()? {
                    out.push(entry);
                }
                Ok(FieldStamps(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Walks a document's keys, requiring each to be among the (sorted) stamped fields.
struct StampedKeys<'s, 'a>(&'s [(Cow<'a, str>, Cow<'a, str>)]);

impl<'de> Visitor<'de> for StampedKeys<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if self
                .0
                .binary_search_by(|(field, _)| field.as_ref().cmp(key.as_ref()))
                .is_err()
            {
                return Err(de::Error::custom(format!(
                    "field {key:?} is in the document but has no stamp"
                )));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientId, RecordStamps};

    fn change(doc: Option<serde_json::Value>) -> Change {
        let stamp = Stamp::new(
            Hlc::new(7, 1).expect("fits"),
            ClientId::new("c1").expect("valid"),
        );
        let mut stamps = RecordStamps {
            liveness: Some(stamp.clone()),
            cleared: Some(stamp.clone()),
            ..RecordStamps::default()
        };
        if let Some(serde_json::Value::Object(doc)) = &doc {
            for field in doc.keys() {
                stamps.fields.insert(field.clone(), stamp.clone());
            }
        }
        Change {
            space: SpaceName::new("s").expect("valid"),
            collection: CollectionName::new("todos").expect("valid"),
            id: RecordId::new("r1").expect("valid"),
            version: 3,
            deleted: doc.is_none(),
            doc: doc.map(|d| match d {
                serde_json::Value::Object(m) => m,
                _ => unreachable!(),
            }),
            stamps,
        }
    }

    #[test]
    fn serializes_exactly_like_change_and_parses_back() {
        for doc in [Some(serde_json::json!({"title": "a\"b", "n": 1.5})), None] {
            let typed = change(doc);
            let raw = typed.to_raw();
            assert_eq!(
                serde_json::to_string(&raw).expect("raw"),
                serde_json::to_string(&typed).expect("typed")
            );
            assert_eq!(raw.parse().expect("parse"), typed);
            let back: RawChange =
                serde_json::from_str(&serde_json::to_string(&typed).expect("json")).expect("raw");
            assert_eq!(back.parse().expect("parse"), typed);
            assert_eq!(
                back.check().expect("consistent"),
                Some(Hlc::new(7, 1).expect("fits"))
            );
        }
    }

    fn raw(doc: Option<&str>, stamps: &str, deleted: bool) -> RawChange {
        let mut c = change(None).to_raw();
        c.deleted = deleted;
        c.doc = doc.map(|d| RawValue::from_string(d.to_owned()).expect("json"));
        c.stamps = RawValue::from_string(stamps.to_owned()).expect("json");
        c
    }

    #[test]
    fn check_refuses_what_does_not_describe_one_state() {
        let s = "0000000000070001@c1";
        let ok = format!(r#"{{"fields":{{"a":"{s}"}},"liveness":"{s}"}}"#);
        assert!(raw(Some(r#"{"a":1}"#), &ok, false).check().is_ok());
        assert!(raw(Some("{}"), &ok, false).check().is_ok());
        assert!(raw(None, &ok, true).check().is_ok());
        let cases = [
            (Some(r#"{"b":1}"#), ok.clone(), false, "no stamp"),
            (Some(r#"{"a":1}"#), ok.clone(), true, "deleted"),
            (None, ok.clone(), false, "deleted"),
            (Some("[1]"), ok.clone(), false, "an object"),
            (
                Some(r#"{"a":1}"#),
                format!(r#"{{"fields":{{"a":"{s}"}}}}"#),
                false,
                "liveness",
            ),
            (
                Some(r#"{"a":1}"#),
                r#"{"fields":{"a":"0007@c1"},"liveness":"x"}"#.to_owned(),
                false,
                "hex",
            ),
            (
                Some(r#"{"a":1}"#),
                format!(r#"{{"fields":{{"a":"0000000000070001@bad id"}},"liveness":"{s}"}}"#),
                false,
                "client id",
            ),
            (Some(r#"{"a":1}"#), "1".to_owned(), false, "stamps"),
        ];
        for (doc, stamps, deleted, expect) in cases {
            let err = raw(doc, &stamps, deleted)
                .check()
                .expect_err(&format!("{doc:?} {stamps}"));
            assert!(err.to_string().contains(expect), "{err} lacks {expect:?}");
        }
    }
}
