//! Two devices, one todo list, a flaky network: the whole sync story in one process.
//!
//! ```sh
//! cargo run -p tidesync-client --example two_devices
//! ```
//!
//! What happens:
//! 1. A tidesync server starts in-process on a free loopback port, with its data in a
//!    temporary SQLite file, and issues a token for the user `alice`.
//! 2. Two clients, "laptop" and "phone", open their own databases (temporary directories).
//!    A thread per client prints every status change as it happens.
//! 3. Both are online and synced; the phone goes offline; both edit the same todo list
//!    (different fields of one todo, the same field of another, a new todo each).
//! 4. The laptop syncs; the phone comes back online; they converge. The same-field edit is
//!    a conflict on the phone: it is shown, resolved with a merged document, and both
//!    devices converge again.
//! 5. Both lists are printed side by side and compared: the exit code is 1 if they differ.
//!
//! Every wait has a timeout, so the example ends in a few seconds whatever happens.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidesync_client::{
    BackoffPolicy, Client, ClientConfig, ClientEvent, CollectionName, Doc, ListOptions, Phase,
    Reachability, RecordKey, Resolution, SpaceName, StaticToken, Status, SyncConfig,
};
use tidesync_server::auth::Grants;
use tidesync_server::{EmbeddedServer, MergeRules};

/// The space both devices sync: alice's personal data.
const SPACE: &str = "user:alice";
/// The collection the story edits.
const TODOS: &str = "todos";
/// The longest any step may take before the example gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

fn main() {
    if let Err(e) = run() {
        eprintln!("\nerror: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;

    say("start a server on loopback and two devices, \"laptop\" and \"phone\"");
    let server = EmbeddedServer::sqlite(&dir.path().join("server.db"), MergeRules::default())?;
    let token = server.storage().create_token(&Grants {
        user: "alice".into(),
        read: Default::default(),
        write: [SpaceName::new(SPACE)?].into_iter().collect(),
    })?;
    let url = server.url();
    let laptop = Device::open("laptop", &dir.path().join("laptop"), &url, &token, started)?;
    let phone = Device::open("phone", &dir.path().join("phone"), &url, &token, started)?;

    say("laptop writes two todos; both devices sync");
    laptop.client.put(
        &key("milk")?,
        doc(json!({"title": "Buy milk", "done": false})),
    )?;
    laptop.client.put(
        &key("mom")?,
        doc(json!({"title": "Call mom", "done": false})),
    )?;
    wait_converged(&laptop, &phone)?;

    say("phone goes offline (the app's connectivity hint)");
    phone.client.set_network(Reachability::Offline);
    wait_until("the phone to be offline", || {
        phone.status().is_some_and(|s| s.phase == Phase::Offline)
    })?;

    say("both edit the list: different fields of `milk`, the same field of `mom`, one new todo each");
    laptop
        .client
        .patch(&key("milk")?, doc(json!({"done": true})))?;
    laptop
        .client
        .patch(&key("mom")?, doc(json!({"title": "Call mom on Sunday"})))?;
    laptop.client.put(
        &key("plants")?,
        doc(json!({"title": "Water the plants", "done": false})),
    )?;
    // A few milliseconds later, so the phone's edits carry the later clock stamps and win
    // the last-writer-wins race on `mom.title`.
    std::thread::sleep(Duration::from_millis(5));
    phone
        .client
        .patch(&key("milk")?, doc(json!({"title": "Buy oat milk"})))?;
    phone
        .client
        .patch(&key("mom")?, doc(json!({"title": "Call mom tonight"})))?;
    phone.client.put(
        &key("dentist")?,
        doc(json!({"title": "Book the dentist", "done": false})),
    )?;

    say("the laptop, online, has pushed its 3 edits already; the phone keeps its 3 in its outbox");
    wait_synced(&laptop)?;

    say("phone reconnects: it pushes, pulls the laptop's edits, and both converge");
    phone.client.set_network(Reachability::Online);
    wait_converged(&laptop, &phone)?;

    say("the same-field edit is a conflict on the phone");
    let conflict = phone
        .client
        .conflicts()?
        .into_iter()
        .next()
        .ok_or("the phone should have recorded a conflict on `mom`")?;
    println!("    conflict #{} on {}:", conflict.id, conflict.key);
    for field in &conflict.fields {
        println!(
            "      field {:?}: phone wrote {}, laptop wrote {}, kept: {:?}",
            field.field,
            show(&field.local),
            show(&field.server),
            field.winner
        );
    }

    say("the user merges both titles on the phone; both devices converge again");
    let merged = doc(json!({"title": "Call mom tonight (or Sunday)", "done": false}));
    phone
        .client
        .resolve_conflict(conflict.id, Resolution::Merged(merged))?;
    wait_converged(&laptop, &phone)?;
    if !phone.client.conflicts()?.is_empty() {
        return Err("the conflict should be resolved".into());
    }

    let (on_laptop, on_phone) = (laptop.todos()?, phone.todos()?);
    print_side_by_side(&on_laptop, &on_phone);
    laptop.close();
    phone.close();
    server.stop()?;
    if on_laptop != on_phone {
        return Err("the devices did not converge: their todo lists differ (see above)".into());
    }
    println!(
        "\nboth devices hold the same {} todos ({:.1} s)",
        on_laptop.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---- the devices -------------------------------------------------------------------------

/// A client plus the thread that prints its status changes.
struct Device {
    name: &'static str,
    client: Client,
    printer: JoinHandle<()>,
}

impl Device {
    /// Opens a client in `dir` and starts printing its status changes.
    fn open(
        name: &'static str,
        dir: &Path,
        url: &str,
        token: &str,
        started: Instant,
    ) -> Result<Device> {
        std::fs::create_dir_all(dir)?;
        let mut config = ClientConfig::new(
            dir.join("app.db"),
            url,
            vec![SpaceName::new(SPACE)?],
            Arc::new(StaticToken(token.into())),
        );
        // Short timers so the story moves at demo speed (the defaults suit a phone battery).
        config.sync = SyncConfig {
            backoff: BackoffPolicy {
                base_ms: 50,
                cap_ms: 1_000,
            },
            idle_poll_ms: 2_000,
            stream_retry_ms: 500,
            ..SyncConfig::default()
        };
        config.request_timeout = Duration::from_secs(5);
        let client = Client::open(config)?;
        let events = client.subscribe();
        let printer = std::thread::Builder::new()
            .name(format!("{name}-status"))
            .spawn(move || {
                // Ends when the client is closed (its sender side goes away).
                let mut last = String::new();
                for event in events {
                    if let ClientEvent::Status(status) = event {
                        let line = describe(&status);
                        if line != last {
                            let at = started.elapsed().as_secs_f64();
                            println!("    {at:6.3}s {name:>6} │ {line}");
                            last = line;
                        }
                    }
                }
            })?;
        Ok(Device {
            name,
            client,
            printer,
        })
    }

    fn status(&self) -> Option<Status> {
        self.client.status()
    }

    /// The todo list as this device shows it: id → document.
    fn todos(&self) -> Result<Vec<(String, Value)>> {
        let page = self.client.list(
            &SpaceName::new(SPACE)?,
            &CollectionName::new(TODOS)?,
            &ListOptions::default(),
        )?;
        Ok(page
            .records
            .into_iter()
            .map(|r| (r.key.id.as_str().to_owned(), Value::Object(r.doc)))
            .collect())
    }

    /// Stops syncing, then waits for the printer to drain the last status lines.
    fn close(self) {
        self.client.close();
        if self.printer.join().is_err() {
            eprintln!("the {} status printer panicked", self.name);
        }
    }
}

/// One compact line per status: phase, connectivity, progress, counts, last error.
fn describe(s: &Status) -> String {
    let mut line = format!(
        "{:<11} {:<8}",
        format!("{:?}", s.phase),
        format!("{:?}", s.connectivity).to_lowercase()
    );
    if let Some(up) = s.upload {
        line += &format!(" upload {}/{}", up.done, up.total);
    }
    if let Some(down) = s.download {
        line += &format!(" download {} (+{} left)", down.received, down.remaining);
    }
    line += &format!(" pending {} conflicts {}", s.pending, s.conflicts);
    if s.rejections > 0 {
        line += &format!(" rejections {}", s.rejections);
    }
    if let Some(e) = &s.last_error {
        line += &format!(" error: {:?} {}", e.kind, e.message);
    }
    line
}

// ---- waiting -------------------------------------------------------------------------------

/// Polls `cond` every 10 ms; an error naming `what` after [`STEP_TIMEOUT`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !cond() {
        if Instant::now() > deadline {
            return Err(format!("timed out after {STEP_TIMEOUT:?} waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn wait_synced(device: &Device) -> Result<()> {
    device.client.wait_synced(STEP_TIMEOUT)?;
    Ok(())
}

/// Both synced and showing the same list.
fn wait_converged(a: &Device, b: &Device) -> Result<()> {
    wait_until("both devices to show the same list", || {
        a.client.wait_synced(STEP_TIMEOUT).is_ok()
            && b.client.wait_synced(STEP_TIMEOUT).is_ok()
            && matches!((a.todos(), b.todos()), (Ok(x), Ok(y)) if x == y)
    })
}

// ---- small helpers -------------------------------------------------------------------------

fn say(what: &str) {
    println!("\n== {what}");
}

fn key(id: &str) -> Result<RecordKey> {
    Ok(RecordKey::parse(SPACE, TODOS, id)?)
}

/// A JSON object literal as a document (the literals above are all objects).
fn doc(value: Value) -> Doc {
    match value {
        Value::Object(doc) => doc,
        _ => Doc::new(),
    }
}

fn show(value: &Option<Value>) -> String {
    value.as_ref().map_or("(removed)".into(), Value::to_string)
}

fn print_side_by_side(laptop: &[(String, Value)], phone: &[(String, Value)]) {
    let cell = |list: &[(String, Value)], id: &str| {
        list.iter()
            .find(|(i, _)| i == id)
            .map_or("(missing)".to_owned(), |(_, d)| {
                let done = if d["done"] == json!(true) {
                    "[x]"
                } else {
                    "[ ]"
                };
                format!("{done} {}", d["title"].as_str().unwrap_or("?"))
            })
    };
    let mut ids: Vec<&str> = laptop
        .iter()
        .chain(phone)
        .map(|(id, _)| id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    say("the todo list on each device");
    println!("    {:<8} │ {:<34} │ phone", "id", "laptop");
    println!("    {:─<8}─┼─{:─<34}─┼─{:─<34}", "", "", "");
    for id in ids {
        let (l, p) = (cell(laptop, id), cell(phone, id));
        let mark = if l == p { "" } else { "  ← differs" };
        println!("    {id:<8} │ {l:<34} │ {p}{mark}");
    }
}
