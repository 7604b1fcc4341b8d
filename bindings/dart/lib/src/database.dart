// TidesyncDatabase: what a Flutter app holds. Every call is synchronous and local (the
// engine syncs on its own native thread); events arrive through a ReceivePort doorbell and
// are drained on this isolate, so native code never calls into Dart.

import 'dart:async';
import 'dart:ffi' as ffi;
import 'dart:isolate';

import 'package:ffi/ffi.dart';

import 'bindings.g.dart' as native;
import 'connector.dart';
import 'models.dart';
import 'native.dart';
import 'restoration.dart';

/// Options of [TidesyncDatabase.open] (every one is documented in docs/ffi.md).
class TidesyncOptions {
  const TidesyncOptions({
    this.durability = 'full',
    this.busyTimeoutMs,
    this.pushBatch,
    this.pullLimit,
    this.compression = true,
    this.requestTimeoutMs,
    this.startOnline = true,
    this.tokenWaitMs,
    this.indexes = const <TidesyncIndex>[],
    this.liveQueryThrottleMs,
    this.externalWritesPollMs,
  });

  /// `full` (a returned write survives power loss) or `normal` (survives an app crash).
  final String durability;
  final int? busyTimeoutMs;
  final int? pushBatch;
  final int? pullLimit;

  /// gzip/zstd on the wire, negotiated with the server.
  final bool compression;
  final int? requestTimeoutMs;
  final bool startOnline;
  final int? tokenWaitMs;

  /// Indexes for the app's queries (the file's are made exactly these at open).
  final List<TidesyncIndex> indexes;

  /// How long live queries gather changes before running again (default 5 ms).
  final int? liveQueryThrottleMs;

  /// How often to check whether another connection committed to the file (an app
  /// extension, a background isolate's own engine): its changes are then pushed and live
  /// queries re-run (default 1000 ms; 0 never checks).
  final int? externalWritesPollMs;
}

/// An index on [fields] of [collection] (in every space): a field name (ascending) or
/// `{field: 'desc'}`, in order. Declare one for each query a screen runs often: equality
/// fields first, then the sort field.
class TidesyncIndex {
  const TidesyncIndex(this.collection, this.fields);

  final String collection;
  final List<Object> fields;

  Map<String, Object?> toJson() =>
      <String, Object?>{'collection': collection, 'fields': fields};
}

/// Writes (and restoration changes) of one [TidesyncDatabase.writeTransaction].
class WriteBatch {
  final List<Map<String, Object?>> _writes = <Map<String, Object?>>[];
  final List<Map<String, Object?>> _restore = <Map<String, Object?>>[];

  void put(String key, Map<String, Object?> doc) =>
      _writes.add(<String, Object?>{'op': 'put', 'key': key, 'doc': doc});

  void patch(String key, Map<String, Object?> patch) =>
      _writes.add(<String, Object?>{'op': 'patch', 'key': key, 'doc': patch});

  void delete(String key) => _writes.add(<String, Object?>{'op': 'delete', 'key': key});

  /// Writes restoration state in the same transaction ("place the order and clear the draft").
  void restore(RestorationBucket bucket, String key, Object? value,
          {String tag = 'value', int version = 1}) =>
      _restore.add(<String, Object?>{
        'op': 'set',
        'lifetime': bucket.lifetime.name,
        'bucket': bucket.path,
        'key': key,
        'entry': <String, Object?>{'tag': tag, 'version': version, 'value': value},
      });

  /// Removes restoration state in the same transaction.
  void forget(RestorationBucket bucket, String key) => _restore.add(<String, Object?>{
        'op': 'remove',
        'lifetime': bucket.lifetime.name,
        'bucket': bucket.path,
        'key': key,
      });

  Map<String, Object?> toJson() =>
      <String, Object?>{'writes': _writes, 'restore': _restore};
}

/// An open tidesync database.
///
/// ```dart
/// final db = await TidesyncDatabase.open(
///   path: '${dir.path}/app.db',
///   serverUrl: 'https://sync.example.com',
///   spaces: ['user:$userId'],
///   connector: MyConnector(),
/// );
/// db.put('user:$userId/todos/${uuid()}', {'title': 'Buy milk'});
/// db.statusStream.listen((s) => print('${s.phase} ${s.pending} pending'));
/// ```
///
/// Opening a file that is already open in this process (another isolate, or after a hot
/// restart, whose old handles were never closed) attaches to the same engine.
class TidesyncDatabase {
  TidesyncDatabase._(this._handle, this.clientId, this.sessionId, this.attached, this._connector) {
    _subscribe();
  }

  int _handle;
  final TidesyncConnector? _connector;

  /// This installation's id.
  final String clientId;

  /// The id of this launch's session restoration state: save it with the platform's state
  /// (`RestorationMixin`, `restorationId`) and pass it back as `restorationId` when the OS
  /// restores the app.
  final String sessionId;

  /// Whether this open attached to an engine that was already running (hot restart).
  final bool attached;

  int _subscription = 0;
  ReceivePort? _doorbell;
  final StreamController<SyncStatus> _status = StreamController<SyncStatus>.broadcast();
  final StreamController<Conflict> _conflicts = StreamController<Conflict>.broadcast();
  final StreamController<Map<String, Object?>> _rejections =
      StreamController<Map<String, Object?>>.broadcast();
  SyncStatus? _last;

  /// Open live queries and how to stop each: stopped with the database.
  final Map<StreamController<QueryResult>, void Function()> _live =
      <StreamController<QueryResult>, void Function()>{};

  /// Opens (creating it) the database at [path]. Without [serverUrl] it works locally only.
  /// [restorationId]: the session id the platform handed back after it killed the app
  /// (keeps session restoration state); absent: a fresh start.
  static Future<TidesyncDatabase> open({
    required String path,
    String? serverUrl,
    List<String> spaces = const <String>[],
    TidesyncConnector? connector,
    String? restorationId,
    TidesyncOptions options = const TidesyncOptions(),
  }) async {
    final String? token = connector == null ? null : await connector.fetchToken();
    final Map<String, Object?> config = <String, Object?>{
      'path': path,
      if (serverUrl != null) 'server_url': serverUrl,
      if (serverUrl != null) 'spaces': spaces,
      if (token != null) 'token': token,
      'durability': options.durability,
      if (options.busyTimeoutMs != null) 'busy_timeout_ms': options.busyTimeoutMs,
      if (options.pushBatch != null) 'push_batch': options.pushBatch,
      if (options.pullLimit != null) 'pull_limit': options.pullLimit,
      'compression': options.compression,
      if (options.requestTimeoutMs != null) 'request_timeout_ms': options.requestTimeoutMs,
      'start_online': options.startOnline,
      if (options.tokenWaitMs != null) 'token_wait_ms': options.tokenWaitMs,
      if (options.indexes.isNotEmpty)
        'indexes': options.indexes.map((TidesyncIndex i) => i.toJson()).toList(),
      if (options.liveQueryThrottleMs != null)
        'live_query_throttle_ms': options.liveQueryThrottleMs,
      if (options.externalWritesPollMs != null)
        'external_writes_poll_ms': options.externalWritesPollMs,
      if (restorationId != null) 'session': restorationId,
    };
    int handle = 0;
    final Map<String, Object?> opened = call((arena, ffi.Pointer<native.TsBuf> out) {
      final (ffi.Pointer<ffi.Uint8> ptr, int len) = jsonSpan(arena, config);
      final ffi.Pointer<ffi.Uint64> db = arena<ffi.Uint64>();
      final int status = native.ts_open(ptr, len, db, out);
      handle = db.value;
      return status;
    });
    return TidesyncDatabase._(
      handle,
      opened['client_id']! as String,
      opened['session_id']! as String,
      opened['attached']! as bool,
      connector,
    );
  }

  int _db() {
    if (_handle == 0) {
      throw TidesyncException(native.TS_ERR_CLOSED, 'closed', 'the database is closed');
    }
    return _handle;
  }

  // ---- records --------------------------------------------------------------------------

  /// The record at [key] (`SPACE/COLLECTION/ID`) from the local view.
  TidesyncRecord? get(String key) {
    final Map<String, Object?> body = call((arena, ffi.Pointer<native.TsBuf> out) {
      final (ffi.Pointer<ffi.Uint8> k, int len) = span(arena, key);
      return native.ts_get(_db(), k, len, out);
    });
    final Map<String, Object?>? record = (body['record'] as Map?)?.cast<String, Object?>();
    return record == null ? null : TidesyncRecord.fromJson(record);
  }

  /// One page of [collection] (`SPACE/COLLECTION`) in id order.
  RecordPage list(String collection, {String? after, int? limit}) {
    final Map<String, Object?> body = call((arena, ffi.Pointer<native.TsBuf> out) {
      final (ffi.Pointer<ffi.Uint8> c, int clen) = span(arena, collection);
      final (ffi.Pointer<ffi.Uint8> o, int olen) = jsonSpan(arena, <String, Object?>{
        if (after != null) 'after': after,
        if (limit != null) 'limit': limit,
      });
      return native.ts_list(_db(), c, clen, o, olen, out);
    });
    return RecordPage(
      (body['records']! as List)
          .map((Object? r) => TidesyncRecord.fromJson((r! as Map).cast<String, Object?>()))
          .toList(),
      body['next'] as String?,
    );
  }

  WriteReceipt _write(
    String key,
    Map<String, Object?>? doc,
    int Function(int, ffi.Pointer<ffi.Uint8>, int, ffi.Pointer<ffi.Uint8>, int,
            ffi.Pointer<native.TsBuf>)?
        write,
  ) {
    final Map<String, Object?> body = call((arena, ffi.Pointer<native.TsBuf> out) {
      final (ffi.Pointer<ffi.Uint8> k, int klen) = span(arena, key);
      if (write == null) {
        return native.ts_delete(_db(), k, klen, out);
      }
      final (ffi.Pointer<ffi.Uint8> d, int dlen) = jsonSpan(arena, doc);
      return write(_db(), k, klen, d, dlen, out);
    });
    return WriteReceipt.fromJson(body);
  }

  /// Replaces the record at [key]: in the local view at once, queued for the server.
  WriteReceipt put(String key, Map<String, Object?> doc) => _write(key, doc, native.ts_put);

  /// Applies a JSON merge patch (`null` removes a field).
  WriteReceipt patch(String key, Map<String, Object?> patch) =>
      _write(key, patch, native.ts_patch);

  /// Deletes the record at [key].
  WriteReceipt delete(String key) => _write(key, null, null);

  /// Commits everything [build] adds, data and restoration state, in one transaction (or
  /// nothing, if it throws); the server applies the writes all or none.
  List<WriteReceipt> writeTransaction(void Function(WriteBatch batch) build) {
    final WriteBatch batch = WriteBatch();
    build(batch);
    final Map<String, Object?> body = call((arena, ffi.Pointer<native.TsBuf> out) {
      final (ffi.Pointer<ffi.Uint8> b, int len) = jsonSpan(arena, batch.toJson());
      return native.ts_write_batch(_db(), b, len, out);
    });
    return (body['receipts']! as List)
        .map((Object? r) => WriteReceipt.fromJson((r! as Map).cast<String, Object?>()))
        .toList();
  }

  // ---- sync --------------------------------------------------------------------------

  Map<String, Object?> _control(
          int Function(int db, ffi.Pointer<native.TsBuf> out) f) =>
      call((arena, ffi.Pointer<native.TsBuf> out) => f(_db(), out));

  /// The app's connectivity (see `TidesyncConnectivity` for connectivity_plus).
  void setNetwork(bool online) =>
      call((arena, ffi.Pointer<native.TsBuf> out) => native.ts_set_network(_db(), online ? 1 : 0, out));

  /// Syncs now (also after an error that needed attention).
  void syncNow() => _control(native.ts_sync_now);

  /// No network activity (the app went to the background) until [resume].
  void pause() => _control(native.ts_pause);

  void resume() => _control(native.ts_resume);

  /// The status now.
  SyncStatus get currentStatus => _last ?? SyncStatus.fromJson(_control(native.ts_status));

  /// Every status change, starting with the current status.
  Stream<SyncStatus> get statusStream async* {
    yield currentStatus;
    yield* _status.stream;
  }

  /// Completes once a complete download finished (at once if one ever did on this device).
  Future<SyncStatus> waitForFirstSync({Duration timeout = const Duration(minutes: 2)}) =>
      statusStream.firstWhere((SyncStatus s) => s.hasSynced).timeout(timeout);

  /// Completes when everything written so far is on the server and downloaded back.
  Future<SyncStatus> waitForSync({Duration timeout = const Duration(minutes: 2)}) =>
      statusStream.firstWhere((SyncStatus s) => s.synced).timeout(timeout);

  // ---- queries --------------------------------------------------------------------------

  /// One page of [query] over [collection] (`SPACE/COLLECTION`), from the local view.
  QueryPage query(String collection, [TidesyncQuery query = const TidesyncQuery()]) =>
      QueryPage.fromJson(_query(native.ts_query, collection, query));

  /// How many records [query] selects (its sort, limit and cursor do not matter).
  int count(String collection, [TidesyncQuery query = const TidesyncQuery()]) =>
      _query(native.ts_count, collection, query)['count']! as int;

  Map<String, Object?> _query(
    int Function(int, ffi.Pointer<ffi.Uint8>, int, ffi.Pointer<ffi.Uint8>, int,
            ffi.Pointer<native.TsBuf>)
        f,
    String collection,
    TidesyncQuery query,
  ) =>
      call((arena, ffi.Pointer<native.TsBuf> out) {
        final (ffi.Pointer<ffi.Uint8> c, int clen) = span(arena, collection);
        final (ffi.Pointer<ffi.Uint8> q, int qlen) = jsonSpan(arena, query.toJson());
        return f(_db(), c, clen, q, qlen, out);
      });

  /// [query] over [collection], live: the result now, then again whenever a local write, a
  /// download, a rolled-back rejection, a resolved conflict or a base reset changes it, each
  /// time with the ids added, removed and changed. Results are computed on a native thread
  /// (never this isolate); a burst of changes costs one evaluation, an unchanged result is
  /// not delivered, and results the stream has not taken yet merge into one. Cancel the
  /// subscription (a `StreamBuilder` does) to stop it. An invalid query throws
  /// [TidesyncException] at once, naming the offending part.
  Stream<QueryResult> watch(String collection, [TidesyncQuery query = const TidesyncQuery()]) {
    final ReceivePort port = ReceivePort('tidesync query $collection');
    int sub = 0;
    try {
      call((arena, ffi.Pointer<native.TsBuf> out) {
        final (ffi.Pointer<ffi.Uint8> c, int clen) = span(arena, collection);
        final (ffi.Pointer<ffi.Uint8> q, int qlen) = jsonSpan(arena, query.toJson());
        final ffi.Pointer<ffi.Uint64> handle = arena<ffi.Uint64>();
        final int status = native.ts_watch_query(_db(), c, clen, q, qlen, ffi.nullptr,
            ffi.nullptr, ffi.NativeApi.postCObject.cast(), port.sendPort.nativePort, handle, out);
        sub = handle.value;
        return status;
      });
    } catch (_) {
      port.close();
      rethrow;
    }
    late final StreamController<QueryResult> results;
    void stop() {
      if (sub != 0) {
        call((arena, ffi.Pointer<native.TsBuf> out) => native.ts_unsubscribe(sub, out));
        sub = 0;
      }
      port.close();
      _live.remove(results);
    }

    void drain() {
      if (sub == 0 || results.isPaused) {
        return; // a paused stream drains when it resumes; results merge meanwhile
      }
      final Map<String, Object?> body =
          call((arena, ffi.Pointer<native.TsBuf> out) => native.ts_poll_events(sub, 0, out));
      for (final Object? event in body['events']! as List) {
        final Map<String, Object?> e = (event! as Map).cast<String, Object?>();
        if (e['type'] == 'query_result') {
          results.add(QueryResult.fromJson(e));
        }
      }
    }

    results = StreamController<QueryResult>(
      onListen: () {
        port.listen((Object? _) => drain());
        drain();
      },
      onResume: drain,
      onCancel: stop,
    );
    _live[results] = stop;
    return results.stream;
  }

  // ---- what the server decided ----------------------------------------------------------

  /// Conflicts as they are recorded.
  Stream<Conflict> get conflictStream => _conflicts.stream;

  /// Unresolved conflicts.
  List<Conflict> conflicts() => (_control(native.ts_conflicts)['conflicts']! as List)
      .map((Object? c) => Conflict.fromJson((c! as Map).cast<String, Object?>()))
      .toList();

  /// Settles a conflict; returns the mutation that enforces it, if one was needed.
  WriteReceipt? resolveConflict(int id, ConflictResolution resolution) {
    final Map<String, Object?> body = call((arena, ffi.Pointer<native.TsBuf> out) {
      final (ffi.Pointer<ffi.Uint8> r, int len) = jsonSpan(arena, resolution.toJson());
      return native.ts_resolve_conflict(_db(), id, r, len, out);
    });
    final Map<String, Object?>? receipt = (body['receipt'] as Map?)?.cast<String, Object?>();
    return receipt == null ? null : WriteReceipt.fromJson(receipt);
  }

  /// Rejections as they arrive (`{"seq", "code", "message"}`; `rejections()` has the rest).
  Stream<Map<String, Object?>> get rejectionStream => _rejections.stream;

  List<Rejection> rejections() => (_control(native.ts_rejections)['rejections']! as List)
      .map((Object? r) => Rejection.fromJson((r! as Map).cast<String, Object?>()))
      .toList();

  /// Queues the rejected transaction of [seq] again, as new changes.
  List<WriteReceipt> retryRejection(int seq) =>
      (call((arena, ffi.Pointer<native.TsBuf> out) => native.ts_retry_rejection(_db(), seq, out))['receipts']!
              as List)
          .map((Object? r) => WriteReceipt.fromJson((r! as Map).cast<String, Object?>()))
          .toList();

  /// Forgets the rejected transaction of [seq].
  void discardRejection(int seq) =>
      call((arena, ffi.Pointer<native.TsBuf> out) => native.ts_discard_rejection(_db(), seq, out));

  /// Where change [seq] is: `queued`, `sending`, `acked`, `confirmed`, `rejected`.
  String? mutationState(int seq) => call((arena, ffi.Pointer<native.TsBuf> out) =>
      native.ts_mutation_state(_db(), seq, out))['state'] as String?;

  // ---- restoration ----------------------------------------------------------------------

  /// The root restoration bucket of [lifetime].
  RestorationBucket restoration([RestorationLifetime lifetime = RestorationLifetime.persistent]) =>
      RestorationBucket.root(_db, lifetime);

  // ---- events ---------------------------------------------------------------------------

  void _subscribe() {
    final ReceivePort port = ReceivePort('tidesync events');
    _doorbell = port;
    call((arena, ffi.Pointer<native.TsBuf> out) {
      final ffi.Pointer<ffi.Uint64> sub = arena<ffi.Uint64>();
      final int status = native.ts_subscribe(
        _db(),
        0,
        ffi.nullptr,
        ffi.nullptr,
        ffi.NativeApi.postCObject.cast(),
        port.sendPort.nativePort,
        sub,
        out,
      );
      _subscription = sub.value;
      return status;
    });
    port.listen((Object? _) => _drain());
    _drain();
  }

  /// Takes what the doorbell announced, on this isolate.
  void _drain() {
    if (_subscription == 0) {
      return;
    }
    final Map<String, Object?> body = call((arena, ffi.Pointer<native.TsBuf> out) =>
        native.ts_poll_events(_subscription, 0, out));
    for (final Object? raw in body['events']! as List) {
      final Map<String, Object?> event = (raw! as Map).cast<String, Object?>();
      switch (event['type']) {
        case 'status':
          _last = SyncStatus.fromJson((event['status']! as Map).cast<String, Object?>());
          _status.add(_last!);
        case 'conflict':
          // The event names the change; the recorded conflict (with its id) is in the store.
          for (final Conflict conflict in conflicts()) {
            if (conflict.seq == event['seq']) {
              _conflicts.add(conflict);
            }
          }
        case 'rejected':
          _rejections.add(event);
        case 'token_expired':
          _refreshToken();
      }
    }
  }

  Future<void> _refreshToken() async {
    final TidesyncConnector? connector = _connector;
    if (connector == null) {
      return;
    }
    final String? token = await connector.fetchToken();
    call((arena, ffi.Pointer<native.TsBuf> out) {
      final (ffi.Pointer<ffi.Uint8> t, int len) = span(arena, token ?? '');
      return native.ts_set_token(_db(), t, len, out);
    });
  }

  /// Closes this handle. The last handle of the file stops its engine; unsynced changes stay
  /// in the file and continue at the next open.
  Future<void> close() async {
    if (_handle == 0) {
      return;
    }
    call((arena, ffi.Pointer<native.TsBuf> out) => native.ts_unsubscribe(_subscription, out));
    _subscription = 0;
    _doorbell?.close();
    for (final MapEntry<StreamController<QueryResult>, void Function()> live
        in _live.entries.toList()) {
      live.value(); // unsubscribes
      unawaited(live.key.close()); // completes once a listener took the done event
    }
    call((arena, ffi.Pointer<native.TsBuf> out) => native.ts_close(_handle, out));
    _handle = 0;
    await Future.wait(<Future<void>>[
      _status.close(),
      _conflicts.close(),
      _rejections.close(),
    ]);
  }
}
