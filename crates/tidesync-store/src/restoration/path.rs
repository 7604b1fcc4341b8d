//! Validated names: [`BucketPath`], [`EntryKey`] and type tags.
//!
//! Rules (checked by [`BucketPath::child`], [`BucketPath::parse`], [`EntryKey::new`] and
//! [`validate_tag`]):
//! - a bucket segment or entry key is 1..=[`MAX_NAME_BYTES`] bytes of UTF-8 with no control
//!   character and no `/`, so a path can be stored as its segments joined by `/`;
//! - a path is at most [`MAX_PATH_BYTES`] bytes; the root bucket is the empty path `""`;
//! - a type tag is 1..=[`MAX_NAME_BYTES`] bytes of printable ASCII without spaces
//!   (`checkout.draft`).

use std::fmt;

use super::error::RestorationError;

/// The longest segment, key or tag, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// The longest bucket path (segments joined by `/`), in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// A naming rule that a segment, key, path or tag broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_BYTES`].
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name contains `/`.
    ContainsSlash,
    /// The name contains a control character.
    ControlCharacter,
    /// A tag contains something other than printable, non-space ASCII.
    TagCharacter,
    /// A path has an empty segment (`a//b`, `/a`, `a/`).
    EmptySegment,
    /// A path is longer than [`MAX_PATH_BYTES`].
    PathTooLong {
        /// Its length in bytes.
        len: usize,
    },
}

impl fmt::Display for NameRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameRule::Empty => f.write_str("must not be empty"),
            NameRule::TooLong { len } => {
                write!(f, "is {len} bytes; the maximum is {MAX_NAME_BYTES}")
            }
            NameRule::ContainsSlash => f.write_str(
                "must not contain '/' (address nested buckets with one child() per level)",
            ),
            NameRule::ControlCharacter => f.write_str("must not contain control characters"),
            NameRule::TagCharacter => f.write_str(
                "may only contain printable ASCII without spaces (for example \"checkout.draft\")",
            ),
            NameRule::EmptySegment => {
                f.write_str("has an empty segment (use \"a/b\", not \"/a\", \"a/\" or \"a//b\")")
            }
            NameRule::PathTooLong { len } => write!(
                f,
                "is {len} bytes; the maximum is {MAX_PATH_BYTES}; use shorter or fewer segments"
            ),
        }
    }
}

/// Checks a bucket segment or entry key.
fn check_name(name: &str) -> Result<(), NameRule> {
    if name.is_empty() {
        Err(NameRule::Empty)
    } else if name.len() > MAX_NAME_BYTES {
        Err(NameRule::TooLong { len: name.len() })
    } else if name.contains('/') {
        Err(NameRule::ContainsSlash)
    } else if name.chars().any(char::is_control) {
        Err(NameRule::ControlCharacter)
    } else {
        Ok(())
    }
}

/// Checks an entry type tag: 1..=128 bytes of printable ASCII, no spaces.
pub fn validate_tag(tag: &str) -> Result<(), RestorationError> {
    let rule = if tag.is_empty() {
        Some(NameRule::Empty)
    } else if tag.len() > MAX_NAME_BYTES {
        Some(NameRule::TooLong { len: tag.len() })
    } else if !tag.bytes().all(|b| b.is_ascii_graphic()) {
        Some(NameRule::TagCharacter)
    } else {
        None
    };
    match rule {
        Some(rule) => Err(RestorationError::InvalidTag {
            tag: tag.to_owned(),
            rule,
        }),
        None => Ok(()),
    }
}

/// The address of a bucket: validated segments joined by `/`; the root is `""`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketPath(String);

impl BucketPath {
    /// The root bucket (the empty path).
    pub fn root() -> Self {
        BucketPath(String::new())
    }

    /// The child bucket `segment` of this one.
    pub fn child(&self, segment: &str) -> Result<BucketPath, RestorationError> {
        check_name(segment).map_err(|rule| RestorationError::InvalidSegment {
            segment: segment.to_owned(),
            rule,
        })?;
        let mut path = String::with_capacity(self.0.len() + 1 + segment.len());
        path.push_str(&self.0);
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(segment);
        if path.len() > MAX_PATH_BYTES {
            return Err(RestorationError::InvalidPath {
                rule: NameRule::PathTooLong { len: path.len() },
                path,
            });
        }
        Ok(BucketPath(path))
    }

    /// Parses a stored path: `""` is the root, otherwise valid segments joined by `/`.
    pub fn parse(path: &str) -> Result<BucketPath, RestorationError> {
        let invalid = |rule| RestorationError::InvalidPath {
            path: path.to_owned(),
            rule,
        };
        if path.is_empty() {
            return Ok(BucketPath::root());
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(invalid(NameRule::PathTooLong { len: path.len() }));
        }
        for segment in path.split('/') {
            match check_name(segment) {
                Ok(()) => {}
                Err(NameRule::Empty) => return Err(invalid(NameRule::EmptySegment)),
                Err(rule) => {
                    return Err(RestorationError::InvalidSegment {
                        segment: segment.to_owned(),
                        rule,
                    })
                }
            }
        }
        Ok(BucketPath(path.to_owned()))
    }

    /// The stored form: segments joined by `/`, `""` for the root.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `true` for the root bucket.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The segments from the root down (none for the root).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// The parent bucket, or `None` for the root.
    pub fn parent(&self) -> Option<BucketPath> {
        if self.is_root() {
            return None;
        }
        let parent = self.0.rsplit_once('/').map_or("", |(p, _)| p);
        Some(BucketPath(parent.to_owned()))
    }

    /// `true` if `other` is this bucket or lies below it.
    pub fn contains(&self, other: &str) -> bool {
        self.is_root()
            || other == self.0
            || (other.starts_with(self.0.as_str())
                && other.as_bytes().get(self.0.len()) == Some(&b'/'))
    }
}

impl fmt::Display for BucketPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated entry key: 1..=128 bytes of UTF-8, no control characters, no `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryKey(String);

impl EntryKey {
    /// Validates `key`.
    pub fn new(key: &str) -> Result<EntryKey, RestorationError> {
        check_name(key).map_err(|rule| RestorationError::InvalidKey {
            key: key.to_owned(),
            rule,
        })?;
        Ok(EntryKey(key.to_owned()))
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_build_parse_and_nest() {
        let p = BucketPath::root()
            .child("checkout")
            .unwrap()
            .child("step 2")
            .unwrap();
        assert_eq!(p.as_str(), "checkout/step 2");
        assert_eq!(BucketPath::parse("checkout/step 2").unwrap(), p);
        assert_eq!(p.segments().collect::<Vec<_>>(), ["checkout", "step 2"]);
        assert_eq!(p.parent().unwrap().as_str(), "checkout");
        assert_eq!(BucketPath::parse("").unwrap(), BucketPath::root());
        assert!(BucketPath::root().parent().is_none());
        let checkout = BucketPath::parse("checkout").unwrap();
        assert!(checkout.contains("checkout/step 2"));
        assert!(checkout.contains("checkout"));
        assert!(!checkout.contains("checkouts"));
        assert!(BucketPath::root().contains("anything"));
    }

    #[test]
    fn bad_names_are_rejected_with_the_rule() {
        let err = BucketPath::root().child("a/b").unwrap_err();
        assert!(err.to_string().contains("must not contain '/'"), "{err}");
        assert!(matches!(
            BucketPath::root().child("").unwrap_err(),
            RestorationError::InvalidSegment {
                rule: NameRule::Empty,
                ..
            }
        ));
        assert!(matches!(
            EntryKey::new(&"k".repeat(129)).unwrap_err(),
            RestorationError::InvalidKey {
                rule: NameRule::TooLong { len: 129 },
                ..
            }
        ));
        assert!(
            EntryKey::new(&"é".repeat(64)).is_ok(),
            "128 bytes is allowed"
        );
        assert!(EntryKey::new("line\nbreak").is_err());
        assert!(matches!(
            BucketPath::parse("a//b").unwrap_err(),
            RestorationError::InvalidPath {
                rule: NameRule::EmptySegment,
                ..
            }
        ));
        assert!(BucketPath::parse("/a").is_err());
        assert!(BucketPath::parse("a\u{7f}").is_err());
        let long = vec!["s".repeat(128); 9].join("/");
        assert!(matches!(
            BucketPath::parse(&long).unwrap_err(),
            RestorationError::InvalidPath {
                rule: NameRule::PathTooLong { .. },
                ..
            }
        ));
    }

    #[test]
    fn tags_are_printable_ascii() {
        assert!(validate_tag("checkout.draft").is_ok());
        assert!(validate_tag("has space").is_err());
        assert!(validate_tag("naïve").is_err());
        assert!(validate_tag("").is_err());
        assert!(validate_tag(&"t".repeat(128)).is_ok());
        assert!(validate_tag(&"t".repeat(129)).is_err());
    }
}
