//! Validated names and ids. Each type checks its rule in `new` and in `Deserialize`, so a
//! value that exists is well formed.
//!
//! | type | bytes | allowed |
//! |---|---|---|
//! | [`RecordId`] | 1..=256 | any UTF-8 except control characters (U+0000–U+001F, U+007F–U+009F) |
//! | [`SpaceName`] | 1..=128 | ASCII letters, digits and `_ - . : @`; starts with a letter or digit |
//! | [`CollectionName`] | 1..=64 | ASCII letters, digits, `_` and `-`; starts with a letter |
//! | [`ClientId`] | 1..=64 | ASCII letters, digits, `_` and `-` |

use crate::limits::{
    MAX_CLIENT_ID_BYTES, MAX_COLLECTION_NAME_BYTES, MAX_RECORD_ID_BYTES, MAX_SPACE_NAME_BYTES,
};
use crate::ValidationError;

macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident, $what:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        // Serialized by reference (no clone, unlike `serde(into)`): pull responses write
        // three names per change.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl $name {
            /// Validates `value` against this type's rule.
            pub fn new(value: impl Into<String>) -> Result<Self, ValidationError> {
                let value = value.into();
                match $check(&value) {
                    Ok(()) => Ok(Self(value)),
                    Err(rule) => Err(ValidationError::new($what, &value, rule)),
                }
            }

            /// The validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = ValidationError;
            fn try_from(value: &str) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

validated_string!(
    /// The id of a record inside a collection: 1..=256 bytes of UTF-8 without control
    /// characters.
    RecordId,
    "record id",
    check_record_id
);
validated_string!(
    /// A space: the unit of access control and partial sync (`user:alice`, `team:42`).
    SpaceName,
    "space name",
    check_space_name
);
validated_string!(
    /// A collection inside a space (`todos`).
    CollectionName,
    "collection name",
    check_collection_name
);
validated_string!(
    /// The id of one client installation, generated once per database.
    ClientId,
    "client id",
    check_client_id
);

fn check_len(value: &str, max: usize) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("must not be empty");
    }
    if value.len() > max {
        return Err(match max {
            MAX_RECORD_ID_BYTES => "must be at most 256 bytes",
            MAX_SPACE_NAME_BYTES => "must be at most 128 bytes",
            _ => "must be at most 64 bytes",
        });
    }
    Ok(())
}

fn check_record_id(value: &str) -> Result<(), &'static str> {
    check_len(value, MAX_RECORD_ID_BYTES)?;
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(())
}

fn check_space_name(value: &str) -> Result<(), &'static str> {
    check_len(value, MAX_SPACE_NAME_BYTES)?;
    let mut bytes = value.bytes();
    if !bytes.next().is_some_and(|b| b.is_ascii_alphanumeric()) {
        return Err("must start with an ASCII letter or digit");
    }
    if !bytes.all(|b| b.is_ascii_alphanumeric() || b"_-.:@".contains(&b)) {
        return Err("may contain only ASCII letters, digits and _ - . : @");
    }
    Ok(())
}

fn check_collection_name(value: &str) -> Result<(), &'static str> {
    check_len(value, MAX_COLLECTION_NAME_BYTES)?;
    let mut bytes = value.bytes();
    if !bytes.next().is_some_and(|b| b.is_ascii_alphabetic()) {
        return Err("must start with an ASCII letter");
    }
    if !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err("may contain only ASCII letters, digits, _ and -");
    }
    Ok(())
}

pub(crate) fn check_client_id(value: &str) -> Result<(), &'static str> {
    check_len(value, MAX_CLIENT_ID_BYTES)?;
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("may contain only ASCII letters, digits, _ and -");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_follow_the_byte_rule() {
        assert!(RecordId::new("a").is_ok());
        assert!(
            RecordId::new("ü".repeat(128)).is_ok(),
            "256 bytes is allowed"
        );
        assert!(RecordId::new("x".repeat(256)).is_ok());
        let err = RecordId::new("x".repeat(257)).unwrap_err();
        assert_eq!(err.rule, "must be at most 256 bytes");
        assert!(RecordId::new("").is_err());
        assert!(RecordId::new("a\0b").is_err());
        assert!(RecordId::new("line\nbreak").is_err());
        assert!(RecordId::new("emoji 🦀 and spaces").is_ok());
    }

    #[test]
    fn space_and_collection_names_follow_their_rules() {
        for ok in ["user:alice", "team:42", "a", "org.acme@eu-1", "9lives"] {
            assert!(SpaceName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", ":x", "user alice", "ümlaut", "a/b", &"s".repeat(129)] {
            assert!(SpaceName::new(bad).is_err(), "{bad}");
        }
        for ok in ["todos", "Todo_items-2"] {
            assert!(CollectionName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1todos", "_x", "to dos", "a.b", &"c".repeat(65)] {
            assert!(CollectionName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deserializing_validates() {
        let err = serde_json::from_str::<RecordId>("\"\"").unwrap_err();
        assert!(err.to_string().contains("must not be empty"), "{err}");
        let ok: SpaceName = serde_json::from_str("\"team:42\"").expect("valid");
        assert_eq!(ok.as_str(), "team:42");
        assert!(serde_json::from_str::<ClientId>("\"a b\"").is_err());
    }

    #[test]
    fn error_message_names_the_rule_and_cuts_long_input() {
        let err = RecordId::new("y".repeat(1000)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("invalid record id"), "{msg}");
        assert!(msg.len() < 200, "{msg}");
    }
}
