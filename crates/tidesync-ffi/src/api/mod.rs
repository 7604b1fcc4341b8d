//! The `extern "C"` entry points, by family. Each is one [`guard`](crate::abi::guard)
//! around: look up the handle, read the borrowed spans, call the client, answer JSON.

mod data;
mod events;
mod open;
mod query;
mod queue;
mod restore;
mod sync;

pub use data::*;
pub use events::*;
pub use open::*;
pub use query::*;
pub use queue::*;
pub use restore::*;
pub use sync::*;

use serde_json::Value;
use tidesync_client::RecordKey;

use crate::abi::{text, FfiError};

/// `value` (an object) with `"v": 1` first among its members' meaning.
pub(crate) fn versioned(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        map.insert("v".into(), Value::from(1));
    }
    value
}

/// A `SPACE/COLLECTION/ID` key span.
///
/// # Safety
/// `ptr` is NULL or points to `len` readable bytes, valid for the call.
pub(crate) unsafe fn key_arg(ptr: *const u8, len: usize) -> Result<RecordKey, FfiError> {
    // SAFETY: forwarded.
    let text = unsafe { text(ptr, len, "key") }?;
    Ok(RecordKey::from_path(text)?)
}
