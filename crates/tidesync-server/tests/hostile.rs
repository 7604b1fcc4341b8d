//! The bad-input catalogue: hostile requests, each asserting its status and error `code`,
//! that the server is still healthy afterwards (`/healthz` answers and a normal push and pull
//! work), and that no data changed (a full pull of every space, the `acked_through` of every
//! client involved, and every row of every table, compared before and after).
//!
//! - [`the_catalogue`]: one table of cases, run in order against one server through
//!   `app().oneshot` (no socket), so damage from one case would show in the next.
//! - The accepted-input tests: inputs that look hostile but are allowed by docs/protocol.md
//!   (zero-width joiners and RTL marks in ids, NFC vs NFD, duplicate keys inside a document,
//!   extreme but legal numbers, a clock stamp from the far future) and what they store.
//! - The socket tests: a 100 MB body (declared and chunked), a `Content-Length` that lies,
//!   slow-loris clients (headers or body one byte a second, or silence), a header line
//!   ended by a bare newline, and request heads over 64 KiB or 100 fields (`431`), against
//!   `tidesync_server::serve` on loopback.
//!
//! The catalogue and the accepted-input tests run on SQLite and on PostgreSQL
//! (`sqlite::…`, `postgres::…`); the socket tests test the server loop, on SQLite only.
//!
//! Behaviour this file pins down (and docs/protocol.md states):
//! - serde_json's recursion limit (128 levels, counting the request's own nesting) refuses a
//!   deeply nested document with `400 malformed_request` before anything recurses on it;
//! - a lone UTF-16 surrogate escape (`"\ud800"`) is not a Unicode scalar value and cannot be
//!   a Rust string: `400 malformed_request`;
//! - a duplicate key at the request or mutation level is `400 malformed_request`; inside a
//!   document (arbitrary JSON object) the last value wins;
//! - a `put` carrying `fields`, a `patch` carrying `doc`, or a `delete` carrying either is
//!   `400 malformed_request` naming the member;
//! - two `Authorization` headers are `401 unauthorized`, whichever is valid;
//! - a pull `limit` past `u32::MAX` (up to `u64::MAX`) is clamped, not refused.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use serde_json::{json, Value};
use tidesync_server::{serve, Limits, MergeRules};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{hlc, on_both_backends, Backend, Reply, TestServer};

/// Alice writes it; her client `c1` wrote seq 1 and 2 there.
const ALICE: &str = "user:alice";
/// Alice writes it too: only the health probe uses it, so probing changes nothing else.
const PROBE: &str = "user:alice-probe";
/// Bob writes it, alice may only read it.
const SHARED: &str = "team:shared";
/// Alice may read it; nobody ever wrote to it (version 0).
const EMPTY: &str = "team:empty";
/// Bob's own space.
const BOB: &str = "user:bob";
/// Every space of the fixture except the probe's.
const SPACES: [&str; 4] = [ALICE, SHARED, EMPTY, BOB];
/// A fixed, valid clock reading for mutations that are refused anyway.
const HLC: &str = "018bcfe568000001";
/// Replaced by a raw JSON fragment in [`splice`].
const RAW: &str = "@@RAW@@";

/// One server with two users, a few records, and tokens of every kind.
struct World {
    server: TestServer,
    /// Writes `ALICE` and `PROBE`, reads `SHARED` and `EMPTY`; owns clients `c1` and `probe`.
    alice: String,
    /// Writes `BOB` and `SHARED`; owns client `b1`.
    bob: String,
    /// Reads every space: takes the snapshots.
    auditor: String,
    /// A token of alice's whose row was deleted from the database.
    revoked: String,
    /// The version of `ALICE`.
    alice_version: u64,
    /// The last seq of the health probe's client.
    probe_seq: u64,
}

impl World {
    /// The fixture on `backend`; `None` when PostgreSQL is asked for and not configured.
    async fn new(backend: Backend, limits: Limits) -> Option<World> {
        let server = TestServer::with_on(backend, limits, MergeRules::default()).await?;
        let alice = server.token("alice", &[ALICE, PROBE], &[SHARED, EMPTY]);
        let bob = server.token("bob", &[BOB, SHARED], &[]);
        let auditor = server.token("auditor", &[], &SPACES);
        let revoked = server.token("alice", &[ALICE], &[]);
        server.delete_token(&revoked);
        let mut world = World {
            server,
            alice,
            bob,
            auditor,
            revoked,
            alice_version: 0,
            probe_seq: 0,
        };
        let setup = [
            (
                &world.alice,
                "c1",
                vec![
                    mutation(1, ALICE, "todos", "t1", "put", json!({"title": "milk"})),
                    mutation(2, ALICE, "todos", "t1", "patch", json!({"done": true})),
                ],
            ),
            (
                &world.bob,
                "b1",
                vec![
                    mutation(1, BOB, "notes", "n1", "put", json!({"x": 1})),
                    mutation(2, SHARED, "notes", "s1", "put", json!({"y": 2})),
                ],
            ),
        ];
        for (token, client, mutations) in setup {
            let reply = world
                .server
                .post(
                    "/v1/push",
                    token,
                    &json!({"client_id": client, "protocol": 1, "mutations": mutations}),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
            assert_eq!(reply.json["acked_through"], 2, "{}", reply.text);
        }
        let changes = world.server.pull_all(&world.alice, &[ALICE]).await;
        world.alice_version = changes
            .iter()
            .filter_map(|c| c["version"].as_u64())
            .max()
            .expect("alice wrote");
        Some(world)
    }

    /// Everything a hostile request could have changed, the health probe's own space and
    /// client excepted.
    async fn snapshot(&self) -> Snapshot {
        let reply = self
            .server
            .post(
                "/v1/pull",
                &self.auditor,
                &json!({"client_id": "auditor", "protocol": 1, "spaces": SPACES, "limit": 10000}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.json["has_more"], false);
        let mut acked = Vec::new();
        for (client, token, space) in [
            ("c1", &self.alice, ALICE),
            ("b1", &self.bob, BOB),
            ("fresh", &self.alice, ALICE),
        ] {
            let reply = self
                .server
                .post(
                    "/v1/pull",
                    token,
                    &json!({"client_id": client, "protocol": 1, "spaces": [space], "limit": 1}),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
            acked.push((client, reply.json["acked_through"].clone()));
        }
        // Rows keyed by the probe's space or client (the key is the first column).
        let probe_rows = [Some(PROBE.to_owned()), Some("probe".to_owned())];
        let tables: Vec<(&'static str, Vec<Vec<Option<String>>>)> = self
            .server
            .dump_tables()
            .into_iter()
            .map(|(table, rows)| {
                let rows = rows
                    .into_iter()
                    .filter(|row| !probe_rows.contains(&row[0]))
                    .map(|mut row| {
                        // A harmless push is still a push: it moves the client's
                        // `last_push_at` (the fourth column, when it was last heard from),
                        // which is bookkeeping, not data.
                        if table == "clients" {
                            row.truncate(3);
                        }
                        row
                    })
                    .collect();
                (table, rows)
            })
            .collect();
        assert!(
            tables
                .iter()
                .any(|(table, rows)| *table == "records" && rows.len() >= 3),
            "the table dump sees the fixture's records: {tables:?}"
        );
        Snapshot {
            changes: reply.json["changes"].clone(),
            cursor: reply.json["cursor"].clone(),
            acked,
            tables,
        }
    }

    /// `/healthz` answers 200 and a normal push and pull work (on the probe's space).
    async fn assert_healthy(&mut self, context: &str) {
        let reply = self
            .server
            .call(Method::GET, "/healthz", None, Body::empty())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{context}: {}", reply.text);
        assert_eq!(reply.json["status"], "ok", "{context}");
        self.probe_seq += 1;
        let seq = self.probe_seq;
        let mut probe = mutation(seq, PROBE, "probes", "p", "put", json!({"n": seq}));
        probe["hlc"] = json!(hlc(0));
        let reply = self
            .server
            .post(
                "/v1/push",
                &self.alice,
                &json!({"client_id": "probe", "protocol": 1, "mutations": [probe]}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{context}: {}", reply.text);
        assert_eq!(reply.json["acked_through"], seq, "{context}");
        assert_eq!(
            reply.json["results"][0]["outcome"], "applied",
            "{context}: {}",
            reply.text
        );
        let changes = self.server.pull_all(&self.alice, &[PROBE]).await;
        assert_eq!(changes.len(), 1, "{context}: {changes:?}");
        assert_eq!(changes[0]["doc"], json!({"n": seq}), "{context}");
    }
}

/// What "no data changed" compares.
#[derive(Debug, PartialEq)]
struct Snapshot {
    changes: Value,
    cursor: Value,
    acked: Vec<(&'static str, Value)>,
    tables: Vec<(&'static str, Vec<Vec<Option<String>>>)>,
}

impl Snapshot {
    /// Without the server's persisted clock (SQLite's `meta` row `hlc`), which every
    /// legitimate write moves: for comparisons across the health probe's concurrent pushes.
    fn without_clock(mut self) -> Snapshot {
        for (table, rows) in &mut self.tables {
            if *table == "meta" {
                rows.retain(|row| row[0].as_deref() != Some("hlc"));
            }
        }
        self
    }
}

/// A mutation of `kind` (`put` carries `value` as `doc`, `patch` as `fields`).
fn mutation(seq: u64, space: &str, collection: &str, id: &str, kind: &str, value: Value) -> Value {
    let mut m = json!({
        "seq": seq, "tx": seq, "space": space, "collection": collection, "id": id,
        "kind": kind, "hlc": HLC, "base_version": 0
    });
    match kind {
        "put" => m["doc"] = value,
        "patch" => m["fields"] = value,
        _ => {}
    }
    m
}

/// The next mutation of alice's client `c1` (seq 3): valid unless a case breaks it.
fn next() -> Value {
    mutation(3, ALICE, "todos", "n3", "put", json!({"x": 3}))
}

/// [`next`] with `field` set to `value`.
fn next_with(field: &str, value: Value) -> Value {
    let mut m = next();
    m[field] = value;
    m
}

fn push_body(client: &str, mutations: Vec<Value>) -> Value {
    json!({"client_id": client, "protocol": 1, "mutations": mutations})
}

/// A pull of `ALICE` by `c1` with `field` set to `value`.
fn pull_with(field: &str, value: Value) -> Value {
    let mut body = json!({"client_id": "c1", "protocol": 1, "spaces": [ALICE]});
    body[field] = value;
    body
}

/// `value` serialized, with the string `RAW` replaced by the raw JSON text `raw` (for
/// fragments serde_json cannot produce: NaN, 2^64, lone surrogates, deep nesting...).
fn splice(value: &Value, raw: &str) -> String {
    value.to_string().replace(&format!("\"{RAW}\""), raw)
}

fn nested_arrays(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn nested_objects(depth: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}

fn request(method: Method, uri: &str, auth: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(auth) = auth {
        builder = builder.header(header::AUTHORIZATION, auth);
    }
    builder.body(body.into()).expect("request")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `POST /v1/push` with alice's token and a raw body.
fn push_raw(w: &World, body: impl Into<Body>) -> Request<Body> {
    request(Method::POST, "/v1/push", Some(&bearer(&w.alice)), body)
}

/// `POST /v1/pull` with alice's token and a raw body.
fn pull_raw(w: &World, body: impl Into<Body>) -> Request<Body> {
    request(Method::POST, "/v1/pull", Some(&bearer(&w.alice)), body)
}

/// `POST /v1/push` of `mutations` by alice's client `c1`.
fn push_of(w: &World, mutations: Vec<Value>) -> Request<Body> {
    push_raw(w, push_body("c1", mutations).to_string())
}

/// `GET /v1/events` with alice's token.
fn events(w: &World, query: &str) -> Request<Body> {
    let uri = format!("/v1/events{query}");
    request(Method::GET, &uri, Some(&bearer(&w.alice)), Body::empty())
}

/// A push of [`next`] with a given `Authorization` header value.
fn push_authorized(auth: &str) -> Request<Body> {
    request(
        Method::POST,
        "/v1/push",
        Some(auth),
        push_body("c1", vec![next()]).to_string(),
    )
}

type Build = Box<dyn Fn(&World) -> Request<Body>>;
type Check = fn(&World, &Reply);

/// One hostile request and what it must get.
struct Case {
    name: &'static str,
    build: Build,
    status: u16,
    /// The error `code`, or `None` for a request that is answered 200 without changing data.
    code: Option<&'static str>,
    /// Extra assertions on the reply.
    check: Option<Check>,
}

fn refused(
    name: &'static str,
    status: u16,
    code: &'static str,
    build: impl Fn(&World) -> Request<Body> + 'static,
) -> Case {
    Case {
        name,
        build: Box::new(build),
        status,
        code: Some(code),
        check: None,
    }
}

/// A request answered 200 that must change nothing.
fn harmless(
    name: &'static str,
    build: impl Fn(&World) -> Request<Body> + 'static,
    check: Check,
) -> Case {
    Case {
        name,
        build: Box::new(build),
        status: 200,
        code: None,
        check: Some(check),
    }
}

impl Case {
    fn checked(mut self, check: Check) -> Case {
        self.check = Some(check);
        self
    }
}

fn message_mentions(reply: &Reply, words: &str) {
    let message = reply.json["message"].as_str().unwrap_or_default();
    assert!(message.contains(words), "{message:?} lacks {words:?}");
}

fn acked_two_nothing_applied(_: &World, reply: &Reply) {
    assert_eq!(reply.json["acked_through"], 2, "{}", reply.text);
    assert_eq!(reply.json["results"], json!([]), "{}", reply.text);
}

fn pulled_nothing_new(w: &World, reply: &Reply) {
    assert_eq!(reply.json["changes"], json!([]), "{}", reply.text);
    assert_eq!(
        reply.json["cursor"][ALICE], w.alice_version,
        "{}",
        reply.text
    );
}

/// A pull of `ALICE` from scratch answered in one page.
fn pulled_everything(w: &World, reply: &Reply) {
    assert_eq!(reply.json["has_more"], false, "{}", reply.text);
    assert_eq!(
        reply.json["cursor"][ALICE], w.alice_version,
        "{}",
        reply.text
    );
    assert!(
        reply.json["changes"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{}",
        reply.text
    );
}

/// `401` for an ambiguous `Authorization`, with the challenge and a message that says why.
fn two_authorization_headers(_: &World, reply: &Reply) {
    assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
    message_mentions(reply, "more than one Authorization header");
}

fn malformed_json() -> Vec<Case> {
    let valid = || push_body("c1", vec![next()]).to_string();
    vec![
        refused("json: truncated mid-mutation", 400, "malformed_request", move |w| {
            let body = valid();
            push_raw(w, body[..body.len() / 2].to_owned())
        }),
        refused("json: trailing garbage", 400, "malformed_request", move |w| {
            push_raw(w, format!("{} garbage", valid()))
        }),
        refused("json: two documents back to back", 400, "malformed_request", move |w| {
            push_raw(w, format!("{}{}", valid(), valid()))
        }),
        refused("json: body is null", 400, "malformed_request", |w| {
            push_raw(w, "null")
        }),
        refused("json: body is a string", 400, "malformed_request", |w| {
            pull_raw(w, "\"hello\"")
        }),
        refused("json: body is a number", 400, "malformed_request", |w| {
            push_raw(w, "42")
        }),
        refused("json: invalid UTF-8 inside a string", 400, "malformed_request", |w| {
            let body = push_body("c1", vec![next_with("id", json!(RAW))]).to_string();
            let mut bytes = body.into_bytes();
            let at = bytes.windows(RAW.len()).position(|w| w == RAW.as_bytes());
            let at = at.expect("placeholder");
            bytes[at] = 0xff;
            push_raw(w, bytes)
        }),
        refused("json: invalid UTF-8 outside strings", 400, "malformed_request", |w| {
            push_raw(w, b"\xff\xfe{}".to_vec())
        }),
        refused("json: UTF-8 byte order mark", 400, "malformed_request", move |w| {
            let mut bytes = b"\xEF\xBB\xBF".to_vec();
            bytes.extend(valid().into_bytes());
            push_raw(w, bytes)
        }),
        refused("json: NaN literal", 400, "malformed_request", |w| {
            push_raw(w, splice(&push_body("c1", vec![next_with("base_version", json!(RAW))]), "NaN"))
        }),
        refused("json: Infinity literal", 400, "malformed_request", |w| {
            push_raw(w, splice(&push_body("c1", vec![next_with("seq", json!(RAW))]), "Infinity"))
        }),
        refused("json: -Infinity inside a document", 400, "malformed_request", |w| {
            let m = next_with("doc", json!({"x": RAW}));
            push_raw(w, splice(&push_body("c1", vec![m]), "-Infinity"))
        }),
        refused("json: single quotes", 400, "malformed_request", |w| {
            pull_raw(w, "{'client_id': 'c1', 'protocol': 1, 'spaces': ['user:alice']}")
        }),
        refused("json: a comment", 400, "malformed_request", |w| {
            pull_raw(w, r#"{"client_id": "c1", /* hi */ "protocol": 1, "spaces": ["user:alice"]}"#)
        }),
        refused("json: raw control character in a string", 400, "malformed_request", |w| {
            pull_raw(w, "{\"client_id\": \"c\n1\", \"protocol\": 1, \"spaces\": [\"user:alice\"]}")
        }),
        refused("json: duplicate top-level key", 400, "malformed_request", |w| {
            pull_raw(
                w,
                r#"{"client_id": "c1", "client_id": "b1", "protocol": 1, "spaces": ["user:alice"]}"#,
            )
        })
        .checked(|_, reply| message_mentions(reply, "duplicate field")),
        refused("json: duplicate key in a mutation", 400, "malformed_request", |w| {
            let m = next().to_string().replacen("{", "{\"seq\": 4, ", 1);
            push_raw(w, format!(r#"{{"client_id": "c1", "protocol": 1, "mutations": [{m}]}}"#))
        }),
        refused("json: duplicate flattened key (space) in a mutation", 400, "malformed_request", |w| {
            let m = next().to_string().replacen("{", "{\"space\": \"user:bob\", ", 1);
            push_raw(w, format!(r#"{{"client_id": "c1", "protocol": 1, "mutations": [{m}]}}"#))
        }),
    ]
}

fn deep_nesting() -> Vec<Case> {
    vec![
        refused(
            "nesting: 10,000 arrays in a document",
            400,
            "malformed_request",
            |w| {
                let m = next_with("doc", json!({"deep": RAW}));
                push_raw(w, splice(&push_body("c1", vec![m]), &nested_arrays(10_000)))
            },
        )
        .checked(|_, reply| message_mentions(reply, "recursion limit")),
        refused(
            "nesting: 10,000 objects in a patch",
            400,
            "malformed_request",
            |w| {
                let mut m = mutation(3, ALICE, "todos", "t1", "patch", json!({"deep": RAW}));
                m["base_version"] = json!(2);
                push_raw(
                    w,
                    splice(&push_body("c1", vec![m]), &nested_objects(10_000)),
                )
            },
        )
        .checked(|_, reply| message_mentions(reply, "recursion limit")),
        refused(
            "nesting: 200 arrays, just past the limit",
            400,
            "malformed_request",
            |w| {
                let m = next_with("doc", json!({"deep": RAW}));
                push_raw(w, splice(&push_body("c1", vec![m]), &nested_arrays(200)))
            },
        )
        .checked(|_, reply| message_mentions(reply, "recursion limit")),
        refused(
            "nesting: the whole body is 100,000 arrays",
            400,
            "malformed_request",
            |w| pull_raw(w, nested_arrays(100_000)),
        ),
        refused(
            "nesting: 10,000 arrays as a pull cursor",
            400,
            "malformed_request",
            |w| {
                pull_raw(
                    w,
                    splice(&pull_with("cursor", json!(RAW)), &nested_arrays(10_000)),
                )
            },
        ),
    ]
}

fn wrong_types() -> Vec<Case> {
    let push_field = |name, field: &'static str, value: Value| {
        refused(name, 400, "malformed_request", move |w| {
            let mut body = push_body("c1", vec![next()]);
            body[field] = value.clone();
            push_raw(w, body.to_string())
        })
    };
    let mutation_field = |name, field: &'static str, value: Value| {
        refused(name, 400, "malformed_request", move |w| {
            push_of(w, vec![next_with(field, value.clone())])
        })
    };
    let mutation_raw = |name, field: &'static str, raw: &'static str| {
        refused(name, 400, "malformed_request", move |w| {
            push_raw(
                w,
                splice(&push_body("c1", vec![next_with(field, json!(RAW))]), raw),
            )
        })
    };
    let pull_field = |name, field: &'static str, value: Value| {
        refused(name, 400, "malformed_request", move |w| {
            pull_raw(w, pull_with(field, value.clone()).to_string())
        })
    };
    let pull_raw_field = |name, field: &'static str, raw: &'static str| {
        refused(name, 400, "malformed_request", move |w| {
            pull_raw(w, splice(&pull_with(field, json!(RAW)), raw))
        })
    };
    vec![
        push_field("push: client_id null", "client_id", json!(null)),
        push_field("push: protocol a string", "protocol", json!("1")),
        push_field("push: protocol a float", "protocol", json!(1.5)),
        push_field(
            "push: protocol 2^32 (over u32)",
            "protocol",
            json!(1u64 << 32),
        ),
        push_field("push: mutations null", "mutations", json!(null)),
        push_field("push: mutations a string", "mutations", json!("[]")),
        push_field("push: a mutation is a number", "mutations", json!([7])),
        refused("push: protocol missing", 400, "malformed_request", |w| {
            push_raw(w, json!({"client_id": "c1", "mutations": []}).to_string())
        }),
        mutation_field("mutation: seq a float", "seq", json!(3.0)),
        mutation_raw("mutation: seq 1e30", "seq", "1e30"),
        mutation_field("mutation: seq negative", "seq", json!(-3)),
        mutation_raw("mutation: seq 2^64", "seq", "18446744073709551616"),
        mutation_field("mutation: tx a string", "tx", json!("3")),
        mutation_field("mutation: tx negative", "tx", json!(-1)),
        mutation_field("mutation: space a number", "space", json!(5)),
        mutation_field("mutation: collection null", "collection", json!(null)),
        mutation_field("mutation: id a number", "id", json!(42)),
        mutation_field("mutation: id an array", "id", json!(["t1"])),
        mutation_field("mutation: kind unknown", "kind", json!("upsert")),
        mutation_field("mutation: kind a number", "kind", json!(1)),
        mutation_field("mutation: put doc a string", "doc", json!("{}")),
        mutation_field("mutation: put doc null", "doc", json!(null)),
        refused(
            "mutation: patch fields an array",
            400,
            "malformed_request",
            |w| {
                push_of(
                    w,
                    vec![mutation(3, ALICE, "todos", "t1", "patch", json!([1, 2]))],
                )
            },
        ),
        refused(
            "mutation: patch fields a string",
            400,
            "malformed_request",
            |w| {
                push_of(
                    w,
                    vec![mutation(3, ALICE, "todos", "t1", "patch", json!("done"))],
                )
            },
        ),
        refused(
            "mutation: patch without fields",
            400,
            "malformed_request",
            |w| {
                let mut m = mutation(3, ALICE, "todos", "t1", "patch", json!({}));
                m.as_object_mut().expect("object").remove("fields");
                push_of(w, vec![m])
            },
        ),
        mutation_field("mutation: put carrying fields", "fields", json!({"x": 4}))
            .checked(|_, reply| message_mentions(reply, "`fields`")),
        mutation_field("mutation: put carrying fields null", "fields", json!(null))
            .checked(|_, reply| message_mentions(reply, "`fields`")),
        refused(
            "mutation: patch carrying doc",
            400,
            "malformed_request",
            |w| {
                let mut m = mutation(3, ALICE, "todos", "t1", "patch", json!({"done": false}));
                m["doc"] = json!({"title": "replaced"});
                m["base_version"] = json!(w.alice_version);
                push_of(w, vec![m])
            },
        )
        .checked(|_, reply| message_mentions(reply, "`doc`")),
        refused(
            "mutation: delete carrying doc",
            400,
            "malformed_request",
            |w| {
                let mut m = mutation(3, ALICE, "todos", "t1", "delete", json!(null));
                m["doc"] = json!({"title": "kept?"});
                push_of(w, vec![m])
            },
        )
        .checked(|_, reply| message_mentions(reply, "`doc`")),
        refused(
            "mutation: delete carrying doc null",
            400,
            "malformed_request",
            |w| {
                let mut m = mutation(3, ALICE, "todos", "t1", "delete", json!(null));
                m["doc"] = json!(null);
                push_of(w, vec![m])
            },
        )
        .checked(|_, reply| message_mentions(reply, "`doc`")),
        refused(
            "mutation: delete carrying fields",
            400,
            "malformed_request",
            |w| {
                let mut m = mutation(3, ALICE, "todos", "t1", "delete", json!(null));
                m["fields"] = json!({"done": null});
                push_of(w, vec![m])
            },
        )
        .checked(|_, reply| message_mentions(reply, "`fields`")),
        mutation_field("mutation: hlc a number", "hlc", json!(1_700_000_000_000u64)),
        mutation_field(
            "mutation: base_version a string",
            "base_version",
            json!("2"),
        ),
        mutation_field("mutation: base_version a float", "base_version", json!(1.5)),
        mutation_raw(
            "mutation: base_version 2^64",
            "base_version",
            "18446744073709551616",
        ),
        pull_field("pull: client_id a number", "client_id", json!(7)),
        pull_field("pull: protocol a string", "protocol", json!("1")),
        pull_field("pull: spaces null", "spaces", json!(null)),
        pull_field("pull: spaces of numbers", "spaces", json!([5])),
        pull_field("pull: cursor an array", "cursor", json!([[ALICE, 1]])),
        pull_field(
            "pull: cursor version negative",
            "cursor",
            json!({ALICE: -1}),
        ),
        pull_field(
            "pull: cursor version a string",
            "cursor",
            json!({ALICE: "2"}),
        ),
        pull_field(
            "pull: cursor version a float",
            "cursor",
            json!({ALICE: 1.5}),
        ),
        pull_raw_field(
            "pull: cursor version 2^64",
            "cursor",
            r#"{"user:alice": 18446744073709551616}"#,
        ),
        pull_field("pull: limit negative", "limit", json!(-1)),
        pull_field("pull: limit a string", "limit", json!("10")),
        pull_field("pull: limit a float", "limit", json!(10.5)),
        pull_raw_field(
            "pull: limit 2^64 (over u64)",
            "limit",
            "18446744073709551616",
        ),
        refused("pull: client_id missing", 400, "malformed_request", |w| {
            pull_raw(w, json!({"protocol": 1, "spaces": [ALICE]}).to_string())
        }),
    ]
}

fn rules_and_unicode() -> Vec<Case> {
    let invalid_mutation = |name, field: &'static str, value: Value| {
        refused(name, 400, "invalid_input", move |w| {
            push_of(w, vec![next_with(field, value.clone())])
        })
    };
    let raw_id = |name, raw: &'static str| {
        refused(name, 400, "malformed_request", move |w| {
            push_raw(
                w,
                splice(&push_body("c1", vec![next_with("id", json!(RAW))]), raw),
            )
        })
    };
    vec![
        // 85 × "€" (3 bytes) + "é" (2 bytes) = 257 bytes in 86 characters.
        invalid_mutation(
            "id: 257 bytes of multi-byte UTF-8",
            "id",
            json!(format!("{}é", "€".repeat(85))),
        ),
        invalid_mutation("id: NUL (\\u0000)", "id", json!("a\u{0}b")),
        invalid_mutation("id: DEL (U+007F)", "id", json!("a\u{7f}")),
        invalid_mutation("id: C1 control NEL (U+0085)", "id", json!("a\u{85}b")),
        invalid_mutation("id: C1 control U+009F", "id", json!("\u{9f}")),
        invalid_mutation("id: newline", "id", json!("line\nbreak")),
        raw_id("id: lone leading surrogate \\ud800", r#""a\ud800b""#),
        raw_id("id: lone trailing surrogate \\udc00", r#""\udc00""#),
        raw_id("id: surrogates in the wrong order", r#""\udc00\ud800""#),
        invalid_mutation("space: empty", "space", json!("")),
        invalid_mutation(
            "space: zero-width joiner",
            "space",
            json!("user:\u{200d}alice"),
        ),
        invalid_mutation(
            "space: Cyrillic homoglyph",
            "space",
            json!("user:\u{430}lice"),
        ),
        invalid_mutation("space: RTL mark", "space", json!("\u{200f}user:alice")),
        invalid_mutation("space: starts with a dash", "space", json!("-user")),
        invalid_mutation("space: 129 bytes", "space", json!("s".repeat(129))),
        invalid_mutation(
            "collection: RTL override",
            "collection",
            json!("todos\u{202e}"),
        ),
        invalid_mutation("collection: 65 bytes", "collection", json!("c".repeat(65))),
        invalid_mutation("collection: a dot", "collection", json!("to.dos")),
        refused("client_id: non-ASCII", 400, "invalid_input", |w| {
            push_raw(w, push_body("clïent", vec![next()]).to_string())
        }),
        refused("client_id: 65 bytes", 400, "invalid_input", |w| {
            push_raw(w, push_body(&"c".repeat(65), vec![next()]).to_string())
        }),
        refused("client_id: empty (pull)", 400, "invalid_input", |w| {
            pull_raw(w, pull_with("client_id", json!("")).to_string())
        }),
        refused(
            "pull: a space with a lone surrogate",
            400,
            "malformed_request",
            |w| {
                pull_raw(
                    w,
                    splice(&pull_with("spaces", json!([RAW])), r#""user:\ud800""#),
                )
            },
        ),
        refused(
            "pull: a cursor key that is no space name",
            400,
            "invalid_input",
            |w| pull_raw(w, pull_with("cursor", json!({"no spaces": 1})).to_string()),
        ),
        invalid_mutation("hlc: 15 digits", "hlc", json!("018bcfe56800000")),
        invalid_mutation("hlc: 17 digits", "hlc", json!("018bcfe5680000010")),
        invalid_mutation("hlc: uppercase hex", "hlc", json!("018BCFE568000001")),
        invalid_mutation("hlc: 0x prefix", "hlc", json!("0x8bcfe568000001")),
        invalid_mutation("hlc: not hex", "hlc", json!("018bcfe56800000g")),
        invalid_mutation("hlc: padded with spaces", "hlc", json!(" 18bcfe568000001")),
        invalid_mutation("hlc: empty", "hlc", json!("")),
    ]
}

fn limits_and_protocol() -> Vec<Case> {
    vec![
        refused("push: protocol 0", 400, "unsupported_protocol", |w| {
            let mut body = push_body("c1", vec![next()]);
            body["protocol"] = json!(0);
            push_raw(w, body.to_string())
        }),
        refused(
            "pull: protocol u32::MAX",
            400,
            "unsupported_protocol",
            |w| pull_raw(w, pull_with("protocol", json!(u32::MAX)).to_string()),
        ),
        refused("push: 5,001 mutations", 413, "too_large", |w| {
            let mutations = (3..=5003)
                .map(|seq| mutation(seq, ALICE, "todos", &format!("m{seq}"), "put", json!({})))
                .collect();
            push_of(w, mutations)
        }),
        refused("push: a document of 1 MiB + 1", 413, "too_large", |w| {
            // {"p":"…"} is 8 bytes around the string.
            let doc = json!({"p": "x".repeat((1 << 20) - 7)});
            push_of(w, vec![next_with("doc", doc)])
        }),
        refused("push: a patch of 1 MiB + 1", 413, "too_large", |w| {
            let fields = json!({"p": "x".repeat((1 << 20) - 7)});
            push_of(w, vec![mutation(3, ALICE, "todos", "t1", "patch", fields)])
        }),
        refused("push: a 17 MiB body", 413, "too_large", |w| {
            let mut body = push_body("c1", vec![]);
            body["padding"] = json!("x".repeat(17 << 20));
            push_raw(w, body.to_string())
        }),
        refused("pull: 101 spaces", 413, "too_large", |w| {
            let spaces: Vec<String> = (0..101).map(|i| format!("s{i}")).collect();
            pull_raw(w, pull_with("spaces", json!(spaces)).to_string())
        }),
        harmless(
            "push: an empty mutation list",
            |w| push_of(w, vec![]),
            acked_two_nothing_applied,
        ),
        harmless(
            "pull: limit 2^32 (over u32) is clamped",
            |w| pull_raw(w, pull_with("limit", json!(1u64 << 32)).to_string()),
            pulled_everything,
        ),
        harmless(
            "pull: limit u64::MAX is clamped",
            |w| pull_raw(w, pull_with("limit", json!(u64::MAX)).to_string()),
            pulled_everything,
        ),
    ]
}

fn tokens() -> Vec<Case> {
    let unauthorized = |name, build: fn(&World) -> Request<Body>| {
        refused(name, 401, "unauthorized", build).checked(|_, reply| {
            assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
        })
    };
    vec![
        unauthorized("auth: no header (pull)", |_| {
            request(
                Method::POST,
                "/v1/pull",
                None,
                pull_with("limit", json!(1)).to_string(),
            )
        }),
        unauthorized("auth: `Bearer` and nothing", |_| push_authorized("Bearer")),
        unauthorized("auth: `Bearer` and spaces", |_| {
            push_authorized("Bearer    ")
        }),
        unauthorized("auth: Basic scheme", |_| {
            push_authorized("Basic YWxpY2U6c2VjcmV0")
        }),
        unauthorized("auth: a valid token under another scheme", |w| {
            push_authorized(&format!("Token {}", w.alice))
        }),
        unauthorized("auth: a valid token without a scheme", |w| {
            push_authorized(&w.alice)
        }),
        unauthorized("auth: a tab instead of the space", |w| {
            push_authorized(&format!("Bearer\t{}", w.alice))
        }),
        unauthorized("auth: a token whose row was deleted", |w| {
            push_authorized(&bearer(&w.revoked))
        }),
        unauthorized("auth: a valid token plus one character", |w| {
            push_authorized(&format!("Bearer {}x", w.alice))
        }),
        unauthorized("auth: two tokens in one header", |w| {
            push_authorized(&format!("Bearer {} {}", w.alice, w.alice))
        }),
        unauthorized("auth: a token with an escaped newline", |w| {
            push_authorized(&format!("Bearer {}\\n", w.alice))
        }),
        unauthorized("auth: a 10 KB token", |_| {
            push_authorized(&format!("Bearer tsk_{}", "a".repeat(10 * 1024)))
        }),
        unauthorized("auth: non-ASCII bytes in the header", |_| {
            let mut request = push_authorized("Bearer x");
            request.headers_mut().insert(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(b"Bearer tsk_\xc3\xa9\xff").expect("obs-text is allowed"),
            );
            request
        }),
        unauthorized("auth: a bogus header before a valid one", |w| {
            let mut request = push_authorized("Bearer tsk_bogus");
            let valid = HeaderValue::from_str(&bearer(&w.alice)).expect("header");
            request.headers_mut().append(header::AUTHORIZATION, valid);
            request
        }),
        unauthorized("auth: a valid header before a bogus one", |w| {
            let mut request = push_authorized(&bearer(&w.alice));
            let bogus = HeaderValue::from_static("Bearer tsk_bogus");
            request.headers_mut().append(header::AUTHORIZATION, bogus);
            request
        })
        .checked(two_authorization_headers),
        unauthorized("auth: the same valid header twice", |w| {
            let mut request = push_authorized(&bearer(&w.alice));
            let again = HeaderValue::from_str(&bearer(&w.alice)).expect("header");
            request.headers_mut().append(header::AUTHORIZATION, again);
            request
        })
        .checked(two_authorization_headers),
        unauthorized("auth: events without a token", |_| {
            request(
                Method::GET,
                "/v1/events?spaces=user:alice",
                None,
                Body::empty(),
            )
        }),
    ]
}

fn foreign_spaces_and_clients() -> Vec<Case> {
    vec![
        refused(
            "foreign: push to another user's space",
            403,
            "forbidden",
            |w| push_of(w, vec![next_with("space", json!(BOB))]),
        ),
        refused(
            "foreign: push to a read-only space",
            403,
            "forbidden",
            |w| push_of(w, vec![next_with("space", json!(SHARED))]),
        ),
        refused(
            "foreign: 1 foreign mutation among 500",
            403,
            "forbidden",
            |w| {
                let mutations = (3..503)
                    .map(|seq| {
                        let space = if seq == 252 { BOB } else { ALICE };
                        mutation(
                            seq,
                            space,
                            "todos",
                            &format!("m{seq}"),
                            "put",
                            json!({"seq": seq}),
                        )
                    })
                    .collect();
                push_of(w, mutations)
            },
        )
        .checked(|_, reply| message_mentions(reply, "seq 252")),
        refused(
            "foreign: push as another user's client id",
            403,
            "forbidden",
            |w| push_raw(w, push_body("b1", vec![]).to_string()),
        ),
        refused(
            "foreign: a new client's first push into a foreign space",
            403,
            "forbidden",
            |w| {
                let m = mutation(1, BOB, "todos", "x", "put", json!({}));
                push_raw(w, push_body("fresh", vec![m]).to_string())
            },
        ),
        refused(
            "foreign: pull another user's space",
            403,
            "forbidden",
            |w| pull_raw(w, pull_with("spaces", json!([BOB])).to_string()),
        ),
        refused(
            "foreign: pull readable spaces and one foreign",
            403,
            "forbidden",
            |w| {
                pull_raw(
                    w,
                    pull_with("spaces", json!([ALICE, SHARED, EMPTY, BOB])).to_string(),
                )
            },
        ),
        refused(
            "foreign: pull as another user's client id",
            403,
            "forbidden",
            |w| pull_raw(w, pull_with("client_id", json!("b1")).to_string()),
        ),
        refused(
            "foreign: events on another user's space",
            403,
            "forbidden",
            |w| events(w, "?spaces=user:bob"),
        ),
        refused(
            "foreign: events on readable spaces and one foreign",
            403,
            "forbidden",
            |w| events(w, "?spaces=team:shared,team:empty,user:bob"),
        ),
        harmless(
            "foreign: a cursor entry for a foreign space is ignored",
            |w| {
                let cursor = json!({ALICE: w.alice_version, BOB: 1_000_000});
                pull_raw(w, pull_with("cursor", cursor).to_string())
            },
            pulled_nothing_new,
        ),
    ]
}

fn sequences_and_cursors() -> Vec<Case> {
    vec![
        harmless(
            "seq: replay of applied seqs with other content",
            |w| {
                let replay = vec![
                    mutation(1, ALICE, "todos", "t1", "put", json!({"title": "EVIL"})),
                    mutation(2, ALICE, "todos", "evil", "delete", json!(null)),
                ];
                push_of(w, replay)
            },
            acked_two_nothing_applied,
        ),
        harmless(
            "seq: replay of the last seq alone",
            |w| {
                push_of(
                    w,
                    vec![mutation(2, ALICE, "todos", "t1", "delete", json!(null))],
                )
            },
            acked_two_nothing_applied,
        ),
        refused("seq: a gap (4 after 2)", 409, "seq_gap", |w| {
            push_of(w, vec![next_with("seq", json!(4))])
        }),
        refused("seq: u64::MAX", 409, "seq_gap", |w| {
            push_of(w, vec![next_with("seq", json!(u64::MAX))])
        }),
        refused("seq: 2^63 (past i64)", 409, "seq_gap", |w| {
            push_of(w, vec![next_with("seq", json!(1u64 << 63))])
        }),
        refused("seq: a new client starting at 2", 409, "seq_gap", |w| {
            let m = mutation(2, ALICE, "todos", "x", "put", json!({}));
            push_raw(w, push_body("fresh", vec![m]).to_string())
        }),
        refused(
            "cursor: one version from the future",
            409,
            "cursor_reset",
            |w| {
                pull_raw(
                    w,
                    pull_with("cursor", json!({ALICE: w.alice_version + 1})).to_string(),
                )
            },
        ),
        refused("cursor: u64::MAX", 409, "cursor_reset", |w| {
            pull_raw(w, pull_with("cursor", json!({ALICE: u64::MAX})).to_string())
        }),
        refused(
            "cursor: on a space nobody wrote",
            409,
            "cursor_reset",
            |w| {
                let body = json!({"client_id": "c1", "protocol": 1, "spaces": [EMPTY], "cursor": {EMPTY: 1}});
                pull_raw(w, body.to_string())
            },
        ),
    ]
}

fn methods_and_routes() -> Vec<Case> {
    let route = |name, method: Method, uri: &'static str, status, code| {
        refused(name, status, code, move |w| {
            request(method.clone(), uri, Some(&bearer(&w.alice)), "{}")
        })
    };
    vec![
        route(
            "route: PUT /v1/push",
            Method::PUT,
            "/v1/push",
            405,
            "method_not_allowed",
        ),
        route(
            "route: PATCH /v1/pull",
            Method::PATCH,
            "/v1/pull",
            405,
            "method_not_allowed",
        ),
        route(
            "route: OPTIONS /v1/push",
            Method::OPTIONS,
            "/v1/push",
            405,
            "method_not_allowed",
        ),
        route(
            "route: POST /v1/events",
            Method::POST,
            "/v1/events",
            405,
            "method_not_allowed",
        ),
        route(
            "route: POST /healthz",
            Method::POST,
            "/healthz",
            405,
            "method_not_allowed",
        ),
        route(
            "route: DELETE /metrics",
            Method::DELETE,
            "/metrics",
            405,
            "method_not_allowed",
        ),
        route(
            "route: a trailing slash",
            Method::POST,
            "/v1/push/",
            404,
            "not_found",
        ),
        route(
            "route: a double slash",
            Method::POST,
            "/v1//push",
            404,
            "not_found",
        ),
        route(
            "route: upper case",
            Method::POST,
            "/V1/PUSH",
            404,
            "not_found",
        ),
        route(
            "route: dot segments",
            Method::POST,
            "/v1/../v1/push",
            404,
            "not_found",
        ),
        route(
            "route: an unknown version",
            Method::POST,
            "/v0/push",
            404,
            "not_found",
        ),
        // The http crate refuses URIs of 64 KiB and more before a request exists.
        refused("route: a 64 KB URL", 404, "not_found", |w| {
            let uri = format!("/v1/{}", "a".repeat(65_000));
            request(Method::GET, &uri, Some(&bearer(&w.alice)), Body::empty())
        }),
        harmless(
            "route: a query string on push is ignored",
            |w| {
                let mut request = push_of(w, vec![]);
                *request.uri_mut() = "/v1/push?client_id=b1&protocol=2&spaces=user:bob"
                    .parse()
                    .expect("uri");
                request
            },
            acked_two_nothing_applied,
        ),
        refused("events: no spaces parameter", 400, "invalid_input", |w| {
            events(w, "")
        }),
        refused("events: a NUL in a space name", 400, "invalid_input", |w| {
            events(w, "?spaces=user%00alice")
        }),
        refused(
            "events: a broken percent escape",
            400,
            "invalid_input",
            |w| events(w, "?spaces=%zz"),
        ),
        refused("events: 101 spaces", 413, "too_large", |w| {
            let spaces: Vec<String> = (0..101).map(|i| format!("s{i}")).collect();
            events(w, &format!("?spaces={}", spaces.join(",")))
        }),
    ]
}

fn catalogue() -> Vec<Case> {
    [
        malformed_json(),
        deep_nesting(),
        wrong_types(),
        rules_and_unicode(),
        limits_and_protocol(),
        tokens(),
        foreign_spaces_and_clients(),
        sequences_and_cursors(),
        methods_and_routes(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

async fn the_catalogue(backend: Backend) {
    let Some(mut world) = World::new(backend, Limits::default()).await else {
        return;
    };
    let cases = catalogue();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    let mut names = std::collections::BTreeSet::new();
    for case in &cases {
        assert!(names.insert(case.name), "duplicate case name {}", case.name);
    }
    // Wrong answers are collected so one run lists them all; a server that was damaged or
    // data that changed stops the run at once.
    let mut wrong = Vec::new();
    for case in cases {
        let before = world.snapshot().await;
        let reply = world.server.send((case.build)(&world)).await;
        let got = (reply.status.as_u16(), reply.json["code"].as_str());
        if got != (case.status, case.code) {
            wrong.push(format!(
                "{}: expected {} {:?}, got {} {:?}: {}",
                case.name,
                case.status,
                case.code,
                got.0,
                got.1,
                short(&reply)
            ));
        } else {
            if let Some(code) = case.code {
                reply.assert_error(case.status, code);
            }
            if let Some(check) = case.check {
                check(&world, &reply);
            }
        }
        let after = world.snapshot().await;
        assert_eq!(before, after, "{}: data changed", case.name);
        world.assert_healthy(case.name).await;
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// A reply's text, cut for assertion messages.
fn short(reply: &Reply) -> String {
    reply.text.chars().take(300).collect()
}

// ---- inputs that look hostile but are allowed -------------------------------------------

async fn unicode_ids_the_rules_allow_are_stored_verbatim_and_nfc_nfd_stay_distinct(
    backend: Backend,
) {
    let Some(mut world) = World::new(backend, Limits::default()).await else {
        return;
    };
    let ids = [
        "\u{e9}t\u{e9}",                        // "été", NFC
        "e\u{301}te\u{301}",                    // "été", NFD: another id
        "\u{1f469}\u{200d}\u{1f4bb}",           // woman technologist: a zero-width joiner sequence
        "\u{200f}\u{5e9}\u{5dc}\u{5d5}\u{5dd}", // RTL mark + Hebrew
        "\u{200b}",                             // a zero-width space alone
        "\u{feff}bom",                          // a BOM inside an id
        "/../etc/passwd",
        "a b\tc",
    ];
    // 64 × U+1F600 (4 bytes) = 256 bytes: the longest id.
    let longest = "\u{1f600}".repeat(64);
    let tab = ids[7];
    let mut all: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    all.push(longest);
    // The tab is a control character: refused. Every other id is allowed.
    all.retain(|id| id != tab);
    let mutations: Vec<Value> = all
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let seq = i as u64 + 3;
            mutation(seq, ALICE, "todos", id, "put", json!({"i": i}))
        })
        .collect();
    let reply = world
        .server
        .post("/v1/push", &world.alice, &push_body("c1", mutations))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["acked_through"], all.len() as u64 + 2);
    let changes = world.server.pull_all(&world.alice, &[ALICE]).await;
    for (i, id) in all.iter().enumerate() {
        let found: Vec<&Value> = changes.iter().filter(|c| c["id"] == json!(id)).collect();
        assert_eq!(found.len(), 1, "{id:?}: {changes:?}");
        assert_eq!(found[0]["doc"], json!({"i": i}), "{id:?}");
    }
    // t1 from the fixture plus one record per id: NFC and NFD did not collapse.
    assert_eq!(changes.len(), all.len() + 1);
    // A surrogate pair written as JSON escapes is one valid character.
    let escaped = r#"{"client_id": "c1", "protocol": 1, "mutations": [{"seq": SEQ, "tx": SEQ,
        "space": "user:alice", "collection": "todos", "id": "\ud83d\ude00", "kind": "delete",
        "hlc": "018bcfe568000001", "base_version": 0}]}"#
        .replace("SEQ", &(all.len() as u64 + 3).to_string());
    let reply = world
        .server
        .call(
            Method::POST,
            "/v1/push",
            Some(&world.alice),
            Body::from(escaped),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let changes = world.server.pull_all(&world.alice, &[ALICE]).await;
    assert!(changes
        .iter()
        .any(|c| c["id"] == "\u{1f600}" && c["deleted"] == true));
    world.assert_healthy("unicode ids").await;
}

async fn duplicate_keys_inside_a_document_keep_the_last_value(backend: Backend) {
    let Some(mut world) = World::new(backend, Limits::default()).await else {
        return;
    };
    let body = splice(
        &push_body("c1", vec![next_with("doc", json!(RAW))]),
        r#"{"a": 1, "b": 2, "a": 3}"#,
    );
    let reply = world.server.send(push_raw(&world, body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let changes = world.server.pull_all(&world.alice, &[ALICE]).await;
    let n3 = changes.iter().find(|c| c["id"] == "n3").expect("n3");
    assert_eq!(n3["doc"], json!({"a": 3, "b": 2}));
    world.assert_healthy("duplicate keys").await;
}

async fn extreme_legal_values_are_stored_and_a_far_future_clock_does_not_win(backend: Backend) {
    let Some(mut world) = World::new(backend, Limits::default()).await else {
        return;
    };
    // The deepest document allowed: the doc object plus 63 levels (`Limits::max_doc_depth`,
    // docs/protocol.md). One level more is refused and changes nothing.
    let deepest = Limits::default().max_doc_depth - 1;
    let too_deep = json!({
        "seq": 3, "tx": 3, "space": ALICE, "collection": "todos", "id": "t1",
        "kind": "put", "doc": RAW, "hlc": "0000018bcfe56800", "base_version": 0
    });
    let body = splice(
        &push_body("c1", vec![too_deep]),
        &format!(r#"{{"deep": {}}}"#, nested_arrays(deepest + 1)),
    );
    let refused = world.server.send(push_raw(&world, body)).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    assert_eq!(refused.json["code"], "invalid_input", "{}", refused.text);
    let doc = format!(
        r#"{{"big": 18446744073709551615, "small": -9223372036854775808, "float": 1e308,
            "tiny": 5e-324, "zero": -0.0, "deep": {}}}"#,
        nested_arrays(deepest)
    );
    // The largest base a client may claim is the space's version (beyond it: `base_ahead`,
    // tested with the storage contract).
    let m = json!({
        "seq": 3, "tx": u64::MAX, "space": ALICE, "collection": "todos", "id": "t1",
        "kind": "put", "doc": RAW, "hlc": "ffffffffffffffff", "base_version": world.alice_version
    });
    let reply = world
        .server
        .send(push_raw(&world, splice(&push_body("c1", vec![m]), &doc)))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["acked_through"], 3, "{}", reply.text);
    let changes = world.server.pull_all(&world.alice, &[ALICE]).await;
    let t1 = changes.iter().find(|c| c["id"] == "t1").expect("t1");
    assert_eq!(t1["doc"]["big"], json!(u64::MAX));
    assert_eq!(t1["doc"]["small"], json!(i64::MIN));
    assert_eq!(t1["doc"]["float"], json!(1e308));
    let stamp = t1["stamps"]["liveness"].as_str().expect("stamp");
    assert!(
        !stamp.starts_with("ffffffffffffffff"),
        "a far-future clock was kept: {stamp}"
    );
    // A later ordinary write by another client wins the field.
    let mut later = mutation(1, ALICE, "todos", "t1", "patch", json!({"big": 1}));
    later["hlc"] = json!(hlc(0));
    later["base_version"] = t1["version"].clone();
    let reply = world
        .server
        .post("/v1/push", &world.alice, &push_body("c2", vec![later]))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let changes = world.server.pull_all(&world.alice, &[ALICE]).await;
    let t1 = changes.iter().find(|c| c["id"] == "t1").expect("t1");
    assert_eq!(t1["doc"]["big"], 1, "{t1}");
    world.assert_healthy("extreme values").await;
}

// The catalogue and the accepted inputs run on both backends: what is stored, and that
// nothing changes, is the storage's business.
on_both_backends! {
    the_catalogue,
    unicode_ids_the_rules_allow_are_stored_verbatim_and_nfc_nfd_stay_distinct,
    duplicate_keys_inside_a_document_keep_the_last_value,
    extreme_legal_values_are_stored_and_a_far_future_clock_does_not_win,
}

// ---- real sockets (SQLite only: they test the server loop, not storage) -------------------

/// [`World`] served on a loopback socket by `tidesync_server::serve`.
struct Live {
    world: World,
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Live {
    async fn start(limits: Limits) -> Live {
        // The socket tests are about the server loop, not storage: SQLite only.
        let world = World::new(Backend::Sqlite, limits)
            .await
            .expect("SQLite is always there");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, world.server.state.clone(), async move {
            let _ = stopped.await;
        }));
        Live {
            world,
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Stops the server and asserts it is down within `within`.
    async fn stop(mut self, within: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(within, &mut self.task)
            .await
            .expect("the server shut down in time")
            .expect("serve task")
            .expect("serve result");
    }

    /// A request head for `path` with alice's token.
    fn head(&self, path: &str, extra: &str) -> String {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n{extra}\r\n",
            self.addr, self.world.alice
        )
    }
}

/// Reads one HTTP/1.1 response (status, JSON body) from `stream`; `None` if it closed first.
async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> Option<(u16, Value)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    let body = &buffer[head_end..buffer.len().min(head_end + length)];
    Some((status, serde_json::from_slice(body).unwrap_or(Value::Null)))
}

const HUNDRED_MB: u64 = 100 * 1000 * 1000;

/// Streams a 100 MB body after `head` (chunked if `chunked`) while waiting for the answer;
/// returns the answer and how many body bytes were sent when it arrived.
async fn send_100_mb(live: &Live, head: String, chunked: bool) -> ((u16, Value), u64) {
    let stream = TcpStream::connect(live.addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    let sent = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicBool::new(false));
    let writer = {
        let (sent, answered) = (sent.clone(), answered.clone());
        tokio::spawn(async move {
            write.write_all(head.as_bytes()).await?;
            let block = vec![b'x'; 64 * 1024];
            let framed = if chunked {
                let mut framed = format!("{:x}\r\n", block.len()).into_bytes();
                framed.extend_from_slice(&block);
                framed.extend_from_slice(b"\r\n");
                framed
            } else {
                block.clone()
            };
            while sent.load(Ordering::SeqCst) < HUNDRED_MB && !answered.load(Ordering::SeqCst) {
                let room = HUNDRED_MB - sent.load(Ordering::SeqCst);
                let piece = if !chunked && room < framed.len() as u64 {
                    &framed[..room as usize]
                } else {
                    &framed[..]
                };
                write.write_all(piece).await?;
                sent.fetch_add(block.len().min(piece.len()) as u64, Ordering::SeqCst);
            }
            Ok::<_, std::io::Error>(())
        })
    };
    let answer = tokio::time::timeout(Duration::from_secs(20), read_response(&mut read))
        .await
        .expect("an answer before the 100 MB were sent")
        .expect("a response, not a bare close");
    let at = sent.load(Ordering::SeqCst);
    answered.store(true, Ordering::SeqCst);
    // The writer ends: the server closed the connection, or it stops by itself.
    let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    (answer, at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_body_is_refused_without_being_read() {
    let mut live = Live::start(Limits::default()).await;
    let before = live.world.snapshot().await;

    // Declared: refused from the header, before a byte of it is read.
    let started = Instant::now();
    let head = live.head(
        "/v1/push",
        &format!("Content-Type: application/json\r\nContent-Length: {HUNDRED_MB}\r\n"),
    );
    let ((status, body), sent) = send_100_mb(&live, head, false).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("too_large")),
        "{body}"
    );
    assert!(sent < HUNDRED_MB / 4, "{sent} bytes sent before the answer");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // Chunked, so nothing is declared: refused once the 16 MiB limit is passed.
    let started = Instant::now();
    let head = live.head("/v1/push", "Transfer-Encoding: chunked\r\n");
    let ((status, body), sent) = send_100_mb(&live, head, true).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("too_large")),
        "{body}"
    );
    assert!(sent < HUNDRED_MB / 2, "{sent} bytes sent before the answer");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    assert_eq!(before, live.world.snapshot().await, "data changed");
    live.world.assert_healthy("100 MB bodies").await;
    live.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_100_mb_body_that_never_comes_is_refused_at_once() {
    let mut live = Live::start(Limits::default()).await;
    let before = live.world.snapshot().await;
    let mut stream = TcpStream::connect(live.addr).await.expect("connect");
    let head = live.head("/v1/pull", &format!("Content-Length: {HUNDRED_MB}\r\n"));
    stream
        .write_all(format!("{head}{{}}").as_bytes())
        .await
        .expect("write");
    let (status, body) = tokio::time::timeout(Duration::from_secs(2), read_response(&mut stream))
        .await
        .expect("an answer without waiting for the body")
        .expect("a response");
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("too_large")),
        "{body}"
    );
    assert_eq!(before, live.world.snapshot().await, "data changed");
    live.world.assert_healthy("lying Content-Length").await;
    live.stop(Duration::from_secs(10)).await;
}

/// How a slow-loris connection behaves.
#[derive(Debug, Clone, Copy)]
enum Loris {
    /// Sends a request head one byte a second.
    Headers,
    /// Connects and says nothing.
    Silent,
    /// Sends the first line of the HTTP/2 preface, then nothing.
    PartialPreface,
    /// Sends one whole request (`GET /healthz`), reads the answer, then idles on the
    /// keep-alive connection.
    IdleKeepAlive,
    /// Sends a whole head (valid token, `Content-Length: 200`), then the body one byte a
    /// second.
    Body,
}

/// Runs one slow-loris connection until the server ends it; returns how long that took and
/// the response, if the server sent one.
async fn loris(
    live_addr: std::net::SocketAddr,
    head: String,
    kind: Loris,
) -> (Duration, Option<(u16, Value)>) {
    let started = Instant::now();
    let stream = TcpStream::connect(live_addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    let (prefix, trickle): (Vec<u8>, Vec<u8>) = match kind {
        Loris::Headers => (Vec::new(), head.into_bytes()),
        Loris::Silent => (Vec::new(), Vec::new()),
        Loris::PartialPreface => (b"PRI * HTTP/2.0\r\n".to_vec(), Vec::new()),
        Loris::IdleKeepAlive => (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Vec::new(),
        ),
        Loris::Body => (head.into_bytes(), vec![b' '; 200]),
    };
    let trickler = tokio::spawn(async move {
        write.write_all(&prefix).await?;
        for byte in trickle {
            tokio::time::sleep(Duration::from_secs(1)).await;
            write.write_all(&[byte]).await?;
        }
        // Keep the write half open: closing it would tell the server the request ended.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok::<_, std::io::Error>(write)
    });
    let response = tokio::time::timeout(Duration::from_secs(20), async {
        let response = read_response(&mut read).await;
        // Then wait for the close itself.
        let mut rest = [0u8; 256];
        while let Ok(n) = read.read(&mut rest).await {
            if n == 0 {
                break;
            }
        }
        response
    })
    .await
    .unwrap_or_else(|_| panic!("a {kind:?} slow-loris connection was not closed"));
    trickler.abort();
    (started.elapsed(), response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_connections_are_closed_in_bounded_time_and_others_are_served() {
    let timeout = Duration::from_secs(2);
    let limits = Limits {
        header_read_timeout: timeout,
        body_read_timeout: timeout,
        ..Limits::default()
    };
    let mut live = Live::start(limits).await;
    let before = live.world.snapshot().await.without_clock();
    let body_head = live.head("/v1/push", "Content-Length: 200\r\n");
    let mut lorises = Vec::new();
    for kind in [
        Loris::Headers,
        Loris::Headers,
        Loris::Headers,
        Loris::Headers,
        Loris::Silent,
        Loris::Silent,
        Loris::PartialPreface,
        Loris::IdleKeepAlive,
        Loris::Body,
        Loris::Body,
    ] {
        let head = match kind {
            Loris::Body => body_head.clone(),
            _ => live.head("/v1/push", "Content-Length: 2\r\n"),
        };
        lorises.push((kind, tokio::spawn(loris(live.addr, head, kind))));
    }

    // Meanwhile the server serves everyone else, promptly.
    let http = reqwest::Client::new();
    let base = format!("http://{}", live.addr);
    for round in 0..4 {
        let started = Instant::now();
        let health = http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(health.status(), 200);
        let mut probe = mutation(round + 1, PROBE, "probes", "p", "put", json!({"n": round}));
        probe["hlc"] = json!(hlc(0));
        let push = http
            .post(format!("{base}/v1/push"))
            .bearer_auth(&live.world.alice)
            .json(&json!({"client_id": "probe", "protocol": 1, "mutations": [probe]}))
            .send()
            .await
            .expect("push");
        assert_eq!(push.status(), 200);
        let pull = http
            .post(format!("{base}/v1/pull"))
            .bearer_auth(&live.world.alice)
            .json(&json!({"client_id": "probe", "protocol": 1, "spaces": [PROBE]}))
            .send()
            .await
            .expect("pull");
        assert_eq!(pull.status(), 200);
        let pulled: Value = pull.json().await.expect("json");
        assert_eq!(pulled["changes"][0]["doc"], json!({"n": round}));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "round {round} took {:?} beside the slow-loris clients",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    live.world.probe_seq = 4;

    for (kind, task) in lorises {
        let (took, response) = task.await.expect("loris task");
        assert!(
            took < timeout + Duration::from_secs(2),
            "a {kind:?} slow-loris connection lasted {took:?}"
        );
        match kind {
            Loris::Body => {
                let (status, body) = response.expect("a body that is too slow gets an answer");
                assert_eq!(
                    (status, body["code"].as_str()),
                    (400, Some("malformed_request")),
                    "{body}"
                );
            }
            Loris::IdleKeepAlive => {
                let (status, _) = response.expect("the request before idling is answered");
                assert_eq!(status, 200);
                assert!(
                    took >= timeout,
                    "an idle connection was closed after {took:?}"
                );
            }
            _ => {}
        }
    }
    let after = live.world.snapshot().await.without_clock();
    assert_eq!(before, after, "data changed");
    live.world.assert_healthy("slow loris").await;

    // A slow-loris connection does not hold up a graceful shutdown either.
    let addr = live.addr;
    let head = live.head("/v1/push", "Content-Length: 2\r\n");
    let lingering = tokio::spawn(loris(addr, head, Loris::Headers));
    tokio::time::sleep(Duration::from_millis(300)).await;
    live.stop(timeout + Duration::from_secs(2)).await;
    let _ = lingering.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_value_cannot_smuggle_a_newline_into_a_token() {
    // The http crate refuses to build such a header at all...
    let token = "tsk_0123";
    assert!(HeaderValue::from_str(&format!("Bearer {token}\n")).is_err());
    // ...and on the wire a bare newline ends the header line, so the server sees the token
    // without it: a valid token followed by "\n" is just the valid token.
    let mut live = Live::start(Limits::default()).await;
    let body = push_body("c1", vec![]).to_string();
    let request = format!(
        "POST /v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\n\r\nContent-Length: {}\r\n\r\n{body}",
        live.world.alice,
        body.len()
    );
    // The blank line after the bare newline ends the head early: Content-Length is never
    // seen, so the body is not read as this request's, and the push is an empty body.
    let mut stream = TcpStream::connect(live.addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let (status, reply) = tokio::time::timeout(Duration::from_secs(5), read_response(&mut stream))
        .await
        .expect("an answer")
        .expect("a response");
    assert_eq!(
        (status, reply["code"].as_str()),
        (400, Some("malformed_request")),
        "{reply}"
    );
    live.world.assert_healthy("newline in a header").await;
    live.stop(Duration::from_secs(10)).await;
}

/// Sends `request` whole (from its own task: the server may answer and close before reading
/// it all) and reads the answer; `None` if the connection closed without one.
async fn send_and_read(addr: std::net::SocketAddr, request: Vec<u8>) -> Option<(u16, Value)> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        // A refused head may close the connection mid-write: not this test's concern.
        let _ = write.write_all(&request).await;
        write
    });
    let answer = tokio::time::timeout(Duration::from_secs(10), read_response(&mut read))
        .await
        .expect("an answer or a close in time");
    drop(writer.await);
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_block_over_64_kib_or_over_100_headers_is_answered_431() {
    let cap = Limits::default().max_header_bytes;
    assert_eq!(cap, 64 * 1024, "docs/protocol.md, Limits");
    let mut live = Live::start(Limits::default()).await;
    let before = live.world.snapshot().await;
    // A valid push of seq 3: had a refused head been served, the data would change.
    let body = push_body("c1", vec![next()]).to_string();
    let request = |extra: &str| {
        let head = live.head(
            "/v1/push",
            &format!("Content-Length: {}\r\n{extra}", body.len()),
        );
        format!("{head}{body}").into_bytes()
    };
    let padding = |bytes: usize| format!("X-Padding: {}\r\n", "p".repeat(bytes));
    for (what, extra) in [
        ("a 200 KB header", padding(200 * 1000)),
        ("a head 1 byte over the cap", {
            // The head without padding, plus the padding line, is `cap + 1` bytes.
            let bare = request("").len() - body.len();
            padding(cap + 1 - bare - "X-Padding: \r\n".len())
        }),
        (
            "101 header fields",
            (0..101).map(|i| format!("X-H{i}: v\r\n")).collect(),
        ),
    ] {
        let sent = request(&extra);
        let answer = send_and_read(live.addr, sent).await;
        let (status, reply) = answer.unwrap_or_else(|| panic!("{what}: closed without an answer"));
        assert_eq!(status, 431, "{what}: {reply}");
        assert_eq!(reply, Value::Null, "{what}: hyper's 431 has no body");
    }
    assert_eq!(before, live.world.snapshot().await, "data changed");

    // A head just under the cap, with 100 fields in all, is served.
    let fields: String = (0..96).map(|i| format!("X-H{i}: v\r\n")).collect();
    let bare = request(&fields).len() - body.len();
    let sent = request(&format!(
        "{fields}{}",
        padding(cap - 1 - bare - "X-Padding: \r\n".len())
    ));
    assert_eq!(sent.len() - body.len(), cap - 1);
    let (status, reply) = send_and_read(live.addr, sent).await.expect("an answer");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["acked_through"], 3, "{reply}");
    live.world.assert_healthy("large headers").await;
    live.stop(Duration::from_secs(10)).await;
}
