// What a WatermelonDB app adds to sync its database with tidesync (the example of
// docs/compat.md, "WatermelonDB"): the pullChanges and pushChanges of `synchronize`.
import { synchronize } from '@nozbe/watermelondb/sync/index.js';

import { answer } from './http.mjs';

/**
 * One WatermelonDB sync of `database` with tidesync's `space` (its tables are the space's
 * collections). A push refused as a conflict (409) throws: sync again (pull, then push).
 * A push whose answer was lost is sent again as it was (same changes, same last_pulled_at),
 * which tidesync applies once. More local changes than the server takes in one push
 * (`maxRecordsPerPush`, the server's `max_mutations_per_push`) go in several pushes, each
 * all or none. Other options (`conflictResolver`, `log`, ...) go to `synchronize`.
 */
export async function syncWithTidesync({ database, url, token, space, pushAttempts = 5, maxRecordsPerPush = 5000, ...options }) {
  const endpoint = `${url}/compat/watermelon/v1/${encodeURIComponent(space)}/sync`;
  const headers = { Authorization: `Bearer ${token}` };
  const push = async (changes, lastPulledAt) => {
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
      return answer(response); // {} when applied; a 409 conflict throws
    }
  };
  await synchronize({
    sendCreatedAsUpdated: true, // tidesync cannot tell a creation from an update
    ...options,
    database,
    async pullChanges({ lastPulledAt, schemaVersion, migration }) {
      const query = new URLSearchParams({
        last_pulled_at: String(lastPulledAt ?? null),
        schema_version: String(schemaVersion),
        migration: JSON.stringify(migration ?? null),
      });
      return answer(await fetch(`${endpoint}?${query}`, { headers })); // {changes, timestamp}
    },
    async pushChanges({ changes, lastPulledAt }) {
      for (const part of split(changes, maxRecordsPerPush)) await push(part, lastPulledAt);
    },
  });
}

/** `changes` cut into change sets of at most `max` records (one when it is small enough). */
function split(changes, max) {
  const parts = [];
  let part = {};
  let size = 0;
  for (const [table, { created = [], updated = [], deleted = [] }] of Object.entries(changes)) {
    for (const [kind, items] of [['created', created], ['updated', updated], ['deleted', deleted]]) {
      for (const item of items) {
        if (size === max) {
          parts.push(part);
          part = {};
          size = 0;
        }
        part[table] ??= { created: [], updated: [], deleted: [] };
        part[table][kind].push(item);
        size++;
      }
    }
  }
  if (size > 0 || parts.length === 0) parts.push(part);
  return parts;
}
