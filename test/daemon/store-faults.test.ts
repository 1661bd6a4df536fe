/**
 * A full disk degrades the store and nothing else: the database lives on a 1 MiB tmpfs that the
 * test fills with a file. Needs root (mount); CI runs as root.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import type { ComponentHealth } from '../../src/daemon/health.js';
import type { FinalReply } from '../../src/daemon/protocol/envelope.js';
import { startDaemon, type TestDaemon } from './helpers/daemon.js';
import { socketHarness, type Harness } from './helpers/harness.js';

const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([p, sleep(ms).then(() => Promise.reject(new Error(`timeout: ${what}`)))]);

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) return false;
    await sleep(20);
  }
  return true;
}

/** Mounts a 1 MiB tmpfs, or says why it cannot (the test is then skipped with that reason). */
function mountSmallDisk(): { mnt: string; unmount(): void } | string {
  if (process.getuid?.() !== 0) return 'mounting a tmpfs needs root (CI runs as root)';
  const base = mkdtempSync(join(tmpdir(), 'bitad-full-'));
  const mnt = join(base, 'mnt');
  mkdirSync(mnt);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt], { stdio: 'pipe' });
  } catch (e) {
    rmSync(base, { recursive: true, force: true });
    return `mount -t tmpfs failed: ${String((e as { stderr?: Buffer }).stderr ?? e).trim()}`;
  }
  return {
    mnt,
    unmount: () => {
      execFileSync('umount', ['-l', mnt]);
      rmSync(base, { recursive: true, force: true });
    },
  };
}

/** Writes `path` until the file system refuses another byte. */
function fill(path: string): void {
  const fd = openSync(path, 'w');
  try {
    for (const size of [65_536, 4096, 512, 1]) {
      const chunk = Buffer.alloc(size, 1);
      try {
        for (;;) writeSync(fd, chunk);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
      }
    }
  } finally {
    closeSync(fd);
  }
}

const disk = mountSmallDisk();
const skip = typeof disk === 'string' ? disk : false;
if (typeof disk !== 'string') t.teardown(() => disk.unmount());

async function generate(h: Harness, n: number, tag: string): Promise<FinalReply[]> {
  const out: FinalReply[] = [];
  for (let i = 0; i < n; i++) out.push(await within(h.send('generate', { transaction: `${tag}${i}`, prompt: 'once upon a time', max_tokens: 4 }).final, 2000, `${tag}${i}`));
  return out;
}

async function storeHealth(h: Harness): Promise<{ state: string; store: ComponentHealth }> {
  const f = await within(h.send('health', {}).final, 2000, 'health');
  const data = (f as { data: { state: string; components: { store: ComponentHealth } } }).data;
  return { state: data.state, store: data.components.store };
}

t.test('a full disk degrades the store, generation continues, and buffered rows land when space returns', { skip }, async (t) => {
  const { mnt } = disk as { mnt: string };
  const dbPath = join(mnt, 'bitad.db');
  const d: TestDaemon = await startDaemon({ enabled: false }, (c) => ((c.store as Record<string, unknown>).path = dbPath));
  const h = await socketHarness(d.cfg.socket.path);
  t.teardown(async () => {
    await h.close();
    await d.stop();
  });
  t.match(await generate(h, 1, 'before'), [{ status: 'ok' }]);

  const filler = join(mnt, 'filler');
  fill(filler);
  const replies = await generate(h, 20, 'full');
  t.ok(replies.every((r) => r.status === 'ok'), 'all 20 requests answered ok on a full disk');
  const degraded = await storeHealth(h);
  t.equal(degraded.state, 'degraded', 'the daemon says degraded');
  t.match(degraded.store, { status: 'degraded', reason: /^disk full \(SQLITE_FULL\): 20 rows waiting, 0 dropped$/, buffered: 20, dropped: 0 });

  rmSync(filler);
  t.ok(await waitFor(() => d.controller.store!.health().status === 'ok', 10_000), 'the store recovers once space returns');
  const healed = await storeHealth(h);
  t.equal(healed.state, 'online');
  t.match(healed.store, { status: 'ok', buffered: 0, dropped: 0 });
  const reader = new Database(dbPath, { readonly: true });
  const txns = (reader.prepare('SELECT txn FROM requests ORDER BY id').all() as { txn: string }[]).map((r) => r.txn);
  reader.close();
  t.same(txns, ['before0', ...Array.from({ length: 20 }, (_, i) => `full${i}`)], 'every buffered row landed, in order');
});

t.test('a daemon started on a full disk serves, stores its load samples later, and never crashes', { skip }, async (t) => {
  const { mnt } = disk as { mnt: string };
  const dbPath = join(mnt, 'restart.db');
  const filler = join(mnt, 'filler');
  let d: TestDaemon = await startDaemon({ enabled: false }, (c) => ((c.store as Record<string, unknown>).path = dbPath));
  await d.stop();
  fill(filler);
  // The reported crash loop: the first load-sample row after ready threw SQLITE_FULL from a timer.
  d = await startDaemon({ enabled: false }, (c) => {
    (c.store as Record<string, unknown>).path = dbPath;
    (c.store as Record<string, unknown>).load_sample_s = 1;
    c.telemetry = { enabled: true, load_poll_s: 1 };
  });
  const h = await socketHarness(d.cfg.socket.path);
  t.teardown(async () => {
    await h.close();
    await d.stop();
  });
  t.ok(await waitFor(() => (d.controller.store!.health().buffered as number) >= 1, 5000), 'a load sample was taken and is waiting');
  t.match(await generate(h, 3, 'restarted'), [{ status: 'ok' }, { status: 'ok' }, { status: 'ok' }], 'requests are answered');
  t.equal(d.controller.state, 'online', 'still running');
  t.match((await storeHealth(h)).store, { status: 'degraded', reason: /\((SQLITE_FULL|SQLITE_IOERR\w*)\)/ });

  rmSync(filler);
  t.ok(await waitFor(() => d.controller.store!.health().status === 'ok', 10_000), 'recovers once space returns');
  const rows = d.rows();
  t.same(rows.filter((r) => r.txn?.startsWith('restarted')).length, 3, 'the buffered request rows landed');
  t.ok(d.controller.store!.loadSince(0).length >= 1, 'the buffered load sample landed');
});
