/**
 * Nothing acknowledged is lost: the daemon runs as its own process (fake-daemon.ts: `bitad start`
 * with the FakeEngine) under a stream of socket requests and is SIGKILLed mid-stream. Every request
 * whose final reply reached the client must have its row, and the file must pass integrity_check.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';

const dir = mkdtempSync(join(tmpdir(), 'bitad-durability-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const socketPath = join(dir, 'bitad.sock');
const dbPath = join(dir, 'bitad.db');
const configPath = join(dir, 'bitad.yaml');
writeFileSync(
  configPath,
  [
    'node_id: durability',
    `data_dir: ${dir}`,
    'mqtt: { enabled: false }',
    'queue: { capacity: 64 }',
    'telemetry: { enabled: false }',
    'log: { level: silent }',
  ].join('\n'),
);

async function connectWhenUp(deadline: number): Promise<Socket> {
  for (;;) {
    try {
      const sock = connect(socketPath);
      await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
      return sock;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(50);
    }
  }
}

t.test('every request whose final reply arrived before a SIGKILL has its row; the file is intact', async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/daemon/helpers/fake-daemon.ts', '--config', configPath], {
    env: { ...process.env, FAKE_ENGINE: '{"chunkDelayMs":0,"contextLength":64}' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (b) => (stderr += b));
  const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });

  const sock = await connectWhenUp(Date.now() + 20_000);
  const acknowledged: string[] = [];
  let sent = 0;
  let buf = '';
  const send = () => {
    const i = sent++;
    // Every fifth request is refused (max_tokens over the limit): rejections have rows too.
    const maxTokens = i % 5 === 4 ? 1_000_000 : 3;
    sock.write(JSON.stringify({ type: 'generate', transaction: `k${i}`, prompt: 'once upon a time', max_tokens: maxTokens, stream: false }) + '\n');
  };
  sock.setEncoding('utf8');
  sock.on('data', (data: string) => {
    buf += data;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const reply = JSON.parse(buf.slice(0, nl)) as { transaction: string; status?: string };
      buf = buf.slice(nl + 1);
      if (reply.status === undefined) continue;
      acknowledged.push(reply.transaction);
      send(); // keep the pipeline full
    }
  });
  sock.on('error', () => undefined); // the daemon dies under it
  for (let i = 0; i < 16; i++) send();

  // Let requests stream well past a few 500 ms flush windows, then kill mid-stream.
  const streamUntil = Date.now() + 15_000;
  while (acknowledged.length < 300 && Date.now() < streamUntil && child.exitCode === null) await sleep(10);
  await sleep(730);
  child.kill('SIGKILL');
  t.equal(await exited, 'SIGKILL', `the daemon was killed (stderr: ${stderr.slice(0, 200)})`);
  await new Promise((r) => (sock.destroyed ? r(null) : sock.once('close', r)));

  const db = new Database(dbPath);
  t.teardown(() => db.close());
  t.equal(db.pragma('integrity_check', { simple: true }), 'ok', 'PRAGMA integrity_check');
  const stored = new Set((db.prepare('SELECT txn FROM requests').all() as { txn: string }[]).map((r) => r.txn));
  const missing = acknowledged.filter((txn) => !stored.has(txn));
  t.ok(acknowledged.length >= 300, `${acknowledged.length} final replies received before the kill`);
  t.same(missing.slice(0, 10), [], `acknowledged requests without a row: ${missing.length} of ${acknowledged.length}`);
});
