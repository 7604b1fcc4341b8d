//! API tokens: opaque bearer tokens issued by `tidesync token create`, stored as SHA-256
//! hashes, each mapped to a user and the spaces the user may read and write.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tidesync_protocol::SpaceName;

/// Prefix of every token, so a leaked one is easy to recognize in logs and scanners.
pub const TOKEN_PREFIX: &str = "tsk_";

/// The SHA-256 of a token: what the storage keeps and looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Hashes a presented token.
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }
}

/// Generates a new random token (256 bits of entropy, hex).
pub fn new_token() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{TOKEN_PREFIX}{a}{b}")
}

/// What a token allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// The user the token acts for.
    pub user: String,
    /// Spaces the user may pull and watch.
    pub read: BTreeSet<SpaceName>,
    /// Spaces the user may push to (also readable).
    pub write: BTreeSet<SpaceName>,
}

impl Grants {
    /// Whether `space` may be read.
    pub fn can_read(&self, space: &SpaceName) -> bool {
        self.read.contains(space) || self.write.contains(space)
    }

    /// Whether `space` may be written.
    pub fn can_write(&self, space: &SpaceName) -> bool {
        self.write.contains(space)
    }
}
