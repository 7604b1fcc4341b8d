//! `tidesync`: run the sync server (`tidesync serve`, optionally from a `--config` file
//! that `tidesync config check` checks), issue API tokens (`tidesync token create`), move
//! an embedded server's data into PostgreSQL (`tidesync migrate-storage`), watch the whole
//! offline-to-online story (`tidesync demo`), and inspect or sync a client database
//! (`tidesync client`).
//!
//! Errors end the process with one line on stderr (`error: ...`) and exit code 1; bad flags
//! give one `error: ...` line too, with exit code 2. This is the only crate that uses
//! `anyhow`. What it does not do: no sync logic of its own; every command drives the
//! library crates.

mod client;
mod config;
mod demo;
mod migrate;
mod serve;
mod table;
mod time;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use tidesync_server::config_file::{LogFormat, ENV_DATABASE_URL, ENV_DATA_DIR};

/// Default data directory, relative to the working directory (the server's default too).
const DEFAULT_DATA_DIR: &str = tidesync_server::config_file::DEFAULT_DATA_DIR;
/// The server database inside the data directory.
const DATABASE_FILE: &str = "server.db";

#[derive(Debug, Parser)]
#[command(
    name = "tidesync",
    version,
    about = "tidesync: offline-first sync engine (server, demo, client tools)"
)]
struct Cli {
    /// Log format on stderr: text (default) or json; for `serve`, over the config file's
    /// `log_format`. Verbosity comes from RUST_LOG (default: info).
    #[arg(
        long,
        global = true,
        value_name = "FORMAT",
        value_parser = PossibleValuesParser::new(["text", "json"]).try_map(|s| s.parse::<LogFormat>())
    )]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sync server.
    Serve(serve::ServeArgs),
    /// Check a server configuration file.
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// The whole story in one command: a server and clients that edit offline, conflict, get
    /// rejected, get killed and reopened, reconnect and converge.
    Demo(demo::DemoArgs),
    /// Read, write and sync a client database.
    Client(client::ClientArgs),
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Copy an embedded server's data (its --data-dir) into an empty PostgreSQL database, so
    /// clients carry on with their cursors against `serve --database-url`.
    MigrateStorage(migrate::MigrateArgs),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a new API token for a user and the spaces it may use.
    Create(token::CreateArgs),
}

/// The data directory flag shared by every command.
#[derive(Debug, Clone, clap::Args)]
struct DataDir {
    /// Where the server keeps its database.
    #[arg(long = "data-dir", env = ENV_DATA_DIR, default_value = DEFAULT_DATA_DIR)]
    path: PathBuf,
}

/// The PostgreSQL flag shared by `serve` and `token create`. Its `Debug` hides the URL (it
/// may hold a password).
#[derive(Clone, clap::Args)]
struct DatabaseUrl {
    /// Keep the server's data in PostgreSQL instead of the SQLite file in --data-dir:
    /// postgres://USER[:PASSWORD]@HOST:PORT/DATABASE (add ?options=-csearch_path%3DSCHEMA for
    /// a schema of its own). --data-dir is then ignored.
    #[arg(
        long = "database-url",
        env = ENV_DATABASE_URL,
        value_name = "URL",
        hide_env_values = true
    )]
    url: Option<String>,
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.url.as_ref().map(|_| "<hidden>");
        f.debug_struct("DatabaseUrl").field("url", &shown).finish()
    }
}

impl DatabaseUrl {
    /// The URL, if one was given (an empty environment variable counts as none).
    fn get(&self) -> Option<&str> {
        self.url.as_deref().filter(|u| !u.trim().is_empty())
    }
}

/// A storage error's message without the "storage unavailable:" prefix: the CLI's own
/// `error:` line says it already.
fn storage_message(e: tidesync_server::storage::StorageError) -> String {
    use tidesync_server::storage::StorageError;
    match e {
        StorageError::Unavailable(m) | StorageError::Internal(m) => m,
        other => other.to_string(),
    }
}

impl DataDir {
    /// Creates the directory if needed and returns the database path inside it.
    fn database(&self) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(&self.path).map_err(|e| {
            anyhow::anyhow!("cannot create data directory {}: {e}", self.path.display())
        })?;
        Ok(self.path.join(DATABASE_FILE))
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return flag_error(err),
    };
    // The server logs at info, starting once its configuration (which may name the format)
    // is resolved; the demo and the client commands keep stderr for their own output unless
    // RUST_LOG asks for more.
    let default_level = match cli.command {
        Command::Serve(_) => None,
        Command::Demo(_) => Some("error"),
        Command::Token { .. }
        | Command::Client(_)
        | Command::MigrateStorage(_)
        | Command::Config { .. } => Some("off"),
    };
    if let Some(level) = default_level {
        init_logging(cli.log_format.unwrap_or_default(), level);
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(args, cli.log_format),
        Command::Config { command } => config::run(command),
        Command::Demo(args) => demo::run(args),
        Command::Client(args) => client::run(args),
        Command::Token {
            command: TokenCommand::Create(args),
        } => token::create(args),
        Command::MigrateStorage(args) => migrate::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&chain_text(&err)));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined with ": ", each said once. Some library errors print
/// their source in their own message and return it as the source too ("could not read X:
/// Is a directory (os error 21)" caused by "Is a directory (os error 21)"): a cause whose text
/// the message already holds is skipped.
fn chain_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// `text` on one line: a database's DETAIL and HINT lines are joined with "; ".
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Help and version go out as clap prints them; any other flag error becomes one line.
fn flag_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => err.exit(),
        _ => {
            let text = err.render().to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("error: {first} (see --help)");
            ExitCode::from(2)
        }
    }
}

/// Starts logging to stderr in `format`, at RUST_LOG's level or `default_level`.
fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Repeats(std::io::Error);

    impl std::fmt::Display for Repeats {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "could not read x.db: {}", self.0)
        }
    }

    impl std::error::Error for Repeats {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::other("Is a directory (os error 21)");
        let err = anyhow::Error::new(Repeats(io)).context("cannot open x.db");
        assert_eq!(
            chain_text(&err),
            "cannot open x.db: could not read x.db: Is a directory (os error 21)"
        );
        let err = anyhow::anyhow!("disk gone").context("cannot sync");
        assert_eq!(chain_text(&err), "cannot sync: disk gone");
    }
}
