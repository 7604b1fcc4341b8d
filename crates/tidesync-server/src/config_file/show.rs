//! A resolved configuration printed as TOML: every key with the value in force, its origin
//! as a comment where it is not the file, secrets hidden. The output is itself a valid
//! configuration file that resolves to the same configuration (for the same environment
//! and flags; paths are printed absolute).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use toml::Value;

use super::{Origin, Resolved, StorageConfig};
use crate::auth::jwt::JwtConfig;

/// Column at which origin comments start.
const COMMENT_COLUMN: usize = 40;

impl Resolved {
    /// The configuration as TOML (see the module docs).
    pub fn to_toml(&self) -> String {
        let c = &self.config;
        let mut out = Toml::new(self);
        match &self.file {
            Some(path) => out.comment(&format!(
                "The configuration `tidesync serve --config {}` runs with.",
                path.display()
            )),
            None => out.comment("The configuration `tidesync serve` runs with."),
        }
        out.comment(
            "Every key is shown; a comment says where a value came from unless it is the file.",
        );
        out.key("listen", c.listen.text.as_str().into());
        match &c.storage {
            StorageConfig::Sqlite { data_dir } => {
                out.key("data_dir", path_value(data_dir));
            }
            StorageConfig::Postgres { url, pool_size } => {
                out.secret(
                    "database_url",
                    &format!(
                        "PostgreSQL {} (password and options not shown)",
                        url.target()
                    ),
                );
                out.key("db_pool_size", i64::from(*pool_size).into());
            }
        }
        out.key("log_format", c.log_format.name().into());
        out.key("compression", c.limits.compression.into());
        out.key("max_clock_skew", duration_value(c.rules.max_clock_skew));

        out.table("policies");
        out.key("policies.default", c.rules.policies.default.name().into());
        out.table("policies.collections");
        if c.rules.policies.per_collection.is_empty() {
            out.comment("none: every collection has the default policy");
        }
        for (collection, policy) in &c.rules.policies.per_collection {
            out.key(
                &format!("policies.collections.{}", collection.as_str()),
                policy.name().into(),
            );
        }

        let l = &c.limits;
        out.table("limits");
        let counts = [
            ("max_body_bytes", l.max_body_bytes),
            ("max_mutations_per_push", l.max_mutations_per_push),
            ("max_doc_bytes", l.max_doc_bytes),
            ("max_doc_depth", l.max_doc_depth),
            ("max_spaces_per_pull", l.max_spaces_per_pull),
            ("default_pull_limit", l.default_pull_limit as usize),
            ("max_pull_limit", l.max_pull_limit as usize),
            ("max_event_streams", l.max_event_streams),
            ("max_header_bytes", l.max_header_bytes),
        ];
        for (key, n) in counts {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            out.key(&format!("limits.{key}"), n.into());
        }
        for (key, d) in [
            ("heartbeat", l.heartbeat),
            ("header_read_timeout", l.header_read_timeout),
            ("body_read_timeout", l.body_read_timeout),
        ] {
            out.key(&format!("limits.{key}"), duration_value(d));
        }
        out.table("compat.rxdb_primary_keys");
        if c.compat.rxdb_primary_keys.is_empty() {
            out.comment("none: every RxDB collection keeps its primary key in `id`");
        }
        for (collection, field) in &c.compat.rxdb_primary_keys {
            out.key(
                &format!("compat.rxdb_primary_keys.{collection}"),
                field.as_str().into(),
            );
        }
        out.table("horizon");
        out.key(
            "horizon.retain_deleted",
            duration_value(c.horizon.retain_deleted),
        );
        out.key(
            "horizon.prune_interval",
            duration_value(c.horizon.prune_interval),
        );
        out.key(
            "horizon.prune_batch",
            i64::from(c.horizon.prune_batch).into(),
        );
        for (collection, source) in &c.schema_sources {
            let table = format!("schemas.{collection}");
            out.table(&table);
            if let Some(file) = &source.file {
                out.key(&format!("{table}.file"), path_value(file));
            }
            if let Some(json) = &source.json {
                out.key(&format!("{table}.json"), json.as_str().into());
            }
        }
        match &c.jwt {
            Some(jwt) => show_jwt(&mut out, &jwt.config),
            None => {
                out.text.push('\n');
                out.comment("[auth.jwt] not set: only API tokens (tsk_…) are accepted");
            }
        }
        match &c.admin {
            Some(_) => {
                out.table("admin");
                out.secret("admin.token", "set: the dashboard is on at /admin");
            }
            None => {
                out.text.push('\n');
                out.comment("[admin] not set: the dashboard at /admin is off");
            }
        }
        out.text
    }
}

/// A duration as humantime writes it ("1m", "15s", "1s 500ms"), which it reads back.
/// The `[auth.jwt]` keys in force, the secret hidden.
fn show_jwt(out: &mut Toml<'_>, jwt: &JwtConfig) {
    out.table("auth.jwt");
    out.key("auth.jwt.algorithm", jwt.algorithm.as_str().into());
    if jwt.secret.is_some() {
        out.secret("auth.jwt.secret", "set");
    }
    for (key, path) in [
        ("public_key_file", &jwt.public_key_file),
        ("jwks_file", &jwt.jwks_file),
    ] {
        if let Some(path) = path {
            out.key(&format!("auth.jwt.{key}"), path_value(path));
        }
    }
    for (key, value) in [
        ("jwks_url", &jwt.jwks_url),
        ("issuer", &jwt.issuer),
        ("audience", &jwt.audience),
    ] {
        if let Some(value) = value {
            out.key(&format!("auth.jwt.{key}"), value.as_str().into());
        }
    }
    out.key("auth.jwt.leeway", duration_value(jwt.leeway));
    out.key("auth.jwt.user_claim", jwt.user_claim.as_str().into());
    let spaces = jwt.spaces.iter().map(|s| Value::from(s.as_str())).collect();
    out.key("auth.jwt.spaces", Value::Array(spaces));
    if let Some(claim) = &jwt.spaces_claim {
        out.key("auth.jwt.spaces_claim", claim.as_str().into());
    }
    if jwt.jwks_url.is_some() {
        out.key("auth.jwt.jwks_refresh", duration_value(jwt.jwks_refresh));
        out.key(
            "auth.jwt.jwks_min_refresh",
            duration_value(jwt.jwks_min_refresh),
        );
    }
}

fn duration_value(d: Duration) -> Value {
    humantime::format_duration(d).to_string().into()
}

/// A path, absolute (resolved against the working directory), as a string.
fn path_value(path: &Path) -> Value {
    let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    shown.display().to_string().into()
}

/// The TOML text being written.
struct Toml<'a> {
    resolved: &'a Resolved,
    text: String,
}

impl<'a> Toml<'a> {
    fn new(resolved: &'a Resolved) -> Toml<'a> {
        Toml {
            resolved,
            text: String::new(),
        }
    }

    fn comment(&mut self, line: &str) {
        let _ = writeln!(self.text, "# {line}");
    }

    /// A `[table]` header, after a blank line.
    fn table(&mut self, dotted: &str) {
        let header: Vec<String> = dotted.split('.').map(bare_or_quoted).collect();
        let _ = writeln!(self.text, "\n[{}]", header.join("."));
    }

    /// `key = value` for the dotted key (its last part is written; the table header is
    /// already out), with its origin as a comment.
    fn key(&mut self, dotted: &str, value: Value) {
        let note = match self.resolved.origin(dotted) {
            Origin::File => None,
            Origin::Default => Some("default".to_owned()),
            Origin::Env(name) => Some(format!("from {name}")),
            Origin::Flag(name) => Some(format!("from {name}")),
        };
        self.line(dotted, &value.to_string(), note);
    }

    /// A secret: its value is never written; a placeholder and `description` are.
    fn secret(&mut self, dotted: &str, description: &str) {
        let note = match self.resolved.origin(dotted) {
            Origin::Env(name) | Origin::Flag(name) => format!("from {name}: {description}"),
            Origin::File | Origin::Default => description.to_owned(),
        };
        self.line(dotted, "\"<hidden>\"", Some(note));
    }

    fn line(&mut self, dotted: &str, value: &str, note: Option<String>) {
        let name = dotted.rsplit('.').next().unwrap_or(dotted);
        let line = format!("{} = {value}", bare_or_quoted(name));
        match note {
            Some(note) => {
                let _ = writeln!(self.text, "{line:<COMMENT_COLUMN$} # {note}");
            }
            None => {
                let _ = writeln!(self.text, "{line}");
            }
        }
    }
}

/// A key as TOML writes it: bare when it can be, quoted otherwise.
fn bare_or_quoted(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        Value::String(key.to_owned()).to_string()
    }
}
