/**
 * GainCurve: expected committed tokens per step g(rows) of the best tree with that many rows.
 *
 * Shape from the tree builder (Decoder.gainCurve: cum[r] = 1 + scores of the best r - 1 nodes, every
 * few steps), averaged with decay because one curve reflects one context position. Level from what
 * really happens: the builder's scores are estimated acceptance probabilities and can be
 * over-optimistic (or pessimistic), so the excess over plain decoding is scaled by
 *   k = EMA(committed - 1) / EMA(curve[rows fed] - 1)
 * over real steps (a ratio of means, not a mean of per-step ratios: a step commits a whole number of
 * tokens, so per-step ratios are mostly 0 or large). g(1) = 1 always: a plain step commits one token.
 */

/** Most the observed/predicted ratio may scale the builder's curve (a guard against early noise). */
const MAX_CALIBRATION = 4;

export class GainCurve {
  readonly maxRows: number;
  private readonly avg: Float64Array; // [maxRows + 1] decayed mean of the builder's cum[r]; [0] unused
  private readonly curveAlpha: number;
  private readonly stepAlpha: number;
  private curves = 0;
  private seenExcess = 0; // EMA of committed - 1 over real steps
  private predictedExcess = 0; // EMA of avg[rows fed] - 1 over the same steps

  /** halfLife: in steps, for the calibration; curveHalfLife: in curves, for the shape. */
  constructor(maxRows = 64, halfLife = 200, curveHalfLife = 8) {
    if (!(Number.isInteger(maxRows) && maxRows >= 1)) throw new RangeError('maxRows must be an integer >= 1');
    if (!(halfLife > 0 && curveHalfLife > 0)) throw new RangeError('half-lives must be > 0');
    this.maxRows = maxRows;
    this.avg = new Float64Array(maxRows + 1);
    this.curveAlpha = 1 - Math.pow(0.5, 1 / curveHalfLife);
    this.stepAlpha = 1 - Math.pow(0.5, 1 / halfLife);
  }

  /** True once the builder gave a curve. */
  get ready(): boolean {
    return this.curves > 0;
  }

  /** The factor applied to the builder's predicted excess tokens (1 until real steps say otherwise). */
  get calibration(): number {
    if (!(this.predictedExcess > 1e-9)) return 1;
    return Math.min(MAX_CALIBRATION, this.seenExcess / this.predictedExcess);
  }

  /**
   * One curve from the builder: cum[r] for r = 1..n (cum[1] = 1, non-decreasing). Rows past n add
   * nothing (the builder ran out of candidates).
   */
  recordCurve(cum: ArrayLike<number>, n: number): void {
    const last = Math.min(n, this.maxRows, cum.length - 1);
    if (!(last >= 1)) return;
    const a = this.curves === 0 ? 1 : this.curveAlpha;
    let prev = 1;
    for (let r = 1; r <= this.maxRows; r++) {
      let x = r === 1 ? 1 : cum[Math.min(r, last)];
      if (!(x >= prev)) x = prev; // also replaces NaN: a curve never falls
      this.avg[r] += a * (x - this.avg[r]);
      prev = x;
    }
    this.curves++;
  }

  /** One real step: `rows` fed, `committed` tokens committed (>= 1). Ignored before the first curve. */
  observe(rows: number, committed: number): void {
    if (this.curves === 0 || !Number.isFinite(committed)) return;
    const r = Math.min(this.maxRows, Math.max(1, Math.round(rows)));
    this.seenExcess += this.stepAlpha * (committed - 1 - this.seenExcess);
    this.predictedExcess += this.stepAlpha * (this.avg[r] - 1 - this.predictedExcess);
  }

  /** Calibrated expected committed tokens of a step with `rows` rows. */
  at(rows: number): number {
    const r = Math.min(this.maxRows, Math.max(1, Math.round(rows)));
    if (this.curves === 0) return 1;
    return 1 + this.calibration * (this.avg[r] - 1);
  }

  /** Writes at(r) into out[r] for r = lo..hi (out indexed by row count). Allocates nothing. */
  fill(out: Float64Array, lo: number, hi: number): void {
    const k = this.curves === 0 ? 0 : this.calibration;
    const top = Math.min(this.maxRows, hi);
    for (let r = Math.max(1, lo); r <= top; r++) out[r] = 1 + k * (this.avg[r] - 1);
  }
}
