//! `tidesync`: run the sync server (`tidesync serve`) and issue API tokens
//! (`tidesync token create`).
//!
//! Errors end the process with one line on stderr (`error: ...`) and exit code 1; bad flags
//! are reported by clap with exit code 2. This is the only crate that uses `anyhow`.

mod serve;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Default data directory, relative to the working directory.
const DEFAULT_DATA_DIR: &str = "./tidesync-data";
/// The server database inside the data directory.
const DATABASE_FILE: &str = "server.db";

#[derive(Debug, Parser)]
#[command(
    name = "tidesync",
    version,
    about = "tidesync offline-first sync server"
)]
struct Cli {
    /// Log format on stderr. Verbosity comes from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sync server.
    Serve(serve::ServeArgs),
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
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
    #[arg(long = "data-dir", env = "TIDESYNC_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    path: PathBuf,
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
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Token {
            command: TokenCommand::Create(args),
        } => token::create(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
