import t from 'tap';
import { bestBudget, GainCurve, rateAt, StepCost } from '../../../src/engine/sizing/index.js';

const byRows = (f: (r: number) => number, n = 64) => Float64Array.from({ length: n + 1 }, (_, r) => (r === 0 ? NaN : f(r)));
const ROWS = Int32Array.from({ length: 64 }, (_, i) => i + 1);
const cost = byRows((r) => 0.5 + 0.01 * r);
const gain = byRows((r) => 1 + 3 * (1 - Math.exp(-(r - 1) / 10)));

t.test('bestBudget is pure: same input, same output, inputs untouched', async (t) => {
  const c0 = cost.slice();
  const g0 = gain.slice();
  for (const policy of ['throughput', 'neighbourly'] as const) {
    const a = bestBudget(ROWS, cost, gain, policy, 0.08);
    t.equal(bestBudget(ROWS, cost, gain, policy, 0.08), a, policy);
  }
  t.same(cost, c0);
  t.same(gain, g0);
});

t.test('throughput is the brute-force argmax; neighbourly the smallest within the loss', async (t) => {
  let best = 1;
  for (let r = 1; r <= 64; r++) if (rateAt(cost, gain, r) > rateAt(cost, gain, best)) best = r;
  t.equal(bestBudget(ROWS, cost, gain, 'throughput'), best);
  const n = bestBudget(ROWS, cost, gain, 'neighbourly', 0.08);
  t.ok(n < best, `neighbourly ${n} < throughput ${best}`);
  t.ok(rateAt(cost, gain, n) >= 0.92 * rateAt(cost, gain, best));
  t.ok(rateAt(cost, gain, n - 1) < 0.92 * rateAt(cost, gain, best), 'one smaller is outside the band');
  t.equal(bestBudget(ROWS, cost, gain, 'neighbourly', 0), best, 'zero loss is throughput');
  t.equal(bestBudget([1], cost, gain, 'throughput'), 1);
  t.throws(() => bestBudget([], cost, gain, 'throughput'));
});

t.test('StepCost interpolates, stays monotone, learns the cached slope and follows a change', async (t) => {
  const c = new StepCost(64, 200);
  t.notOk(c.ready);
  for (let i = 0; i < 20; i++) {
    c.observe(4, 100, 1.0);
    c.observe(16, 100, 2.0);
    c.observe(8, 100, 0.9); // noisy bucket below its smaller neighbour: pooled
  }
  t.ok(c.ready);
  t.ok(Math.abs(c.at(10, 100) - c.at(8, 100) - (c.at(16, 100) - c.at(8, 100)) / 4) < 1e-9, 'linear between points');
  const out = new Float64Array(65);
  c.predict(100, out, 1, 64);
  for (let r = 2; r <= 64; r++) t.ok(out[r] >= out[r - 1], `monotone at ${r}`);
  t.ok(out[64] > out[16], 'grows past the last measured size');
  // Cached slope: 1 ms + 0.004 ms per cached token at 32 rows; a size seen at one length only
  // (calibration) borrows the shared trend.
  const s = new StepCost(64, 200);
  for (let cached = 0; cached <= 400; cached += 10) s.observe(32, cached, 1 + 0.004 * cached);
  s.observe(48, 0, 1.5);
  t.ok(Math.abs(s.at(32, 400) - 2.6) < 0.05, `at 400 cached: ${s.at(32, 400).toFixed(2)}`);
  t.ok(s.at(48, 400) > 2.6, `a size calibrated at 0 cached grows too: ${s.at(48, 400).toFixed(2)}`);
  // Follow a change: 3 half-lives at the new level.
  for (let i = 0; i < 600; i++) c.observe(4, 100, 3.0);
  t.ok(Math.abs(c.at(4, 100) - 3) < 0.3, `after the change: ${c.at(4, 100).toFixed(2)}`);
  t.ok(c.weight(4) > 100 && c.weight(5) < c.weight(4), 'weights');
});

t.test('GainCurve: g(1) = 1, the builder shape, calibrated by what is committed', async (t) => {
  const g = new GainCurve(64, 200, 8);
  t.equal(g.at(10), 1, 'no curve yet');
  const cum = byRows((r) => 1 + 2 * (1 - Math.exp(-(r - 1) / 5)));
  g.recordCurve(cum, 64);
  t.equal(g.at(1), 1);
  t.ok(Math.abs(g.at(10) - cum[10]) < 1e-9, 'uncalibrated: the builder curve');
  // The builder is 2x over-optimistic: real steps commit 1 + half its excess.
  for (let i = 0; i < 2000; i++) g.observe(10, 1 + (cum[10] - 1) / 2);
  t.ok(Math.abs(g.calibration - 0.5) < 0.01, `calibration ${g.calibration.toFixed(3)}`);
  t.ok(Math.abs(g.at(20) - (1 + (cum[20] - 1) / 2)) < 0.02);
  t.equal(g.at(1), 1);
  g.recordCurve(cum, 5);
  const out = new Float64Array(65);
  g.fill(out, 1, 64);
  for (let r = 2; r <= 64; r++) t.ok(out[r] >= out[r - 1]);
});

t.test('StepCost: after a level shift, a size seen only on probes does not keep its stale cost', async (t) => {
  // A hog stops: every step gets 2.2x cheaper. Busy, the sizer ran 8 rows; soon after, it runs 6 and sees
  // 8 on a probe every 64 steps. 8's estimate, built from thousands of busy steps, kept the busy level
  // long after: 8 looked far dearer than 6 (in the sizer's simulation it stayed at 6 rows, 92 % of
  // the best, where 8 was best).
  const c = new StepCost(32, 200);
  const truth = (rows: number, level: number) => level * (0.5 + 0.01 * rows);
  let i = 0;
  const run = (steps: number, level: number, main: number, probe: number) => {
    for (let s = 0; s < steps; s++, i++) {
      const rows = i % 64 === 0 ? probe : main;
      c.observe(rows, 50, truth(rows, level) * (1 + 0.1 * Math.sin(i * 12.9898)));
    }
  };
  run(3000, 2.2, 8, 6); // busy at 8 rows
  run(60, 1, 8, 6); // the hog stops; the sizer has not moved yet
  run(400, 1, 6, 8); // calm at 6 rows
  const off8 = c.at(8, 50) / truth(8, 1);
  const off6 = c.at(6, 50) / truth(6, 1);
  t.ok(Math.abs(off6 - 1) < 0.15, `6 rows (in use) within 15 % of the new level: ${off6.toFixed(2)}`);
  t.ok(Math.abs(off8 - 1) < 0.15, `8 rows (probes only) within 15 % of the new level: ${off8.toFixed(2)}`);
  t.ok(Math.abs(off8 / off6 - 1) < 0.05, `the two agree on the level within 5 %: ${(off8 / off6).toFixed(3)}`);
});

t.test('StepCost on a contended core: preempted samples are clipped tightly, so a few of them cannot set a size apart', async (t) => {
  // Two sizes with the same true ratio (1 : 1.5); 8 rows sees preemptions (a 3 ms slice on 0.5 ms
  // steps, 1 step in 4), 6 rows happens to see none among its few samples. Uncontended, 8 rows looks
  // 2.7x dearer than 6; contended, the tight clip leaves that at most 1.5 x 1.5.
  const preempted = (i: number) => i % 4 === 0;
  const build = (contended: boolean) => {
    const c = new StepCost(16, 200);
    c.sensed(); // the board is read (as in the daemon): staleness comes from it
    c.contended(contended);
    for (let i = 0; i < 400; i++) c.observe(8, 40, 0.75 + (preempted(i) ? 3 : 0));
    for (let i = 0; i < 6; i++) c.observe(6, 40, 0.5);
    return c.at(8, 40) / c.at(6, 40);
  };
  const loose = build(false);
  const tight = build(true);
  t.ok(loose > 2.5, `uncontended (GC pauses are rare there): the mean, 8 rows ${loose.toFixed(2)}x 6 rows`);
  t.ok(tight < 2.25 && tight > 1.5, `contended: 8 rows ${tight.toFixed(2)}x 6 rows`);
  // The flag follows the board: back to the loose clip, new samples count in full again.
  const c = new StepCost(16, 200);
  c.contended(true);
  c.contended(false);
  for (let i = 0; i < 100; i++) c.observe(4, 0, 1);
  c.observe(4, 0, 3.5);
  t.ok(c.at(4, 0) > 1.02, `a 3.5x sample counts uncontended: ${c.at(4, 0).toFixed(3)}`);
});

t.test("StepCost clips a sample even where its size's cached-length trend extrapolates below zero", async (t) => {
  // A steep fitted trend (1 ms at 100 cached, 3 ms at 200) puts the estimate at 0 cached below 0;
  // the clip must still hold there (around the size's mean), or one 1 s stall enters whole.
  const c = new StepCost(16, 200);
  for (let i = 0; i < 200; i++) c.observe(4, i % 2 ? 200 : 100, i % 2 ? 3 : 1);
  const before = c.at(4, 150);
  c.observe(4, 0, 1000);
  const after = c.at(4, 150);
  t.ok(after < before * 1.2, `a 1000 ms sample at 0 cached: estimate at 150 cached ${before.toFixed(2)} → ${after.toFixed(2)} ms`);
});
