//! `store_open`: arbitrary bytes as a client database file. `Store::open` must return `Ok`
//! or an `Err`, never panic (or hang); when it opens, reads, a write, the outbox, sync
//! bookkeeping and the integrity check must not panic either (errors are fine).
//!
//! Raw bytes almost never get past SQLite's header check, so byte 0 picks how the file is
//! made (a valid template database is built once per process, with records, pending and
//! acknowledged mutations, a rejection, a pulled change, a cursor and restoration entries):
//! - 0: the rest is the whole file;
//! - 1: the template with the rest applied as 4-byte patches (3-byte offset, new byte);
//! - 2: the template cut at a 3-byte length, then patched like 1;
//! - 3: the template with the rest as its `-wal` file.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use tidesync_protocol::{
    Change, ClientId, CollectionName, Doc, ErrorCode, Hlc, PullResponse, PushOutcome, PushResponse,
    PushResult, RecordKey, RecordStamps, SpaceName, Stamp,
};
use tidesync_store::restoration::{BucketPath, Entry, Lifetime, Value};
use tidesync_store::{Durability, ListOptions, SessionRestore, Store, StoreConfig, StoreError};

const SPACE: &str = "user:fuzz";
const COLLECTION: &str = "todos";

struct Template {
    dir: tempfile::TempDir,
    bytes: Vec<u8>,
}

fn config() -> StoreConfig {
    StoreConfig {
        durability: Durability::Normal,
        busy_timeout: Duration::from_millis(50),
        session: SessionRestore::Keep,
        ..StoreConfig::default()
    }
}

fn key(id: &str) -> RecordKey {
    RecordKey::parse(SPACE, COLLECTION, id).expect("valid key")
}

fn doc(v: serde_json::Value) -> Doc {
    v.as_object().cloned().expect("an object")
}

fn build_template(path: &Path) -> Result<(), StoreError> {
    let mut store = Store::open(path, config())?;
    for i in 0..8 {
        store.put(
            &key(&format!("t{i}")),
            doc(json!({"title": format!("todo {i}"), "n": i})),
        )?;
    }
    store.patch(&key("t1"), doc(json!({"done": true, "tags": ["a", "b"]})))?;
    store.delete(&key("t2"))?;
    store.transaction(|tx| {
        tx.put(&key("t10"), doc(json!({"title": "in a tx"})))?;
        tx.patch(&key("t3"), doc(json!({"n": null})))?;
        let form = BucketPath::root()
            .child("form")
            .map_err(|e| StoreError::InvalidInput(e.to_string()))?;
        tx.restore_write(
            Lifetime::Persistent,
            &form,
            "draft",
            Entry::new("form.draft", 1, Value::from("half a sentence")),
        )?;
        Ok::<_, StoreError>(())
    })?;
    store.restore_write(
        Lifetime::Session,
        &BucketPath::root(),
        "nav",
        Entry::new(
            "nav",
            2,
            Value::from(vec![Value::from(3), Value::from("list")]),
        ),
    )?;
    store.mark_sending(1, 4)?;
    let applied = |seq, version| PushResult {
        seq,
        outcome: PushOutcome::Applied { version },
    };
    store.apply_push_response(&PushResponse {
        acked_through: 4,
        results: vec![
            applied(1, 1),
            applied(2, 2),
            PushResult {
                seq: 3,
                outcome: PushOutcome::Rejected {
                    code: ErrorCode::RuleViolation,
                    message: "no".into(),
                },
            },
            applied(4, 3),
        ],
    })?;
    let other = Stamp::new(
        Hlc::new(1_700_000_000_000, 0).expect("hlc"),
        ClientId::new("other").expect("client id"),
    );
    let space = SpaceName::new(SPACE).expect("space");
    store.apply_pull(&PullResponse {
        changes: vec![Change {
            space: space.clone(),
            collection: CollectionName::new(COLLECTION).expect("collection"),
            id: key("from-server").id,
            version: 4,
            deleted: false,
            doc: Some(doc(json!({"title": "pulled"}))),
            stamps: RecordStamps {
                fields: [("title".to_owned(), other.clone())].into_iter().collect(),
                liveness: Some(other.clone()),
                cleared: Some(other),
            },
        }],
        cursor: [(space, 4)].into_iter().collect(),
        has_more: false,
        remaining: 0,
        acked_through: 4,
    })?;
    Ok(())
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("template.db");
        build_template(&path).expect("build the template database");
        // The last connection closed: SQLite checkpointed the WAL into the main file.
        let bytes = std::fs::read(&path).expect("read the template");
        Template { dir, bytes }
    })
}

fn patch(file: &mut [u8], patches: &[u8]) {
    if file.is_empty() {
        return;
    }
    for p in patches.chunks_exact(4) {
        let offset = usize::from(p[0]) | usize::from(p[1]) << 8 | usize::from(p[2]) << 16;
        let len = file.len();
        file[offset % len] = p[3];
    }
}

/// Every read, a write and the sync bookkeeping; results are ignored, panics are not.
fn exercise(mut store: Store) {
    let space = SpaceName::new(SPACE).expect("space");
    let collection = CollectionName::new(COLLECTION).expect("collection");
    let _ = store.get(&key("t1"));
    let _ = store.list(&space, &collection, &ListOptions::default());
    let _ = store.outbox_stats();
    let _ = store.outbox_batch(0, 100);
    let _ = store.next_push_batch(100);
    let _ = store.unpushed();
    let _ = store.acked_through();
    let _ = store.conflicts();
    let _ = store.rejections();
    let _ = store.cursor();
    let _ = store.has_synced();
    let _ = store.restoration_issues();
    let _ = store.put(&key("new"), doc(json!({"x": 1})));
    let _ = store.patch(&key("t1"), doc(json!({"y": 2})));
    let _ = store.requeue_sending();
    let _ = store.check_integrity();
}

static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn scratch_path() -> PathBuf {
    let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    template().dir.path().join(format!("case{}.db", n % 2))
}

fn remove(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    let template = template();
    let path = scratch_path();
    remove(&path);
    let mut wal = None;
    let file = match mode % 4 {
        0 => rest.to_vec(),
        1 => {
            let mut file = template.bytes.clone();
            patch(&mut file, rest);
            file
        }
        2 => {
            let [a, b, c, patches @ ..] = rest else {
                return;
            };
            let len = usize::from(*a) | usize::from(*b) << 8 | usize::from(*c) << 16;
            let mut file = template.bytes[..len.min(template.bytes.len())].to_vec();
            patch(&mut file, patches);
            file
        }
        _ => {
            wal = Some(rest.to_vec());
            template.bytes.clone()
        }
    };
    std::fs::write(&path, &file).expect("write the case");
    if let Some(wal) = wal {
        let mut p = path.as_os_str().to_owned();
        p.push("-wal");
        std::fs::write(PathBuf::from(p), wal).expect("write the wal");
    }
    if let Ok(store) = Store::open(&path, config()) {
        exercise(store);
    }
    remove(&path);
});
