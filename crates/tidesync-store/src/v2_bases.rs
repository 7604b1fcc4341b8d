//! Migration to schema version 2: `records.base` changes from the JSON of a `RecordState`
//! (version 1) to the joined wire form `{"doc":…,"stamps":…}` that pulls store as received.
//!
//! Released code: never change what it reads or writes. The version 1 format is spelled out
//! here rather than taken from `RecordState`'s serde form, which is free to change.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};
use serde::Deserialize;
use serde_json::Value;
use tidesync_core::{wire, RecordState};
use tidesync_protocol::{Doc, RecordStamps, Stamp};

use crate::{Result, StoreError};

/// Rows converted per read, so memory stays bounded whatever the table's size.
const CHUNK: i64 = 512;

/// A base as version 1 stored it: `RecordState` as serde derived it then.
#[derive(Deserialize)]
struct V1Base {
    fields: BTreeMap<String, V1Register>,
    liveness: Option<(Stamp, bool)>,
    cleared: Option<Stamp>,
}

#[derive(Deserialize)]
struct V1Register {
    stamp: Stamp,
    value: Option<Value>,
}

type Row = (String, String, String, String);

/// Rewrites every stored base; the first one that does not parse fails the migration (and
/// with it the whole upgrade transaction, so the file keeps its old version and data).
pub(crate) fn convert(conn: &Connection) -> Result<()> {
    let mut after: Option<(String, String, String)> = None;
    loop {
        let rows = next_chunk(conn, after.as_ref())?;
        for (space, collection, id, base) in &rows {
            let joined = joined_from_v1(base).map_err(|detail| StoreError::BadStoredData {
                what: "record base",
                detail: format!(
                    "{space}/{collection}/{id}: {detail}; the upgrade to schema version 2 \
                     stopped there and changed nothing"
                ),
            })?;
            conn.prepare_cached(
                "UPDATE records SET base = ?4 WHERE space = ?1 AND collection = ?2 AND id = ?3",
            )
            .and_then(|mut s| s.execute(params![space, collection, id, joined]))
            .map_err(StoreError::sql("convert a record base"))?;
        }
        let full = rows.len() as i64 == CHUNK;
        match rows.into_iter().last() {
            Some((space, collection, id, _)) if full => after = Some((space, collection, id)),
            _ => return Ok(()),
        }
    }
}

/// Up to [`CHUNK`] rows with a base, in key order, after `after`.
fn next_chunk(conn: &Connection, after: Option<&(String, String, String)>) -> Result<Vec<Row>> {
    let read = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?));
    let rows = match after {
        None => conn
            .prepare_cached(
                "SELECT space, collection, id, base FROM records WHERE base IS NOT NULL
                 ORDER BY space, collection, id LIMIT ?1",
            )
            .and_then(|mut s| s.query_map([CHUNK], read)?.collect()),
        Some((space, collection, id)) => conn
            .prepare_cached(
                "SELECT space, collection, id, base FROM records
                 WHERE base IS NOT NULL AND (space, collection, id) > (?1, ?2, ?3)
                 ORDER BY space, collection, id LIMIT ?4",
            )
            .and_then(|mut s| {
                s.query_map(params![space, collection, id, CHUNK], read)?
                    .collect()
            }),
    };
    rows.map_err(StoreError::sql("read record bases"))
}

/// The joined wire form of a version 1 base.
fn joined_from_v1(json: &str) -> std::result::Result<String, String> {
    let v1: V1Base = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let live = matches!(v1.liveness, Some((_, true)));
    let mut doc = Doc::new();
    let mut stamps = RecordStamps {
        liveness: v1.liveness.map(|(stamp, _)| stamp),
        cleared: v1.cleared,
        ..RecordStamps::default()
    };
    for (field, register) in v1.fields {
        if let (true, Some(value)) = (live, register.value) {
            doc.insert(field.clone(), value);
        }
        stamps.fields.insert(field, register.stamp);
    }
    let state =
        RecordState::from_wire_owned(live.then_some(doc), stamps).map_err(|e| e.to_string())?;
    let wire = wire::encode(&state);
    Ok(wire::join(wire.doc.as_deref(), &wire.stamps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidesync_protocol::{ClientId, Hlc, Op};

    fn stamp(n: u16) -> Stamp {
        Stamp::new(
            Hlc::new(100, n).expect("fits"),
            ClientId::new("bob").expect("valid"),
        )
    }

    fn doc(v: Value) -> Doc {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn version_1_bases_convert_to_the_same_state() {
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
        for state in [RecordState::default(), live, deleted] {
            // Version 1 wrote `serde_json::to_string(&RecordState)`.
            let v1 = serde_json::to_string(&state).expect("v1 json");
            let joined = joined_from_v1(&v1).expect("converts");
            assert_eq!(wire::decode_joined(&joined).expect("decodes"), state);
        }
    }

    #[test]
    fn every_row_is_converted_whatever_the_table_size() {
        let conn = Connection::open_in_memory().expect("memory db");
        let Some(crate::schema::Step::Sql(v1)) = crate::MIGRATIONS[0].first() else {
            panic!("version 1 is SQL");
        };
        conn.execute_batch(v1).expect("v1 schema");
        let mut state = RecordState::default();
        state.apply(
            &Op::Put {
                doc: doc(serde_json::json!({"a": 1})),
            },
            &stamp(1),
        );
        let v1_base = serde_json::to_string(&state).expect("v1 json");
        let rows = 2 * CHUNK + 7;
        for i in 0..rows {
            conn.execute(
                "INSERT INTO records (space, collection, id, doc, base) VALUES ('s', ?1, ?2, NULL, ?3)",
                params![format!("c{}", i % 3), format!("r{i}"), v1_base],
            )
            .expect("insert");
        }
        conn.execute(
            "INSERT INTO records (space, collection, id, doc, base, pending) VALUES ('s', 'c0', 'local', '{}', NULL, 1)",
            [],
        )
        .expect("insert");
        convert(&conn).expect("converts");
        let joined = wire::join(Some(r#"{"a":1}"#), &wire::encode(&state).stamps);
        let converted: i64 = conn
            .query_row(
                "SELECT count(*) FROM records WHERE base = ?1",
                [&joined],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(converted, rows);
        let untouched: Option<String> = conn
            .query_row("SELECT base FROM records WHERE id = 'local'", [], |r| {
                r.get(0)
            })
            .expect("row");
        assert_eq!(untouched, None);
    }

    #[test]
    fn an_unreadable_base_is_an_error() {
        for bad in ["", "{", "[]", r#"{"fields":{"a":{"stamp":"nope"}}}"#] {
            assert!(joined_from_v1(bad).is_err(), "{bad:?}");
        }
    }
}
