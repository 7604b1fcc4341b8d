// Calling the C ABI: borrowed UTF-8 spans in, Rust-owned JSON buffers out (freed once), a
// status that becomes a TidesyncException. Everything here is synchronous and returns at
// once; nothing waits on the network.

import 'dart:convert';
import 'dart:ffi' as ffi;
import 'dart:typed_data';

import 'package:ffi/ffi.dart';

import 'bindings.g.dart' as native;

/// A call failed: [status] is the ABI's `TS_ERR_*` number, [code] the library's stable code
/// (`disk_full`, `invalid_argument`, `closed`, ...), [message] what happened and what to do.
class TidesyncException implements Exception {
  TidesyncException(this.status, this.code, this.message);

  final int status;
  final String code;
  final String message;

  /// `true` when the same call may succeed later without anyone acting (the database was
  /// locked, the disk full, the storage unwritable for a while).
  bool get isRetryable =>
      status == native.TS_ERR_BUSY ||
      status == native.TS_ERR_DISK_FULL ||
      status == native.TS_ERR_READ_ONLY ||
      status == native.TS_ERR_DISK_IO;

  @override
  String toString() => 'TidesyncException($code): $message';
}

/// Copies [text] into native memory owned by [arena]; returns the pointer and the length.
(ffi.Pointer<ffi.Uint8>, int) span(Arena arena, String text) {
  final Uint8List bytes = utf8.encode(text);
  if (bytes.isEmpty) {
    return (ffi.nullptr, 0);
  }
  final ffi.Pointer<ffi.Uint8> ptr = arena<ffi.Uint8>(bytes.length);
  ptr.asTypedList(bytes.length).setAll(0, bytes);
  return (ptr, bytes.length);
}

/// [value] as a JSON span.
(ffi.Pointer<ffi.Uint8>, int) jsonSpan(Arena arena, Object? value) =>
    span(arena, jsonEncode(value));

/// Runs one ABI call that writes to `out`: returns the decoded JSON, or throws.
Map<String, Object?> call(int Function(Arena arena, ffi.Pointer<native.TsBuf> out) f) {
  return using((Arena arena) {
    final ffi.Pointer<native.TsBuf> out = arena<native.TsBuf>();
    final int status = f(arena, out);
    final Map<String, Object?> body = _take(out);
    if (status != native.TS_OK) {
      throw TidesyncException(
        status,
        (body['code'] as String?) ?? 'unknown',
        (body['message'] as String?) ?? '',
      );
    }
    return body;
  });
}

/// Reads and frees the buffer.
Map<String, Object?> _take(ffi.Pointer<native.TsBuf> out) {
  try {
    if (out.ref.ptr == ffi.nullptr || out.ref.len == 0) {
      return <String, Object?>{};
    }
    final String text = utf8.decode(out.ref.ptr.asTypedList(out.ref.len));
    return (jsonDecode(text) as Map).cast<String, Object?>();
  } finally {
    native.ts_buf_free(out);
  }
}
