/**
 * Prometheus /metrics: a real Controller (FakeEngine) scraped over HTTP before and after requests;
 * every counter and histogram must move by exactly what the replies and the engine reported.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { SocketClient } from '../../src/cli/socket-client.js';
import { buildConfig } from '../../src/daemon/config/load.js';
import { Controller } from '../../src/daemon/controller.js';
import { acceptedPerPosition, DaemonMetrics, LATENCY_BUCKETS, TPOT_BUCKETS } from '../../src/daemon/metrics/metrics.js';
import type { FinalReply, OkReply } from '../../src/daemon/protocol/envelope.js';
import type { RequestRow } from '../../src/daemon/store/store.js';
import { VERSION } from '../../src/daemon/version.js';
import type { GenerateStats } from '../../src/engine/types.js';
import { FakeEngine } from './helpers/fake-engine.js';

const dir = mkdtempSync(join(tmpdir(), 'bitad-metrics-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const silent = pino({ level: 'silent' });

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The Prometheus text format, enough of it for prom-client's output (no escapes in our labels). */
function parse(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: m[3] === 'NaN' ? Number.NaN : Number(m[3]) });
  }
  return out;
}

class Scrape {
  constructor(readonly samples: Sample[]) {}
  /** The sample with exactly these labels; 0 when the series does not exist yet (a counter not yet incremented). */
  get(name: string, labels: Record<string, string> = {}): number {
    const want = JSON.stringify(Object.entries(labels).sort());
    const s = this.samples.find((x) => x.name === name && JSON.stringify(Object.entries(x.labels).sort()) === want);
    return s?.value ?? 0;
  }
  has(name: string): boolean {
    return this.samples.some((x) => x.name === name);
  }
}

async function scrape(port: number): Promise<Scrape> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  if (res.status !== 200) throw new Error(`scrape: HTTP ${res.status}`);
  return new Scrape(parse(await res.text()));
}

/** A port nobody listens on (bound then released). */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect(port, '127.0.0.1');
    c.once('connect', () => {
      c.destroy();
      resolve(false);
    });
    c.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}

/** A FakeEngine that keeps the stats it reported, so the test can check the spec counters against them. */
function recordingEngine(treeBudget: number): { engine: FakeEngine; reported: GenerateStats[] } {
  const engine = new FakeEngine({ chunkDelayMs: 0, treeBudget });
  const reported: GenerateStats[] = [];
  const generate = engine.generate.bind(engine);
  engine.generate = async (req, opts) => {
    const r = await generate(req, opts);
    reported.push(r.stats);
    return r;
  };
  return { engine, reported };
}

async function startDaemon(name: string, metrics: Record<string, unknown>, treeBudget = 7) {
  const cfg = buildConfig(
    {
      node_id: `metrics-${name}`,
      data_dir: join(dir, name),
      mqtt: { enabled: false },
      telemetry: { enabled: false },
      store: { flush_ms: 10 },
      limits: { max_tokens: 64 },
      metrics,
      log: { level: 'silent' },
    },
    { env: {} },
  );
  const { engine, reported } = recordingEngine(treeBudget);
  const c = new Controller(cfg, { engineFactory: async () => engine, log: silent });
  await c.start();
  return { c, cfg, engine, reported };
}

t.test('/metrics moves by exactly what the replies and the engine reported', async (t) => {
  const { c, cfg, reported } = await startDaemon('main', { enabled: true, port: 0 });
  t.teardown(() => c.stop());
  const port = c.metricsServer!.port;
  t.ok(port > 0 && port !== 9464, `port 0 binds a free port (${port})`);
  const before = await scrape(port);
  t.equal(before.get('bitad_build_info', { version: VERSION, model: 'fake', node: 'metrics-main' }), 1, 'build info');
  t.equal(before.get('bitad_tree_budget_rows'), 7, 'tree budget gauge');
  t.equal(before.get('bitad_tree_policy_info', { policy: 'fixed', active: 'fixed' }), 1, 'tree policy info');
  t.ok(before.has('process_cpu_seconds_total') && before.has('nodejs_heap_size_used_bytes'), 'default process metrics');
  t.equal(before.get('bitad_e2e_request_latency_seconds_count'), 0, 'no request yet');

  const s = await SocketClient.connect(cfg.socket.path);
  t.teardown(() => s.close());
  const replies: OkReply[] = [];
  for (const [i, maxTokens] of [1, 2, 5, 8, 13, 6].entries()) {
    const r = (await s.request('generate', { prompt: 'once upon a time '.repeat(i + 1), max_tokens: maxTokens })) as FinalReply;
    t.equal(r.status, 'ok');
    replies.push(r as OkReply);
  }
  const rejected = await s.request('generate', { prompt: 'x', max_tokens: 500 });
  t.match(rejected, { status: 'error', error: { code: 'bad_request' } }, 'max_tokens over the limit is rejected');
  const after = await scrape(port);
  const d = (name: string, labels: Record<string, string> = {}) => after.get(name, labels) - before.get(name, labels);
  const stats = replies.map((r) => (r.data as { stats: Record<string, number | null> }).stats);
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

  t.equal(d('bitad_requests_total', { outcome: 'ok', code: 'none' }), 6, 'ok requests counted');
  t.equal(d('bitad_requests_total', { outcome: 'error', code: 'bad_request' }), 1, 'the rejection counted by its code');
  t.equal(d('bitad_prompt_tokens_total'), sum(stats.map((x) => x.prompt_tokens!)), 'prompt tokens = sum of the replies\'');
  t.equal(d('bitad_generation_tokens_total'), 1 + 2 + 5 + 8 + 13 + 6, 'generated tokens = what was asked for');

  checkHistogram(t, d, 'bitad_e2e_request_latency_seconds', LATENCY_BUCKETS, stats.map((x) => x.total_ms!), 'e2e: the 6 queued requests, not the rejection');
  checkHistogram(t, d, 'bitad_request_queue_time_seconds', LATENCY_BUCKETS, stats.map((x) => x.queue_ms!), 'queue time');
  checkHistogram(t, d, 'bitad_time_to_first_token_seconds', LATENCY_BUCKETS, stats.map((x) => x.ttft_ms!), 'ttft');
  const tpots = stats.filter((x) => x.output_tokens! >= 2).map((x) => x.tpot_ms!);
  t.equal(tpots.length, 5, 'the 1-token request has no TPOT');
  checkHistogram(t, d, 'bitad_time_per_output_token_seconds', TPOT_BUCKETS, tpots, 'tpot');

  t.equal(reported.length, 6, 'the engine ran the 6 accepted requests');
  const steps = sum(reported.map((x) => x.steps));
  t.equal(d('bitad_spec_decode_num_drafts_total'), steps, `drafts = tree steps the engine reported (${steps})`);
  t.equal(d('bitad_spec_decode_num_draft_tokens_total'), steps * (7 - 1), 'draft tokens = (rows - 1) per step');
  // The FakeEngine commits every token in a step (no prefill token), so accepted = output - steps.
  const accepted = sum(reported.map((x) => x.outputTokens - x.steps));
  t.equal(d('bitad_spec_decode_num_accepted_tokens_total'), accepted, `accepted = committed - bonus per step (${accepted})`);
  const perPos = [1, 2, 3].map((p) => d('bitad_spec_decode_num_accepted_tokens_per_pos', { position: String(p) }));
  // FakeEngine steps commit 1, 2, 3, 1, 2, 3... tokens: position 1 is accepted by steps that
  // committed 2 or 3, position 2 by those that committed 3.
  const committed = reported.map((x) => x.acceptedHistogram);
  t.same(perPos, [sum(committed.map((h) => (h[2] ?? 0) + (h[3] ?? 0))), sum(committed.map((h) => h[3] ?? 0)), 0], `accepted per position ${JSON.stringify(perPos)}`);
  t.equal(sum(perPos), accepted, 'per-position counts add up to the accepted total');
  t.equal(after.get('bitad_num_requests_running'), 0);
  t.equal(after.get('bitad_num_requests_waiting'), 0);
});

/** _count and _sum moved by the observations, every bucket by the observations at or under it. */
function checkHistogram(t: Test, d: (n: string, l?: Record<string, string>) => number, name: string, buckets: number[], ms: number[], what: string): void {
  const secs = ms.map((x) => x / 1000);
  t.equal(d(`${name}_count`), secs.length, `${what}: _count`);
  t.ok(Math.abs(d(`${name}_sum`) - secs.reduce((a, b) => a + b, 0)) < 1e-9, `${what}: _sum`);
  const got = buckets.map((le) => d(`${name}_bucket`, { le: String(le) }));
  const want = buckets.map((le) => secs.filter((x) => x <= le).length);
  t.same(got, want, `${what}: buckets`);
  t.equal(d(`${name}_bucket`, { le: '+Inf' }), secs.length, `${what}: +Inf bucket`);
}

t.test('one request by hand: 6 tokens in steps of 1, 2 and 3', async (t) => {
  const { c, cfg } = await startDaemon('hand', { enabled: true, port: 0 }, 5);
  t.teardown(() => c.stop());
  const before = await scrape(c.metricsServer!.port);
  const s = await SocketClient.connect(cfg.socket.path);
  t.teardown(() => s.close());
  t.match(await s.request('generate', { prompt: 'a b', max_tokens: 6 }), { status: 'ok' });
  const after = await scrape(c.metricsServer!.port);
  const d = (name: string, labels: Record<string, string> = {}) => after.get(name, labels) - before.get(name, labels);
  t.equal(d('bitad_spec_decode_num_drafts_total'), 3, '3 tree steps');
  t.equal(d('bitad_spec_decode_num_draft_tokens_total'), 12, '3 steps x (5 rows - root)');
  t.equal(d('bitad_spec_decode_num_accepted_tokens_total'), 0 + 1 + 2, 'steps committing 1, 2, 3 accepted 0, 1, 2');
  t.equal(d('bitad_spec_decode_num_accepted_tokens_per_pos', { position: '1' }), 2);
  t.equal(d('bitad_spec_decode_num_accepted_tokens_per_pos', { position: '2' }), 1);
  t.equal(d('bitad_generation_tokens_total'), 6);
  t.equal(d('bitad_prompt_tokens_total'), 2);
});

t.test('running and waiting gauges while requests queue up', async (t) => {
  const { c, cfg, engine } = await startDaemon('queue', { enabled: true, port: 0 });
  t.teardown(() => c.stop());
  engine.chunkDelayMs = 30;
  const s = await SocketClient.connect(cfg.socket.path);
  t.teardown(() => s.close());
  const pending = [1, 2, 3].map(() => s.request('generate', { prompt: 'a', max_tokens: 10 }));
  let m = await scrape(c.metricsServer!.port);
  for (let i = 0; i < 100 && m.get('bitad_num_requests_waiting') !== 2; i++) m = await scrape(c.metricsServer!.port);
  t.equal(m.get('bitad_num_requests_running'), 1, 'one generating');
  t.equal(m.get('bitad_num_requests_waiting'), 2, 'two waiting');
  engine.chunkDelayMs = 0;
  await Promise.all(pending);
  m = await scrape(c.metricsServer!.port);
  t.equal(m.get('bitad_num_requests_running'), 0);
  t.equal(m.get('bitad_num_requests_waiting'), 0);
});

t.test('board gauges follow the tree sizing\'s readings', async (t) => {
  const { c } = await startDaemon('board', { enabled: true, port: 0 });
  t.teardown(() => c.stop());
  type Board = { others_cpu_pct: number | null; cpu_temp_c: number | null; throttled: boolean | null };
  const board = () => c.treeStatus()?.board as Board | null | undefined;
  // The others' CPU share needs two /proc readings (a difference); until then it is unknown.
  t.ok(Number.isNaN((await scrape(c.metricsServer!.port)).get('bitad_cpu_others_ratio')) || board()?.others_cpu_pct != null, 'NaN before the first reading');
  for (let i = 0; i < 100 && board()?.others_cpu_pct == null; i++) await sleep(20);
  const b = board()!;
  const m = await scrape(c.metricsServer!.port);
  const others = m.get('bitad_cpu_others_ratio');
  t.ok(others >= 0 && others <= 1, `others' CPU share within 0..1 (${others})`);
  const temp = m.get('bitad_cpu_temperature_celsius');
  t.equal(Number.isNaN(temp), b.cpu_temp_c === null, `temperature NaN exactly when the board has no sensor (${temp})`);
  const throttled = m.get('bitad_throttled');
  t.same(throttled, b.throttled === null ? Number.NaN : Number(b.throttled), `throttled (${throttled})`);
});

t.test('the endpoint: 404 elsewhere, 405 for other methods, Prometheus content type; closed on stop', async (t) => {
  const { c } = await startDaemon('http', { enabled: true, port: 0 });
  const port = c.metricsServer!.port;
  const ok = await fetch(`http://127.0.0.1:${port}/metrics?x=1`);
  t.equal(ok.status, 200);
  t.match(ok.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  await ok.text();
  const other = await fetch(`http://127.0.0.1:${port}/`);
  t.equal(other.status, 404, '/ is 404');
  await other.text();
  const nested = await fetch(`http://127.0.0.1:${port}/metrics/x`);
  t.equal(nested.status, 404, '/metrics/x is 404');
  await nested.text();
  const post = await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST', body: 'x' });
  t.equal(post.status, 405);
  await post.text();
  await c.stop();
  t.ok(await refused(port), 'nothing listens after stop');
});

t.test('metrics off (the default): no listener, no registry', async (t) => {
  const port = await freePort();
  const { c, cfg } = await startDaemon('off', { port });
  t.teardown(() => c.stop());
  t.equal(cfg.metrics.enabled, false, 'off by default');
  t.equal(cfg.metrics.host, '127.0.0.1', 'loopback by default');
  t.equal(c.metrics, null);
  t.equal(c.metricsServer, null);
  t.ok(await refused(port), `nothing listens on the configured port ${port}`);
  t.equal(buildConfig({}, { env: {} }).metrics.port, 9464, 'default port 9464');
});

t.test('a port already taken fails the start and stops what started', async (t) => {
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => blocker.close(() => r())));
  const port = (blocker.address() as { port: number }).port;
  await t.rejects(startDaemon('taken', { enabled: true, port }), { code: 'EADDRINUSE', setting: 'metrics.port', message: /port \d+ on 127\.0\.0\.1 is in use/ });
});

t.test('DaemonMetrics: plain-mode requests and rejections leave the spec and latency metrics alone', async (t) => {
  const m = new DaemonMetrics(
    { running: () => 0, waiting: () => 0, tree: () => null, build: () => ({ version: 'v', model: 'm', node: 'n' }) },
    { defaultMetrics: false },
  );
  const row = {
    outcome: 'ok', error_code: null, prompt_tokens: 3, output_tokens: 4, queue_ms: 1, ttft_ms: 2, tpot_ms: 1, total_ms: 6,
  } as unknown as RequestRow;
  const plain = { steps: 3, meanRowsPerStep: 1, acceptedHistogram: [0, 3], treePolicy: 'plain' } as unknown as GenerateStats;
  m.observe(row, { stats: plain });
  m.observe({ ...row, outcome: 'error', error_code: 'busy', prompt_tokens: null, output_tokens: null, queue_ms: null, ttft_ms: null, tpot_ms: null } as RequestRow);
  const s = new Scrape(parse(await m.registry.metrics()));
  t.equal(s.get('bitad_spec_decode_num_drafts_total'), 0, 'plain steps are not drafts');
  t.equal(s.get('bitad_generation_tokens_total'), 4);
  t.equal(s.get('bitad_e2e_request_latency_seconds_count'), 1, 'the rejection is not a latency sample');
  t.equal(s.get('bitad_requests_total', { outcome: 'error', code: 'busy' }), 1);
  t.ok(Number.isNaN(s.get('bitad_tree_budget_rows')), 'no engine: NaN, not 0');
  t.equal(s.get('bitad_tree_policy_info', { policy: 'fixed', active: 'fixed' }), 0, 'no policy series without an engine');
  t.notOk(s.has('process_cpu_seconds_total'), 'default metrics can be left out');
});

t.test('acceptedPerPosition', async (t) => {
  t.same(acceptedPerPosition([]), []);
  t.same(acceptedPerPosition([0, 5]), [0]);
  t.same(acceptedPerPosition([0, 1, 1, 1]), [0, 2, 1]);
  t.same(acceptedPerPosition([0, 0, 0, 0, 2]), [0, 2, 2, 2]);
});
