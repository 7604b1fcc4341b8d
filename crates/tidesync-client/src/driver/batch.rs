//! [`PushBatch`]: what the driver remembers of the push in flight, looked up by seq.

use tidesync_protocol::RecordKey;
use tidesync_store::OutboxEntry;

/// The seqs, keys and sizes of the mutations of one push, in seq order.
#[derive(Debug)]
pub(crate) struct PushBatch {
    seqs: Vec<u64>,
    keys: Vec<RecordKey>,
    /// `bytes_through[i]`: the size of mutations `0..=i` as stored JSON.
    bytes_through: Vec<u64>,
}

/// How much of a batch an answer acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Acked {
    pub mutations: u64,
    pub bytes: u64,
}

impl PushBatch {
    pub(crate) fn of(entries: &[OutboxEntry]) -> PushBatch {
        let mut total = 0;
        PushBatch {
            seqs: entries.iter().map(|e| e.mutation.seq).collect(),
            keys: entries.iter().map(|e| e.mutation.key.clone()).collect(),
            bytes_through: entries
                .iter()
                .map(|e| {
                    total += e.op_bytes;
                    total
                })
                .collect(),
        }
    }

    /// The batch's last seq (0 for an empty batch, which is never sent).
    pub(crate) fn last_seq(&self) -> u64 {
        self.seqs.last().copied().unwrap_or(0)
    }

    /// The record mutation `seq` of this batch wrote.
    pub(crate) fn key_of(&self, seq: u64) -> Option<&RecordKey> {
        self.seqs.binary_search(&seq).ok().map(|i| &self.keys[i])
    }

    /// The mutations of this batch at or below `acked_through`.
    pub(crate) fn acked(&self, acked_through: u64) -> Acked {
        let n = self.seqs.partition_point(|seq| *seq <= acked_through);
        Acked {
            mutations: n as u64,
            bytes: n.checked_sub(1).map_or(0, |last| self.bytes_through[last]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidesync_protocol::{Hlc, Mutation, Op};
    use tidesync_store::MutationState;

    fn entry(seq: u64, id: &str, op_bytes: u64) -> OutboxEntry {
        OutboxEntry {
            mutation: Mutation {
                seq,
                tx: seq,
                key: RecordKey::parse("s", "c", id).expect("valid key"),
                op: Op::Delete,
                hlc: Hlc::from_u64(seq),
                base_version: 0,
            },
            state: MutationState::Queued,
            attempts: 0,
            created_at: 0,
            op_bytes,
        }
    }

    #[test]
    fn keys_and_acknowledged_sizes_are_found_by_seq() {
        let batch = PushBatch::of(&[entry(5, "a", 10), entry(6, "b", 20), entry(7, "c", 30)]);
        assert_eq!(batch.key_of(6).map(|k| k.id.as_str()), Some("b"));
        assert_eq!(batch.key_of(8), None);
        assert_eq!(batch.acked(4), Acked::default());
        assert_eq!(
            batch.acked(6),
            Acked {
                mutations: 2,
                bytes: 30
            }
        );
        assert_eq!(
            batch.acked(100),
            Acked {
                mutations: 3,
                bytes: 60
            }
        );
    }
}
