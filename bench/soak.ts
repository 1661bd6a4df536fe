/**
 * Soak: a `bitad start` child process (bundled model by default, `--max-semi-space-size=1` as the
 * systemd unit's NODE_OPTIONS) under a steady open-loop request rate, alternating MQTT and the Unix
 * socket, for `--minutes`. Every `--sample-s` it reads the daemon's RSS from /proc/<pid>/status and
 * asks it for `health` (heap and live libuv resources from its `memory` field); per `--interval-s`
 * it prints a row with requests, failures and p50/p99 end-to-end latency per transport, RSS and
 * heap. Verdicts (reported, not asserted): RSS growth from the end of minute 5 to the end (target
 * ≤ 5 %), the slope after minute 5 (a leak keeps a slope, a plateau does not), max RSS (target
 * ≤ 150 MB with the bundled model).
 *
 *   npm run bench:soak -- [--minutes 30] [--rate 10] [--max-tokens 16] [--broker embedded|mosquitto]
 *                         [--model <dir>] [--dist] [--node-flags=--max-semi-space-size=1]
 *                         [--daemon-env="MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=65536"]
 *                         [--interval-s 60] [--sample-s 10] [--json]
 *
 * `--broker embedded` (the default config: aedes, MQTT 3.1.1, replies on <base>/response/<txn>);
 * `mosquitto` runs a loopback mosquitto and MQTT 5 with a Response Topic in the reply namespace.
 * `--dist` runs the compiled daemon (`npm run build`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import mqtt, { type MqttClient } from 'mqtt';
import { SocketClient } from '../src/cli/socket-client.js';
import { PACKAGE_ROOT } from '../src/daemon/config/load.js';
import type { FinalReply } from '../src/daemon/protocol/envelope.js';
import { dist } from '../src/daemon/store/stats.js';
import { freePort, startMosquitto, type Mosquitto } from '../test/daemon/helpers/mosquitto.js';

const { values: args } = parseArgs({
  options: {
    minutes: { type: 'string', default: '30' },
    rate: { type: 'string', default: '10' },
    'max-tokens': { type: 'string', default: '16' },
    broker: { type: 'string', default: 'embedded' },
    model: { type: 'string', default: 'models/tinystories-bita' },
    dist: { type: 'boolean', default: false },
    'node-flags': { type: 'string', default: '--max-semi-space-size=1' },
    // The systemd unit's malloc settings (systemd/bitad.service); "" runs with glibc's defaults.
    'daemon-env': { type: 'string', default: 'MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=65536' },
    'interval-s': { type: 'string', default: '60' },
    'sample-s': { type: 'string', default: '10' },
    json: { type: 'boolean', default: false },
  },
});
const MINUTES = Number(args.minutes);
const RATE = Number(args.rate);
const MAX_TOKENS = Number(args['max-tokens']);
const INTERVAL_MS = Number(args['interval-s']) * 1000;
const SAMPLE_MS = Number(args['sample-s']) * 1000;
/** The RSS baseline is taken at the end of this minute: start-up, JIT and the first allocations settle before it. */
const WARM_MINUTES = 5;
/** A request whose final reply has not come after this long counts as lost. */
const LOST_AFTER_MS = 30_000;
const PROMPTS = ['Once upon a time', 'The little dog', 'One day, a girl named Lily', 'Tom and his mom went to the park', 'There was a big tree'];

type Transport = 'mqtt' | 'socket';

interface Daemon {
  child: ChildProcess;
  socket: string;
  base: string;
  brokerPort: number | null;
  logTail(): string;
  stop(): Promise<void>;
}

async function startDaemon(dir: string, mqttCfg: Record<string, unknown>): Promise<Daemon> {
  const file = join(dir, 'bitad.yaml');
  const cfg = {
    node_id: 'soak',
    data_dir: join(dir, 'var'),
    model: { path: resolve(PACKAGE_ROOT, args.model!) },
    mqtt: mqttCfg,
    queue: { capacity: 16 },
    log: { level: 'info' },
  };
  writeFileSync(file, JSON.stringify(cfg)); // JSON is YAML
  const entry = args.dist ? [join(PACKAGE_ROOT, 'dist/src/cli/main.js'), 'start'] : ['--import', 'tsx', join(PACKAGE_ROOT, 'src/cli/main.ts'), 'start'];
  const flags = args['node-flags']!.split(' ').filter((f) => f !== '');
  const daemonEnv = Object.fromEntries(args['daemon-env']!.split(' ').filter((kv) => kv.includes('=')).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  const child = spawn(process.execPath, [...flags, ...entry, '--config', file], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...daemonEnv } });
  // The daemon logs a line per request: keep only a tail, so the bench's own memory stays flat and
  // the pipe never fills (a full pipe would stall the daemon's synchronous logger).
  let tail = '';
  let ready: string | null = null;
  child.stdout!.on('data', (d: Buffer) => {
    tail = (tail + d.toString()).slice(-20_000);
    ready ??= tail.split('\n').find((l) => l.includes('"bitad ready"')) ?? null;
  });
  for (let i = 0; i < 2400 && ready === null; i++) {
    if (child.exitCode !== null) throw new Error(`bitad exited:\n${tail}`);
    await sleep(25);
  }
  if (ready === null) throw new Error(`bitad did not become ready:\n${tail}`);
  const r = JSON.parse(ready) as { socket: string; broker_port?: number; base: string };
  return {
    child,
    socket: r.socket,
    base: r.base,
    brokerPort: r.broker_port ?? null,
    logTail: () => tail,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((res) => child.once('exit', res));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** An MQTT client that sends generate requests and resolves each with its final reply. */
class MqttDriver {
  private readonly waiting = new Map<string, (f: FinalReply) => void>();
  private readonly replyTopic = `bitad/reply/soak-${randomUUID()}`;

  private constructor(
    private readonly client: MqttClient,
    private readonly base: string,
    private readonly v5: boolean,
  ) {
    client.on('message', (topic, payload, packet) => {
      const reply = JSON.parse(payload.toString()) as FinalReply;
      if (!('status' in reply)) return;
      const txn = v5 ? packet.properties?.correlationData?.toString() : topic.slice(topic.lastIndexOf('/') + 1);
      if (txn === undefined) return;
      this.waiting.get(txn)?.(reply);
      this.waiting.delete(txn);
    });
  }

  static async open(port: number, base: string, v5: boolean): Promise<MqttDriver> {
    const client = await mqtt.connectAsync({ host: '127.0.0.1', port, protocolVersion: v5 ? 5 : 4, clientId: `soak-${randomUUID()}` });
    (client.stream as { setNoDelay?: (v: boolean) => void }).setNoDelay?.(true);
    const d = new MqttDriver(client, base, v5);
    await client.subscribeAsync(v5 ? d.replyTopic : `${base}/response/+`, { qos: 1 });
    return d;
  }

  request(body: Record<string, unknown>): Promise<FinalReply> {
    const transaction = body.transaction as string;
    const done = new Promise<FinalReply>((r) => this.waiting.set(transaction, r));
    const props = this.v5 ? { properties: { responseTopic: this.replyTopic, correlationData: Buffer.from(transaction) } } : {};
    this.client.publish(`${this.base}/request/generate`, JSON.stringify(body), { qos: 1, ...props });
    return done;
  }

  forget(transaction: string): void {
    this.waiting.delete(transaction);
  }

  close(): Promise<void> {
    return this.client.endAsync();
  }
}

interface Sample {
  atMs: number;
  rssMb: number;
  heapUsedMb: number | null;
  heapTotalMb: number | null;
  resources: number | null;
}

interface Interval {
  latency: Record<Transport, number[]>;
  sent: number;
  ok: number;
  errors: Record<string, number>;
  lost: number;
  /** Requests of this interval still waiting for their final reply: its row is printed once none are. */
  pending: number;
  samples: Sample[];
}

const newInterval = (): Interval => ({ latency: { mqtt: [], socket: [] }, sent: 0, ok: 0, errors: {}, lost: 0, pending: 0, samples: [] });

function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

/** One request on one transport; its outcome lands in the interval that was current when it was sent. */
async function fire(iv: Interval, transport: Transport, drivers: { mqtt: MqttDriver; socket: SocketClient }, n: number): Promise<void> {
  const transaction = `soak-${n}`;
  const body = { transaction, prompt: PROMPTS[n % PROMPTS.length], max_tokens: MAX_TOKENS, stream: true };
  iv.sent++;
  iv.pending++;
  const t0 = performance.now();
  const reply = transport === 'mqtt' ? drivers.mqtt.request(body) : drivers.socket.request('generate', body);
  let timer: NodeJS.Timeout | undefined;
  const lost = new Promise<null>((r) => (timer = setTimeout(() => r(null), LOST_AFTER_MS)));
  const final = await Promise.race([reply.catch((e: Error) => ({ status: 'error', error: { code: `client: ${e.message}` } }) as unknown as FinalReply), lost]);
  clearTimeout(timer);
  iv.pending--;
  if (final === null) {
    iv.lost++;
    if (transport === 'mqtt') drivers.mqtt.forget(transaction);
  } else if (final.status === 'ok') {
    iv.ok++;
    iv.latency[transport].push(performance.now() - t0);
  } else {
    const code = final.error.code;
    iv.errors[code] = (iv.errors[code] ?? 0) + 1;
  }
}

async function sample(iv: Interval, d: Daemon, health: SocketClient, startedAt: number): Promise<void> {
  const s: Sample = { atMs: performance.now() - startedAt, rssMb: rssMb(d.child.pid!), heapUsedMb: null, heapTotalMb: null, resources: null };
  try {
    const h = await health.request('health', { transaction: `health-${randomUUID()}` });
    const m = h.status === 'ok' ? (h.data as { memory?: { heap_used_mb: number; heap_total_mb: number; active_resources: number } }).memory : undefined;
    if (m) Object.assign(s, { heapUsedMb: m.heap_used_mb, heapTotalMb: m.heap_total_mb, resources: m.active_resources });
  } catch {
    // a daemon without the memory figures (older build): RSS alone
  }
  iv.samples.push(s);
}

/** Open loop: request i is sent at start + i/rate whatever happened to the earlier ones. */
async function drive(d: Daemon, drivers: { mqtt: MqttDriver; socket: SocketClient }, health: SocketClient): Promise<Interval[]> {
  const intervals: Interval[] = [newInterval()];
  const startedAt = performance.now();
  const endAt = startedAt + MINUTES * 60_000;
  const inflight = new Set<Promise<void>>();
  let n = 0;
  let nextSample = startedAt;
  let nextInterval = startedAt + INTERVAL_MS;
  let reported = 0;
  /** Prints, in order, the first `closed` intervals once none of their requests is still waiting. */
  const reportSettled = (closed: number) => {
    while (reported < closed && intervals[reported].pending === 0) report(++reported, intervals[reported - 1]);
  };
  while (performance.now() < endAt) {
    const now = performance.now();
    if (now >= nextInterval) {
      intervals.push(newInterval());
      nextInterval += INTERVAL_MS;
    }
    reportSettled(intervals.length - 1); // the last one is still open
    const iv = intervals[intervals.length - 1];
    if (now >= nextSample) {
      nextSample += SAMPLE_MS;
      void sample(iv, d, health, startedAt);
    }
    while (n < ((performance.now() - startedAt) / 1000) * RATE) {
      const p = fire(iv, n % 2 === 0 ? 'mqtt' : 'socket', drivers, n);
      n++;
      inflight.add(p);
      void p.finally(() => inflight.delete(p));
    }
    if (d.child.exitCode !== null) throw new Error(`bitad exited during the soak:\n${d.logTail()}`);
    await sleep(Math.max(1, Math.min(1000 / RATE, nextSample - performance.now())));
  }
  await Promise.all(inflight);
  reportSettled(intervals.length);
  return intervals;
}

const f1 = (x: number | null | undefined) => (x === null || x === undefined ? '-' : x.toFixed(1));
const f2 = (x: number | null | undefined) => (x === null || x === undefined ? '-' : x.toFixed(2));

function row(i: number, iv: Interval) {
  const last = iv.samples[iv.samples.length - 1];
  return {
    interval: i,
    sent: iv.sent,
    ok: iv.ok,
    errors: iv.errors,
    lost: iv.lost,
    mqtt_ms: dist(iv.latency.mqtt),
    socket_ms: dist(iv.latency.socket),
    rss_mb: last?.rssMb ?? null,
    rss_max_mb: iv.samples.length ? Math.max(...iv.samples.map((s) => s.rssMb)) : null,
    heap_used_mb: last?.heapUsedMb ?? null,
    heap_total_mb: last?.heapTotalMb ?? null,
    resources: last?.resources ?? null,
  };
}

function report(i: number, iv: Interval): void {
  const r = row(i, iv);
  const errs = Object.entries(r.errors).map(([k, v]) => `${k}:${v}`).join(',') || '-';
  console.log(
    `${String(i).padStart(4)}  ${String(r.sent).padStart(5)}  ${String(r.ok).padStart(5)}  ${errs.padEnd(10)} ${String(r.lost).padStart(4)}  ${f2(r.mqtt_ms.p50).padStart(7)} ${f2(r.mqtt_ms.p99).padStart(7)}  ${f2(r.socket_ms.p50).padStart(7)} ${f2(r.socket_ms.p99).padStart(7)}  ${f1(r.rss_mb).padStart(6)} ${f1(r.rss_max_mb).padStart(6)}  ${f1(r.heap_used_mb).padStart(6)} ${f1(r.heap_total_mb).padStart(6)}  ${String(r.resources ?? '-').padStart(4)}`,
  );
}

/** Least-squares slope of RSS over time, in MB per hour. */
function slopeMbPerHour(samples: Sample[]): number | null {
  if (samples.length < 3) return null;
  const xs = samples.map((s) => s.atMs / 3_600_000);
  const ys = samples.map((s) => s.rssMb);
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  const num = xs.reduce((a, x, i) => a + (x - mx) * (ys[i] - my), 0);
  const den = xs.reduce((a, x) => a + (x - mx) ** 2, 0);
  return den === 0 ? null : num / den;
}

function verdicts(intervals: Interval[]) {
  const samples = intervals.flatMap((iv) => iv.samples);
  const warmMs = WARM_MINUTES * 60_000;
  const after = samples.filter((s) => s.atMs >= warmMs);
  // Baseline and end: the mean of the samples in the minute up to each point, so one sample's noise does not decide.
  const meanIn = (from: number, to: number) => {
    const xs = samples.filter((s) => s.atMs >= from && s.atMs <= to).map((s) => s.rssMb);
    return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null;
  };
  const endMs = samples.length ? samples[samples.length - 1].atMs : 0;
  const base = MINUTES > WARM_MINUTES ? meanIn(warmMs - 60_000, warmMs) : null;
  const end = base !== null ? meanIn(endMs - 60_000, endMs) : null;
  const growthPct = base !== null && end !== null ? ((end - base) / base) * 100 : null;
  const maxRss = samples.length ? Math.max(...samples.map((s) => s.rssMb)) : null;
  const heapAfter = after.filter((s) => s.heapUsedMb !== null);
  return {
    rss_baseline_mb: base,
    rss_end_mb: end,
    rss_growth_after_warmup_pct: growthPct,
    rss_slope_after_warmup_mb_per_h: slopeMbPerHour(after),
    rss_max_mb: maxRss,
    heap_used_first_after_warmup_mb: heapAfter[0]?.heapUsedMb ?? null,
    heap_used_last_mb: heapAfter[heapAfter.length - 1]?.heapUsedMb ?? null,
    resources_range: after.some((s) => s.resources !== null)
      ? [Math.min(...after.filter((s) => s.resources !== null).map((s) => s.resources!)), Math.max(...after.filter((s) => s.resources !== null).map((s) => s.resources!))]
      : null,
  };
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'bitad-soak-'));
  let broker: Mosquitto | null = null;
  let d: Daemon | null = null;
  try {
    const embedded = args.broker !== 'mosquitto';
    if (!embedded) broker = await startMosquitto();
    const mqttCfg = embedded ? { embedded: true, port: await freePort() } : { embedded: false, host: '127.0.0.1', port: broker!.port, protocol_version: 5 };
    d = await startDaemon(dir, mqttCfg);
    const port = embedded ? d.brokerPort! : broker!.port;
    const drivers = { mqtt: await MqttDriver.open(port, d.base, !embedded), socket: await SocketClient.connect(d.socket) };
    const health = await SocketClient.connect(d.socket);
    console.log(
      `bitad soak: ${MINUTES} min, ${RATE} req/s open loop (alternating MQTT ${embedded ? '3.1.1 embedded aedes' : '5 mosquitto'} / Unix socket), max_tokens ${MAX_TOKENS}, streaming, model ${args.model}, daemon ${args.dist ? 'dist/' : 'tsx'} ${args['node-flags']} ${args['daemon-env']}`,
    );
    console.log('');
    console.log(`each row: one ${INTERVAL_MS / 1000} s interval; latency = client send -> final reply (ms); RSS from /proc (MB, last sample and max); heap used/total of the daemon's main isolate (MB); res = live libuv resources`);
    console.log('');
    console.log('   #   sent     ok  errors     lost  mqtt p50     p99  sock p50     p99     RSS    max    heap  total   res');
    const intervals = await drive(d, drivers, health);
    await drivers.mqtt.close();
    drivers.socket.close();
    health.close();
    const v = verdicts(intervals);
    console.log('');
    console.log(
      v.rss_growth_after_warmup_pct === null
        ? `RSS growth after minute ${WARM_MINUTES}: n/a (the run must last longer than ${WARM_MINUTES} minutes)`
        : `RSS growth after minute ${WARM_MINUTES}: ${f1(v.rss_growth_after_warmup_pct)} % (${f1(v.rss_baseline_mb)} -> ${f1(v.rss_end_mb)} MB, mean of the minute before each; target <= 5 %), slope ${f1(v.rss_slope_after_warmup_mb_per_h)} MB/h`,
    );
    console.log(`max RSS: ${f1(v.rss_max_mb)} MB (target <= 150 MB with the bundled model)`);
    console.log(`heap used after warm-up: ${f1(v.heap_used_first_after_warmup_mb)} -> ${f1(v.heap_used_last_mb)} MB; live libuv resources ${v.resources_range ? v.resources_range.join('-') : '-'}`);
    if (args.json) {
      console.log(
        JSON.stringify({
          minutes: MINUTES,
          rate: RATE,
          max_tokens: MAX_TOKENS,
          broker: embedded ? 'embedded' : 'mosquitto',
          model: args.model,
          runtime: args.dist ? 'dist' : 'tsx',
          node_flags: args['node-flags'],
          daemon_env: args['daemon-env'],
          intervals: intervals.map((iv, i) => row(i + 1, iv)),
          ...v,
        }),
      );
    }
  } finally {
    await d?.stop();
    await broker?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
