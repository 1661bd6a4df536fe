/**
 * The load-aware tree inside the engine worker: one TreeSizer (sizing/) per engine, fed by every
 * step (rows, cached length, wall time, committed tokens), by the decoder's gain curve every few
 * steps and by the board load the main thread writes into the shared slots; it sets each step's
 * row budget. Greedy requests adapt; sampled requests keep the fixed budget, because with a seed the
 * same request must draw the same tokens and the tree shape decides how the random stream is used.
 */
import { rowsAttentionBias, type Decoder, type StepResult } from '../decoding/index.js';
import type { StepHook, Sizing } from './generate.js';
import type { OrtTreeModel } from './kv-model.js';
import type { BoardLoad, TreePolicy } from './load.js';
import { readLoad, readPolicy, SLOT_BUDGET, type TreeOptions } from './protocol.js';
import { TreeSizer } from './sizing/sizer.js';
import { warmUpTreeSizer } from './sizing/warmup.js';
import type { TreeInfo } from './types.js';

/** A gain curve every this many steps: one extra best-first build at maxRows (tens of µs). */
const CURVE_EVERY = 16;
/** Row counts timed at load, and forwards per count (the first run of each is discarded). */
const CALIBRATION_ROWS = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64];
const CALIBRATION_RUNS = 3;
/** The main thread hears about a changed budget at most this often (and after every request). */
const POST_EVERY_MS = 200;

export class TreeSizing implements Sizing {
  private readonly sizer: TreeSizer;
  private readonly load: BoardLoad = { othersCpu: 0, cores: 1, tempC: null, throttled: false, gpuBusy: null, cpuPressure: null };
  private steps = 0;
  private lastPost = -Infinity;
  private posted = '';
  private policy: TreePolicy;
  private fixedRowsSet: number;
  private readonly adaptive: StepHook;
  private readonly fixed: StepHook;

  constructor(
    private readonly shared: Int32Array,
    private readonly options: TreeOptions,
    private readonly post: (tree: TreeInfo) => void,
  ) {
    this.sizer = new TreeSizer({ policy: options.policy, fixedRows: options.fixedRows, minRows: options.minRows, maxRows: options.maxRows });
    this.policy = options.policy;
    this.fixedRowsSet = options.fixedRows;
    const sizer = this.sizer;
    this.adaptive = {
      get policy() {
        return sizer.state.active;
      },
      before: (dec) => this.before(dec),
      after: (r, ms, cached, dec) => this.after(r, ms, cached, dec),
    };
    this.fixed = {
      policy: 'fixed',
      before: (dec) => dec.setBudget(this.fixedRows()),
      after: () => {},
    };
  }

  /**
   * Times forwards of each row count the sizer may choose (up to tree max_rows: the cost model has
   * one bucket per row count up to it, and a larger count would land in the last one) on an empty
   * cache, so the cost model starts from this board.
   */
  calibrate(model: Pick<OrtTreeModel, 'maxRows' | 'maxPositions' | 'forward' | 'truncate'>): void {
    const maxQ = Math.min(model.maxRows, model.maxPositions, this.options.maxRows);
    const ids = new Int32Array(maxQ);
    const positions = new Int32Array(maxQ);
    const parents = new Int32Array(maxQ).map((_, i) => i - 1);
    const bias = new Float32Array(maxQ * maxQ);
    for (const rows of new Set([...CALIBRATION_ROWS.filter((r) => r < maxQ), maxQ])) {
      rowsAttentionBias(parents, rows, 0, bias, positions);
      for (let run = 0; run < CALIBRATION_RUNS; run++) {
        const t0 = performance.now();
        model.forward(ids, positions, bias, rows);
        if (run > 0) this.sizer.calibrate(rows, 0, performance.now() - t0);
      }
    }
    model.truncate(0);
    // Also under `fixed`: the policy can change at run time (Engine.setTreePolicy).
    warmUpTreeSizer(this.options.minRows, this.options.maxRows);
  }

  forRequest(greedy: boolean): StepHook {
    const policy = readPolicy(this.shared);
    const fixedRows = this.fixedRows();
    if (policy !== this.policy || fixedRows !== this.fixedRowsSet) this.sizer.setPolicy(policy, fixedRows);
    this.policy = policy;
    this.fixedRowsSet = fixedRows;
    return greedy ? this.adaptive : this.fixed;
  }

  info(): TreeInfo {
    const s = this.sizer.state;
    return { policy: s.policy, active: s.active, rows: s.rows, minRows: this.options.minRows, maxRows: this.options.maxRows, reason: s.reason, changes: s.changes };
  }

  /** Tells the main thread where the sizing stands (rate-limited; `force` after a request). */
  report(force: boolean): void {
    const now = performance.now();
    if (!force && now - this.lastPost < POST_EVERY_MS) return;
    const info = this.info();
    const key = `${info.rows}|${info.active}|${info.reason}`;
    if (key === this.posted) return;
    this.posted = key;
    this.lastPost = now;
    this.post(info);
  }

  /** The fixed budget, within maxRows like every other (tree.max_rows bounds every policy). */
  private fixedRows(): number {
    return Math.max(1, Math.min(this.options.maxRows, Atomics.load(this.shared, SLOT_BUDGET)));
  }

  private before(dec: Decoder): void {
    const load = readLoad(this.shared, this.load) ? this.load : null;
    dec.setBudget(this.sizer.next(dec.length - 1, load));
    if (this.steps++ % CURVE_EVERY === 0) dec.measureGainNextStep();
  }

  private after(r: StepResult, ms: number, cached: number, dec: Decoder): void {
    if (r.gainRows > 0) this.sizer.recordCurve(dec.gainCurve, r.gainRows);
    // Rows fed, not the budget: a tree that could not fill its budget cost (and committed) what it fed.
    this.sizer.record(r.rowsFed, cached, ms, r.count);
    this.report(false);
  }
}
