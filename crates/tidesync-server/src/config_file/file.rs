//! The shape of `tidesync.toml`, as read: every key optional, every value that resolution
//! judges kept with its span ([`Spanned`]) so a bad value is reported at its line.
//!
//! Values are read as the TOML types an operator writes (integers as `i64`, durations and
//! names as strings) and judged in [`super::resolve`], so that a zero limit, a bad policy
//! name and a bad duration are all reported together; only a value of the wrong TOML type
//! or an unknown key stops the reading (`deny_unknown_fields` everywhere: a typo is an error
//! naming the key, never a setting silently ignored).
//!
//! A section defined by another module (its type deriving `Deserialize` with
//! `deny_unknown_fields`) joins as one `Option<Spanned<Section>>` field here, one call to
//! `Resolver::judge` in resolution (its validation as the check, `Resolver::base_dir` for
//! relative paths; an error lands on the section's line), one field of [`super::ServerConfig`]
//! and its keys in `show` (secrets through `Toml::secret`).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::admin::AdminConfig;
use crate::auth::jwt::JwtConfig;
use crate::horizon::HorizonConfig;
use crate::schemas::SchemaSource;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    pub listen: Option<Spanned<String>>,
    pub data_dir: Option<Spanned<String>>,
    pub database_url: Option<Spanned<String>>,
    pub db_pool_size: Option<Spanned<i64>>,
    pub log_format: Option<Spanned<String>>,
    pub compression: Option<Spanned<bool>>,
    pub max_clock_skew: Option<Spanned<String>>,
    pub policies: Option<PoliciesSection>,
    pub limits: Option<LimitsSection>,
    pub auth: Option<AuthSection>,
    pub compat: Option<CompatSection>,
    pub horizon: Option<Spanned<HorizonConfig>>,
    #[serde(default)]
    pub schemas: BTreeMap<Spanned<String>, Spanned<SchemaSource>>,
    pub admin: Option<Spanned<AdminConfig>>,
}

/// `[compat]`: the RxDB and WatermelonDB protocols (docs/compat.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompatSection {
    #[serde(default)]
    pub rxdb_primary_keys: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// `[auth]`: how bearers other than API tokens are verified.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthSection {
    pub jwt: Option<Spanned<JwtConfig>>,
}

/// `[policies]`: conflict policies.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PoliciesSection {
    pub default: Option<Spanned<String>>,
    #[serde(default)]
    pub collections: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// `[limits]`: the fields of [`crate::Limits`] but `compression` (a top-level key).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsSection {
    pub max_body_bytes: Option<Spanned<i64>>,
    pub max_mutations_per_push: Option<Spanned<i64>>,
    pub max_doc_bytes: Option<Spanned<i64>>,
    pub max_doc_depth: Option<Spanned<i64>>,
    pub max_spaces_per_pull: Option<Spanned<i64>>,
    pub default_pull_limit: Option<Spanned<i64>>,
    pub max_pull_limit: Option<Spanned<i64>>,
    pub max_event_streams: Option<Spanned<i64>>,
    pub max_header_bytes: Option<Spanned<i64>>,
    pub heartbeat: Option<Spanned<String>>,
    pub header_read_timeout: Option<Spanned<String>>,
    pub body_read_timeout: Option<Spanned<String>>,
}
