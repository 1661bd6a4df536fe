import t from 'tap';
import { telegrafFriendly, telemetrySnapshot, type TelemetrySources } from '../../src/daemon/telemetry/telemetry.js';

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
  });
});
