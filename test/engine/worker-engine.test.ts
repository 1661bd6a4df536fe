/**
 * WorkerEngine over a model-free stand-in worker: what the main thread does when its worker dies
 * or will not stop. (The real worker is killed in test/daemon/engine-death.test.ts.)
 */
import t from 'tap';
import { Worker } from 'node:worker_threads';
import { setTimeout as sleep } from 'node:timers/promises';
import { WorkerEngine, TERMINATE_TIMEOUT_MS } from '../../src/engine/index.js';
import { SHARED_SLOTS } from '../../src/engine/protocol.js';
import { stubInfo } from '../daemon/helpers/engine-info.js';

const INFO = { ...stubInfo('stand-in'), contextLength: 64 };

/** Answers nothing; exits when told to (a crash), or busy-loops forever when told to (a hang). */
const STAND_IN = `
const { parentPort } = require('node:worker_threads');
parentPort.on('message', (m) => {
  if (m.type !== 'generate') return;
  if (m.req.prompt === 'crash') setTimeout(() => process.exit(7), 20);
  if (m.req.prompt === 'hang') for (;;) {}
});
`;

function engine(): WorkerEngine {
  return new WorkerEngine(new Worker(STAND_IN, { eval: true }), new Int32Array(new SharedArrayBuffer(SHARED_SLOTS * 4)), INFO);
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, sleep(ms).then(() => Promise.reject(new Error(`${what}: not settled within ${ms} ms`)))]);
}

t.test('a worker that exits fails its in-flight call, reports its death once, and later calls are refused at once', async (t) => {
  const e = engine();
  t.teardown(() => e.close());
  const deaths: string[] = [];
  e.onDeath((reason) => deaths.push(reason));
  const inFlight = e.generate({ prompt: 'crash' });
  await t.rejects(within(inFlight, 2000, 'in-flight call'), { code: 'model_error', message: /exited \(code 7\)/ });
  await t.rejects(within(e.generate({ prompt: 'later' }), 100, 'later call'), { code: 'model_error' }, 'refused, not posted to the dead worker');
  t.same(deaths, ['engine worker exited (code 7)']);
});

t.test('close() fails the call and is bounded while the worker spins in a loop it never leaves (cancel ignored)', async (t) => {
  const e = engine();
  const failed = t.rejects(e.generate({ prompt: 'hang' }), { code: 'model_error', message: 'engine is closed' }, 'its call was failed');
  await sleep(50);
  const t0 = performance.now();
  await within(e.close(), TERMINATE_TIMEOUT_MS + 1500, 'close');
  t.ok(performance.now() - t0 < TERMINATE_TIMEOUT_MS + 1000, `closed in ${Math.round(performance.now() - t0)} ms`);
  await failed;
});
