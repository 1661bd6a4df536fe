/**
 * EngineSupervisor with model-free engines that can "die": restart backoff, calls made while it
 * restarts, health, and the systemd watchdog giving up on an engine that does not come back.
 */
import t from 'tap';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { buildConfig } from '../../src/daemon/config/load.js';
import { Controller } from '../../src/daemon/controller.js';
import { EngineSupervisor } from '../../src/daemon/engine-supervisor.js';
import { SystemdNotifier } from '../../src/daemon/lifecycle/notify.js';
import { FakeEngine } from './helpers/fake-engine.js';

const silent = pino({ level: 'silent' });
const dir = mkdtempSync(join(tmpdir(), 'bitad-sup-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** A FakeEngine whose death the test triggers (as a worker's exit would be reported). */
class MortalEngine extends FakeEngine {
  private readonly listeners: ((reason: string) => void)[] = [];
  onDeath(l: (reason: string) => void): void {
    this.listeners.push(l);
  }
  die(reason: string): void {
    for (const l of this.listeners) l(reason);
  }
}

t.test('failed restarts are retried with doubling delays up to the ceiling, and a call made meanwhile runs on the new engine', async (t) => {
  const first = new MortalEngine({ chunkDelayMs: 0 });
  const loads: number[] = [];
  const failuresBeforeSuccess = 5;
  const sup = new EngineSupervisor({
    log: silent,
    initialBackoffMs: 40,
    maxBackoffMs: 100,
    load: async () => {
      loads.push(performance.now());
      if (loads.length === 1) return first;
      if (loads.length <= 1 + failuresBeforeSuccess) throw new Error('package missing');
      return new FakeEngine({ chunkDelayMs: 0 });
    },
  });
  await sup.start();
  t.teardown(() => sup.close());
  const diedAt = performance.now();
  first.die('engine worker exited (code 1)');
  t.match(sup.health(), { status: 'down', reason: /engine worker exited/, restarts: 0 });
  const waiting = sup.generate({ prompt: 'once upon', maxTokens: 3 });
  const aborted = new AbortController();
  const cancelled = sup.generate({ prompt: 'once', maxTokens: 3 }, { signal: aborted.signal });
  await sleep(50);
  t.match(sup.health(), { status: 'down', reason: /restart failed: package missing/ }, 'health says why it is still down');
  aborted.abort();
  await t.rejects(cancelled, { code: 'cancelled' }, 'a call whose signal aborts while waiting ends at once');
  const r = await waiting;
  t.equal(r.tokens.length, 3, 'the waiting call ran on the restarted engine');
  const gaps = [loads[1] - diedAt, ...loads.slice(2).map((x, i) => x - loads[i + 1])];
  t.equal(gaps.length, failuresBeforeSuccess + 1);
  // Timers never fire early: lower bounds are exact. 40, 80, then capped at 100 (uncapped: 160, 320, 640).
  [40, 80, 100, 100, 100, 100].forEach((min, i) => t.ok(gaps[i] >= min - 1, `attempt ${i + 1} after ${Math.round(gaps[i])} ms (>= ${min})`));
  t.ok(gaps[5] < 400, `the ceiling holds: last gap ${Math.round(gaps[5])} ms, uncapped it would be 640`);
  t.match(sup.health(), { status: 'ok', restarts: 1 });
});

t.test('the watchdog is withheld once the engine has been down longer than engine_stall_ms', async (t) => {
  const log = join(dir, 'notify.log');
  const fake = join(dir, 'systemd-notify');
  writeFileSync(fake, `#!/bin/sh\necho "$*" >> ${log}\n`);
  chmodSync(fake, 0o755);
  const notifier = new SystemdNotifier(silent, { NOTIFY_SOCKET: '/run/fake', WATCHDOG_USEC: '100000' }, fake);
  const cfg = buildConfig({ data_dir: join(dir, 'wd'), mqtt: { enabled: false }, telemetry: { enabled: false }, lifecycle: { engine_stall_ms: 1000, drain_timeout_ms: 0 }, log: { level: 'silent' } }, { env: {} });
  const first = new MortalEngine();
  let n = 0;
  const c = new Controller(cfg, {
    engineFactory: async () => {
      if (n++ === 0) return first;
      throw new Error('package missing');
    },
    log: silent,
    notifier,
  });
  await c.start();
  t.teardown(() => c.stop());
  const pings = () => readFileSync(log, 'utf8').split('\n').filter((l) => l === 'WATCHDOG=1').length;
  await sleep(200);
  first.die('engine worker exited (code 1)');
  await sleep(150); // down, but for less than engine_stall_ms: still pinging
  t.ok(c.engineAlive(), 'down for less than engine_stall_ms still counts as alive');
  await sleep(1000);
  t.notOk(c.engineAlive(), 'down for longer than engine_stall_ms');
  await sleep(150); // a ping spawned just before may still be writing
  const from = pings();
  await sleep(300);
  t.equal(pings(), from, 'no WATCHDOG=1 while the engine stays down');
  t.match(c.health(), { state: 'degraded', engine_responsive: false, components: { engine: { status: 'down', reason: /restart failed: package missing/ } } });
});

t.test('finished calls are not kept alive by the supervisor (no per-request retention)', async (t) => {
  // The soak bench saw the heap grow with every request: each call raced the engine's long-lived
  // "lost" promise, which kept a reaction, and through it the call's result, until the engine died.
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const sup = new EngineSupervisor({ log: silent, load: async () => new FakeEngine({ chunkDelayMs: 0 }) });
  await sup.start();
  t.teardown(() => sup.close());
  const refs: WeakRef<object>[] = [];
  for (let i = 0; i < 50; i++) refs.push(new WeakRef(await sup.generate({ prompt: 'once upon', maxTokens: 2 })));
  await sleep(10);
  gc();
  await sleep(10);
  gc();
  t.equal(refs.filter((r) => r.deref() !== undefined).length, 0, 'every result was collected');
});
