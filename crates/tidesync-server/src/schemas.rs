//! Record schemas: per collection, a JSON Schema every record of it must match after a push
//! (`[schemas.<collection>]` in the server's configuration; docs/operations.md, "Schemas").
//!
//! Each schema is compiled once, when the server starts ([`Schemas::load`] or
//! [`Schemas::insert`]); [`storage::plan`](crate::storage) checks the record a transaction
//! leaves behind against its collection's schema and rejects the transaction with
//! `schema_violation` when it does not match. A collection without a schema costs one map
//! lookup per written record, and nothing at all when no collection has one.
//!
//! Schemas are draft 2020-12 unless they name another draft in `$schema`, and must be
//! self-contained: `$ref` may point into the schema itself (`$defs`), never to a file or a URL
//! (nothing is fetched).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ReferencingError, Validator};
use serde_json::Value;
use tidesync_protocol::{CollectionName, Doc};

/// Where one collection's schema is: `[schemas.<collection>]` with either `file` or `json`.
///
/// ```toml
/// [schemas.todos]
/// file = "schemas/todo.json"        # relative to the configuration file's directory
///
/// [schemas.notes]
/// json = '{"type": "object", "required": ["body"]}'
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaSource {
    /// A file holding the schema as JSON; a relative path is resolved against the base
    /// directory given to [`Schemas::load`].
    pub file: Option<PathBuf>,
    /// The schema itself, as JSON text.
    pub json: Option<String>,
}

/// The `[schemas]` table: a source per collection.
pub type SchemaSources = BTreeMap<CollectionName, SchemaSource>;

/// A schema that could not be loaded: which collection, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schema of collection {collection}: {problem}")]
pub struct SchemaError {
    /// The collection whose schema is at fault.
    pub collection: CollectionName,
    /// What is wrong, and how to fix it.
    pub problem: String,
}

/// The compiled schemas, by collection. Cheap to clone (the compiled schemas are shared).
#[derive(Clone, Default)]
pub struct Schemas {
    by_collection: BTreeMap<CollectionName, Arc<Validator>>,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(self.by_collection.keys().map(CollectionName::as_str))
            .finish()
    }
}

/// At most this many violations are named in a rejection's message.
const MAX_NAMED: usize = 3;
/// Each violation's text is cut to this many characters (it may quote a large value).
const MAX_VIOLATION_CHARS: usize = 200;

impl Schemas {
    /// No schemas: every record passes.
    pub fn new() -> Schemas {
        Schemas::default()
    }

    /// Reads and compiles every schema of `sources`; relative `file` paths are resolved
    /// against `base_dir` (the configuration file's directory). The first schema that cannot
    /// be read, is not JSON or is not a valid JSON Schema is the error.
    pub fn load(sources: &SchemaSources, base_dir: &Path) -> Result<Schemas, SchemaError> {
        let mut schemas = Schemas::new();
        for (collection, source) in sources {
            schemas.load_one(collection.clone(), source, base_dir)?;
        }
        Ok(schemas)
    }

    /// Reads and compiles the schema `source` gives as the schema of `collection` (what
    /// [`Schemas::load`] does for each entry; the configuration file judges entries one by
    /// one, so that each bad schema is reported at its own line).
    pub fn load_one(
        &mut self,
        collection: CollectionName,
        source: &SchemaSource,
        base_dir: &Path,
    ) -> Result<(), SchemaError> {
        let schema = read(&collection, source, base_dir)?;
        self.insert(collection, &schema)
    }

    /// Compiles `schema` as the schema of `collection` (replacing any it had).
    pub fn insert(
        &mut self,
        collection: CollectionName,
        schema: &Value,
    ) -> Result<(), SchemaError> {
        let validator = jsonschema::options().build(schema).map_err(|e| {
            let problem = match e.kind() {
                ValidationErrorKind::Referencing(ReferencingError::Unretrievable {
                    uri, ..
                }) => {
                    format!(
                        "`$ref` {uri} points outside the schema, and nothing is fetched: keep \
                         the schema self-contained (put shared parts under `$defs` and refer to \
                         them as `#/$defs/…`)"
                    )
                }
                _ => {
                    let at = e.instance_path().as_str();
                    let at = if at.is_empty() {
                        String::new()
                    } else {
                        format!(" at {at}")
                    };
                    format!(
                        "not a valid JSON Schema{at}: {e} (schemas are draft 2020-12 unless \
                         `$schema` names another draft)"
                    )
                }
            };
            SchemaError {
                collection: collection.clone(),
                problem,
            }
        })?;
        self.by_collection.insert(collection, Arc::new(validator));
        Ok(())
    }

    /// Whether no collection has a schema.
    pub fn is_empty(&self) -> bool {
        self.by_collection.is_empty()
    }

    /// The collections that have a schema, in order.
    pub fn collections(&self) -> impl Iterator<Item = &CollectionName> {
        self.by_collection.keys()
    }

    /// Whether `collection` has a schema (the one lookup a record of a collection without
    /// one costs).
    pub(crate) fn has(&self, collection: &CollectionName) -> bool {
        !self.by_collection.is_empty() && self.by_collection.contains_key(collection)
    }

    /// Checks a record's document against its collection's schema: `Err` names the first
    /// few violations, each as the failing path and the rule, e.g.
    /// `/title: "" is shorter than 1 character`.
    pub(crate) fn check(&self, collection: &CollectionName, doc: Doc) -> Result<(), String> {
        let Some(validator) = self.by_collection.get(collection) else {
            return Ok(());
        };
        let record = Value::Object(doc);
        if validator.is_valid(&record) {
            return Ok(());
        }
        let errors: Vec<_> = validator.iter_errors(&record).collect();
        let mut message =
            format!("the record does not match the schema of collection {collection}: ");
        for (i, error) in errors.iter().take(MAX_NAMED).enumerate() {
            if i > 0 {
                message.push_str("; ");
            }
            let path = error.instance_path().as_str();
            let path = if path.is_empty() { "(root)" } else { path };
            let rule = cut(&error.to_string(), MAX_VIOLATION_CHARS);
            let _ = write!(message, "{path}: {rule}");
        }
        if errors.len() > MAX_NAMED {
            let _ = write!(message, " (and {} more)", errors.len() - MAX_NAMED);
        }
        Err(message)
    }
}

/// The schema `source` names, as JSON.
fn read(
    collection: &CollectionName,
    source: &SchemaSource,
    base_dir: &Path,
) -> Result<Value, SchemaError> {
    let problem = |problem: String| SchemaError {
        collection: collection.clone(),
        problem,
    };
    match (&source.file, &source.json) {
        (Some(file), None) => {
            let path = base_dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                problem(format!(
                    "cannot read `file` {}: {e} (a relative path is resolved against the \
                     configuration file's directory)",
                    path.display()
                ))
            })?;
            serde_json::from_str(&text)
                .map_err(|e| problem(format!("`file` {} is not JSON: {e}", path.display())))
        }
        (None, Some(json)) => {
            serde_json::from_str(json).map_err(|e| problem(format!("`json` is not JSON: {e}")))
        }
        (Some(_), Some(_)) => Err(problem(
            "both `file` and `json` are given: keep one of them".to_owned(),
        )),
        (None, None) => Err(problem(
            "no schema given: set `file = \"path/to/schema.json\"` or `json = '{…}'`".to_owned(),
        )),
    }
}

/// `text` cut to `max` characters, with an ellipsis when it was longer.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    fn todos() -> CollectionName {
        CollectionName::new("todos").unwrap()
    }

    fn todo_schema() -> Value {
        json!({
            "type": "object",
            "required": ["title"],
            "properties": {
                "title": {"type": "string", "minLength": 1},
                "done": {"type": "boolean"}
            }
        })
    }

    fn doc(v: Value) -> Doc {
        v.as_object().cloned().unwrap()
    }

    fn sources(toml_like: &[(&str, SchemaSource)]) -> SchemaSources {
        toml_like
            .iter()
            .map(|(c, s)| (CollectionName::new(*c).unwrap(), s.clone()))
            .collect()
    }

    fn inline(json: &str) -> SchemaSource {
        SchemaSource {
            json: Some(json.to_owned()),
            file: None,
        }
    }

    #[test]
    fn an_inline_schema_and_a_file_relative_to_the_base_dir_load_alike() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("schemas")).unwrap();
        std::fs::write(
            dir.path().join("schemas/todo.json"),
            todo_schema().to_string(),
        )
        .unwrap();
        let from_file = sources(&[(
            "todos",
            SchemaSource {
                file: Some("schemas/todo.json".into()),
                json: None,
            },
        )]);
        let from_json = sources(&[("todos", inline(&todo_schema().to_string()))]);
        for schemas in [
            Schemas::load(&from_file, dir.path()).unwrap(),
            Schemas::load(&from_json, Path::new("/nonexistent")).unwrap(),
        ] {
            assert_eq!(schemas.collections().collect::<Vec<_>>(), vec![&todos()]);
            assert!(schemas.has(&todos()));
            assert!(schemas
                .check(&todos(), doc(json!({"title": "milk", "done": false})))
                .is_ok());
            assert!(schemas.check(&todos(), doc(json!({"title": ""}))).is_err());
        }
    }

    #[test]
    fn a_violation_names_its_path_and_rule_and_at_most_a_few_of_them() {
        let mut schemas = Schemas::new();
        schemas.insert(todos(), &todo_schema()).unwrap();
        let err = schemas
            .check(&todos(), doc(json!({"title": ""})))
            .unwrap_err();
        assert_eq!(
            err,
            "the record does not match the schema of collection todos: \
             /title: \"\" is shorter than 1 character"
        );
        let err = schemas
            .check(&todos(), doc(json!({"done": 1})))
            .unwrap_err();
        assert!(
            err.contains("(root): \"title\" is a required property"),
            "{err}"
        );
        assert!(err.contains("/done: 1 is not of type \"boolean\""), "{err}");

        let mut wide = Schemas::new();
        wide.insert(
            todos(),
            &json!({"additionalProperties": {"type": "integer"}}),
        )
        .unwrap();
        let err = wide
            .check(
                &todos(),
                doc(json!({"a": "x", "b": "x", "c": "x", "d": "x", "e": "x"})),
            )
            .unwrap_err();
        assert_eq!(err.matches("is not of type").count(), MAX_NAMED, "{err}");
        assert!(err.ends_with("(and 2 more)"), "{err}");
    }

    #[test]
    fn a_large_value_is_cut_in_the_message() {
        let mut schemas = Schemas::new();
        schemas
            .insert(todos(), &json!({"properties": {"n": {"type": "integer"}}}))
            .unwrap();
        let err = schemas
            .check(&todos(), doc(json!({"n": "é".repeat(100_000)})))
            .unwrap_err();
        assert!(err.len() < 1_000, "{} bytes", err.len());
        assert!(err.contains('…'), "{err}");
    }

    #[test]
    fn a_collection_without_a_schema_passes_everything() {
        let mut schemas = Schemas::new();
        assert!(!schemas.has(&todos()));
        schemas.insert(todos(), &json!(false)).unwrap();
        let notes = CollectionName::new("notes").unwrap();
        assert!(!schemas.has(&notes));
        assert!(schemas.check(&notes, doc(json!({"any": "thing"}))).is_ok());
        assert!(schemas.check(&todos(), doc(json!({}))).is_err());
    }

    #[test]
    fn the_default_draft_is_2020_12_and_a_schema_may_name_another() {
        // `prefixItems` exists from 2020-12 on; draft 7 ignores it.
        let schema = |draft: Option<&str>| {
            let mut s = json!({"properties": {"pair": {"prefixItems": [{"type": "string"}]}}});
            if let Some(d) = draft {
                s["$schema"] = json!(d);
            }
            s
        };
        let record = || doc(json!({"pair": [1]}));
        let mut default = Schemas::new();
        default.insert(todos(), &schema(None)).unwrap();
        assert!(default.check(&todos(), record()).is_err());
        let mut draft7 = Schemas::new();
        draft7
            .insert(
                todos(),
                &schema(Some("http://json-schema.org/draft-07/schema#")),
            )
            .unwrap();
        assert!(draft7.check(&todos(), record()).is_ok());
    }

    #[test]
    fn format_is_checked_under_draft_7_and_only_an_annotation_under_2020_12() {
        let schema = |draft: &str| json!({"$schema": draft, "properties": {"at": {"type": "string", "format": "date-time"}}});
        let record = || doc(json!({"at": "yesterday"}));
        let mut modern = Schemas::new();
        modern
            .insert(
                todos(),
                &schema("https://json-schema.org/draft/2020-12/schema"),
            )
            .unwrap();
        assert!(modern.check(&todos(), record()).is_ok());
        let mut draft7 = Schemas::new();
        draft7
            .insert(todos(), &schema("http://json-schema.org/draft-07/schema#"))
            .unwrap();
        let err = draft7.check(&todos(), record()).unwrap_err();
        assert!(
            err.ends_with("/at: \"yesterday\" is not a \"date-time\""),
            "{err}"
        );
    }

    #[test]
    fn load_errors_name_the_collection_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("broken.json"), "{\"type\": ").unwrap();
        let cases: Vec<(SchemaSource, &str)> = vec![
            (SchemaSource::default(), "no schema given: set `file"),
            (
                SchemaSource {
                    file: Some("a.json".into()),
                    json: Some("{}".into()),
                },
                "both `file` and `json` are given",
            ),
            (
                SchemaSource {
                    file: Some("missing.json".into()),
                    json: None,
                },
                "cannot read `file` ",
            ),
            (
                SchemaSource {
                    file: Some("broken.json".into()),
                    json: None,
                },
                "broken.json is not JSON: EOF",
            ),
            (
                inline("{'type': 'object'}"),
                "`json` is not JSON: key must be a string",
            ),
            (
                inline(r#"{"type": "objet"}"#),
                "not a valid JSON Schema at /type: ",
            ),
            (
                inline(r#"{"properties": {"n": {"minLength": -1}}}"#),
                "not a valid JSON Schema at /properties/n/minLength",
            ),
            (
                inline(r#"{"$ref": "https://example.invalid/todo.json"}"#),
                "`$ref` https://example.invalid/todo.json points outside the schema",
            ),
            (
                inline(r#"{"$ref": "todo.json"}"#),
                "points outside the schema",
            ),
            (
                inline(r##"{"$ref": "#/$defs/missing"}"##),
                "not a valid JSON Schema",
            ),
        ];
        for (source, expected) in cases {
            let err = Schemas::load(&sources(&[("todos", source.clone())]), dir.path())
                .expect_err(&format!("{source:?} loaded"));
            assert_eq!(err.collection, todos());
            let text = err.to_string();
            assert!(text.starts_with("schema of collection todos: "), "{text}");
            assert!(text.contains(expected), "{source:?}: {text}");
        }
        let missing = Schemas::load(
            &sources(&[(
                "todos",
                SchemaSource {
                    file: Some("missing.json".into()),
                    json: None,
                },
            )]),
            dir.path(),
        )
        .unwrap_err();
        assert!(
            missing
                .problem
                .contains(&dir.path().join("missing.json").display().to_string()),
            "the resolved path is named: {missing}"
        );
    }

    #[test]
    fn the_section_shape_deserializes_and_refuses_unknown_fields() {
        let source: SchemaSource =
            serde_json::from_value(json!({"file": "schemas/todo.json"})).unwrap();
        assert_eq!(source.file.as_deref(), Some(Path::new("schemas/todo.json")));
        let err = serde_json::from_value::<SchemaSource>(json!({"path": "x.json"})).unwrap_err();
        assert!(err.to_string().contains("unknown field `path`"), "{err}");
        let table: SchemaSources =
            serde_json::from_value(json!({"todos": {"json": "{}"}})).unwrap();
        assert!(table.contains_key(&todos()));
        assert!(
            serde_json::from_value::<SchemaSources>(json!({"bad name": {"json": "{}"}})).is_err()
        );
    }
}
