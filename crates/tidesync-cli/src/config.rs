//! `tidesync config check FILE`, and the configuration resolution `serve` shares with it:
//! every problem goes to stderr as `FILE:LINE:COL: message` with its hint, then one
//! `error:` line sums them up.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use tidesync_server::config_file::{Overrides, Resolved};

/// `tidesync config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a server configuration file: print the configuration `tidesync serve --config
    /// FILE` would run with (every default shown, secrets hidden, the environment applied),
    /// or every error with its line, and exit non-zero.
    Check(CheckArgs),
}

/// Arguments of `config check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The TOML file to check.
    file: PathBuf,
}

/// Runs a `config` command.
pub fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Check(args) => {
            let resolved = resolve(Some(&args.file), &Overrides::default())?;
            print!("{}", resolved.to_toml());
            Ok(())
        }
    }
}

/// Resolves the configuration with the process's environment. On failure the diagnostics
/// are printed to stderr and the error is their one-line summary.
pub fn resolve(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Resolved> {
    let env = |name: &str| std::env::var(name).ok();
    tidesync_server::config_file::resolve(file, overrides, &env).map_err(|errors| {
        for diagnostic in &errors.diagnostics {
            eprintln!("{diagnostic}");
        }
        anyhow::anyhow!("{}", errors.summary())
    })
}
