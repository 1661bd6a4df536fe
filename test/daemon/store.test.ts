import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { MIGRATIONS } from '../../src/daemon/store/migrations.js';
import { dist, parseSince, percentile, summarize } from '../../src/daemon/store/stats.js';
import { Store, type RequestRow } from '../../src/daemon/store/store.js';

const dir = mkdtempSync(join(tmpdir(), 'bitad-store-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function row(over: Partial<RequestRow> = {}): RequestRow {
  return {
    ts: Date.now(), transport: 'socket', kind: 'generate', txn: 't', model: 'm', prompt_tokens: 3, output_tokens: 10,
    queue_ms: 1, ttft_ms: 5, tpot_ms: 2, engine_ms: 25, total_ms: 27, tokens_per_s: 400, mean_accepted_tokens: 2.5,
    tree_budget: 16, rows_per_step: 12, finish_reason: 'length', outcome: 'ok', error_code: null, ...over,
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

t.test('a database from a newer bitad is refused', async (t) => {
  const p = join(dir, 'future.db');
  const db = new Database(p);
  db.pragma(`user_version = ${MIGRATIONS.length + 1}`);
  db.close();
  t.throws(() => new Store(p), /newer than this bitad/);
});

t.test('rows are buffered and written in one batch after flush_ms', async (t) => {
  const s = new Store(join(dir, 'b.db'), { flushMs: 50 });
  t.teardown(() => s.close());
  for (let i = 0; i < 5; i++) s.recordRequest(row({ txn: `r${i}` }));
  const reader = new Database(join(dir, 'b.db'), { readonly: true });
  t.equal((reader.prepare('SELECT count(*) n FROM requests').get() as { n: number }).n, 0, 'nothing written on the hot path');
  await sleep(120);
  t.equal((reader.prepare('SELECT count(*) n FROM requests').get() as { n: number }).n, 5, 'written after the flush delay');
  reader.close();
  t.match(s.requestsSince(0)[4], { txn: 'r4', ttft_ms: 5, outcome: 'ok', tree_budget: 16 });
});

t.test('retention drops rows by age, then the oldest beyond max_rows', async (t) => {
  const s = new Store(join(dir, 'c.db'), { retentionDays: 1, maxRows: 100 });
  t.teardown(() => s.close());
  const now = Date.now();
  s.recordRequest(row({ ts: now - 2 * 86_400_000, txn: 'old' }));
  for (let i = 0; i < 150; i++) s.recordRequest(row({ ts: now - 1000 + i, txn: `n${i}` }));
  s.recordLoad({ ts: now - 3 * 86_400_000, cpu_load_pct: 1, cpu_temp_c: null, gpu_load_pct: null, mem_used_mb: 1, rss_mb: 1, queue_depth: 0, tree_budget: 16, throttled: null });
  s.flush();
  const pruned = s.prune(now);
  t.same(pruned, { requests: 51, load: 1 });
  const rows = s.requestsSince(0);
  t.equal(rows.length, 100);
  t.equal(rows[0].txn, 'n50', 'the newest 100 remain');
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
