// What an RxDB app adds to replicate one collection with tidesync (the example of
// docs/compat.md, "RxDB"): pull and push handlers over HTTP and a pull stream over SSE.
import { EventSource } from 'eventsource';
import { replicateRxCollection } from 'rxdb/plugins/replication';
import { Subject } from 'rxjs';

import { answer } from './http.mjs';

/**
 * Starts replicating `collection` with the tidesync collection of the same name in `space`.
 * `url` is the server's base URL, `token` an API token allowed to use the space.
 * Returns RxDB's replication state; cancelling it also closes the pull stream.
 */
export function replicateWithTidesync({ collection, url, token, space, live = true, batchSize = 100, retryTime = 1000 }) {
  const base = `${url}/compat/rxdb/v1/${encodeURIComponent(space)}/${encodeURIComponent(collection.name)}`;
  const headers = { Authorization: `Bearer ${token}` };
  const stream$ = new Subject();
  let events;
  if (live) {
    events = new EventSource(`${base}/pullStream`, {
      fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers, ...headers } }),
    });
    // Each event is {documents, checkpoint} or "RESYNC" (the first event of every connection).
    events.onmessage = (event) => stream$.next(JSON.parse(event.data));
    events.onerror = () => stream$.next('RESYNC'); // it reconnects by itself; re-pull meanwhile
  }
  const replication = replicateRxCollection({
    collection,
    replicationIdentifier: `tidesync:${base}`,
    live,
    retryTime,
    pull: {
      batchSize,
      stream$: stream$.asObservable(),
      async handler(checkpoint, limit) {
        const query = new URLSearchParams({ limit: String(limit) });
        if (checkpoint) query.set('checkpoint', JSON.stringify(checkpoint));
        return answer(await fetch(`${base}/pull?${query}`, { headers }));
      },
    },
    push: {
      batchSize,
      async handler(rows) {
        const body = JSON.stringify(rows);
        const init = { method: 'POST', headers: { ...headers, 'Content-Type': 'application/json' }, body };
        return answer(await fetch(`${base}/push`, init)); // the conflicting master documents
      },
    },
  });
  replication.onCancel.push(() => events?.close());
  return replication;
}
