// Where the app's credentials come from.

/// Gives tidesync the app's bearer token: the one it starts with, and a fresh one whenever
/// the server refuses the current one (tidesync asks, then waits for the answer). Hook it to
/// your auth provider (Supabase, Firebase Auth, your own):
///
/// ```dart
/// class SupabaseConnector extends TidesyncConnector {
///   @override
///   Future<String?> fetchToken() async =>
///       Supabase.instance.client.auth.currentSession?.accessToken;
/// }
/// ```
abstract class TidesyncConnector {
  const TidesyncConnector();

  /// The current token, refreshed if the provider can; `null` if signed out.
  Future<String?> fetchToken();
}

/// A fixed token (tests, tools, long-lived API tokens).
class StaticTokenConnector extends TidesyncConnector {
  const StaticTokenConnector(this.token);

  final String token;

  @override
  Future<String?> fetchToken() async => token;
}
