/**
 * An engine that never settles a call (stuck in native code): deadlines are still answered on
 * time, the supervisor replaces the engine once it ignores an abort, and stop() stays bounded.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { SocketClient } from '../../src/cli/socket-client.js';
import { buildConfig } from '../../src/daemon/config/load.js';
import { Controller } from '../../src/daemon/controller.js';
import type { Engine, EngineInfo, GenerateResult } from '../../src/engine/types.js';
import { FakeEngine } from './helpers/fake-engine.js';
import { stubInfo } from './helpers/engine-info.js';

const dir = mkdtempSync(join(tmpdir(), 'bitad-hang-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** Takes every call and never settles it, whatever its signal says. */
class HangingEngine implements Engine {
  calls = 0;
  closed = false;
  info(): EngineInfo {
    return { ...stubInfo('hanging'), contextLength: 64 };
  }
  setTreeBudget(): void {}
  setTreePolicy(): void {}
  setLoad(): void {}
  generate(): Promise<GenerateResult> {
    this.calls++;
    return new Promise(() => undefined);
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

async function boot(name: string, engines: Engine[], drainMs = 2000) {
  const cfg = buildConfig(
    { data_dir: join(dir, name), mqtt: { enabled: false }, telemetry: { enabled: false }, lifecycle: { drain_timeout_ms: drainMs }, log: { level: 'silent' } },
    { env: {} },
  );
  let i = 0;
  const c = new Controller(cfg, { engineFactory: async () => engines[Math.min(i++, engines.length - 1)], log: pino({ level: 'silent' }) });
  await c.start();
  return { c, client: await SocketClient.connect(cfg.socket.path) };
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, sleep(ms).then(() => Promise.reject(new Error(`${what}: nothing within ${ms} ms`)))]);
}

t.test('a request with deadline_ms gets deadline_exceeded on time even when the engine never settles', async (t) => {
  const hanging = new HangingEngine();
  const { c, client } = await boot('deadline', [hanging, new FakeEngine()], 300);
  t.teardown(async () => {
    client.close();
    await c.stop();
  });
  const t0 = performance.now();
  const r = await within(client.request('generate', { transaction: 'd', prompt: 'hello', max_tokens: 4, deadline_ms: 300 }), 2000, 'deadline reply');
  const ms = performance.now() - t0;
  t.match(r, { transaction: 'd', status: 'error', error: { code: 'deadline_exceeded' } });
  t.ok(ms >= 290 && ms < 800, `answered after ${Math.round(ms)} ms (deadline 300 ms)`);
  t.equal(hanging.calls, 1, 'the engine had taken the call');
});

t.test('an engine that ignores an abort is replaced, and the next request runs on the new one', async (t) => {
  const hanging = new HangingEngine();
  const { c, client } = await boot('replace', [hanging, new FakeEngine()]);
  t.teardown(async () => {
    client.close();
    await c.stop();
  });
  await within(client.request('generate', { transaction: 'h', prompt: 'hello', max_tokens: 4, deadline_ms: 100 }), 2000, 'deadline reply');
  // The slot stays taken until the supervisor gives the hung engine up (abort grace 2 s) and the
  // restart (0.5 s) loads the next engine.
  const next = await within(client.request('generate', { transaction: 'n', prompt: 'hello', max_tokens: 4 }), 6000, 'next request');
  t.match(next, { transaction: 'n', status: 'ok' });
  t.ok(hanging.closed, 'the hung engine was closed');
  t.match((c.health().components as Record<string, unknown>).engine, { status: 'ok', restarts: 1 });
});

t.test('stop() completes within the drain timeout while the engine hangs', async (t) => {
  const { c, client } = await boot('stop', [new HangingEngine()], 500);
  const running = client.request('generate', { transaction: 'r', prompt: 'hello', max_tokens: 4 });
  const queued = client.request('generate', { transaction: 'q', prompt: 'hello', max_tokens: 4 });
  await sleep(50);
  const t0 = performance.now();
  await within(c.stop(), 3000, 'stop');
  const ms = performance.now() - t0;
  t.ok(ms < 500 + 1500, `stopped in ${Math.round(ms)} ms (drain timeout 500 ms)`);
  t.match(await within(running, 1000, 'running reply'), { transaction: 'r', error: { code: 'shutting_down' } });
  t.match(await within(queued, 1000, 'queued reply'), { transaction: 'q', error: { code: 'shutting_down' } });
  client.close();
});
