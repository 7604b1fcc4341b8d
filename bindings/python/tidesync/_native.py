"""The C ABI as ctypes declarations, and where the library is found.

`TIDESYNC_LIB` names the library file; otherwise the newest `libtidesync.so` (`.dylib`,
`tidesync.dll`) of the repository's `target/debug` or `target/release` is used.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path


class TsBuf(ctypes.Structure):
    """A buffer the library owns until `ts_buf_free`."""

    _fields_ = [("ptr", ctypes.POINTER(ctypes.c_uint8)), ("len", ctypes.c_size_t)]


#: `void (*)(void *context)`
DOORBELL = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
#: `bool (*)(int64_t port, void *message)`
DART_POST = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_int64, ctypes.c_void_p)

_u8p = ctypes.c_char_p  # borrowed spans: bytes objects (or None with length 0)
_size = ctypes.c_size_t
_u64 = ctypes.c_uint64
_i32 = ctypes.c_int32
_out = ctypes.POINTER(TsBuf)

#: name -> (argument types, result type), exactly as in include/tidesync.h.
SIGNATURES = {
    "ts_abi_version": ([], ctypes.c_uint32),
    "ts_buf_free": ([_out], None),
    "ts_debug_panic": ([_out], _i32),
    "ts_open": ([_u8p, _size, ctypes.POINTER(_u64), _out], _i32),
    "ts_close": ([_u64, _out], _i32),
    "ts_get": ([_u64, _u8p, _size, _out], _i32),
    "ts_list": ([_u64, _u8p, _size, _u8p, _size, _out], _i32),
    "ts_put": ([_u64, _u8p, _size, _u8p, _size, _out], _i32),
    "ts_patch": ([_u64, _u8p, _size, _u8p, _size, _out], _i32),
    "ts_delete": ([_u64, _u8p, _size, _out], _i32),
    "ts_write_batch": ([_u64, _u8p, _size, _out], _i32),
    "ts_set_network": ([_u64, _i32, _out], _i32),
    "ts_sync_now": ([_u64, _out], _i32),
    "ts_pause": ([_u64, _out], _i32),
    "ts_resume": ([_u64, _out], _i32),
    "ts_status": ([_u64, _out], _i32),
    "ts_wait_synced": ([_u64, ctypes.c_uint32, _out], _i32),
    "ts_set_token": ([_u64, _u8p, _size, _out], _i32),
    "ts_mutation_state": ([_u64, _u64, _out], _i32),
    "ts_conflicts": ([_u64, _out], _i32),
    "ts_resolve_conflict": ([_u64, ctypes.c_int64, _u8p, _size, _out], _i32),
    "ts_rejections": ([_u64, _out], _i32),
    "ts_retry_rejection": ([_u64, _u64, _out], _i32),
    "ts_discard_rejection": ([_u64, _u64, _out], _i32),
    "ts_restore_get": ([_u64, _u8p, _size, _out], _i32),
    "ts_restore_set": ([_u64, _u8p, _size, _out], _i32),
    "ts_restore_remove": ([_u64, _u8p, _size, _out], _i32),
    "ts_restore_list": ([_u64, _u8p, _size, _out], _i32),
    "ts_subscribe": (
        [_u64, ctypes.c_uint32, DOORBELL, ctypes.c_void_p, DART_POST, ctypes.c_int64,
         ctypes.POINTER(_u64), _out],
        _i32,
    ),
    "ts_query": ([_u64, _u8p, _size, _u8p, _size, _out], _i32),
    "ts_count": ([_u64, _u8p, _size, _u8p, _size, _out], _i32),
    "ts_watch_query": (
        [_u64, _u8p, _size, _u8p, _size, DOORBELL, ctypes.c_void_p, DART_POST, ctypes.c_int64,
         ctypes.POINTER(_u64), _out],
        _i32,
    ),
    "ts_poll_events": ([_u64, ctypes.c_uint32, _out], _i32),
    "ts_wait_events": ([_u64, ctypes.c_uint32, ctypes.c_uint32, _out], _i32),
    "ts_unsubscribe": ([_u64, _out], _i32),
}


def _library_path() -> Path:
    explicit = os.environ.get("TIDESYNC_LIB")
    if explicit:
        return Path(explicit)
    name = {"darwin": "libtidesync.dylib", "win32": "tidesync.dll"}.get(sys.platform, "libtidesync.so")
    here = Path(__file__).resolve()
    for root in here.parents:
        candidates = [root / "target" / p / name for p in ("debug", "release")]
        found = [c for c in candidates if c.exists()]
        if found:
            return max(found, key=lambda c: c.stat().st_mtime)
    raise OSError(
        f"cannot find {name}: build it with `cargo build -p tidesync-ffi`, or set TIDESYNC_LIB"
    )


def load() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(_library_path()))
    for name, (args, result) in SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes = args
        function.restype = result
    return lib


lib = load()
