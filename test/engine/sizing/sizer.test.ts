import t from 'tap';
import type { BoardLoad } from '../../../src/engine/load.js';
import { TreeSizer, type TreeSizerConfig } from '../../../src/engine/sizing/index.js';

// --- A simulated engine: true step cost and gain, noisy measurements, a seeded PRNG. ---

/** mulberry32: small, seeded, deterministic. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** Piecewise-linear cost from a measured table (rows → ms). */
function table(points: Array<[number, number]>): (r: number) => number {
  return (r) => {
    for (let i = 1; i < points.length; i++) {
      const [r0, t0] = points[i - 1];
      const [r1, t1] = points[i];
      if (r <= r1) return t0 + ((Math.max(r, r0) - r0) / (r1 - r0)) * (t1 - t0);
    }
    return points[points.length - 1][1];
  };
}

// The step costs measured in the brief (ms): a 0.26 M model and a 15 M model with vocab 32000.
const SMALL = table([[1, 0.49], [4, 0.47], [8, 0.51], [16, 0.61], [32, 0.82], [64, 1.1]]);
const LARGE = table([[1, 2.89], [4, 3.52], [8, 3.86], [16, 5.47], [32, 8.86], [64, 15.6]]);
const LINEAR = (r: number) => 1 + 0.05 * r;

/** Concave gain saturating at depth `s`: g(r) = 1 + A (1 - e^{-(r-1)/s}). */
const saturating = (A: number, s: number) => (r: number) => 1 + A * (1 - Math.exp(-(r - 1) / s));

interface World {
  /** True mean step ms at `rows` with `cached` tokens in the cache. */
  cost: (rows: number, cached: number) => number;
  /** True mean committed tokens per step. */
  gain: (rows: number) => number;
  /** What the tree builder predicts (may be biased). */
  curve: (rows: number) => number;
}

function world(base: (r: number) => number, gain: (r: number) => number, builderBias = 1): World {
  return {
    // Attention grows with rows × cached: +25 % at 64 rows and 400 cached, plus a little per token.
    cost: (r, c) => base(r) * (1 + (0.25 * r * c) / (64 * 400) + c / 4000),
    gain,
    curve: (r) => 1 + builderBias * (gain(r) - 1),
  };
}

function poisson(rng: () => number, mean: number): number {
  const limit = Math.exp(-mean);
  let k = 0;
  for (let p = rng(); p > limit; p *= rng()) k++;
  return k;
}

const CALIBRATION_ROWS = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64];

class Sim {
  readonly rng: () => number;
  readonly sizer: TreeSizer;
  cached = 20;
  steps = 0;
  private readonly cum = new Float64Array(65);

  /**
   * Contention (set by contend()): a step of b ms is preempted with probability 1 - e^(-b/tau) and
   * then waits a time slice of 0.5–1.5 x `slice` ms — CPU hogs on every core.
   */
  private contention: { base: (rows: number, cached: number) => number; tau: number; slice: number } | null = null;
  /**
   * Paced short requests (set by paced()): each starts at `from` cached tokens and ends past `to`;
   * its first steps run on the scheduler credit our thread earned while idle between requests, so
   * preemption grows from none to full over `creditSteps` steps, at every size alike.
   */
  private pacing: { from: number; to: number; creditSteps: number } | null = null;
  private stepInRequest = 0;

  /** tail: this share of steps is preempted, taking 1.5–4x as long (a busy board's scheduler, GC). */
  constructor(public w: World, config: Partial<TreeSizerConfig>, seed: number, public noise = 0.2, public tail = 0) {
    this.rng = prng(seed);
    this.sizer = new TreeSizer(config);
    for (const r of CALIBRATION_ROWS) for (let i = 0; i < 2; i++) this.sizer.calibrate(r, 0, this.ms(r, 0));
  }

  /** Switches to a contended board: w.cost becomes the expected cost, preemption included. */
  contend(base: (rows: number) => number, tau: number, slice: number): void {
    const at = (r: number, c: number) => base(r) * (1 + (0.25 * r * c) / (64 * 400) + c / 4000);
    this.contention = { base: at, tau, slice };
    this.w = { ...this.w, cost: (r, c) => at(r, c) + (1 - Math.exp(-at(r, c) / tau)) * slice };
  }

  /** Short requests separated by idle gaps (see `pacing`). */
  paced(from: number, to: number, creditSteps: number): void {
    this.pacing = { from, to, creditSteps };
    this.cached = from;
  }

  ms(rows: number, cached: number): number {
    if (this.contention) {
      const { base, tau, slice } = this.contention;
      const b = base(rows, cached);
      const credit = this.pacing ? Math.min(1, this.stepInRequest / this.pacing.creditSteps) : 1;
      const preempted = this.rng() < credit * (1 - Math.exp(-b / tau)) ? slice * (0.5 + this.rng()) : 0;
      return b * (1 + this.noise * (2 * this.rng() - 1)) + preempted;
    }
    const preempted = this.tail > 0 && this.rng() < this.tail ? 1.5 + 2.5 * this.rng() : 1;
    return this.w.cost(rows, cached) * (1 + this.noise * (2 * this.rng() - 1)) * preempted;
  }

  /** Runs `n` steps; `each` sees the budget decided for every step (probe steps included). */
  run(n: number, load: BoardLoad | null = null, each?: (rows: number, sim: Sim) => void): void {
    for (let i = 0; i < n; i++) {
      if (this.steps % 8 === 0) {
        for (let r = 1; r <= 64; r++) this.cum[r] = this.w.curve(r);
        this.sizer.recordCurve(this.cum, 64);
      }
      const rows = this.sizer.next(this.cached, load);
      each?.(rows, this);
      const committed = 1 + poisson(this.rng, this.w.gain(rows) - 1);
      this.sizer.record(rows, this.cached, this.ms(rows, this.cached), committed);
      this.cached += committed;
      this.stepInRequest++;
      if (this.cached > (this.pacing?.to ?? 400)) {
        this.cached = this.pacing?.from ?? 20; // next request
        this.stepInRequest = 0;
      }
      this.steps++;
    }
  }

  /** True tokens/ms at `rows` over the best over 1..64, at the current cached length. */
  efficiency(rows: number): number {
    return this.rate(rows) / this.rate(this.bestRows());
  }

  rate(rows: number): number {
    return this.w.gain(rows) / this.w.cost(rows, this.cached);
  }

  bestRows(): number {
    let best = 1;
    for (let r = 2; r <= 64; r++) if (this.rate(r) > this.rate(best)) best = r;
    return best;
  }
}

/** Mean efficiency of the budget (sizer.state.rows, not probes) over `n` steps. */
function meanEfficiency(sim: Sim, n: number, load: BoardLoad | null = null): number {
  let sum = 0;
  sim.run(n, load, (_, s) => {
    sum += s.efficiency(s.sizer.state.rows);
  });
  return sum / n;
}

const SHAPES: Array<[string, World]> = [
  ['small model, drafts good to depth 4', world(SMALL, saturating(1.5, 4))],
  ['small model, deep drafts', world(SMALL, saturating(4, 30))],
  ['large model, shallow drafts', world(LARGE, saturating(1.2, 3))],
  ['large model, deep drafts', world(LARGE, saturating(3, 20))],
  ['linear cost, weak drafts', world(LINEAR, saturating(0.3, 2))],
  ['large model, builder 1.8x over-optimistic', world(LARGE, saturating(2, 8), 1.8)],
  ['small model, builder 0.6x pessimistic', world(SMALL, saturating(3, 12), 0.6)],
];

t.test('the throughput sizer lands within 5 % of the best budget found by brute force', async (t) => {
  for (const [name, w] of SHAPES) {
    for (const seed of [1, 2]) {
      const sim = new Sim(w, { policy: 'throughput' }, seed);
      sim.run(1500);
      const eff = meanEfficiency(sim, 1000);
      t.ok(eff >= 0.95, `${name} (seed ${seed}): ${(eff * 100).toFixed(1)} % of the best (rows ${sim.sizer.state.rows}, best ${sim.bestRows()})`);
    }
  }
});

t.test('heavy-tailed step times do not hold the budget at a worse size it started from', async (t) => {
  // Measured on the 2-core VM: the sizer stayed at 4–6 rows where fixed 8 ran 10–35 % faster. A size
  // seen only on probes has few samples, and preempted steps make their spread large, so the margin
  // a move must clear (its doubt) stayed near its cap. The fix probes such a size until it is sure.
  const worlds: Array<[string, World]> = [
    ['small model, drafts good to depth 4', world(SMALL, saturating(1.5, 4))],
    ['large model, drafts good to depth 6', world(LARGE, saturating(2, 6))],
  ];
  for (const [name, w] of worlds) {
    for (const start of [3, 24]) {
      const sim = new Sim(w, { policy: 'throughput', fixedRows: start }, 21, 0.15, 0.15);
      sim.run(2000);
      const eff = meanEfficiency(sim, 1000);
      t.ok(eff >= 0.95, `${name}, from ${start} rows: ${(eff * 100).toFixed(1)} % of the best (rows ${sim.sizer.state.rows}, best ${sim.bestRows()})`);
    }
  }
});

t.test('noisy stationary input does not make the budget oscillate', async (t) => {
  // ±20 % noise on every step's ms, Poisson committed tokens. Bound: 10 switches per 1000 steps.
  for (const [name, w] of SHAPES.slice(0, 4)) {
    const sim = new Sim(w, { policy: 'throughput' }, 7);
    sim.run(1000);
    const before = sim.sizer.state.changes;
    sim.run(3000);
    const per1000 = (sim.sizer.state.changes - before) / 3;
    t.ok(per1000 <= 10, `${name}: ${per1000.toFixed(1)} switches per 1000 steps`);
  }
});

t.test('a load change is followed within a bounded number of steps', async (t) => {
  const BOUND = 800; // 4 half-lives of the cost model
  const cases: Array<[string, World, World]> = [
    // Contention: big trees cost up to 3x (64 rows), a 1-row step the same.
    ['cost x3 for large rows', world(SMALL, saturating(3, 20)),
      world((r) => SMALL(r) * (1 + (2 * (r - 1)) / 63), saturating(3, 20))],
    ['cost x3 for large rows, large model', world(LARGE, saturating(3, 20)),
      world((r) => LARGE(r) * (1 + (2 * (r - 1)) / 63), saturating(3, 20))],
    // The text turns unpredictable: drafts stop matching beyond the first levels.
    ['gain curve shifts down', world(SMALL, saturating(4, 30)), world(SMALL, saturating(0.8, 3))],
    ['gain curve shifts up', world(LARGE, saturating(0.8, 3)), world(LARGE, saturating(3, 20))],
  ];
  for (const [name, w0, w1] of cases) {
    const sim = new Sim(w0, { policy: 'throughput' }, 11);
    sim.run(1500);
    const rowsBefore = sim.sizer.state.rows;
    sim.w = w1;
    let settled = -1;
    let step = 0;
    sim.run(2000, null, (_, s) => {
      const ok = s.efficiency(s.sizer.state.rows) >= 0.95;
      if (ok && settled < 0) settled = step;
      if (!ok && step < 1500) settled = -1; // must stay settled
      step++;
    });
    t.ok(settled >= 0 && settled <= BOUND, `${name}: rows ${rowsBefore} → ${sim.sizer.state.rows} (best ${sim.bestRows()}), within 5 % after ${settled} steps`);
  }
});

t.test('neighbourly picks a smaller tree than throughput, within the loss bound', async (t) => {
  for (const [name, w] of SHAPES) {
    const fast = new Sim(w, { policy: 'throughput' }, 3);
    const kind = new Sim(w, { policy: 'neighbourly' }, 3);
    fast.run(2000);
    kind.run(1500);
    const eff = meanEfficiency(kind, 500);
    const { rows } = kind.sizer.state;
    t.ok(rows <= fast.sizer.state.rows, `${name}: neighbourly ${rows} rows <= throughput ${fast.sizer.state.rows}`);
    // The loss bound is on predictions; 3 % more for prediction error.
    t.ok(eff >= 1 - 0.08 - 0.03, `${name}: ${(eff * 100).toFixed(1)} % of the best tokens/s`);
    t.equal(kind.sizer.state.active, 'neighbourly');
  }
});

const IDLE: BoardLoad = { othersCpu: 0.02, cores: 2, tempC: 50, throttled: false, gpuBusy: null, cpuPressure: null };
const load = (patch: Partial<BoardLoad>): BoardLoad => ({ ...IDLE, ...patch });
/** A hot board (auto turns neighbourly) that is also busy. */
const HOT = load({ othersCpu: 0.96, tempC: 80 });

t.test('auto turns neighbourly on a throttled or hot board, and back, with hysteresis; not on CPU load', async (t) => {
  const steps: Array<[string, BoardLoad, string]> = [
    ['idle', IDLE, 'throughput'],
    ['others at 96 %', load({ othersCpu: 0.96 }), 'throughput'],
    ['others at 96 %, tasks wait half the time', load({ othersCpu: 0.96, cpuPressure: 0.5 }), 'throughput'],
    ['throttled', load({ throttled: true }), 'neighbourly'],
    ['not throttled', IDLE, 'throughput'],
    ['76 °C', load({ tempC: 76 }), 'neighbourly'],
    ['72 °C (within 5 °C of hot)', load({ tempC: 72 }), 'neighbourly'],
    ['69 °C', load({ tempC: 69 }), 'throughput'],
    ['no reading: keep', IDLE, 'throughput'],
  ];
  const sim = new Sim(world(SMALL, saturating(3, 20)), { policy: 'auto' }, 5);
  for (const [what, l, active] of steps) {
    sim.run(50, what.startsWith('no reading') ? null : l);
    t.equal(sim.sizer.state.active, active, what);
    t.equal(sim.sizer.state.policy, 'auto');
  }
  sim.run(5, load({ tempC: 80 }));
  t.match(sim.sizer.state.reason, /^auto→neighbourly: CPU at 80 °C \(hot from 75 °C\); \d+ rows?, predicted [\d.]+ tok\/step at [\d.]+ ms$/);
  sim.run(5, load({ throttled: true }));
  t.match(sim.sizer.state.reason, /board throttled/);
});

t.test('a hot board drives auto to smaller trees, and a cool one back', async (t) => {
  for (const [name, base] of [['small', SMALL], ['large', LARGE]] as const) {
    const calm = world(base, saturating(3, 20));
    // Contention inflates every step, the wider ones more (they wait on more shared memory traffic).
    const busy = world((r) => base(r) * 2 * (1 + r / 32), saturating(3, 20));
    const sim = new Sim(calm, { policy: 'auto' }, 9);
    sim.run(1500, IDLE);
    const idleRows = sim.sizer.state.rows;
    t.equal(sim.sizer.state.active, 'throughput');
    sim.w = busy;
    sim.run(1500, HOT);
    const busyRows = sim.sizer.state.rows;
    t.equal(sim.sizer.state.active, 'neighbourly');
    // Not always strictly smaller: a shrink must be sure (see SHRINK_Z), and on the large model the
    // next size down is only ~3 % slower, within the doubt of a size seen on probes only.
    t.ok(busyRows <= idleRows, `${name}: ${idleRows} rows idle → ${busyRows} saturated`);
    // Neighbourly shrinks only to sizes surely in its band; sizes seen on probes only stay unsure.
    // Measured: 17 → 9 on the small model, where throughput's best under this load is 10 and the band
    // reaches down to 5 (before the cost model followed level shifts, a staler model gave 8).
    if (name === 'small') t.ok(busyRows <= idleRows * 0.6, `small model: at most 60 % of the idle tree (${busyRows} of ${idleRows})`);
    sim.w = calm;
    sim.run(1500, IDLE);
    t.equal(sim.sizer.state.active, 'throughput');
    const eff = meanEfficiency(sim, 200, IDLE);
    t.ok(eff >= 0.95, `${name}: back to ${sim.sizer.state.rows} rows when idle, ${(eff * 100).toFixed(1)} % of the best`);
  }
});

t.test('fixed never moves: no probes, no reaction to load or measurements', async (t) => {
  const sim = new Sim(world(LARGE, saturating(0.3, 2)), { policy: 'fixed', fixedRows: 24 }, 13);
  const seen = new Set<number>();
  sim.run(500, IDLE, (rows) => seen.add(rows));
  sim.run(500, load({ othersCpu: 1, throttled: true, tempC: 90 }), (rows) => seen.add(rows));
  t.same([...seen], [24]);
  t.equal(sim.sizer.state.changes, 0);
  t.equal(sim.sizer.state.active, 'fixed');
  t.equal(sim.sizer.state.reason, 'fixed: 24 rows');
});

t.test('before any measurement the sizer keeps the fixed budget', async (t) => {
  const sizer = new TreeSizer({ policy: 'throughput', fixedRows: 10 });
  t.equal(sizer.next(0, null), 10);
  sizer.calibrate(8, 0, 0.5);
  t.equal(sizer.next(0, null), 10, 'cost alone is not enough');
  t.match(sizer.state.reason, /until step costs and the gain curve are measured/);
});

t.test('probes visit neighbouring sizes only, and rarely', async (t) => {
  const sim = new Sim(world(SMALL, saturating(3, 20)), { policy: 'throughput', exploreEvery: 10 }, 17);
  sim.run(1000);
  let probes = 0;
  let far = 0;
  sim.run(1000, null, (rows, s) => {
    const cur = s.sizer.state.rows;
    if (rows === cur) return;
    probes++;
    if (rows > cur * 2 || rows < cur / 2) far++;
  });
  t.equal(far, 0, 'every probe is within a factor 2 of the budget');
  // 100 exploration probes at most, plus the few steps that confirm a size predicted better (decide).
  t.ok(probes > 0 && probes <= 120, `${probes} probes in 1000 steps`);
});

t.test('setPolicy switches at run time and keeps what was learned', async (t) => {
  const sim = new Sim(world(SMALL, saturating(3, 20)), { policy: 'throughput' }, 19);
  sim.run(1000);
  const learned = sim.sizer.state.rows;
  t.not(learned, 6, 'the test needs a learned budget other than the fixed one');
  sim.sizer.setPolicy('fixed', 6);
  t.equal(sim.sizer.next(sim.cached, null), 6);
  sim.sizer.setPolicy('throughput');
  t.equal(sim.sizer.state.active, 'throughput');
  // An experiment with a fixed tree must not throw away the budget the policy had found.
  t.equal(sim.sizer.state.rows, learned, 'back to its own budget, not the fixed one');
  sim.run(100);
  t.not(sim.sizer.state.rows, 6, 'adapting again');
  const eff = meanEfficiency(sim, 300);
  t.ok(eff >= 0.93, `back near the best: ${(eff * 100).toFixed(1)} % over the next 300 steps`);
  t.throws(() => new TreeSizer({ maxRows: 65 }), RangeError);
  t.throws(() => new TreeSizer({ maxMove: 1 }), RangeError);
});

t.test("auto's neighbourly mode stays near the best speed; the neighbourly policy trades more", async (t) => {
  // The default policy must hold >= 0.95 x the best tree when it turns neighbourly (issue 8's bar);
  // with the explicit policy's 8 % band it did not (bench:load, 2 hogs: 0.80 x fixed 8).
  for (const [name, base] of [['small', SMALL], ['large', LARGE]] as const) {
    const busy = world((r) => base(r) * 2 * (1 + r / 32), saturating(3, 20));
    const effs: Record<string, number> = {};
    const rows: Record<string, number> = {};
    for (const policy of ['auto', 'neighbourly'] as const) {
      const sim = new Sim(busy, { policy }, 21);
      sim.run(1500, HOT);
      t.equal(sim.sizer.state.active, 'neighbourly', `${name}: ${policy} is neighbourly on a hot board`);
      effs[policy] = meanEfficiency(sim, 500, HOT);
      rows[policy] = sim.sizer.state.rows;
    }
    t.ok(effs.auto >= 0.95, `${name}: auto at ${rows.auto} rows, ${(effs.auto * 100).toFixed(1)} % of the best`);
    t.ok(rows.neighbourly <= rows.auto, `${name}: neighbourly ${rows.neighbourly} rows <= auto ${rows.auto}`);
    t.ok(effs.neighbourly >= 0.9, `${name}: neighbourly within its band (${(effs.neighbourly * 100).toFixed(1)} %)`);
  }
});

t.test('on a contended board (preempted steps) the throughput sizer still lands within 5 % of the best', async (t) => {
  // 2 hogs on 2 cores: a 0.5 ms step is preempted ~30 % of the time and then waits a 3 ms slice.
  // Runs of unpreempted steps sit far below the mean; forgetting a size's cost on them (the
  // sample-based staleness check) made small sizes, preempted less often, look cheap: 87–93 % of
  // the best. With the board sensed, staleness comes from the board instead. And a size seen on a
  // few probes, none preempted, looked half its cost (bench:load: throughput at 5.8 rows where fixed
  // 8 was best): 4 of these 24 runs under 95 % until samples on a contended core were clipped
  // tightly (StepCost.contended). Paced short requests: preemption grows along each request.
  const busy = load({ othersCpu: 0.92, cpuPressure: 0.5 });
  for (const pacedRequests of [false, true]) {
    for (let seed = 1; seed <= 12; seed++) {
      const sim = new Sim(world(SMALL, saturating(pacedRequests ? 2.5 : 2, pacedRequests ? 5 : 6)), { policy: 'throughput' }, seed, 0.15);
      sim.contend(SMALL, 1.5, 3);
      if (pacedRequests) sim.paced(16, 80, 12);
      sim.run(3000, busy);
      const eff = meanEfficiency(sim, pacedRequests ? 3000 : 1500, busy);
      const what = pacedRequests ? 'paced 16 → 80-token requests' : 'long requests';
      t.ok(eff >= 0.95, `${what}, seed ${seed}: ${(eff * 100).toFixed(1)} % of the best (rows ${sim.sizer.state.rows}, best ${sim.bestRows()})`);
    }
  }
});

t.test('a load change the board reports makes every size re-learn its cost', async (t) => {
  // A hog stops: others' CPU falls from 0.9 to 0.05 and every step gets 2.2x cheaper. A size seen
  // only on probes must not keep its busy cost (the sizer would not move back to it).
  const sizer = new TreeSizer({ policy: 'throughput', maxRows: 32 });
  const cost = (rows: number, level: number) => level * (0.5 + 0.01 * rows);
  const feed = (rows: number, level: number, n: number) => {
    for (let i = 0; i < n; i++) sizer.record(rows, 50, cost(rows, level), 1);
  };
  sizer.next(50, load({ othersCpu: 0.9 }));
  feed(8, 2.2, 3000);
  feed(6, 2.2, 3000);
  sizer.next(50, load({ othersCpu: 0.05 }));
  feed(6, 1, 200);
  feed(8, 1, 1); // one probe
  const off8 = sizer.cost.at(8, 50) / cost(8, 1);
  t.ok(Math.abs(off8 - 1) < 0.15, `8 rows, one sample since the change, within 15 % of the new level: ${off8.toFixed(2)}`);
  sizer.next(50, load({ othersCpu: 0.1 }));
  feed(8, 1, 1);
  t.ok(Math.abs(sizer.cost.at(8, 50) / cost(8, 1) - 1) < 0.15, 'a small wander of the load keeps what was learned');
});

t.test('the board decides whether step samples are clipped as contended: PSI, else others leaving under half a core', async (t) => {
  const dearer = (reading: Partial<BoardLoad>) => {
    const sizer = new TreeSizer({ policy: 'throughput', maxRows: 16 });
    sizer.next(40, load(reading));
    for (let i = 0; i < 200; i++) sizer.record(8, 40, 0.75 + (i % 4 === 0 ? 3 : 0), 3);
    return sizer.cost.at(8, 40) / 0.75;
  };
  t.ok(dearer({ cpuPressure: 0.5, othersCpu: 0.6 }) < 1.6, 'PSI 50 %: contended');
  t.ok(dearer({ cpuPressure: 0.02, othersCpu: 0.92 }) > 1.9, 'PSI 2 %: not contended, whatever others use');
  t.ok(dearer({ cpuPressure: null, othersCpu: 0.9, cores: 2 }) < 1.6, 'no PSI, others use 1.8 of 2 cores: contended');
  t.ok(dearer({ cpuPressure: null, othersCpu: 0.5, cores: 2 }) > 1.9, 'no PSI, a core free: not contended');
});
