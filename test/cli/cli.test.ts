/**
 * The `bitad` command's edges: a reader that goes away, a daemon that never answers or hangs up,
 * bad `--since` values. Each runs the real CLI (src/cli/main.ts through tsx) against a stand-in
 * socket server (test/client/helpers/fake-socket.ts) or a fresh request log.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../../src/daemon/store/store.js';
import { fakeSocketServer, reply, type FakeSocketServer } from '../client/helpers/fake-socket.js';

const MAIN = join(import.meta.dirname, '../../src/cli/main.ts');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs `bitad args…`; `onStdout` sees each piece of output and may destroy the pipe. */
function bitad(args: string[], onStdout: (chunk: string, out: NodeJS.ReadableStream & { destroy(): void }) => void = () => undefined, killAfterMs = 30_000): Promise<Run> {
  const t0 = Date.now();
  const env = { ...process.env };
  delete env.BITAD_CONFIG;
  const p = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], { env });
  let stdout = '';
  let stderr = '';
  p.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    onStdout(d, p.stdout);
  });
  p.stdout.on('error', () => undefined);
  p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const killer = setTimeout(() => p.kill('SIGKILL'), killAfterMs);
  return new Promise((resolve) => {
    p.on('close', (code) => {
      clearTimeout(killer);
      resolve({ code, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

let fake: FakeSocketServer;
t.beforeEach(async () => {
  fake = await fakeSocketServer();
});
t.afterEach(() => fake.dispose());

t.test('ask | head: the reader going away ends ask quietly, exit 0', async (t) => {
  // One chunk; once the reader is gone, 200 more (writes that meet the closed pipe) and the answer.
  let gone!: () => void;
  const readerGone = new Promise<void>((r) => (gone = r));
  fake.onLine = (l, conn) => {
    if (l.type !== 'generate') return;
    reply(conn, { transaction: l.transaction, seq: 0, text: 'x'.repeat(100), tokens: [1] });
    void readerGone.then(async () => {
      await new Promise((r) => setTimeout(r, 100));
      for (let seq = 1; seq <= 200; seq++) reply(conn, { transaction: l.transaction, seq, text: 'y'.repeat(1000), tokens: [1] });
      reply(conn, { transaction: l.transaction, status: 'ok', data: { text: '', tokens: [], finish_reason: 'length', stats: {} } });
    });
  };
  const r = await bitad(['ask', '--socket', fake.path, 'Once'], (_, out) => {
    out.destroy();
    gone();
  });
  t.equal(r.code, 0, `exit code (stderr: ${r.stderr.slice(0, 300)})`);
  t.notMatch(r.stderr, /EPIPE|Error/, 'no crash report');
});

t.test('status: a daemon that accepts and never answers → timeout, clear message, exit 1', async (t) => {
  const r = await bitad(['status', '--socket', fake.path]);
  t.equal(r.code, 1);
  t.ok(r.ms < 15_000, `returned after ${r.ms} ms`);
  t.match(r.stderr, /no reply from bitad .*5000 ms/);
});

t.test('status: a dropped connection is reported as disconnected, not internal', async (t) => {
  fake.onLine = (_, conn) => conn.destroy();
  const r = await bitad(['status', '--socket', fake.path]);
  t.equal(r.code, 1);
  t.match(r.stderr, /^error disconnected: /);
  t.notMatch(r.stderr, /internal/);
});

t.test('stats --since: a bad value is a usage error (exit 2) with a clear message', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bitad-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const db = join(dir, 'bitad.db');
  new Store(db).close();
  const ok = await bitad(['stats', '--db', db, '--since', '1h']);
  t.equal(ok.code, 0, 'a good value works');
  for (const since of ['bogus', '999999999d', '2020-13-45']) {
    const r = await bitad(['stats', '--db', db, '--since', since]);
    t.equal(r.code, 2, `--since ${since}: exit 2`);
    t.match(r.stderr, /--since/, 'the message names the option');
    t.notMatch(r.stderr, /Invalid time value/);
  }
});
