import t from 'tap';
import pino from 'pino';
import { Dispatcher } from '../../src/daemon/dispatcher.js';
import type { Reply } from '../../src/daemon/protocol/envelope.js';
import { Scheduler } from '../../src/daemon/scheduler/scheduler.js';
import { summarize } from '../../src/daemon/store/stats.js';
import type { RequestRow } from '../../src/daemon/store/store.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { FakeEngine } from './helpers/fake-engine.js';
import { DEFAULT_RECENT_REQUESTS, telegrafFriendly, telemetrySnapshot, type TelemetrySources } from '../../src/daemon/telemetry/telemetry.js';
import { TelemetryWindow, WINDOW_SAMPLE } from '../../src/daemon/telemetry/window.js';

t.test('telegrafFriendly drops null, undefined and non-finite values and turns arrays into objects', async (t) => {
  const v = { a: 1, b: null, c: undefined, d: NaN, e: Infinity, f: 'x', g: false, h: [3, null, { i: null, j: 2 }], k: { l: null }, m: 0 };
  t.same(telegrafFriendly(v), { a: 1, f: 'x', g: false, h: { '0': 3, '2': { j: 2 } }, k: {}, m: 0 });
  t.equal(telegrafFriendly(null), undefined);
  t.equal(telegrafFriendly(5), 5);
});

t.test('a snapshot before any request and without load readings has no nulls and keeps its keys', async (t) => {
  const src: TelemetrySources = {
    recent: () => [],
    takeWindow: () => summarize([]),
    queueDepth: () => 0,
    busy: () => false,
    treeBudget: () => 8,
    tree: () => ({ policy: 'auto', rows: 8, board: null }),
    load: () => ({ ts: 1, cpu_load_pct: 12.5, cpu_temp_c: null, gpu_load_pct: null, mem_used_mb: 900, rss_mb: 80, throttled: null }),
    uptimeS: () => 3.4,
    components: () => ({ engine: { status: 'ok', restarts: 0 } }),
  };
  const s = telemetrySnapshot(src, 30_000, 1_700_000_000_000);
  t.same(s, {
    ts: 1_700_000_000_000,
    state: 'online',
    components: { engine: { status: 'ok', restarts: 0 } },
    uptime_s: 3,
    window_s: 30,
    requests: 0,
    ok: 0,
    errors: {},
    tree_budget: 8,
    tree: { policy: 'auto', rows: 8 },
    queue_depth: 0,
    busy: false,
    load: { ts: 1, cpu_load_pct: 12.5, mem_used_mb: 900, rss_mb: 80 },
    recent_requests: {},
  });
});

/** A finished request as the dispatcher keeps it; `i` makes each one distinguishable. */
function row(i: number, over: Partial<RequestRow> = {}): RequestRow {
  return {
    ts: 1_700_000_000_000 - 100_000 + i * 1000,
    transport: i % 2 ? 'socket' : 'mqtt',
    kind: 'generate',
    txn: `secret-txn-${i}`,
    model: 'tiny',
    prompt_tokens: 7,
    output_tokens: 10 + i,
    queue_ms: 1,
    ttft_ms: 5 + i,
    tpot_ms: 0.5,
    engine_ms: 20,
    total_ms: 30 + i,
    tokens_per_s: 100 + i,
    mean_accepted_tokens: 2.5,
    tree_budget: 8,
    rows_per_step: 8,
    tree_policy: 'throughput',
    finish_reason: 'length',
    outcome: 'ok',
    error_code: null,
    ...over,
  };
}

/** Telemetry sources listing `rows` as the last finished requests, with an empty window. */
function sources(rows: RequestRow[], recentRequests?: number): TelemetrySources {
  return {
    recent: () => rows,
    takeWindow: () => summarize([]),
    queueDepth: () => 0,
    busy: () => false,
    treeBudget: () => 8,
    tree: () => null,
    load: () => null,
    uptimeS: () => 1,
    components: () => ({ engine: { status: 'ok' } }),
    ...(recentRequests === undefined ? {} : { recentRequests }),
  };
}

t.test('recent_requests: the last N finished requests, newest at "0", allow-listed fields only, no nulls', async (t) => {
  const rows = Array.from({ length: 25 }, (_, i) => row(i, i === 24 ? { outcome: 'error', error_code: 'deadline_exceeded', output_tokens: null, ttft_ms: null, tokens_per_s: null } : {}));
  const s = telemetrySnapshot(sources(rows), 30_000, 1_700_000_000_000);
  const recent = s.recent_requests as Record<string, Record<string, unknown>>;
  t.equal(DEFAULT_RECENT_REQUESTS, 10);
  t.same(Object.keys(recent), ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'], 'the default N = 10, keyed by index (an object, not an array)');
  t.notOk(Array.isArray(recent), 'Telegraf-friendly: no array');
  t.same(recent['0'], { ts: rows[24].ts, transport: 'mqtt', kind: 'generate', outcome: 'error', error_code: 'deadline_exceeded', total_ms: 54, tree_budget: 8, tree_policy: 'throughput' }, 'newest first; its null readings left out');
  t.same(recent['1'], { ts: rows[23].ts, transport: 'socket', kind: 'generate', outcome: 'ok', output_tokens: 33, ttft_ms: 28, tokens_per_s: 123, total_ms: 53, tree_budget: 8, tree_policy: 'throughput' }, 'every listed field of an ok request');
  t.equal(recent['9'].ts, rows[15].ts, 'the tenth newest is the last');
  t.equal(s.requests, 0, 'the window counts only what finished since the last message, not the listed requests');
  const wire = JSON.stringify(s);
  t.notMatch(wire, /secret-txn/, 'no transaction id of any client');
  t.notMatch(wire, /"txn"|"model"|prompt_tokens|finish_reason|queue_ms|engine_ms/, 'no field outside the allow-list');
});

t.test('recent_requests: N configurable, 0 leaves the key out, fewer requests than N lists them all', async (t) => {
  const rows = Array.from({ length: 5 }, (_, i) => row(i));
  t.same(Object.keys(telemetrySnapshot(sources(rows, 3), 30_000).recent_requests as object), ['0', '1', '2'], 'N = 3');
  t.equal((telemetrySnapshot(sources(rows, 3), 30_000).recent_requests as Record<string, { ts: number }>)['0'].ts, rows[4].ts);
  t.notOk('recent_requests' in telemetrySnapshot(sources(rows, 0), 30_000), 'N = 0: no key at all');
  t.equal(Object.keys(telemetrySnapshot(sources(rows, 50), 30_000).recent_requests as object).length, 5, 'all 5 when N = 50');
  t.same(telemetrySnapshot(sources([]), 30_000).recent_requests, {}, 'none yet: an empty object');
});

t.test('recent_requests never carries prompt text, even if a row held some', async (t) => {
  // RequestRow has no text today; the allow-list keeps it so if a field is ever added to the row.
  const leaky = { ...row(1), prompt: 'my secret prompt', text: 'the answer' } as RequestRow;
  const wire = JSON.stringify(telemetrySnapshot(sources([leaky]), 30_000));
  t.notMatch(wire, /secret prompt|the answer/);
});

/** A dispatcher on a FakeEngine, without a store, and the telemetry sources as the controller wires them. */
function daemon(chunkDelayMs = 0) {
  const d = new Dispatcher(new Scheduler(new FakeEngine({ chunkDelayMs }), 64), null, () => 'fake', () => ({}), pino({ level: 'silent' }), {
    maxPayloadBytes: 4096, maxTokens: 64, defaultMaxTokens: 4, defaultDeadlineMs: 0,
  });
  const finals: Reply[] = [];
  const send = (payload: string) =>
    d.handle({ transport: 'mqtt', kind: 'generate', scope: 'mqtt', payload, route: () => ({ channel: { send: (r) => ('status' in r ? finals.push(r) : 0) }, routeKey: 'r' }) });
  const src: TelemetrySources = { ...sources([]), recent: () => d.recent, takeWindow: () => d.window.take() };
  const settled = async (n: number) => {
    for (let i = 0; i < 500 && finals.length < n; i++) await sleep(5);
  };
  return { d, send, src, finals, settled };
}

t.test('window counts are exact past 1 000 requests in one window, and each request is counted once', async (t) => {
  // Before: the window was counted from the last 1 000 rows kept for percentiles, so 1 500 bad
  // requests in one window showed as 1 000 (while /metrics and SQLite had 1 500).
  const { d, send, src, settled } = daemon();
  for (let i = 0; i < 1500; i++) send('nope');
  for (let i = 0; i < 3; i++) send(JSON.stringify({ transaction: `ok${i}`, prompt: 'once upon', max_tokens: 3 }));
  await settled(1503);
  const first = telemetrySnapshot(src, 30_000);
  t.match(first, { requests: 1503, ok: 3, errors: { bad_json: 1500 } }, 'every rejection and every ok request of the window');
  t.ok(typeof first.ttft_ms_p50 === 'number', 'percentiles from the ok requests');
  const next = telemetrySnapshot(src, 30_000);
  t.match(next, { requests: 0, ok: 0, errors: {} }, 'the next window counts none of them again');
  t.equal(Object.keys(next.recent_requests as object).length, 10, 'the last finished requests are still listed');
  t.equal(d.recent.length, 100, 'of which the dispatcher keeps only as many as telemetry.recent_requests may ask for');
});

t.test('a request longer than the window is counted in the window in which it finished', async (t) => {
  // Before: the window was "received in the last windowMs", but a row is kept only once the
  // request finishes, so a request running longer than the window was never counted in any.
  const windowMs = 20;
  const { send, src, settled } = daemon(10);
  send(JSON.stringify({ transaction: 'long', prompt: 'once upon', max_tokens: 30 })); // ~15 steps of 10 ms
  const whileRunning = telemetrySnapshot(src, windowMs);
  await settled(1);
  const afterwards = telemetrySnapshot(src, windowMs);
  const later = telemetrySnapshot(src, windowMs);
  t.equal(whileRunning.requests, 0, 'not counted while it runs');
  t.match(afterwards, { requests: 1, ok: 1 }, 'counted in the window in which it finished');
  t.equal(later.requests, 0, 'and in no other');
  t.equal((later.recent_requests as Record<string, { total_ms: number }>)['0'].total_ms > windowMs, true, 'it did run longer than the window');
});

/** Deterministic [0, 1) numbers (mulberry32) for the window's sampling. */
function seeded(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

t.test('the window keeps exact counts and a bounded sample: exact percentiles below it, close ones above', async (t) => {
  const w = new TelemetryWindow(WINDOW_SAMPLE, seeded(7));
  const few = Array.from({ length: 40 }, (_, i) => row(i, { total_ms: i, mean_accepted_tokens: i % 4 }));
  for (const r of few) w.record(r);
  w.record(row(99, { outcome: 'error', error_code: 'cancelled', mean_accepted_tokens: null }));
  const exact = summarize(few);
  t.same(w.take(), { ...exact, requests: 41, errors: { cancelled: 1 } }, 'below the sample size: the same summary as all rows');

  for (let i = 0; i < 20_000; i++) w.record(row(i, { total_ms: i, mean_accepted_tokens: i % 2 ? 3 : 2 }));
  const s = w.take();
  t.match(s, { requests: 20_000, ok: 20_000, errors: {}, mean_accepted_tokens: 2.5 }, 'counts and the mean stay exact');
  t.equal(s.total_ms.n, WINDOW_SAMPLE, 'percentiles from at most WINDOW_SAMPLE rows');
  t.ok(Math.abs(s.total_ms.p50! - 10_000) < 20_000 * 0.03, `p50 ${s.total_ms.p50} close to 10 000: the sample spans the whole window, not its end`);
  t.ok(Math.abs(s.total_ms.p95! - 19_000) < 20_000 * 0.02, `p95 ${s.total_ms.p95} close to 19 000`);
  t.match(w.take(), { requests: 0, ok: 0, errors: {}, mean_accepted_tokens: null, total_ms: { n: 0 } }, 'the next window starts empty');
});
