// What the library hands out, parsed from its JSON forms (docs/ffi.md). Immutable values.

/// A record of the local view.
class TidesyncRecord {
  const TidesyncRecord({required this.key, required this.doc, required this.pending});

  factory TidesyncRecord.fromJson(Map<String, Object?> json) => TidesyncRecord(
        key: json['key']! as String,
        doc: (json['doc']! as Map).cast<String, Object?>(),
        pending: json['pending']! as bool,
      );

  /// `SPACE/COLLECTION/ID`.
  final String key;

  /// The document: the server's state with this device's pending changes on top.
  final Map<String, Object?> doc;

  /// `true` while local changes to it are not confirmed by the server.
  final bool pending;

  /// The record id (the part of [key] after the collection).
  String get id => key.split('/').skip(2).join('/');
}

/// One page of a collection, in id order.
class RecordPage {
  const RecordPage(this.records, this.next);

  final List<TidesyncRecord> records;

  /// Pass as `after` for the next page; `null` after the last.
  final String? next;
}

/// A query over one collection: the Mango selector subset of docs/queries.md.
///
/// ```dart
/// const TidesyncQuery(
///   selector: {'project': 'p1', 'done': false, 'due': {r'$lt': 20}},
///   sort: ['due', {'title': 'desc'}],
///   limit: 50,
/// )
/// ```
class TidesyncQuery {
  const TidesyncQuery({this.selector, this.sort, this.limit, this.fields, this.after});

  /// Which records (`{}` or `null`: all). Operators: `$eq $ne $gt $gte $lt $lte $in $nin
  /// $exists $beginsWith $and $or $not`; dotted names reach into nested objects.
  final Map<String, Object?>? selector;

  /// Sort keys: a field name (ascending) or `{field: 'asc' | 'desc'}`; ties by id.
  final List<Object>? sort;

  /// At most this many records (default 100, at most 10,000).
  final int? limit;

  /// Only these fields of each document.
  final List<String>? fields;

  /// The [QueryPage.next] of the previous page.
  final String? after;

  /// This query continuing after [next].
  TidesyncQuery continueAfter(String next) =>
      TidesyncQuery(selector: selector, sort: sort, limit: limit, fields: fields, after: next);

  Map<String, Object?> toJson() => <String, Object?>{
        if (selector != null) 'selector': selector,
        if (sort != null) 'sort': sort,
        if (limit != null) 'limit': limit,
        if (fields != null) 'fields': fields,
        if (after != null) 'after': after,
      };
}

/// One page of a query's result.
class QueryPage {
  const QueryPage(this.records, this.next);

  factory QueryPage.fromJson(Map<String, Object?> json) => QueryPage(
        (json['records']! as List)
            .map((Object? r) => TidesyncRecord.fromJson((r! as Map).cast<String, Object?>()))
            .toList(),
        json['next'] as String?,
      );

  final List<TidesyncRecord> records;

  /// Pass to [TidesyncQuery.continueAfter] for the next page; `null` on the last.
  final String? next;
}

/// A live query's result: the records now, and how they differ from the result delivered
/// before (the first result lists every record as added).
class QueryResult {
  const QueryResult({
    required this.records,
    required this.next,
    required this.added,
    required this.removed,
    required this.changed,
  });

  factory QueryResult.fromJson(Map<String, Object?> json) {
    List<String> ids(String name) => (json[name]! as List).cast<String>();
    final QueryPage page = QueryPage.fromJson(json);
    return QueryResult(
      records: page.records,
      next: page.next,
      added: ids('added'),
      removed: ids('removed'),
      changed: ids('changed'),
    );
  }

  final List<TidesyncRecord> records;
  final String? next;

  /// Ids of records now in the result that were not.
  final List<String> added;

  /// Ids of records no longer in it.
  final List<String> removed;

  /// Ids of records still in it whose document or pending flag changed.
  final List<String> changed;
}

/// Where a local write went in the outbox.
class WriteReceipt {
  const WriteReceipt({required this.seq, required this.tx, required this.hlc});

  factory WriteReceipt.fromJson(Map<String, Object?> json) => WriteReceipt(
        seq: json['seq']! as int,
        tx: json['tx']! as int,
        hlc: json['hlc']! as String,
      );

  /// Its sequence number (see `TidesyncDatabase.mutationState`).
  final int seq;

  /// Its local transaction.
  final int tx;

  /// Its hybrid logical clock stamp.
  final String hlc;
}

/// What the engine is doing.
enum SyncPhase {
  stopped,
  paused,
  offline,
  connecting,
  uploading,
  downloading,
  authenticating,
  backoff,
  idle,
}

/// Whether the server can be reached.
enum SyncConnectivity { unknown, online, offline }

/// The last sync error.
class SyncFailure {
  const SyncFailure({
    required this.kind,
    required this.code,
    required this.message,
    required this.needsAttention,
    required this.at,
  });

  factory SyncFailure.fromJson(Map<String, Object?> json) => SyncFailure(
        kind: json['kind']! as String,
        code: json['code'] as String?,
        message: json['message']! as String,
        needsAttention: json['needs_attention']! as bool,
        at: DateTime.fromMillisecondsSinceEpoch(json['at_ms']! as int),
      );

  /// `network`, `server`, `auth`, `refused` or `local_store`.
  final String kind;

  /// The server's error code, or the local database's (`disk_full`, `busy`, ...).
  final String? code;

  final String message;

  /// `false`: the engine retries by itself. `true`: it waits for the app or the user.
  final bool needsAttention;

  final DateTime at;
}

/// Everything a sync indicator needs (PowerSync and Drift users know the shape).
class SyncStatus {
  const SyncStatus({
    required this.phase,
    required this.connectivity,
    required this.pending,
    required this.conflicts,
    required this.rejections,
    required this.hasSynced,
    required this.synced,
    this.uploaded,
    this.uploadTotal,
    this.downloaded,
    this.downloadRemaining,
    this.oldestPendingAt,
    this.lastSyncedAt,
    this.lastError,
    this.nextRetryAt,
    this.historyLoss,
  });

  factory SyncStatus.fromJson(Map<String, Object?> json) {
    final Map<String, Object?>? upload = (json['upload'] as Map?)?.cast<String, Object?>();
    final Map<String, Object?>? download = (json['download'] as Map?)?.cast<String, Object?>();
    final Map<String, Object?>? error = (json['last_error'] as Map?)?.cast<String, Object?>();
    final Map<String, Object?>? loss = (json['history_loss'] as Map?)?.cast<String, Object?>();
    DateTime? time(String name) {
      final Object? ms = json[name];
      return ms is int ? DateTime.fromMillisecondsSinceEpoch(ms) : null;
    }

    return SyncStatus(
      phase: SyncPhase.values.byName((json['phase'] as String?) ?? 'stopped'),
      connectivity: SyncConnectivity.values.byName((json['connectivity'] as String?) ?? 'unknown'),
      pending: (json['pending'] as int?) ?? 0,
      conflicts: (json['conflicts'] as int?) ?? 0,
      rejections: (json['rejections'] as int?) ?? 0,
      hasSynced: (json['has_synced'] as bool?) ?? false,
      synced: (json['synced'] as bool?) ?? false,
      uploaded: upload?['done'] as int?,
      uploadTotal: upload?['total'] as int?,
      downloaded: download?['received'] as int?,
      downloadRemaining: download?['remaining'] as int?,
      oldestPendingAt: time('oldest_pending_at_ms'),
      lastSyncedAt: time('last_synced_at_ms'),
      lastError: error == null ? null : SyncFailure.fromJson(error),
      nextRetryAt: time('next_retry_at_ms'),
      historyLoss: loss == null ? null : HistoryLoss.fromJson(loss),
    );
  }

  final SyncPhase phase;
  final SyncConnectivity connectivity;

  /// Local changes not yet confirmed by the server.
  final int pending;
  final int conflicts;
  final int rejections;

  /// Whether a complete download ever finished on this device.
  final bool hasSynced;

  /// Nothing pending, idle, and caught up with the last download.
  final bool synced;

  /// Upload progress, while uploading: [uploaded] of [uploadTotal] changes.
  final int? uploaded;
  final int? uploadTotal;

  /// Download progress, while downloading.
  final int? downloaded;
  final int? downloadRemaining;

  final DateTime? oldestPendingAt;
  final DateTime? lastSyncedAt;
  final SyncFailure? lastError;

  /// When the next attempt happens, while backing off.
  final DateTime? nextRetryAt;

  /// Set once the server was found to have forgotten this device's changes (it was restored
  /// from an older backup): what was sent again, and what the server lost for good.
  final HistoryLoss? historyLoss;

  bool get isUploading => phase == SyncPhase.uploading;
  bool get isDownloading => phase == SyncPhase.downloading;
  bool get isOffline => connectivity == SyncConnectivity.offline;
}

/// What a server restored from an older backup had forgotten of this device's changes.
class HistoryLoss {
  const HistoryLoss({
    required this.serverLastSeq,
    required this.localLastSeq,
    required this.resent,
    required this.lost,
  });

  factory HistoryLoss.fromJson(Map<String, Object?> json) => HistoryLoss(
        serverLastSeq: (json['server_last_seq'] as int?) ?? 0,
        localLastSeq: (json['local_last_seq'] as int?) ?? 0,
        resent: (json['resent'] as int?) ?? 0,
        lost: (json['lost'] as int?) ?? 0,
      );

  /// The last change the server still had.
  final int serverLastSeq;

  /// The last change this device had made.
  final int localLastSeq;

  /// Changes still held here, sent again (applied once).
  final int resent;

  /// Changes the server had applied and lost, no longer held here: gone. Tell the user.
  final int lost;
}

/// One contested field of a [Conflict].
class FieldConflict {
  const FieldConflict({required this.field, this.local, this.server, required this.localWon});

  factory FieldConflict.fromJson(Map<String, Object?> json) => FieldConflict(
        field: json['field']! as String,
        local: json['local'],
        server: json['server'],
        localWon: json['winner'] == 'local',
      );

  final String field;

  /// This device's value (`null`: removed).
  final Object? local;

  /// The other writer's value (`null`: removed).
  final Object? server;

  /// Whether the record holds [local] now (else [server]).
  final bool localWon;
}

/// A local change met someone else's change to the same field.
class Conflict {
  const Conflict({required this.id, required this.seq, required this.key, required this.fields});

  factory Conflict.fromJson(Map<String, Object?> json) => Conflict(
        id: json['id']! as int,
        seq: json['seq']! as int,
        key: json['key']! as String,
        fields: (json['fields']! as List)
            .map((Object? f) => FieldConflict.fromJson((f! as Map).cast<String, Object?>()))
            .toList(),
      );

  /// What `resolveConflict` takes.
  final int id;
  final int seq;
  final String key;
  final List<FieldConflict> fields;
}

/// How to settle a conflict.
sealed class ConflictResolution {
  const ConflictResolution();

  Map<String, Object?> toJson();
}

/// Make this device's values win.
class KeepLocal extends ConflictResolution {
  const KeepLocal();

  @override
  Map<String, Object?> toJson() => <String, Object?>{'keep': 'local'};
}

/// Make the other writer's values win.
class KeepServer extends ConflictResolution {
  const KeepServer();

  @override
  Map<String, Object?> toJson() => <String, Object?>{'keep': 'server'};
}

/// Replace the record with a merged document.
class Merged extends ConflictResolution {
  const Merged(this.doc);

  final Map<String, Object?> doc;

  @override
  Map<String, Object?> toJson() => <String, Object?>{'merged': doc};
}

/// A change the server refused; its local effect was rolled back.
class Rejection {
  const Rejection({
    required this.seq,
    required this.key,
    required this.op,
    required this.code,
    required this.message,
    this.doc,
  });

  factory Rejection.fromJson(Map<String, Object?> json) => Rejection(
        seq: json['seq']! as int,
        key: json['key']! as String,
        op: json['op']! as String,
        code: json['code']! as String,
        message: json['message']! as String,
        doc: (json['doc'] as Map?)?.cast<String, Object?>(),
      );

  /// What `retryRejection` / `discardRejection` take.
  final int seq;
  final String key;

  /// `put`, `patch` or `delete`.
  final String op;

  /// Why (`stale_base`, `rule_violation`, ...).
  final String code;
  final String message;
  final Map<String, Object?>? doc;
}
