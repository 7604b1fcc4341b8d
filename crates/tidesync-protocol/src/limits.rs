//! Size rules for names and ids (documented in `docs/protocol.md`).

/// A record id is 1..=256 bytes of UTF-8 without control characters.
pub const MAX_RECORD_ID_BYTES: usize = 256;
/// A space name is 1..=128 bytes: see [`crate::SpaceName`].
pub const MAX_SPACE_NAME_BYTES: usize = 128;
/// A collection name is 1..=64 bytes: see [`crate::CollectionName`].
pub const MAX_COLLECTION_NAME_BYTES: usize = 64;
/// A client id is 1..=64 bytes: see [`crate::ClientId`].
pub(crate) const MAX_CLIENT_ID_BYTES: usize = 64;
