//! `pull_page`: arbitrary bytes as the body of a pull response, the one piece of server
//! output a client stores. Parsing, `into_checked` and `Store::apply_pull` must return `Ok`
//! or an `Err`, never panic.
//!
//! Asserted: a page that passes the check applies (the store has nothing more to refuse),
//! and every live record it brought reads back as a document; a page whose raw form fails
//! the check is refused by the store too (it checks raw pages itself), changing nothing.
#![no_main]

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tidesync_protocol::{PullResponse, RawChange, RecordKey};
use tidesync_store::{Durability, SessionRestore, Store, StoreConfig};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Mutex<Store>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = StoreConfig {
            durability: Durability::Normal,
            busy_timeout: Duration::from_millis(50),
            session: SessionRestore::Keep,
            ..StoreConfig::default()
        };
        let store = Store::open(&dir.path().join("pull.db"), config).expect("open");
        Fixture {
            _dir: dir,
            store: Mutex::new(store),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(page) = serde_json::from_slice::<PullResponse<RawChange>>(data) else {
        return;
    };
    let mut store = fixture()
        .store
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match page.clone().into_checked() {
        Ok(checked) => {
            store
                .apply_pull(&checked)
                .expect("a checked page applies");
            for change in &page.changes {
                let key = RecordKey::new(
                    change.space.clone(),
                    change.collection.clone(),
                    change.id.clone(),
                );
                store.get(&key).expect("a stored record reads back");
            }
        }
        Err(_) => {
            let before = store.cursor().expect("cursor");
            assert!(store.apply_pull(&page).is_err(), "the store checks raw pages");
            assert_eq!(store.cursor().expect("cursor"), before, "a refused page changes nothing");
        }
    }
});
