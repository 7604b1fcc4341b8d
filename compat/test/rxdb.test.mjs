// RxDB (the real package, memory storage, replicateRxCollection with the handlers of
// lib/rxdb.mjs) against a real `tidesync serve`, each client behind a fault proxy of its own.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { COLLECTION, fields, rxdbClient } from './clients.mjs';
import { serverDocs, setup, waitFor } from './harness.mjs';

const sameDocs = async (what, clients, expected) =>
  waitFor(what, async () => {
    for (const c of clients) {
      if (JSON.stringify(sorted(await c.docs())) !== JSON.stringify(sorted(expected))) return false;
    }
    return true;
  }).catch(async (e) => {
    const seen = await Promise.all(clients.map((c) => c.docs()));
    throw new Error(`${e.message}\nexpected ${JSON.stringify(sorted(expected))}\nclients have ${seen.map((d) => JSON.stringify(sorted(d))).join('\n  and ')}`);
  });

const sorted = (docs) => Object.fromEntries(Object.entries(docs).sort(([a], [b]) => a.localeCompare(b)));

/** Two RxDB clients, each replicating through its own proxy, in sync with each other. */
async function twoClients(t, options = {}) {
  const env = await setup(t);
  const [a, b] = [await rxdbClient(env.endpoint(env.proxies[0])), await rxdbClient(env.endpoint(env.proxies[1]))];
  t.after(() => Promise.all([a.close(), b.close()]));
  a.replicate({ retryTime: 200, ...options });
  b.replicate({ retryTime: 200, ...options });
  await Promise.all([a.initialSync(), b.initialSync()]);
  return { ...env, a, b };
}

test('rxdb: offline edits on two clients are pushed when they reconnect and both converge', { timeout: 60_000 }, async (t) => {
  const { a, b, proxies, direct } = await twoClients(t);
  await a.todos.bulkInsert([
    { id: 'milk', title: 'milk', done: false, n: 1 },
    { id: 'bread', title: 'bread', done: false, n: 2 },
  ]);
  await sameDocs('both clients to see the first two documents', [a, b], {
    milk: { title: 'milk', done: false, n: 1 },
    bread: { title: 'bread', done: false, n: 2 },
  });

  await Promise.all(proxies.map((p) => p.offline()));
  await a.todos.insert({ id: 'eggs', title: 'eggs', done: false, n: 3 });
  await (await a.todos.findOne('milk').exec()).incrementalPatch({ done: true });
  await b.todos.insert({ id: 'tea', title: 'tea', done: false, n: 4 });
  await (await b.todos.findOne('bread').exec()).incrementalPatch({ title: 'rye bread' });
  await new Promise((r) => setTimeout(r, 500)); // pushes fail and are retried meanwhile
  assert.equal(Object.keys(await serverDocs(direct, COLLECTION)).length, 2, 'nothing reached the server while offline');

  await Promise.all(proxies.map((p) => p.online()));
  const expected = {
    milk: { title: 'milk', done: true, n: 1 },
    bread: { title: 'rye bread', done: false, n: 2 },
    eggs: { title: 'eggs', done: false, n: 3 },
    tea: { title: 'tea', done: false, n: 4 },
  };
  await sameDocs('both clients to converge after reconnecting', [a, b], expected);
  const server = await serverDocs(direct, COLLECTION);
  assert.deepEqual(sorted(Object.fromEntries(Object.entries(server).map(([id, d]) => [id, fields(d)]))), sorted(expected));
  assert.equal(a.conflicts + b.conflicts, 0, 'edits of different documents never conflict');
});

test('rxdb: a same-field conflict keeps the write that reached the server first (RxDB resolves to the master state)', { timeout: 60_000 }, async (t) => {
  const { a, b, proxies, direct } = await twoClients(t);
  await a.todos.insert({ id: 'shared', title: 'start', done: false, n: 0 });
  await sameDocs('both clients to see the shared document', [a, b], { shared: { title: 'start', done: false, n: 0 } });

  await Promise.all(proxies.map((p) => p.offline()));
  await (await a.todos.findOne('shared').exec()).incrementalPatch({ title: 'from A' });
  await (await b.todos.findOne('shared').exec()).incrementalPatch({ title: 'from B' });

  await proxies[0].online();
  await waitFor("A's title to reach the server", async () => (await serverDocs(direct, COLLECTION)).shared?.title === 'from A');
  await proxies[1].online();

  await sameDocs('B to give up its write for the server state', [a, b], { shared: { title: 'from A', done: false, n: 0 } });
  assert.ok(b.conflicts >= 1, `B's push must have been answered as a conflict (conflicts resolved: ${b.conflicts})`);
  assert.equal(a.conflicts, 0, 'A wrote first: no conflict for A');
  assert.equal((await serverDocs(direct, COLLECTION)).shared.title, 'from A');
});

test('rxdb: a delete reaches the other client and the server keeps it as _deleted', { timeout: 60_000 }, async (t) => {
  const { a, b, direct } = await twoClients(t);
  await a.todos.bulkInsert([
    { id: 'keep', title: 'keep', done: false, n: 1 },
    { id: 'drop', title: 'drop', done: false, n: 2 },
  ]);
  await sameDocs('both clients to see both documents', [a, b], {
    keep: { title: 'keep', done: false, n: 1 },
    drop: { title: 'drop', done: false, n: 2 },
  });

  await (await b.todos.findOne('drop').exec()).remove();
  await sameDocs('the delete to reach A', [a, b], { keep: { title: 'keep', done: false, n: 1 } });
  const server = await serverDocs(direct, COLLECTION, { deleted: true });
  assert.deepEqual(server.drop, { id: 'drop', _deleted: true }, 'a deleted record is served as {id, _deleted: true}');
  assert.equal(server.keep._deleted, false);
});

test('rxdb: a push whose answer is lost is retried by RxDB and applied once', { timeout: 60_000 }, async (t) => {
  const { a, b, proxies, direct } = await twoClients(t);
  const received = [];
  b.replication.received$.subscribe((doc) => received.push(doc));
  const failures = [];
  a.replication.error$.subscribe((e) => failures.push(e));

  // A is idle once its pull stream is up and the pull its RESYNC asked for is done: the
  // next answer A waits for is then its push's.
  await a.inSync();
  await new Promise((r) => setTimeout(r, 300));
  await a.inSync();
  await proxies[0].command('cut 1');
  await a.todos.insert({ id: 'lost', title: 'answer lost', done: false, n: 7 });
  await sameDocs('the retried push to leave both clients in sync', [a, b], { lost: { title: 'answer lost', done: false, n: 7 } });
  await a.inSync();
  // Long enough for a second copy to be written and streamed to B, were the resend applied again.
  await new Promise((r) => setTimeout(r, 1_000));

  assert.equal((await proxies[0].stats()).responses_cut, 1, 'the proxy cut exactly one answer');
  assert.ok(failures.some((e) => e.code === 'RC_PUSH'), `RxDB saw the push fail and so resent it (errors: ${failures.map((e) => e.code)})`);
  assert.equal(a.conflicts, 0, 'the resent push is recognized as already applied, not a conflict');
  assert.equal(received.filter((d) => d.id === 'lost').length, 1, `B received the document once (received: ${JSON.stringify(received)})`);
  assert.equal((await serverDocs(direct, COLLECTION)).lost.title, 'answer lost');
});

test('rxdb: 10,000 documents pushed by one client are pulled by another', { timeout: 180_000 }, async (t) => {
  const { a, b, direct } = await twoClients(t, { batchSize: 1000 });
  const docs = Array.from({ length: 10_000 }, (_, i) => ({ id: `doc${String(i).padStart(5, '0')}`, title: `todo ${i}`, done: i % 2 === 0, n: i }));
  await a.todos.bulkInsert(docs);
  await waitFor('B to hold all 10,000 documents', async () => (await b.todos.count().exec()) === 10_000, { timeoutMs: 150_000, everyMs: 250 });
  await a.inSync();
  const got = await b.docs();
  for (const d of [docs[0], docs[4_999], docs[9_999]]) assert.deepEqual(got[d.id], fields(d));
  assert.equal(Object.keys(await serverDocs(direct, COLLECTION)).length, 10_000);
});
