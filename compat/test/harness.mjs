// What every compat suite starts: a real `tidesync serve` (fresh data directory, a port
// of its own on loopback, a token), the test kit's fault proxy in front of it, native CLI
// clients, and a bounded wait. Everything started here is stopped by `stop()`.
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const debugDir = join(process.env.CARGO_TARGET_DIR ? resolve(repo, process.env.CARGO_TARGET_DIR) : join(repo, 'target'), 'debug');

/** The tidesync binary: `TIDESYNC_BIN`, else the debug build of this checkout. */
export const tidesyncBin = process.env.TIDESYNC_BIN ?? join(debugDir, 'tidesync');
/** The fault proxy: `FAULT_PROXY_BIN`, else the debug build next to tidesync's. */
export const faultProxyBin = process.env.FAULT_PROXY_BIN ?? join(dirname(tidesyncBin), 'fault-proxy');

const BUILD_HINT = 'build it first: cargo build -p tidesync-cli -p tidesync-testkit (or set TIDESYNC_BIN / FAULT_PROXY_BIN)';

/** Polls `check` (sync or async) until it returns a truthy value, or fails with `what`. */
export async function waitFor(what, check, { timeoutMs = 20_000, everyMs = 50 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

// Servers and proxies still running when this process exits (a test runner killing a file
// that timed out) go with it.
const running = new Set();
process.on('exit', () => running.forEach((proc) => proc.kill('SIGKILL')));

/** A child process whose stdout is read line by line and whose stderr is kept for failures. */
function child(bin, args, options) {
  const proc = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'], ...options });
  running.add(proc);
  proc.once('exit', () => running.delete(proc));
  const spawned = new Promise((ok, fail) => {
    proc.once('spawn', ok);
    proc.once('error', (e) => fail(new Error(`cannot start ${bin}: ${e.message}; ${BUILD_HINT}`)));
  });
  let stderr = '';
  proc.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-20_000);
  });
  const lines = createInterface({ input: proc.stdout })[Symbol.asyncIterator]();
  const exited = new Promise((ok) => proc.once('exit', (code, signal) => ok({ code, signal })));
  const nextLine = async (what, timeoutMs = 10_000) => {
    let timer;
    const timeout = new Promise((_, fail) => {
      timer = setTimeout(() => fail(new Error(`${bin} did not print ${what} within ${timeoutMs} ms; stderr:\n${stderr}`)), timeoutMs);
    });
    const ended = exited.then(({ code, signal }) => {
      throw new Error(`${bin} exited (${code ?? signal}) before printing ${what}; stderr:\n${stderr}`);
    });
    try {
      const { value, done } = await Promise.race([lines.next(), timeout, ended]);
      if (done) throw new Error(`${bin} closed stdout before printing ${what}; stderr:\n${stderr}`);
      return value;
    } finally {
      clearTimeout(timer);
    }
  };
  return { proc, spawned, exited, nextLine, stderr: () => stderr };
}

/**
 * Starts `tidesync serve` on a free loopback port with a fresh data directory, and a token
 * that may read and write `spaces`. `args` are added to the serve command line.
 */
export async function startServer({ spaces = ['s1'], args = [] } = {}) {
  const dataDir = await mkdtemp(join(tmpdir(), 'tidesync-compat-'));
  let token;
  try {
    const { stdout } = await run(tidesyncBin, ['token', 'create', '--data-dir', dataDir, '--user', 'compat', ...spaces.flatMap((s) => ['--space', s])]);
    token = stdout.split('\n').find((line) => line.startsWith('tsk_'));
  } catch (e) {
    throw new Error(`tidesync token create failed: ${e.message}; ${BUILD_HINT}`);
  }
  if (!token) throw new Error('tidesync token create printed no tsk_ token line');
  const server = child(tidesyncBin, ['serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', ...args], {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
  });
  await server.spawned;
  const banner = await server.nextLine('its listening address');
  const url = /listening on (http:\/\/\S+)/.exec(banner)?.[1];
  if (!url) throw new Error(`unexpected first line from tidesync serve: ${banner}`);
  return {
    url,
    token,
    dataDir,
    logs: server.stderr,
    async stop() {
      server.proc.kill('SIGTERM');
      const killer = setTimeout(() => server.proc.kill('SIGKILL'), 5_000);
      await server.exited;
      clearTimeout(killer);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Starts the fault proxy in front of `upstreamUrl`; `command('cut 1')` drives it. */
export async function startProxy(upstreamUrl) {
  const proxy = child(faultProxyBin, [new URL(upstreamUrl).host]);
  await proxy.spawned;
  const addr = await proxy.nextLine('its address');
  let queue = Promise.resolve();
  const command = (line) => {
    const answer = queue.then(async () => {
      proxy.proc.stdin.write(`${line}\n`);
      const reply = await proxy.nextLine(`an answer to ${JSON.stringify(line)}`);
      if (!reply.startsWith('ok')) throw new Error(`fault proxy refused ${JSON.stringify(line)}: ${reply}`);
      return reply;
    });
    queue = answer.catch(() => {});
    return answer;
  };
  return {
    url: `http://${addr}`,
    command,
    /** The proxy's counters, e.g. `(await stats()).responses_cut`. */
    async stats() {
      const reply = await command('stats');
      return Object.fromEntries(reply.split(' ').slice(1).map((kv) => kv.split('=')).map(([k, v]) => [k, Number(v)]));
    },
    /** Takes the client off the network: connects refused, live connections closed. */
    async offline() {
      await command('offline on');
      await command('kill');
    },
    /** Lets the client connect again. */
    online: () => command('offline off'),
    async stop() {
      proxy.proc.stdin.end();
      const killer = setTimeout(() => proxy.proc.kill('SIGKILL'), 5_000);
      await proxy.exited;
      clearTimeout(killer);
    },
  };
}

/** A native tidesync client: a client database written and synced with `tidesync client`. */
export async function nativeClient({ url, token, space }) {
  const dir = await mkdtemp(join(tmpdir(), 'tidesync-native-'));
  const db = join(dir, 'client.db');
  const cli = async (...args) => {
    try {
      const { stdout } = await run(tidesyncBin, ['client', '--db', db, '--json', ...args], {
        env: { ...process.env, RUST_LOG: 'warn' },
        maxBuffer: 256 * 1024 * 1024,
      });
      return stdout.trim() ? JSON.parse(stdout) : null;
    } catch (e) {
      throw new Error(`tidesync client ${args.join(' ')} failed: ${e.stderr || e.message}`);
    }
  };
  return {
    put: (collection, id, doc) => cli('put', `${space}/${collection}/${id}`, JSON.stringify(doc)),
    patch: (collection, id, patch) => cli('patch', `${space}/${collection}/${id}`, JSON.stringify(patch)),
    delete: (collection, id) => cli('delete', `${space}/${collection}/${id}`),
    /** Writes `{id: doc}` with one `tidesync client import` (puts in transactions of 1,000). */
    async import(collection, docs) {
      const file = join(dir, `${collection}.jsonl`);
      await writeFile(file, Object.entries(docs).map(([id, doc]) => `${JSON.stringify({ id, doc })}\n`).join(''));
      return cli('import', `${space}/${collection}`, `@${file}`);
    },
    sync: (timeoutSeconds = 30) =>
      cli('--server', url, '--token', token, '--space', space, 'sync', '--timeout', String(timeoutSeconds)),
    /** Every record of `collection` in the local view: `{id: doc}`. */
    async list(collection) {
      const docs = {};
      let page = await cli('list', `${space}/${collection}`, '--limit', '10000');
      for (;;) {
        for (const r of page.records) docs[r.id] = r.doc;
        if (!page.next) return docs;
        page = await cli('list', `${space}/${collection}`, '--limit', '10000', '--after', page.next);
      }
    },
    stop: () => rm(dir, { recursive: true, force: true }),
  };
}

/**
 * A server for one test and a fault proxy per client in front of it, all stopped when the
 * test ends (its logs printed if it failed). `endpoint(proxy)` is what a client is given.
 */
export async function setup(t, { proxies = 2, space = 's1', args = [] } = {}) {
  const server = await startServer({ spaces: [space], args });
  const started = [];
  t.after(async () => {
    await Promise.all(started.map((p) => p.stop()));
    await server.stop();
  });
  for (let i = 0; i < proxies; i++) started.push(await startProxy(server.url));
  const endpoint = (via) => ({ url: via.url, token: server.token, space });
  return { server, proxies: started, endpoint, direct: endpoint(server), space };
}

/** Every document of a collection as the server's RxDB pull serves them, `{id: doc}`. */
export async function serverDocs({ url, token, space }, collection, { deleted = false } = {}) {
  const docs = {};
  let checkpoint;
  for (;;) {
    const query = new URLSearchParams({ limit: '1000' });
    if (checkpoint) query.set('checkpoint', JSON.stringify(checkpoint));
    const response = await fetch(`${url}/compat/rxdb/v1/${space}/${collection}/pull?${query}`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    if (!response.ok) throw new Error(`server pull answered ${response.status}: ${await response.text()}`);
    const page = await response.json();
    for (const doc of page.documents) {
      if (doc._deleted && !deleted) delete docs[doc.id];
      else docs[doc.id] = doc;
    }
    if (page.documents.length === 0) return docs;
    checkpoint = page.checkpoint;
  }
}
