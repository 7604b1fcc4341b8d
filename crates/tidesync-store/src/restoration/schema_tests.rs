#![allow(clippy::unwrap_used)]

use super::*;

/// v1: a bare string; v2: `{"text": s}`; v3: adds `"step": 1`.
fn draft_schema() -> RestorationSchema {
    RestorationSchema::builder()
        .register("draft", 3)
        .migration("draft", 2, |mut v| {
            let map = v.as_map_mut().ok_or("v2 draft must be a map")?;
            map.insert("step".to_owned(), Value::Int(1));
            Ok(v)
        })
        .migration("draft", 1, |v| match v {
            Value::String(s) => Ok(Value::Map([("text".to_owned(), Value::String(s))].into())),
            other => Err(format!(
                "v1 draft must be a string, got {}",
                other.type_name()
            )),
        })
        .build()
        .unwrap()
}

#[test]
fn chain_runs_every_step_in_order() {
    let up = draft_schema()
        .upgrade("draft", 1, Value::from("hi"))
        .unwrap();
    assert!(up.migrated());
    assert_eq!((up.from_version, up.version), (1, 3));
    assert_eq!(up.value.get("text"), Some(&Value::from("hi")));
    assert_eq!(up.value.get("step"), Some(&Value::Int(1)));
}

#[test]
fn current_version_is_untouched() {
    let v = Value::Map([("text".to_owned(), Value::from("x"))].into());
    let up = draft_schema().upgrade("draft", 3, v.clone()).unwrap();
    assert!(!up.migrated());
    assert_eq!(up.value, v);
}

#[test]
fn failing_migration_reports_tag_step_and_message() {
    let err = draft_schema()
        .upgrade("draft", 1, Value::Int(4))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "migrating \"draft\" from version 1 to 2 failed: v1 draft must be a string, got int"
    );
}

#[test]
fn panicking_migration_fails_the_entry_not_the_app() {
    let schema = RestorationSchema::builder()
        .register("p", 2)
        .migration("p", 1, |_| panic!("boom"))
        .build()
        .unwrap();
    let err = schema.upgrade("p", 1, Value::Null).unwrap_err();
    assert!(
        err.to_string().contains("migration panicked: boom"),
        "{err}"
    );
}

#[test]
fn missing_step_and_too_new_versions_are_errors() {
    let schema = RestorationSchema::builder()
        .register("form", 4)
        .migration("form", 3, Ok)
        .build()
        .unwrap();
    let err = schema.upgrade("form", 2, Value::Null).unwrap_err();
    assert_eq!(
        err,
        UpgradeError::MissingMigration {
            tag: "form".into(),
            from: 2,
            current: 4
        }
    );
    assert!(schema.upgrade("form", 3, Value::Null).unwrap().migrated());
    let err = schema.upgrade("form", 5, Value::Null).unwrap_err();
    assert!(
        err.to_string().contains("written by a newer app version"),
        "{err}"
    );
    assert!(schema.check_write("form", 5).is_err());
    assert!(schema.check_write("form", 4).is_ok());
}

#[test]
fn unknown_tags_pass_through_unchanged() {
    let up = draft_schema()
        .upgrade("nav.stack", 7, Value::Int(1))
        .unwrap();
    assert_eq!(
        (up.from_version, up.version, up.value),
        (7, 7, Value::Int(1))
    );
    assert_eq!(RestorationSchema::default().current_version("draft"), None);
}

#[test]
fn inconsistent_definitions_are_rejected_at_build() {
    let schema_err = |b: RestorationSchemaBuilder| match b.build().unwrap_err() {
        RestorationError::Schema(e) => e,
        other => panic!("expected a schema error, got {other}"),
    };
    let b = RestorationSchema::builder;
    assert!(matches!(
        schema_err(b().register("a b", 1)),
        SchemaError::InvalidTag { .. }
    ));
    assert!(matches!(
        schema_err(b().register("a", 0)),
        SchemaError::ZeroVersion { .. }
    ));
    assert!(matches!(
        schema_err(b().register("a", 1).register("a", 2)),
        SchemaError::DuplicateTag { .. }
    ));
    assert!(matches!(
        schema_err(b().migration("a", 1, Ok)),
        SchemaError::UnregisteredMigration { .. }
    ));
    assert!(matches!(
        schema_err(b().register("a", 2).migration("a", 2, Ok)),
        SchemaError::MigrationOutOfRange {
            from: 2,
            current: 2,
            ..
        }
    ));
    assert!(matches!(
        schema_err(
            b().register("a", 3)
                .migration("a", 1, Ok)
                .migration("a", 1, Ok)
        ),
        SchemaError::DuplicateMigration { from: 1, .. }
    ));
    let gap = schema_err(
        b().register("a", 4)
            .migration("a", 1, Ok)
            .migration("a", 3, Ok),
    );
    assert_eq!(
        gap,
        SchemaError::GapInChain {
            tag: "a".into(),
            missing: 2
        }
    );
    // Migrations may be declared before the registration.
    assert!(b().migration("a", 1, Ok).register("a", 2).build().is_ok());
}
