// What a WatermelonDB app adds to sync its database with tidesync (the example of
// docs/compat.md, "WatermelonDB"): the pullChanges and pushChanges of `synchronize`.
import { synchronize } from '@nozbe/watermelondb/sync/index.js';

import { answer } from './http.mjs';

/**
 * One WatermelonDB sync of `database` with tidesync's `space` (its tables are the space's
 * collections). A push refused as a conflict (409) throws: sync again (pull, then push).
 * A push whose answer was lost is sent again as it was (same changes, same last_pulled_at),
 * which tidesync applies once. Other options (`conflictResolver`, `log`, ...) go to
 * `synchronize`.
 */
export async function syncWithTidesync({ database, url, token, space, attempts = 5, ...options }) {
  const endpoint = `${url}/compat/watermelon/v1/${encodeURIComponent(space)}/sync`;
  const headers = { Authorization: `Bearer ${token}` };
  await synchronize({
    sendCreatedAsUpdated: true, // tidesync cannot tell a creation from an update
    ...options,
    database,
    async pullChanges({ lastPulledAt, schemaVersion, migration }) {
      const query = new URLSearchParams({
        last_pulled_at: String(lastPulledAt ?? null),
        schema_version: String(schemaVersion),
        migration: JSON.stringify(migration ?? null),
        tables: Object.keys(database.schema.tables).join(','), // not the space's other collections
      });
      return answer(await send(`${endpoint}?${query}`, { headers }, attempts)); // {changes, timestamp}
    },
    async pushChanges({ changes, lastPulledAt }) {
      const init = { method: 'POST', headers: { ...headers, 'Content-Type': 'application/json' }, body: JSON.stringify(changes) };
      await answer(await send(`${endpoint}?last_pulled_at=${lastPulledAt}`, init, attempts)); // {} when applied (all or none); a 409 conflict throws
    },
  });
}

/** `fetch`, tried again (with backoff) while no answer comes: the connection was cut or
 * refused. Safe for both calls: a pull only reads, and a push resent as it was (same body,
 * same `last_pulled_at`) is applied once by tidesync even if the lost attempt was applied. */
async function send(url, init, attempts) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fetch(url, init);
    } catch (lost) {
      if (attempt >= attempts) throw lost;
      await new Promise((resolve) => setTimeout(resolve, 100 * 2 ** attempt));
    }
  }
}
