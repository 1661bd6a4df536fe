import t from 'tap';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt from 'mqtt';
import pino from 'pino';
import { SocketClient } from '../../src/cli/socket-client.js';
import { buildConfig, loadConfig, PACKAGE_ROOT } from '../../src/daemon/config/load.js';
import { Controller } from '../../src/daemon/controller.js';
import { SystemdNotifier } from '../../src/daemon/lifecycle/notify.js';
import type { OkReply } from '../../src/daemon/protocol/envelope.js';
import { FakeEngine } from './helpers/fake-engine.js';
import { EngineError } from '../../src/engine/types.js';
import { Store } from '../../src/daemon/store/store.js';

const dir = mkdtempSync(join(tmpdir(), 'bitad-ctl-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const silent = pino({ level: 'silent' });

t.test('the controller boots from a YAML file, answers over MQTT and the socket, and stops cleanly', async (t) => {
  const file = join(dir, 'e2e.yaml');
  writeFileSync(file, `node_id: e2e\ndata_dir: ${dir}/e2e\nmqtt: { port: 0 }\ntelemetry: { interval_s: 1, load_poll_s: 1 }\nstore: { flush_ms: 10, load_sample_s: 1 }\nlog: { level: silent }\n`);
  const c = new Controller(loadConfig(file, { env: {} }), { engineFactory: async () => new FakeEngine(), log: silent });
  await c.start();
  t.equal(c.state, 'online');
  const base = c.mqtt!.base;
  const m = await mqtt.connectAsync({ host: '127.0.0.1', port: c.broker!.port, protocolVersion: 4 });
  const seen = new Map<string, unknown>();
  const counted = { requests: 0, ok: 0 }; // summed over telemetry messages
  m.on('message', (topic, p) => {
    const body = JSON.parse(p.toString());
    seen.set(topic, body);
    if (topic === `${base}/telemetry`) for (const k of ['requests', 'ok'] as const) counted[k] += body[k];
  });
  await m.subscribeAsync([`${base}/state`, `${base}/info`, `${base}/telemetry`, `${base}/response/#`], { qos: 1 });
  await m.publishAsync(`${base}/request/generate`, JSON.stringify({ transaction: 'm1', prompt: 'Once upon a time', max_tokens: 8 }), { qos: 1 });
  const s = await SocketClient.connect(c.cfg.socket.path);
  const r = (await s.request('generate', { prompt: 'Once upon a time', max_tokens: 8 })) as OkReply;
  t.equal(r.status, 'ok');
  // Each request is counted in the telemetry window in which it finished, and a message may go
  // out between the two replies, so sum the windows (up to five intervals) rather than wait for one.
  for (let i = 0; i < 250 && !(counted.requests >= 2 && seen.has(`${base}/response/m1`)); i++) await sleep(20);
  t.same(seen.get(`${base}/state`), { state: 'online' }, 'retained state');
  t.match(seen.get(`${base}/info`), { node_id: 'e2e', model: { name: 'fake' } }, 'retained info');
  t.match(seen.get(`${base}/response/m1`), { transaction: 'm1', status: 'ok' }, 'MQTT reply');
  t.same(counted, { requests: 2, ok: 2 }, 'telemetry counts both requests, once each');
  t.match(seen.get(`${base}/telemetry`), { queue_depth: 0, tree_budget: 16 }, 'telemetry');
  s.close();
  await m.endAsync();
  await c.stop();
  t.equal(c.state, 'stopped');
  t.notOk(existsSync(c.cfg.socket.path), 'socket removed');
  const store = new Store(c.cfg.store.path, { readonly: true });
  t.equal(store.requestsSince(0).filter((x) => x.outcome === 'ok').length, 2, 'both requests logged');
  t.ok(store.loadSince(0).length >= 1, 'a load sample was stored');
  store.close();
});

t.test('the board sensors feed the engine\'s tree sizing; health, telemetry and the request row show the tree', async (t) => {
  const cfg = buildConfig({ data_dir: join(dir, 'tree'), mqtt: { enabled: false }, telemetry: { enabled: false }, store: { flush_ms: 10 }, tree: { sense_interval_ms: 50 }, log: { level: 'silent' } }, { env: {} });
  const engine = new FakeEngine({ chunkDelayMs: 0, treeBudget: 7 });
  const c = new Controller(cfg, { engineFactory: async () => engine, log: silent });
  await c.start();
  t.teardown(() => c.stop());
  for (let i = 0; i < 100 && !(engine.load && c.treeStatus()?.board); i++) await sleep(20);
  t.ok(engine.load && engine.load.cores >= 1, `the engine got board load readings (${JSON.stringify(engine.load)})`);
  t.ok(engine.load!.othersCpu >= 0 && engine.load!.othersCpu <= 1, 'others\' CPU share within 0..1');
  const h = c.health() as { tree: Record<string, unknown> };
  t.match(h.tree, { policy: 'fixed', active: 'fixed', rows: 7, reason: 'fake engine: 7 rows' });
  t.match(h.tree.board, { throttled: false });
  const s = await SocketClient.connect(cfg.socket.path);
  const r = (await s.request('generate', { prompt: 'a b c', max_tokens: 4 })) as OkReply;
  s.close();
  t.match((r.data as { stats: unknown }).stats, { tree_budget: 7, rows_per_step: 7, tree_policy: 'fixed' }, 'the reply says which tree served it');
  await c.stop();
  const store = new Store(cfg.store.path, { readonly: true });
  t.match(store.requestsSince(0)[0], { tree_budget: 7, rows_per_step: 7, tree_policy: 'fixed' }, 'and so does its row');
  store.close();
});

t.test('stop drains: queued requests get shutting_down, the running one may finish', async (t) => {
  const cfg = buildConfig({ data_dir: join(dir, 'drain'), mqtt: { enabled: false }, telemetry: { enabled: false }, lifecycle: { drain_timeout_ms: 3000 }, log: { level: 'silent' } }, { env: {} });
  const engine = new FakeEngine({ chunkDelayMs: 10 });
  const c = new Controller(cfg, { engineFactory: async () => engine, log: silent });
  await c.start();
  const s = await SocketClient.connect(cfg.socket.path);
  const running = s.request('generate', { prompt: 'a', max_tokens: 20 });
  const queued = s.request('generate', { prompt: 'b', max_tokens: 20 });
  await sleep(30);
  const stopped = c.stop();
  const late = s.request('generate', { prompt: 'c', max_tokens: 2 });
  t.match(await queued, { status: 'error', error: { code: 'shutting_down' } });
  t.match(await late, { status: 'error', error: { code: 'shutting_down' } }, 'a request during the drain is refused');
  t.match(await running, { status: 'ok' }, 'the running one finished within the drain deadline');
  await stopped;
});

t.test('a generation that outlives the drain deadline ends with shutting_down', async (t) => {
  const cfg = buildConfig({ data_dir: join(dir, 'drain2'), mqtt: { enabled: false }, telemetry: { enabled: false }, lifecycle: { drain_timeout_ms: 100 }, log: { level: 'silent' } }, { env: {} });
  const c = new Controller(cfg, { engineFactory: async () => new FakeEngine({ chunkDelayMs: 50 }), log: silent });
  await c.start();
  const s = await SocketClient.connect(cfg.socket.path);
  const running = s.request('generate', { prompt: 'a', max_tokens: 200 });
  await sleep(60);
  const t0 = Date.now();
  await c.stop();
  t.match(await running, { status: 'error', error: { code: 'shutting_down' } });
  t.ok(Date.now() - t0 < 2000, 'stopped promptly');
});

t.test('systemd gets READY, WATCHDOG only while the engine makes progress, then STOPPING', async (t) => {
  const log = join(dir, 'notify.log');
  const fake = join(dir, 'systemd-notify');
  writeFileSync(fake, `#!/bin/sh\necho "$*" >> ${log}\n`);
  chmodSync(fake, 0o755);
  const notifier = new SystemdNotifier(silent, { NOTIFY_SOCKET: '/run/fake', WATCHDOG_USEC: '100000' }, fake);
  t.equal(notifier.watchdogMs, 50, 'pings at half the watchdog period');
  const cfg = buildConfig({ data_dir: join(dir, 'wd'), mqtt: { enabled: false }, telemetry: { enabled: false }, lifecycle: { engine_stall_ms: 100, drain_timeout_ms: 0 }, log: { level: 'silent' } }, { env: {} });
  const engine = new FakeEngine({ chunkDelayMs: 5 });
  const c = new Controller(cfg, { engineFactory: async () => engine, log: silent, notifier });
  await c.start();
  await sleep(300);
  const pings = () => readFileSync(log, 'utf8').split('\n').filter((l) => l === 'WATCHDOG=1').length;
  const before = pings();
  t.ok(before >= 2, `pinged while idle (${before})`);
  engine.chunkDelayMs = 5000; // a step that hangs: the engine stops answering
  const s = await SocketClient.connect(cfg.socket.path);
  void s.request('generate', { prompt: 'hang', max_tokens: 5 });
  await sleep(250); // the first 100 ms still count as progress
  const stalledFrom = pings();
  await sleep(300);
  t.equal(pings(), stalledFrom, 'no WATCHDOG=1 while the engine is stalled');
  await c.stop();
  const lines = readFileSync(log, 'utf8');
  t.match(lines, /MAINPID=\d+ READY=1 STATUS=serving fake/);
  t.match(lines, /STOPPING=1/);
  t.ok(lines.indexOf('READY=1') < lines.indexOf('STOPPING=1'));
});

t.test('an engine that fails every request stops the watchdog after three model errors', async (t) => {
  const cfg = buildConfig({ data_dir: join(dir, 'broken'), mqtt: { enabled: false }, telemetry: { enabled: false }, log: { level: 'silent' } }, { env: {} });
  const engine = new FakeEngine({ chunkDelayMs: 1 });
  const c = new Controller(cfg, { engineFactory: async () => engine, log: silent });
  await c.start();
  const s = await SocketClient.connect(cfg.socket.path);
  engine.failWith = new EngineError('model_error', 'engine worker exited');
  for (let i = 0; i < 2; i++) t.match(await s.request('generate', { prompt: 'x', max_tokens: 2 }), { error: { code: 'model_error' } });
  t.ok(c.scheduler!.responsive(30_000), 'two failures: still considered alive');
  await s.request('generate', { prompt: 'x', max_tokens: 2 });
  t.notOk(c.scheduler!.responsive(30_000), 'three in a row: not answering');
  t.match(c.health(), { engine_responsive: false });
  engine.failWith = null;
  t.match(await s.request('generate', { prompt: 'x', max_tokens: 2 }), { status: 'ok' });
  t.ok(c.scheduler!.responsive(30_000), 'a success resets it');
  s.close();
  await c.stop();
});

t.test('SIGTERM during the model load: the daemon never goes online, closes the engine and leaves no socket', async (t) => {
  const log = join(dir, 'notify-load.log');
  const fake = join(dir, 'systemd-notify-load');
  writeFileSync(fake, `#!/bin/sh\necho "$*" >> ${log}\n`);
  chmodSync(fake, 0o755);
  const notifier = new SystemdNotifier(silent, { NOTIFY_SOCKET: '/run/fake' }, fake);
  const cfg = buildConfig({ data_dir: join(dir, 'load-stop'), mqtt: { enabled: false }, telemetry: { enabled: false }, log: { level: 'silent' } }, { env: {} });
  const engine = new FakeEngine();
  let closed = false;
  const close = engine.close.bind(engine);
  engine.close = async () => {
    closed = true;
    await close();
  };
  const c = new Controller(cfg, { engineFactory: async () => (await sleep(300), engine), log: silent, notifier });
  const started = c.start();
  await sleep(50);
  await c.stop('SIGTERM');
  await started;
  t.equal(c.state, 'stopped');
  t.ok(closed, 'the engine that finished loading is closed');
  t.notOk(existsSync(cfg.socket.path), 'no socket was opened');
  t.notMatch(readFileSync(log, 'utf8'), /READY=1/, 'READY is never sent after STOPPING');
});

t.test('notifications are off when systemd did not ask for them', async (t) => {
  const n = new SystemdNotifier(silent, {}, '/nonexistent/systemd-notify');
  t.equal(n.enabled, false);
  t.equal(n.watchdogMs, null);
  await n.ready('x'); // would fail loudly if it tried to spawn
});

t.test('bitad start runs as a process: ask and status over the socket, stats from SQLite, SIGTERM exits 0', async (t) => {
  const file = join(dir, 'cli.yaml');
  writeFileSync(file, `node_id: cli\ndata_dir: ${dir}/cli\nmqtt: { port: 0 }\nstore: { flush_ms: 10 }\ntelemetry: { enabled: false }\n`);
  const run = (args: string[]) =>
    new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
      const p = spawn(process.execPath, ['--import', 'tsx', join(PACKAGE_ROOT, 'src/cli/main.ts'), ...args], { env: { ...process.env, BITAD_CONFIG: file } });
      let out = '';
      let err = '';
      p.stdout.on('data', (d) => (out += d));
      p.stderr.on('data', (d) => (err += d));
      p.on('exit', (code) => resolve({ code, out, err }));
    });
  // `bitad start` with the model-free engine (same start() and signal handling as the CLI's).
  const daemon = spawn(process.execPath, ['--import', 'tsx', join(PACKAGE_ROOT, 'test/daemon/helpers/fake-daemon.ts'), '--config', file], { env: { ...process.env } });
  let logs = '';
  daemon.stdout.on('data', (d) => (logs += d));
  for (let i = 0; i < 300 && !logs.includes('bitad ready'); i++) await sleep(20);
  t.match(logs, /"msg":"bitad ready"/, 'JSON logs on stdout');
  const ask = await run(['ask', 'Once upon a time', '--max-tokens', '6']);
  t.equal(ask.code, 0, ask.err);
  t.match(ask.out, /^Once upon a time \w+/);
  t.match(ask.err, /6 tokens, ttft/);
  const status = await run(['status']);
  t.match(status.out, /model\s+fake/);
  t.match(status.out, /queue\s+0\/16 waiting/);
  t.match(status.out, /tree\s+10 rows \(fixed, 1–32, 0 changes\): fake engine: 10 rows/, 'the tree: rows in use, policy, bounds, why');
  t.match(status.out, /board\s+(others [\d.]+ % cpu|not sensed yet)/, 'what the tree sizing sees of the board');
  await sleep(50);
  const stats = await run(['stats', '--since', '1h']);
  t.equal(stats.code, 0, stats.err);
  t.match(stats.out, /ttft_ms/);
  t.match(stats.out, /tokens_per_s/);
  const exited = new Promise<number | null>((r) => daemon.on('exit', (c) => r(c)));
  daemon.kill('SIGTERM');
  t.equal(await exited, 0, 'exit code 0 after SIGTERM');
  t.match(logs, /"msg":"stopped"/);
});

t.test('the CLI prints help, and a bad config exits 2 naming the key', async (t) => {
  const run = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
      const p = spawn(process.execPath, ['--import', 'tsx', join(PACKAGE_ROOT, 'src/cli/main.ts'), ...args], { env: { ...process.env, ...env } });
      let out = '';
      let err = '';
      p.stdout.on('data', (d) => (out += d));
      p.stderr.on('data', (d) => (err += d));
      p.on('exit', (code) => resolve({ code, out, err }));
    });
  const [help, askHelp, bad] = await Promise.all([
    run(['--help']),
    run(['ask', '--help']),
    run(['start'], { BITAD_QUEUE_CAPACITY: 'lots' }),
  ]);
  t.match(help.out, /Commands:[\s\S]*start[\s\S]*ask[\s\S]*status[\s\S]*stats[\s\S]*generate/);
  t.match(askHelp.out, /Usage: bitad ask/);
  t.equal(bad.code, 2);
  t.match(bad.err, /queue\.capacity: must be integer \(from BITAD_QUEUE_CAPACITY\)/);
});
