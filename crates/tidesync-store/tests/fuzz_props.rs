//! The `store_open` and `restoration_decode` fuzz targets' properties as proptests that run
//! in CI (the libFuzzer targets live in `fuzz/`).
//!
//! - **Store open on bad bytes**: arbitrary bytes, and a valid database (records, pending,
//!   acknowledged and rejected mutations, a pulled change, a cursor, restoration entries)
//!   with bytes patched, cut short, a page zeroed, or its write-ahead log damaged.
//!   `Store::open` returns `Ok` or a one-line error, never panics; a file refused as not ours
//!   is left byte for byte as it was; an opened store survives reads, writes, sync
//!   bookkeeping and the integrity check without panicking (errors are fine).
//! - **Restoration decoding**: arbitrary bytes and valid encodings with bytes flipped,
//!   inserted or removed; `decode` never panics and whatever it accepts re-encodes to the
//!   same bytes. Rows with random unicode paths, keys, tags, versions and bytes go through
//!   `RestorationTree::load`: never a panic, every row kept or reported, a repair for every
//!   dropped row.
//!
//! Failing cases are saved in `proptest-regressions/fuzz_props.txt` and replayed first.
//! `PROPTEST_CASES` changes the number of cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use serde_json::json;
use tidesync_protocol::{
    Change, ClientId, CollectionName, Doc, ErrorCode, Hlc, PullResponse, PushOutcome, PushResponse,
    PushResult, RecordKey, RecordStamps, SpaceName, Stamp,
};
use tidesync_store::restoration::{
    codec, BucketPath, Entry, IssueKind, Lifetime, Repair, RestorationLimits, RestorationSchema,
    RestorationTree, StoredEntry, Value,
};
use tidesync_store::{Durability, ListOptions, SessionRestore, Store, StoreConfig, StoreError};

const SPACE: &str = "user:fuzz";
const COLLECTION: &str = "todos";
const PAGE: usize = 4096;

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
    if let Err(e) = TestRunner::new(config).run(&strategy, test) {
        panic!("{e}");
    }
}

// ---- store open -------------------------------------------------------------------------

fn config() -> StoreConfig {
    StoreConfig {
        durability: Durability::Normal,
        busy_timeout: Duration::from_millis(50),
        session: SessionRestore::Keep,
        ..StoreConfig::default()
    }
}

fn key(id: &str) -> RecordKey {
    RecordKey::parse(SPACE, COLLECTION, id).unwrap()
}

fn doc(v: serde_json::Value) -> Doc {
    v.as_object().cloned().unwrap()
}

/// A database that has been through every kind of write, and more writes still in its WAL.
struct Template {
    dir: tempfile::TempDir,
    db: Vec<u8>,
    /// The main file and the WAL of the same database with more writes not yet checkpointed.
    db_before_wal: Vec<u8>,
    wal: Vec<u8>,
}

impl Template {
    fn new() -> Template {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("template.db");
        let mut store = Store::open(&path, config()).unwrap();
        fill(&mut store).unwrap();
        drop(store); // the last connection checkpoints the WAL into the main file
        let db = std::fs::read(&path).unwrap();

        let mut store = Store::open(&path, config()).unwrap();
        for i in 0..5 {
            store
                .put(&key(&format!("w{i}")), doc(json!({"in": "wal", "i": i})))
                .unwrap();
        }
        store.delete(&key("t4")).unwrap();
        let db_before_wal = std::fs::read(&path).unwrap();
        let wal = std::fs::read(with_suffix(&path, "-wal")).unwrap();
        drop(store);
        assert!(!wal.is_empty(), "the writes are in the WAL");
        Template {
            dir,
            db,
            db_before_wal,
            wal,
        }
    }

    fn case_path(&self) -> PathBuf {
        let path = self.dir.path().join("case.db");
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(with_suffix(&path, suffix));
        }
        path
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

fn fill(store: &mut Store) -> Result<(), StoreError> {
    for i in 0..8 {
        store.put(
            &key(&format!("t{i}")),
            doc(json!({"title": format!("todo {i}"), "n": i, "nested": {"a": [1, 2]}})),
        )?;
    }
    store.patch(&key("t1"), doc(json!({"done": true, "tags": ["a", "b"]})))?;
    store.delete(&key("t2"))?;
    store.transaction(|tx| {
        tx.put(&key("t10"), doc(json!({"title": "in a tx"})))?;
        tx.patch(&key("t3"), doc(json!({"n": null})))?;
        let form = BucketPath::root().child("form")?;
        tx.restore_write(
            Lifetime::Persistent,
            &form,
            "draft",
            Entry::new("form.draft", 1, "half a sentence"),
        )?;
        Ok::<_, StoreError>(())
    })?;
    store.restore_write(
        Lifetime::Session,
        &BucketPath::root(),
        "nav",
        Entry::new("nav", 2, vec![Value::from(3), Value::from("list")]),
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
        Hlc::new(1_700_000_000_000, 0).unwrap(),
        ClientId::new("other").unwrap(),
    );
    let space = SpaceName::new(SPACE).unwrap();
    store.apply_pull(&PullResponse {
        changes: vec![Change {
            space: space.clone(),
            collection: CollectionName::new(COLLECTION).unwrap(),
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
        echoes: Vec::new(),
        cursor: [(space, 4)].into_iter().collect(),
        has_more: false,
        remaining: 0,
        acked_through: 4,
    })?;
    Ok(())
}

/// How a case's file is made.
#[derive(Debug, Clone)]
enum Damage {
    /// The whole file is these bytes.
    Raw(Vec<u8>),
    /// A valid SQLite header followed by these bytes.
    Header(Vec<u8>),
    /// The template with bytes replaced.
    Patched(Vec<(Index, u8)>),
    /// The template cut short, then patched.
    Cut(Index, Vec<(Index, u8)>),
    /// One page of the template zeroed.
    ZeroPage(Index),
    /// The template's page header (first bytes of a page) patched.
    PageHeader(Index, Vec<(u8, u8)>),
    /// The main file and a WAL with bytes replaced.
    WalPatched(Vec<(Index, u8)>),
    /// The main file and a WAL cut short.
    WalCut(Index),
}

fn damage() -> impl Strategy<Value = Damage> {
    let patches = || prop::collection::vec((any::<Index>(), any::<u8>()), 1..12);
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..2048).prop_map(Damage::Raw),
        1 => prop::collection::vec(any::<u8>(), 0..2048).prop_map(Damage::Header),
        3 => patches().prop_map(Damage::Patched),
        1 => (any::<Index>(), prop::collection::vec((any::<Index>(), any::<u8>()), 0..4))
            .prop_map(|(i, p)| Damage::Cut(i, p)),
        1 => any::<Index>().prop_map(Damage::ZeroPage),
        2 => (any::<Index>(), prop::collection::vec((0u8..12, any::<u8>()), 1..4))
            .prop_map(|(i, p)| Damage::PageHeader(i, p)),
        2 => patches().prop_map(Damage::WalPatched),
        1 => any::<Index>().prop_map(Damage::WalCut),
    ]
}

fn patch(bytes: &mut [u8], patches: &[(Index, u8)]) {
    if bytes.is_empty() {
        return;
    }
    for (at, value) in patches {
        let i = at.index(bytes.len());
        bytes[i] = *value;
    }
}

/// Writes the case's files (the main file, and a WAL for the WAL cases).
fn make(template: &Template, path: &Path, damage: &Damage) {
    let mut wal = None;
    let db = match damage {
        Damage::Raw(bytes) => bytes.clone(),
        Damage::Header(bytes) => {
            let mut db = b"SQLite format 3\0".to_vec();
            db.extend(bytes);
            db
        }
        Damage::Patched(patches) => {
            let mut db = template.db.clone();
            patch(&mut db, patches);
            db
        }
        Damage::Cut(len, patches) => {
            let mut db = template.db.clone();
            db.truncate(len.index(db.len()));
            patch(&mut db, patches);
            db
        }
        Damage::ZeroPage(page) => {
            let mut db = template.db.clone();
            let start = page.index(db.len() / PAGE) * PAGE;
            db[start..start + PAGE].fill(0);
            db
        }
        Damage::PageHeader(page, patches) => {
            let mut db = template.db.clone();
            let n = page.index(db.len() / PAGE);
            // Page 1 starts with the 100-byte file header.
            let start = n * PAGE + if n == 0 { 100 } else { 0 };
            for (offset, value) in patches {
                db[start + usize::from(*offset)] = *value;
            }
            db
        }
        Damage::WalPatched(patches) => {
            let mut w = template.wal.clone();
            patch(&mut w, patches);
            wal = Some(w);
            template.db_before_wal.clone()
        }
        Damage::WalCut(len) => {
            let mut w = template.wal.clone();
            w.truncate(len.index(w.len()));
            wal = Some(w);
            template.db_before_wal.clone()
        }
    };
    std::fs::write(path, db).unwrap();
    if let Some(wal) = wal {
        std::fs::write(with_suffix(path, "-wal"), wal).unwrap();
    }
}

/// Every read, writes and the sync bookkeeping; errors are fine, panics are not.
fn exercise(store: &mut Store) {
    let space = SpaceName::new(SPACE).unwrap();
    let collection = CollectionName::new(COLLECTION).unwrap();
    let _ = store.get(&key("t1"));
    let _ = store.get(&key("w3"));
    let _ = store.list(&space, &collection, &ListOptions::default());
    let _ = store.outbox_stats();
    let _ = store.outbox_batch(0, 100);
    let _ = store.next_push_batch(100);
    let _ = store.unpushed();
    let _ = store.acked_through();
    let _ = store.mutation_state(3);
    let _ = store.conflicts();
    let _ = store.rejections();
    let _ = store.cursor();
    let _ = store.has_synced();
    let _ = store.last_synced_at();
    let _ = store
        .restoration()
        .bucket(Lifetime::Persistent, &BucketPath::root())
        .keys()
        .count();
    let _ = store.restoration().entry_count();
    let _ = store.put(&key("new"), doc(json!({"x": 1})));
    let _ = store.patch(&key("t1"), doc(json!({"y": 2})));
    let _ = store.delete(&key("t5"));
    let _ = store.requeue_sending();
    let _ = store.retry_rejection(3);
    let _ = store.check_integrity();
}

#[test]
fn store_open_on_damaged_files_returns_ok_or_one_clear_error() {
    let template = Template::new();
    run(300, damage(), |damage| {
        let path = template.case_path();
        make(&template, &path, &damage);
        let before = std::fs::read(&path).unwrap();
        match Store::open(&path, config()) {
            Ok(mut store) => exercise(&mut store),
            Err(e) => {
                let message = e.to_string();
                prop_assert!(
                    !message.is_empty() && !message.contains('\n'),
                    "{message:?}"
                );
                prop_assert!(!matches!(e, StoreError::Busy { .. }), "{message}");
                if matches!(
                    e,
                    StoreError::NotADatabase { .. }
                        | StoreError::ForeignDatabase { .. }
                        | StoreError::TooNew { .. }
                ) {
                    prop_assert_eq!(
                        std::fs::read(&path).unwrap(),
                        before,
                        "a refused file was modified ({})",
                        message
                    );
                }
            }
        }
        Ok(())
    });
}

#[test]
fn the_template_opens_with_its_data_and_its_wal() {
    let template = Template::new();
    let path = template.case_path();
    make(&template, &path, &Damage::WalPatched(Vec::new()));
    let store = Store::open(&path, config()).unwrap();
    assert!(
        store.get(&key("w4")).unwrap().is_some(),
        "the WAL was replayed"
    );
    assert!(store.get(&key("t4")).unwrap().is_none());
    assert!(store.get(&key("from-server")).unwrap().is_some());
    assert_eq!(store.rejections().unwrap().len(), 1);
    assert_eq!(store.acked_through().unwrap(), 4);
    store.check_integrity().unwrap();
}

/// Found by `store_open_on_damaged_files_returns_ok_or_one_clear_error`: one byte of the
/// schema SQL changed made SQLite quote the whole multi-line `CREATE TABLE` in its error,
/// so the store's error (and the CLI's `error:` line) spanned nine lines.
#[test]
fn a_damaged_schema_gives_a_one_line_error() {
    let template = Template::new();
    let path = template.case_path();
    let mut db = template.db.clone();
    let at = db
        .windows(17)
        .position(|w| w == b"TABLE restoration")
        .expect("the schema SQL is in the file");
    db[at + 5] = b'[';
    std::fs::write(&path, db).unwrap();
    let err = Store::open(&path, config()).expect_err("a damaged schema");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let message = err.to_string();
    assert!(!message.contains('\n'), "{message}");
    assert!(message.contains("malformed database schema"), "{message}");
}

// ---- restoration ------------------------------------------------------------------------

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(|bits| Value::Float(f64::from_bits(bits))),
        any::<String>().prop_map(Value::String),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            prop::collection::btree_map(any::<String>(), inner, 0..6).prop_map(Value::Map),
        ]
    })
}

/// An encoding with one byte flipped, inserted or removed.
#[derive(Debug, Clone)]
enum ByteEdit {
    Set(Index, u8),
    Insert(Index, u8),
    Remove(Index),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Set(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        any::<Index>().prop_map(ByteEdit::Remove),
    ]
}

fn near_valid_encoding() -> impl Strategy<Value = Vec<u8>> {
    (arb_value(), prop::collection::vec(byte_edit(), 0..3)).prop_map(|(v, edits)| {
        let mut bytes = codec::encode(&v).unwrap();
        for edit in edits {
            match edit {
                ByteEdit::Set(i, b) => {
                    let i = i.index(bytes.len());
                    bytes[i] = b;
                }
                ByteEdit::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), b),
                ByteEdit::Remove(i) => {
                    bytes.remove(i.index(bytes.len()));
                }
            }
        }
        bytes
    })
}

/// Deeply nested lists around the codec's depth limit, as bytes.
fn deep_encoding() -> impl Strategy<Value = Vec<u8>> {
    (0usize..80).prop_map(|depth| {
        let mut bytes = vec![codec::FORMAT_VERSION];
        bytes.extend(std::iter::repeat_n([0x07u8, 0x01], depth).flatten());
        bytes.push(0x00);
        bytes
    })
}

fn decode_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256),
        4 => near_valid_encoding(),
        1 => deep_encoding(),
    ]
}

#[test]
fn restoration_decode_never_panics_and_what_it_accepts_is_canonical() {
    run(1000, decode_input(), |bytes| {
        if let Ok(value) = codec::decode(&bytes) {
            let again = codec::encode(&value)
                .map_err(|e| TestCaseError::fail(format!("decoded but not encodable: {e}")))?;
            prop_assert_eq!(&again, &bytes, "not canonical: {:?}", value);
            prop_assert_eq!(codec::encoded_len(&value), Ok(bytes.len()));
        }
        Ok(())
    });
}

fn row_name() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z]{1,8}(/[a-z]{1,8}){0,3}",
        "[a-z._-]{0,20}",
        "\\PC{0,12}",
        (0usize..400).prop_map(|n| "x".repeat(n)),
    ]
}

fn stored_row() -> impl Strategy<Value = StoredEntry> {
    (
        any::<bool>(),
        row_name(),
        row_name(),
        row_name(),
        prop_oneof![Just(0u32), Just(1), Just(2), any::<u32>()],
        prop_oneof![
            decode_input(),
            arb_value().prop_map(|v| codec::encode(&v).unwrap())
        ],
    )
        .prop_map(|(persistent, path, key, tag, version, bytes)| StoredEntry {
            lifetime: if persistent {
                Lifetime::Persistent
            } else {
                Lifetime::Session
            },
            path,
            key,
            tag,
            version,
            bytes,
        })
}

#[test]
fn restoration_load_keeps_or_reports_every_row_and_never_panics() {
    let schema = RestorationSchema::builder()
        .register("nav", 2)
        .migration("nav", 1, |v| Ok(Value::List(vec![v])))
        .build()
        .unwrap();
    let limits = RestorationLimits {
        max_entry_bytes: 512,
        max_tree_bytes: 4096,
    };
    run(300, prop::collection::vec(stored_row(), 0..12), |rows| {
        let n = rows.len();
        let loaded = RestorationTree::load(rows, &schema, limits);
        let duplicates = loaded
            .issues
            .iter()
            .filter(|i| i.kind == IssueKind::Duplicate)
            .count();
        let deletes = loaded
            .repairs
            .iter()
            .filter(|r| matches!(r, Repair::Delete { .. }))
            .count();
        prop_assert_eq!(deletes + duplicates, loaded.issues.len());
        prop_assert!(loaded.issues.len() <= n);
        prop_assert_eq!(
            loaded.tree.entry_count() + loaded.issues.len(),
            n,
            "every row is kept or reported"
        );
        Ok(())
    });
}
