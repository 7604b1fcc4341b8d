//! Subscriptions: `ts_subscribe`, `ts_poll_events`, `ts_wait_events`, `ts_unsubscribe`.

use std::ffi::c_void;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::abi::{done, guard, FfiError, TsBuf};
use crate::events::{Doorbell, Subscription, TsDartPostCObject, TsDoorbell};
use crate::handles;

/// Subscribes to the events of a database: status changes, records changed per collection,
/// acknowledgements and confirmations, rejections, conflicts, `token_expired`, and `resync`
/// after an overflow. The queue holds up to `capacity` events (0: 1,024) and coalesces (the
/// latest status wins, records-changed add up per collection). Its doorbell rings when the
/// queue goes from empty to non-empty: `doorbell(doorbell_context)` if `doorbell` is not
/// NULL, else `dart_post(dart_port, <Dart_CObject int64: the subscription handle>)` if
/// `dart_post` is not NULL (pass `NativeApi.postCObject`), else nothing (poll, or wait). The
/// current status is queued at once. `*sub` is the subscription's handle.
///
/// # Safety
/// `sub` points to a writable `uint64_t`; `out` is NULL or a writable `TsBuf`; `doorbell`
/// may be called with `doorbell_context` from any thread until `ts_unsubscribe` returns.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ts_subscribe(
    db: u64,
    capacity: u32,
    doorbell: TsDoorbell,
    doorbell_context: *mut c_void,
    dart_post: TsDartPostCObject,
    dart_port: i64,
    sub: *mut u64,
    out: *mut TsBuf,
) -> i32 {
    guard(out, || {
        if sub.is_null() {
            return Err(FfiError::invalid("sub (the handle out-pointer) is NULL"));
        }
        let engine = handles::db(db)?;
        let client = engine.client()?;
        engine.start_events(&client)?;
        let bell = doorbell_of(doorbell, doorbell_context, dart_post, dart_port);
        let (subscription, handle) = new_subscription(capacity, bell);
        engine.hub().add(&subscription);
        if let Some(status) = client.status() {
            engine
                .hub()
                .publish_to(&subscription, &tidesync_client::ClientEvent::Status(status));
        }
        // SAFETY: checked non-NULL above; the caller promises it is writable.
        unsafe { sub.write(handle) };
        Ok(json!({"v": 1, "subscription": handle}))
    })
}

/// Where a new subscription rings: the C doorbell if given, else the Dart port if given.
pub(crate) fn doorbell_of(
    doorbell: TsDoorbell,
    context: *mut c_void,
    dart_post: TsDartPostCObject,
    dart_port: i64,
) -> Doorbell {
    match (doorbell, dart_post) {
        (Some(ring), _) => Doorbell::C { ring, context },
        (None, Some(post)) => Doorbell::Dart {
            post,
            port: dart_port,
        },
        (None, None) => Doorbell::None,
    }
}

/// A subscription with its handle (`capacity` 0: 1,024 events).
pub(crate) fn new_subscription(capacity: u32, bell: Doorbell) -> (Arc<Subscription>, u64) {
    let capacity = if capacity == 0 {
        1_024
    } else {
        capacity as usize
    };
    let subscription = Arc::new(Subscription::new(capacity, bell));
    let handle = handles::add_sub(subscription.clone());
    subscription.set_handle(handle);
    (subscription, handle)
}

fn events(events: Vec<Value>) -> Value {
    json!({"v": 1, "events": events})
}

/// Drains up to `max` queued events (0: all), at once: `{"v":1, "events": [{"v":1, "type",
/// ...}]}` (docs/ffi.md lists the types).
///
/// # Safety
/// `out` is NULL or points to a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_poll_events(sub: u64, max: u32, out: *mut TsBuf) -> i32 {
    guard(out, || Ok(events(handles::sub(sub)?.drain(max as usize))))
}

/// Like `ts_poll_events`, but first blocks up to `timeout_ms` until an event is queued (for C
/// and Python; Dart uses the doorbell).
///
/// # Safety
/// `out` is NULL or points to a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_wait_events(
    sub: u64,
    timeout_ms: u32,
    max: u32,
    out: *mut TsBuf,
) -> i32 {
    guard(out, || {
        let subscription = handles::sub(sub)?;
        Ok(events(subscription.wait(
            Duration::from_millis(u64::from(timeout_ms)),
            max as usize,
        )))
    })
}

/// Ends a subscription (of events or of a query): no more events, no more doorbell calls
/// once this returns.
///
/// # Safety
/// `out` is NULL or points to a writable `TsBuf`.
#[no_mangle]
pub unsafe extern "C" fn ts_unsubscribe(sub: u64, out: *mut TsBuf) -> i32 {
    guard(out, || {
        handles::remove_sub(sub)?.close();
        Ok(done())
    })
}
