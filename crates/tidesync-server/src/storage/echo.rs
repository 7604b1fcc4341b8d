//! Echo chains: when a pull may send a record back to the client that wrote it as an
//! [`Echo`] (its key, version and the writer's seqs) instead of its document and stamps.
//!
//! A record's chain says: the record's state is the state it had at version `from`, with
//! mutations `first_seq..=last_seq` of `client` applied in seq order, as sent (the op the
//! client wrote, with the client's own stamp). That holds when the client wrote on a base
//! that already held the record at `from` (`base_version >= from`), and stays true while only
//! that client's faithful mutations land on it. A narrowed op (`server_wins`), a re-stamped
//! mutation (clock too far ahead) or another client's write ends it. The client checks its
//! side (its base is at `from`, it holds exactly `count` of those mutations) and asks for
//! the record in full when it cannot rebuild it (docs/protocol.md, "Echoes").
//!
//! Stored as one text column next to the record (`echo`, NULL: no chain):
//! `"{first_seq} {last_seq} {count} {from} {at} {client_id}"`. `at` is the record version
//! the chain describes: a write that did not go through these rules (a node of an older
//! version during a rolling upgrade rewrites the record and leaves the column as it was)
//! moves the record past it, and a pull honours a chain only at its own version.

use tidesync_protocol::{ClientId, Echo, RecordKey};

use crate::storage::StorageError;

/// Whose writes a record's state is, and how to rebuild it. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoChain {
    /// The writer.
    pub client: ClientId,
    /// The record's version the chain was applied on (0: the record did not exist).
    pub from: u64,
    /// The writer's first mutation of the chain.
    pub first_seq: u64,
    /// Its last one.
    pub last_seq: u64,
    /// How many of its mutations of the record in `first_seq..=last_seq` landed.
    pub count: u64,
    /// The record's version this chain describes.
    pub at: u64,
}

/// One mutation that landed on a record, as the chain rules see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Landing<'a> {
    pub client: &'a ClientId,
    pub seq: u64,
    pub base_version: u64,
    /// The record's version before the mutation (0: never written).
    pub record_version: u64,
    /// Its version after it.
    pub version_after: u64,
    /// It landed as sent: the client's own op and stamp.
    pub faithful: bool,
    /// It changed the record.
    pub changed: bool,
}

/// The record's chain after `landing`, given its chain before.
pub(crate) fn after(chain: Option<EchoChain>, landing: Landing<'_>) -> Option<EchoChain> {
    let own = chain.as_ref().is_some_and(|c| c.client == *landing.client);
    if !landing.changed && !own {
        // Another client's no-op leaves the state, so the chain, as it was.
        return chain;
    }
    if !landing.faithful {
        return None;
    }
    match chain {
        Some(mut chain) if own && chain.at == landing.record_version => {
            chain.last_seq = landing.seq;
            chain.count += 1;
            chain.at = landing.version_after;
            Some(chain)
        }
        _ if landing.base_version >= landing.record_version => Some(EchoChain {
            client: landing.client.clone(),
            from: landing.record_version,
            first_seq: landing.seq,
            last_seq: landing.seq,
            count: 1,
            at: landing.version_after,
        }),
        _ => None,
    }
}

impl EchoChain {
    /// The stored text.
    pub(crate) fn encode(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            self.first_seq, self.last_seq, self.count, self.from, self.at, self.client
        )
    }

    /// The stored text back as a chain.
    pub(crate) fn decode(text: &str) -> Result<EchoChain, StorageError> {
        let bad = || StorageError::Internal(format!("stored echo chain {text:?} is invalid"));
        let mut parts = text.splitn(6, ' ');
        let mut number = || -> Result<u64, StorageError> {
            parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)
        };
        let (first_seq, last_seq, count, from, at) =
            (number()?, number()?, number()?, number()?, number()?);
        let client = parts
            .next()
            .and_then(|c| ClientId::new(c).ok())
            .ok_or_else(bad)?;
        Ok(EchoChain {
            client,
            from,
            first_seq,
            last_seq,
            count,
            at,
        })
    }

    /// Whether the stored chain `text` is `client`'s, read without decoding it: a pull
    /// checks every row's chain, most of them another client's.
    pub(crate) fn written_by(text: &str, client: &ClientId) -> bool {
        text.rsplit_once(' ')
            .is_some_and(|(_, writer)| writer == client.as_str())
    }

    /// The echo of record `key` at `version`.
    pub(crate) fn echo(&self, key: RecordKey, version: u64) -> Echo {
        Echo {
            space: key.space,
            collection: key.collection,
            id: key.id,
            version,
            from: self.from,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            count: self.count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str) -> ClientId {
        ClientId::new(name).expect("valid client id")
    }

    /// `client`'s mutation `seq` on `base`, landing on the record at version `at`, moving
    /// it to `at + 1`.
    fn landing<'a>(client: &'a ClientId, seq: u64, base: u64, at: u64) -> Landing<'a> {
        Landing {
            client,
            seq,
            base_version: base,
            record_version: at,
            version_after: at + 1,
            faithful: true,
            changed: true,
        }
    }

    #[test]
    fn a_chain_starts_on_a_base_that_held_the_record_and_grows_with_its_writer() {
        let a = client("a");
        let chain = after(None, landing(&a, 5, 10, 7)).expect("started");
        assert_eq!((chain.from, chain.first_seq, chain.count), (7, 5, 1));
        let chain = after(Some(chain), landing(&a, 9, 0, 8)).expect("extended");
        assert_eq!((chain.from, chain.first_seq, chain.last_seq), (7, 5, 9));
        assert_eq!((chain.count, chain.at), (2, 9));
    }

    #[test]
    fn a_chain_left_behind_by_a_write_outside_these_rules_is_not_extended() {
        let a = client("a");
        let chain = after(None, landing(&a, 5, 10, 7)).expect("started at 8");
        // Another writer (an older node) moved the record to 12 without touching the chain.
        assert_eq!(after(Some(chain), landing(&a, 6, 3, 12)), None);
    }

    #[test]
    fn a_stale_base_another_writer_or_an_altered_mutation_ends_it() {
        let (a, b) = (client("a"), client("b"));
        assert_eq!(
            after(None, landing(&a, 5, 6, 7)),
            None,
            "base behind the record"
        );
        let chain = after(None, landing(&a, 5, 10, 7));
        let other = after(chain.clone(), landing(&b, 1, 3, 8));
        assert_eq!(other, None, "b wrote on a base that did not hold a's write");
        let mut narrowed = landing(&a, 6, 12, 8);
        narrowed.faithful = false;
        assert_eq!(after(chain.clone(), narrowed), None);
        let mut noop = landing(&b, 2, 0, 8);
        noop.changed = false;
        assert_eq!(
            after(chain.clone(), noop),
            chain,
            "b's no-op changes nothing"
        );
    }

    #[test]
    fn the_stored_text_round_trips_and_names_its_writer() {
        let chain = EchoChain {
            client: client("phone-1"),
            from: 3,
            first_seq: 10,
            last_seq: 12,
            count: 2,
            at: 20,
        };
        let text = chain.encode();
        assert_eq!(EchoChain::decode(&text).expect("decodes"), chain);
        assert!(EchoChain::written_by(&text, &client("phone-1")));
        assert!(!EchoChain::written_by(&text, &client("phone-2")));
        assert!(!EchoChain::written_by(&text, &client("1")));
        let key = RecordKey::parse("s", "c", "r").expect("valid key");
        let echo = chain.echo(key, 20);
        assert_eq!((echo.version, echo.from, echo.count), (20, 3, 2));
        assert!(EchoChain::decode("1 2 x 4 5 a").is_err());
        assert!(EchoChain::decode("1 2 3 4 a").is_err(), "no version");
    }
}
