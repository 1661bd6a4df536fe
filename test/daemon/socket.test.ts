import t from 'tap';
import { conformance } from './helpers/conformance.js';
import { startDaemon, type TestDaemon } from './helpers/daemon.js';
import { socketHarness, type Harness } from './helpers/harness.js';
import { lstatSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { SocketTransport } from '../../src/daemon/transport/socket.js';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

let d: TestDaemon;
let h: Harness;
t.before(async () => {
  d = await startDaemon({ enabled: false });
  h = await socketHarness(d.cfg.socket.path);
});
t.teardown(async () => {
  await h?.close();
  await d?.stop();
});

t.test('the socket file is created with mode 0660', async (t) => {
  t.equal(statSync(d.cfg.socket.path).mode & 0o777, 0o660);
});

t.test('the socket directory it creates is 0750 whatever the umask, even with the store off', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bitad-sockdir-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'run/bitad/bitad.sock');
  const old = process.umask(0o000);
  const sock = new SocketTransport({ path, dispatcher: d.controller.dispatcher!, maxLineBytes: 4096, maxInFlight: 8, log: pino({ level: 'silent' }) });
  try {
    await sock.start();
  } finally {
    process.umask(old);
  }
  t.teardown(() => sock.stop());
  t.same([join(dir, 'run'), join(dir, 'run/bitad')].map((p) => (statSync(p).mode & 0o777).toString(8)), ['750', '750']);
});

conformance(t, 'socket', () => d, () => h);

t.test('a file at the socket path that is not a socket is refused, never deleted', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bitad-notsock-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'bitad.db');
  writeFileSync(path, 'precious');
  const sock = new SocketTransport({ path, dispatcher: d.controller.dispatcher!, maxLineBytes: 4096, maxInFlight: 8, log: pino({ level: 'silent' }) });
  await t.rejects(sock.start(), /exists and is not a socket/);
  t.equal(readFileSync(path, 'utf8'), 'precious', 'the file is untouched');
});

t.test('a stale socket left by a killed daemon is replaced', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bitad-stale-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'bitad.sock');
  // A bound socket whose file stays behind when its server closes without unlinking (as after SIGKILL).
  const dead = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.exit(0))`]);
  t.equal(dead.status, 0);
  t.ok(lstatSync(path).isSocket(), 'stale socket file exists');
  const sock = new SocketTransport({ path, dispatcher: d.controller.dispatcher!, maxLineBytes: 4096, maxInFlight: 8, log: pino({ level: 'silent' }) });
  await sock.start();
  t.teardown(() => sock.stop());
  const c = connect(path);
  await new Promise((r) => c.once('connect', r));
  c.destroy();
});

t.test('a client that disconnects cancels its requests', async (t) => {
  const sock = connect(d.cfg.socket.path);
  await new Promise((r) => sock.once('connect', r));
  const gotChunk = new Promise((r) => sock.once('data', r));
  sock.write(JSON.stringify({ type: 'generate', transaction: 'gone', prompt: 'long', max_tokens: 60 }) + '\n');
  await gotChunk;
  sock.destroy();
  for (let i = 0; i < 100 && !d.rows().some((r) => r.txn === 'gone'); i++) await sleep(20);
  t.match(d.rows().find((r) => r.txn === 'gone'), { outcome: 'error', error_code: 'cancelled' });
  t.ok(d.engine.active === 0, 'the engine stopped generating');
});

t.test('a client that half-closes after sending still gets its answers, then the connection ends', async (t) => {
  const sock = connect(d.cfg.socket.path);
  await new Promise((r) => sock.once('connect', r));
  let out = '';
  sock.on('data', (b) => (out += b));
  const ended = new Promise((r) => sock.once('end', r));
  sock.end(JSON.stringify({ type: 'generate', transaction: 'half', prompt: 'hello there', max_tokens: 5 }) + '\n');
  await ended;
  const lines = out.trim().split('\n').map((l) => JSON.parse(l));
  t.match(lines[lines.length - 1], { transaction: 'half', status: 'ok' });
  t.ok(lines.length > 1, 'chunks were streamed before the final reply');
});

/** Sends `text` and half-closes; resolves with the reply lines once the daemon ends the connection. */
async function halfCloseWith(text: string): Promise<Record<string, unknown>[]> {
  const sock = connect(d.cfg.socket.path);
  await new Promise((r) => sock.once('connect', r));
  let out = '';
  sock.on('data', (b) => (out += b));
  const ended = new Promise((r) => sock.once('end', r));
  sock.end(text);
  await Promise.race([ended, sleep(3000)]);
  sock.destroy();
  return out.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l));
}

t.test('a last line without a newline is answered at end of input', async (t) => {
  const replies = await halfCloseWith(JSON.stringify({ type: 'health', transaction: 'no-newline' }));
  t.match(replies, [{ transaction: 'no-newline', status: 'ok' }]);
});

t.test('an unfinished last line that is not JSON is answered bad_json at end of input', async (t) => {
  const replies = await halfCloseWith('{"type":"health","transaction":"cut');
  t.match(replies, [{ transaction: null, status: 'error', error: { code: 'bad_json' } }]);
});

t.test('the unterminated last line is answered after the complete lines before it, past one turn of lines', async (t) => {
  const txns = Array.from({ length: 41 }, (_, i) => `l${i}`); // more than the 32 lines taken per turn
  const replies = await halfCloseWith(txns.map((txn) => JSON.stringify({ type: 'health', transaction: txn })).join('\n'));
  t.same(replies.map((r) => r.transaction), txns);
});

/** Connects, sends one health request, resolves with its reply (or the connect error's code). */
function healthOver(path: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.setEncoding('utf8');
    let buf = '';
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    s.on('data', (chunk: string) => {
      buf += chunk;
      if (!buf.includes('\n')) return;
      s.destroy();
      resolve((JSON.parse(buf) as { status: string }).status);
    });
    s.on('connect', () => s.write('{"type":"health"}\n'));
  });
}

t.test('a socket file deleted while running (rm -rf of its directory) is bound again; a file put in its place is left alone', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bitad-sockgone-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'var/bitad.sock');
  const sock = new SocketTransport({ path, dispatcher: d.controller.dispatcher!, maxLineBytes: 4096, maxInFlight: 8, log: pino({ level: 'silent' }) });
  await sock.start();
  t.teardown(() => sock.stop());
  const client = await socketHarness(path);
  t.teardown(() => client.close());
  rmSync(join(dir, 'var'), { recursive: true });
  t.equal(await healthOver(path), 'ENOENT', 'nobody can connect while the file is gone');
  let answer = 'ENOENT';
  for (let i = 0; i < 40 && answer !== 'ok'; i++) {
    await sleep(100);
    answer = await healthOver(path);
  }
  t.equal(answer, 'ok', 'a new client is answered within 4 s');
  t.equal(statSync(path).mode & 0o777, 0o660, 'the new socket file has the same mode');
  t.match(await client.send('health', {}).final, { status: 'ok' }, 'a client connected before is still served');
  rmSync(path);
  writeFileSync(path, 'precious');
  await sleep(2500);
  t.match(sock.health(), { status: 'down', reason: `${path} is no longer this daemon's socket and is not one; nobody can connect` });
  await sock.stop();
  t.equal(readFileSync(path, 'utf8'), 'precious', 'the file is neither replaced nor deleted at stop');
});
