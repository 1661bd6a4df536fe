import t from 'tap';
import type { RequestRow } from '../../src/daemon/store/store.js';
import { DEFAULT_RECENT_REQUESTS, telegrafFriendly, telemetrySnapshot, type TelemetrySources } from '../../src/daemon/telemetry/telemetry.js';

t.test('telegrafFriendly drops null, undefined and non-finite values and turns arrays into objects', async (t) => {
  const v = { a: 1, b: null, c: undefined, d: NaN, e: Infinity, f: 'x', g: false, h: [3, null, { i: null, j: 2 }], k: { l: null }, m: 0 };
  t.same(telegrafFriendly(v), { a: 1, f: 'x', g: false, h: { '0': 3, '2': { j: 2 } }, k: {}, m: 0 });
  t.equal(telegrafFriendly(null), undefined);
  t.equal(telegrafFriendly(5), 5);
});

t.test('a snapshot before any request and without load readings has no nulls and keeps its keys', async (t) => {
  const src: TelemetrySources = {
    recent: () => [],
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

function sources(rows: RequestRow[], recentRequests?: number): TelemetrySources {
  return {
    recent: () => rows,
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
  t.equal(s.requests, 0, 'the window summary still counts only the window (all these are older than 30 s)');
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
