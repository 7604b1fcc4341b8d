//! `tidesync token create`: issue an API token straight into the server's database, the
//! SQLite file in `--data-dir` or PostgreSQL with `--database-url` (the server may be
//! running: SQLite serializes the write, PostgreSQL nodes read tokens from the database).

use anyhow::{anyhow, bail, Context};
use clap::Args;
use tidesync_protocol::SpaceName;
use tidesync_server::auth::Grants;
use tidesync_server::storage::postgres::PostgresStorage;
use tidesync_server::storage::sqlite::SqliteStorage;

use crate::{storage_message, DataDir, DatabaseUrl};

/// Flags of `tidesync token create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    data_dir: DataDir,
    #[command(flatten)]
    database_url: DatabaseUrl,
    /// The user the token acts for: 1 to 128 bytes, no control characters.
    #[arg(long, value_parser = parse_user)]
    user: String,
    /// A space the user may read and write (repeatable).
    #[arg(long = "space", value_name = "SPACE")]
    spaces: Vec<SpaceName>,
    /// A space the user may only read (repeatable).
    #[arg(long = "read-only-space", value_name = "SPACE")]
    read_only_spaces: Vec<SpaceName>,
}

/// Longest user name, in bytes (the server's rule).
const MAX_USER_BYTES: usize = 128;

/// A user name the server accepts, checked before the storage is opened (or created).
fn parse_user(user: &str) -> Result<String, String> {
    if user.is_empty() || user.len() > MAX_USER_BYTES || user.chars().any(char::is_control) {
        return Err(format!(
            "a user name is 1 to {MAX_USER_BYTES} bytes without control characters (got {} bytes{})",
            user.len(),
            if user.chars().any(char::is_control) {
                ", with control characters"
            } else {
                ""
            }
        ));
    }
    Ok(user.to_owned())
}

/// Creates the token and prints it once.
pub fn create(args: CreateArgs) -> anyhow::Result<()> {
    if args.spaces.is_empty() && args.read_only_spaces.is_empty() {
        bail!("give the token at least one --space or --read-only-space");
    }
    let grants = Grants {
        user: args.user,
        read: args.read_only_spaces.into_iter().collect(),
        write: args.spaces.into_iter().collect(),
    };
    let token = match args.database_url.get() {
        Some(url) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime
                .block_on(PostgresStorage::create_token_at(url, &grants))
                .map_err(|e| anyhow!("cannot create a token: {}", storage_message(e)))?
        }
        None => {
            let database = args.data_dir.database()?;
            SqliteStorage::create_token_at(&database, &grants)
                .with_context(|| format!("cannot create a token in {}", database.display()))?
        }
    };
    let list = |spaces: &std::collections::BTreeSet<SpaceName>| {
        let names: Vec<&str> = spaces.iter().map(SpaceName::as_str).collect();
        if names.is_empty() {
            "-".to_owned()
        } else {
            names.join(", ")
        }
    };
    println!(
        "token for user {} (read+write: {}; read-only: {}):",
        grants.user,
        list(&grants.write),
        list(&grants.read)
    );
    println!("{token}");
    println!("Store it now: only its hash is kept, it cannot be shown again.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_follow_the_servers_rule() {
        assert!(parse_user("alice").is_ok());
        assert!(parse_user(&"a".repeat(128)).is_ok());
        for bad in ["", "a\nb", "tab\there"] {
            let err = parse_user(bad).unwrap_err();
            assert!(err.contains("1 to 128 bytes"), "{err}");
        }
        assert!(parse_user(&"a".repeat(129)).is_err());
    }
}
