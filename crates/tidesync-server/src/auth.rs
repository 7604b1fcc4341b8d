//! API tokens: opaque bearer tokens issued by `tidesync token create`, stored as SHA-256
//! hashes, each mapped to a user and the spaces the user may read and write. Next to them,
//! [`jwt`]: tokens from the app's own sign-in, verified with the provider's keys.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tidesync_protocol::SpaceName;

pub mod jwt;

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

/// A token being issued: the token (shown once), and the row a backend stores for it.
#[derive(Debug, Clone)]
pub(crate) struct NewToken {
    /// The token itself; never stored.
    pub token: String,
    /// Its hash, the stored key.
    pub hash: TokenHash,
    /// The grants as stored (JSON).
    pub grants_json: String,
    /// When it was issued (ms since the epoch).
    pub created_at: i64,
}

impl NewToken {
    /// Issues a token for `grants`, after checking the user name.
    pub(crate) fn issue(grants: &Grants) -> Result<NewToken, crate::storage::StorageError> {
        use crate::storage::StorageError;
        let user = grants.user.as_str();
        check_user(user)
            .map_err(|rule| StorageError::Internal(format!("invalid user {user:?}: {rule}")))?;
        let token = new_token();
        let grants_json = serde_json::to_string(grants)
            .map_err(|e| StorageError::Internal(format!("serialize grants: {e}")))?;
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Ok(NewToken {
            hash: TokenHash::of(&token),
            token,
            grants_json,
            created_at,
        })
    }
}

/// The rule of user names, whether an API token's or a JWT's: 1..=128 bytes without control
/// characters.
pub(crate) fn check_user(user: &str) -> Result<(), &'static str> {
    if user.is_empty() || user.len() > 128 || user.chars().any(char::is_control) {
        return Err("1..=128 bytes without control characters");
    }
    Ok(())
}

/// Stored grants (JSON) back as grants.
pub(crate) fn stored_grants(json: &str) -> Result<Grants, crate::storage::StorageError> {
    serde_json::from_str(json).map_err(|e| {
        crate::storage::StorageError::Internal(format!("stored grants do not parse: {e}"))
    })
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
