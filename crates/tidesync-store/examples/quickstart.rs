//! The client store on its own: write offline, survive a restart, see what waits for the
//! server. Run with `cargo run -p tidesync-store --example quickstart [DB_PATH]`.

use std::error::Error;

use serde_json::json;
use tidesync_protocol::{CollectionName, Doc, RecordKey, SpaceName};
use tidesync_store::restoration::{BucketPath, Entry, Lifetime, Value};
use tidesync_store::{ListOptions, Store, StoreConfig, StoreError};

fn doc(value: serde_json::Value) -> Doc {
    value.as_object().cloned().unwrap_or_default()
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let path = std::env::args()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(|| dir.path().join("quickstart.db"));
    println!("database: {}", path.display());

    let checkout = BucketPath::root().child("checkout")?;
    {
        let mut store = Store::open(&path, StoreConfig::default())?;
        println!("client id: {}", store.client_id());
        let milk = RecordKey::parse("user:alice", "todos", "milk")?;
        store.put(&milk, doc(json!({"title": "Buy milk", "done": false})))?;
        store.patch(&milk, doc(json!({"done": true})))?;

        // Place an order and clear the draft, atomically: both happen or neither does.
        store.restore_write(
            Lifetime::Persistent,
            &checkout,
            "draft",
            Entry::new("draft", 1, Value::from("2x oat milk")),
        )?;
        store.transaction(|tx| {
            tx.put(
                &RecordKey::parse("user:alice", "orders", "o-1")?,
                doc(json!({"items": ["oat milk", "oat milk"]})),
            )?;
            tx.put(
                &RecordKey::parse("user:alice", "todos", "pay")?,
                doc(json!({"title": "Pay order o-1"})),
            )?;
            tx.restore_remove(Lifetime::Persistent, &checkout, "draft")?;
            Ok::<_, StoreError>(())
        })?;
        // Leave an unsent draft behind, as if the app were killed now.
        store.restore_write(
            Lifetime::Persistent,
            &checkout,
            "draft",
            Entry::new("draft", 1, Value::from("1x bread")),
        )?;
    }

    // "Restart": everything comes back from the file alone.
    let store = Store::open(&path, StoreConfig::default())?;
    let draft = store
        .restoration()
        .root(Lifetime::Persistent)
        .child("checkout")
        .read("draft")
        .cloned();
    println!("restored draft: {:?}", draft.map(|e| e.value));
    let page = store.list(
        &SpaceName::new("user:alice")?,
        &CollectionName::new("todos")?,
        &ListOptions::default(),
    )?;
    for record in &page.records {
        let mark = if record.pending { "pending" } else { "synced" };
        println!(
            "todo {:<6} [{mark}] {}",
            record.key.id,
            serde_json::Value::Object(record.doc.clone())
        );
    }
    let stats = store.outbox_stats()?;
    println!("outbox: {} mutations waiting for the server", stats.pending);
    for entry in store.outbox_batch(0, 100)? {
        let m = &entry.mutation;
        println!(
            "  seq {:>2}  tx {:>2}  {:<6} {}  ({:?})",
            m.seq,
            m.tx,
            m.op.kind(),
            m.key,
            entry.state
        );
    }
    Ok(())
}
