// Wiring tidesync to what Flutter apps already have: the app lifecycle and a connectivity
// stream (connectivity_plus).

import 'dart:async';

import 'package:flutter/widgets.dart';

import 'database.dart';

/// Pauses sync while the app is in the background and resumes it in the foreground, through
/// Flutter's [AppLifecycleListener]. Dispose it with the database.
///
/// ```dart
/// late final lifecycle = TidesyncLifecycle(db);
/// ```
class TidesyncLifecycle {
  TidesyncLifecycle(TidesyncDatabase db)
      : _listener = AppLifecycleListener(
          onResume: db.resume,
          onPause: db.pause,
          onDetach: db.pause,
        );

  final AppLifecycleListener _listener;

  void dispose() => _listener.dispose();
}

/// Feeds the device's connectivity to the engine (`setNetwork`): offline stops all attempts
/// at once, online triggers one. With connectivity_plus:
///
/// ```dart
/// final connectivity = TidesyncConnectivity(
///   db,
///   Connectivity().onConnectivityChanged
///       .map((results) => !results.contains(ConnectivityResult.none)),
/// );
/// ```
///
/// A hint is only a hint: the engine also learns from its own requests, and probes now and
/// then while told it is offline.
class TidesyncConnectivity {
  TidesyncConnectivity(TidesyncDatabase db, Stream<bool> online)
      : _subscription = online.distinct().listen(db.setNetwork);

  final StreamSubscription<bool> _subscription;

  Future<void> dispose() => _subscription.cancel();
}
