/**
 * Transport overhead: N sequential requests to a `bitad start` child process over loopback
 * mosquitto (MQTT 5), the embedded aedes broker (MQTT 3.1.1) and the Unix socket. Overhead =
 * client end-to-end time − the daemon's engine_ms (wall time inside engine.generate), so it holds
 * parsing, queueing, MQTT hops, streaming of chunks and the store.
 *
 *   npm run bench:transport -- [--n 500] [--max-tokens 8] [--model <dir>] [--dist] [--no-stream]
 *                              [--node-flags=--max-semi-space-size=1] [--json]
 *
 * Without --model the fake engine (≈0 ms engine time) is used; with it, the real engine.
 * --dist runs the daemon from the compiled dist/ (npm run build) instead of through tsx, whose
 * loader thread alone adds ~35 MB of RSS.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import mqtt from 'mqtt';
import { SocketClient, type ClientFailure } from '../src/cli/socket-client.js';
import { PACKAGE_ROOT } from '../src/daemon/config/load.js';
import type { FinalReply } from '../src/daemon/protocol/envelope.js';
import { dist } from '../src/daemon/store/stats.js';
import { freePort, startMosquitto } from '../test/daemon/helpers/mosquitto.js';

const { values: args } = parseArgs({
  options: {
    n: { type: 'string', default: '500' },
    warmup: { type: 'string', default: '20' },
    'max-tokens': { type: 'string', default: '8' },
    model: { type: 'string' },
    json: { type: 'boolean', default: false },
    dist: { type: 'boolean', default: false },
    'no-stream': { type: 'boolean', default: false },
    'node-flags': { type: 'string', default: '' },
  },
});
const N = Number(args.n);
const WARMUP = Number(args.warmup);
const MAX_TOKENS = Number(args['max-tokens']);
const PROMPT = 'Once upon a time';
const STREAM = !args['no-stream'];

interface Daemon {
  child: ChildProcess;
  socket: string;
  brokerPort: number | null;
  base: string;
  stop(): Promise<void>;
}

async function startDaemon(dir: string, mqttCfg: Record<string, unknown>): Promise<Daemon> {
  const file = join(dir, `bitad-${randomUUID()}.yaml`);
  const model = args.model ? { path: resolve(args.model) } : {};
  const cfg = {
    node_id: 'bench',
    data_dir: join(dir, 'var'),
    model,
    mqtt: mqttCfg,
    queue: { capacity: 4 },
    telemetry: { enabled: false },
    log: { level: 'info' },
  };
  writeFileSync(file, JSON.stringify(cfg)); // JSON is YAML
  // Without --model: `bitad start` with the model-free FakeEngine (a test helper, run through tsx).
  const entry = !args.model
    ? ['--import', 'tsx', join(PACKAGE_ROOT, 'test/daemon/helpers/fake-daemon.ts')]
    : args.dist
      ? [join(PACKAGE_ROOT, 'dist/src/cli/main.js'), 'start']
      : ['--import', 'tsx', join(PACKAGE_ROOT, 'src/cli/main.ts'), 'start'];
  const flags = args['node-flags']!.split(' ').filter((f) => f !== '');
  const child = spawn(process.execPath, [...flags, ...entry, '--config', file], {
    env: { ...process.env, FAKE_ENGINE: '{"chunkDelayMs":0}' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let logs = '';
  child.stdout!.on('data', (d) => (logs += d));
  for (let i = 0; i < 1200 && !logs.includes('"bitad ready"'); i++) {
    if (child.exitCode !== null) throw new Error(`bitad exited:\n${logs}`);
    await sleep(25);
  }
  const ready = logs.split('\n').find((l) => l.includes('"bitad ready"'));
  if (!ready) throw new Error(`bitad did not become ready:\n${logs}`);
  const r = JSON.parse(ready) as { socket: string; broker_port?: number; base: string };
  return {
    child,
    socket: r.socket,
    brokerPort: r.broker_port ?? null,
    base: r.base,
    stop: async () => {
      const exited = new Promise((res) => child.once('exit', res));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

function rssMb(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)![1]);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

/** Runs warmup + N sequential requests; returns overhead and end-to-end samples in ms. */
async function measure(send: () => Promise<{ e2e: number; final: FinalReply | ClientFailure }>) {
  const overhead: number[] = [];
  const e2e: number[] = [];
  const engine: number[] = [];
  for (let i = 0; i < WARMUP + N; i++) {
    const r = await send();
    if (r.final.status !== 'ok') throw new Error(`request failed: ${JSON.stringify(r.final)}`);
    if (i < WARMUP) continue;
    const engineMs = (r.final.data as { stats: { engine_ms: number } }).stats.engine_ms;
    e2e.push(r.e2e);
    engine.push(engineMs);
    overhead.push(r.e2e - engineMs);
  }
  return { overhead: dist(overhead), e2e: dist(e2e), engine: dist(engine) };
}

async function mqttRun(port: number, base: string, version: 4 | 5) {
  const client = await mqtt.connectAsync({ host: '127.0.0.1', port, protocolVersion: version, clientId: `bench-${randomUUID()}` });
  (client.stream as { setNoDelay?: (v: boolean) => void }).setNoDelay?.(true);
  // Inside the daemon's default reply namespace (<base_topic>/reply/; docs/daemon.md "Reply routes").
  const replyTopic = `${base.split('/')[0]}/reply/bench-${randomUUID()}`;
  let waiting: { key: string; resolve: (f: FinalReply) => void } | null = null;
  client.on('message', (topic, payload, packet) => {
    const key = version === 5 ? packet.properties?.correlationData?.toString() : topic.split('/').pop();
    const msg = JSON.parse(payload.toString());
    if (waiting && key === waiting.key && 'status' in msg) waiting.resolve(msg);
  });
  await client.subscribeAsync(version === 5 ? replyTopic : `${base}/response/#`, { qos: 1 });
  const result = await measure(async () => {
    const transaction = randomUUID();
    const t0 = performance.now();
    const final = await new Promise<FinalReply>((resolve) => {
      waiting = { key: transaction, resolve };
      client.publish(`${base}/request/generate`, JSON.stringify({ transaction, prompt: PROMPT, max_tokens: MAX_TOKENS, stream: STREAM }), {
        qos: 1,
        ...(version === 5 ? { properties: { responseTopic: replyTopic, correlationData: Buffer.from(transaction) } } : {}),
      });
    });
    return { e2e: performance.now() - t0, final };
  });
  await client.endAsync();
  return result;
}

async function socketRun(path: string) {
  const client = await SocketClient.connect(path);
  const result = await measure(async () => {
    const t0 = performance.now();
    const final = await client.request('generate', { prompt: PROMPT, max_tokens: MAX_TOKENS, stream: STREAM });
    return { e2e: performance.now() - t0, final };
  });
  client.close();
  return result;
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'bitad-bench-'));
  const broker = await startMosquitto();
  const rows: Record<string, unknown>[] = [];
  let memory = { rss: 0, peak: 0 };
  try {
    // 1) mosquitto (MQTT 5) and the Unix socket against one daemon.
    const d = await startDaemon(dir, { embedded: false, host: '127.0.0.1', port: broker.port, protocol_version: 5 });
    try {
      rows.push({ transport: 'mqtt5 mosquitto', ...(await mqttRun(broker.port, d.base, 5)) });
      rows.push({ transport: 'unix socket', ...(await socketRun(d.socket)) });
      memory = rssMb(d.child.pid!);
    } finally {
      await d.stop();
    }
    // 2) the embedded aedes broker (MQTT 3.1.1), the default for `npm start`.
    const e = await startDaemon(dir, { embedded: true, port: await freePort() });
    try {
      rows.push({ transport: 'mqtt3.1.1 embedded', ...(await mqttRun(e.brokerPort!, e.base, 4)) });
    } finally {
      await e.stop();
    }
  } finally {
    await broker.stop();
    rmSync(dir, { recursive: true, force: true });
  }

  type R = { transport: string; overhead: ReturnType<typeof dist>; e2e: ReturnType<typeof dist>; engine: ReturnType<typeof dist> };
  const f = (x: number | null) => (x === null ? '-' : x.toFixed(3));
  const lines = [
    `bitad transport overhead: ${N} sequential requests (+${WARMUP} warm-up), max_tokens ${MAX_TOKENS}, streaming ${STREAM ? 'on' : 'off'}, engine ${args.model ?? 'fake (~0 ms)'}, daemon ${args.dist ? 'dist/ (compiled)' : 'tsx'}${args['node-flags'] ? ' ' + args['node-flags'] : ''}`,
    '',
    'transport             overhead p50  overhead p99   e2e p50   e2e p99  engine p50',
    ...(rows as unknown as R[]).map(
      (r) => `${r.transport.padEnd(20)}  ${f(r.overhead.p50).padStart(12)}  ${f(r.overhead.p99).padStart(12)}  ${f(r.e2e.p50).padStart(8)}  ${f(r.e2e.p99).padStart(8)}  ${f(r.engine.p50).padStart(10)}`,
    ),
    '',
    `daemon RSS after the mosquitto + socket runs: ${memory.rss.toFixed(1)} MB (peak ${memory.peak.toFixed(1)} MB)`,
  ];
  console.log(lines.join('\n'));
  if (args.json) {
    const out = {
      n: N,
      max_tokens: MAX_TOKENS,
      stream: STREAM,
      engine: args.model ?? 'fake',
      runtime: args.dist ? 'dist' : 'tsx',
      node_flags: args['node-flags'],
      results: Object.fromEntries((rows as unknown as R[]).map((r) => [r.transport, { overhead_ms: r.overhead, e2e_ms: r.e2e, engine_ms: r.engine }])),
      daemon_rss_mb: Math.round(memory.rss * 10) / 10,
      daemon_peak_rss_mb: Math.round(memory.peak * 10) / 10,
    };
    console.log(JSON.stringify(out));
  }
}

await main();
