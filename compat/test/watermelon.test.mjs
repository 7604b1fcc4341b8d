// WatermelonDB (the real package, LokiJS adapter in memory, `synchronize` with the handlers
// of lib/watermelon.mjs) against a real `tidesync serve`, each client behind a fault proxy.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { TidesyncError } from '../lib/http.mjs';
import { COLLECTION, fields, watermelonClient } from './clients.mjs';
import { serverDocs, setup } from './harness.mjs';

const sorted = (docs) => Object.fromEntries(Object.entries(docs).sort(([a], [b]) => a.localeCompare(b)));
const serverFields = async (direct) =>
  sorted(Object.fromEntries(Object.entries(await serverDocs(direct, COLLECTION)).map(([id, d]) => [id, fields(d)])));

async function assertConverged(expected, direct, ...clients) {
  for (const [i, c] of clients.entries()) {
    assert.deepEqual(sorted(await c.docs()), sorted(expected), `client ${i} has not converged`);
  }
  assert.deepEqual(await serverFields(direct), sorted(expected), 'the server holds something else');
}

async function twoClients(t) {
  const env = await setup(t);
  const a = await watermelonClient(env.endpoint(env.proxies[0]));
  const b = await watermelonClient(env.endpoint(env.proxies[1]));
  return { ...env, a, b };
}

test('watermelon: offline edits on two clients sync when they are back and both converge', { timeout: 60_000 }, async (t) => {
  const { a, b, proxies, direct } = await twoClients(t);
  await a.create({ milk: { title: 'milk', done: false, n: 1 }, bread: { title: 'bread', done: false, n: 2 } });
  await a.sync();
  await b.sync();
  await assertConverged({ milk: { title: 'milk', done: false, n: 1 }, bread: { title: 'bread', done: false, n: 2 } }, direct, a, b);

  await Promise.all(proxies.map((p) => p.offline()));
  await a.create({ eggs: { title: 'eggs', done: false, n: 3 } });
  await a.update('milk', { done: true });
  await b.create({ tea: { title: 'tea', done: false, n: 4 } });
  await b.update('bread', { title: 'rye bread' });
  await assert.rejects(a.sync(), 'a sync without a network fails (and keeps the local changes)');
  await Promise.all(proxies.map((p) => p.online()));

  await a.sync();
  await b.sync();
  await a.sync();
  await assertConverged(
    {
      milk: { title: 'milk', done: true, n: 1 },
      bread: { title: 'rye bread', done: false, n: 2 },
      eggs: { title: 'eggs', done: false, n: 3 },
      tea: { title: 'tea', done: false, n: 4 },
    },
    direct,
    a,
    b,
  );
});

test('watermelon: a same-field conflict is refused with 409, and the client that syncs again wins', { timeout: 60_000 }, async (t) => {
  const { a, b, direct } = await twoClients(t);
  await a.create({ shared: { title: 'start', done: false, n: 0 } });
  await a.sync();
  await b.sync();

  await a.update('shared', { title: 'from A' });
  await b.update('shared', { title: 'from B' });
  // A pushes its edit between B's pull and B's push: B's push names a record changed after
  // B's last_pulled_at, so tidesync refuses all of it.
  let interleaved = false;
  const aSyncsFirst = async () => {
    if (interleaved) return;
    interleaved = true;
    await a.sync();
  };
  const refused = await b.sync({ onWillApplyRemoteChanges: aSyncsFirst }).then(
    () => null,
    (e) => e,
  );
  assert.ok(refused instanceof TidesyncError, `B's push must be refused, got ${refused}`);
  assert.equal(refused.status, 409);
  assert.equal(refused.code, 'conflict');
  assert.equal((await serverFields(direct)).shared.title, 'from A', 'nothing of the refused push was written');

  // As WatermelonDB expects: sync again. The pull brings A's title, WatermelonDB keeps B's
  // local change to the same field, and the push (now after A's write) is applied.
  await b.sync();
  await a.sync();
  await assertConverged({ shared: { title: 'from B', done: false, n: 0 } }, direct, a, b);
});

test('watermelon: a delete reaches the other client and the server', { timeout: 60_000 }, async (t) => {
  const { a, b, direct } = await twoClients(t);
  await a.create({ keep: { title: 'keep', done: false, n: 1 }, drop: { title: 'drop', done: false, n: 2 } });
  await a.sync();
  await b.sync();
  await b.delete('drop');
  await b.sync();
  await a.sync();
  await assertConverged({ keep: { title: 'keep', done: false, n: 1 } }, direct, a, b);
  const server = await serverDocs(direct, COLLECTION, { deleted: true });
  assert.deepEqual(server.drop, { id: 'drop', _deleted: true }, 'the record is deleted on the server, not just absent');
});

test('watermelon: a push whose answer is lost is resent as it was and applied once', { timeout: 60_000 }, async (t) => {
  const { a, b, proxies, direct } = await twoClients(t);
  await a.create({ lost: { title: 'answer lost', done: false, n: 7 } });
  // Cut the next answer once the pull is in: that is the push's. The resend (same changes,
  // same last_pulled_at) would be refused as a conflict with the first copy, had tidesync
  // applied it again; it is answered {} and the sync completes.
  await a.sync({ onWillApplyRemoteChanges: () => proxies[0].command('cut 1') });
  assert.equal((await proxies[0].stats()).responses_cut, 1, 'the proxy cut exactly one answer');
  await b.sync();
  await assertConverged({ lost: { title: 'answer lost', done: false, n: 7 } }, direct, a, b);
  assert.equal(await a.unsynced(), false, 'the lost push was marked synced: A has nothing left to push');
});

test('watermelon: 10,000 records pushed by one client in one push are pulled by another', { timeout: 180_000 }, async (t) => {
  const { a, b, direct } = await twoClients(t);
  const docs = Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`doc${String(i).padStart(5, '0')}`, { title: `todo ${i}`, done: i % 2 === 0, n: i }]));
  await a.create(docs);
  await a.sync();
  await b.sync();
  const got = await b.docs();
  assert.equal(Object.keys(got).length, 10_000);
  for (const id of ['doc00000', 'doc04999', 'doc09999']) assert.deepEqual(got[id], docs[id]);
  assert.equal(Object.keys(await serverDocs(direct, COLLECTION)).length, 10_000);
});
