//! The records table: reading the local view, and recomputing it from base + pending.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::value::RawValue;
use tidesync_core::{wire, RecordState};
use tidesync_protocol::{
    ClientId, CollectionName, Doc, Hlc, Op, RecordId, RecordKey, SpaceName, Stamp,
};

use crate::{Result, StoreError};

/// A record as the app sees it: the local view.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Where it lives.
    pub key: RecordKey,
    /// The document (base + pending local changes).
    pub doc: Doc,
    /// True while local changes to it have not been confirmed by the server.
    pub pending: bool,
}

/// Which page of a collection to list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Start after this id (the `next` of the previous page); `None` for the first page.
    pub after: Option<RecordId>,
    /// Page size; 0 means the default of 100. At most 10,000.
    pub limit: usize,
}

/// One page of records, in id order (byte-wise).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordPage {
    /// The records.
    pub records: Vec<Record>,
    /// Pass as `after` to get the next page; `None` when this was the last.
    pub next: Option<RecordId>,
}

pub(crate) const MAX_PAGE: usize = 10_000;

pub(crate) fn get(conn: &Connection, key: &RecordKey) -> Result<Option<Record>> {
    let row = conn
        .prepare_cached(
            "SELECT doc, pending FROM records WHERE space = ?1 AND collection = ?2 AND id = ?3 AND doc IS NOT NULL",
        )
        .and_then(|mut s| {
            s.query_row(
                params![key.space.as_str(), key.collection.as_str(), key.id.as_str()],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()
        })
        .map_err(StoreError::sql("read a record"))?;
    row.map(|(doc, pending)| {
        Ok(Record {
            key: key.clone(),
            doc: parse_doc(&doc)?,
            pending: pending > 0,
        })
    })
    .transpose()
}

pub(crate) fn list(
    conn: &Connection,
    space: &SpaceName,
    collection: &CollectionName,
    options: &ListOptions,
) -> Result<RecordPage> {
    if options.limit > MAX_PAGE {
        return Err(StoreError::InvalidInput(format!(
            "page size {} is above the maximum of {MAX_PAGE}; page through with `after`",
            options.limit
        )));
    }
    let limit = if options.limit == 0 {
        100
    } else {
        options.limit
    };
    let after = options.after.as_ref().map(RecordId::as_str);
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, doc, pending FROM records
             WHERE space = ?1 AND collection = ?2 AND doc IS NOT NULL AND (?3 IS NULL OR id > ?3)
             ORDER BY id LIMIT ?4",
        )
        .map_err(StoreError::sql("list records"))?;
    let rows = stmt
        .query_map(
            params![space.as_str(), collection.as_str(), after, limit as i64 + 1],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            },
        )
        .map_err(StoreError::sql("list records"))?;
    let mut records = Vec::with_capacity(limit.min(1024));
    let mut more = false;
    for row in rows {
        let (id, doc, pending) = row.map_err(StoreError::sql("list records"))?;
        if records.len() == limit {
            more = true;
            break;
        }
        records.push(Record {
            key: RecordKey::new(space.clone(), collection.clone(), parse_id(&id)?),
            doc: parse_doc(&doc)?,
            pending: pending > 0,
        });
    }
    let next = more
        .then(|| records.last().map(|r| r.key.id.clone()))
        .flatten();
    Ok(RecordPage { records, next })
}

/// Recomputes a record's view from its base and its mutations still in the outbox (seq
/// order), merged exactly as the server will merge them. Drops the row when nothing is left.
///
/// With no mutation left the view is the base's document, taken from the stored text as is.
pub(crate) fn recompute(conn: &Connection, key: &RecordKey, client: &ClientId) -> Result<()> {
    let base: Option<Option<String>> = conn
        .prepare_cached("SELECT base FROM records WHERE space = ?1 AND collection = ?2 AND id = ?3")
        .and_then(|mut s| s.query_row(key_params(key), |r| r.get(0)).optional())
        .map_err(StoreError::sql("read a record's base"))?;
    let base = base.flatten();
    let mut stmt = conn
        .prepare_cached(
            "SELECT op, hlc FROM outbox WHERE space = ?1 AND collection = ?2 AND id = ?3 ORDER BY seq",
        )
        .map_err(StoreError::sql("read pending mutations"))?;
    let mut rows = stmt
        .query(key_params(key))
        .map_err(StoreError::sql("read pending mutations"))?;
    // Decoded from the base at the first pending mutation.
    let mut state: Option<RecordState> = None;
    let mut pending = 0i64;
    while let Some(row) = rows
        .next()
        .map_err(StoreError::sql("read pending mutations"))?
    {
        let op: String = row
            .get(0)
            .map_err(StoreError::sql("read pending mutations"))?;
        let hlc: i64 = row
            .get(1)
            .map_err(StoreError::sql("read pending mutations"))?;
        let op: Op = serde_json::from_str(&op).map_err(StoreError::bad_json("outbox mutation"))?;
        let mut merged = match state.take() {
            Some(merged) => merged,
            None => decode_base(base.as_deref())?,
        };
        merged.apply(&op, &Stamp::new(Hlc::from_u64(hlc as u64), client.clone()));
        state = Some(merged);
        pending += 1;
    }
    let doc = match state {
        None => base
            .as_deref()
            .map(base_doc)
            .transpose()?
            .flatten()
            .map(str::to_owned),
        Some(state) => state
            .doc()
            .map(|d| serde_json::to_string(&d))
            .transpose()
            .map_err(StoreError::bad_json("record document"))?,
    };
    if doc.is_none() && pending == 0 && base.is_none() {
        conn.prepare_cached("DELETE FROM records WHERE space = ?1 AND collection = ?2 AND id = ?3")
            .and_then(|mut s| s.execute(key_params(key)))
            .map_err(StoreError::sql("drop an empty record"))?;
    } else {
        conn.prepare_cached(
            "INSERT INTO records (space, collection, id, doc, pending) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO UPDATE SET doc = excluded.doc, pending = excluded.pending",
        )
        .and_then(|mut s| {
            s.execute(params![
                key.space.as_str(),
                key.collection.as_str(),
                key.id.as_str(),
                doc,
                pending
            ])
        })
        .map_err(StoreError::sql("update a record's view"))?;
    }
    Ok(())
}

/// The state stored in a `base` column (the joined wire form); empty when there is none.
pub(crate) fn decode_base(base: Option<&str>) -> Result<RecordState> {
    match base {
        Some(json) => wire::decode_joined(json).map_err(|e| StoreError::BadStoredData {
            what: "record base",
            detail: e.to_string(),
        }),
        None => Ok(RecordState::default()),
    }
}

/// The document text inside a `base` column, without parsing it; `None` when the base
/// record is deleted.
fn base_doc(base: &str) -> Result<Option<&str>> {
    #[derive(serde::Deserialize)]
    struct Joined<'a> {
        #[serde(borrow)]
        doc: Option<&'a RawValue>,
        #[serde(borrow, rename = "stamps")]
        _stamps: &'a RawValue,
    }
    let joined: Joined<'_> =
        serde_json::from_str(base).map_err(StoreError::bad_json("record base"))?;
    Ok(joined.doc.map(RawValue::get))
}

pub(crate) fn key_params(key: &RecordKey) -> [&str; 3] {
    [key.space.as_str(), key.collection.as_str(), key.id.as_str()]
}

pub(crate) fn key_from_row(space: &str, collection: &str, id: &str) -> Result<RecordKey> {
    RecordKey::parse(space, collection, id).map_err(|e| StoreError::BadStoredData {
        what: "record key",
        detail: e.to_string(),
    })
}

fn parse_id(id: &str) -> Result<RecordId> {
    RecordId::new(id).map_err(|e| StoreError::BadStoredData {
        what: "record id",
        detail: e.to_string(),
    })
}

pub(crate) fn parse_doc(json: &str) -> Result<Doc> {
    serde_json::from_str(json).map_err(StoreError::bad_json("record document"))
}
