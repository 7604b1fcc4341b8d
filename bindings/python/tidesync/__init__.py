"""tidesync for Python: a typed wrapper over the C ABI (libtidesync) with ctypes.

    with tidesync.Database.open("app.db", server_url=url, spaces=["user:alice"], token=t) as db:
        db.put("user:alice/todos/t1", {"title": "Buy milk"})
        db.wait_synced(timeout=30)
        with db.subscribe() as events:
            for event in events.wait(timeout=1.0):
                print(event["type"])

Every call returns at once (the engine syncs on its own thread), but `wait_synced` and
`Subscription.wait`, which exist to wait. Errors raise `TidesyncError` with the ABI status and
the library's stable code. The C ABI itself is `tidesync._native.lib`; docs/ffi.md documents
it.
"""

from __future__ import annotations

import ctypes
import json
from typing import Any, Callable, Iterable, Optional

from . import _native
from ._native import TsBuf, lib

__all__ = ["Database", "LiveQuery", "Subscription", "TidesyncError", "STATUS", "abi_version"]

#: The ABI's status codes, by name (mirrors include/tidesync.h).
STATUS = {
    "TS_OK": 0,
    "TS_ERR_INVALID_ARGUMENT": 1,
    "TS_ERR_CLOSED": 2,
    "TS_ERR_PANIC": 3,
    "TS_ERR_NOT_FOUND": 4,
    "TS_ERR_TOO_LARGE": 5,
    "TS_ERR_BUSY": 6,
    "TS_ERR_DISK_FULL": 7,
    "TS_ERR_READ_ONLY": 8,
    "TS_ERR_DISK_IO": 9,
    "TS_ERR_CORRUPT": 10,
    "TS_ERR_NOT_TIDESYNC": 11,
    "TS_ERR_SCHEMA_TOO_NEW": 12,
    "TS_ERR_RESTORATION": 13,
    "TS_ERR_TIMEOUT": 14,
    "TS_ERR_SYNC_NEEDS_ATTENTION": 15,
    "TS_ERR_LOCAL_ONLY": 16,
    "TS_ERR_ALREADY_OPEN": 17,
    "TS_ERR_INTERNAL": 18,
}
_NAMES = {v: k for k, v in STATUS.items()}


class TidesyncError(Exception):
    """A call failed: `status` (a `TS_ERR_*` number), `code` (the library's stable code, e.g.
    `disk_full`), `message` (what happened and what to do)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{_NAMES.get(status, status)} ({code}): {message}")
        self.status = status
        self.code = code
        self.message = message


def abi_version() -> int:
    return lib.ts_abi_version()


def call(function: Callable[..., int], *args: Any) -> Any:
    """Calls `function(*args, &out)`, frees the buffer, returns its JSON or raises."""
    out = TsBuf()
    status = function(*args, ctypes.byref(out))
    try:
        text = ctypes.string_at(out.ptr, out.len) if out.ptr else b""
    finally:
        lib.ts_buf_free(ctypes.byref(out))
    body = json.loads(text) if text else {}
    if status != 0:
        raise TidesyncError(status, body.get("code", "?"), body.get("message", ""))
    return body


def _span(value: Any) -> tuple[Optional[bytes], int]:
    """A borrowed span: text and JSON values are encoded; bytes pass as they are."""
    if value is None:
        return None, 0
    if isinstance(value, bytes):
        return value, len(value)
    data = value.encode() if isinstance(value, str) else json.dumps(value).encode()
    return data, len(data)


class Subscription:
    """Events of one database, queued and coalesced by the library ("doorbell and drain")."""

    def __init__(self, handle: int, doorbell: Optional[Any]):
        self.handle = handle
        self._doorbell = doorbell  # keeps the ctypes callback alive

    def poll(self, max: int = 0) -> list[dict]:
        """The queued events (up to `max`; 0: all), without waiting."""
        return call(lib.ts_poll_events, self.handle, max)["events"]

    def wait(self, timeout: float = 1.0, max: int = 0) -> list[dict]:
        """Waits up to `timeout` seconds for events, then drains them."""
        return call(lib.ts_wait_events, self.handle, int(timeout * 1000), max)["events"]

    def close(self) -> None:
        call(lib.ts_unsubscribe, self.handle)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LiveQuery(Subscription):
    """A live query: `query_result` events (the result now, then each change of it, with
    `added`, `removed`, `changed` ids since the last one taken)."""

    def next(self, timeout: float = 1.0) -> Optional[dict]:
        """The next result, waiting up to `timeout` seconds (`None` if none came)."""
        events = self.wait(timeout)
        return events[-1] if events else None


def _query_form(selector: Optional[dict], sort: Optional[list], limit: Optional[int],
                fields: Optional[list], after: Optional[str]) -> dict:
    items = (("selector", selector), ("sort", sort), ("limit", limit), ("fields", fields),
             ("after", after))
    return {k: v for k, v in items if v is not None}


class Database:
    """One open tidesync database (a handle to the process's engine for that file)."""

    def __init__(self, handle: int, opened: dict):
        self.handle = handle
        #: `ts_open`'s answer: attached, client_id, session_id, restoration_issues.
        self.opened = opened

    @classmethod
    def open(
        cls,
        path: str,
        server_url: Optional[str] = None,
        spaces: Iterable[str] = (),
        token: Optional[str] = None,
        **options: Any,
    ) -> "Database":
        """Opens `path` (see docs/ffi.md for every option: durability, busy_timeout_ms,
        session, push_batch, pull_limit, compression, request_timeout_ms, start_online,
        token_wait_ms)."""
        config: dict[str, Any] = {"path": str(path), **options}
        if server_url is not None:
            config["server_url"] = server_url
            config["spaces"] = list(spaces)
        if token is not None:
            config["token"] = token
        handle = ctypes.c_uint64(0)
        data, size = _span(config)
        opened = call(lib.ts_open, data, size, ctypes.byref(handle))
        return cls(handle.value, opened)

    def close(self) -> bool:
        """Closes this handle; `True` if it was the engine's last (the engine stopped)."""
        return call(lib.ts_close, self.handle)["stopped"]

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- records ----------------------------------------------------------------------

    def get(self, key: str) -> Optional[dict]:
        return call(lib.ts_get, self.handle, *_span(key))["record"]

    def list(self, collection: str, after: Optional[str] = None, limit: Optional[int] = None) -> tuple[list[dict], Optional[str]]:
        options = {k: v for k, v in (("after", after), ("limit", limit)) if v is not None}
        body = call(lib.ts_list, self.handle, *_span(collection), *_span(options or None))
        return body["records"], body["next"]

    def put(self, key: str, doc: dict) -> dict:
        return call(lib.ts_put, self.handle, *_span(key), *_span(doc))

    def patch(self, key: str, patch: dict) -> dict:
        return call(lib.ts_patch, self.handle, *_span(key), *_span(patch))

    def delete(self, key: str) -> dict:
        return call(lib.ts_delete, self.handle, *_span(key))

    def write_batch(self, writes: Iterable[dict] = (), restore: Iterable[dict] = ()) -> list[dict]:
        """Writes and restoration changes in one transaction (all or none)."""
        batch = {"writes": list(writes), "restore": list(restore)}
        return call(lib.ts_write_batch, self.handle, *_span(batch))["receipts"]

    # ---- queries ------------------------------------------------------------------------

    def query(self, collection: str, selector: Optional[dict] = None, sort: Optional[list] = None,
              limit: Optional[int] = None, fields: Optional[list] = None,
              after: Optional[str] = None) -> tuple[list[dict], Optional[str]]:
        """One page of a Mango query over `SPACE/COLLECTION` (docs/queries.md): the records
        and the `after` cursor of the next page (`None` on the last)."""
        form = _query_form(selector, sort, limit, fields, after)
        body = call(lib.ts_query, self.handle, *_span(collection), *_span(form))
        return body["records"], body["next"]

    def count(self, collection: str, selector: Optional[dict] = None) -> int:
        form = _query_form(selector, None, None, None, None)
        return call(lib.ts_count, self.handle, *_span(collection), *_span(form))["count"]

    def watch(self, collection: str, selector: Optional[dict] = None, sort: Optional[list] = None,
              limit: Optional[int] = None, fields: Optional[list] = None,
              doorbell: Optional[Callable[[], None]] = None) -> LiveQuery:
        """A live query (see `LiveQuery`); `doorbell()` as for `subscribe`."""
        form = _query_form(selector, sort, limit, fields, None)
        bell = _native.DOORBELL(lambda _ctx: doorbell()) if doorbell else _native.DOORBELL()
        handle = ctypes.c_uint64(0)
        call(lib.ts_watch_query, self.handle, *_span(collection), *_span(form), bell, None,
             _native.DART_POST(), 0, ctypes.byref(handle))
        return LiveQuery(handle.value, bell)

    # ---- sync ---------------------------------------------------------------------------

    def set_network(self, online: bool) -> None:
        call(lib.ts_set_network, self.handle, 1 if online else 0)

    def sync_now(self) -> None:
        call(lib.ts_sync_now, self.handle)

    def pause(self) -> None:
        call(lib.ts_pause, self.handle)

    def resume(self) -> None:
        call(lib.ts_resume, self.handle)

    def status(self) -> dict:
        return call(lib.ts_status, self.handle)

    def wait_synced(self, timeout: float = 30.0) -> dict:
        return call(lib.ts_wait_synced, self.handle, int(timeout * 1000))

    def set_token(self, token: Optional[str]) -> None:
        call(lib.ts_set_token, self.handle, *_span(token or ""))

    # ---- what the server decided --------------------------------------------------------

    def mutation_state(self, seq: int) -> dict:
        return call(lib.ts_mutation_state, self.handle, seq)

    def conflicts(self) -> list[dict]:
        return call(lib.ts_conflicts, self.handle)["conflicts"]

    def resolve_conflict(self, id: int, keep: Optional[str] = None, merged: Optional[dict] = None) -> Optional[dict]:
        resolution = {"merged": merged} if merged is not None else {"keep": keep}
        return call(lib.ts_resolve_conflict, self.handle, id, *_span(resolution))["receipt"]

    def rejections(self) -> list[dict]:
        return call(lib.ts_rejections, self.handle)["rejections"]

    def retry_rejection(self, seq: int) -> list[dict]:
        return call(lib.ts_retry_rejection, self.handle, seq)["receipts"]

    def discard_rejection(self, seq: int) -> int:
        return call(lib.ts_discard_rejection, self.handle, seq)["discarded"]

    # ---- restoration state --------------------------------------------------------------

    def restore_get(self, lifetime: str, bucket: str, key: str) -> Optional[dict]:
        at = {"lifetime": lifetime, "bucket": bucket, "key": key}
        return call(lib.ts_restore_get, self.handle, *_span(at))["entry"]

    def restore_set(self, lifetime: str, bucket: str, key: str, tag: str, version: int, value: Any) -> None:
        at = {"lifetime": lifetime, "bucket": bucket, "key": key,
              "entry": {"tag": tag, "version": version, "value": value}}
        call(lib.ts_restore_set, self.handle, *_span(at))

    def restore_remove(self, lifetime: str, bucket: str, key: str) -> None:
        at = {"lifetime": lifetime, "bucket": bucket, "key": key}
        call(lib.ts_restore_remove, self.handle, *_span(at))

    def restore_list(self, lifetime: str, bucket: str = "") -> dict:
        at = {"lifetime": lifetime, "bucket": bucket}
        return call(lib.ts_restore_list, self.handle, *_span(at))

    # ---- events -------------------------------------------------------------------------

    def subscribe(self, capacity: int = 0, doorbell: Optional[Callable[[], None]] = None) -> Subscription:
        """Events of this database. `doorbell()` is called from a library thread whenever the
        queue goes from empty to non-empty; it must return quickly (wake a waiter)."""
        bell = _native.DOORBELL(lambda _ctx: doorbell()) if doorbell else _native.DOORBELL()
        handle = ctypes.c_uint64(0)
        call(lib.ts_subscribe, self.handle, capacity, bell, None, _native.DART_POST(), 0,
             ctypes.byref(handle))
        return Subscription(handle.value, bell)
