/**
 * Dashboard test and bench helpers: simulated boards (an MQTT connection each, with the daemon's
 * Last Will, retained state and info, telemetry shaped as src/daemon/telemetry/telemetry.ts
 * publishes it), and `bitad dashboard` / `bitad start` (real or FakeEngine) as child processes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt, { type MqttClient } from 'mqtt';
import { PACKAGE_ROOT } from '../../src/daemon/package-root.js';

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const chromiumPresent = (): boolean => existsSync(CHROMIUM);

/** Telemetry of simulated board `i` at tick `k`: distinct, predictable values per board. */
export function simTelemetry(i: number, k: number, windowS: number): Record<string, unknown> {
  const wobble = (k % 5) * 0.1;
  return {
    ts: Date.now(),
    state: 'ok',
    components: { engine: { status: 'ok' }, store: { status: 'ok' }, mqtt: { status: 'ok' }, socket: { status: 'ok' } },
    uptime_s: k * windowS,
    window_s: windowS,
    requests: 10 + (i % 7),
    ok: 10 + (i % 7) - (i % 2),
    errors: i % 2,
    tokens_per_s_p50: 100 + i + wobble,
    ttft_ms_p50: 3 + i / 100,
    ttft_ms_p95: 5 + i / 10,
    tpot_ms_p50: 0.2,
    tpot_ms_p95: 0.3 + i / 1000,
    total_ms_p95: 40,
    mean_accepted_tokens: 2 + (i % 10) / 10,
    tree_budget: 8 + (i % 8),
    tree: { policy: 'auto', active: i % 3 === 0 ? 'neighbourly' : 'throughput', rows: 8 + (i % 8), min_rows: 1, max_rows: 32, reason: 'simulated', changes: i, board: { others_cpu_pct: 10, self_cpu_pct: 20, cpu_temp_c: 50 + (i % 20), throttled: i % 13 === 0, gpu_busy_pct: null } },
    queue_depth: i % 4,
    busy: i % 2 === 0,
    load: { ts: Date.now(), cpu_load_pct: 20 + (i % 60) + wobble, cpu_temp_c: 50 + (i % 20), gpu_load_pct: i % 5 === 0 ? 30 : null, mem_used_mb: 900, rss_mb: 130 + (i % 30), throttled: i % 13 === 0 ? 0x4 : 0 },
  };
}

export interface SimBoards {
  nodes: string[];
  /** Stops one board's telemetry but keeps its connection (it should turn stale). */
  silence(node: string): void;
  published: () => number;
  stop(): Promise<void>;
}

/** `n` simulated boards named `<prefix>-NN`, each its own MQTT connection, telemetry every `intervalMs`. */
export async function startSimBoards(port: number, n: number, opts: { prefix?: string; intervalMs?: number; base?: string } = {}): Promise<SimBoards> {
  const base = opts.base ?? 'bitad';
  const intervalMs = opts.intervalMs ?? 1000;
  const nodes = Array.from({ length: n }, (_, i) => `${opts.prefix ?? 'sim'}-${String(i).padStart(n > 99 ? 3 : 2, '0')}`);
  const clients: MqttClient[] = [];
  const silenced = new Set<string>();
  let published = 0;
  let k = 0;
  for (const [i, node] of nodes.entries()) {
    const c = await mqtt.connectAsync({ host: '127.0.0.1', port, protocolVersion: 5, clientId: `sim-${node}`, will: { topic: `${base}/${node}/state`, payload: Buffer.from('{"state":"offline"}'), qos: 1, retain: true } });
    await c.publishAsync(`${base}/${node}/state`, '{"state":"online"}', { qos: 1, retain: true });
    const info = { node_id: node, version: '0.1.0-sim', model: { name: `sim-model-${i % 3}`, context_length: 512, vocab_size: 512, bita: true }, transports: { mqtt: `${base}/${node}`, socket: null }, limits: { max_payload_bytes: 65536, max_tokens: 1024, queue_capacity: 16 } };
    await c.publishAsync(`${base}/${node}/info`, JSON.stringify(info), { qos: 1, retain: true });
    clients.push(c);
  }
  const tick = () => {
    k++;
    nodes.forEach((node, i) => {
      if (silenced.has(node)) return;
      clients[i].publish(`${base}/${node}/telemetry`, JSON.stringify(simTelemetry(i, k, intervalMs / 1000)), { qos: 0 });
      published++;
    });
  };
  tick();
  const timer = setInterval(tick, intervalMs);
  return {
    nodes,
    silence: (node) => silenced.add(node),
    published: () => published,
    stop: async () => {
      clearInterval(timer);
      await Promise.all(clients.map((c) => c.endAsync()));
    },
  };
}

export interface Child {
  child: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

function track(child: ChildProcess): Child {
  let out = '';
  child.stdout?.on('data', (d) => (out += d));
  child.stderr?.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  return {
    child,
    out: () => out,
    exited,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

async function waitFor(c: Child, re: RegExp, what: string, ms: number): Promise<RegExpExecArray> {
  for (let waited = 0; waited < ms; waited += 50) {
    const m = re.exec(c.out());
    if (m) return m;
    if (c.child.exitCode !== null) break;
    await sleep(50);
  }
  throw new Error(`${what} did not start: ${c.out().slice(-2000)}`);
}

/** `bitad start` (real engine, bundled model unless `model` says otherwise) or the FakeEngine daemon, on the external broker. */
export async function startDaemonProcess(o: { node: string; port: number; dir: string; fake: boolean; model?: string }): Promise<Child> {
  const file = join(o.dir, `${o.node}.yaml`);
  writeFileSync(
    file,
    [
      `node_id: ${o.node}`,
      `data_dir: ${join(o.dir, o.node)}`,
      `mqtt: { embedded: false, host: 127.0.0.1, port: ${o.port}, protocol_version: 5 }`,
      'socket: { enabled: false }',
      'telemetry: { interval_s: 1, load_poll_s: 1 }',
      'lifecycle: { drain_timeout_ms: 1000 }',
      'log: { level: info }',
      ...(o.model ? [`model: { path: ${o.model} }`] : []),
    ].join('\n') + '\n',
  );
  const entry = o.fake ? 'test/daemon/helpers/fake-daemon.ts' : 'src/cli/main.ts';
  const args = ['--import', 'tsx', join(PACKAGE_ROOT, entry), ...(o.fake ? [] : ['start']), '--config', file];
  const c = track(spawn(process.execPath, args, { env: { ...cleanEnv(), FAKE_ENGINE: '{"chunkDelayMs":1}' }, stdio: ['ignore', 'pipe', 'pipe'] }));
  await waitFor(c, /"msg":"bitad ready"/, `daemon ${o.node}`, 60_000);
  return c;
}

/** The environment without BITAD_* (a developer's own settings must not leak into the children). */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BITAD_')));
}

export interface DashboardChild extends Child {
  url: string;
}

/** `bitad dashboard` as a process, on a free loopback port; resolves once it listens. */
export async function startDashboardProcess(o: { port: number; db: string; token?: string; args?: string[]; nodeFlags?: string[] }): Promise<DashboardChild> {
  const args = [...(o.nodeFlags ?? []), '--import', 'tsx', join(PACKAGE_ROOT, 'src/cli/main.ts'), 'dashboard', '--broker', `mqtt://127.0.0.1:${o.port}`, '--protocol', '5', '--listen', '127.0.0.1:0', '--db', o.db, ...(o.args ?? [])];
  const env = { ...cleanEnv(), ...(o.token ? { BITAD_DASHBOARD_TOKEN: o.token } : {}) };
  const c = track(spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] }));
  const m = await waitFor(c, /"url":"([^"]+)"/, 'bitad dashboard', 30_000);
  return { ...c, url: m[1] };
}

export async function until<T>(what: string, fn: () => Promise<T | null | undefined | false> | T | null | undefined | false, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown = null;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}
