//! A PostgreSQL schema of its own for one test, dropped afterwards.
//!
//! Tests that need PostgreSQL read `TIDESYNC_TEST_DATABASE_URL` (`.ci/run` sets it to the
//! machine's server, `postgres://postgres@127.0.0.1:5432/test`). Without it,
//! [`TestDatabase::create`] returns `None` and says once per test binary, on the terminal,
//! which tests were skipped and why. With it, a server that cannot be reached fails the test:
//! a CI run never passes by skipping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

/// The environment variable naming the test server.
pub const TEST_DATABASE_URL: &str = "TIDESYNC_TEST_DATABASE_URL";

/// A fresh schema in the test database; [`TestDatabase::url`] points a connection at it.
/// Dropping it drops the schema and everything in it.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    schema: String,
    url: String,
}

impl TestDatabase {
    /// A new schema named after `label`, or `None` when no test database is configured.
    ///
    /// # Panics
    /// When `TIDESYNC_TEST_DATABASE_URL` is set but the server cannot be reached or the
    /// schema cannot be created: that is a broken test setup, not a skip.
    pub fn create(label: &str) -> Option<TestDatabase> {
        let Ok(admin_url) = std::env::var(TEST_DATABASE_URL) else {
            skipped();
            return None;
        };
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let label: String = label
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(24)
            .collect::<String>()
            .to_ascii_lowercase();
        let schema = format!(
            "ts_test_{label}_{}_{}_{:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        run(&admin_url, &format!("CREATE SCHEMA \"{schema}\""));
        let separator = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{separator}options=-csearch_path%3D{schema}");
        Some(TestDatabase {
            admin_url,
            schema,
            url,
        })
    }

    /// The connection URL of the schema.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema's name.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The URL of the database itself (no schema set): for tests that inspect it.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// Runs `sql` in the schema (on a connection of its own).
    pub fn execute(&self, sql: &str) {
        run(&self.url, sql);
    }

    /// The rows of `sql` run in the schema, each value as text (`NULL` as `None`).
    pub fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        on_runtime(&self.url, sql, |client, sql| async move {
            let messages = client.simple_query(&sql).await?;
            Ok(messages
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_owned))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect())
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Bounded: a connection of the test still holding locks in the schema must not hang
        // the drop (the schema is then left behind, which is only litter).
        let sql = format!(
            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.schema
        );
        let url = self.admin_url.clone();
        // Never panic in drop (it may run during a panic): a schema left behind is only
        // litter in the test database.
        let _ = std::panic::catch_unwind(move || run(&url, &sql));
    }
}

fn skipped() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use std::io::Write;
        // Straight to the terminal: the test harness captures `eprintln!`.
        let _ = writeln!(
            std::io::stderr(),
            "note: {TEST_DATABASE_URL} is not set: the PostgreSQL tests of this binary pass \
             without running (set it to postgres://postgres@127.0.0.1:5432/test to run them)"
        );
    });
}

fn run(url: &str, sql: &str) {
    on_runtime(url, sql, |client, sql| async move {
        client.batch_execute(&sql).await?;
        Ok(())
    });
}

/// Connects to `url` on a runtime of its own (callable from sync and async tests alike) and
/// runs `f`.
fn on_runtime<T, F, Fut>(url: &str, sql: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(tokio_postgres::Client, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
{
    let (url, sql) = (url.to_owned(), sql.to_owned());
    let shown = sql.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start a runtime for the test database: {e}"));
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| {
                    panic!("{TEST_DATABASE_URL} is set but PostgreSQL cannot be reached: {e}")
                });
            let driver = tokio::spawn(connection);
            let out = f(client, sql).await;
            driver.abort();
            out
        })
    })
    .join()
    .unwrap_or_else(|_| panic!("the test database helper panicked"))
    .unwrap_or_else(|e| panic!("test database: {shown}: {e}"))
}
