//! The client without a server: write offline, survive a restart, see what waits for the
//! server. Run with `cargo run -p tidesync-client --example local_first [DB_PATH]`.
//!
//! The same database syncs as soon as it is opened with a server (`ClientConfig::new`): the
//! queue below is what the first sync pushes.

use std::error::Error;

use serde_json::json;
use tidesync_client::restoration::{BucketPath, Entry, Lifetime, Value};
use tidesync_client::{
    Client, ClientConfig, CollectionName, Doc, ListOptions, RecordKey, SpaceName, StoreError,
};

fn doc(value: serde_json::Value) -> Doc {
    value.as_object().cloned().unwrap_or_default()
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let path = std::env::args()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(|| dir.path().join("local_first.db"));
    println!("database: {}", path.display());

    let checkout = BucketPath::root().child("checkout")?;
    {
        let client = Client::open(ClientConfig::local(&path))?;
        println!("client id: {}", client.client_id());
        let milk = RecordKey::parse("user:alice", "todos", "milk")?;
        client.put(&milk, doc(json!({"title": "Buy milk", "done": false})))?;
        client.patch(&milk, doc(json!({"done": true})))?;

        // Place an order and clear the draft, atomically: both happen or neither does.
        client.restore_set(
            Lifetime::Persistent,
            &checkout,
            "draft",
            Entry::new("draft", 1, Value::from("2x oat milk")),
        )?;
        client.transaction(|tx| {
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
        client.restore_set(
            Lifetime::Persistent,
            &checkout,
            "draft",
            Entry::new("draft", 1, Value::from("1x bread")),
        )?;
    }

    // "Restart": everything comes back from the file alone.
    let client = Client::open(ClientConfig::local(&path))?;
    let draft = client.restore_get(Lifetime::Persistent, &checkout, "draft");
    println!("restored draft: {:?}", draft.map(|e| e.value));
    let page = client.list(
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
    let status = client.status().ok_or("the client has a status once open")?;
    println!(
        "outbox: {} mutations waiting for the server",
        status.pending
    );
    for entry in client.outbox(0, 100)? {
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
