import t from 'tap';
import { mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { MIGRATIONS } from '../../src/daemon/store/migrations.js';
import { dist, parseSince, percentile, summarize } from '../../src/daemon/store/stats.js';
import { Store, type RequestRow } from '../../src/daemon/store/store.js';

const dir = mkdtempSync(join(tmpdir(), 'bitad-store-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** Polls `cond` every 10 ms for up to `ms`; true once it holds. */
async function waitFor(cond: () => boolean, ms = 3000): Promise<boolean> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) return false;
    await sleep(10);
  }
  return true;
}

function row(over: Partial<RequestRow> = {}): RequestRow {
  return {
    ts: Date.now(), transport: 'socket', kind: 'generate', txn: 't', model: 'm', prompt_tokens: 3, output_tokens: 10,
    queue_ms: 1, ttft_ms: 5, tpot_ms: 2, engine_ms: 25, total_ms: 27, tokens_per_s: 400, mean_accepted_tokens: 2.5,
    tree_budget: 16, rows_per_step: 12, tree_policy: 'throughput', finish_reason: 'length', outcome: 'ok', error_code: null, ...over,
  };
}

t.test('a new file is migrated to the latest version in WAL mode', async (t) => {
  const s = new Store(join(dir, 'a.db'));
  t.equal(s.db.pragma('user_version', { simple: true }), MIGRATIONS.length);
  t.equal(s.db.pragma('journal_mode', { simple: true }), 'wal');
  s.close();
  const again = new Store(join(dir, 'a.db'));
  t.equal(again.db.pragma('user_version', { simple: true }), MIGRATIONS.length, 're-opening runs nothing twice');
  again.close();
});

t.test('store.synchronous sets the WAL sync level: normal by default, full on request', async (t) => {
  const normal = new Store(join(dir, 'sync-normal.db'));
  const full = new Store(join(dir, 'sync-full.db'), { synchronous: 'full' });
  t.equal(normal.db.pragma('synchronous', { simple: true }), 1, 'NORMAL');
  t.equal(full.db.pragma('synchronous', { simple: true }), 2, 'FULL');
  normal.close();
  full.close();
});

t.test('a database from a newer bitad is refused', async (t) => {
  const p = join(dir, 'future.db');
  const db = new Database(p);
  db.pragma(`user_version = ${MIGRATIONS.length + 1}`);
  db.close();
  t.throws(() => new Store(p), /newer than this bitad/);
});

t.test('rows recorded in one event-loop turn are committed together before any of their callbacks runs', async (t) => {
  const p = join(dir, 'b.db');
  const s = new Store(p);
  t.teardown(() => s.close());
  const reader = new Database(p, { readonly: true });
  t.teardown(() => reader.close());
  const count = () => (reader.prepare('SELECT count(*) n FROM requests').get() as { n: number }).n;
  const seenByCallbacks: number[] = [];
  const done = Promise.all(
    [0, 1, 2].map((i) => new Promise<void>((resolve) => s.recordRequest(row({ txn: `r${i}` }), () => {
      seenByCallbacks.push(count());
      resolve();
    }))),
  );
  t.equal(count(), 0, 'nothing is written inside the turn that records');
  const settled = await Promise.race([done.then(() => true), sleep(1000).then(() => false)]);
  t.ok(settled, 'every callback ran');
  t.same(seenByCallbacks, [3, 3, 3], 'each callback saw all three rows committed');
  t.match(s.requestsSince(0)[2], { txn: 'r2', ttft_ms: 5, outcome: 'ok', tree_budget: 16 });
});

t.test('a locked database degrades the store, keeps the rows and writes them once the lock is gone', async (t) => {
  const p = join(dir, 'locked.db');
  const s = new Store(p, { flushMs: 20 });
  t.teardown(() => s.close());
  const other = new Database(p);
  other.exec('BEGIN IMMEDIATE');
  let answered = false;
  s.recordRequest(row({ txn: 'while-locked' }), () => (answered = true));
  t.ok(await waitFor(() => s.health().status === 'degraded'), 'the store says degraded');
  t.match(s.health(), { status: 'degraded', reason: 'locked (SQLITE_BUSY): 1 row waiting, 0 dropped', buffered: 1, dropped: 0 });
  t.ok(await waitFor(() => answered), 'the callback still runs while the row waits');
  other.exec('COMMIT');
  other.close();
  t.ok(await waitFor(() => s.health().status === 'ok'), 'back to ok once the lock is gone');
  t.same(s.requestsSince(0).map((r) => r.txn), ['while-locked'], 'the buffered row landed');
});

t.test('a database file deleted or replaced while the store runs is reopened: later rows land in the file at the path', async (t) => {
  const p = join(dir, 'deleted.db');
  const s = new Store(p);
  t.teardown(() => s.close());
  const rowsAtPath = () => {
    const reader = new Database(p, { readonly: true, fileMustExist: true });
    try {
      return (reader.prepare('SELECT txn FROM requests ORDER BY id').all() as { txn: string }[]).map((r) => r.txn);
    } finally {
      reader.close();
    }
  };
  s.recordRequest(row({ txn: 'before' }));
  s.flush();
  rmSync(p); // `rm var/bitad.db` to clear the log; its -wal and -shm stay behind
  s.recordRequest(row({ txn: 'after-rm' }));
  s.flush();
  t.same(rowsAtPath(), ['after-rm'], 'a new file at the path holds the row written after the delete');
  const other = join(dir, 'replacement.db');
  new Store(other).close();
  renameSync(other, p); // a file moved over it (a restored backup)
  s.recordRequest(row({ txn: 'after-mv' }));
  s.flush();
  t.same(rowsAtPath(), ['after-mv'], 'the file moved in holds the row written after the move');
  t.match(s.health(), { status: 'ok', buffered: 0, dropped: 0 });
});

t.test('the buffer keeps at most max_buffered_rows: the oldest rows are dropped and counted', async (t) => {
  const p = join(dir, 'bounded.db');
  const s = new Store(p, { maxBufferedRows: 3 });
  t.teardown(() => s.close());
  const other = new Database(p);
  other.exec('BEGIN IMMEDIATE');
  for (let i = 0; i < 5; i++) s.recordRequest(row({ txn: `r${i}` }));
  t.ok(await waitFor(() => s.health().status === 'degraded'), 'the store says degraded');
  t.match(s.health(), { reason: 'locked (SQLITE_BUSY): 3 rows waiting, 2 dropped', buffered: 3, dropped: 2 });
  other.exec('COMMIT');
  other.close();
  t.ok(await waitFor(() => s.health().status === 'ok'), 'back to ok once the lock is gone');
  t.same(s.requestsSince(0).map((r) => r.txn), ['r2', 'r3', 'r4'], 'the newest rows were kept');
  t.match(s.health(), { status: 'ok', buffered: 0, dropped: 2 }, 'drops stay counted after recovery');
});

t.test('a row SQLite refuses is dropped and counted; the rows beside it are written', async (t) => {
  const s = new Store(join(dir, 'refused.db'));
  t.teardown(() => s.close());
  s.recordRequest(row({ txn: 'before' }));
  s.recordRequest(row({ txn: 'bad', model: null as unknown as string }));
  s.recordRequest(row({ txn: 'after' }));
  s.flush();
  t.same(s.requestsSince(0).map((r) => r.txn), ['before', 'after']);
  t.match(s.health(), { status: 'ok', buffered: 0, dropped: 1 });
});

t.test('a store whose directory cannot be created starts degraded and opens once the path is usable', async (t) => {
  const blocker = join(dir, 'not-a-dir');
  writeFileSync(blocker, 'x');
  let s: Store | undefined;
  t.doesNotThrow(() => (s = new Store(join(blocker, 'x.db'))), 'the constructor does not throw');
  t.teardown(() => s?.close());
  s!.recordRequest(row({ txn: 'early' }));
  t.ok(await waitFor(() => s!.health().status === 'degraded' && s!.health().buffered === 1), 'degraded with the row waiting');
  t.equal(s!.health().reason, 'not a directory (EEXIST): 1 row waiting, 0 dropped', 'mkdir met a file where a directory belongs');
  rmSync(blocker);
  t.ok(await waitFor(() => s!.health().status === 'ok'), 'opened on a retry');
  t.same(s!.requestsSince(0).map((r) => r.txn), ['early']);
});

t.test('the data directory is created 0750 and the database files 0640 whatever the umask', async (t) => {
  for (const umask of [0o000, 0o077]) {
    const old = process.umask(umask);
    const base = join(dir, `perm-${umask.toString(8)}`);
    let s: Store;
    try {
      s = new Store(join(base, 'sub', 'bitad.db'));
    } finally {
      process.umask(old);
    }
    s.recordRequest(row());
    s.flush();
    const mode = (p: string) => (statSync(p).mode & 0o777).toString(8);
    t.same(
      [base, join(base, 'sub')].map(mode),
      ['750', '750'],
      `umask ${umask.toString(8)}: created directories`,
    );
    t.same(['', '-wal', '-shm'].map((x) => mode(join(base, 'sub', `bitad.db${x}`))), ['640', '640', '640'], `umask ${umask.toString(8)}: db, wal, shm`);
    s.close();
  }
});

t.test('retention drops rows by age, then the oldest beyond max_rows', async (t) => {
  const s = new Store(join(dir, 'c.db'), { retentionDays: 1, maxRows: 100 });
  t.teardown(() => s.close());
  const now = Date.now();
  // Rows already in the file (the store trims what it writes itself: next test).
  const insert = s.db.prepare(`INSERT INTO requests (ts, transport, txn, model, outcome) VALUES (?, 'socket', ?, 'm', 'ok')`);
  insert.run(now - 2 * 86_400_000, 'old');
  for (let i = 0; i < 150; i++) insert.run(now - 1000 + i, `n${i}`);
  s.db.prepare('INSERT INTO load_samples (ts, cpu_load_pct) VALUES (?, 1)').run(now - 3 * 86_400_000);
  const pruned = s.prune(now);
  t.same(pruned, { requests: 51, load: 1 });
  const rows = s.requestsSince(0);
  t.equal(rows.length, 100);
  t.equal(rows[0].txn, 'n50', 'the newest 100 remain');
});

t.test('the row bound holds between prunes: rows beyond max_rows are trimmed as they are written', async (t) => {
  const p = join(dir, 'bound.db');
  const s = new Store(p, { maxRows: 1000 });
  t.teardown(() => s.close());
  const count = () => (s.db.prepare('SELECT count(*) n FROM requests').get() as { n: number }).n;
  let most = 0;
  for (let i = 0; i < 3000; i++) {
    s.recordRequest(row({ txn: `r${i}` }));
    if (i % 7 === 6) s.flush(); // commits of 7 rows, as a burst over the socket would write them
    most = Math.max(most, count());
  }
  s.flush();
  t.ok(most <= 1009, `at most ${most} rows at any time (max_rows 1000, trimmed once 10 more are written)`);
  t.ok(count() >= 1000 && count() <= 1009, `${count()} rows after the burst`);
  t.equal(s.requestsSince(0).at(-1)?.txn, 'r2999', 'the newest rows are kept');
  const pruned = s.prune();
  t.ok(pruned.requests <= 10, 'the hourly prune finds little left to do');
});

t.test('percentiles use nearest rank; summaries count errors by code', async (t) => {
  t.equal(percentile([1, 2, 3, 4], 50), 2);
  t.equal(percentile([1, 2, 3, 4], 99), 4);
  t.equal(percentile([], 50), null);
  const values = Array.from({ length: 100 }, (_, i) => i + 1);
  t.same(dist(values), { p50: 50, p95: 95, p99: 99, n: 100 });
  const s = summarize([row({ ttft_ms: 10 }), row({ ttft_ms: 30 }), row({ outcome: 'error', error_code: 'busy', ttft_ms: null })]);
  t.match(s, { requests: 3, ok: 2, errors: { busy: 1 }, ttft_ms: { p50: 10, p99: 30, n: 2 } });
});

t.test('--since accepts durations and ISO dates', async (t) => {
  const now = 1_700_000_000_000;
  t.equal(parseSince('30m', now), now - 1_800_000);
  t.equal(parseSince('2d', now), now - 172_800_000);
  t.equal(parseSince('2026-01-01T00:00:00Z'), Date.UTC(2026, 0, 1));
  t.throws(() => parseSince('yesterday'), /--since/);
});
