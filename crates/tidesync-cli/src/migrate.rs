//! `tidesync migrate-storage --from DATA_DIR --to postgres://…`: copy an embedded server's
//! data into an empty PostgreSQL database (the copy itself is
//! `tidesync_server::storage::postgres::import`), with a progress bar on a terminal and a
//! summary line at the end.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tidesync_server::storage::postgres::import::{
    import_sqlite, ImportProgress, ImportReport, ImportTable,
};

use crate::storage_message;

/// Flags of `tidesync migrate-storage`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The embedded server's data directory (or its server.db). Stop that server first: the
    /// copy is a snapshot, and later writes to the file would not be in PostgreSQL.
    #[arg(long, value_name = "DATA_DIR")]
    from: PathBuf,
    /// The PostgreSQL database to fill: postgres://USER[:PASSWORD]@HOST:PORT/DATABASE (add
    /// ?options=-csearch_path%3DSCHEMA for a schema of its own). It must hold no tidesync
    /// data; its tables are created if needed.
    #[arg(long, value_name = "URL")]
    to: String,
}

/// Runs the copy and prints what was copied.
pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let bar = Bar::new();
    let result = runtime.block_on(import_sqlite(&args.from, &args.to, |p| bar.update(p)));
    bar.finish();
    let report = result.map_err(|e| anyhow!("{}", storage_message(e)))?;
    println!("{}", summary(&report));
    println!("next: start the nodes with `tidesync serve --database-url URL`");
    Ok(())
}

/// The summary line: `copied 2 spaces, 3 clients, ... from A to PostgreSQL at B`.
fn summary(report: &ImportReport) -> String {
    let counts: Vec<String> = ImportTable::ALL
        .iter()
        // Download horizons exist only where history was pruned: named when there are some.
        .filter(|t| **t != ImportTable::Downloads || report.count(**t) > 0)
        .map(|t| {
            let n = report.count(*t);
            let noun = t.noun();
            // Every noun is a plain plural: "1 record", "2 records".
            let noun = if n == 1 {
                noun.strip_suffix('s').unwrap_or(noun)
            } else {
                noun
            };
            format!("{n} {noun}")
        })
        .collect();
    format!(
        "copied {} from {} to PostgreSQL at {}",
        counts.join(", "),
        report.source.display(),
        report.target
    )
}

/// A progress bar on stderr when it is a terminal; nothing otherwise.
struct Bar(Option<ProgressBar>);

impl Bar {
    fn new() -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "[{elapsed_precise}] {bar:40.cyan/blue} {human_pos}/{human_len} rows ({per_sec}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Bar(Some(bar))
    }

    fn update(&self, progress: ImportProgress) {
        if let Some(bar) = &self.0 {
            bar.set_length(progress.total);
            bar.set_position(progress.done);
            bar.set_message(progress.table.noun());
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_every_table_and_no_password() {
        let report = ImportReport {
            source: PathBuf::from("/data/server.db"),
            target: "alice@db:5432/app".into(),
            spaces: 2,
            clients: 3,
            records: 1200,
            rejected: 1,
            tokens: 4,
            downloads: 1,
        };
        assert_eq!(
            summary(&report),
            "copied 2 spaces, 3 clients, 1200 records, 1 rejection, 4 tokens, 1 download horizon from \
             /data/server.db to PostgreSQL at alice@db:5432/app"
        );
        let none = ImportReport {
            downloads: 0,
            ..report
        };
        assert!(summary(&none)
            .starts_with("copied 2 spaces, 3 clients, 1200 records, 1 rejection, 4 tokens from"));
    }
}
