/**
 * Start-up faults found before the model loads (a listening port taken, a live daemon on
 * socket.path), the same messages when the real bind loses a race after that check, how a failed
 * start is logged, and SIGHUP (no reload: the daemon keeps running).
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { SocketClient } from '../../src/cli/socket-client.js';
import { buildConfig, PACKAGE_ROOT } from '../../src/daemon/config/load.js';
import { Controller } from '../../src/daemon/controller.js';
import { FakeEngine } from './helpers/fake-engine.js';

const dir = mkdtempSync(join(tmpdir(), 'bitad-startup-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const silent = pino({ level: 'silent' });

/** A listener holding a port on 127.0.0.1 (or a Unix socket path), as another process would. */
async function occupy(where: number | string = 0): Promise<Server> {
  const s = createServer((c) => c.destroy());
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    if (typeof where === 'string') s.listen(where, resolve);
    else s.listen(where, '127.0.0.1', resolve);
  });
  return s;
}
const portOf = (s: Server) => (s.address() as AddressInfo).port;
const close = (s: Server) => new Promise<void>((r) => s.close(() => r()));

/** A controller with the FakeEngine whose factory says whether the model was loaded (and may act then). */
function controller(name: string, input: Record<string, unknown>, onLoad: () => unknown = () => undefined, log = silent) {
  const cfg = buildConfig({ data_dir: join(dir, name), telemetry: { enabled: false }, log: { level: 'silent' }, ...input }, { env: {} });
  const seen = { loaded: false };
  const c = new Controller(cfg, {
    engineFactory: async () => {
      seen.loaded = true;
      await onLoad();
      return new FakeEngine();
    },
    log,
  });
  return { c, cfg, seen };
}

t.test('a taken port fails the start before the model loads, naming the setting', async (t) => {
  const held = await occupy();
  t.teardown(() => close(held));
  const port = portOf(held);
  const broker = controller('port-broker', { mqtt: { port } });
  await t.rejects(broker.c.start(), {
    message: `embedded MQTT broker: port ${port} on 127.0.0.1 is in use (another bitad or broker?): set mqtt.port or stop the other process`,
  });
  t.notOk(broker.seen.loaded, 'the model was not loaded');
  t.equal(broker.c.state, 'stopped');
  const metrics = controller('port-metrics', { mqtt: { enabled: false }, metrics: { enabled: true, port } });
  await t.rejects(metrics.c.start(), {
    message: `metrics endpoint: port ${port} on 127.0.0.1 is in use (another bitad?): set metrics.port or stop the other process`,
  });
  t.notOk(metrics.seen.loaded, 'the model was not loaded');
  t.notOk(existsSync(metrics.cfg.socket.path), 'no socket left behind');
});

t.test('a live daemon on socket.path fails a second start before its model loads, and keeps serving', async (t) => {
  const first = controller('sock', { mqtt: { enabled: false } });
  await first.c.start();
  t.teardown(() => first.c.stop());
  const second = controller('sock', { mqtt: { enabled: false } });
  await t.rejects(second.c.start(), { message: `socket.path: ${first.cfg.socket.path} is in use by another process (another bitad?): set socket.path or stop the other process` });
  t.notOk(second.seen.loaded, 'the model was not loaded');
  const s = await SocketClient.connect(first.cfg.socket.path);
  t.match(await s.request('health', {}), { status: 'ok' }, 'the first daemon still answers on its socket');
  s.close();
});

t.test('a bind that loses the race after the check fails with the same message', async (t) => {
  const free = await occupy();
  const port = portOf(free);
  await close(free);
  let thief: Server | null = null;
  t.teardown(() => thief && close(thief));
  const broker = controller('race-broker', { mqtt: { port } }, async () => (thief = await occupy(port)));
  await t.rejects(broker.c.start(), { message: new RegExp(`^embedded MQTT broker: port ${port} on 127\\.0\\.0\\.1 is in use .*: set mqtt\\.port or stop the other process$`) });
  t.ok(broker.seen.loaded, 'the check passed; the bind after the load lost');
  let sockThief: Server | null = null;
  t.teardown(() => sockThief && close(sockThief));
  const sock = controller('race-sock', { mqtt: { enabled: false } }, async () => (sockThief = await occupy(sock.cfg.socket.path)));
  await t.rejects(sock.c.start(), { message: /^socket\.path: .* is in use by another process .*: set socket\.path or stop the other process$/ });
});

/** Log lines a controller wrote at `level`, parsed. */
function capture() {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l));
      done();
    },
  });
  return { log: pino({ level: 'info' }, sink), at: (level: number) => lines.filter((l) => l.level === level) };
}

t.test('a failed start is one error line: no stack for a classified fault, the stack for an unexpected one', async (t) => {
  const held = await occupy();
  t.teardown(() => close(held));
  const classified = capture();
  await t.rejects(controller('log-port', { mqtt: { port: portOf(held) } }, undefined, classified.log).c.start());
  const [line, ...more] = classified.at(50);
  t.same(more, [], 'one error line');
  t.match(line, { msg: /^start failed/, setting: 'mqtt.port', reason: /is in use/ });
  t.notMatch(JSON.stringify(line), /"stack"/, 'no stack for a port in use');
  const unexpected = capture();
  await t.rejects(controller('log-boom', { mqtt: { enabled: false } }, () => Promise.reject(new Error('boom')), unexpected.log).c.start(), { message: 'boom' });
  t.match(unexpected.at(50), [{ msg: /^start failed/, err: { message: 'boom', stack: /Error: boom/ } }], 'the stack of an unexpected error');
});

/** Runs `entry` (the CLI or the model-free launcher) as its own process. */
function launch(entry: string, args: string[], env: NodeJS.ProcessEnv = {}) {
  const p = spawn(process.execPath, ['--import', 'tsx', join(PACKAGE_ROOT, entry), ...args], { env: { ...process.env, ...env } });
  const out = { stdout: '', stderr: '' };
  p.stdout.on('data', (d) => (out.stdout += d));
  p.stderr.on('data', (d) => (out.stderr += d));
  const exited = new Promise<number | null>((r) => p.on('exit', (c) => r(c)));
  return { p, out, exited };
}

t.test('bitad start with the broker port taken: exit 1 before the model load, one human line on stderr', async (t) => {
  const held = await occupy();
  t.teardown(() => close(held));
  const port = portOf(held);
  // No model at this path: the start must fail on the port before it would look for one.
  const env = { BITAD_CONFIG: '', BITAD_DATA_DIR: join(dir, 'cli-port'), BITAD_MQTT_PORT: String(port), BITAD_MODEL_PATH: join(dir, 'no-model') };
  const { out, exited } = launch('src/cli/main.ts', ['start'], env);
  t.equal(await exited, 1, out.stderr);
  t.equal(out.stderr, `bitad: embedded MQTT broker: port ${port} on 127.0.0.1 is in use (another bitad or broker?): set mqtt.port or stop the other process\n`);
  t.notMatch(out.stdout, /"stack"/, 'the JSON log has no stack for it');
  t.match(out.stdout, /"level":50.*"setting":"mqtt\.port"/);
});

t.test('SIGHUP does not stop the daemon: a warning, still serving; SIGTERM then exits 0', async (t) => {
  const file = join(dir, 'hup.yaml');
  writeFileSync(file, `node_id: hup\ndata_dir: ${dir}/hup\nmqtt: { enabled: false }\ntelemetry: { enabled: false }\n`);
  const { p, out, exited } = launch('test/daemon/helpers/fake-daemon.ts', ['--config', file]);
  t.teardown(() => p.kill('SIGKILL'));
  for (let i = 0; i < 500 && !out.stdout.includes('bitad ready'); i++) await sleep(20);
  p.kill('SIGHUP');
  for (let i = 0; i < 100 && !out.stdout.includes('SIGHUP'); i++) await sleep(20);
  t.match(out.stdout, /"level":40.*"signal":"SIGHUP".*"msg":"SIGHUP: reload is not supported; restart bitad to apply configuration changes"/);
  t.same([p.exitCode, p.signalCode], [null, null], 'still running');
  const s = await SocketClient.connect(join(dir, 'hup/bitad.sock'));
  t.match(await s.request('health', {}), { status: 'ok' }, 'still answers');
  s.close();
  p.kill('SIGTERM');
  t.equal(await exited, 0, 'SIGTERM exits 0');
  t.notOk(existsSync(join(dir, 'hup/bitad.sock')), 'socket removed');
});
