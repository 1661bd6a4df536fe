/**
 * The deploy/ examples against what the daemon really exposes: every metric the Grafana dashboard
 * queries is registered by DaemonMetrics, and the Telegraf example's subscription and excluded
 * keys match the telemetry topic and the snapshot's flattened keys.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { PACKAGE_ROOT } from '../../src/daemon/config/load.js';
import { DaemonMetrics } from '../../src/daemon/metrics/metrics.js';
import { summarize } from '../../src/daemon/store/stats.js';
import { telemetrySnapshot } from '../../src/daemon/telemetry/telemetry.js';

const read = (p: string) => readFileSync(join(PACKAGE_ROOT, p), 'utf8');

interface Panel {
  id: number;
  title: string;
  datasource: { uid: string };
  gridPos: Record<string, number>;
  targets: { expr: string; refId: string }[];
}

t.test('the Grafana dashboard queries only metrics the daemon registers', async (t) => {
  const dash = JSON.parse(read('deploy/grafana/bitad-dashboard.json')) as { uid: string; panels: Panel[]; templating: { list: { name: string; query: unknown }[] } };
  const metrics = new DaemonMetrics(
    { running: () => 0, waiting: () => 0, tree: () => null, build: () => ({ version: 'v', model: 'm', node: 'n' }) },
    { defaultMetrics: false },
  );
  const registered = new Set<string>();
  for (const m of await metrics.registry.getMetricsAsJSON()) {
    registered.add(m.name);
    if (String(m.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) registered.add(m.name + s);
  }
  const used = new Set<string>();
  const ids = new Set<number>();
  for (const p of dash.panels) {
    t.notOk(ids.has(p.id), `panel id ${p.id} unique`);
    ids.add(p.id);
    t.equal(p.datasource.uid, '${datasource}', `${p.title}: uses the datasource variable`);
    t.ok(p.targets.length > 0, `${p.title}: has a query`);
    for (const target of p.targets) for (const name of target.expr.match(/\bbitad_[a-z0-9_]+/g) ?? []) used.add(name);
  }
  for (const v of dash.templating.list) for (const name of JSON.stringify(v.query).match(/\bbitad_[a-z0-9_]+/g) ?? []) used.add(name);
  t.same([...used].filter((n) => !registered.has(n)), [], 'every queried metric is registered');
  for (const n of ['bitad_time_to_first_token_seconds_bucket', 'bitad_time_per_output_token_seconds_bucket', 'bitad_e2e_request_latency_seconds_bucket', 'bitad_generation_tokens_total', 'bitad_requests_total', 'bitad_spec_decode_num_accepted_tokens_total', 'bitad_tree_budget_rows', 'bitad_cpu_temperature_celsius']) {
    t.ok(used.has(n), `dashboard shows ${n}`);
  }
});

function flatten(v: unknown, prefix = '', out = new Set<string>()): Set<string> {
  if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      const name = prefix ? `${prefix}_${k}` : k;
      out.add(name);
      flatten(x, name, out);
    }
  }
  return out;
}

t.test('the Telegraf example reads the telemetry topic, and its excluded keys exist in a snapshot', async (t) => {
  const conf = read('deploy/telegraf/bitad.conf');
  t.match(conf, /topics = \["bitad\/\+\/telemetry"\]/);
  t.match(conf, /tags = "_\/node\/_"/);
  t.match(conf, /timestamp_path = "ts"\s+timestamp_format = "unix_ms"/);
  const snapshot = telemetrySnapshot(
    {
      recent: () => [],
      takeWindow: () => summarize([]),
      queueDepth: () => 0,
      busy: () => false,
      treeBudget: () => 8,
      tree: () => ({ policy: 'auto', rows: 8, reason: 'idle board' }),
      load: () => ({ ts: 1, cpu_load_pct: 5, cpu_temp_c: 50, gpu_load_pct: null, mem_used_mb: 1, rss_mb: 1, throttled: null }),
      uptimeS: () => 1,
      components: () => ({ engine: { status: 'ok' } }),
    },
    30_000,
  );
  t.type(snapshot.ts, 'number', 'ts is epoch ms, as timestamp_format unix_ms reads it');
  const keys = flatten(snapshot);
  const excluded = JSON.parse(/excluded_keys = (\[[^\]]*\])/.exec(conf)![1]) as string[];
  t.same(excluded.filter((k) => !keys.has(k)), [], 'every excluded key is a flattened telemetry key');
});
