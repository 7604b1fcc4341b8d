#![allow(clippy::unwrap_used)]

use super::*;
use crate::restoration::{PlannedChange, RestorationChange, Value};

use Lifetime::{Persistent, Session};

fn row(
    lifetime: Lifetime,
    path: &str,
    key: &str,
    tag: &str,
    version: u32,
    value: &Value,
) -> StoredEntry {
    StoredEntry {
        lifetime,
        path: path.to_owned(),
        key: key.to_owned(),
        tag: tag.to_owned(),
        version,
        bytes: codec::encode(value).unwrap(),
    }
}

/// "draft" v1 is a string, v2 a map `{"text": s}`.
fn schema() -> RestorationSchema {
    RestorationSchema::builder()
        .register("draft", 2)
        .migration("draft", 1, |v| match v {
            Value::String(s) => Ok(Value::Map([("text".to_owned(), Value::String(s))].into())),
            other => Err(format!("expected a string, got {}", other.type_name())),
        })
        .build()
        .unwrap()
}

fn kinds(loaded: &Loaded) -> Vec<(&str, IssueKind)> {
    loaded
        .issues
        .iter()
        .map(|i| (i.key.as_str(), i.kind))
        .collect()
}

#[test]
fn mixed_rows_load_into_the_right_tree_issues_and_repairs() {
    let current = Value::Map([("text".to_owned(), Value::from("now"))].into());
    let mut corrupt = row(Session, "checkout", "corrupt", "draft", 2, &current);
    corrupt.bytes.truncate(7);
    let rows = vec![
        row(Session, "checkout", "current", "draft", 2, &current),
        row(Session, "checkout", "old", "draft", 1, &Value::from("then")),
        corrupt,
        row(Session, "checkout", "future", "draft", 3, &current),
        row(Session, "checkout", "bad-old", "draft", 1, &Value::Int(1)),
        row(
            Persistent,
            "nav",
            "stack",
            "nav.stack",
            9,
            &Value::List(vec![Value::from("home")]),
        ),
        row(Persistent, "a//b", "badpath", "t", 1, &Value::Null),
        row(Persistent, "", "bad/key", "t", 1, &Value::Null),
        row(
            Persistent,
            "",
            "badtag",
            "no spaces allowed",
            1,
            &Value::Null,
        ),
        row(Persistent, "", "zero", "t", 0, &Value::Null),
        row(Session, "checkout", "current", "draft", 2, &Value::Null),
    ];
    let loaded = RestorationTree::load(rows, &schema(), RestorationLimits::default());

    let checkout = loaded.tree.root(Session).child("checkout");
    assert_eq!(checkout.keys().collect::<Vec<_>>(), ["current", "old"]);
    assert_eq!(checkout.value("current"), Some(&current));
    let old = checkout.read("old").unwrap();
    assert_eq!(
        old.version, 2,
        "migrated entries are kept at the current version"
    );
    assert_eq!(old.value.get("text"), Some(&Value::from("then")));
    let nav = loaded
        .tree
        .root(Persistent)
        .child("nav")
        .read("stack")
        .unwrap();
    assert_eq!(nav.version, 9, "unregistered tags pass through");
    assert_eq!(loaded.tree.entry_count(), 3);

    assert_eq!(
        kinds(&loaded),
        [
            ("corrupt", IssueKind::Undecodable),
            ("future", IssueKind::TooNew),
            ("bad-old", IssueKind::MigrationFailed),
            ("badpath", IssueKind::InvalidPath),
            ("bad/key", IssueKind::InvalidKey),
            ("badtag", IssueKind::InvalidTag),
            ("zero", IssueKind::InvalidVersion),
            ("current", IssueKind::Duplicate),
        ]
    );
    let future = &loaded.issues[1];
    assert!(
        future.message.contains("newer app version"),
        "{}",
        future.message
    );
    assert!(
        loaded.issues[0]
            .message
            .starts_with("undecodable value: map key length 4 at byte 3"),
        "{}",
        loaded.issues[0].message
    );
    assert!(loaded.issues[2]
        .message
        .contains("expected a string, got int"));

    let rewrites: Vec<_> = loaded
        .repairs
        .iter()
        .filter_map(|r| match r {
            Repair::Rewrite {
                key,
                version,
                bytes,
                tag,
                ..
            } => Some((key.as_str(), tag.as_str(), *version, bytes)),
            Repair::Delete { .. } => None,
        })
        .collect();
    assert_eq!(rewrites.len(), 1);
    let (key, tag, version, bytes) = rewrites[0];
    assert_eq!((key, tag, version), ("old", "draft", 2));
    assert_eq!(
        &codec::decode(bytes).unwrap(),
        &old.value,
        "the rewrite stores the migrated value"
    );

    let deletes: Vec<&str> = loaded
        .repairs
        .iter()
        .filter_map(|r| match r {
            Repair::Delete { key, .. } => Some(key.as_str()),
            Repair::Rewrite { .. } => None,
        })
        .collect();
    assert_eq!(
        deletes,
        ["corrupt", "future", "bad-old", "badpath", "bad/key", "badtag", "zero"],
        "duplicates get no delete: it would hit the kept row"
    );
}

#[test]
fn loaded_sizes_match_planned_sizes() {
    let value = Value::from("then");
    let loaded = RestorationTree::load(
        vec![row(Session, "", "k", "nav.stack", 1, &value)],
        &schema(),
        RestorationLimits::default(),
    );
    let planned = RestorationTree::default()
        .plan(RestorationChange::Write {
            lifetime: Session,
            path: BucketPath::root(),
            key: EntryKey::new("k").unwrap(),
            entry: Entry::new("nav.stack", 1, value),
        })
        .unwrap();
    let PlannedChange::Write(w) = planned else {
        panic!("expected a write")
    };
    assert_eq!(loaded.tree.total_bytes(), w.size());
}

#[test]
fn limits_drop_entries_instead_of_failing_the_load() {
    let v = Value::from("x".repeat(20));
    let one = entry_size(codec::encoded_len(&v).unwrap(), "a", "t");
    let limits = RestorationLimits {
        max_entry_bytes: one,
        max_tree_bytes: 2 * one,
    };
    let rows = vec![
        row(Session, "", "a", "t", 1, &Value::from("x".repeat(21))),
        row(Session, "p", "a", "t", 1, &v),
        row(Session, "q", "a", "t", 1, &v),
        row(Session, "r", "a", "t", 1, &v),
    ];
    let loaded = RestorationTree::load(rows, &RestorationSchema::default(), limits);
    assert_eq!(loaded.tree.root(Session).children(), ["p", "q"]);
    assert_eq!(
        loaded.tree.total_bytes(),
        2 * one,
        "exactly at the limit is kept"
    );
    let issues: Vec<_> = loaded
        .issues
        .iter()
        .map(|i| (i.path.as_str(), i.kind))
        .collect();
    assert_eq!(
        issues,
        [("", IssueKind::EntryTooLarge), ("r", IssueKind::TreeFull)]
    );
    assert!(
        loaded.issues[1]
            .message
            .contains("restoration state (all entries)"),
        "{}",
        loaded.issues[1].message
    );
    assert_eq!(loaded.repairs.len(), 2, "dropped rows are deleted");
}

#[test]
fn missing_migration_drops_old_entries() {
    let schema = RestorationSchema::builder()
        .register("form", 3)
        .migration("form", 2, Ok)
        .build()
        .unwrap();
    let loaded = RestorationTree::load(
        vec![
            row(Session, "", "ancient", "form", 1, &Value::Null),
            row(Session, "", "recent", "form", 2, &Value::Null),
        ],
        &schema,
        RestorationLimits::default(),
    );
    assert_eq!(kinds(&loaded), [("ancient", IssueKind::MissingMigration)]);
    assert_eq!(
        loaded.tree.root(Session).read("recent").map(|e| e.version),
        Some(3)
    );
}

#[test]
fn garbage_rows_never_panic() {
    use rand::{Rng, SeedableRng};
    let seed = 0x7e5e_u64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let rows: Vec<StoredEntry> = (0..500)
        .map(|i| {
            let len = rng.random_range(0..24);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if let Some(b) = bytes.first_mut() {
                *b = 1;
            }
            StoredEntry {
                lifetime: if i % 2 == 0 { Session } else { Persistent },
                path: ["", "a", "a/b", "/", "a\u{0}"][i % 5].to_owned(),
                key: format!("k{}", i % 37),
                tag: ["draft", "t", "", "x y"][i % 4].to_owned(),
                version: rng.random_range(0..4),
                bytes,
            }
        })
        .collect();
    let loaded = RestorationTree::load(rows, &schema(), RestorationLimits::default());
    assert_eq!(
        loaded.tree.entry_count() + loaded.issues.len(),
        500,
        "seed {seed}: every row is kept or reported"
    );
}
