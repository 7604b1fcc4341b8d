//! The request handlers, one module per endpoint family. Each turns every failure into an
//! [`crate::error::ApiError`]; none of them touches a database directly.

pub mod events;
pub mod ops;
pub mod pull;
pub mod push;
