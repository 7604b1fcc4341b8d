// The workspace denies `unsafe_code`. This bench needs it for two things only, neither of
// which touches the store itself: a counting `#[global_allocator]` (implementing
// `GlobalAlloc` is unsafe by definition) and reading SQLite's own memory counters through
// `rusqlite::ffi` (`sqlite3_memory_used` / `sqlite3_memory_highwater`), which the counting
// allocator cannot see because SQLite allocates with C `malloc`.
#![allow(unsafe_code)]

//! Benchmarks for tidesync-store, each measured against a baseline taken in the same run.
//!
//! Run with `cargo bench -p tidesync-store`. Every figure is the median of several
//! repetitions after a warm-up; store and baseline repetitions are interleaved so that noise
//! from other tenants of the machine hits both alike. Ratios are what matter: absolute
//! figures move with the machine.
//!
//! 1. Single local write (`Store::put`) vs raw rusqlite doing the same two statements
//!    (upsert `records`, insert `outbox`) in one transaction, same schema and pragmas;
//!    synchronous FULL and NORMAL.
//! 2. 100k puts in one `Store::transaction` vs the same in raw rusqlite.
//! 3. `Store::open` of a database with 100k pending mutations vs of an empty one.
//! 4. Peak heap while streaming (`for_each_outbox`) and paging (`outbox_batch(.., 1000)`)
//!    a 100k-mutation outbox vs a 10k-mutation one.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, TransactionBehavior};
use serde_json::{json, Value};
use tidesync_protocol::{Doc, Op, RecordKey};
use tidesync_store::{Durability, Store, StoreConfig};

// ---- counting allocator ---------------------------------------------------------------------

/// `System`, plus a count of live bytes and their high-water mark.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(by: usize) {
    CURRENT.fetch_sub(by, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; the wrapper only updates counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns (Rust heap peak above the level before, SQLite heap peak above the
/// level before), in bytes.
fn heap_peak(f: impl FnOnce()) -> (usize, i64) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    // SAFETY: plain reads/resets of SQLite's global memory statistics.
    let sqlite_base = unsafe {
        rusqlite::ffi::sqlite3_memory_highwater(1);
        rusqlite::ffi::sqlite3_memory_used()
    };
    f();
    let peak = PEAK.load(Ordering::Relaxed);
    // SAFETY: as above.
    let sqlite_peak = unsafe { rusqlite::ffi::sqlite3_memory_highwater(0) };
    (peak.saturating_sub(base), sqlite_peak - sqlite_base)
}

// ---- workload -------------------------------------------------------------------------------

const SPACE: &str = "user:alice";
const COLLECTION: &str = "todos";

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Record ids: half new, half an already written record (picked uniformly).
struct Keys {
    rng: Rng,
    written: u64,
}

impl Keys {
    fn new(seed: u64) -> Keys {
        Keys {
            rng: Rng(seed | 1),
            written: 0,
        }
    }

    fn next(&mut self) -> (u64, RecordKey) {
        let n = if self.written > 0 && self.rng.below(2) == 0 {
            self.rng.below(self.written)
        } else {
            self.written += 1;
            self.written - 1
        };
        let key = RecordKey::parse(SPACE, COLLECTION, &format!("t{n:08}")).expect("valid key");
        (n, key)
    }
}

/// A realistic small document: about 100 bytes of JSON.
fn doc(n: u64) -> Doc {
    let Value::Object(map) = json!({
        "title": format!("Buy milk and eggs #{n}"),
        "done": n.is_multiple_of(3),
        "priority": n % 5,
        "tags": ["home", "errands"],
        "due": 1_767_225_600_000u64 + n,
    }) else {
        unreachable!("json! of an object literal is an object")
    };
    map
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn config(durability: Durability) -> StoreConfig {
    StoreConfig {
        durability,
        ..Default::default()
    }
}

// ---- raw rusqlite baseline ------------------------------------------------------------------

/// The store's own schema (`tidesync_store::MIGRATIONS`), so the baseline writes into the
/// very same tables and indexes. The baseline does only the two inserts: no write counters,
/// no cursor lookup.
fn raw_schema() -> String {
    tidesync_store::MIGRATIONS
        .iter()
        .flat_map(|steps| steps.iter())
        .filter_map(|step| match step {
            // Data conversions have nothing to convert in a new file.
            tidesync_store::Step::Sql(sql) => Some(*sql),
            tidesync_store::Step::Rust(_) => None,
        })
        .collect()
}

const RAW_UPSERT: &str =
    "INSERT INTO records (space, collection, id, doc, pending) VALUES (?1, ?2, ?3, ?4, 1)
     ON CONFLICT DO UPDATE SET doc = excluded.doc, pending = pending + 1";
const RAW_APPEND: &str =
    "INSERT INTO outbox (seq, tx, space, collection, id, op, hlc, base_version, created_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// Hand-written equivalent of the store's write path: same schema, same pragmas, same JSON.
struct Raw {
    conn: Connection,
    seq: i64,
    tx: i64,
}

impl Raw {
    fn open(path: &Path, durability: Durability) -> Raw {
        let conn = Connection::open(path).expect("open raw db");
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .expect("WAL");
        assert_eq!(mode, "wal");
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = OFF; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16384;"
        ))
        .expect("pragmas");
        conn.execute_batch(&raw_schema()).expect("schema");
        Raw {
            conn,
            seq: 0,
            tx: 0,
        }
    }

    fn write(tx: &rusqlite::Transaction<'_>, seq: i64, tx_id: i64, key: &RecordKey, doc: Doc) {
        let now = now_ms() as i64;
        let doc_json = serde_json::to_string(&doc).expect("doc json");
        let op_json = serde_json::to_string(&Op::Put { doc }).expect("op json");
        let (space, collection, id) =
            (key.space.as_str(), key.collection.as_str(), key.id.as_str());
        tx.prepare_cached(RAW_UPSERT)
            .and_then(|mut s| s.execute(params![space, collection, id, doc_json]))
            .expect("upsert");
        tx.prepare_cached(RAW_APPEND)
            .and_then(|mut s| {
                s.execute(params![
                    seq, tx_id, space, collection, id, op_json, now, 0i64, now
                ])
            })
            .expect("append");
    }

    /// One write in its own transaction.
    fn put(&mut self, key: &RecordKey, doc: Doc) {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("begin");
        self.seq += 1;
        self.tx += 1;
        Raw::write(&tx, self.seq, self.tx, key, doc);
        tx.commit().expect("commit");
    }

    /// `n` writes in one transaction.
    fn put_many(&mut self, keys: &mut Keys, n: usize) {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("begin");
        self.tx += 1;
        for _ in 0..n {
            let (i, key) = keys.next();
            self.seq += 1;
            Raw::write(&tx, self.seq, self.tx, &key, doc(i));
        }
        tx.commit().expect("commit");
    }
}

fn store_put_many(store: &mut Store, keys: &mut Keys, n: usize) {
    store
        .transaction(|tx| {
            for _ in 0..n {
                let (i, key) = keys.next();
                tx.put(&key, doc(i))?;
            }
            Ok::<_, tidesync_store::StoreError>(())
        })
        .expect("batch");
}

// ---- measurement helpers --------------------------------------------------------------------

/// Medians of two interleaved series and the median of their pairwise ratios (`a[i] / b[i]`,
/// more robust to drift in the machine's load than the ratio of the medians).
struct Paired {
    a: f64,
    b: f64,
    ratio: f64,
}

fn paired(a: Vec<f64>, b: Vec<f64>) -> Paired {
    let ratios = a.iter().zip(&b).map(|(x, y)| x / y).collect();
    Paired {
        a: median(a),
        b: median(b),
        ratio: median(ratios),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn secs(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

/// One row of the report.
struct Row {
    name: String,
    value: String,
    baseline: String,
    ratio: f64,
    target: String,
    pass: bool,
}

fn fmt_us(s: f64) -> String {
    format!("{:.1} µs", s * 1e6)
}

fn fmt_ms(s: f64) -> String {
    format!("{:.2} ms", s * 1e3)
}

fn fmt_rate(per_s: f64) -> String {
    format!("{:.0}k/s", per_s / 1e3)
}

fn fmt_bytes(b: f64) -> String {
    if b >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

// ---- 1. single writes -----------------------------------------------------------------------

/// Seconds per write: store (`a`) vs raw (`b`).
fn single_writes(durability: Durability, reps: usize) -> Paired {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path().join("store.db"), config(durability)).expect("open");
    let mut raw = Raw::open(&dir.path().join("raw.db"), durability);
    let mut store_keys = Keys::new(0x5eed);
    let mut raw_keys = Keys::new(0x5eed);

    // Warm-up (statement caches, page cache, file growth), also used to size repetitions so
    // that each takes ~150 ms.
    let warm = 200;
    let t_store = secs(|| {
        for _ in 0..warm {
            let (i, key) = store_keys.next();
            store.put(&key, doc(i)).expect("put");
        }
    });
    let t_raw = secs(|| {
        for _ in 0..warm {
            let (i, key) = raw_keys.next();
            raw.put(&key, doc(i));
        }
    });
    let per_op = (t_store + t_raw) / (2 * warm) as f64;
    let ops = ((0.15 / per_op) as usize).clamp(50, 20_000);

    let (mut s, mut r) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let mut run_store = || {
            secs(|| {
                for _ in 0..ops {
                    let (i, key) = store_keys.next();
                    store.put(&key, black_box(doc(i))).expect("put");
                }
            }) / ops as f64
        };
        let mut run_raw = || {
            secs(|| {
                for _ in 0..ops {
                    let (i, key) = raw_keys.next();
                    raw.put(&key, black_box(doc(i)));
                }
            }) / ops as f64
        };
        if rep % 2 == 0 {
            s.push(run_store());
            r.push(run_raw());
        } else {
            r.push(run_raw());
            s.push(run_store());
        }
    }
    paired(s, r)
}

// ---- 2. batched writes ----------------------------------------------------------------------

/// Seconds for `n` puts in one transaction, each repetition on a fresh database: store
/// (`a`) vs raw (`b`).
fn batched_writes(n: usize, reps: usize) -> Paired {
    let (mut s, mut r) = (Vec::new(), Vec::new());
    for rep in 0..=reps {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store =
            Store::open(dir.path().join("store.db"), config(Durability::Full)).expect("open");
        let mut raw = Raw::open(&dir.path().join("raw.db"), Durability::Full);
        let mut keys_s = Keys::new(0xba7c4 + rep as u64);
        let mut keys_r = Keys::new(0xba7c4 + rep as u64);
        let mut run_store = || secs(|| store_put_many(&mut store, &mut keys_s, n));
        let mut run_raw = || secs(|| raw.put_many(&mut keys_r, n));
        let (ts, tr) = if rep % 2 == 0 {
            let ts = run_store();
            (ts, run_raw())
        } else {
            let tr = run_raw();
            (run_store(), tr)
        };
        // Repetition 0 is the warm-up.
        if rep > 0 {
            s.push(ts);
            r.push(tr);
        }
    }
    paired(s, r)
}

// ---- 3 & 4. databases with a pending outbox -------------------------------------------------

/// Fills a store with `n` pending puts, in transactions of 1..=16 mutations.
fn fill(path: &Path, n: usize) {
    let mut store = Store::open(path, config(Durability::Normal)).expect("open");
    let mut keys = Keys::new(0xf111);
    let mut rng = Rng(0x7a5);
    let mut left = n;
    while left > 0 {
        let k = (1 + rng.below(16) as usize).min(left);
        store_put_many(&mut store, &mut keys, k);
        left -= k;
    }
    assert_eq!(store.outbox_stats().expect("stats").pending, n as u64);
}

/// Seconds of `Store::open`: with the pending outbox (`a`) vs empty (`b`).
fn open_times(full: &Path, empty: &Path, reps: usize) -> Paired {
    let time_open = |path: &Path| {
        let start = Instant::now();
        let store = Store::open(path, StoreConfig::default()).expect("open");
        let t = start.elapsed().as_secs_f64();
        drop(black_box(store));
        t
    };
    for _ in 0..2 {
        time_open(full);
        time_open(empty);
    }
    let (mut f, mut e) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        if rep % 2 == 0 {
            f.push(time_open(full));
            e.push(time_open(empty));
        } else {
            e.push(time_open(empty));
            f.push(time_open(full));
        }
    }
    paired(f, e)
}

/// Peak heap above the starting level while streaming and while paging the whole outbox:
/// ((stream rust, stream sqlite), (page rust, page sqlite)), medians of `reps`.
fn outbox_memory(path: &Path, n: usize, reps: usize) -> ((f64, f64), (f64, f64)) {
    let store = Store::open(path, StoreConfig::default()).expect("open");
    let stream = || {
        let mut seen = 0usize;
        store
            .for_each_outbox(|e| {
                black_box(&e);
                seen += 1;
                ControlFlow::Continue(())
            })
            .expect("stream");
        assert_eq!(seen, n);
    };
    let page = || {
        let mut after = 0;
        let mut seen = 0usize;
        loop {
            let batch = store.outbox_batch(after, 1000).expect("batch");
            let Some(last) = batch.last() else { break };
            after = last.mutation.seq;
            seen += batch.len();
            black_box(&batch);
        }
        assert_eq!(seen, n);
    };
    // Warm-up: statement cache, SQLite page cache.
    stream();
    page();
    let (mut sr, mut ss, mut pr, mut ps) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let (rust, sqlite) = heap_peak(stream);
        sr.push(rust as f64);
        ss.push(sqlite as f64);
        let (rust, sqlite) = heap_peak(page);
        pr.push(rust as f64);
        ps.push(sqlite as f64);
    }
    ((median(sr), median(ss)), (median(pr), median(ps)))
}

// ---- report ---------------------------------------------------------------------------------

fn print_table(rows: &[Row]) {
    let headers = [
        "benchmark",
        "measured",
        "baseline",
        "ratio",
        "target",
        "result",
    ];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.value.clone(),
                r.baseline.clone(),
                format!("{:.2}×", r.ratio),
                r.target.clone(),
                if r.pass { "PASS" } else { "MISS" }.to_owned(),
            ]
        })
        .collect();
    let mut widths = headers.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[String]| {
        let padded: Vec<String> = cols
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(&headers.map(str::to_owned));
    println!(
        "|{}|",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in &cells {
        line(row);
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us without it: stay quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("tidesync-store bench: run with `cargo bench -p tidesync-store`");
        return;
    }
    // BENCH_ONLY=single,batch,open,memory runs a subset (for profiling); default: all.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |what: &str| only.is_empty() || only.split(',').any(|o| o.trim() == what);
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    if run("single") {
        for (durability, label) in [(Durability::Full, "FULL"), (Durability::Normal, "NORMAL")] {
            progress(&format!("single writes, synchronous={label}"));
            let Paired {
                a: store,
                b: raw,
                ratio,
            } = single_writes(durability, 15);
            rows.push(Row {
                name: format!("single put, synchronous={label} (per write)"),
                value: fmt_us(store),
                baseline: format!("{} raw", fmt_us(raw)),
                ratio,
                target: "≤ 1.30×".into(),
                pass: ratio <= 1.3,
            });
        }
    }

    const N: usize = 100_000;
    if run("batch") {
        progress("batched writes");
        let Paired {
            a: store,
            b: raw,
            ratio,
        } = batched_writes(N, 7);
        let (store_rate, raw_rate) = (N as f64 / store, N as f64 / raw);
        rows.push(Row {
            name: "100k puts in one transaction (throughput)".into(),
            value: fmt_rate(store_rate),
            baseline: format!("{} raw", fmt_rate(raw_rate)),
            ratio,
            target: "≥ 200k/s".into(),
            pass: store_rate >= 200_000.0,
        });
    }

    if run("open") || run("memory") {
        progress("filling outboxes (100k and 10k pending mutations)");
        let dir = tempfile::tempdir().expect("tempdir");
        let (big, small, empty) = (
            dir.path().join("big.db"),
            dir.path().join("small.db"),
            dir.path().join("empty.db"),
        );
        fill(&big, N);
        fill(&small, N / 10);
        drop(Store::open(&empty, StoreConfig::default()).expect("create empty"));

        if run("open") {
            progress("open times");
            let Paired {
                a: full,
                b: none,
                ratio,
            } = open_times(&big, &empty, 21);
            rows.push(Row {
                name: "Store::open, 100k pending mutations".into(),
                value: fmt_ms(full),
                baseline: format!("{} empty", fmt_ms(none)),
                ratio,
                target: "< 50 ms".into(),
                pass: full < 0.050,
            });
        }

        if run("memory") {
            progress("outbox memory");
            let (big_stream, big_page) = outbox_memory(&big, N, 3);
            let (small_stream, small_page) = outbox_memory(&small, N / 10, 3);
            let mem_rows = [
                ("for_each_outbox", big_stream, small_stream),
                ("outbox_batch(…, 1000)", big_page, small_page),
            ];
            for (api, big, small) in mem_rows {
                let ratio = big.0 / small.0.max(1.0);
                rows.push(Row {
                    name: format!("{api} peak Rust heap, 100k vs 10k outbox"),
                    value: fmt_bytes(big.0),
                    baseline: format!("{} at 10k", fmt_bytes(small.0)),
                    ratio,
                    target: "≤ 1.20×".into(),
                    pass: ratio <= 1.2,
                });
                if big.1 == 0.0 && small.1 == 0.0 {
                    // This workspace builds SQLite with SQLITE_DEFAULT_MEMSTATUS=0
                    // (.cargo/config.toml): it keeps no allocation statistics to read.
                    notes.push(format!(
                        "{api}: SQLite's own heap not measured (SQLite built without memory \
                         statistics, SQLITE_DEFAULT_MEMSTATUS=0)."
                    ));
                } else {
                    notes.push(format!(
                        "{api}: SQLite's own heap (C malloc, invisible to the counting \
                         allocator; its page cache is already warm at start) peaked {} above \
                         start at 100k vs {} at 10k.",
                        fmt_bytes(big.1),
                        fmt_bytes(small.1)
                    ));
                }
            }
        }
    }

    println!();
    println!("tidesync-store benchmarks (medians; ratio = store ÷ baseline from this run)");
    println!();
    print_table(&rows);
    println!();
    for note in notes {
        println!("{note}");
    }
    println!("Total bench time: {:.1} s", started.elapsed().as_secs_f64());
}
