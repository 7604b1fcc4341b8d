//! Request checks the HTTP layer makes before storage sees a request: protocol version,
//! limits, sequence shape and space permissions. Pure functions of the request, the caller's
//! [`Grants`] and the [`Limits`]; the first failure is returned and nothing is stored.

use std::collections::{BTreeSet, HashSet};

use tidesync_protocol::{
    Mutation, Op, PullRequest, SpaceName, MAX_REFETCH, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

use crate::auth::Grants;
use crate::config::Limits;
use crate::error::ApiError;
use crate::storage::PullInput;
use tidesync_protocol::ErrorCode;

/// `400 unsupported_protocol` unless `protocol` is one this server speaks
/// ([`MIN_PROTOCOL_VERSION`] through [`PROTOCOL_VERSION`]).
pub(crate) fn protocol(protocol: u32) -> Result<(), ApiError> {
    if (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&protocol) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::UnsupportedProtocol,
            format!(
                "protocol {protocol} is not supported; this server speaks protocols \
                 {MIN_PROTOCOL_VERSION} through {PROTOCOL_VERSION}"
            ),
        ))
    }
}

/// Checks a push's mutations:
/// - at most `max_mutations_per_push` (`413 too_large`);
/// - `seq` starts at 1 or more and increases by exactly one (`400 invalid_input`);
/// - the mutations of one `tx` are contiguous (`400 invalid_input`);
/// - every `put` document and `patch` field map nests at most `max_doc_depth` levels
///   (`400 invalid_input`) and is at most `max_doc_bytes` as JSON
///   (`413 too_large`);
/// - every space is writable by the caller (`403 forbidden`).
pub(crate) fn push(
    mutations: &[Mutation],
    recovery: bool,
    grants: &Grants,
    limits: &Limits,
) -> Result<(), ApiError> {
    if mutations.len() > limits.max_mutations_per_push {
        return Err(ApiError::too_large(format!(
            "{} mutations in one push; the limit is {}",
            mutations.len(),
            limits.max_mutations_per_push
        )));
    }
    let mut finished_txs = HashSet::new();
    let mut previous: Option<&Mutation> = None;
    for m in mutations {
        if m.seq == 0 {
            return Err(ApiError::invalid("seq numbers start at 1"));
        }
        if let Some(prev) = previous {
            if recovery && m.seq <= prev.seq {
                return Err(ApiError::invalid(format!(
                    "seq must increase within a recovery push: seq {} follows seq {}",
                    m.seq, prev.seq
                )));
            }
            if !recovery && prev.seq.checked_add(1) != Some(m.seq) {
                return Err(ApiError::invalid(format!(
                    "seq must increase by exactly 1 within a push: seq {} follows seq {}",
                    m.seq, prev.seq
                )));
            }
            if m.tx != prev.tx {
                finished_txs.insert(prev.tx);
                if finished_txs.contains(&m.tx) {
                    return Err(ApiError::invalid(format!(
                        "the mutations of tx {} are not contiguous (seq {})",
                        m.tx, m.seq
                    )));
                }
            }
        }
        if !grants.can_write(&m.key.space) {
            return Err(ApiError::forbidden(format!(
                "user {} may not write to space {} (seq {})",
                grants.user, m.key.space, m.seq
            )));
        }
        let doc = match &m.op {
            Op::Put { doc } => Some(doc),
            Op::Patch { fields } => Some(fields),
            Op::Delete => None,
        };
        if let Some(doc) = doc {
            let depth = doc.values().map(json_depth).max().unwrap_or(0) + 1;
            if depth > limits.max_doc_depth {
                return Err(ApiError::invalid(format!(
                    "the document of seq {} nests {depth} levels deep; the limit is {}",
                    m.seq, limits.max_doc_depth
                )));
            }
            let size = json_size(doc);
            if size > limits.max_doc_bytes {
                return Err(ApiError::too_large(format!(
                    "the document of seq {} is {size} bytes as JSON; the limit is {}",
                    m.seq, limits.max_doc_bytes
                )));
            }
        }
        previous = Some(m);
    }
    Ok(())
}

/// Checks a pull and turns it into a [`PullInput`]:
/// - `spaces` is not empty and has no duplicates (`400 invalid_input`), has at most
///   `max_spaces_per_pull` entries (`413 too_large`), each readable (`403 forbidden`);
/// - cursor entries for spaces not in `spaces` are dropped;
/// - `limit` defaults to `default_pull_limit` and is clamped to `1..=max_pull_limit`;
/// - `refetch` has at most [`MAX_REFETCH`] keys (`413 too_large`), each in one of `spaces`
///   (`400 invalid_input`);
/// - echoes are sent from protocol 2 on.
pub(crate) fn pull(
    request: PullRequest,
    grants: &Grants,
    limits: &Limits,
) -> Result<PullInput, ApiError> {
    let spaces = space_list(request.spaces, grants, limits)?;
    let wanted: BTreeSet<&SpaceName> = spaces.iter().collect();
    let mut cursor = request.cursor;
    cursor.retain(|space, _| wanted.contains(space));
    let limit = request
        .limit
        .unwrap_or(limits.default_pull_limit)
        .clamp(1, limits.max_pull_limit.max(1));
    if request.refetch.len() > MAX_REFETCH {
        return Err(ApiError::too_large(format!(
            "{} records to refetch; the limit is {MAX_REFETCH} per pull",
            request.refetch.len()
        )));
    }
    if let Some(key) = request.refetch.iter().find(|k| !wanted.contains(&k.space)) {
        return Err(ApiError::invalid(format!(
            "refetch of {key}: its space is not among the pulled spaces"
        )));
    }
    Ok(PullInput {
        user: grants.user.clone(),
        client_id: request.client_id,
        cursor,
        spaces,
        limit,
        echoes: request.protocol >= 2,
        refetch: request.refetch,
    })
}

/// Parses the `spaces` query parameter of `GET /v1/events` (comma-separated names) and
/// checks it like the `spaces` of a pull.
pub(crate) fn event_spaces(
    raw: &str,
    grants: &Grants,
    limits: &Limits,
) -> Result<Vec<SpaceName>, ApiError> {
    if raw.is_empty() {
        return Err(ApiError::invalid(
            "name at least one space: ?spaces=name1,name2",
        ));
    }
    let spaces = raw
        .split(',')
        .map(|s| SpaceName::new(s).map_err(|e| ApiError::invalid(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    space_list(spaces, grants, limits)
}

/// Shared checks of a list of spaces to read.
fn space_list(
    spaces: Vec<SpaceName>,
    grants: &Grants,
    limits: &Limits,
) -> Result<Vec<SpaceName>, ApiError> {
    if spaces.is_empty() {
        return Err(ApiError::invalid("name at least one space"));
    }
    if spaces.len() > limits.max_spaces_per_pull {
        return Err(ApiError::too_large(format!(
            "{} spaces requested; the limit is {}",
            spaces.len(),
            limits.max_spaces_per_pull
        )));
    }
    // The list's shape first, then permissions: a malformed list is `invalid_input`
    // whoever asks (found by the pull proptest: `["a", "a"]` was `forbidden`).
    let mut seen = BTreeSet::new();
    if let Some(twice) = spaces.iter().find(|space| !seen.insert(*space)) {
        return Err(ApiError::invalid(format!("space {twice} is listed twice")));
    }
    for space in &spaces {
        if !grants.can_read(space) {
            return Err(ApiError::forbidden(format!(
                "user {} may not read space {space}",
                grants.user
            )));
        }
    }
    Ok(spaces)
}

/// The size of `value` serialized as compact JSON, without allocating it.
/// Nesting depth of a JSON value: a scalar is 0, `[]` and `{}` are 1.
fn json_depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn json_size(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serializing a JSON map into a writer that never fails cannot fail.
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tidesync_protocol::{ClientId, Hlc, RecordKey};

    fn grants() -> Grants {
        Grants {
            user: "alice".into(),
            read: [SpaceName::new("shared").expect("valid")].into(),
            write: [SpaceName::new("user:alice").expect("valid")].into(),
        }
    }

    #[test]
    fn a_space_listed_twice_is_invalid_even_when_it_is_not_readable() {
        let bob = SpaceName::new("user:bob").expect("valid");
        let err =
            space_list(vec![bob.clone(), bob], &grants(), &Limits::default()).expect_err("refused");
        assert_eq!(err.code(), ErrorCode::InvalidInput, "{err}");
    }

    fn mutation(seq: u64, tx: u64, space: &str) -> Mutation {
        Mutation {
            seq,
            tx,
            key: RecordKey::parse(space, "todos", "t1").expect("valid"),
            op: Op::Put {
                doc: json!({"title": "x"}).as_object().cloned().expect("object"),
            },
            hlc: Hlc::new(1_700_000_000_000, 0).expect("fits"),
            base_version: 0,
        }
    }

    fn code(result: Result<(), ApiError>) -> Option<ErrorCode> {
        result.err().map(|e| e.code())
    }

    #[test]
    fn push_shape_rules() {
        let (g, l) = (grants(), Limits::default());
        let ok = [
            mutation(4, 1, "user:alice"),
            mutation(5, 1, "user:alice"),
            mutation(6, 2, "user:alice"),
        ];
        assert_eq!(code(push(&ok, false, &g, &l)), None);
        assert_eq!(code(push(&[], false, &g, &l)), None);
        let gap = [mutation(4, 1, "user:alice"), mutation(6, 1, "user:alice")];
        assert_eq!(
            code(push(&gap, false, &g, &l)),
            Some(ErrorCode::InvalidInput)
        );
        let backwards = [mutation(4, 1, "user:alice"), mutation(3, 1, "user:alice")];
        assert_eq!(
            code(push(&backwards, false, &g, &l)),
            Some(ErrorCode::InvalidInput)
        );
        let zero = [mutation(0, 1, "user:alice")];
        assert_eq!(
            code(push(&zero, false, &g, &l)),
            Some(ErrorCode::InvalidInput)
        );
        let split_tx = [
            mutation(1, 1, "user:alice"),
            mutation(2, 2, "user:alice"),
            mutation(3, 1, "user:alice"),
        ];
        assert_eq!(
            code(push(&split_tx, false, &g, &l)),
            Some(ErrorCode::InvalidInput)
        );
        let foreign = [mutation(1, 1, "user:alice"), mutation(2, 1, "shared")];
        assert_eq!(
            code(push(&foreign, false, &g, &l)),
            Some(ErrorCode::Forbidden)
        );
    }

    #[test]
    fn push_size_rules() {
        let g = grants();
        let l = Limits {
            max_mutations_per_push: 2,
            max_doc_bytes: 14,
            ..Limits::default()
        };
        let three = [
            mutation(1, 1, "user:alice"),
            mutation(2, 1, "user:alice"),
            mutation(3, 1, "user:alice"),
        ];
        assert_eq!(code(push(&three, false, &g, &l)), Some(ErrorCode::TooLarge));
        // {"title":"x"} is 13 bytes.
        assert_eq!(code(push(&three[..1], false, &g, &l)), None);
        let mut big = mutation(1, 1, "user:alice");
        big.op = Op::Patch {
            fields: json!({"title": "xy"}).as_object().cloned().expect("object"),
        };
        assert_eq!(code(push(&[big.clone()], false, &g, &l)), None);
        big.op = Op::Patch {
            fields: json!({"title": "xyz"})
                .as_object()
                .cloned()
                .expect("object"),
        };
        assert_eq!(code(push(&[big], false, &g, &l)), Some(ErrorCode::TooLarge));
    }

    #[test]
    fn pull_rules() {
        let (g, l) = (grants(), Limits::default());
        let request = |spaces: &[&str], limit: Option<u32>| PullRequest {
            client_id: ClientId::new("c1").expect("valid"),
            protocol: 1,
            cursor: [
                (SpaceName::new("shared").expect("valid"), 3),
                (SpaceName::new("other").expect("valid"), 9),
            ]
            .into(),
            spaces: spaces
                .iter()
                .map(|s| SpaceName::new(*s).expect("valid"))
                .collect(),
            limit,
            refetch: Vec::new(),
        };
        let input = pull(request(&["shared", "user:alice"], None), &g, &l).expect("ok");
        assert_eq!(input.limit, l.default_pull_limit);
        assert_eq!(
            input.cursor.len(),
            1,
            "cursor of an unrequested space dropped"
        );
        assert_eq!(
            pull(request(&["shared"], Some(0)), &g, &l)
                .expect("ok")
                .limit,
            1
        );
        assert_eq!(
            pull(request(&["shared"], Some(u32::MAX)), &g, &l)
                .expect("ok")
                .limit,
            l.max_pull_limit
        );
        let err = |r| pull(r, &g, &l).err().map(|e| e.code());
        assert_eq!(err(request(&[], None)), Some(ErrorCode::InvalidInput));
        assert_eq!(
            err(request(&["shared", "shared"], None)),
            Some(ErrorCode::InvalidInput)
        );
        assert_eq!(err(request(&["other"], None)), Some(ErrorCode::Forbidden));
        let few = Limits {
            max_spaces_per_pull: 1,
            ..Limits::default()
        };
        assert_eq!(
            pull(request(&["shared", "user:alice"], None), &g, &few)
                .err()
                .map(|e| e.code()),
            Some(ErrorCode::TooLarge)
        );
    }

    #[test]
    fn event_space_lists() {
        let (g, l) = (grants(), Limits::default());
        let ok = event_spaces("shared,user:alice", &g, &l).expect("ok");
        assert_eq!(ok.len(), 2);
        let err = |raw| event_spaces(raw, &g, &l).err().map(|e| e.code());
        assert_eq!(err(""), Some(ErrorCode::InvalidInput));
        assert_eq!(err("shared,"), Some(ErrorCode::InvalidInput));
        assert_eq!(err("bad space"), Some(ErrorCode::InvalidInput));
        assert_eq!(err("user:bob"), Some(ErrorCode::Forbidden));
    }
}
