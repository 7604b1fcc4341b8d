#![allow(clippy::unwrap_used)]

use super::*;
use crate::restoration::{EntryKey, RestorationError, SizeSubject};

use Lifetime::{Persistent, Session};

fn path(p: &str) -> BucketPath {
    BucketPath::parse(p).unwrap()
}

fn write(lifetime: Lifetime, p: &str, key: &str, value: impl Into<Value>) -> RestorationChange {
    RestorationChange::Write {
        lifetime,
        path: path(p),
        key: EntryKey::new(key).unwrap(),
        entry: Entry::new("test.entry", 1, value),
    }
}

fn remove(lifetime: Lifetime, p: &str, key: &str) -> RestorationChange {
    RestorationChange::Remove {
        lifetime,
        path: path(p),
        key: EntryKey::new(key).unwrap(),
    }
}

fn commit(tree: &mut RestorationTree, changes: Vec<RestorationChange>) {
    let mut batch = tree.batch();
    for change in changes {
        batch.plan(change).unwrap();
    }
    let planned = batch.finish();
    tree.apply_all(planned);
}

/// The size of a `test.entry` entry holding a string of `n` ASCII bytes (n < 128).
fn string_entry_size(key: &str, n: usize) -> usize {
    entry_size(1 + 1 + 1 + n, key, "test.entry")
}

#[test]
fn written_entries_are_readable_through_buckets() {
    let mut tree = RestorationTree::default();
    commit(
        &mut tree,
        vec![
            write(Session, "checkout", "draft", "2 apples"),
            write(Session, "checkout/address", "zip", 10115),
            write(Session, "", "tab", 2),
            write(Persistent, "settings", "theme", "dark"),
        ],
    );
    let root = tree.root(Session);
    let draft = root.child("checkout").read("draft").unwrap();
    assert_eq!((draft.tag.as_str(), draft.version), ("test.entry", 1));
    assert_eq!(draft.value, Value::from("2 apples"));
    assert_eq!(
        root.child("checkout").child("address").value("zip"),
        Some(&Value::Int(10115))
    );
    assert_eq!(root.value("tab"), Some(&Value::Int(2)));
    assert_eq!(root.children(), ["checkout"]);
    assert_eq!(root.child("checkout").children(), ["address"]);
    assert_eq!(root.child("checkout").keys().collect::<Vec<_>>(), ["draft"]);
    assert!(root.child("settings").is_empty(), "lifetimes are separate");
    assert_eq!(
        tree.root(Persistent).child("settings").value("theme"),
        Some(&Value::from("dark"))
    );
    assert_eq!(tree.entry_count(), 4);
    let expected = string_entry_size("draft", 8)
        + entry_size(10, "zip", "test.entry")
        + entry_size(10, "tab", "test.entry")
        + string_entry_size("theme", 4);
    assert_eq!(tree.total_bytes(), expected);
}

#[test]
fn missing_and_invalid_children_read_as_empty() {
    let mut tree = RestorationTree::default();
    commit(&mut tree, vec![write(Session, "a", "k", 1)]);
    let root = tree.root(Session);
    assert!(root.child("nope").is_empty());
    assert!(root.child("nope").read("k").is_none());
    let invalid = root.child("a/b");
    assert!(invalid.is_empty() && invalid.path().is_none());
    assert!(root.try_child("a/b").is_err());
    assert_eq!(
        root.try_child("a").unwrap().value("k"),
        Some(&Value::Int(1))
    );
}

#[test]
fn children_are_distinct_even_when_names_sort_around_the_slash() {
    let mut tree = RestorationTree::default();
    // '-' sorts before '/', so "a/b-x" lies between "a/b" and "a/b/c" in path order.
    commit(
        &mut tree,
        vec![
            write(Session, "a/b", "k", 1),
            write(Session, "a/b-x", "k", 1),
            write(Session, "a/b/c", "k", 1),
            write(Session, "a-z", "k", 1),
        ],
    );
    assert_eq!(tree.root(Session).child("a").children(), ["b", "b-x"]);
    assert_eq!(tree.root(Session).children(), ["a", "a-z"]);
}

#[test]
fn overwrite_and_remove_keep_the_accounting_right() {
    let mut tree = RestorationTree::default();
    commit(
        &mut tree,
        vec![
            write(Session, "f", "x", "aaaa"),
            write(Session, "f", "y", "b"),
        ],
    );
    commit(&mut tree, vec![write(Session, "f", "x", "aa")]);
    assert_eq!(tree.entry_count(), 2);
    assert_eq!(
        tree.total_bytes(),
        string_entry_size("x", 2) + string_entry_size("y", 1)
    );
    commit(
        &mut tree,
        vec![remove(Session, "f", "x"), remove(Session, "f", "missing")],
    );
    assert_eq!(
        tree.root(Session).child("f").keys().collect::<Vec<_>>(),
        ["y"]
    );
    commit(&mut tree, vec![remove(Session, "f", "y")]);
    assert!(
        tree.root(Session).is_empty(),
        "an emptied bucket disappears"
    );
    assert_eq!((tree.entry_count(), tree.total_bytes()), (0, 0));
}

#[test]
fn remove_bucket_takes_descendants_but_not_look_alikes() {
    let mut tree = RestorationTree::default();
    commit(
        &mut tree,
        vec![
            write(Session, "checkout", "draft", 1),
            write(Session, "checkout/address", "zip", 1),
            write(Session, "checkout-old", "draft", 1),
            write(Persistent, "checkout", "draft", 1),
        ],
    );
    commit(
        &mut tree,
        vec![RestorationChange::RemoveBucket {
            lifetime: Session,
            path: path("checkout"),
        }],
    );
    assert!(tree.root(Session).child("checkout").is_empty());
    assert_eq!(tree.root(Session).children(), ["checkout-old"]);
    assert!(tree
        .root(Persistent)
        .child("checkout")
        .read("draft")
        .is_some());
    assert_eq!(tree.entry_count(), 2);
}

#[test]
fn clear_lifetime_keeps_the_other_lifetime() {
    let mut tree = RestorationTree::default();
    commit(
        &mut tree,
        vec![write(Session, "a", "k", 1), write(Persistent, "b", "k", 2)],
    );
    let persistent_bytes = tree.root(Persistent).child("b").entry_size("k").unwrap();
    let planned = tree
        .plan(RestorationChange::ClearLifetime(Session))
        .unwrap();
    assert_eq!(planned, PlannedChange::ClearLifetime(Session));
    tree.apply(planned);
    assert!(tree.root(Session).is_empty());
    assert_eq!(
        tree.root(Persistent).child("b").value("k"),
        Some(&Value::Int(2))
    );
    assert_eq!(
        (tree.entry_count(), tree.total_bytes()),
        (1, persistent_bytes)
    );
}

#[test]
fn planning_does_not_change_the_tree_until_applied() {
    let mut tree = RestorationTree::default();
    let planned = tree.plan(write(Session, "a", "k", "v")).unwrap();
    assert!(
        tree.root(Session).is_empty(),
        "a rolled-back transaction leaves no trace"
    );
    let PlannedChange::Write(w) = &planned else {
        panic!("expected a write")
    };
    assert_eq!(
        (w.lifetime(), w.path(), w.key(), w.tag(), w.version()),
        (Session, "a", "k", "test.entry", 1)
    );
    assert_eq!(
        codec::decode(w.bytes()).unwrap(),
        Value::from("v"),
        "the store persists exactly these bytes"
    );
    assert_eq!(w.size(), string_entry_size("k", 1));
    tree.apply(planned);
    assert_eq!(
        tree.root(Session).child("a").value("k"),
        Some(&Value::from("v"))
    );
}

#[test]
fn invalid_writes_are_rejected() {
    let tree = RestorationTree::default();
    let with_entry = |entry: Entry| RestorationChange::Write {
        lifetime: Session,
        path: BucketPath::root(),
        key: EntryKey::new("k").unwrap(),
        entry,
    };
    let err = tree
        .plan(with_entry(Entry::new("bad tag", 1, 1)))
        .unwrap_err();
    assert!(matches!(err, RestorationError::InvalidTag { .. }), "{err}");
    let err = tree.plan(with_entry(Entry::new("t", 0, 1))).unwrap_err();
    assert!(err.to_string().contains("versions start at 1"), "{err}");
    let mut deep = Value::Null;
    for _ in 0..=codec::MAX_DEPTH {
        deep = Value::List(vec![deep]);
    }
    let err = tree.plan(with_entry(Entry::new("t", 1, deep))).unwrap_err();
    assert!(matches!(err, RestorationError::Encode(_)), "{err}");
}

fn small_limits(entry: usize, tree: usize) -> RestorationTree {
    RestorationTree::new(RestorationLimits {
        max_entry_bytes: entry,
        max_tree_bytes: tree,
    })
}

#[test]
fn entry_limit_is_inclusive_and_explains_itself() {
    let exact = string_entry_size("draft", 20);
    let tree = small_limits(exact, 1 << 20);
    assert!(
        tree.plan(write(Session, "checkout", "draft", "x".repeat(20)))
            .is_ok(),
        "exactly at the limit is fine"
    );
    let err = tree
        .plan(write(Session, "checkout", "draft", "x".repeat(21)))
        .unwrap_err();
    let RestorationError::TooLarge { what, size, limit } = &err else {
        panic!("{err}")
    };
    assert_eq!((*size, *limit), (exact + 1, exact));
    assert!(
        matches!(what, SizeSubject::Entry { path, key, .. } if path == "checkout" && key == "draft")
    );
    assert!(
        err.to_string()
            .starts_with("restoration entry checkout/draft is"),
        "{err}"
    );
    assert!(
        err.to_string().contains("keep large data in records"),
        "{err}"
    );
}

#[test]
fn tree_limit_is_cumulative_within_a_batch() {
    let one = string_entry_size("a", 10);
    let tree = small_limits(1000, 3 * one);
    let mut batch = tree.batch();
    batch.plan(write(Session, "", "a", "x".repeat(10))).unwrap();
    batch
        .plan(write(Persistent, "", "a", "x".repeat(10)))
        .unwrap();
    batch
        .plan(write(Session, "p", "a", "x".repeat(10)))
        .unwrap();
    assert_eq!(
        batch.total_bytes(),
        3 * one,
        "exactly at the tree limit is fine"
    );
    let err = batch
        .plan(write(Session, "q", "a", "x".repeat(10)))
        .unwrap_err();
    assert!(
        matches!(err, RestorationError::TooLarge { what: SizeSubject::Tree, size, .. } if size == 4 * one)
    );
    // Overwriting, removing and clearing inside the batch make room again.
    batch.plan(write(Session, "", "a", "x".repeat(10))).unwrap();
    batch.plan(remove(Session, "p", "a")).unwrap();
    batch
        .plan(write(Session, "q", "a", "x".repeat(10)))
        .unwrap();
    let err = batch
        .plan(write(Session, "r", "a", "x".repeat(10)))
        .unwrap_err();
    assert!(matches!(err, RestorationError::TooLarge { .. }));
    batch
        .plan(RestorationChange::ClearLifetime(Session))
        .unwrap();
    assert_eq!(
        batch.total_bytes(),
        one,
        "only the persistent entry is left"
    );
    batch
        .plan(write(Session, "r", "a", "x".repeat(10)))
        .unwrap();
    batch
        .plan(write(Session, "s", "a", "x".repeat(10)))
        .unwrap();
    let planned = batch.finish();
    assert_eq!(planned.len(), 9, "failed plans are not part of the batch");
    let mut tree = tree;
    tree.apply_all(planned);
    assert_eq!(tree.total_bytes(), 3 * one);
    assert_eq!(tree.root(Session).children(), ["r", "s"]);
}

#[test]
fn remove_bucket_in_a_batch_frees_committed_and_planned_entries() {
    let one = string_entry_size("a", 10);
    let mut tree = small_limits(1000, 2 * one);
    commit(&mut tree, vec![write(Session, "x", "a", "x".repeat(10))]);
    let mut batch = tree.batch();
    batch
        .plan(write(Session, "x/y", "a", "x".repeat(10)))
        .unwrap();
    batch
        .plan(RestorationChange::RemoveBucket {
            lifetime: Session,
            path: path("x"),
        })
        .unwrap();
    assert_eq!(batch.total_bytes(), 0);
    // Removing again frees nothing twice.
    batch
        .plan(RestorationChange::RemoveBucket {
            lifetime: Session,
            path: path("x"),
        })
        .unwrap();
    batch
        .plan(write(Session, "x", "a", "x".repeat(10)))
        .unwrap();
    batch
        .plan(write(Session, "z", "a", "x".repeat(10)))
        .unwrap();
    assert_eq!(batch.total_bytes(), 2 * one);
    let planned = batch.finish();
    tree.apply_all(planned);
    assert_eq!(tree.total_bytes(), 2 * one);
    assert!(tree.root(Session).child("x").child("y").is_empty());
}

#[test]
fn shrinking_write_is_allowed_even_over_the_limit() {
    // A tree over its limit (possible only via apply of stale plans) can still shrink.
    let mut tree = small_limits(1000, 1000);
    let big = tree.plan(write(Session, "", "a", "x".repeat(100))).unwrap();
    let mut tight = small_limits(1000, 50);
    tight.apply(big);
    assert!(tight.plan(write(Session, "", "a", "x".repeat(10))).is_ok());
    assert!(tight.plan(write(Session, "", "b", "x")).is_err());
    tree.apply(tree.plan(write(Session, "", "a", "y")).unwrap());
    assert_eq!(tree.entry_count(), 1);
}

#[test]
fn lifetime_round_trips_its_storage_form() {
    for l in Lifetime::ALL {
        assert_eq!(Lifetime::from_i64(l.as_i64()), Some(l));
    }
    assert_eq!(Lifetime::from_i64(2), None);
}

mod accounting {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn arb_change() -> impl Strategy<Value = RestorationChange> {
        let lifetime = prop_oneof![Just(Session), Just(Persistent)];
        let p = prop_oneof![Just(""), Just("a"), Just("a/b"), Just("a-b"), Just("c")];
        let key = prop_oneof![Just("x"), Just("y")];
        prop_oneof![
            4 => (lifetime.clone(), p.clone(), key.clone(), 0usize..40)
                .prop_map(|(l, p, k, n)| write(l, p, k, "v".repeat(n))),
            2 => (lifetime.clone(), p.clone(), key).prop_map(|(l, p, k)| remove(l, p, k)),
            1 => (lifetime.clone(), p).prop_map(|(l, p)| RestorationChange::RemoveBucket { lifetime: l, path: path(p) }),
            1 => lifetime.prop_map(RestorationChange::ClearLifetime),
        ]
    }

    proptest! {
        /// What a batch predicts is exactly what the tree holds after applying it, and the tree
        /// never exceeds its limit.
        #[test]
        fn planned_totals_match_applied_totals(
            batches in proptest::collection::vec(proptest::collection::vec(arb_change(), 1..8), 1..6)
        ) {
            let limit = 4 * string_entry_size("x", 39);
            let mut tree = small_limits(1000, limit);
            for changes in batches {
                let mut batch = tree.batch();
                for change in changes {
                    let _ = batch.plan(change);
                }
                let predicted = batch.total_bytes();
                let planned = batch.finish();
                tree.apply_all(planned);
                prop_assert_eq!(tree.total_bytes(), predicted);
                prop_assert!(tree.total_bytes() <= limit);
                let (mut bytes, mut count) = (0, 0);
                for l in Lifetime::ALL {
                    for (p, k, _) in tree.entries(l) {
                        bytes += tree.bucket(l, &path(p)).entry_size(k).unwrap();
                        count += 1;
                    }
                }
                prop_assert_eq!((bytes, count), (tree.total_bytes(), tree.entry_count()));
            }
        }
    }
}
