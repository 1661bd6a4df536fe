import t from 'tap';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import type { OkReply } from '../../src/daemon/protocol/envelope.js';
import { measurements } from '../../src/daemon/outcome.js';
import type { GenerateStats } from '../../src/engine/types.js';
import type { RequestRow } from '../../src/daemon/store/store.js';
import { startDaemon, type TestDaemon } from './helpers/daemon.js';
import { socketHarness, type Harness } from './helpers/harness.js';

const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([p, sleep(ms).then(() => Promise.reject(new Error(`timeout: ${what}`)))]);

let d: TestDaemon;
let h: Harness;
let reader: Database.Database;
t.before(async () => {
  // flush_ms 500: the store may not lean on a flush timer to have the row in place.
  d = await startDaemon({ enabled: false }, (c) => ((c.store as Record<string, unknown>).flush_ms = 500));
  h = await socketHarness(d.cfg.socket.path);
  reader = new Database(d.cfg.store.path, { readonly: true });
});
t.teardown(async () => {
  reader?.close();
  await h?.close();
  await d?.stop();
});

/** The row as another process sees it right now (no flush on our side). */
const committedRow = (txn: string | null) =>
  reader.prepare('SELECT * FROM requests WHERE txn = ?').get(txn) as RequestRow | undefined;

t.test('a request row is committed before its final reply reaches the client', async (t) => {
  for (const body of [{ prompt: 'Once upon a time', max_tokens: 6 }, { prompt: 'x', max_tokens: 100_000 }]) {
    const p = h.send('generate', body);
    const f = await within(p.final, 5000, 'final reply');
    t.ok(committedRow(p.transaction), `${f.status} reply: its row was already committed`);
  }
});

t.test('the final reply stats and the stored row agree field by field (same rounding, same nulls)', async (t) => {
  for (const maxTokens of [6, 1]) {
    const p = h.send('generate', { prompt: 'Once upon a time', max_tokens: maxTokens, stream: false });
    const f = (await within(p.final, 5000, 'final reply')) as OkReply;
    const stats = (f.data as { stats: Record<string, number | null> }).stats;
    t.same(Object.keys(stats), [
      'prompt_tokens', 'output_tokens', 'queue_ms', 'ttft_ms', 'tpot_ms', 'engine_ms', 'total_ms', 'tokens_per_s',
      'mean_accepted_tokens', 'tree_budget', 'rows_per_step', 'tree_policy',
    ], 'the documented data.stats keys');
    const row = d.rows().find((r) => r.txn === p.transaction) as unknown as Record<string, unknown>;
    t.same(Object.fromEntries(Object.keys(stats).map((k) => [k, row[k]])), stats, `max_tokens ${maxTokens}: row = wire`);
    for (const k of ['queue_ms', 'engine_ms', 'total_ms'] as const) {
      t.equal(Math.round((stats[k] as number) * 1000) / 1000, stats[k], `${k} is rounded to µs`);
    }
    if (maxTokens === 1) t.equal(stats.tpot_ms, null, 'one output token: no time per output token after the first');
    else t.type(stats.tpot_ms, 'number');
  }
});

t.test('a reply a stop string emptied has no first-token time and 0 tokens/s; the mean keeps what the steps committed', async (t) => {
  // The engine's stats for `stop: [", th"]` on "Once upon a time": one step committed 4 tokens, all cut.
  const stats = {
    promptTokens: 5, outputTokens: 0, prefillMs: 2, ttftMs: 2.1, totalMs: 3, tpotMs: 0, tokensPerS: 0, steps: 1,
    meanAcceptedTokens: 4, acceptedHistogram: [0, 0, 0, 0, 1], meanRowsPerStep: 12,
    acceptedBySource: { mask: 3, context: 0, ngram: 0 }, runMs: 2.5, hostMs: 0.5, treePolicy: 'fixed', finishReason: 'stop',
  } satisfies GenerateStats;
  t.match(measurements({ queueMs: 0.1, engineMs: 3, totalMs: 3.2, treeBudget: 12, stats }), {
    output_tokens: 0, ttft_ms: null, tpot_ms: null, tokens_per_s: 0, mean_accepted_tokens: 4, finish_reason: 'stop',
  });
});
