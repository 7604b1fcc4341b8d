//! Flags, environment, file and defaults into one [`ServerConfig`], every problem collected.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tidesync_protocol::CollectionName;
use toml::Spanned;

use super::diagnostic::{Diagnostics, SourceText};
use super::file::{CompatSection, ConfigFile, LimitsSection, PoliciesSection};
use super::{
    ConfigErrors, DatabaseUrl, Diagnostic, JwtAuth, ListenAddr, Location, LogFormat, Origin,
    Overrides, Resolved, ServerConfig, StorageConfig, DEFAULT_DATA_DIR, DEFAULT_DB_POOL_SIZE,
    ENV_ADMIN_TOKEN, ENV_DATABASE_URL, ENV_DATA_DIR, MAX_DB_POOL_SIZE,
};
use crate::admin::{AdminConfig, AdminToken};
use crate::auth::jwt::JwtVerifier;
use crate::schemas::{SchemaSource, SchemaSources, Schemas};
use crate::{CompatSettings, Limits, MergeRules, Policies, Policy};

/// Deepest `max_doc_depth` accepted: a document nests inside a push body, and clients and
/// the server parse JSON with serde_json, which stops at 128 levels.
const MAX_DOC_DEPTH: i64 = 100;

/// Resolves the configuration: `overrides` (flags) over the environment (`env` looks a
/// variable up; an empty value counts as unset) over the file at `path` (if any) over the
/// defaults. Returns every problem found, or the configuration.
pub fn resolve(
    path: Option<&Path>,
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved, ConfigErrors> {
    let errors = |diagnostics| ConfigErrors {
        file: path.map(Path::to_path_buf),
        diagnostics,
    };
    let (source, file, file_keys) = match path {
        Some(path) => {
            let source = read(path).map_err(|d| errors(vec![d]))?;
            let (file, keys) = parse(&source).map_err(|d| errors(vec![d]))?;
            (source, file, keys)
        }
        None => (
            SourceText::default(),
            ConfigFile::default(),
            BTreeSet::new(),
        ),
    };
    let env = |name: &'static str| env(name).filter(|v| !v.trim().is_empty());
    let mut r = Resolver {
        source: &source,
        diagnostics: Diagnostics::default(),
        overridden: BTreeMap::new(),
    };
    let listen = r.listen(file.listen, overrides);
    let storage = r.storage(
        file.data_dir,
        file.database_url,
        file.db_pool_size,
        overrides,
        &env,
    );
    let policies = r.policies(file.policies.unwrap_or_default(), overrides);
    let max_clock_skew = r.pick(
        "max_clock_skew",
        overrides.max_clock_skew.map(|v| (v, "--max-clock-skew-ms")),
        file.max_clock_skew,
        |r, s| r.duration("max_clock_skew", s, true),
        MergeRules::default().max_clock_skew,
    );
    let log_format = r.pick(
        "log_format",
        overrides.log_format.map(|v| (v, "--log-format")),
        file.log_format,
        |r, s| {
            r.judge(s, |s| {
                s.parse::<LogFormat>().map_err(|e| {
                    Problem::new(
                        e,
                        "text for people reading a terminal, json for a log collector",
                    )
                })
            })
        },
        LogFormat::Text,
    );
    let mut limits = r.limits(file.limits.unwrap_or_default());
    limits.compression = r.pick(
        "compression",
        overrides.compression.map(|v| (v, "--no-compression")),
        file.compression,
        |_, v| Some(v.into_inner()),
        Limits::default().compression,
    );
    let (schemas, schema_sources) = r.schemas(file.schemas);
    let compat = r.compat(file.compat.unwrap_or_default(), overrides);
    let horizon = file
        .horizon
        .and_then(|section| {
            r.judge(section, |horizon| {
                horizon.validate().map(|()| horizon).map_err(|e| {
                    Problem::new(
                        format!("[horizon]: {e}"),
                        "see docs/operations.md, \"History horizon\"",
                    )
                })
            })
        })
        .unwrap_or_default();
    let jwt = file.auth.and_then(|auth| auth.jwt).and_then(|section| {
        let base = r.base_dir().to_path_buf();
        r.judge(section, |config| {
            let config = config.relative_to(&base);
            let verifier = JwtVerifier::new(&config).map_err(|e| {
                Problem::new(
                    format!("[auth.jwt]: {e}"),
                    "see docs/operations.md, \"JWT auth\", for each setting with examples",
                )
            })?;
            Ok(JwtAuth { config, verifier })
        })
    });
    let admin = r.admin(file.admin, overrides, &env);
    if !r.diagnostics.list.is_empty() {
        let mut list = r.diagnostics.list;
        // In the order of the file, then the environment.
        list.sort_by_key(|d| match &d.at {
            Location::File { line, column, .. } => (0, *line, *column),
            Location::WholeFile(_) => (0, 0, 0),
            Location::Env(_) => (1, 0, 0),
        });
        return Err(errors(list));
    }
    Ok(Resolved {
        config: ServerConfig {
            listen,
            storage,
            rules: MergeRules {
                policies,
                max_clock_skew,
                schemas,
            },
            schema_sources,
            compat,
            horizon,
            limits,
            log_format,
            jwt,
            admin,
        },
        file: path.map(Path::to_path_buf),
        overridden: r.overridden,
        file_keys,
    })
}

fn read(path: &Path) -> Result<SourceText, Diagnostic> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(SourceText {
            path: path.to_path_buf(),
            text,
        }),
        Err(e) => Err(Diagnostic {
            at: Location::WholeFile(path.to_path_buf()),
            message: format!("cannot read the configuration file: {e}"),
            hint: Some(match e.kind() {
                std::io::ErrorKind::NotFound => "check the path (a relative one is relative to the working directory); tidesync.example.toml in the repository is a commented example".into(),
                std::io::ErrorKind::PermissionDenied => "make the file readable by the user the server runs as".into(),
                _ => "the configuration file must be a readable UTF-8 TOML file".into(),
            }),
        }),
    }
}

/// Reads the TOML, and the dotted key of every value the file sets: a syntax error, an
/// unknown key or a wrong type stops here.
fn parse(source: &SourceText) -> Result<(ConfigFile, BTreeSet<String>), Diagnostic> {
    let diagnostic = |e: toml::de::Error| {
        let at = match e.span() {
            Some(span) => source.locate(&span),
            None => source.locate(&(0..0)),
        };
        let (message, hint) = explain(e.message());
        Diagnostic { at, message, hint }
    };
    let file = toml::from_str(&source.text).map_err(diagnostic)?;
    let table: toml::Table = toml::from_str(&source.text).map_err(diagnostic)?;
    let mut keys = BTreeSet::new();
    dotted_keys(&table, "", &mut keys);
    Ok((file, keys))
}

/// The dotted keys of every value that is not a table, inline tables included.
fn dotted_keys(table: &toml::Table, prefix: &str, keys: &mut BTreeSet<String>) {
    for (key, value) in table {
        let dotted = format!("{prefix}{key}");
        match value {
            toml::Value::Table(inner) => dotted_keys(inner, &format!("{dotted}."), keys),
            _ => {
                keys.insert(dotted);
            }
        }
    }
}

/// The parser's message as a message and a hint: serde's "unknown field `x`, expected one
/// of `a`, `b`" becomes "unknown key `x`" with the allowed keys as the hint.
fn explain(message: &str) -> (String, Option<String>) {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (key, expected) = match rest.split_once(", expected ") {
            Some((key, expected)) => (key, Some(expected)),
            None => (rest, None),
        };
        let hint = match expected {
            Some(expected) => format!(
                "the keys allowed here are {}; check the spelling, or see docs/operations.md, \"Configuration file\"",
                expected.trim_start_matches("one of ")
            ),
            None => "no key is allowed here".into(),
        };
        return (format!("unknown key {key}"), Some(hint));
    }
    if message.starts_with("invalid type") {
        return (
            message.to_owned(),
            Some("durations and names are quoted strings (\"30s\", \"lww\"), sizes and counts are bare integers".into()),
        );
    }
    (message.to_owned(), None)
}

/// A bad value: what is wrong, and how to fix it.
struct Problem {
    message: String,
    hint: Option<String>,
}

impl Problem {
    fn new(message: impl Display, hint: impl Into<String>) -> Problem {
        Problem {
            message: message.to_string(),
            hint: Some(hint.into()),
        }
    }
}

impl From<String> for Problem {
    fn from(message: String) -> Problem {
        Problem {
            message,
            hint: None,
        }
    }
}

/// The resolution under way: the file's text (for positions; empty without a file), the
/// problems found, and the keys a flag or the environment set. A value that
/// fails to resolve leaves a diagnostic and resolves to its default, so that resolution
/// carries on and finds the next problem.
struct Resolver<'a> {
    source: &'a SourceText,
    diagnostics: Diagnostics,
    overridden: BTreeMap<String, Origin>,
}

impl Resolver<'_> {
    /// Notes that a flag or an environment variable set `key`.
    fn overridden(&mut self, key: &str, origin: Origin) {
        self.overridden.insert(key.to_owned(), origin);
    }

    /// The directory relative paths of the file are resolved against.
    fn base_dir(&self) -> &Path {
        self.source.base_dir()
    }

    fn error(&mut self, span: &Range<usize>, problem: Problem) {
        self.diagnostics
            .at(self.source, span, problem.message, problem.hint);
    }

    /// Judges a value of the file with `check`; a problem is reported at the value's line.
    /// This is also how a section defined by another module is resolved: the section is
    /// the value, and its own validation is `check`.
    fn judge<T, R>(
        &mut self,
        value: Spanned<T>,
        check: impl FnOnce(T) -> Result<R, Problem>,
    ) -> Option<R> {
        let span = value.span();
        match check(value.into_inner()) {
            Ok(v) => Some(v),
            Err(problem) => {
                self.error(&span, problem);
                None
            }
        }
    }

    /// A flag's value, else the file's (judged), else the default. A bad file value
    /// resolves to the default, with its diagnostic recorded.
    fn pick<T, R>(
        &mut self,
        key: &str,
        flag: Option<(R, &'static str)>,
        file: Option<Spanned<T>>,
        judge: impl FnOnce(&mut Self, Spanned<T>) -> Option<R>,
        default: R,
    ) -> R {
        if let Some((value, name)) = flag {
            self.overridden(key, Origin::Flag(name));
            return value;
        }
        match file {
            Some(value) => judge(self, value).unwrap_or(default),
            None => default,
        }
    }

    fn listen(&mut self, file: Option<Spanned<String>>, overrides: &Overrides) -> ListenAddr {
        self.pick(
            "listen",
            overrides.listen.clone().map(|l| (l, "--listen")),
            file,
            |r, value| {
                r.judge(value, |s| {
                    s.parse::<ListenAddr>().map_err(|e| {
                        Problem::new(
                            format!("listen = {s:?}: {e}"),
                            "an IP address or host name and a port, e.g. \"0.0.0.0:8787\"; port 0 picks a free port",
                        )
                    })
                })
            },
            ListenAddr::default(),
        )
    }

    fn storage(
        &mut self,
        data_dir: Option<Spanned<String>>,
        database_url: Option<Spanned<String>>,
        pool_size: Option<Spanned<i64>>,
        overrides: &Overrides,
        env: &dyn Fn(&'static str) -> Option<String>,
    ) -> StorageConfig {
        if let (Some(dir), Some(url)) = (&data_dir, &database_url) {
            let at = match self.source.locate(&dir.span()) {
                Location::File { line, .. } => format!(" (data_dir is on line {line})"),
                _ => String::new(),
            };
            self.error(
                &url.span(),
                Problem::new(
                    format!("both data_dir and database_url are set{at}"),
                    "keep data_dir for the embedded SQLite file, or database_url for PostgreSQL, not both",
                ),
            );
        }
        // `Some(Err(()))`: a URL was given but is bad (reported); the data directory is then
        // resolved only to carry on finding problems.
        let url: Option<Result<DatabaseUrl, ()>> = if let Some(url) = &overrides.database_url {
            self.overridden("database_url", Origin::Flag("--database-url"));
            Some(Ok(url.clone()))
        } else if let Some(url) = env(ENV_DATABASE_URL) {
            self.overridden("database_url", Origin::Env(ENV_DATABASE_URL));
            Some(DatabaseUrl::new(url).map_err(|e| {
                self.diagnostics.env(
                    ENV_DATABASE_URL,
                    e,
                    Some("unset it to use the file's storage, or give postgres://USER@HOST:PORT/DATABASE".into()),
                );
            }))
        } else {
            database_url.map(|url| {
                self.judge(url, |url| {
                    DatabaseUrl::new(url).map_err(|e| {
                        Problem::new(e, "postgres://USER[:PASSWORD]@HOST:PORT/DATABASE, or key=value pairs (host=… user=… dbname=…)")
                    })
                })
                .ok_or(())
            })
        };
        if let Some(url) = url {
            let pool_size = self.pick(
                "db_pool_size",
                overrides.db_pool_size.map(|v| (v, "--db-pool-size")),
                pool_size,
                |r, v| {
                    r.count("db_pool_size", v, 1, i64::from(MAX_DB_POOL_SIZE))
                        .map(|n| n as u32)
                },
                DEFAULT_DB_POOL_SIZE,
            );
            if let Ok(url) = url {
                return StorageConfig::Postgres { url, pool_size };
            }
        } else if let Some(pool_size) = pool_size {
            // Unused without a database URL, but a bad value is still a mistake to report.
            self.count("db_pool_size", pool_size, 1, i64::from(MAX_DB_POOL_SIZE));
        }
        let data_dir = if let Some(dir) = &overrides.data_dir {
            self.overridden("data_dir", Origin::Flag("--data-dir"));
            Some(dir.clone())
        } else if let Some(dir) = env(ENV_DATA_DIR) {
            self.overridden("data_dir", Origin::Env(ENV_DATA_DIR));
            Some(PathBuf::from(dir))
        } else if let Some(dir) = data_dir {
            let base = self.base_dir().to_path_buf();
            self.judge(dir, |dir| {
                if dir.trim().is_empty() {
                    Err(Problem::new(
                        "data_dir is empty",
                        "name a directory, e.g. \"./tidesync-data\" (relative to this file)",
                    ))
                } else {
                    Ok(base.join(dir))
                }
            })
        } else {
            Some(PathBuf::from(DEFAULT_DATA_DIR))
        };
        StorageConfig::Sqlite {
            data_dir: data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        }
    }

    /// `[compat]`: the file's RxDB primary keys, each replaced by a flag for its collection.
    fn compat(&mut self, file: CompatSection, overrides: &Overrides) -> CompatSettings {
        let mut compat = CompatSettings::default();
        for (collection, field) in file.rxdb_primary_keys {
            let Some(collection) = self.judge(collection, |name| {
                CollectionName::new(&name).map_err(|e| {
                    Problem::new(
                        format!("[compat.rxdb_primary_keys] {name}: {e}"),
                        "each key is a collection name, each value the document field RxDB keeps its primary key in",
                    )
                })
            }) else {
                continue;
            };
            if let Some(field) = self.judge(field, |field| {
                CompatSettings::check_primary_key(&field)
                    .map(|()| field)
                    .map_err(|e| Problem::new(e, "docs/compat.md, \"Primary keys\""))
            }) {
                compat.rxdb_primary_keys.insert(collection, field);
            }
        }
        for (collection, field) in &overrides.rxdb_primary_keys {
            self.overridden(
                &format!("compat.rxdb_primary_keys.{collection}"),
                Origin::Flag("--rxdb-primary-key"),
            );
            compat
                .rxdb_primary_keys
                .insert(collection.clone(), field.clone());
        }
        compat
    }

    /// `[schemas.<collection>]`: each entry's name and schema judged at its own line.
    fn schemas(
        &mut self,
        file: BTreeMap<Spanned<String>, Spanned<SchemaSource>>,
    ) -> (Schemas, SchemaSources) {
        let base = self.base_dir().to_path_buf();
        let mut schemas = Schemas::new();
        let mut sources = SchemaSources::new();
        for (name, source) in file {
            let Some(collection) = self.judge(name, |name| {
                CollectionName::new(&name).map_err(|e| {
                    Problem::new(
                        format!("[schemas.{name}]: {e}"),
                        "the section is named after the collection whose records it checks",
                    )
                })
            }) else {
                continue;
            };
            let loaded = self.judge(source, |source| {
                schemas
                    .load_one(collection.clone(), &source, &base)
                    .map(|()| source)
                    .map_err(|e| {
                        Problem::new(e, "see docs/operations.md, \"Schemas\", for the format")
                    })
            });
            if let Some(mut source) = loaded {
                if let Some(file) = &mut source.file {
                    *file = base.join(&*file);
                }
                sources.insert(collection, source);
            }
        }
        (schemas, sources)
    }

    /// The admin token: `--admin-token`, else `TIDESYNC_ADMIN_TOKEN`, else `[admin]`.
    fn admin(
        &mut self,
        file: Option<Spanned<AdminConfig>>,
        overrides: &Overrides,
        env: &dyn Fn(&'static str) -> Option<String>,
    ) -> Option<AdminToken> {
        if let Some(token) = &overrides.admin_token {
            self.overridden("admin.token", Origin::Flag("--admin-token"));
            return Some(token.clone());
        }
        if let Some(token) = env(ENV_ADMIN_TOKEN) {
            self.overridden("admin.token", Origin::Env(ENV_ADMIN_TOKEN));
            return AdminToken::new(&token)
                .map_err(|e| {
                    self.diagnostics.env(
                        ENV_ADMIN_TOKEN,
                        e.to_string(),
                        Some("unset it to use the file's [admin] section".into()),
                    );
                })
                .ok();
        }
        let base = self.base_dir().to_path_buf();
        self.judge(file?, |section| {
            section
                .token(&base)
                .map_err(|e| Problem::from(e.to_string()))
        })
    }

    fn policies(&mut self, file: PoliciesSection, overrides: &Overrides) -> Policies {
        let default = self.pick(
            "policies.default",
            overrides.default_policy.map(|p| (p, "--default-policy")),
            file.default,
            |r, s| r.policy(s),
            Policy::default(),
        );
        let mut per_collection = BTreeMap::new();
        for (name, policy) in file.collections {
            let collection = self.judge(name, |name| {
                CollectionName::new(name.as_str()).map_err(|e| {
                    Problem::new(
                        format!("{name:?} is not a collection name: {e}"),
                        "a collection name as clients use it, e.g. todos",
                    )
                })
            });
            let policy = self.policy(policy);
            if let (Some(collection), Some(policy)) = (collection, policy) {
                per_collection.insert(collection, policy);
            }
        }
        for (collection, policy) in &overrides.policies {
            self.overridden(
                &format!("policies.collections.{}", collection.as_str()),
                Origin::Flag("--policy"),
            );
            per_collection.insert(collection.clone(), *policy);
        }
        Policies {
            default,
            per_collection,
        }
    }

    fn policy(&mut self, name: Spanned<String>) -> Option<Policy> {
        self.judge(name, |s| {
            s.parse::<Policy>().map_err(|e| Problem {
                message: e,
                hint: Some("see docs/protocol.md, \"Conflict policies\"".into()),
            })
        })
    }

    fn limits(&mut self, file: LimitsSection) -> Limits {
        let d = Limits::default();
        let max_usize = i64::try_from(usize::MAX).unwrap_or(i64::MAX);
        let max_u32 = i64::from(u32::MAX);
        macro_rules! limit {
            ($field:ident, $max:expr, $as:ty) => {{
                let key = concat!("limits.", stringify!($field));
                self.pick(
                    key,
                    None,
                    file.$field,
                    |r, v| r.count(key, v, 1, $max).map(|n| n as $as),
                    d.$field,
                )
            }};
        }
        macro_rules! duration {
            ($field:ident) => {{
                let key = concat!("limits.", stringify!($field));
                self.pick(
                    key,
                    None,
                    file.$field,
                    |r, s| r.duration(key, s, false),
                    d.$field,
                )
            }};
        }
        let default_pull_limit_span = file.default_pull_limit.as_ref().map(Spanned::span);
        let max_pull_limit_span = file.max_pull_limit.as_ref().map(Spanned::span);
        let limits = Limits {
            max_body_bytes: limit!(max_body_bytes, max_usize, usize),
            max_mutations_per_push: limit!(max_mutations_per_push, max_usize, usize),
            max_doc_bytes: limit!(max_doc_bytes, max_usize, usize),
            max_doc_depth: limit!(max_doc_depth, MAX_DOC_DEPTH, usize),
            max_spaces_per_pull: limit!(max_spaces_per_pull, max_usize, usize),
            default_pull_limit: limit!(default_pull_limit, max_u32, u32),
            max_pull_limit: limit!(max_pull_limit, max_u32, u32),
            max_event_streams: limit!(max_event_streams, max_usize, usize),
            max_header_bytes: limit!(max_header_bytes, max_usize, usize),
            heartbeat: duration!(heartbeat),
            header_read_timeout: duration!(header_read_timeout),
            body_read_timeout: duration!(body_read_timeout),
            compression: d.compression,
        };
        if limits.default_pull_limit > limits.max_pull_limit {
            // When only max_pull_limit was set (below the default page), blame it.
            let span = default_pull_limit_span.or(max_pull_limit_span);
            if let Some(span) = span {
                self.error(
                    &span,
                    Problem::new(
                        format!(
                            "default_pull_limit ({}) is larger than max_pull_limit ({})",
                            limits.default_pull_limit, limits.max_pull_limit
                        ),
                        "the page a pull gets when it asks for none cannot exceed the largest page it may ask for: lower default_pull_limit or raise max_pull_limit",
                    ),
                );
            }
        }
        limits
    }

    /// An integer in `min..=max` for `key` (dotted; its last part names it in messages).
    fn count(&mut self, key: &str, value: Spanned<i64>, min: i64, max: i64) -> Option<i64> {
        let name = key.rsplit('.').next().unwrap_or(key);
        self.judge(value, |n| {
            if n < min {
                Err(Problem::new(
                    format!("{name} = {n} is too small: the least is {min}"),
                    if n == 0 {
                        "a limit of 0 would refuse everything; leave the key out for the default"
                            .to_owned()
                    } else if max >= i64::from(u32::MAX) {
                        "give a positive integer".to_owned()
                    } else {
                        format!("give a value from {min} to {max}")
                    },
                ))
            } else if n > max {
                Err(Problem::new(
                    format!("{name} = {n} is too large: the most is {max}"),
                    format!("give a value from {min} to {max}"),
                ))
            } else {
                Ok(n)
            }
        })
    }

    /// A duration written as humantime reads it ("90s", "500ms", "1m 30s").
    fn duration(&mut self, key: &str, value: Spanned<String>, zero_ok: bool) -> Option<Duration> {
        let name = key.rsplit('.').next().unwrap_or(key);
        self.judge(value, |s| {
            let d = humantime::parse_duration(&s).map_err(|e| {
                Problem::new(
                    format!("{name} = {s:?} is not a duration: {e}"),
                    "a number and a unit, e.g. \"500ms\", \"30s\", \"10m\", \"1h\", \"30d\"",
                )
            })?;
            if d.is_zero() && !zero_ok {
                return Err(Problem::new(
                    format!("{name} = {s:?}: a zero duration is not allowed here"),
                    "leave the key out for the default",
                ));
            }
            Ok(d)
        })
    }
}
