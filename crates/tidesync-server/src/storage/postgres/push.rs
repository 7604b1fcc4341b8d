//! One push in one PostgreSQL transaction: locks, reads, [`plan`], writes (see the module
//! docs of [`super`] for the lock order).

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use deadpool_postgres::Transaction;
use tidesync_core::HlcClock;
use tidesync_protocol::RecordKey;

use crate::config::MergeRules;
use crate::storage::plan::{
    self, ClientRow, Loaded, PushPlan, RecordWrite, Stamping, StoredRecord,
};
use crate::storage::postgres::storage_error;
use crate::storage::{PushInput, StorageError};

/// Why a push failed: PostgreSQL's error (kept whole, so a deadlock can be retried) or a
/// decided refusal.
#[derive(Debug)]
pub(crate) enum Failed {
    Pg(&'static str, tokio_postgres::Error),
    Storage(StorageError),
}

impl Failed {
    pub(crate) fn into_storage(self) -> StorageError {
        match self {
            Failed::Pg(context, e) => storage_error(context, &e),
            Failed::Storage(e) => e,
        }
    }
}

trait Context<T> {
    fn context(self, what: &'static str) -> Result<T, Failed>;
}

impl<T> Context<T> for Result<T, tokio_postgres::Error> {
    fn context(self, what: &'static str) -> Result<T, Failed> {
        self.map_err(|e| Failed::Pg(what, e))
    }
}

impl From<StorageError> for Failed {
    fn from(e: StorageError) -> Failed {
        Failed::Storage(e)
    }
}

/// Applies `input` in one transaction on `client` and returns what it did. A refused or
/// failed push is rolled back before this returns (not left to the transaction's drop, whose
/// `ROLLBACK` is only sent when the connection task runs next: until then the transaction
/// would hold the client's and the spaces' row locks).
pub(crate) async fn push(
    client: &mut deadpool_postgres::Client,
    input: &PushInput,
    rules: &MergeRules,
    clock: &Mutex<HlcClock>,
) -> Result<PushPlan, Failed> {
    let tx = client.transaction().await.context("begin a push")?;
    match apply(&tx, input, rules, clock).await {
        Ok(planned) => {
            tx.commit().await.context("commit a push")?;
            Ok(planned)
        }
        Err(e) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::debug!(error = %rollback, "rollback of a failed push failed");
            }
            Err(e)
        }
    }
}

/// Everything of a push inside its transaction but the commit.
async fn apply(
    tx: &Transaction<'_>,
    input: &PushInput,
    rules: &MergeRules,
    clock: &Mutex<HlcClock>,
) -> Result<PushPlan, Failed> {
    let id = input.client_id.as_str();
    let row = match lock_client(tx, id).await? {
        Some(row) => Some(row),
        None => {
            // Registered inside the transaction: rolled back with it if the push is refused;
            // a concurrent first push of the same client waits here for this one.
            let insert = tx
                .prepare_cached(
                    "INSERT INTO ts_clients (client_id, user_id, last_seq) VALUES ($1, $2, 0)
                     ON CONFLICT DO NOTHING",
                )
                .await
                .context("register the client")?;
            tx.execute(&insert, &[&id, &input.user])
                .await
                .context("register the client")?;
            lock_client(tx, id).await?
        }
    };
    let standing = plan::standing(row, input)?;
    let needs = plan::needs(input, standing);
    let mut loaded = Loaded::default();
    if let Some((low, high)) = needs.retried {
        let stmt = tx
            .prepare_cached(
                "SELECT seq, code, message FROM ts_rejected
                 WHERE client_id = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq",
            )
            .await
            .context("read remembered rejections")?;
        for r in tx
            .query(&stmt, &[&id, &(low as i64), &(high as i64)])
            .await
            .context("read remembered rejections")?
        {
            let seq: i64 = r.get(0);
            loaded
                .rejected_again
                .push(plan::remembered(seq as u64, r.get(1), r.get(2)));
        }
    }
    if !needs.spaces.is_empty() {
        let spaces: Vec<&str> = needs.spaces.iter().map(|s| s.as_str()).collect();
        // Every touched space gets a row, then all are locked in sorted order.
        let create = tx
            .prepare_cached(
                "INSERT INTO ts_spaces (space, version)
                 SELECT s, 0 FROM unnest($1::text[]) AS s ORDER BY s ON CONFLICT DO NOTHING",
            )
            .await
            .context("create the spaces")?;
        tx.execute(&create, &[&spaces])
            .await
            .context("create the spaces")?;
        let lock = tx
            .prepare_cached(
                "SELECT space, version FROM ts_spaces WHERE space = ANY($1)
                 ORDER BY space FOR UPDATE",
            )
            .await
            .context("lock the spaces")?;
        for r in tx
            .query(&lock, &[&spaces])
            .await
            .context("lock the spaces")?
        {
            let version: i64 = r.get(1);
            if let Some(space) = needs
                .spaces
                .iter()
                .find(|s| s.as_str() == r.get::<_, &str>(0))
            {
                loaded.versions.insert(space.clone(), version as u64);
            }
        }
    }
    if !needs.records.is_empty() {
        let keys: Vec<&RecordKey> = needs.records.iter().collect();
        let spaces: Vec<&str> = keys.iter().map(|k| k.space.as_str()).collect();
        let collections: Vec<&str> = keys.iter().map(|k| k.collection.as_str()).collect();
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        let stmt = tx
            .prepare_cached(
                "SELECT r.space, r.collection, r.id, r.version, r.doc, r.stamps, r.versions, r.echo
                 FROM unnest($1::text[], $2::text[], $3::text[]) AS k(space, collection, id)
                 JOIN ts_records r USING (space, collection, id)",
            )
            .await
            .context("read the records")?;
        for r in tx
            .query(&stmt, &[&spaces, &collections, &ids])
            .await
            .context("read the records")?
        {
            let key = RecordKey::parse(r.get(0), r.get(1), r.get(2)).map_err(|e| {
                StorageError::Internal(format!("a stored record key is invalid: {e}"))
            })?;
            let stored = StoredRecord {
                version: r.get::<_, i64>(3) as u64,
                doc: r.get(4),
                stamps: r.get(5),
                versions: r.get(6),
                echo: r.get(7),
            };
            let record = plan::decode_record(&key, stored)?;
            loaded.records.insert(key, record);
        }
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    // Planned on a copy of the node's clock: the mutex is held for a copy and a merge, not
    // for the whole plan, so the pushes of one node plan in parallel instead of queueing on
    // it (and parking executor threads). The copy is merged back before the commit, so a
    // later push of the same client or spaces, which waits for this one's row locks, starts
    // from a clock past every stamp given here. Pushes planning at the same moment may give
    // equal HLCs, as two nodes can; a stamp also carries its client id, which tells them
    // apart.
    let poisoned = |_| StorageError::Internal("the server clock is poisoned".into());
    let mut local = *clock.lock().map_err(poisoned)?;
    let planned = plan::plan(
        input,
        standing,
        loaded,
        rules,
        &mut Stamping {
            clock: &mut local,
            now_ms,
        },
    );
    clock.lock().map_err(poisoned)?.observe(local.last());
    write(tx, input, &planned).await?;
    Ok(planned)
}

async fn lock_client(tx: &Transaction<'_>, id: &str) -> Result<Option<ClientRow>, Failed> {
    let stmt = tx
        .prepare_cached("SELECT user_id, last_seq FROM ts_clients WHERE client_id = $1 FOR UPDATE")
        .await
        .context("lock the client")?;
    let row = tx
        .query_opt(&stmt, &[&id])
        .await
        .context("lock the client")?;
    Ok(row.map(|r| ClientRow {
        user: r.get(0),
        last_seq: r.get::<_, i64>(1) as u64,
    }))
}

/// Inserts records never stored before. Plain `INSERT`, not an upsert (a third cheaper per
/// row in PostgreSQL): a record the push's read did not find cannot have appeared since,
/// because every write to a space's records holds the space's row lock, which this
/// transaction holds.
const INSERT_RECORDS: &str = "INSERT INTO ts_records
         (space, collection, id, version, doc, stamps, versions, echo, deleted_at)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[],
                          $5::text[], $6::text[], $7::text[], $8::text[], $9::int8[])";

/// Rewrites records stored before (an upsert: index lookups by key, whatever the planner
/// thinks of the unnest's size).
const UPSERT_RECORDS: &str = "INSERT INTO ts_records
         (space, collection, id, version, doc, stamps, versions, echo, deleted_at)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[],
                          $5::text[], $6::text[], $7::text[], $8::text[], $9::int8[])
     ON CONFLICT (space, collection, id) DO UPDATE SET
         version = excluded.version, doc = excluded.doc, stamps = excluded.stamps,
         versions = excluded.versions, echo = excluded.echo, deleted_at = excluded.deleted_at";

/// Writes `planned`: at most two statements for the records (new ones, rewritten ones), one
/// for new refusals, one for `last_seq`, one for the space versions.
async fn write(tx: &Transaction<'_>, input: &PushInput, planned: &PushPlan) -> Result<(), Failed> {
    let (new, stored): (Vec<&RecordWrite>, Vec<&RecordWrite>) =
        planned.writes.iter().partition(|w| w.stored_at == 0);
    write_records(tx, &new, planned.at_ms, INSERT_RECORDS).await?;
    write_records(tx, &stored, planned.at_ms, UPSERT_RECORDS).await?;
    let id = input.client_id.as_str();
    let at = planned.at_ms as i64;
    if !planned.refusals.is_empty() {
        let seqs: Vec<i64> = planned.refusals.iter().map(|r| r.seq as i64).collect();
        let codes: Vec<&str> = planned.refusals.iter().map(|r| r.code.as_str()).collect();
        let messages: Vec<&str> = planned
            .refusals
            .iter()
            .map(|r| r.message.as_str())
            .collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO ts_rejected (client_id, seq, code, message, rejected_at)
                 SELECT $1, *, $5 FROM unnest($2::int8[], $3::text[], $4::text[])
                 ON CONFLICT (client_id, seq) DO UPDATE SET code = excluded.code,
                     message = excluded.message, rejected_at = excluded.rejected_at",
            )
            .await
            .context("remember the rejections")?;
        tx.execute(&stmt, &[&id, &seqs, &codes, &messages, &at])
            .await
            .context("remember the rejections")?;
    }
    let stmt = tx
        .prepare_cached(
            "UPDATE ts_clients SET last_seq = $2, last_push_at = $3 WHERE client_id = $1",
        )
        .await
        .context("advance last_seq")?;
    tx.execute(&stmt, &[&id, &(planned.last_seq() as i64), &at])
        .await
        .context("advance last_seq")?;
    if !planned.moved.is_empty() {
        let spaces: Vec<&str> = planned.moved.keys().map(|s| s.as_str()).collect();
        let versions: Vec<i64> = planned.moved.values().map(|v| *v as i64).collect();
        let stmt = tx
            .prepare_cached(
                "UPDATE ts_spaces AS s SET version = v.version
                 FROM unnest($1::text[], $2::int8[]) AS v(space, version)
                 WHERE s.space = v.space",
            )
            .await
            .context("bump the space versions")?;
        tx.execute(&stmt, &[&spaces, &versions])
            .await
            .context("bump the space versions")?;
    }
    Ok(())
}

/// Writes `writes` (if any) of a push at `at_ms` with `sql`, one array parameter per
/// column.
async fn write_records(
    tx: &Transaction<'_>,
    writes: &[&RecordWrite],
    at_ms: u64,
    sql: &str,
) -> Result<(), Failed> {
    if writes.is_empty() {
        return Ok(());
    }
    let n = writes.len();
    let (mut spaces, mut collections, mut ids) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut versions, mut docs, mut stamps, mut registers, mut echoes, mut deleted) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for w in writes {
        let encoded = plan::encode_record(&w.key, &w.record)?;
        spaces.push(w.key.space.as_str());
        collections.push(w.key.collection.as_str());
        ids.push(w.key.id.as_str());
        versions.push(w.record.version as i64);
        docs.push(encoded.wire.doc);
        stamps.push(encoded.wire.stamps);
        registers.push(encoded.versions);
        echoes.push(encoded.echo);
        deleted.push(plan::deleted_at(&w.record, at_ms));
    }
    let stmt = tx.prepare_cached(sql).await.context("write the records")?;
    tx.execute(
        &stmt,
        &[
            &spaces,
            &collections,
            &ids,
            &versions,
            &docs,
            &stamps,
            &registers,
            &echoes,
            &deleted,
        ],
    )
    .await
    .context("write the records")?;
    Ok(())
}
