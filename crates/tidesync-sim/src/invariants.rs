//! The promises, asserted after the network healed and every replica synced to quiescence.
//!
//! Each check returns `Err(description)` on the first violation; nothing is only logged.
//!
//! - **Convergence**: every client's view of every record equals the server's state (a full
//!   pull from scratch), and nothing is pending anywhere.
//! - **Exactly-once and apply order**: the server's ledger (every per-mutation result it
//!   produced, answered or not) holds each `(client, seq)` once, in outbox order, for seqs
//!   `1..=last_seq`; the server's `last_seq` (`acked_through`) equals the client's last seq;
//!   the versions a client's mutations landed at never go down. And by state: the `tally`
//!   space's version equals the number of tally mutations applied, because each of them
//!   changes the server's state (a double application by a re-stamping server would bump it).
//! - **No loss**: every write whose call returned either landed (its stamp is on the server's
//!   record or superseded there) or was rejected, and then sits in the client's rejections
//!   with the server's reason (or was retried by the app as a new write); rejections hold
//!   nothing else.
//! - **Transactions whole or absent**: all mutations of a local transaction have the same
//!   fate, and a rejected one leaves no stamp on the server.
//! - **Counts kept right**: the counts a client's status shows, which its store keeps in
//!   memory, equal a recount from its tables (checked after every action, not only at the end).

use std::collections::{BTreeMap, BTreeSet};

use tidesync_core::RecordState;
use tidesync_protocol::{Change, ClientId, Doc, Op, PushOutcome, RecordKey, Stamp};
use tidesync_server::Policy;
use tidesync_store::{ListOptions, Rejection};

use crate::actions::{key_of, policy_of, spaces, tally_key, KeyRef, COLLECTIONS, TALLY_SPACE};
use crate::client::{SimClient, Written};
use crate::server::{Applied, SimServer};

/// Totals of a checked run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Local writes whose call returned.
    pub writes: u64,
    /// Of those, rejected by the server.
    pub rejected: u64,
    /// Conflicts recorded by clients.
    pub conflicts: u64,
    /// Records on the server (tombstones included).
    pub records: u64,
    /// Pulls reset because their cursor was behind the history horizon.
    pub horizon_resets: u64,
}

/// Runs every check; the server must be running and the clients settled.
/// The ledger's entries for `key`, for failure messages.
fn history(ledger: &[Applied], key: &RecordKey) -> String {
    ledger
        .iter()
        .filter(|a| &a.key == key)
        .map(|a| {
            let outcome = format!("{:?}", a.outcome);
            let outcome: String = outcome.chars().take(24).collect();
            format!(
                "{}#{} {} at t{} {outcome}",
                a.client, a.seq, a.hlc, a.now_ms
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The store's kept counts equal a recount from its tables.
pub(crate) fn counts_are_kept(client: &mut SimClient) -> Result<(), String> {
    let index = client.setup.index;
    let store = client.store();
    let kept = store.counts().map_err(|e| e.to_string())?;
    let counted = store.recount().map_err(|e| e.to_string())?;
    if kept == counted {
        Ok(())
    } else {
        Err(format!(
            "client {index}: the store keeps {kept:?} but its tables hold {counted:?}"
        ))
    }
}

pub(crate) fn check(
    server: &mut SimServer,
    clients: &mut [SimClient],
    max_skew_ms: u64,
) -> Result<Totals, String> {
    let spaces = spaces();
    let (records, cursor) = server.full_state(&spaces);
    let mut totals = Totals {
        records: records.len() as u64,
        horizon_resets: server.horizon_resets,
        ..Totals::default()
    };
    let acked: Vec<u64> = clients
        .iter()
        .map(|c| server.acked_through(&c.setup.client_id, &spaces))
        .collect();
    for (client, acked) in clients.iter_mut().zip(acked) {
        counts_are_kept(client)?;
        convergence(client, &records)?;
        let mine: Vec<&Applied> = server
            .ledger
            .iter()
            .filter(|a| a.client == client.setup.client_id)
            .collect();
        exactly_once(client, &mine)?;
        let last = client.store_ref().outbox_stats().map_err(e)?.last_seq;
        if acked != last {
            return Err(format!(
                "exactly-once: the server's last_seq for client {} is {acked}, the client's last seq is {last}",
                client.setup.index
            ));
        }
        let outcomes: BTreeMap<u64, &Applied> = mine.iter().map(|a| (a.seq, *a)).collect();
        transactions(client, &outcomes)?;
        no_loss(
            client,
            &outcomes,
            &records,
            &server.ledger,
            &server.pruned,
            max_skew_ms,
        )?;
        totals.writes += client.writes.len() as u64;
        totals.rejected += outcomes
            .values()
            .filter(|a| matches!(a.outcome, PushOutcome::Rejected { .. }))
            .count() as u64;
        totals.conflicts += client.store_ref().conflict_count().map_err(e)?;
    }
    tally(clients, &server.ledger, &records, &cursor)?;
    Ok(totals)
}

fn e(err: impl std::fmt::Display) -> String {
    format!("store error while checking: {err}")
}

/// The client's whole view, by listing every collection.
fn view(client: &SimClient) -> Result<BTreeMap<RecordKey, (Doc, bool)>, String> {
    let mut out = BTreeMap::new();
    let mut lists: Vec<RecordKey> = (0..COLLECTIONS.len())
        .map(|collection| {
            key_of(KeyRef {
                collection,
                record: 0,
            })
        })
        .collect();
    lists.push(tally_key(0));
    for key in lists {
        let mut options = ListOptions {
            after: None,
            limit: 100,
        };
        loop {
            let page = client
                .store_ref()
                .list(&key.space, &key.collection, &options)
                .map_err(e)?;
            for record in page.records {
                out.insert(record.key, (record.doc, record.pending));
            }
            match page.next {
                Some(next) => options.after = Some(next),
                None => break,
            }
        }
    }
    Ok(out)
}

fn convergence(client: &SimClient, server: &BTreeMap<RecordKey, Change>) -> Result<(), String> {
    let who = client.setup.index;
    let stats = client.store_ref().outbox_stats().map_err(e)?;
    if stats.pending != 0 {
        return Err(format!(
            "convergence: client {who} still has {} pending mutations",
            stats.pending
        ));
    }
    let local = view(client)?;
    for (key, (doc, pending)) in &local {
        if *pending {
            return Err(format!("convergence: client {who}: {key} is still pending"));
        }
        match server.get(key).and_then(|c| c.doc.as_ref()) {
            Some(theirs) if theirs == doc => {}
            theirs => {
                return Err(format!(
                    "convergence: client {who} sees {key} = {doc:?}, the server has {theirs:?}"
                ))
            }
        }
    }
    for (key, change) in server {
        if change.doc.is_some() && !local.contains_key(key) {
            return Err(format!(
                "convergence: client {who} lacks {key}, the server has {:?}",
                change.doc
            ));
        }
    }
    Ok(())
}

fn exactly_once(client: &SimClient, mine: &[&Applied]) -> Result<(), String> {
    let who = client.setup.index;
    let last = client.store_ref().outbox_stats().map_err(e)?.last_seq;
    let written: Vec<u64> = client.writes.iter().map(|w| w.seq).collect();
    if written != (1..=last).collect::<Vec<_>>() {
        return Err(format!(
            "outbox: client {who}'s returned writes have seqs {written:?}, the store's last seq is {last}"
        ));
    }
    for (i, applied) in mine.iter().enumerate() {
        let expected = i as u64 + 1;
        if applied.seq != expected {
            let twice = mine[..i].iter().any(|a| a.seq == applied.seq);
            return Err(if twice {
                format!(
                    "exactly-once: the server applied seq {} of client {who} twice",
                    applied.seq
                )
            } else {
                format!(
                    "apply order: the server applied seq {} of client {who} when seq {expected} was next in its outbox",
                    applied.seq
                )
            });
        }
    }
    if mine.len() as u64 != last {
        return Err(format!(
            "exactly-once: the server applied {} of client {who}'s {last} mutations",
            mine.len()
        ));
    }
    // Later mutations never land at an older version of their space.
    let mut seen: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for applied in mine {
        let version = match &applied.outcome {
            PushOutcome::Applied { version } | PushOutcome::Merged { version, .. } => *version,
            PushOutcome::Rejected { .. } => continue,
        };
        let space = applied.key.space.to_string();
        if let Some((seq, before)) = seen.get(&space) {
            if version < *before {
                return Err(format!(
                    "apply order: client {who}'s seq {} landed at version {version} of {space}, before its seq {seq} (version {before})",
                    applied.seq
                ));
            }
        }
        seen.insert(space, (applied.seq, version));
    }
    Ok(())
}

fn transactions(client: &SimClient, outcomes: &BTreeMap<u64, &Applied>) -> Result<(), String> {
    let who = client.setup.index;
    let mut fate: BTreeMap<u64, (bool, u64)> = BTreeMap::new();
    for w in &client.writes {
        let applied = outcomes[&w.seq];
        if applied.tx != w.tx || applied.hlc != w.hlc {
            return Err(format!(
                "transactions: client {who}'s seq {} is tx {} at {}, the server applied tx {} at {}",
                w.seq, w.tx, w.hlc, applied.tx, applied.hlc
            ));
        }
        let rejected = matches!(applied.outcome, PushOutcome::Rejected { .. });
        match fate.get(&w.tx) {
            Some((other, seq)) if *other != rejected => {
                return Err(format!(
                    "transactions: client {who}'s tx {} is half applied (seq {seq} rejected: {other}, seq {} rejected: {rejected})",
                    w.tx, w.seq
                ))
            }
            _ => {
                fate.insert(w.tx, (rejected, w.seq));
            }
        }
    }
    Ok(())
}

fn no_loss(
    client: &SimClient,
    outcomes: &BTreeMap<u64, &Applied>,
    records: &BTreeMap<RecordKey, Change>,
    ledger: &[Applied],
    pruned: &BTreeSet<RecordKey>,
    max_skew_ms: u64,
) -> Result<(), String> {
    let who = client.setup.index;
    let rejections: BTreeMap<u64, Rejection> = client
        .store_ref()
        .rejections()
        .map_err(e)?
        .into_iter()
        .map(|r| (r.seq, r))
        .collect();
    for (seq, rejection) in &rejections {
        if !matches!(
            outcomes.get(seq).map(|a| &a.outcome),
            Some(PushOutcome::Rejected { .. })
        ) {
            return Err(format!(
                "no loss: client {who} holds a rejection of seq {seq} ({}) the server never made",
                rejection.code.as_str()
            ));
        }
    }
    for w in &client.writes {
        let check = WriteCheck {
            client,
            applied: outcomes[&w.seq],
            rejections: &rejections,
            record: records.get(&w.key),
            pruned,
            max_skew_ms,
        };
        match check.run(w) {
            Ok(()) => {}
            Err(why) => {
                return Err(format!(
                    "{why}\n  server record: {:?}\n  history of {}: {}",
                    check.record.map(|c| &c.stamps),
                    w.key,
                    history(ledger, &w.key)
                ))
            }
        }
    }
    Ok(())
}

/// What the no-loss check of one write needs.
struct WriteCheck<'a> {
    client: &'a SimClient,
    applied: &'a Applied,
    rejections: &'a BTreeMap<u64, Rejection>,
    record: Option<&'a Change>,
    /// Records whose tombstone the server's horizon pruned.
    pruned: &'a BTreeSet<RecordKey>,
    max_skew_ms: u64,
}

impl WriteCheck<'_> {
    fn run(&self, w: &Written) -> Result<(), String> {
        let who = self.client.setup.index;
        let stamp = Stamp::new(w.hlc, self.client.setup.client_id.clone());
        let state = match self.record {
            Some(change) => Some(
                RecordState::from_wire(change.doc.as_ref(), &change.stamps)
                    .map_err(|err| format!("server record {} does not parse: {err}", w.key))?,
            ),
            None => None,
        };
        // A re-stamped write's own stamp never reached the server.
        let restamped = w.hlc.millis() > self.applied.now_ms + self.max_skew_ms;
        let PushOutcome::Rejected { code, .. } = &self.applied.outcome else {
            if self.rejections.contains_key(&w.seq) {
                return Err(format!(
                    "no loss: client {who}'s seq {} was applied and is also in its rejections",
                    w.seq
                ));
            }
            // A record deleted and pruned since holds none of its history (it may have been
            // written again afresh): what it landed as is gone with the tombstone.
            if self.pruned.contains(&w.key) {
                return Ok(());
            }
            let Some(state) = state else {
                return Err(format!(
                    "no loss: client {who}'s seq {} was applied but {} is not on the server",
                    w.seq, w.key
                ));
            };
            return landed(w, &stamp, &state, restamped).map_err(|why| {
                format!(
                    "no loss: client {who}'s seq {} ({} {}): {why}",
                    w.seq,
                    w.op.kind(),
                    w.key
                )
            });
        };
        let kept = self
            .rejections
            .get(&w.seq)
            .is_some_and(|r| r.code == *code && !r.message.is_empty());
        let state_now = self.client.store_ref().mutation_state(w.seq).map_err(e)?;
        // (A rejection whose answer was lost is repeated by the server when the push is
        // retried; a rejected write confirmed without a rejection is the LOST-REJECTION bug.)
        if !kept && !self.client.retried.contains(&w.seq) {
            return Err(format!(
                "no loss: client {who}'s seq {} was rejected ({}) but is not in its rejections (the store reports it {state_now:?})",
                w.seq,
                code.as_str(),
            ));
        }
        // The server re-stamps a far-ahead client's writes with its own clock, which can hand
        // out exactly the stamp of one of this client's rejected, never-observed writes (the
        // mutations after the refused one in a transaction are never stamped; seed 4119).
        // Harmless (that write never lands), but it makes the stamp ambiguous: look for
        // stamps only on clients the server never re-stamps.
        let ambiguous = restamped || self.client.setup.skew_ms > self.max_skew_ms as i64;
        if !ambiguous && state.as_ref().is_some_and(|s| carries(s, &stamp)) {
            return Err(format!(
                "transactions: client {who}'s rejected seq {} left its stamp {} on {}",
                w.seq,
                stamp.to_wire(),
                w.key,
            ));
        }
        Ok(())
    }
}

/// Whether any register of `state` holds `stamp`.
fn carries(state: &RecordState, stamp: &Stamp) -> bool {
    state.liveness().is_some_and(|(s, _)| s == stamp)
        || state.cleared() == Some(stamp)
        || state
            .field_names()
            .any(|f| state.field(f).is_some_and(|r| &r.stamp == stamp))
}

/// Whether the server's record accounts for write `w`: each register it wrote holds its
/// stamp or a newer one (or, for a field, a newer clear forgot it). `server_wins` may keep
/// the server's value of a field, so only liveness is checked there; a re-stamped write's
/// stamp is the server's, so only its presence is.
fn landed(w: &Written, stamp: &Stamp, state: &RecordState, restamped: bool) -> Result<(), String> {
    let Some((liveness, _)) = state.liveness() else {
        return Err("the server record was never written".into());
    };
    if restamped {
        return Ok(());
    }
    if liveness < stamp {
        return Err(format!(
            "the liveness register is older ({}) than the write ({})",
            liveness.to_wire(),
            stamp.to_wire()
        ));
    }
    if policy_of(&w.key) == Policy::ServerWins {
        return Ok(());
    }
    let cleared_after = state.cleared().is_some_and(|c| c > stamp);
    let field_ok =
        |field: &str| cleared_after || state.field(field).is_some_and(|r| &r.stamp >= stamp);
    let fields: Vec<&String> = match &w.op {
        Op::Put { doc } => doc.keys().collect(),
        Op::Patch { fields } => fields.keys().collect(),
        Op::Delete => Vec::new(),
    };
    if matches!(w.op, Op::Put { .. } | Op::Delete) && state.cleared().is_none_or(|c| c < stamp) {
        return Err("the clear stamp is older than the write".into());
    }
    if let Some(field) = fields.into_iter().find(|f| !field_ok(f)) {
        return Err(format!("field {field:?} holds an older write"));
    }
    Ok(())
}

/// The counting space: its version equals the number of tally mutations applied, and each
/// client's tally record holds its last applied value.
fn tally(
    clients: &[SimClient],
    ledger: &[Applied],
    records: &BTreeMap<RecordKey, Change>,
    cursor: &tidesync_protocol::Cursor,
) -> Result<(), String> {
    let applied: BTreeMap<(ClientId, u64), bool> = ledger
        .iter()
        .map(|a| {
            let ok = !matches!(a.outcome, PushOutcome::Rejected { .. });
            ((a.client.clone(), a.seq), ok)
        })
        .collect();
    let mut count = 0u64;
    for client in clients {
        let mut last = None;
        for w in client
            .writes
            .iter()
            .filter(|w| w.key.space.as_str() == TALLY_SPACE)
        {
            if applied[&(client.setup.client_id.clone(), w.seq)] {
                count += 1;
                if let Op::Patch { fields } = &w.op {
                    last = fields.get("n").cloned();
                }
            }
        }
        let key = tally_key(client.setup.index);
        let theirs = records
            .get(&key)
            .and_then(|c| c.doc.as_ref())
            .and_then(|d| d.get("n").cloned());
        if theirs != last {
            return Err(format!(
                "no loss: client {}'s tally is {theirs:?} on the server, its last applied tally write set {last:?}",
                client.setup.index
            ));
        }
    }
    let version = cursor
        .iter()
        .find(|(s, _)| s.as_str() == TALLY_SPACE)
        .map_or(0, |(_, v)| *v);
    if version != count {
        return Err(format!(
            "exactly-once: the tally space is at version {version}, but {count} tally mutations were applied (each changes it once)"
        ));
    }
    Ok(())
}
