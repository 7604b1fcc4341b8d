// The RxDB and WatermelonDB clients of the suites, each on the in-memory storage of its real
// package, with one collection (`todos`) whose documents are {title, done, n}.
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';

import { Database, Model, appSchema, tableSchema } from '@nozbe/watermelondb';
import { hasUnsyncedChanges } from '@nozbe/watermelondb/sync/index.js';
import { createRxDatabase } from 'rxdb';
import { getRxStorageMemory } from 'rxdb/plugins/storage-memory';

import { replicateWithTidesync } from '../lib/rxdb.mjs';
import { syncWithTidesync } from '../lib/watermelon.mjs';

// WatermelonDB ships CommonJS without an exports map: its modules are required by path.
const require = createRequire(import.meta.url);
const LokiJSAdapter = require('@nozbe/watermelondb/adapters/lokijs').default;
// Its LokiJS adapter narrates every database it opens on the console; warnings and errors stay.
require('@nozbe/watermelondb/utils/common/logger').default.log = () => {};

export const COLLECTION = 'todos';

const todoSchema = {
  version: 0,
  primaryKey: 'id',
  type: 'object',
  properties: {
    id: { type: 'string', maxLength: 128 },
    title: { type: 'string' },
    done: { type: 'boolean' },
    n: { type: 'number' },
  },
  required: ['id'],
};

/** The fields of a document the suites compare (what every client stores). */
export const fields = ({ title, done, n }) => ({ title, done, n });

/**
 * An RxDB database with the `todos` collection. `replicate()` starts the replication
 * (options passed on to `replicateWithTidesync`); `conflicts` counts the conflicts RxDB
 * resolved (with RxDB's default rule: the server's document wins).
 */
export async function rxdbClient(server) {
  const db = await createRxDatabase({ name: `rx${randomUUID().replaceAll('-', '')}`, storage: getRxStorageMemory(), multiInstance: false });
  const client = { db, conflicts: 0, pushes: 0, replication: null };
  const { todos } = await db.addCollections({
    todos: {
      schema: todoSchema,
      conflictHandler: {
        isEqual: (a, b) => JSON.stringify(fields(a)) === JSON.stringify(fields(b)) && !!a._deleted === !!b._deleted,
        resolve: (input) => {
          client.conflicts += 1;
          return input.realMasterState;
        },
      },
    },
  });
  client.todos = todos;
  client.replicate = (options = {}) => {
    client.replication = replicateWithTidesync({ collection: todos, url: server.url, token: server.token, space: server.space, ...options });
    client.replication.error$.subscribe((e) => {
      client.lastError = e;
    });
    return client.replication;
  };
  /** Resolves once the first pull is done; fails with RxDB's last error after `timeoutMs`. */
  client.initialSync = (timeoutMs = 20_000) => bounded('the initial replication', client.replication.awaitInitialReplication(), timeoutMs);
  /** Resolves when everything written locally is pushed and everything on the server pulled. */
  client.inSync = (timeoutMs = 20_000) => bounded('the replication to be in sync', client.replication.awaitInSync(), timeoutMs);
  const bounded = async (what, promise, timeoutMs) => {
    let timer;
    const late = new Promise((_, fail) => {
      timer = setTimeout(() => {
        const e = client.lastError;
        const cause = e ? `; RxDB's last error: ${e.parameters?.errors?.map((inner) => inner.message).join('; ') || e.message}` : '';
        fail(new Error(`timed out after ${timeoutMs} ms waiting for ${what}${cause}`));
      }, timeoutMs);
    });
    try {
      return await Promise.race([promise, late]);
    } finally {
      clearTimeout(timer);
    }
  };
  /** `{id: {title, done, n}}` of the documents not deleted. */
  client.docs = async () => Object.fromEntries((await todos.find().exec()).map((d) => [d.id, fields(d.toJSON())]));
  client.close = async () => {
    await client.replication?.cancel();
    await db.close();
  };
  return client;
}

class Todo extends Model {
  static table = COLLECTION;
}

const watermelonSchema = appSchema({
  version: 1,
  tables: [
    tableSchema({
      name: COLLECTION,
      columns: [
        { name: 'title', type: 'string' },
        { name: 'done', type: 'boolean' },
        { name: 'n', type: 'number' },
      ],
    }),
  ],
});

/**
 * A WatermelonDB database (LokiJS adapter, in memory) with the `todos` table, its model
 * declared without decorators (fields are read and written through the raw record).
 */
export async function watermelonClient(server) {
  const adapter = new LokiJSAdapter({
    schema: watermelonSchema,
    useWebWorker: false,
    useIncrementalIndexedDB: true, // required; without IndexedDB (Node) it falls back to memory
    dbName: `wm${randomUUID()}`,
    // In Node the adapter keeps LokiJS in memory; autosave would only keep the process alive.
    extraLokiOptions: { autosave: false },
  });
  const database = new Database({ adapter, modelClasses: [Todo] });
  const todos = database.get(COLLECTION);
  const find = async (id) => (await todos.query().fetch()).find((r) => r.id === id);
  return {
    database,
    /** Whether anything written locally is not yet pushed. */
    unsynced: () => hasUnsyncedChanges({ database }),
    sync: (options = {}) => syncWithTidesync({ database, url: server.url, token: server.token, space: server.space, ...options }),
    /** Creates documents `{id: {title, done, n}}` in one write. */
    async create(docs) {
      await database.write(async () => {
        const batch = Object.entries(docs).map(([id, doc]) =>
          todos.prepareCreate((r) => {
            r._raw.id = id;
            for (const [k, v] of Object.entries(doc)) r._setRaw(k, v);
          }),
        );
        await database.batch(batch);
      });
    },
    async update(id, changes) {
      const record = await find(id);
      if (!record) throw new Error(`no WatermelonDB record ${id} to update`);
      await database.write(() => record.update((r) => Object.entries(changes).forEach(([k, v]) => r._setRaw(k, v))));
    },
    async delete(id) {
      const record = await find(id);
      if (!record) throw new Error(`no WatermelonDB record ${id} to delete`);
      await database.write(() => record.markAsDeleted());
    },
    /** `{id: {title, done, n}}` of the records not deleted. */
    async docs() {
      return Object.fromEntries((await todos.query().fetch()).map((r) => [r.id, fields(r._raw)]));
    },
  };
}
