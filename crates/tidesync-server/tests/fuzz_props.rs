//! The `server_request` fuzz target's properties as proptests that run in CI (the libFuzzer
//! target lives in `fuzz/`; see ARCHITECTURE.md "How reliability is tested").
//!
//! One server (a fresh SQLite file) per test function; every case goes through
//! `app().oneshot`. For every request:
//! - the server does not panic and never answers 5xx;
//! - an error is JSON `{code, message}` with a non-empty message and a JSON content type;
//! - a refused request changes nothing (the space versions stay put);
//! - a 200 push or pull body parses as its response type.
//!
//! Inputs: arbitrary bytes as push and pull bodies; valid requests with one field replaced
//! by a random JSON value or raw token (huge and negative numbers, floats, deep nesting,
//! lone surrogates), removed, or joined by an unknown field; random unicode in names and ids
//! (the server accepts exactly what the protocol's validators accept, and hands ids back
//! byte for byte); random nesting depth in documents (what a push accepts, a pull can
//! serve and a client can parse); arbitrary methods, paths and `Authorization` headers.
//!
//! Failing cases are saved in the crate's `proptest-regressions/fuzz_props.txt` and
//! replayed first on every run. `PROPTEST_CASES` changes the number of cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use common::TestServer;
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use serde_json::{json, Value};
use tidesync_protocol::{
    ClientId, CollectionName, ErrorBody, PullResponse, PushResponse, RecordId, SpaceName,
};
use tidesync_server::storage::Storage;
use tower::ServiceExt;

const WRITE: [&str; 2] = ["fuzz:a", "fuzz:b"];
const READ: &str = "fuzz:r";

/// A server, its tokens and a runtime to drive it.
struct Fixture {
    server: TestServer,
    runtime: tokio::runtime::Runtime,
    token: String,
    /// Makes every case's client id fresh, so seq 1 is always the next seq.
    clients: AtomicU64,
}

impl Fixture {
    fn new() -> Fixture {
        let server = TestServer::new();
        let token = server.token("fuzz", &WRITE, &[READ]);
        Fixture {
            server,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            token,
            clients: AtomicU64::new(0),
        }
    }

    fn client(&self) -> String {
        format!("fx-{}-client", self.clients.fetch_add(1, Ordering::Relaxed))
    }

    fn versions(&self) -> Vec<u64> {
        let storage = self.server.storage.clone();
        let spaces: Vec<SpaceName> = WRITE
            .iter()
            .chain([&READ])
            .map(|s| SpaceName::new(*s).unwrap())
            .collect();
        self.runtime
            .block_on(async move { storage.space_versions(&spaces).await.unwrap() })
    }

    /// Sends `request` and checks the properties every response must have.
    fn send(&self, request: Request<Body>) -> Result<Answer, TestCaseError> {
        let before = self.versions();
        let path = request.uri().path().to_owned();
        let head = request.method() == Method::HEAD;
        let router = self.server.router.clone();
        let events = path == "/v1/events";
        let (status, content_type, bytes) = self.runtime.block_on(async move {
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            if events && status.is_success() {
                return (status, content_type, Vec::new()); // endless; dropping closes it
            }
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, content_type, bytes.to_vec())
        });
        let text = String::from_utf8_lossy(&bytes).into_owned();
        prop_assert!(!status.is_server_error(), "{status} on {path}: {text}");
        // A HEAD response has no body, by HTTP's rules.
        let error = if status.is_success() || head {
            None
        } else {
            let body: ErrorBody = serde_json::from_slice(&bytes).map_err(|e| {
                TestCaseError::fail(format!("{status}: not {{code, message}} ({e}): {text}"))
            })?;
            prop_assert!(!body.message.is_empty(), "{status}: empty message");
            prop_assert_eq!(
                content_type.as_ref().and_then(|v| v.to_str().ok()),
                Some("application/json")
            );
            prop_assert_eq!(
                &self.versions(),
                &before,
                "a refused request ({}) changed data: {}",
                status,
                text
            );
            Some(body)
        };
        Ok(Answer {
            status,
            error,
            bytes,
            text,
        })
    }

    fn post(&self, path: &str, body: impl Into<Body>) -> Result<Answer, TestCaseError> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .body(body.into())
            .unwrap();
        let answer = self.send(request)?;
        if answer.status == StatusCode::OK {
            let parsed = match path {
                "/v1/push" => serde_json::from_slice::<PushResponse>(&answer.bytes).map(drop),
                _ => serde_json::from_slice::<PullResponse>(&answer.bytes).map(drop),
            };
            if let Err(e) = parsed {
                prop_assert!(false, "200 {} body ({}): {}", path, e, answer.text);
            }
        }
        Ok(answer)
    }
}

struct Answer {
    status: StatusCode,
    error: Option<ErrorBody>,
    bytes: Vec<u8>,
    text: String,
}

impl Answer {
    fn code(&self) -> Option<String> {
        self.error.as_ref().map(|e| e.code.to_string())
    }
}

fn run<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let config = Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(cases),
        // Integration tests have no lib.rs beside them for proptest's default location.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/fuzz_props.txt",
        ))),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

// ---- strategies -------------------------------------------------------------------------

/// A valid push of one put, one patch (same tx) and one delete (next tx).
fn valid_push(client: &str) -> Value {
    json!({
        "client_id": client,
        "protocol": 1,
        "mutations": [
            {"seq": 1, "tx": 1, "space": "fuzz:a", "collection": "todos", "id": "t1",
             "kind": "put", "doc": {"title": "milk", "n": 1, "tags": ["a"]},
             "hlc": "0000018bcfe56800", "base_version": 0},
            {"seq": 2, "tx": 1, "space": "fuzz:a", "collection": "todos", "id": "t2",
             "kind": "patch", "fields": {"done": true, "gone": null},
             "hlc": "0000018bcfe56801", "base_version": 0},
            {"seq": 3, "tx": 2, "space": "fuzz:b", "collection": "notes", "id": "n1",
             "kind": "delete", "hlc": "0000018bcfe56802", "base_version": 0}
        ]
    })
}

fn valid_pull(client: &str) -> Value {
    json!({
        "client_id": client,
        "protocol": 1,
        "cursor": {"fuzz:a": 0, "fuzz:r": 0},
        "spaces": ["fuzz:a", "fuzz:r"],
        "limit": 10
    })
}

/// Text put in place of a value as is: numbers serde cannot hold, non-JSON tokens, escapes.
const RAW: &[&str] = &[
    "18446744073709551616",
    "-1",
    "-0",
    "1e400",
    "-1e400",
    "1.5",
    "0.0",
    "1e2",
    "01",
    "0x10",
    "NaN",
    "Infinity",
    "true",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "\"\\udfff\\ud800\"",
    "99999999999999999999999999999999999999999999999999",
    "\"0000018bcfe5680\"",
    "\"ffffffffffffffff\"",
    "{}",
    "[]",
];

/// A JSON value of any type, with unicode strings and small nesting.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        any::<String>().prop_map(Value::from),
        "[a-z0-9:_.@-]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Deeply nested arrays or objects, as raw text.
fn deep_raw() -> impl Strategy<Value = String> {
    (1usize..300, any::<bool>()).prop_map(|(depth, arrays)| nested_text(depth, arrays))
}

fn nested_text(depth: usize, arrays: bool) -> String {
    if arrays {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    } else {
        format!("{}1{}", "{\"k\":".repeat(depth), "}".repeat(depth))
    }
}

/// One change to a valid request.
#[derive(Debug, Clone)]
enum Edit {
    Replace(Value),
    ReplaceRaw(String),
    Remove,
    AddUnknownField(String, Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => any_json().prop_map(Edit::Replace),
        2 => prop::sample::select(RAW).prop_map(|r| Edit::ReplaceRaw(r.to_owned())),
        1 => deep_raw().prop_map(Edit::ReplaceRaw),
        2 => Just(Edit::Remove),
        1 => (any::<String>(), any_json()).prop_map(|(k, v)| Edit::AddUnknownField(k, v)),
    ]
}

/// Every path to a value inside `v` (object keys and array indices), the root excluded.
fn paths(v: &Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                prefix.push(Step::Key(k.clone()));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(Step::Index(i));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

const MARKER: &str = "\u{1}raw-json-goes-here\u{1}";

/// Applies `edit` at the `pick`-th path of `v` and returns the request body as text.
fn mutate(mut v: Value, pick: prop::sample::Index, edit: &Edit) -> String {
    let mut all = Vec::new();
    paths(&v, &mut Vec::new(), &mut all);
    let path = pick.get(&all).clone();
    let (last, parent_path) = path.split_last().expect("non-empty path");
    let mut parent = &mut v;
    for step in parent_path {
        parent = match step {
            Step::Key(k) => &mut parent[k.as_str()],
            Step::Index(i) => &mut parent[*i],
        };
    }
    match (edit, parent, last) {
        (Edit::Remove, Value::Object(map), Step::Key(k)) => {
            map.remove(k);
        }
        (Edit::Remove, Value::Array(items), Step::Index(i)) => {
            items.remove(*i);
        }
        (Edit::AddUnknownField(k, value), Value::Object(map), _) => {
            map.insert(format!("x-{k}"), value.clone());
        }
        (edit, parent, last) => {
            let slot = match last {
                Step::Key(k) => &mut parent[k.as_str()],
                Step::Index(i) => &mut parent[*i],
            };
            *slot = match edit {
                Edit::Replace(value) | Edit::AddUnknownField(_, value) => value.clone(),
                Edit::ReplaceRaw(_) => Value::from(MARKER),
                Edit::Remove => unreachable!("a path step matches its parent"),
            };
        }
    }
    let text = v.to_string();
    match edit {
        Edit::ReplaceRaw(raw) => text.replace(&Value::from(MARKER).to_string(), raw),
        _ => text,
    }
}

fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        // A valid prefix cut anywhere, followed by garbage.
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 0..16)
        )
            .prop_map(|(cut, tail)| {
                let mut bytes = valid_push("cut").to_string().into_bytes();
                bytes.truncate(cut.index(bytes.len() + 1));
                bytes.extend(tail);
                bytes
            }),
    ]
}

// ---- properties -------------------------------------------------------------------------

#[test]
fn arbitrary_bodies_get_a_json_error_or_a_response_and_never_a_5xx() {
    let fx = Fixture::new();
    run(300, (body_bytes(), any::<bool>()), |(bytes, push)| {
        let path = if push { "/v1/push" } else { "/v1/pull" };
        let answer = fx.post(path, bytes)?;
        if answer.status != StatusCode::OK {
            prop_assert!(
                matches!(answer.status.as_u16(), 400 | 409 | 413),
                "{}: {}",
                answer.status,
                answer.text
            );
        }
        Ok(())
    });
}

#[test]
fn near_valid_requests_are_answered_or_refused_cleanly() {
    let fx = Fixture::new();
    let strategy = (any::<bool>(), any::<prop::sample::Index>(), edit());
    run(400, strategy, |(push, pick, edit)| {
        let client = fx.client();
        let (path, valid) = if push {
            ("/v1/push", valid_push(&client))
        } else {
            ("/v1/pull", valid_pull(&client))
        };
        let body = mutate(valid, pick, &edit);
        let answer = fx.post(path, body.clone())?;
        let parsed = serde_json::from_slice::<PushResponse>(&answer.bytes);
        let sent: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        // An edit may replace the client id with a fixed string, which an earlier case may
        // have used already: only a push still naming its fresh client owes every result.
        let fresh = sent["client_id"] == json!(client);
        if let (StatusCode::OK, true, true, Ok(response)) = (answer.status, push, fresh, parsed) {
            // A fresh client: nothing is a duplicate, every mutation has a result.
            let n = sent["mutations"].as_array().map_or(0, Vec::len);
            prop_assert_eq!(response.results.len(), n, "{}", answer.text);
            prop_assert_eq!(
                response.acked_through,
                sent["mutations"][n.saturating_sub(1)]["seq"]
                    .as_u64()
                    .unwrap_or(0),
                "{}",
                answer.text
            );
        }
        Ok(())
    });
}

/// Unicode and near-valid strings for names and ids.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,20}",
        "[a-zA-Z0-9:_.@ -]{0,70}",
        "[a-z]{1,3}[\u{300}-\u{36f}\u{200b}-\u{200f}\u{202a}-\u{202e}\u{feff}]{1,4}",
        (1usize..300).prop_map(|n| "é".repeat(n / 2)),
        prop::sample::select(vec![
            "", "a", " a", "a ", "a\u{0}b", "\u{7f}", "🦀", "é", "e\u{301}", "..", "/", "fuzz:a",
            "FUZZ:A", "fuzz:a\n",
        ])
        .prop_map(str::to_owned),
    ]
}

#[test]
fn names_and_ids_are_accepted_exactly_when_valid_and_come_back_byte_for_byte() {
    let fx = Fixture::new();
    let strategy = (name(), name(), name(), any::<bool>());
    run(300, strategy, |(client, collection, id, random_client)| {
        let client = if random_client { client } else { fx.client() };
        let mut body = valid_push(&client);
        body["mutations"] = json!([{
            "seq": 1, "tx": 1, "space": "fuzz:a", "collection": collection, "id": id,
            "kind": "put", "doc": {"v": id}, "hlc": "0000018bcfe56800", "base_version": 0
        }]);
        let valid = ClientId::new(client.clone()).is_ok()
            && CollectionName::new(collection.clone()).is_ok()
            && RecordId::new(id.clone()).is_ok();
        let answer = fx.post("/v1/push", body.to_string())?;
        if !valid {
            prop_assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
            let code = answer.code();
            prop_assert_eq!(code.as_deref(), Some("invalid_input"));
            return Ok(());
        }
        // A reused valid client id may be behind or ahead of this seq 1: a duplicate.
        prop_assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        if !random_client {
            let pulled = fx.post(
                "/v1/pull",
                json!({"client_id": fx.client(), "protocol": 1, "spaces": ["fuzz:a"],
                       "limit": 10000})
                .to_string(),
            )?;
            let pulled: PullResponse = serde_json::from_slice(&pulled.bytes).unwrap();
            let found = pulled
                .changes
                .iter()
                .find(|c| c.collection.as_str() == collection && c.id.as_str() == id);
            let found = found.ok_or_else(|| TestCaseError::fail("the record was not pulled"))?;
            prop_assert_eq!(
                found.doc.as_ref().and_then(|d| d.get("v")),
                Some(&Value::from(id.clone()))
            );
        }
        Ok(())
    });
}

#[test]
fn space_names_in_a_pull_are_refused_as_invalid_or_forbidden() {
    let fx = Fixture::new();
    run(200, prop::collection::vec(name(), 1..4), |spaces| {
        let body = json!({"client_id": fx.client(), "protocol": 1, "spaces": spaces});
        let answer = fx.post("/v1/pull", body.to_string())?;
        let parsed: Result<Vec<SpaceName>, _> =
            spaces.iter().map(|s| SpaceName::new(s.clone())).collect();
        let expected = match parsed {
            Err(_) => "invalid_input",
            Ok(names) => {
                let readable = |s: &SpaceName| WRITE.contains(&s.as_str()) || s.as_str() == READ;
                let mut unique = names.clone();
                unique.sort();
                unique.dedup();
                if unique.len() != names.len() {
                    "invalid_input"
                } else if names.iter().all(readable) {
                    prop_assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
                    return Ok(());
                } else {
                    "forbidden"
                }
            }
        };
        let code = answer.code();
        prop_assert_eq!(code.as_deref(), Some(expected), "{}", answer.text);
        Ok(())
    });
}

#[test]
fn any_document_a_push_accepts_a_pull_serves_and_a_client_can_parse() {
    let fx = Fixture::new();
    let strategy = (1usize..200, any::<bool>(), any_json());
    run(150, strategy, |(depth, arrays, leaf)| {
        let client = fx.client();
        let id = format!("deep-{client}");
        let nested = nested_text(depth, arrays).replace('1', &leaf.to_string());
        let body = format!(
            r#"{{"client_id":"{client}","protocol":1,"mutations":[{{"seq":1,"tx":1,
            "space":"fuzz:b","collection":"deep","id":"{id}","kind":"put",
            "doc":{{"v":{nested}}},"hlc":"0000018bcfe56800","base_version":0}}]}}"#
        );
        let answer = fx.post("/v1/push", body)?;
        if answer.status != StatusCode::OK {
            // Too deep for the document limit (invalid_input) or for the JSON parser's
            // recursion limit (malformed_request).
            let code = answer.code();
            prop_assert!(
                matches!(code.as_deref(), Some("invalid_input" | "malformed_request")),
                "{}",
                answer.text
            );
            return Ok(());
        }
        let pull = json!({"client_id": client, "protocol": 1, "spaces": ["fuzz:b"],
                          "limit": 10000});
        let pulled = fx.post("/v1/pull", pull.to_string())?;
        prop_assert_eq!(pulled.status, StatusCode::OK, "{}", pulled.text);
        // `post` has already parsed the 200 body as a `PullResponse`, as a client does.
        let pulled: PullResponse = serde_json::from_slice(&pulled.bytes).unwrap();
        prop_assert!(pulled.changes.iter().any(|c| c.id.as_str() == id));
        Ok(())
    });
}

/// Arbitrary methods, paths, `Authorization` values and an extra header.
#[test]
fn arbitrary_methods_paths_and_headers_get_json_errors() {
    let fx = Fixture::new();
    let method = prop_oneof![
        prop::sample::select(vec![
            "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"
        ])
        .prop_map(str::to_owned),
        "[A-Z]{1,8}",
    ];
    let path = prop_oneof![
        prop::sample::select(vec![
            "/v1/push",
            "/v1/pull",
            "/v1/events",
            "/v1/events?spaces=fuzz:a",
            "/v1/events?spaces=",
            "/v1/events?spaces=fuzz:a,fuzz:a",
            "/v1/events?spaces=%ff%fe",
            "/v1/events?spaces=a&spaces=b",
            "/healthz",
            "/metrics",
            "/v1/push/",
            "//v1/push",
            "/v1/%70ush",
            "/",
        ])
        .prop_map(str::to_owned),
        "/[a-zA-Z0-9/%?=&._~:-]{0,40}",
        "/v1/events\\?spaces=[a-z0-9:%,.@_-]{0,30}",
    ];
    let auth = prop_oneof![
        Just(None),
        Just(Some(format!("Bearer {}", fx.token))),
        Just(Some(format!("bEaReR    {}   ", fx.token))),
        Just(Some(format!("Basic {}", fx.token))),
        "[ -~]{0,80}".prop_map(Some),
        "Bearer [ -~]{0,80}".prop_map(Some),
        "Bearer tsk_[0-9a-f]{64}".prop_map(Some),
    ];
    let extra = ("[a-z-]{1,20}", "[ -~]{0,40}");
    let strategy = (method, path, auth, extra, body_bytes());
    run(
        300,
        strategy,
        |(method, path, auth, (name, value), body)| {
            let mut request = Request::builder()
                .method(Method::from_bytes(method.as_bytes()).unwrap())
                .uri(path.as_str());
            if let Some(auth) = auth {
                request =
                    request.header(header::AUTHORIZATION, HeaderValue::from_str(&auth).unwrap());
            }
            if name != "authorization" && name != "content-length" {
                request = request.header(name.as_str(), HeaderValue::from_str(&value).unwrap());
            }
            // Some generated paths are not URIs; the router never sees those.
            let Ok(request) = request.body(Body::from(body)) else {
                return Ok(());
            };
            fx.send(request)?;
            Ok(())
        },
    );
}

/// Regression (found by `near_valid_requests_are_answered_or_refused_cleanly`): a push whose
/// document held a value nested as deep as a request could be was accepted, and when the
/// mutation conflicted, the `merged` result echoed that value one level deeper, past
/// serde_json's nesting limit of 128: no client could parse the answer, and the retry (a
/// duplicate) lost the conflict report. Documents are now limited to `max_doc_depth` (64).
#[test]
fn a_conflict_report_on_a_deeply_nested_value_parses() {
    let fx = Fixture::new();
    let push = |client: &str, hlc: &str, value: &str| {
        format!(
            r#"{{"client_id":"{client}","protocol":1,"mutations":[{{"seq":1,"tx":1,
            "space":"fuzz:a","collection":"todos","id":"deep","kind":"put",
            "doc":{{"tags":{value}}},"hlc":"{hlc}","base_version":0}}]}}"#
        )
    };
    let first = fx
        .post("/v1/push", push("first", "0000018bcfe56900", "[\"a\"]"))
        .unwrap();
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    // The deepest value the server accepts: the doc object, the `tags` array, 62 more.
    let depth = tidesync_server::Limits::default().max_doc_depth - 1;
    let body = push("second", "0000018bcfe56800", &nested_text(depth, true));
    let second = fx.post("/v1/push", body.clone()).unwrap();
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    let response = serde_json::from_slice::<PushResponse>(&second.bytes);
    assert!(
        response.is_ok(),
        "a {depth}-deep value was accepted, but the answer does not parse: {:?}",
        response.err()
    );
}

/// The templates the near-valid requests start from are valid: one edit away from a 200.
#[test]
fn the_templates_are_valid_requests() {
    let fx = Fixture::new();
    let push = fx
        .post("/v1/push", valid_push(&fx.client()).to_string())
        .unwrap();
    assert_eq!(push.status, StatusCode::OK, "{}", push.text);
    let response: PushResponse = serde_json::from_slice(&push.bytes).unwrap();
    assert_eq!((response.acked_through, response.results.len()), (3, 3));
    let pull = fx
        .post("/v1/pull", valid_pull(&fx.client()).to_string())
        .unwrap();
    assert_eq!(pull.status, StatusCode::OK, "{}", pull.text);
    let response: PullResponse = serde_json::from_slice(&pull.bytes).unwrap();
    assert_eq!(response.changes.len(), 2, "{}", pull.text);
}
