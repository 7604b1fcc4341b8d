// A todo list on tidesync: edits work offline at once, a status bar tells what sync is
// doing, a conflict opens a dialog, and the unsent "new todo" text survives the app being
// killed (restoration state, next to the data).
//
// Run a server first (from the repository root):
//   cargo run -p tidesync-cli -- token create --data-dir ./tidesync-data --user demo --space user:demo
//   cargo run -p tidesync-cli -- serve --data-dir ./tidesync-data --listen 0.0.0.0:8787
// then: flutter run --dart-define=TIDESYNC_URL=http://10.0.2.2:8787 --dart-define=TIDESYNC_TOKEN=tsk_...

import 'dart:async';

import 'package:connectivity_plus/connectivity_plus.dart';
import 'package:flutter/material.dart';
import 'package:path_provider/path_provider.dart';
import 'package:tidesync/tidesync.dart';

const String space = 'user:demo';
const String todos = '$space/todos';

Future<void> main() async {
  WidgetsFlutterBinding.ensureInitialized();
  final String dir = (await getApplicationSupportDirectory()).path;
  final TidesyncDatabase db = await TidesyncDatabase.open(
    path: '$dir/todos.db',
    serverUrl: const String.fromEnvironment('TIDESYNC_URL', defaultValue: 'http://127.0.0.1:8787'),
    spaces: <String>[space],
    connector: const StaticTokenConnector(String.fromEnvironment('TIDESYNC_TOKEN')),
  );
  runApp(TodoApp(db: db));
}

class TodoApp extends StatefulWidget {
  const TodoApp({super.key, required this.db});

  final TidesyncDatabase db;

  @override
  State<TodoApp> createState() => _TodoAppState();
}

class _TodoAppState extends State<TodoApp> {
  late final TidesyncLifecycle _lifecycle = TidesyncLifecycle(widget.db);
  late final TidesyncConnectivity _connectivity = TidesyncConnectivity(
    widget.db,
    Connectivity()
        .onConnectivityChanged
        .map((List<ConnectivityResult> r) => !r.contains(ConnectivityResult.none)),
  );
  final GlobalKey<NavigatorState> _navigator = GlobalKey<NavigatorState>();
  StreamSubscription<Conflict>? _conflicts;

  @override
  void initState() {
    super.initState();
    _conflicts = widget.db.conflictStream.listen(_askAbout);
  }

  @override
  void dispose() {
    _conflicts?.cancel();
    _connectivity.dispose();
    _lifecycle.dispose();
    widget.db.close();
    super.dispose();
  }

  Future<void> _askAbout(Conflict conflict) async {
    final BuildContext? context = _navigator.currentContext;
    if (context == null) {
      return;
    }
    final FieldConflict field = conflict.fields.first;
    final ConflictResolution? choice = await showDialog<ConflictResolution>(
      context: context,
      builder: (BuildContext context) => AlertDialog(
        title: const Text('Edited on two devices'),
        content: Text('"${field.field}": yours is "${field.local}", the other is "${field.server}".'),
        actions: <Widget>[
          TextButton(
            onPressed: () => Navigator.pop(context, const KeepServer()),
            child: const Text('Keep theirs'),
          ),
          FilledButton(
            onPressed: () => Navigator.pop(context, const KeepLocal()),
            child: const Text('Keep mine'),
          ),
        ],
      ),
    );
    if (choice != null) {
      widget.db.resolveConflict(conflict.id, choice);
    }
  }

  @override
  Widget build(BuildContext context) {
    return MaterialApp(
      navigatorKey: _navigator,
      title: 'tidesync todos',
      home: Scaffold(
        appBar: AppBar(title: const Text('Todos')),
        body: Column(
          children: <Widget>[
            SyncBar(db: widget.db),
            NewTodo(db: widget.db),
            Expanded(child: TodoList(db: widget.db)),
          ],
        ),
      ),
    );
  }
}

/// What sync is doing, in one line.
class SyncBar extends StatelessWidget {
  const SyncBar({super.key, required this.db});

  final TidesyncDatabase db;

  String _describe(BuildContext context, SyncStatus s) {
    if (s.lastError != null && s.lastError!.needsAttention) {
      return 'Sync needs attention: ${s.lastError!.message}';
    }
    if (s.isOffline) {
      return 'Offline - ${s.pending} changes will sync when you are back';
    }
    if (s.isUploading) {
      return 'Uploading ${s.uploaded} of ${s.uploadTotal}';
    }
    if (s.isDownloading) {
      return 'Downloading (${s.downloadRemaining ?? 0} left)';
    }
    if (s.synced) {
      return 'Up to date${s.lastSyncedAt == null ? '' : ' - ${TimeOfDay.fromDateTime(s.lastSyncedAt!).format(context)}'}';
    }
    return '${s.pending} changes pending';
  }

  @override
  Widget build(BuildContext context) {
    return StreamBuilder<SyncStatus>(
      stream: db.statusStream,
      builder: (BuildContext context, AsyncSnapshot<SyncStatus> snapshot) {
        final SyncStatus? status = snapshot.data;
        return Container(
          width: double.infinity,
          padding: const EdgeInsets.all(8),
          color: status?.isOffline ?? false ? Colors.amber.shade100 : Colors.green.shade50,
          child: Text(status == null ? 'Starting' : _describe(context, status)),
        );
      },
    );
  }
}

/// The "new todo" field; its text is restoration state, so a killed app keeps it.
class NewTodo extends StatefulWidget {
  const NewTodo({super.key, required this.db});

  final TidesyncDatabase db;

  @override
  State<NewTodo> createState() => _NewTodoState();
}

class _NewTodoState extends State<NewTodo> {
  late final RestorationBucket _bucket = widget.db.restoration().child('new_todo');
  late final TextEditingController _text =
      TextEditingController(text: (_bucket.read('draft') as String?) ?? '');

  void _add() {
    final String title = _text.text.trim();
    if (title.isEmpty) {
      return;
    }
    final String id = DateTime.now().microsecondsSinceEpoch.toString();
    // The todo and the cleared draft commit together.
    widget.db.writeTransaction((WriteBatch batch) {
      batch.put('$todos/$id', <String, Object?>{'title': title, 'done': false});
      batch.forget(_bucket, 'draft');
    });
    _text.clear();
  }

  @override
  Widget build(BuildContext context) {
    return Padding(
      padding: const EdgeInsets.all(8),
      child: TextField(
        controller: _text,
        decoration: const InputDecoration(hintText: 'New todo'),
        onChanged: (String text) => _bucket.write('draft', text, tag: 'todo.draft'),
        onSubmitted: (_) => _add(),
      ),
    );
  }
}

/// Open todos first, by title: a live query that re-renders when a write, a download or a
/// conflict changes its result (and only then).
class TodoList extends StatefulWidget {
  const TodoList({super.key, required this.db});

  final TidesyncDatabase db;

  @override
  State<TodoList> createState() => _TodoListState();
}

class _TodoListState extends State<TodoList> {
  // Created once, not in build(): each watch is a native live query.
  late final Stream<QueryResult> _todos = widget.db.watch(
    todos,
    const TidesyncQuery(sort: <Object>['done', 'title'], limit: 500),
  );

  @override
  Widget build(BuildContext context) {
    final TidesyncDatabase db = widget.db;
    return StreamBuilder<QueryResult>(
      stream: _todos,
      builder: (BuildContext context, AsyncSnapshot<QueryResult> snapshot) {
        final List<TidesyncRecord> items = snapshot.data?.records ?? const <TidesyncRecord>[];
        return ListView(
          children: <Widget>[
            for (final TidesyncRecord todo in items)
              CheckboxListTile(
                value: todo.doc['done'] == true,
                title: Text('${todo.doc['title']}'),
                subtitle: todo.pending ? const Text('not synced yet') : null,
                onChanged: (bool? done) => db.patch(todo.key, <String, Object?>{'done': done}),
              ),
          ],
        );
      },
    );
  }
}
