//! The request handlers, one module per endpoint family. Each turns every failure into an
//! [`crate::error::ApiError`]; none of them touches a database directly.

pub(crate) mod events;
pub(crate) mod ops;
pub(crate) mod pull;
pub(crate) mod push;
