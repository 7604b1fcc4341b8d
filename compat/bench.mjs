// N documents (default 10,000) written on one client, pushed to a real `tidesync serve`, and
// pulled by a fresh second client, through RxDB (replicateRxCollection, memory storage),
// WatermelonDB (synchronize, LokiJS) and, for comparison in the same run, the native
// protocol (the `tidesync client` CLI). Each protocol has a space of its own on one server.
//
//   node bench.mjs [--docs N] [--reps R] [--rxdb-batch B] [--timeout-seconds S]
//
// Times are wall clock around the sync calls only: the local writes before the push are
// timed apart. Each repetition runs the three protocols in turn on fresh spaces; the table
// shows medians, the ratio column the median of each repetition's ratio to the native
// protocol. Exits non-zero if a second client ends up without every document.
import { execFile } from 'node:child_process';
import { parseArgs } from 'node:util';

import { COLLECTION, rxdbClient, watermelonClient } from './test/clients.mjs';
import { nativeClient, startServer, tidesyncBin } from './test/harness.mjs';

const { values } = parseArgs({
  options: {
    docs: { type: 'string', default: '10000' },
    reps: { type: 'string', default: '3' },
    'rxdb-batch': { type: 'string', default: '1000' },
    'timeout-seconds': { type: 'string', default: '600' },
  },
});
const N = Number(values.docs);
const reps = Number(values.reps);
const rxdbBatch = Number(values['rxdb-batch']);
const timeoutMs = Number(values['timeout-seconds']) * 1000;
const watchdog = setTimeout(() => {
  console.error(`bench: not done after ${values['timeout-seconds']} s`);
  process.exit(1);
}, timeoutMs);

const doc = (i) => ({ title: `todo ${i}`, done: i % 2 === 0, n: i });
const id = (i) => `doc${String(i).padStart(6, '0')}`;
const seconds = (ms) => (ms / 1000).toFixed(2);

async function timed(fn) {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

function expectAll(protocol, count) {
  if (count !== N) throw new Error(`${protocol}: the pulling client has ${count} of ${N} documents`);
}

const median = (xs) => {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

async function rxdb(env) {
  const [a, b] = [await rxdbClient(env), await rxdbClient(env)];
  const local = await timed(() => a.todos.bulkInsert(Array.from({ length: N }, (_, i) => ({ id: id(i), ...doc(i) }))));
  // live: false runs one replication cycle (push everything, pull until empty) and ends.
  const push = await timed(async () => {
    a.replicate({ live: false, batchSize: rxdbBatch });
    await a.initialSync(timeoutMs);
  });
  const pull = await timed(async () => {
    b.replicate({ live: false, batchSize: rxdbBatch });
    await b.initialSync(timeoutMs);
  });
  expectAll('RxDB', await b.todos.count().exec());
  await Promise.all([a.close(), b.close()]);
  return { protocol: `RxDB (batches of ${rxdbBatch})`, local, push, pull };
}

async function watermelon(env) {
  const [a, b] = [await watermelonClient(env), await watermelonClient(env)];
  const local = await timed(() => a.create(Object.fromEntries(Array.from({ length: N }, (_, i) => [id(i), doc(i)]))));
  const push = await timed(() => a.sync());
  const pull = await timed(() => b.sync());
  expectAll('WatermelonDB', Object.keys(await b.docs()).length);
  return { protocol: 'WatermelonDB', local, push, pull };
}

async function native(env) {
  const [a, b] = [await nativeClient(env), await nativeClient(env)];
  const local = await timed(() => a.import(COLLECTION, Object.fromEntries(Array.from({ length: N }, (_, i) => [id(i), doc(i)]))));
  const push = await timed(() => a.sync(timeoutMs / 1000));
  const pull = await timed(() => b.sync(timeoutMs / 1000));
  expectAll('native', Object.keys(await b.list(COLLECTION)).length);
  await Promise.all([a.stop(), b.stop()]);
  return { protocol: 'native (tidesync client sync)', local, push, pull };
}

const version = await new Promise((ok) => execFile(tidesyncBin, ['--version'], (e, out) => ok(e ? '?' : out.trim())));
const runs = { native, rxdb, watermelon };
const spaces = Array.from({ length: reps }, (_, r) => Object.keys(runs).map((name) => `bench-${name}-${r}`)).flat();
const server = await startServer({ spaces });
try {
  console.log(`${N} documents, ${reps} repetition(s), ${version} (${tidesyncBin}), Node ${process.version}`);
  const results = {};
  for (let r = 0; r < reps; r++) {
    for (const [name, run] of Object.entries(runs)) {
      const row = await run({ url: server.url, token: server.token, space: `bench-${name}-${r}` });
      (results[row.protocol] ??= []).push(row);
      console.log(`  ${row.protocol}: local writes ${seconds(row.local)} s, push ${seconds(row.push)} s, pull ${seconds(row.pull)} s`);
    }
  }
  const [base] = Object.values(results);
  console.log('\n| protocol | push | pull | push + pull | × native |');
  console.log('|---|---:|---:|---:|---:|');
  for (const [protocol, rows] of Object.entries(results)) {
    const total = median(rows.map((r) => r.push + r.pull));
    const ratio = median(rows.map((r, i) => (r.push + r.pull) / (base[i].push + base[i].pull)));
    console.log(
      `| ${protocol} | ${seconds(median(rows.map((r) => r.push)))} s | ${seconds(median(rows.map((r) => r.pull)))} s | ${seconds(total)} s (${Math.round((2 * N) / (total / 1000))} docs/s) | ${ratio.toFixed(2)} |`,
    );
  }
} finally {
  await server.stop();
  clearTimeout(watchdog);
}
