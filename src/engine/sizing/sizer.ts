/**
 * TreeSizer: the row budget of the next tree step, from the measured step cost, the expected gain and
 * the board's load (bita.md section 6, "Load-aware tree size"; policies in load.ts).
 *
 * Called before every step (steps take ~0.5 ms), so a decision allocates nothing and costs a few µs:
 * the cost and gain curves are refreshed into preallocated arrays and bestBudget scans them. The
 * budget moves only when the new one is predicted clearly better (hysteresis) and by at most a
 * factor maxMove per step, and every exploreEvery steps one step runs at a neighbouring size so the
 * cost and gain there stay measured.
 */
import type { BoardLoad, TreePolicy } from '../load.js';
import { MAX_TREE_ROWS } from '../protocol.js';
import { AUTO_LOSS, bestBudget, NEIGHBOURLY_LOSS, rateAt } from './budget.js';
import { StepCost } from './cost.js';
import { GainCurve } from './gain.js';

/** Largest tree the sizer will ask for: the most rows a step can feed. */
export const SIZER_MAX_ROWS = MAX_TREE_ROWS;

export type ActivePolicy = 'throughput' | 'neighbourly' | 'fixed';

export interface TreeSizerConfig {
  policy: TreePolicy;
  /** The budget under 'fixed', and under the others until cost and gain have been measured. */
  fixedRows: number;
  minRows: number;
  /** <= SIZER_MAX_ROWS. */
  maxRows: number;
  /** Neighbourly picks the smallest tree within this share of the best predicted tokens/s. */
  neighbourlyLoss: number;
  /** The same share for auto's neighbourly mode (the default policy promises near-best speed). */
  autoLoss: number;
  /** Switch only when the new budget is predicted this much better (0.03 = 3 %). */
  hysteresis: number;
  /** One decision moves the budget by at most this factor (and at least one row). */
  maxMove: number;
  /** Every this many steps one step probes a neighbouring size (0 = never). */
  exploreEvery: number;
  /** Auto turns neighbourly at this CPU temperature (°C). */
  hotC: number;
  /** Half-life of the cost model and of the gain calibration, in steps. */
  halfLife: number;
  /** Half-life of the builder-curve average, in curves. */
  curveHalfLife: number;
}

export const TREE_SIZER_DEFAULTS: Readonly<TreeSizerConfig> = {
  policy: 'auto',
  fixedRows: 10, // best fixed budget on the idle 2-core VM (engine/index.ts DEFAULT_TREE_BUDGET)
  minRows: 1,
  maxRows: SIZER_MAX_ROWS,
  neighbourlyLoss: NEIGHBOURLY_LOSS,
  autoLoss: AUTO_LOSS,
  hysteresis: 0.03,
  maxMove: 2,
  exploreEvery: 16, // 4 probe sizes in turn: each refreshed every 64 steps, a third of a half-life
  hotC: 75,
  halfLife: 200, // 0.1–1 s of steps: follows a load change within a second or two
  curveHalfLife: 8,
};

/** Auto leaves neighbourly only when the CPU is this many °C under hotC (no flapping at the threshold). */
const AUTO_COOL_C = 5;

/** Most extra margin for an unsure prediction (an unmeasured size may still be taken if far better). */
const MAX_DOUBT = 0.25;
/** Standard errors a shrink discounts: it is optional, and of the many sizes scanned one looks good by chance. */
const SHRINK_Z = 1.5;
/** A pending size (decide) runs every this many steps: its weight reaches ~20 samples within ~100
 *  steps, where the doubt at the noise cap is ~0.1, and costs nothing if it is indeed better. */
const CONFIRM_EVERY = 4;
/**
 * A decision (refresh both curves, scan every size) runs every this many steps; record() feeds the
 * models on every step. In the engine loop a decision costs 40–80 µs (the ORT step in between evicts
 * its data and code: 0.4–2 µs in a tight loop), so deciding per step cost 10–18 µs of a 0.5–0.6 ms
 * step; every 16th: 5–6 µs (bundled model, in-process, interleaved with fixed 8, 2026-12-03).
 * Choices got no worse for it: over 12 seeds × 10 simulated scenarios no test uses, cells under 95 %
 * of the best went 13 → 6 of 120 (fewer decisions chase less noise). Odd steps, so a decision never
 * falls on a probe or confirmation step (multiples of 4).
 */
const DECIDE_EVERY = 16;
/**
 * A share (others' CPU, CPU pressure, GPU busy) that moved this much since the cost model last
 * started afresh means a new load (a hog starting or stopping moves others' CPU by 0.5 on 2 cores
 * and pressure by 0.5; 250 ms readings of a steady board wander by a few per cent).
 */
const LOAD_MOVED = 0.2;
/**
 * CPU pressure (PSI "some") from which our steps count as preempted now and then (StepCost.contended):
 * 0 % with one hog on a core of its own, 50 % with two hogs on 2 cores (bench:load, 2026-12-03).
 */
const CONTENDED_PRESSURE = 0.1;
/** Cap on the measured relative spread of one step's ms (a run of outliers must not freeze the sizer). */
const MAX_NOISE = 0.5;

const CAUSE_NONE = 0;
const CAUSE_HOT = 2;
const CAUSE_THROTTLED = 3;

export interface TreeSizerState {
  /** The budget (probe steps aside). */
  rows: number;
  /** As configured. */
  policy: TreePolicy;
  active: ActivePolicy;
  /** For `bitad status`. */
  reason: string;
  /** Budget changes so far. */
  changes: number;
}

export class TreeSizer {
  readonly cost: StepCost;
  readonly gain: GainCurve;
  private readonly cfg: TreeSizerConfig;
  private readonly candidates: Int32Array; // [minRows..maxRows]
  private readonly t: Float64Array; // [maxRows + 1] predicted step ms by row count
  private readonly g: Float64Array; // [maxRows + 1] expected committed tokens by row count
  private rows: number;
  private active: ActivePolicy;
  private changes = 0;
  private steps = 0;
  private probes = 0;
  private readonly probeFactors: Float64Array;
  // Last temperature seen and why auto is neighbourly (for the reason text).
  private cause = CAUSE_NONE;
  /** The board when the cost model last started afresh (watchLoad); null before any reading. */
  private ref: BoardLoad | null = null;
  private tempC: number | null = null;
  private cached = 0; // at the last decision, for the reason text
  /** A size predicted better but not yet surely (0: none); confirmed by running it (decide). */
  private pending = 0;
  /** Each curve-driven policy's budget when it was last switched away from (setPolicy). */
  private readonly policyRows = new Map<TreePolicy, number>();
  /** Auto changed mode since the last decision. */
  private modeChanged = false;

  constructor(config: Partial<TreeSizerConfig> = {}) {
    const cfg = { ...TREE_SIZER_DEFAULTS, ...config };
    validate(cfg);
    this.cfg = cfg;
    this.cost = new StepCost(cfg.maxRows, cfg.halfLife);
    this.gain = new GainCurve(cfg.maxRows, cfg.halfLife, cfg.curveHalfLife);
    this.candidates = new Int32Array(cfg.maxRows - cfg.minRows + 1);
    for (let i = 0; i < this.candidates.length; i++) this.candidates[i] = cfg.minRows + i;
    this.t = new Float64Array(cfg.maxRows + 1);
    this.g = new Float64Array(cfg.maxRows + 1);
    const m = cfg.maxMove;
    this.probeFactors = Float64Array.of(m, 1 / m, Math.sqrt(m), 1 / Math.sqrt(m));
    this.active = cfg.policy === 'auto' ? 'throughput' : cfg.policy;
    this.rows = this.startRows();
  }

  /** Rows for the next step. `cached`: tokens in the KV cache; `load`: latest sensors (null: none). */
  next(cached: number, load: BoardLoad | null): number {
    if (this.cfg.policy === 'fixed') return this.rows;
    this.cached = cached;
    if (load) this.watchLoad(load);
    if (this.cfg.policy === 'auto') this.resolveAuto(load);
    if (!this.cost.ready || !this.gain.ready) return this.rows;
    this.steps++;
    if (this.pending > 0 && this.steps % CONFIRM_EVERY === 0) return this.pending;
    const every = this.cfg.exploreEvery;
    if (every > 0 && this.steps % every === 0) {
      const probe = this.probe();
      if (probe !== this.rows) return probe;
    }
    // Decide on a fixed cadence, and at once after auto changed mode (sizes must follow the new goal).
    if (this.steps % DECIDE_EVERY === 1 || this.modeChanged) {
      this.modeChanged = false;
      this.decide(cached);
    }
    return this.rows;
  }

  /** A step ran: `rows` fed, `cached` tokens before it, `ms` wall time (run + host), `committed` tokens. */
  record(rows: number, cached: number, ms: number, committed: number): void {
    this.cost.observe(rows, cached, ms);
    this.gain.observe(rows, committed);
  }

  /** A timed calibration forward (no tokens committed). */
  calibrate(rows: number, cached: number, ms: number): void {
    this.cost.observe(rows, cached, ms);
  }

  /** The builder's expected-committed-tokens curve: cum[r] for r = 1..n. */
  recordCurve(cum: ArrayLike<number>, n: number): void {
    this.gain.recordCurve(cum, n);
  }

  /** Changes the policy (and the fixed budget) at run time; the models keep what they learned. */
  setPolicy(policy: TreePolicy, fixedRows: number = this.cfg.fixedRows): void {
    const cfg = { ...this.cfg, policy, fixedRows };
    validate(cfg);
    if (this.cfg.policy !== 'fixed') this.policyRows.set(this.cfg.policy, this.rows);
    this.cfg.policy = policy;
    this.cfg.fixedRows = fixedRows;
    this.active = policy === 'auto' ? 'throughput' : policy;
    this.modeChanged = true;
    this.cause = CAUSE_NONE;
    // Back to a curve-driven policy: its own last budget, not the fixed one run in between.
    const rows = policy === 'fixed' ? this.startRows() : (this.policyRows.get(policy) ?? this.rows);
    if (rows !== this.rows) this.changes++;
    this.rows = rows;
  }

  get state(): TreeSizerState {
    return { rows: this.rows, policy: this.cfg.policy, active: this.active, reason: this.reason(), changes: this.changes };
  }

  private startRows(): number {
    const { fixedRows, policy, minRows, maxRows } = this.cfg;
    return Math.min(maxRows, Math.max(policy === 'fixed' ? 1 : minRows, fixedRows));
  }

  /**
   * Auto: neighbourly on a hot or throttled board, back to throughput only when 5 °C cooler and not
   * throttled. Not on CPU contention: next to CPU hogs the fastest tree was also the cheapest in CPU
   * per token, so the one that left them the most work; smaller trees only cost speed (bench:load
   * 2026-12-03, 2 hogs, bundled model, 1 thread: fixed 8 0.178 CPU ms/token and 5832 hog units/s;
   * neighbourly at 5.3 rows 0.196 and 5773; auto, neighbourly then, at 4.8 rows 0.204 and 5744).
   */
  private resolveAuto(load: BoardLoad | null): void {
    if (!load) return; // no new reading: keep the mode
    const cfg = this.cfg;
    this.tempC = load.tempC;
    const temp = load.tempC ?? -Infinity;
    const hotFrom = this.active === 'throughput' ? cfg.hotC : cfg.hotC - AUTO_COOL_C;
    this.cause = load.throttled ? CAUSE_THROTTLED : temp >= hotFrom ? CAUSE_HOT : CAUSE_NONE;
    const mode = this.cause === CAUSE_NONE ? 'throughput' : 'neighbourly';
    if (mode !== this.active) this.setActive(mode);
  }

  /**
   * Step costs follow the board: when its load moves clearly away from where it was when the cost
   * model last started afresh, every size's cost is re-learned from fresh samples (StepCost.discount).
   */
  private watchLoad(load: BoardLoad): void {
    this.cost.contended(contended(load));
    const ref = this.ref;
    if (ref === null) {
      this.cost.sensed();
      this.ref = { ...load };
      return;
    }
    const moved =
      apart(load.othersCpu, ref.othersCpu, LOAD_MOVED) ||
      apart(load.cpuPressure, ref.cpuPressure, LOAD_MOVED) ||
      apart(load.gpuBusy, ref.gpuBusy, LOAD_MOVED) ||
      load.throttled !== ref.throttled;
    if (!moved) return;
    this.cost.discount();
    Object.assign(ref, load);
  }

  private setActive(mode: ActivePolicy): void {
    this.active = mode;
    this.modeChanged = true;
  }

  /**
   * Refreshes the curves at `cached` and moves the budget if a clearly better one is in reach. Under
   * throughput, a size that would be chosen but for its doubt becomes `pending`: next() then runs it
   * every CONFIRM_EVERY steps until its samples settle the question (the doubt shrinks as they add up).
   */
  private decide(cached: number): void {
    this.cost.predict(cached, this.t, this.cfg.minRows, this.cfg.maxRows);
    this.gain.fill(this.g, this.cfg.minRows, this.cfg.maxRows);
    const sure = this.choose();
    // Throughput only: neighbourly's shrinks are optional and meant to be cautious (SHRINK_Z);
    // confirming them would make it shrink on predictions alone.
    this.pending = 0;
    if (this.active === 'throughput') {
      const hopeful = this.throughputChoice(false);
      // Only while doubt is what holds it back: a size measured enough that still does not clear
      // the hysteresis is not better, and confirming it forever cost ~8 % of the tokens per step
      // in the engine (a quarter of the steps at a size no better than the budget).
      if (hopeful !== sure && hopeful !== this.rows && this.doubt(hopeful) > this.cfg.hysteresis) this.pending = hopeful;
    }
    if (sure !== this.rows) {
      this.rows = sure;
      this.changes++;
    }
  }

  /** The budget the active policy picks from the curves, each prediction discounted by its doubt. */
  private choose(): number {
    const { maxRows, hysteresis: h } = this.cfg;
    const loss = this.cfg.policy === 'auto' ? this.cfg.autoLoss : this.cfg.neighbourlyLoss;
    const { t, g, candidates } = this;
    const cur = this.rows;
    if (this.active === 'throughput') return this.throughputChoice(true);
    const best = bestBudget(candidates, t, g, 'throughput');
    // Neighbourly: the band is every size within `loss` of the best predicted tokens/s.
    const floor = (1 - loss) * rateAt(t, g, best);
    if (rateAt(t, g, cur) * (1 + h) * (1 + this.doubt(best)) < floor) {
      // Clearly outside: the smallest size in reach that is surely inside, else toward the best.
      const target = this.smallestInBand(this.clampMove(1), this.clampMove(maxRows), floor);
      return target < 0 ? this.clampMove(best) : target;
    }
    // Inside: only shrink, and only to a size surely inside.
    const target = this.smallestInBand(this.clampMove(1), cur - 1, floor);
    return target < 0 ? cur : target;
  }

  /** Throughput: the best size in reach if it beats the budget by the hysteresis (plus, `withDoubt`,
   *  the doubt of its prediction), else the budget. */
  private throughputChoice(withDoubt: boolean): number {
    const { t, g } = this;
    const cur = this.rows;
    const target = this.clampMove(bestBudget(this.candidates, t, g, 'throughput'));
    const margin = withDoubt ? this.doubt(target) : 0;
    return rateAt(t, g, target) >= (1 + this.cfg.hysteresis) * (1 + margin) * rateAt(t, g, cur) ? target : cur;
  }

  /**
   * The smallest size in lo..hi whose predicted tokens/ms stays >= floor even when discounted by
   * SHRINK_Z times its doubt. -1 if none. Leaving the band takes a
   * further drop of `hysteresis` (decide), so shrinking and leaving do not alternate.
   */
  private smallestInBand(lo: number, hi: number, floor: number): number {
    const { t, g } = this;
    for (let r = lo; r <= hi; r++) {
      if (rateAt(t, g, r) * (1 - SHRINK_Z * this.doubt(r)) >= floor) return r;
    }
    return -1;
  }

  /**
   * Extra margin a move to `rows` must clear because its predicted cost rests on few samples: one
   * standard error of the mean there (a size seen only on probes has ~5 samples, ±5 % at ±20 % noise).
   * Without it the budget jumps to whichever rarely-measured size last drew a low sample, and back.
   */
  private doubt(rows: number): number {
    const w = this.cost.weight(rows);
    if (!(w > 0)) return MAX_DOUBT;
    const cv = Math.min(MAX_NOISE, this.cost.noise(this.rows));
    return Math.min(MAX_DOUBT, cv / Math.sqrt(w));
  }

  /** Bounded move toward `target`: within [cur / maxMove, cur * maxMove], at least one row. */
  private clampMove(target: number): number {
    const { minRows, maxRows, maxMove } = this.cfg;
    const cur = this.rows;
    const lo = Math.max(minRows, Math.min(cur - 1, Math.ceil(cur / maxMove)));
    const hi = Math.min(maxRows, Math.max(cur + 1, Math.floor(cur * maxMove)));
    return Math.min(hi, Math.max(lo, target));
  }

  /** The next probe size in turn: up and down by maxMove and by its square root. */
  private probe(): number {
    const f = this.probeFactors[this.probes++ & 3];
    let p = Math.round(this.rows * f);
    if (p === this.rows) p += f > 1 ? 1 : -1;
    return Math.min(this.cfg.maxRows, Math.max(this.cfg.minRows, p));
  }

  private reason(): string {
    const { policy } = this.cfg;
    const rows = `${this.rows} row${this.rows === 1 ? '' : 's'}`;
    if (policy === 'fixed') return `fixed: ${rows}`;
    let head: string = this.active;
    if (policy === 'auto') head = `auto→${this.active}${this.active === 'neighbourly' ? `: ${this.causeText()};` : ':'}`;
    else head += ':';
    if (!this.cost.ready || !this.gain.ready) return `${head} ${rows} until step costs and the gain curve are measured`;
    const ms = this.cost.at(this.rows, this.cached);
    const tokens = this.gain.at(this.rows);
    return `${head} ${rows}, predicted ${tokens.toFixed(1)} tok/step at ${ms.toFixed(2)} ms`;
  }

  private causeText(): string {
    if (this.cause === CAUSE_THROTTLED) return 'board throttled';
    return `CPU at ${Math.round(this.tempC ?? 0)} °C (hot from ${this.cfg.hotC} °C)`;
  }

}

/**
 * Our core is shared: tasks wait for a CPU (PSI) at least CONTENDED_PRESSURE of the time or, where
 * the kernel has no PSI, others leave less than half a core free.
 */
function contended(load: BoardLoad): boolean {
  if (load.cpuPressure !== null) return load.cpuPressure >= CONTENDED_PRESSURE;
  return load.othersCpu * load.cores > load.cores - 0.5;
}

/** Both readings known and at least `by` apart (module level: called every step, no closure). */
function apart(a: number | null, b: number | null, by: number): boolean {
  return a !== null && b !== null && Math.abs(a - b) >= by;
}

function validate(cfg: TreeSizerConfig): void {
  const int = (x: number) => Number.isInteger(x);
  const need = (ok: boolean, what: string) => {
    if (!ok) throw new RangeError(`tree sizer: ${what}`);
  };
  need(int(cfg.minRows) && cfg.minRows >= 1, 'minRows must be an integer >= 1');
  need(int(cfg.maxRows) && cfg.maxRows >= cfg.minRows && cfg.maxRows <= SIZER_MAX_ROWS, `maxRows must be an integer in minRows..${SIZER_MAX_ROWS}`);
  need(int(cfg.fixedRows) && cfg.fixedRows >= 1, 'fixedRows must be an integer >= 1');
  need(cfg.neighbourlyLoss >= 0 && cfg.neighbourlyLoss < 1, 'neighbourlyLoss must be in [0, 1)');
  need(cfg.autoLoss >= 0 && cfg.autoLoss < 1, 'autoLoss must be in [0, 1)');
  need(cfg.hysteresis >= 0 && cfg.hysteresis < 1, 'hysteresis must be in [0, 1)');
  need(cfg.maxMove > 1, 'maxMove must be > 1');
  need(int(cfg.exploreEvery) && cfg.exploreEvery >= 0, 'exploreEvery must be an integer >= 0');
  need(Number.isFinite(cfg.hotC), 'hotC must be a number');
  need(cfg.halfLife > 0 && cfg.curveHalfLife > 0, 'half-lives must be > 0');
}
