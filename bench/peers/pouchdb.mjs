#!/usr/bin/env node
// PouchDB ↔ express-pouchdb on the workload of tidesync's "A → server → B" bench
// (crates/tidesync-client/benches/sync.rs), run by crates/tidesync-client/benches/peers.rs.
//
//   node pouchdb.mjs [--adapter leveldb|memory] [--docs N] [--timeout-seconds S]
//
// One process holds the server (express-pouchdb on 127.0.0.1, a free port) and two client
// databases A and B, all on the same PouchDB adapter: `leveldb` (durable, files in a fresh
// temporary directory) or `memory` (memdown). Not timed: A writes N small documents with
// bulkDocs in batches of 1,000 while it does not replicate; B starts a live, retrying pull
// replication from the server and waits until it is idle. Timed: from the start of A's
// one-shot push replication to the server until B's database holds N documents. Default
// replication options on both clients (like tidesync's default ClientConfig).
//
// Prints one JSON line on stdout, e.g.
//   {"tool":"pouchdb","adapter":"leveldb","docs":100000,"seconds":46.1,...}
// Progress goes to stderr. Any failure prints "pouchdb bench: <reason>" and exits 1.

import { mkdtemp, rm, readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

const HERE = dirname(fileURLToPath(import.meta.url));
const BATCH = 1000;

function fail(message) {
  process.stderr.write(`pouchdb bench: ${message}\n`);
  process.exit(1);
}

function usage() {
  return 'usage: node pouchdb.mjs [--adapter leveldb|memory] [--docs N] [--timeout-seconds S]';
}

function parseArgs(argv) {
  const opts = { adapter: 'leveldb', docs: 100000, timeoutSeconds: 1800 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const [name, inline] = arg.includes('=') ? arg.split(/=(.*)/s) : [arg, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      i += 1;
      if (i >= argv.length) fail(`${name} needs a value\n${usage()}`);
      return argv[i];
    };
    const positiveInt = (text) => {
      if (!/^[0-9]+$/.test(text) || Number(text) < 1) {
        fail(`${name} wants a positive integer, got '${text}'\n${usage()}`);
      }
      return Number(text);
    };
    switch (name) {
      case '--adapter': {
        const adapter = value();
        if (adapter !== 'leveldb' && adapter !== 'memory') {
          fail(`--adapter is leveldb or memory, got '${adapter}'\n${usage()}`);
        }
        opts.adapter = adapter;
        break;
      }
      case '--docs':
        opts.docs = positiveInt(value());
        break;
      case '--timeout-seconds':
        opts.timeoutSeconds = positiveInt(value());
        break;
      case '-h':
      case '--help':
        process.stdout.write(`${usage()}\n`);
        process.exit(0);
        break;
      default:
        fail(`unknown argument '${arg}'\n${usage()}`);
    }
  }
  return opts;
}

// The same record ids and documents as tidesync's bench: id `t%08d`, ~60 bytes of JSON.
function recordId(i) {
  return `t${String(i).padStart(8, '0')}`;
}

function todo(i) {
  return { _id: recordId(i), title: `Buy milk #${i}`, done: i % 3 === 0, priority: i % 5 };
}

async function packageVersion(name) {
  const text = await readFile(join(HERE, 'node_modules', name, 'package.json'), 'utf8');
  return JSON.parse(text).version;
}

async function loadModules() {
  try {
    const [{ default: PouchDB }, { default: memoryAdapter }, { default: express }, { default: expressPouchDB }] =
      await Promise.all([
        import('pouchdb'),
        import('pouchdb-adapter-memory'),
        import('express'),
        import('express-pouchdb'),
      ]);
    return { PouchDB, memoryAdapter, express, expressPouchDB };
  } catch (e) {
    fail(`cannot load the npm packages (${e.message}); install them with: npm ci --prefix bench/peers`);
  }
}

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve(server.address().port);
    });
  });
}

function closeServer(server) {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections?.();
  });
}

// Resolves once a live replication has caught up (its first 'paused' without an error).
function firstIdle(replication) {
  return new Promise((resolve, reject) => {
    const onPaused = (err) => {
      if (!err) {
        cleanup();
        resolve();
      }
    };
    const onError = (err) => {
      cleanup();
      reject(new Error(`B's replication failed before it was idle: ${err?.message ?? err}`));
    };
    const cleanup = () => {
      replication.off('paused', onPaused);
      replication.off('error', onError);
    };
    replication.on('paused', onPaused);
    replication.on('error', onError);
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const { PouchDB, memoryAdapter, express, expressPouchDB } = await loadModules();
  PouchDB.plugin(memoryAdapter);

  const dir = await mkdtemp(join(tmpdir(), 'tidesync-pouchdb-'));
  const cleanups = [];
  const cleanupAll = async () => {
    for (const f of cleanups.reverse()) {
      try {
        await f();
      } catch (e) {
        process.stderr.write(`pouchdb bench: cleanup: ${e.message}\n`);
      }
    }
    await rm(dir, { recursive: true, force: true });
  };

  try {
    // Database names are distinct across server and clients: memdown keeps one store per name.
    const dbOptions = (prefix) =>
      opts.adapter === 'leveldb' ? { adapter: 'leveldb', prefix: join(dir, prefix) + '/' } : { adapter: 'memory' };
    const ServerPouch = PouchDB.defaults(dbOptions('server'));
    const ClientPouch = PouchDB.defaults(dbOptions('clients'));
    if (opts.adapter === 'leveldb') {
      const { mkdir } = await import('node:fs/promises');
      await mkdir(join(dir, 'server'));
      await mkdir(join(dir, 'clients'));
    }

    // The server: only the routes PouchDB replication uses (no config or log files).
    const app = express();
    app.use('/', expressPouchDB(ServerPouch, { mode: 'minimumForPouchDB' }));
    const server = createServer(app);
    const port = await listen(server);
    cleanups.push(() => closeServer(server));
    const remoteName = `http://127.0.0.1:${port}/server-bench`;
    const serverDb = new ServerPouch('server-bench');
    cleanups.push(() => serverDb.close());
    await serverDb.info();
    const remote = new PouchDB(remoteName);
    cleanups.push(() => remote.close());
    await remote.info();

    const a = new ClientPouch('client-a');
    const b = new ClientPouch('client-b');
    cleanups.push(() => a.close(), () => b.close());

    // Not timed: A writes while not replicating (tidesync's A writes while paused).
    const writeStart = performance.now();
    for (let from = 0; from < opts.docs; from += BATCH) {
      const docs = [];
      for (let i = from; i < Math.min(from + BATCH, opts.docs); i++) docs.push(todo(i));
      const results = await a.bulkDocs(docs);
      const failed = results.find((r) => r.error);
      if (failed) throw new Error(`A's bulkDocs failed for ${failed.id}: ${failed.message ?? failed.error}`);
    }
    const writeSeconds = (performance.now() - writeStart) / 1000;
    const aInfo = await a.info();
    if (aInfo.doc_count !== opts.docs) {
      throw new Error(`A holds ${aInfo.doc_count} documents after writing ${opts.docs}`);
    }
    process.stderr.write(`  pouchdb ${opts.adapter}: A wrote ${opts.docs} docs in ${writeSeconds.toFixed(2)} s\n`);

    // B: online, live and idle before the clock starts.
    const pull = PouchDB.replicate(remote, b, { live: true, retry: true });
    cleanups.push(() => pull.cancel());
    let pullError = null;
    pull.on('error', (err) => {
      pullError = err;
    });
    pull.on('denied', (err) => {
      pullError = new Error(`B's replication was denied a document: ${JSON.stringify(err)}`);
    });
    await firstIdle(pull);

    // Timed: A's push until B holds every document.
    let checking = false;
    let done;
    let failWith;
    const finished = new Promise((resolve, reject) => {
      done = resolve;
      failWith = reject;
    });
    const checkB = async () => {
      if (checking) return;
      checking = true;
      try {
        const info = await b.info();
        if (info.doc_count >= opts.docs) done(performance.now());
      } catch (e) {
        failWith(new Error(`reading B's info: ${e.message}`));
      } finally {
        checking = false;
      }
    };
    let pulledDocs = 0;
    pull.on('change', (info) => {
      pulledDocs += info.docs_written ?? info.docs?.length ?? 0;
      if (pulledDocs >= opts.docs) checkB();
    });
    pull.on('paused', () => checkB());
    const timer = setTimeout(
      () =>
        failWith(
          new Error(
            `timed out after ${opts.timeoutSeconds} s: B pulled ${pulledDocs} of ${opts.docs} documents` +
              (pullError ? ` (last replication error: ${pullError.message ?? pullError})` : ''),
          ),
        ),
      opts.timeoutSeconds * 1000,
    );
    cleanups.push(() => clearTimeout(timer));

    const start = performance.now();
    let pushSeconds = null;
    const push = PouchDB.replicate(a, remote).then(
      (result) => {
        pushSeconds = (performance.now() - start) / 1000;
        if (!result.ok || result.docs_written !== opts.docs) {
          failWith(
            new Error(
              `A's push ended with ok=${result.ok}, ${result.docs_written} of ${opts.docs} docs written, ` +
                `errors: ${JSON.stringify(result.errors)}`,
            ),
          );
        }
      },
      (err) => failWith(new Error(`A's push to the server failed: ${err?.message ?? err}`)),
    );
    const end = await finished;
    const seconds = (end - start) / 1000;
    await push;

    const bInfo = await b.info();
    if (bInfo.doc_count !== opts.docs) {
      throw new Error(`B holds ${bInfo.doc_count} documents, expected ${opts.docs}`);
    }
    const serverInfo = await serverDb.info();
    const sample = await b.get(recordId(opts.docs - 1));
    const expected = todo(opts.docs - 1);
    if (sample.title !== expected.title || sample.done !== expected.done || sample.priority !== expected.priority) {
      throw new Error(`B's copy of ${expected._id} differs: ${JSON.stringify(sample)}`);
    }

    const result = {
      tool: 'pouchdb',
      adapter: opts.adapter,
      docs: opts.docs,
      seconds,
      a_to_server_seconds: pushSeconds,
      a_write_seconds: writeSeconds,
      server_doc_count: serverInfo.doc_count,
      batch: BATCH,
      node: process.version,
      pouchdb: await packageVersion('pouchdb'),
      pouchdb_adapter_memory: await packageVersion('pouchdb-adapter-memory'),
      express_pouchdb: await packageVersion('express-pouchdb'),
      express: await packageVersion('express'),
    };
    await cleanupAll();
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } catch (e) {
    await cleanupAll();
    fail(e?.stack ?? String(e));
  }
}

main().then(
  () => process.exit(0),
  (e) => fail(e?.stack ?? String(e)),
);
