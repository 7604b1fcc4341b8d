// Restoration state shaped like Flutter's RestorationBucket: buckets by name, values by key,
// kept next to the data so a killed app comes back where the user left it. Reads come from
// memory (the tree is loaded at open); writes commit at once (or inside writeTransaction,
// together with data).

import 'dart:ffi' as ffi;

import 'bindings.g.dart' as native;
import 'native.dart';

/// How long restoration state lives.
enum RestorationLifetime {
  /// Cleared when the app starts fresh; kept when the OS killed the app and restores it
  /// (pass the restoration id the platform handed back to `TidesyncDatabase.open`).
  session,

  /// Always kept.
  persistent,
}

/// One bucket of restoration state: `db.restoration().child('checkout').write('draft', ...)`.
///
/// Values are what Flutter's StandardMessageCodec carries: null, bool, int, double, String,
/// `Uint8List` (as `{"$bytes": hex}`), List and Map with String keys.
class RestorationBucket {
  RestorationBucket.root(this._db, this.lifetime) : path = '';

  RestorationBucket._(this._db, this.lifetime, this.path);

  final int Function() _db;

  /// Which lifetime this bucket belongs to.
  final RestorationLifetime lifetime;

  /// `a/b/c`; empty for the root.
  final String path;

  /// The child bucket [name] (a bucket that holds nothing is empty, not an error).
  RestorationBucket child(String name) =>
      RestorationBucket._(_db, lifetime, path.isEmpty ? name : '$path/$name');

  Map<String, Object?> _at([String? key]) => <String, Object?>{
        'lifetime': lifetime.name,
        'bucket': path,
        if (key != null) 'key': key,
      };

  /// The value at [key], or `null`.
  Object? read(String key) {
    final Map<String, Object?> body = call((arena, ffi.Pointer<native.TsBuf> out) {
      final (ffi.Pointer<ffi.Uint8> at, int len) = jsonSpan(arena, _at(key));
      return native.ts_restore_get(_db(), at, len, out);
    });
    final Map<String, Object?>? entry = (body['entry'] as Map?)?.cast<String, Object?>();
    return entry?['value'];
  }

  /// Writes [value] at [key] (in its own transaction). [tag] and [version] name the value's
  /// type for migrations (see the restoration schema in docs/ffi.md).
  void write(String key, Object? value, {String tag = 'value', int version = 1}) {
    call((arena, ffi.Pointer<native.TsBuf> out) {
      final Map<String, Object?> at = _at(key)
        ..['entry'] = <String, Object?>{'tag': tag, 'version': version, 'value': value};
      final (ffi.Pointer<ffi.Uint8> ptr, int len) = jsonSpan(arena, at);
      return native.ts_restore_set(_db(), ptr, len, out);
    });
  }

  /// Removes the value at [key] (nothing happens if there is none).
  void remove(String key) {
    call((arena, ffi.Pointer<native.TsBuf> out) {
      final (ffi.Pointer<ffi.Uint8> at, int len) = jsonSpan(arena, _at(key));
      return native.ts_restore_remove(_db(), at, len, out);
    });
  }

  Map<String, Object?> _list() => call((arena, ffi.Pointer<native.TsBuf> out) {
        final (ffi.Pointer<ffi.Uint8> at, int len) = jsonSpan(arena, _at());
        return native.ts_restore_list(_db(), at, len, out);
      });

  /// The keys of this bucket's values, sorted.
  List<String> get keys => (_list()['entries']! as List)
      .map((Object? e) => (e! as Map)['key']! as String)
      .toList();

  /// The names of the child buckets that hold something.
  List<String> get children => (_list()['children']! as List).cast<String>();
}
