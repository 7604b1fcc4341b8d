//! `tidesync client --db FILE ...`: read and write a client database, inspect its outbox,
//! conflicts, rejections and restoration state, and sync it with a server.
//!
//! Local commands open the store directly (`tidesync_store::Store`) and need no server;
//! `sync` opens a full `tidesync_client::Client`. Output is human-readable by default and one
//! JSON document with stable field names under `--json`.
//!
//! Modules: `db` (opening the database without creating or changing what the command
//! should not), `keys` (argument parsing), `output`, `records` (put/patch/delete/get/list),
//! `query` (queries and `--watch`), `queue` (pending/conflicts/rejections), `restore`,
//! `status`, `sync`.

mod db;
mod keys;
mod output;
mod query;
mod queue;
mod records;
mod restore;
mod status;
mod sync;

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use tidesync_protocol::SpaceName;
use tidesync_store::query::Indexes;
use tidesync_store::{SessionRestore, StoreConfig};

use output::Output;

/// Flags of `tidesync client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The client database file. Only put, patch, restore set and sync create it (in a
    /// directory that exists); the other commands need it. A database that cannot be written
    /// can still be read.
    #[arg(long, env = "TIDESYNC_CLIENT_DB")]
    db: PathBuf,
    /// The server's base URL (for `sync`), e.g. http://127.0.0.1:8787.
    #[arg(long, env = "TIDESYNC_SERVER")]
    server: Option<String>,
    /// The API token (for `sync`), from `tidesync token create`.
    #[arg(long, env = "TIDESYNC_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A space to sync (repeatable; for `sync`).
    #[arg(long = "space", value_name = "SPACE")]
    spaces: Vec<SpaceName>,
    /// Machine output: one JSON document with stable field names.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Replace a record: put SPACE/COLLECTION/ID '{"title":"milk"}' (or - for standard
    /// input, @FILE for a file). Creates the database if there is none (its directory must
    /// exist).
    Put {
        /// SPACE/COLLECTION/ID
        key: String,
        /// The document, a JSON object: inline, - to read it from standard input, or @FILE
        /// to read it from a file (for documents too long for the command line).
        #[arg(value_name = "DOC|-|@FILE")]
        doc: String,
    },
    /// Merge-patch a record (RFC 7396; null removes a field). The patch may be - (standard
    /// input) or @FILE.
    Patch {
        /// SPACE/COLLECTION/ID
        key: String,
        /// The patch, a JSON object: inline, - to read it from standard input, or @FILE to
        /// read it from a file.
        #[arg(value_name = "PATCH|-|@FILE")]
        patch: String,
    },
    /// Delete a record.
    Delete {
        /// SPACE/COLLECTION/ID
        key: String,
    },
    /// Replace many records of one collection: import SPACE/COLLECTION @FILE (or - for
    /// standard input), one JSON line {"id": ID, "doc": {...}} per record, written as puts
    /// in transactions of 1,000 records (each syncs all or nothing). Every line is checked
    /// before anything is written. Creates the database if there is none.
    Import {
        /// SPACE/COLLECTION
        collection: String,
        /// JSON lines: - to read them from standard input, or @FILE to read them from a file.
        #[arg(value_name = "-|@FILE")]
        lines: String,
    },
    /// Print a record from the local view.
    Get {
        /// SPACE/COLLECTION/ID
        key: String,
    },
    /// List a collection in id order.
    List {
        /// SPACE/COLLECTION
        collection: String,
        /// Start after this id.
        #[arg(long)]
        after: Option<String>,
        /// Page size (1 to 10,000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Query a collection: query SPACE/COLLECTION --where '{"done": false}' --sort due.
    /// Selectors are the Mango subset of docs/queries.md.
    Query {
        /// SPACE/COLLECTION
        collection: String,
        /// A selector, e.g. '{"project": "p1", "due": {"$lt": 20}}'; - reads it from
        /// standard input, @FILE from a file.
        #[arg(long = "where", value_name = "JSON|-|@FILE")]
        selector: Option<String>,
        /// A sort key, FIELD or FIELD:desc (repeatable; ties by id).
        #[arg(long, value_name = "FIELD[:desc]")]
        sort: Vec<String>,
        /// Page size (1 to 10,000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Continue after a page (its "more with --after" cursor).
        #[arg(long, value_name = "CURSOR")]
        after: Option<String>,
        /// Only these fields, comma separated (dotted paths reach into objects).
        #[arg(long, value_name = "A,B.C")]
        fields: Option<String>,
        /// Print how many records match instead.
        #[arg(long, conflicts_with_all = ["explain", "watch"])]
        count: bool,
        /// Print SQLite's plan (does a declared index serve it?).
        #[arg(long, conflicts_with = "watch")]
        explain: bool,
        /// Print each new result until interrupted (syncing too, given --server, --token
        /// and --space).
        #[arg(long)]
        watch: bool,
    },
    /// The outbox: mutations not yet confirmed by the server.
    Pending {
        /// Show at most this many.
        #[arg(long, default_value_t = 1_000)]
        limit: usize,
    },
    /// Unresolved conflicts (`conflicts resolve ID keep-local|keep-server`).
    Conflicts {
        #[command(subcommand)]
        action: Option<ConflictAction>,
    },
    /// Mutations the server refused (`rejections retry SEQ`, `rejections discard SEQ`).
    Rejections {
        #[command(subcommand)]
        action: Option<RejectionAction>,
    },
    /// The restoration tree (`restore set BUCKET/KEY VALUE`, `restore remove BUCKET/KEY`).
    Restore {
        #[command(subcommand)]
        action: Option<RestoreAction>,
    },
    /// Local counts: pending, conflicts, rejections, last synced, cursor.
    Status,
    /// Sync with --server for the --space(s) until idle or --timeout.
    Sync {
        /// Seconds to wait before giving up.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
enum ConflictAction {
    /// Settle a conflict.
    Resolve {
        /// The conflict id (from `conflicts`).
        id: i64,
        /// Which side wins.
        #[arg(value_enum)]
        keep: Keep,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Keep {
    /// The local values win every contested field.
    Local,
    /// The server's values win every contested field.
    Server,
}

#[derive(Debug, Subcommand)]
enum RejectionAction {
    /// Queue the rejected transaction containing SEQ again.
    Retry {
        /// A seq from `rejections`.
        seq: u64,
    },
    /// Forget the rejected transaction containing SEQ.
    Discard {
        /// A seq from `rejections`.
        seq: u64,
    },
}

#[derive(Debug, Subcommand)]
enum RestoreAction {
    /// Write an entry: BUCKET/KEY (or KEY for the root) and a JSON value.
    Set {
        /// e.g. checkout/draft
        path: String,
        /// A JSON value (objects become maps, arrays lists): inline, - to read it from
        /// standard input, or @FILE to read it from a file.
        #[arg(value_name = "VALUE|-|@FILE")]
        value: String,
        /// Session lifetime instead of persistent.
        #[arg(long)]
        session: bool,
        /// The entry's type tag.
        #[arg(long, default_value = "cli.value")]
        tag: String,
    },
    /// Remove an entry.
    Remove {
        /// e.g. checkout/draft
        path: String,
        /// Session lifetime instead of persistent.
        #[arg(long)]
        session: bool,
    },
}

/// Runs a client command.
pub fn run(args: ClientArgs) -> anyhow::Result<()> {
    let out = Output { json: args.json };
    let db = args.db.as_path();
    match args.command {
        ClientCommand::Put { key, doc } => records::put(db, &key, &doc, out),
        ClientCommand::Patch { key, patch } => records::patch(db, &key, &patch, out),
        ClientCommand::Delete { key } => records::delete(db, &key, out),
        ClientCommand::Import { collection, lines } => {
            records::import(db, &collection, &lines, out)
        }
        ClientCommand::Get { key } => records::get(db, &key, out),
        ClientCommand::List {
            collection,
            after,
            limit,
        } => records::list(db, &collection, after.as_deref(), limit, out),
        ClientCommand::Query {
            collection,
            selector,
            sort,
            limit,
            after,
            fields,
            count,
            explain,
            watch,
        } => {
            let query = query::QueryArgs {
                collection,
                selector,
                sort,
                limit,
                after,
                fields,
            };
            if watch {
                let sync = match (args.server, args.token) {
                    (Some(server), Some(token)) if !args.spaces.is_empty() => Some(query::Sync {
                        server,
                        token,
                        spaces: args.spaces,
                    }),
                    (None, None) => None,
                    _ => bail!(
                        "to sync while watching, give --server, --token and at least one --space"
                    ),
                };
                return query::watch(db, &query, sync, out);
            }
            let mode = match (count, explain) {
                (true, _) => query::Mode::Count,
                (_, true) => query::Mode::Explain,
                _ => query::Mode::Page,
            };
            query::run(db, &query, mode, out)
        }
        ClientCommand::Pending { limit } => queue::pending(db, limit, out),
        ClientCommand::Conflicts { action: None } => queue::conflicts(db, out),
        ClientCommand::Conflicts {
            action: Some(ConflictAction::Resolve { id, keep }),
        } => queue::resolve(db, id, matches!(keep, Keep::Local), out),
        ClientCommand::Rejections { action: None } => queue::rejections(db, out),
        ClientCommand::Rejections {
            action: Some(RejectionAction::Retry { seq }),
        } => queue::retry(db, seq, out),
        ClientCommand::Rejections {
            action: Some(RejectionAction::Discard { seq }),
        } => queue::discard(db, seq, out),
        ClientCommand::Restore { action: None } => restore::show(db, out),
        ClientCommand::Restore {
            action:
                Some(RestoreAction::Set {
                    path,
                    value,
                    session,
                    tag,
                }),
        } => restore::set(db, &path, &value, session, &tag, out),
        ClientCommand::Restore {
            action: Some(RestoreAction::Remove { path, session }),
        } => restore::remove(db, &path, session, out),
        ClientCommand::Status => status::show(db, out),
        ClientCommand::Sync { timeout } => {
            let (Some(server), Some(token)) = (args.server, args.token) else {
                bail!("sync needs --server URL and --token TOKEN (or TIDESYNC_SERVER, TIDESYNC_TOKEN)");
            };
            if args.spaces.is_empty() {
                bail!("sync needs at least one --space");
            }
            sync::run(db, &server, &token, args.spaces, timeout, out)
        }
    }
}

/// The store configuration the CLI opens a database with: an inspection tool, not an app
/// launch, so the file's session restoration state and the app's indexes are kept.
fn store_config() -> StoreConfig {
    StoreConfig {
        session: SessionRestore::Keep,
        indexes: Indexes::Keep,
        ..StoreConfig::default()
    }
}
