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
export async function syncWithTidesync({ database, url, token, space, pushAttempts = 5, ...options }) {
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
      return answer(await fetch(`${endpoint}?${query}`, { headers })); // {changes, timestamp}
    },
    async pushChanges({ changes, lastPulledAt }) {
      const init = { method: 'POST', headers: { ...headers, 'Content-Type': 'application/json' }, body: JSON.stringify(changes) };
      for (let attempt = 1; ; attempt++) {
        let response;
        try {
          response = await fetch(`${endpoint}?last_pulled_at=${lastPulledAt}`, init);
        } catch (lost) {
          // No answer (connection cut or refused): the push may or may not have been applied.
          if (attempt >= pushAttempts) throw lost;
          await new Promise((resolve) => setTimeout(resolve, 100 * 2 ** attempt));
          continue;
        }
        await answer(response); // {} when applied (all or none); a 409 conflict throws
        return;
      }
    },
  });
}

