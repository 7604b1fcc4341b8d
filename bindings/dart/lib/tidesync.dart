/// tidesync for Flutter: an offline-first database that syncs.
///
/// Open a [TidesyncDatabase]; read and write records at once (they live in a local SQLite
/// file); watch [TidesyncDatabase.statusStream] for what sync is doing; bind lists to
/// [TidesyncDatabase.watch]; settle [Conflict]s and [Rejection]s; keep drafts in
/// [RestorationBucket]s so a killed app comes back where the user left it.
library;

export 'src/adapters.dart' show TidesyncConnectivity, TidesyncLifecycle;
export 'src/connector.dart' show StaticTokenConnector, TidesyncConnector;
export 'src/database.dart' show TidesyncDatabase, TidesyncOptions, WriteBatch;
export 'src/models.dart';
export 'src/native.dart' show TidesyncException;
export 'src/restoration.dart' show RestorationBucket, RestorationLifetime;
