// One space edited by an RxDB client, a WatermelonDB client and a native tidesync client
// (the `tidesync client` CLI): every write of each reaches the other two.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { COLLECTION, fields, rxdbClient, watermelonClient } from './clients.mjs';
import { nativeClient, serverDocs, setup, waitFor } from './harness.mjs';

const sorted = (docs) => Object.fromEntries(Object.entries(docs).sort(([a], [b]) => a.localeCompare(b)));
const fieldsOf = (docs) => sorted(Object.fromEntries(Object.entries(docs).map(([id, d]) => [id, fields(d)])));

test('three-way: RxDB, WatermelonDB and a native client editing one space converge', { timeout: 90_000 }, async (t) => {
  const env = await setup(t, { proxies: 2 });
  const rx = await rxdbClient(env.endpoint(env.proxies[0]));
  t.after(() => rx.close());
  const wm = await watermelonClient(env.endpoint(env.proxies[1]));
  const native = await nativeClient(env.direct);
  t.after(() => native.stop());

  const views = async () => ({
    rxdb: sorted(await rx.docs()),
    watermelon: sorted(await wm.docs()),
    native: fieldsOf(await native.list(COLLECTION)),
    server: fieldsOf(await serverDocs(env.direct, COLLECTION)),
  });
  const converge = async (what, expected) => {
    await wm.sync();
    await native.sync();
    try {
      await waitFor(what, async () => {
        await rx.inSync();
        return JSON.stringify(sorted(await rx.docs())) === JSON.stringify(sorted(expected));
      });
    } catch (e) {
      throw new Error(`${e.message}; views: ${JSON.stringify(await views())}`);
    }
    await wm.sync(); // whatever RxDB pushed meanwhile
    await native.sync();
    const seen = await views();
    for (const [who, docs] of Object.entries(seen)) assert.deepEqual(docs, sorted(expected), `${who} has not converged (${what}): ${JSON.stringify(seen)}`);
  };

  rx.replicate({ retryTime: 200 });
  await native.put(COLLECTION, 'n1', { title: 'from native', done: false, n: 1 });
  await native.sync();
  await rx.todos.insert({ id: 'r1', title: 'from rxdb', done: false, n: 2 });
  await wm.create({ w1: { title: 'from watermelon', done: false, n: 3 } });
  await converge('each client to hold the three documents', {
    n1: { title: 'from native', done: false, n: 1 },
    r1: { title: 'from rxdb', done: false, n: 2 },
    w1: { title: 'from watermelon', done: false, n: 3 },
  });

  // Each edits a document another one created; the WatermelonDB client deletes one.
  await native.patch(COLLECTION, 'w1', { done: true });
  await (await rx.todos.findOne('n1').exec()).incrementalPatch({ title: 'native, edited by rxdb' });
  await wm.update('r1', { n: 20 });
  await wm.create({ w2: { title: 'second from watermelon', done: true, n: 4 } });
  await converge('the edits to reach every client', {
    n1: { title: 'native, edited by rxdb', done: false, n: 1 },
    r1: { title: 'from rxdb', done: false, n: 20 },
    w1: { title: 'from watermelon', done: true, n: 3 },
    w2: { title: 'second from watermelon', done: true, n: 4 },
  });

  await wm.delete('n1');
  await native.delete(COLLECTION, 'w2');
  await (await rx.todos.findOne('w1').exec()).remove();
  await converge('the deletes to reach every client', { r1: { title: 'from rxdb', done: false, n: 20 } });
});
