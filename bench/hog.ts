/**
 * A CPU-hog neighbour for bench/load.ts: a child process that does fixed arithmetic work units in
 * a loop and, when asked over IPC, reports how many it has completed. Its work rate while the
 * daemon decodes is "how much the daemon slowed its neighbour".
 * Forked by bench/hog-pool.ts; it only runs as a forked child (it needs the IPC channel).
 */
import { performance } from 'node:perf_hooks';
import type { HogCount } from './hog-pool.js';

/** One work unit: a fixed number of dependent float operations (about 0.05 ms on a 2020s x86 core). */
const UNIT_ITERATIONS = 20_000;

/**
 * The work itself. Dependent multiply-adds that V8 cannot fold away (the result feeds the next
 * unit), so a unit costs the same CPU time whatever else runs: fewer units means less CPU obtained.
 */
function workUnit(seed: number): number {
  let x = seed;
  for (let i = 0; i < UNIT_ITERATIONS; i++) x = (x * 1.000_000_1 + 0.5) % 1000.5;
  return x;
}

/**
 * Works in slices of this many ms between event-loop turns, so a count request waits at most this
 * long; short against the bench's windows (hundreds of ms), long against one unit.
 */
const SLICE_MS = 2;

function run(): void {
  let units = 0;
  let x = 1;
  const slice = () => {
    const end = performance.now() + SLICE_MS;
    while (performance.now() < end) {
      x = workUnit(x);
      units++;
    }
    setImmediate(slice);
  };
  process.on('message', (m: unknown) => {
    if (m === 'count') process.send?.({ type: 'count', units, ms: performance.now() } satisfies HogCount);
    else if (m === 'stop') process.exit(0);
  });
  // The parent died without telling us: a hog must never outlive its bench.
  process.on('disconnect', () => process.exit(0));
  slice();
}

if (process.send) run();
else {
  console.error('bench/hog.ts is forked by bench/load.ts (it reports over IPC); nothing to do standalone');
  process.exit(2);
}
