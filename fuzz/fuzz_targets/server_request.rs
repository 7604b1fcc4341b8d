//! `server_request`: arbitrary requests through the real router (`app().oneshot`), on one
//! fresh server (SQLite in a temporary directory) per fuzzing process.
//!
//! Input layout (so that a seed is easy to write by hand: two selector bytes, then a body):
//! - byte 0 picks the route: POST /v1/push (0..=2), POST /v1/pull (3, 4), GET /v1/events
//!   with the first line of the rest as `?spaces=` (5), an arbitrary `METHOD PATH` first line
//!   (6), GET /healthz or /metrics (7);
//! - byte 1 picks the `Authorization` header (low 3 bits: a read-write token, a read-only
//!   token, none, `Bearer <garbage>`, another scheme, an empty bearer, an unknown token, a
//!   lower-case scheme); bit 4 takes one more `name: value` header line from the rest;
//! - the rest is the body.
//!
//! Asserted: no panic; never a 5xx; every error is JSON `{code, message}` with a known code
//! and a non-empty message; a 200 push or pull body parses as its response type.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Method, Request};
use axum::Router;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tidesync_protocol::{ErrorBody, PullResponse, PushResponse, SpaceName};
use tidesync_server::auth::Grants;
use tidesync_server::storage::sqlite::SqliteStorage;
use tidesync_server::{app, AppState, Limits, MergeRules};
use tower::ServiceExt;

struct Server {
    runtime: tokio::runtime::Runtime,
    router: Router,
    write_token: String,
    read_token: String,
    _dir: tempfile::TempDir,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = Arc::new(
            SqliteStorage::open(&dir.path().join("server.db"), MergeRules::default())
                .expect("open the server database"),
        );
        let spaces = |names: &[&str]| {
            names
                .iter()
                .map(|n| SpaceName::new(*n).expect("valid space"))
                .collect()
        };
        let write_token = storage
            .create_token(&Grants {
                user: "fuzz".into(),
                read: spaces(&["fuzz:r"]),
                write: spaces(&["fuzz:a", "fuzz:b"]),
            })
            .expect("token");
        let read_token = storage
            .create_token(&Grants {
                user: "reader".into(),
                read: spaces(&["fuzz:a"]),
                write: spaces(&[]),
            })
            .expect("token");
        // Small limits, so that short inputs reach the size checks too.
        let limits = Limits {
            max_body_bytes: 8 << 10,
            max_mutations_per_push: 64,
            max_doc_bytes: 2 << 10,
            max_spaces_per_pull: 8,
            default_pull_limit: 50,
            max_pull_limit: 200,
            ..Limits::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Server {
            runtime,
            router: app(AppState::new(storage, limits)),
            write_token,
            read_token,
            _dir: dir,
        }
    })
}

/// Splits off the first line (without its `\n`).
fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Route {
    Push,
    Pull,
    Events,
    Other,
}

fuzz_target!(|data: &[u8]| {
    let [route, auth, rest @ ..] = data else {
        return;
    };
    let server = server();
    let mut rest = rest;
    let (kind, method, uri) = match route % 8 {
        0..=2 => (Route::Push, Method::POST, "/v1/push".to_owned()),
        3 | 4 => (Route::Pull, Method::POST, "/v1/pull".to_owned()),
        5 => {
            let (line, tail) = first_line(rest);
            rest = tail;
            let spaces = String::from_utf8_lossy(line);
            (
                Route::Events,
                Method::GET,
                format!("/v1/events?spaces={spaces}"),
            )
        }
        6 => {
            let (line, tail) = first_line(rest);
            rest = tail;
            let line = String::from_utf8_lossy(line);
            let (method, path) = line.split_once(' ').unwrap_or(("GET", &line));
            let Ok(method) = Method::from_bytes(method.as_bytes()) else {
                return;
            };
            (Route::Other, method, path.to_owned())
        }
        _ if route & 0x80 == 0 => (Route::Other, Method::GET, "/healthz".to_owned()),
        _ => (Route::Other, Method::GET, "/metrics".to_owned()),
    };
    let mut request = Request::builder().method(method).uri(uri.as_str());
    let authorization = match auth % 8 {
        0 => Some(format!("Bearer {}", server.write_token)),
        1 => Some(format!("Bearer {}", server.read_token)),
        2 => None,
        3 => {
            let (line, tail) = first_line(rest);
            rest = tail;
            Some(format!("Bearer {}", String::from_utf8_lossy(line)))
        }
        4 => Some(format!("Basic {}", server.write_token)),
        5 => Some("Bearer ".to_owned()),
        6 => Some(
            "Bearer tsk_0000000000000000000000000000000000000000000000000000000000000000"
                .to_owned(),
        ),
        _ => Some(format!("bearer   {}  ", server.write_token)),
    };
    if let Some(value) = authorization {
        let Ok(value) = HeaderValue::from_str(&value) else {
            return;
        };
        request = request.header(header::AUTHORIZATION, value);
    }
    if auth & 0x10 != 0 {
        let (line, tail) = first_line(rest);
        rest = tail;
        let line = String::from_utf8_lossy(line);
        let (name, value) = line.split_once(':').unwrap_or((&line, ""));
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) else {
            return;
        };
        request = request.header(name, value);
    }
    let Ok(request) = request.body(Body::from(rest.to_vec())) else {
        return;
    };
    let router = server.router.clone();
    server.runtime.block_on(async move {
        let response = router
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        assert!(
            !status.is_server_error(),
            "{status} for {kind_name} {uri}",
            kind_name = route % 8
        );
        if kind == Route::Events && status.is_success() {
            return; // an endless event stream; dropping it closes it
        }
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("the body is readable")
            .to_bytes();
        if status.is_success() {
            match kind {
                Route::Push => {
                    serde_json::from_slice::<PushResponse>(&bytes).expect("a push response");
                }
                Route::Pull => {
                    serde_json::from_slice::<PullResponse>(&bytes).expect("a pull response");
                }
                Route::Events | Route::Other => {}
            }
            return;
        }
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{status}: the error body is not {{code, message}} ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        assert!(!body.message.is_empty(), "{status}: empty message");
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{status}: error without a JSON content type"
        );
    });
});
