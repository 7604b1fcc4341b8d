//! [`RestorationError`]: everything that can go wrong when planning a restoration change or
//! building a schema. Loading never fails; its problems are reported as
//! [`super::RestorationIssue`]s instead.

use std::fmt;

use super::codec::{DecodeError, EncodeError};
use super::path::NameRule;
use super::schema::{SchemaError, UpgradeError};
use super::tree::Lifetime;

/// What a [`RestorationError::TooLarge`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeSubject {
    /// One entry, at `path/key` (or just `key` in the root bucket).
    Entry {
        /// The lifetime of the entry.
        lifetime: Lifetime,
        /// The bucket path (`""` for the root).
        path: String,
        /// The entry key.
        key: String,
    },
    /// The whole tree (both lifetimes).
    Tree,
}

impl fmt::Display for SizeSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeSubject::Entry { path, key, .. } if path.is_empty() => {
                write!(f, "restoration entry {key}")
            }
            SizeSubject::Entry { path, key, .. } => write!(f, "restoration entry {path}/{key}"),
            SizeSubject::Tree => f.write_str("restoration state (all entries)"),
        }
    }
}

/// Formats a byte count for people: `512 bytes`, `80 KiB`, `4.5 MiB`.
pub(crate) fn human_bytes(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    let tenths = |unit: usize| {
        let t = n.saturating_mul(10) / unit;
        if t.is_multiple_of(10) {
            format!("{}", t / 10)
        } else {
            format!("{}.{}", t / 10, t % 10)
        }
    };
    if n >= MIB {
        format!("{} MiB", tenths(MIB))
    } else if n >= KIB {
        format!("{} KiB", tenths(KIB))
    } else {
        format!("{n} bytes")
    }
}

/// A restoration change or schema was rejected. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestorationError {
    /// A bucket path segment breaks a naming rule.
    #[error("invalid restoration bucket segment {segment:?}: {rule}")]
    InvalidSegment {
        /// The offending segment.
        segment: String,
        /// The rule it breaks.
        rule: NameRule,
    },
    /// A bucket path breaks a naming rule (a segment, or the total length).
    #[error("invalid restoration bucket path {path:?}: {rule}")]
    InvalidPath {
        /// The offending path.
        path: String,
        /// The rule it breaks.
        rule: NameRule,
    },
    /// An entry key breaks a naming rule.
    #[error("invalid restoration entry key {key:?}: {rule}")]
    InvalidKey {
        /// The offending key.
        key: String,
        /// The rule it breaks.
        rule: NameRule,
    },
    /// An entry type tag breaks a naming rule.
    #[error("invalid restoration type tag {tag:?}: {rule}")]
    InvalidTag {
        /// The offending tag.
        tag: String,
        /// The rule it breaks.
        rule: NameRule,
    },
    /// An entry version is 0.
    #[error("restoration entry of type {tag:?} has version 0; versions start at 1")]
    InvalidVersion {
        /// The entry's tag.
        tag: String,
    },
    /// An entry or the whole tree would exceed its size limit.
    #[error(
        "{what} is {}; the limit is {}; keep large data in records, not restoration state",
        human_bytes(*size),
        human_bytes(*limit)
    )]
    TooLarge {
        /// What is too large.
        what: SizeSubject,
        /// Its size in bytes (see [`super::RestorationLimits`] for what is counted).
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The value could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Stored bytes could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The schema definition is inconsistent.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// An entry could not be brought to its current version.
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
}

impl RestorationError {
    /// A stable, machine-readable code, for FFI and logs.
    pub fn code(&self) -> &'static str {
        match self {
            RestorationError::InvalidSegment { .. } => "restoration.invalid_segment",
            RestorationError::InvalidPath { .. } => "restoration.invalid_path",
            RestorationError::InvalidKey { .. } => "restoration.invalid_key",
            RestorationError::InvalidTag { .. } => "restoration.invalid_tag",
            RestorationError::InvalidVersion { .. } => "restoration.invalid_version",
            RestorationError::TooLarge { .. } => "restoration.too_large",
            RestorationError::Encode(_) => "restoration.encode",
            RestorationError::Decode(_) => "restoration.decode",
            RestorationError::Schema(_) => "restoration.schema",
            RestorationError::Upgrade(_) => "restoration.upgrade",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_large_tells_the_developer_what_to_do() {
        let err = RestorationError::TooLarge {
            what: SizeSubject::Entry {
                lifetime: Lifetime::Session,
                path: "checkout".to_owned(),
                key: "draft".to_owned(),
            },
            size: 80 * 1024,
            limit: 64 * 1024,
        };
        assert_eq!(
            err.to_string(),
            "restoration entry checkout/draft is 80 KiB; the limit is 64 KiB; \
             keep large data in records, not restoration state"
        );
        assert_eq!(err.code(), "restoration.too_large");
        assert_eq!(human_bytes(4 * 1024 * 1024 + 512 * 1024), "4.5 MiB");
        assert_eq!(human_bytes(17), "17 bytes");
    }
}
