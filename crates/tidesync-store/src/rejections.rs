//! Rejections: mutations the server refused, kept with the reason until the app retries or
//! discards them. Their local effect was rolled back when they were rejected.

use rusqlite::{params, Connection};
use tidesync_protocol::{ErrorCode, Hlc, Op, RecordKey};

use crate::records::key_from_row;
use crate::{Result, StoreError};

/// A refused mutation.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The mutation's original seq (its id here).
    pub seq: u64,
    /// Its original local transaction: retry and discard act on the whole transaction.
    pub tx: u64,
    /// The record it targeted.
    pub key: RecordKey,
    /// What it did.
    pub op: Op,
    /// When it was made.
    pub hlc: Hlc,
    /// Why the server refused it.
    pub code: ErrorCode,
    /// Why, in words.
    pub message: String,
    /// When the refusal arrived (ms since the epoch).
    pub rejected_at: u64,
}

pub(crate) fn parse_code(code: &str) -> ErrorCode {
    serde_json::from_value(serde_json::Value::String(code.to_owned()))
        .unwrap_or(ErrorCode::RuleViolation)
}

const SELECT: &str =
    "SELECT seq, tx, space, collection, id, op, hlc, code, message, rejected_at FROM rejections";

pub(crate) fn list(conn: &Connection, tx: Option<u64>) -> Result<Vec<Rejection>> {
    let sql = match tx {
        Some(_) => format!("{SELECT} WHERE tx = ?1 ORDER BY seq"),
        None => format!("{SELECT} WHERE ?1 IS NULL ORDER BY seq"),
    };
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(StoreError::sql("read rejections"))?;
    let rows = stmt
        .query_map(params![tx.map(|t| t as i64)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, String>(8)?,
                r.get::<_, i64>(9)?,
            ))
        })
        .map_err(StoreError::sql("read rejections"))?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, tx, space, collection, id, op, hlc, code, message, at) =
            row.map_err(StoreError::sql("read rejections"))?;
        out.push(Rejection {
            seq: seq as u64,
            tx: tx as u64,
            key: key_from_row(&space, &collection, &id)?,
            op: serde_json::from_str(&op).map_err(StoreError::bad_json("rejected mutation"))?,
            hlc: Hlc::from_u64(hlc as u64),
            code: parse_code(&code),
            message,
            rejected_at: at as u64,
        });
    }
    Ok(out)
}

pub(crate) fn tx_of(conn: &Connection, seq: u64) -> Result<u64> {
    use rusqlite::OptionalExtension;
    let tx: Option<i64> = conn
        .prepare_cached("SELECT tx FROM rejections WHERE seq = ?1")
        .and_then(|mut s| s.query_row([seq as i64], |r| r.get(0)).optional())
        .map_err(StoreError::sql("read a rejection"))?;
    tx.map(|t| t as u64)
        .ok_or_else(|| StoreError::NotFound(format!("rejection with seq {seq}")))
}

pub(crate) fn delete_tx(conn: &Connection, tx: u64) -> Result<usize> {
    conn.prepare_cached("DELETE FROM rejections WHERE tx = ?1")
        .and_then(|mut s| s.execute([tx as i64]))
        .map_err(StoreError::sql("remove rejections"))
}
