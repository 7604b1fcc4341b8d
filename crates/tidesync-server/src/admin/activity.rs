//! What this node saw of its clients since it started, for the dashboard: when each client
//! last made a push or a pull, and the latest rejections it answered. Both are bounded and
//! in memory; nothing here is stored or shared with other nodes.
//!
//! The event stream (`GET /v1/events`) names no client, so a client that only listens is
//! seen when it next pulls (which every poke leads to).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use tidesync_protocol::{ClientId, PushOutcome, PushResponse};

/// Most clients remembered; past it the one seen longest ago is forgotten.
pub(crate) const MAX_CLIENTS: usize = 10_000;
/// Most rejections remembered; past it the oldest is forgotten.
pub(crate) const MAX_REJECTIONS: usize = 500;

/// Which request a client was last seen making.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    Push,
    Pull,
}

impl Request {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Request::Push => "push",
            Request::Pull => "pull",
        }
    }
}

/// When a client was last seen, and doing what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub client_id: ClientId,
    pub user: String,
    pub at: SystemTime,
    pub request: Request,
}

/// A rejection this node answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub at: SystemTime,
    pub client_id: ClientId,
    pub user: String,
    pub seq: u64,
    pub code: String,
    pub message: String,
}

/// The node's recent activity; one short lock per push or pull.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Per client: its entry and its tick in `order`.
    seen: HashMap<ClientId, (u64, Seen)>,
    /// Tick → client, oldest first: what to forget first.
    order: BTreeMap<u64, ClientId>,
    tick: u64,
    /// Newest last.
    rejections: VecDeque<Rejection>,
}

impl Activity {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The data stays consistent at every step, so a panic elsewhere leaves it usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that `client_id` (of `user`) made `request` now.
    pub(crate) fn saw(&self, client_id: &ClientId, user: &str, request: Request) {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let entry = Seen {
            client_id: client_id.clone(),
            user: user.to_owned(),
            at: SystemTime::now(),
            request,
        };
        if let Some((old, _)) = inner.seen.insert(client_id.clone(), (tick, entry)) {
            inner.order.remove(&old);
        }
        inner.order.insert(tick, client_id.clone());
        while inner.seen.len() > MAX_CLIENTS {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            inner.seen.remove(&oldest);
        }
    }

    /// Notes the rejections of a push answer. A retried push answered with the same
    /// rejections again (its first answer was lost) is not noted twice.
    pub(crate) fn answered(&self, client_id: &ClientId, user: &str, response: &PushResponse) {
        let rejected = response.results.iter().filter_map(|r| match &r.outcome {
            PushOutcome::Rejected { code, message } => Some((r.seq, code, message)),
            _ => None,
        });
        let mut inner = self.lock();
        for (seq, code, message) in rejected {
            let known = inner
                .rejections
                .iter()
                .any(|r| r.seq == seq && r.client_id == *client_id);
            if known {
                continue;
            }
            inner.rejections.push_back(Rejection {
                at: SystemTime::now(),
                client_id: client_id.clone(),
                user: user.to_owned(),
                seq,
                code: code.as_str().to_owned(),
                message: message.clone(),
            });
            if inner.rejections.len() > MAX_REJECTIONS {
                inner.rejections.pop_front();
            }
        }
    }

    /// Up to `limit` clients, the one seen last first.
    pub(crate) fn recent_clients(&self, limit: usize) -> Vec<Seen> {
        let inner = self.lock();
        inner
            .order
            .values()
            .rev()
            .take(limit)
            .filter_map(|id| inner.seen.get(id).map(|(_, seen)| seen.clone()))
            .collect()
    }

    /// When `client_id` was last seen, if it was.
    pub(crate) fn last_seen(&self, client_id: &str) -> Option<Seen> {
        let inner = self.lock();
        let id = ClientId::new(client_id).ok()?;
        inner.seen.get(&id).map(|(_, seen)| seen.clone())
    }

    /// Up to `limit` rejections, the newest first.
    pub(crate) fn recent_rejections(&self, limit: usize) -> Vec<Rejection> {
        self.lock()
            .rejections
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidesync_protocol::{ErrorCode, PushResult};

    fn id(n: usize) -> ClientId {
        ClientId::new(format!("c{n}")).expect("valid")
    }

    #[test]
    fn the_client_seen_longest_ago_is_forgotten_first() {
        let activity = Activity::default();
        for n in 0..MAX_CLIENTS {
            activity.saw(&id(n), "u", Request::Pull);
        }
        activity.saw(&id(0), "u", Request::Push); // seen again: now the newest
        activity.saw(&id(MAX_CLIENTS), "u", Request::Pull);
        assert!(activity.last_seen("c0").is_some());
        assert!(activity.last_seen("c1").is_none(), "the oldest went");
        let recent = activity.recent_clients(2);
        assert_eq!(recent[0].client_id, id(MAX_CLIENTS));
        assert_eq!(recent[1].client_id, id(0));
        assert_eq!(recent[1].request, Request::Push);
        assert_eq!(activity.recent_clients(usize::MAX).len(), MAX_CLIENTS);
    }

    #[test]
    fn rejections_are_kept_once_newest_first_and_bounded() {
        let activity = Activity::default();
        let answer = |seq: u64| PushResponse {
            acked_through: seq,
            results: vec![PushResult {
                seq,
                outcome: PushOutcome::Rejected {
                    code: ErrorCode::StaleBase,
                    message: format!("no {seq}"),
                },
            }],
        };
        activity.answered(&id(1), "u", &answer(1));
        activity.answered(&id(1), "u", &answer(1)); // a retry's answer
        assert_eq!(activity.recent_rejections(10).len(), 1);
        for seq in 2..=(MAX_REJECTIONS as u64 + 1) {
            activity.answered(&id(1), "u", &answer(seq));
        }
        let recent = activity.recent_rejections(usize::MAX);
        assert_eq!(recent.len(), MAX_REJECTIONS);
        assert_eq!(recent[0].seq, MAX_REJECTIONS as u64 + 1);
        assert_eq!(recent[0].code, "stale_base");
    }
}
