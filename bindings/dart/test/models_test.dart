// The JSON forms the library hands out, parsed (no native code needed).

import 'package:flutter_test/flutter_test.dart';
import 'package:tidesync/tidesync.dart';

void main() {
  test('a status is parsed with its progress and its last error', () {
    final SyncStatus status = SyncStatus.fromJson(<String, Object?>{
      'v': 1,
      'connectivity': 'online',
      'phase': 'uploading',
      'upload': <String, Object?>{'done': 340, 'total': 1200, 'done_bytes': 1, 'total_bytes': 2},
      'download': null,
      'pending': 860,
      'oldest_pending_at_ms': 1700000000000,
      'conflicts': 2,
      'rejections': 0,
      'last_synced_at_ms': null,
      'has_synced': true,
      'synced': false,
      'last_error': <String, Object?>{
        'kind': 'local_store',
        'code': 'disk_full',
        'message': 'the disk is full',
        'needs_attention': false,
        'at_ms': 1700000000500,
      },
      'next_retry_at_ms': null,
    });
    expect(status.phase, SyncPhase.uploading);
    expect(status.isUploading, isTrue);
    expect(status.uploaded, 340);
    expect(status.uploadTotal, 1200);
    expect(status.pending, 860);
    expect(status.conflicts, 2);
    expect(status.lastError!.code, 'disk_full');
    expect(status.lastError!.needsAttention, isFalse);
    expect(status.lastSyncedAt, isNull);
  });

  test('a stopped engine has a minimal status', () {
    final SyncStatus status = SyncStatus.fromJson(<String, Object?>{'v': 1, 'phase': 'stopped'});
    expect(status.phase, SyncPhase.stopped);
    expect(status.connectivity, SyncConnectivity.unknown);
    expect(status.synced, isFalse);
  });

  test('conflicts, rejections and resolutions', () {
    final Conflict conflict = Conflict.fromJson(<String, Object?>{
      'id': 3,
      'seq': 12,
      'key': 'user:a/todos/t1',
      'version': 40,
      'fields': <Object?>[
        <String, Object?>{'field': 'title', 'local': 'mine', 'server': 'theirs', 'winner': 'local'},
      ],
      'created_at_ms': 1,
    });
    expect(conflict.fields.single.localWon, isTrue);
    expect(const KeepServer().toJson(), <String, Object?>{'keep': 'server'});
    expect(const Merged(<String, Object?>{'a': 1}).toJson(), <String, Object?>{
      'merged': <String, Object?>{'a': 1},
    });
    final Rejection rejection = Rejection.fromJson(<String, Object?>{
      'seq': 7,
      'tx': 7,
      'key': 'user:a/orders/o1',
      'op': 'patch',
      'doc': <String, Object?>{'qty': 5},
      'code': 'stale_base',
      'message': 'changed since',
      'rejected_at_ms': 1,
    });
    expect(rejection.code, 'stale_base');
    expect(rejection.doc, <String, Object?>{'qty': 5});
    final TidesyncRecord record = TidesyncRecord.fromJson(<String, Object?>{
      'key': 'user:a/files/a/b',
      'doc': <String, Object?>{},
      'pending': true,
    });
    expect(record.id, 'a/b');
  });
}
