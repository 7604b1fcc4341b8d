//! What the C ABI costs, against the Rust API measured in the same run.
//!
//! `cargo bench -p tidesync-ffi` prints:
//! 1. **A put through `ts_put` vs `Client::put`**: local-only databases with the same options,
//!    the same keys and documents; the FFI path includes what a binding pays (the key and the
//!    JSON document parsed from spans, the receipt written as JSON, `ts_buf_free`), the Rust
//!    path takes a ready `RecordKey` and `Doc`. Repetitions alternate the two. Target ≤ 1.15×.
//! 2. **From a pulled change to the drained event**: a writer client puts one record at a
//!    time; two readers pull it, one through the C ABI (a subscription drained with
//!    `ts_wait_events`), one through the Rust API (`Client::subscribe`). The difference of
//!    the medians is what the ABI's event path (pump thread, coalescing queue, wake-up,
//!    drain, JSON) adds after the change was applied. Target ≤ 5 ms median.
//!
//! `BENCH_PUTS` (default 20,000) and `BENCH_EVENTS` (default 100) size the runs. The bench
//! never asserts: a miss prints `MISS`.

#![allow(clippy::expect_used, clippy::unwrap_used)]
// It calls the C ABI, as a binding does.
#![allow(unsafe_code)]

use std::ptr;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidesync::{
    ts_buf_free, ts_close, ts_open, ts_put, ts_subscribe, ts_unsubscribe, ts_wait_events, TsBuf,
    TS_OK,
};
use tidesync_client::{
    Client, ClientConfig, ClientEvent, Doc, Durability, RecordKey, SpaceName, StaticToken,
};
use tidesync_server::auth::Grants;
use tidesync_server::{EmbeddedServer, MergeRules};

const REPS: usize = 5;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn empty() -> TsBuf {
    TsBuf {
        ptr: ptr::null_mut(),
        len: 0,
    }
}

fn open_ffi(config: &Value) -> u64 {
    let text = config.to_string();
    let mut db = 0;
    let mut out = empty();
    // SAFETY: valid spans and out-pointers for the call.
    let status = unsafe { ts_open(text.as_ptr(), text.len(), &mut db, &mut out) };
    // SAFETY: a buffer this library filled.
    unsafe { ts_buf_free(&mut out) };
    assert_eq!(status, TS_OK, "ts_open {config}");
    db
}

fn close_ffi(db: u64) {
    // SAFETY: a NULL out-pointer is allowed.
    unsafe { ts_close(db, ptr::null_mut()) };
}

fn doc(i: usize) -> Doc {
    match json!({"title": format!("Buy milk #{i}"), "done": i.is_multiple_of(3), "priority": i % 5})
    {
        Value::Object(doc) => doc,
        _ => unreachable!("an object literal"),
    }
}

/// Seconds for `n` puts through `ts_put`.
fn ffi_puts(dir: &std::path::Path, rep: usize, n: usize) -> f64 {
    let db = open_ffi(&json!({
        "path": dir.join(format!("ffi-{rep}.db")),
        "durability": "normal",
    }));
    let inputs: Vec<(String, String)> = (0..n)
        .map(|i| {
            (
                format!("s:b/todos/t{i:06}"),
                Value::Object(doc(i)).to_string(),
            )
        })
        .collect();
    let started = Instant::now();
    for (key, doc) in &inputs {
        let mut out = empty();
        // SAFETY: valid spans and out-pointer for the call; the buffer is freed once.
        let status = unsafe {
            let status = ts_put(
                db,
                key.as_ptr(),
                key.len(),
                doc.as_ptr(),
                doc.len(),
                &mut out,
            );
            ts_buf_free(&mut out);
            status
        };
        assert_eq!(status, TS_OK);
    }
    let elapsed = started.elapsed().as_secs_f64();
    close_ffi(db);
    elapsed
}

/// Seconds for `n` puts through `Client::put`.
fn rust_puts(dir: &std::path::Path, rep: usize, n: usize) -> f64 {
    let mut config = ClientConfig::local(dir.join(format!("rust-{rep}.db")));
    config.store.durability = Durability::Normal;
    let client = Client::open(config).expect("open");
    let inputs: Vec<(RecordKey, Doc)> = (0..n)
        .map(|i| {
            let key = RecordKey::parse("s:b", "todos", &format!("t{i:06}")).expect("key");
            (key, doc(i))
        })
        .collect();
    let started = Instant::now();
    for (key, doc) in inputs {
        client.put(&key, doc).expect("put");
    }
    started.elapsed().as_secs_f64()
}

fn bench_puts(dir: &std::path::Path) {
    let n = env("BENCH_PUTS", 20_000);
    let (mut ffi, mut rust, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    ffi_puts(dir, 99, n / 10); // warm-up
    rust_puts(dir, 99, n / 10);
    for rep in 0..REPS {
        let r = rust_puts(dir, rep, n);
        let f = ffi_puts(dir, rep, n);
        eprintln!(
            "  puts rep {rep}: ffi {:.2} µs, rust {:.2} µs",
            f * 1e6 / n as f64,
            r * 1e6 / n as f64
        );
        ffi.push(f);
        rust.push(r);
        ratios.push(f / r);
    }
    let ratio = median(ratios);
    println!(
        "| ts_put vs Client::put ({n} puts, durability normal)   | {:>7.2} µs | {:>7.2} µs Rust | {:>5.2}× | ≤ 1.15×  | {} |",
        median(ffi) * 1e6 / n as f64,
        median(rust) * 1e6 / n as f64,
        ratio,
        if ratio <= 1.15 { "PASS" } else { "MISS" }
    );
}

/// Drains subscription `sub` until a `records_changed` event came (its time) or `deadline`.
fn drain_until(sub: u64, deadline: Instant) -> Option<Instant> {
    loop {
        let mut out = empty();
        // SAFETY: valid out-pointer; the buffer is freed once below.
        let status = unsafe { ts_wait_events(sub, 50, 0, &mut out) };
        assert_eq!(status, TS_OK);
        let text = if out.ptr.is_null() {
            &[][..]
        } else {
            // SAFETY: `ptr`/`len` of a buffer this library filled, not yet freed.
            unsafe { std::slice::from_raw_parts(out.ptr, out.len) }
        };
        let hit = std::str::from_utf8(text).is_ok_and(|t| t.contains("records_changed"));
        let at = Instant::now();
        // SAFETY: a buffer this library filled.
        unsafe { ts_buf_free(&mut out) };
        if hit {
            return Some(at);
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

fn bench_events(dir: &std::path::Path) {
    let n = env("BENCH_EVENTS", 100);
    let server =
        EmbeddedServer::sqlite(&dir.join("server.db"), MergeRules::default()).expect("server");
    let space = SpaceName::new("team:bench").expect("space");
    let token = server
        .storage()
        .create_token(&Grants {
            user: "bench".into(),
            read: Default::default(),
            write: [space.clone()].into_iter().collect(),
        })
        .expect("token");
    let rust_config = |name: &str| {
        let mut c = ClientConfig::new(
            dir.join(format!("{name}.db")),
            server.url(),
            vec![space.clone()],
            Arc::new(StaticToken(token.clone())),
        );
        c.store.durability = Durability::Normal;
        c
    };
    let writer = Client::open(rust_config("writer")).expect("writer");
    let rust_reader = Client::open(rust_config("rust-reader")).expect("rust reader");
    let ffi_reader = open_ffi(&json!({
        "path": dir.join("ffi-reader.db"),
        "server_url": server.url(),
        "spaces": [space.as_str()],
        "token": token,
        "durability": "normal",
    }));
    let mut sub = 0;
    // SAFETY: no doorbell; valid out-pointers.
    let status = unsafe {
        ts_subscribe(
            ffi_reader,
            0,
            None,
            ptr::null_mut(),
            None,
            0,
            &mut sub,
            ptr::null_mut(),
        )
    };
    assert_eq!(status, TS_OK);
    writer
        .wait_synced(Duration::from_secs(30))
        .expect("writer synced");
    rust_reader
        .wait_synced(Duration::from_secs(30))
        .expect("reader synced");
    let rust_events = rust_reader.subscribe();
    let (mut via_ffi, mut via_rust) = (Vec::new(), Vec::new());
    std::thread::scope(|scope| {
        for i in 0..n {
            drain_until(sub, Instant::now()); // whatever is queued (statuses)
            while rust_events.try_recv().is_ok() {}
            let key = RecordKey::parse("team:bench", "todos", &format!("e{i}")).expect("key");
            let started = Instant::now();
            let ffi = scope.spawn(move || drain_until(sub, started + Duration::from_secs(10)));
            writer.put(&key, doc(i)).expect("put");
            let rust_at = loop {
                match rust_events.recv_timeout(Duration::from_secs(10)) {
                    Ok(ClientEvent::RecordsChanged { .. }) => break Some(Instant::now()),
                    Ok(_) => continue,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break None,
                }
            };
            let ffi_at = ffi.join().expect("drain thread");
            if let (Some(r), Some(f)) = (rust_at, ffi_at) {
                via_rust.push((r - started).as_secs_f64() * 1e3);
                via_ffi.push((f - started).as_secs_f64() * 1e3);
            }
        }
    });
    // SAFETY: NULL out-pointers are allowed.
    unsafe { ts_unsubscribe(sub, ptr::null_mut()) };
    close_ffi(ffi_reader);
    let (f, r) = (median(via_ffi.clone()), median(via_rust.clone()));
    let added = f - r;
    println!(
        "| pulled change → drained event, added by the ABI ({} writes) | {:>6.2} ms | {:>6.2} ms Rust | {:>+5.2} ms | ≤ 5 ms | {} |",
        via_ffi.len(),
        f,
        r,
        added,
        if added <= 5.0 { "PASS" } else { "MISS" }
    );
    eprintln!(
        "  write → event medians: through the ABI {f:.2} ms, through the Rust channel {r:.2} ms"
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    println!("tidesync-ffi benchmarks (medians; ratios against the Rust API in the same run)\n");
    println!("| benchmark | measured | baseline | ratio | target | result |");
    println!("|---|---|---|---|---|---|");
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "put" {
        bench_puts(dir.path());
    }
    if only.is_empty() || only == "events" {
        bench_events(dir.path());
    }
}
