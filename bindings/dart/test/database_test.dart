// The database through the native library (built by hook/build.dart when `flutter test`
// runs): local only, in a temporary folder.

import 'dart:io';

import 'package:flutter_test/flutter_test.dart';
import 'package:tidesync/tidesync.dart';

void main() {
  late Directory dir;

  setUp(() async {
    dir = await Directory.systemTemp.createTemp('tidesync_test');
  });

  tearDown(() async {
    await dir.delete(recursive: true);
  });

  test('writes land at once and wait in the outbox', () async {
    final TidesyncDatabase db = await TidesyncDatabase.open(path: '${dir.path}/app.db');
    final WriteReceipt receipt = db.put('user:a/todos/t1', <String, Object?>{'title': 'milk'});
    db.patch('user:a/todos/t1', <String, Object?>{'done': true});
    expect(receipt.seq, 1);
    final TidesyncRecord record = db.get('user:a/todos/t1')!;
    expect(record.doc, <String, Object?>{'title': 'milk', 'done': true});
    expect(record.pending, isTrue);
    expect(db.mutationState(1), 'queued');
    final SyncStatus status = await db.statusStream.firstWhere((SyncStatus s) => s.pending == 2);
    expect(status.phase, SyncPhase.stopped, reason: 'no server: local only');
    await db.close();
  });

  test('a transaction commits data and restoration state together', () async {
    final TidesyncDatabase db = await TidesyncDatabase.open(path: '${dir.path}/app.db');
    final RestorationBucket checkout = db.restoration().child('checkout');
    checkout.write('draft', <String, Object?>{'items': 2});
    expect(checkout.read('draft'), <String, Object?>{'items': 2});
    final List<WriteReceipt> receipts = db.writeTransaction((WriteBatch batch) {
      batch.put('user:a/orders/o1', <String, Object?>{'items': 2});
      batch.forget(checkout, 'draft');
    });
    expect(receipts, hasLength(1));
    expect(checkout.read('draft'), isNull);
    expect(db.restoration().children, isEmpty);
    await db.close();
  });

  test('a second open of the same file attaches to its engine (a hot restart)', () async {
    final TidesyncDatabase first = await TidesyncDatabase.open(path: '${dir.path}/app.db');
    first.put('user:a/todos/t1', <String, Object?>{'n': 1});
    final TidesyncDatabase second = await TidesyncDatabase.open(path: '${dir.path}/app.db');
    expect(second.attached, isTrue);
    expect(second.clientId, first.clientId);
    expect(second.get('user:a/todos/t1')!.doc, <String, Object?>{'n': 1});
    await second.close();
    await first.close();
  });

  test('bad input is a TidesyncException and changes nothing', () async {
    final TidesyncDatabase db = await TidesyncDatabase.open(path: '${dir.path}/app.db');
    expect(
      () => db.put('no-slashes', <String, Object?>{}),
      throwsA(isA<TidesyncException>().having((TidesyncException e) => e.code, 'code', 'invalid_argument')),
    );
    expect(db.list('user:a/todos').records, isEmpty);
    await db.close();
    expect(() => db.get('user:a/todos/t1'), throwsA(isA<TidesyncException>()));
  });

  test('a live query delivers its result, then each change with the diff', () async {
    final TidesyncDatabase db = await TidesyncDatabase.open(path: '${dir.path}/app.db');
    const TidesyncQuery open = TidesyncQuery(
      selector: <String, Object?>{'done': false},
      sort: <Object>['due'],
    );
    final StreamIterator<QueryResult> results =
        StreamIterator<QueryResult>(db.watch('user:a/todos', open));
    Future<QueryResult> next() async {
      expect(await results.moveNext().timeout(const Duration(seconds: 10)), isTrue);
      return results.current;
    }

    expect((await next()).records, isEmpty);
    db.put('user:a/todos/t1', <String, Object?>{'due': 2, 'done': false});
    expect((await next()).added, <String>['t1']);
    db.put('user:a/todos/t2', <String, Object?>{'due': 1, 'done': false});
    final QueryResult both = await next();
    expect(both.records.map((TidesyncRecord r) => r.id), <String>['t2', 't1']);
    db.patch('user:a/todos/t1', <String, Object?>{'done': true});
    expect((await next()).removed, <String>['t1']);
    await results.cancel();
    await db.close();
  });

  test('queries page with a cursor and count; a bad query names its part', () async {
    final TidesyncDatabase db = await TidesyncDatabase.open(
      path: '${dir.path}/app.db',
      options: const TidesyncOptions(indexes: <TidesyncIndex>[
        TidesyncIndex('todos', <Object>['due']),
      ]),
    );
    for (int i = 0; i < 5; i++) {
      db.put('user:a/todos/t$i', <String, Object?>{'due': 5 - i});
    }
    const TidesyncQuery byDue = TidesyncQuery(sort: <Object>['due'], limit: 3);
    final QueryPage first = db.query('user:a/todos', byDue);
    expect(first.records.map((TidesyncRecord r) => r.doc['due']), <int>[1, 2, 3]);
    final QueryPage rest = db.query('user:a/todos', byDue.continueAfter(first.next!));
    expect(rest.records.map((TidesyncRecord r) => r.doc['due']), <int>[4, 5]);
    expect(rest.next, isNull);
    expect(db.count('user:a/todos'), 5);
    expect(
      () => db.watch('user:a/todos', const TidesyncQuery(selector: <String, Object?>{
        'due': <String, Object?>{r'$near': 1},
      })),
      throwsA(isA<TidesyncException>()
          .having((TidesyncException e) => e.message, 'message', contains(r'selector.due.$near'))),
    );
    await db.close();
  });
}
