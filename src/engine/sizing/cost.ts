/**
 * StepCost: an online model of one tree step's wall time t(rows, cached) in ms (bita.md section 6,
 * "Load-aware tree size").
 *
 * One bucket per row count (1..maxRows), each a decayed weighted linear fit of ms on the cached
 * length. Per-row buckets (not a coarse grid) because a grid bucket fed with steps at a neighbouring
 * row count takes that count's cost, which makes the next size up look free and drags the budget up.
 * Weights decay by half every `halfLife` observations, so after a load change the buckets the
 * sizer keeps using follow within a few hundred steps (0.1–1 s); buckets not fed lately keep their
 * old estimate with a shrinking weight.
 *
 * Prediction pools all buckets with data by weighted isotonic regression (a step never costs less
 * with more rows; a stale or noisy bucket that says otherwise yields to the fresher, heavier ones),
 * then interpolates linearly between row counts with data.
 */

/** Spread of cached lengths (tokens) below which a bucket's slope comes mostly from the shared trend. */
const CACHED_PRIOR = 32;
/** A sample further than this factor from its bucket's estimate (at its cached length) is clipped
 *  (GC pauses, preemption). */
const CLIP = 4;
/**
 * On a contended core (contended(true)) a sample above this factor is clipped: step times there are
 * heavy-tailed. Next to 2 CPU hogs (bench:load, bundled model, 1 thread, 2026-12-03) the mean step was
 * about 2.1x the median at every size (preemption costs about in proportion to the step, so the
 * ratios between sizes, all the sizer uses, stay), and a size seen on a few probes, none of them
 * preempted, looked half its cost: throughput sat at 5.8–5.9 rows where fixed 8 was best; clipped
 * at 1.5, 7.0–7.5. In the sizer's simulations (12 seeds x 9 scenarios) runs under 95 % of the best
 * fell from 7 to 1. Not always: an uncontended board's level changes must pass (a step 3x dearer
 * would take ~5x as long to learn).
 */
const CLIP_CONTENDED = 1.5;
/** Effective samples a bucket needs before its estimate is used to clip. */
const CLIP_AFTER = 2;
/** Above the largest row count with data, cost grows at least by (its cost / PRIOR_ROWS) per row, so
 *  unmeasured big trees never look free (the 0.26 M model's table grows about this fast). */
const PRIOR_ROWS = 64;
const RESCALE_AT = 1e150;
/**
 * Stale buckets. A load change moves every size's cost, but a size the sizer no longer uses is fed
 * only by probes, so its decayed mean kept the old level for thousands of steps (in the sizer's
 * simulation: stuck at 6 rows where 8 was best after a hog stopped). Two ways to notice:
 * - from the board (discount): the sizer sees the load move and every bucket keeps STALE_KEEP of
 *   its weight, so fresh samples decide. Used whenever the board is sensed.
 * - from the samples (fallback, without board readings): when a bucket's last STALE_RECENT samples
 *   all sit more than 1.4x from its estimate on the same side, its old samples are mostly
 *   forgotten. Per bucket, on purpose: scaling every bucket from one bucket's shift misfired on the
 *   real engine. Not under contention: preemption adds whole time slices (3–4 ms to 0.5 ms steps),
 *   so runs of unpreempted steps sit far below a mean that includes them, small sizes (less often
 *   preempted) most; forgetting on them biased the sizer to small trees (simulated 2 hogs, 0.26 M
 *   model: 92.7 % of the best; 97.2 % with the board deciding instead).
 */
const STALE_RECENT = 3;
const STALE_SHIFT = Math.log(1.4);
const STALE_KEEP = 0.05;

export class StepCost {
  readonly maxRows: number;
  private readonly decay: number;
  /** Weight of the next sample; grows by 1/decay per sample so only relative weights are stored. */
  private scale = 1;
  private samples = 0;
  /** Per bucket: how many of its latest samples in a row sat STALE_SHIFT above (+) or below (-) it. */
  private readonly offRun: Int32Array;
  /** Upper clip factor: CLIP, or CLIP_CONTENDED while the core is contended. */
  private clipHigh = CLIP;
  /** Stale buckets found from samples (false once the board is sensed; see discount). */
  private sampleStaleness = true;
  // Shared cached-length trend, ms per cached token = sharedSlope0 + sharedSlope1 * rows (see slope).
  private sharedSlope0 = 0;
  private sharedSlope1 = 0;
  // Per bucket, all [maxRows + 1] indexed by row count (0 unused): summed (scaled) weight, weighted
  // means of cached and ms, and the weighted co-moments for the slope.
  private readonly sw: Float64Array;
  private readonly meanCached: Float64Array;
  private readonly meanMs: Float64Array;
  private readonly scc: Float64Array;
  private readonly scy: Float64Array;
  private readonly syy: Float64Array;
  // Scratch for predict, all [maxRows + 1]: points with data, then isotonic blocks.
  private readonly pRows: Int32Array;
  private readonly pMs: Float64Array;
  private readonly pW: Float64Array;
  private readonly bMs: Float64Array;
  private readonly bW: Float64Array;
  private readonly bEnd: Int32Array; // last point index of each block

  constructor(maxRows = 64, halfLife = 200) {
    if (!(Number.isInteger(maxRows) && maxRows >= 1)) throw new RangeError('maxRows must be an integer >= 1');
    if (!(halfLife > 0)) throw new RangeError('halfLife must be > 0');
    this.maxRows = maxRows;
    this.decay = Math.pow(0.5, 1 / halfLife);
    const n = maxRows + 1;
    this.sw = new Float64Array(n);
    this.meanCached = new Float64Array(n);
    this.meanMs = new Float64Array(n);
    this.scc = new Float64Array(n);
    this.scy = new Float64Array(n);
    this.syy = new Float64Array(n);
    this.pRows = new Int32Array(n);
    this.pMs = new Float64Array(n);
    this.pW = new Float64Array(n);
    this.bMs = new Float64Array(n);
    this.bW = new Float64Array(n);
    this.bEnd = new Int32Array(n);
    this.offRun = new Int32Array(n);
  }

  /** True once any step was observed. */
  get ready(): boolean {
    return this.samples > 0;
  }

  /**
   * Effective (decayed) number of samples behind the prediction at `rows`: its own bucket's, or for
   * a row count without data, the lesser of the two it is interpolated from (0: extrapolated or none).
   */
  weight(rows: number): number {
    const r = this.bucket(rows);
    if (this.sw[r] > 0) return this.sw[r] / this.scale;
    let below = 0;
    let above = 0;
    for (let q = r - 1; q >= 1 && below === 0; q--) below = this.sw[q];
    for (let q = r + 1; q <= this.maxRows && above === 0; q++) above = this.sw[q];
    return Math.min(below, above) / this.scale;
  }

  /**
   * Relative spread (std / mean) of single step times at `rows` once the cached-length trend is
   * removed: how far one sample may be off (0 until the bucket has two samples).
   */
  noise(rows: number): number {
    const r = this.bucket(rows);
    const W = this.sw[r];
    if (!(W > 0) || !(this.meanMs[r] > 0)) return 0;
    const slope = this.slope(r);
    const residual = Math.max(0, this.syy[r] - slope * this.scy[r]);
    return Math.sqrt(residual / W) / this.meanMs[r];
  }

  /** One timed step (calibration forward or real step): `rows` fed with `cached` tokens in the KV cache. */
  observe(rows: number, cached: number, ms: number): void {
    if (!(ms > 0) || !Number.isFinite(ms) || !Number.isFinite(cached)) return;
    const r = this.bucket(rows);
    this.scale /= this.decay;
    if (this.scale > RESCALE_AT) this.rescale();
    const w = this.scale;
    let y = ms;
    if (this.sw[r] >= CLIP_AFTER * w) {
      const expected = this.meanMs[r] + this.slope(r) * (cached - this.meanCached[r]);
      if (this.sampleStaleness) this.forgetIfStale(r, expected, ms);
      // Around the mean where the trend extrapolates to nothing (far below the lengths it was fed).
      const centre = expected > 0 ? expected : this.meanMs[r];
      y = Math.min(centre * this.clipHigh, Math.max(centre / CLIP, y));
    }
    // Weighted incremental mean/co-moment update (West 1979); old weights are already decayed by
    // the growth of `scale`.
    const W = this.sw[r] + w;
    const a = w / W;
    const dc = cached - this.meanCached[r];
    this.meanCached[r] += a * dc;
    const dy = y - this.meanMs[r];
    this.meanMs[r] += a * dy;
    this.scc[r] += w * dc * (cached - this.meanCached[r]);
    this.scy[r] += w * dc * (y - this.meanMs[r]);
    this.syy[r] += w * dy * (y - this.meanMs[r]);
    this.sw[r] = W;
    this.samples++;
  }

  /**
   * Writes the predicted step ms at `cached` into out[r] for r = lo..hi (out indexed by row count),
   * non-decreasing in r. Allocates nothing. Leaves `out` untouched when nothing was observed.
   */
  predict(cached: number, out: Float64Array, lo: number, hi: number): void {
    const n = this.collect(cached);
    if (n === 0) return;
    this.isotonic(n);
    this.interpolate(n, out, Math.max(1, lo), Math.min(this.maxRows, hi));
  }

  /** Predicted ms of one step of `rows` rows at `cached` (convenience; the sizer uses predict). */
  at(rows: number, cached: number): number {
    const r = this.bucket(rows);
    const n = this.collect(cached);
    if (n === 0) return NaN;
    this.isotonic(n);
    this.interpolate(n, this.bMs, r, r); // bMs is free again once the blocks are expanded
    return this.bMs[r];
  }

  private bucket(rows: number): number {
    return Math.min(this.maxRows, Math.max(1, Math.round(rows)));
  }

  /**
   * ms per cached token at `r`: the bucket's own fit, shrunk toward the shared trend s0 + s1 r
   * (ridge): a bucket whose cached lengths barely spread (calibration runs all at one length, sizes
   * seen only on probes) takes its slope from the others instead of none.
   */
  private slope(r: number): number {
    const prior = CACHED_PRIOR * CACHED_PRIOR * this.sw[r];
    const shared = this.sharedSlope0 + this.sharedSlope1 * r;
    return Math.max(0, (this.scy[r] + prior * shared) / (this.scc[r] + prior));
  }

  /**
   * Fits the shared trend: attention costs rows x cached, so the slope is linear in rows. Weighted
   * least squares of the buckets' own slopes (scy / scc) with their information scc as weight.
   */
  private fitSharedSlope(): void {
    let a = 0;
    let b = 0;
    let c = 0;
    let d = 0;
    let e = 0;
    for (let r = 1; r <= this.maxRows; r++) {
      const w = this.scc[r];
      if (!(w > 0)) continue;
      a += w;
      b += w * r;
      c += w * r * r;
      d += this.scy[r];
      e += this.scy[r] * r;
    }
    const det = a * c - b * b;
    if (a > 0 && det > 1e-9 * a * c) {
      this.sharedSlope0 = (c * d - b * e) / det;
      this.sharedSlope1 = (a * e - b * d) / det;
    } else {
      this.sharedSlope0 = a > 0 ? d / a : 0;
      this.sharedSlope1 = 0;
    }
  }

  /** Points with data: each bucket's fit evaluated at `cached`, weighted by its decayed weight. */
  private collect(cached: number): number {
    this.fitSharedSlope();
    let n = 0;
    for (let r = 1; r <= this.maxRows; r++) {
      const W = this.sw[r];
      if (!(W > 0)) continue;
      const ms = this.meanMs[r] + this.slope(r) * (cached - this.meanCached[r]);
      this.pRows[n] = r;
      this.pMs[n] = Math.max(ms, this.meanMs[r] * 1e-3);
      this.pW[n] = W;
      n++;
    }
    return n;
  }

  /** Weighted pool-adjacent-violators: pMs[0..n) becomes the closest non-decreasing sequence. */
  private isotonic(n: number): void {
    const { pMs, pW, bMs, bW, bEnd } = this;
    let blocks = 0;
    for (let i = 0; i < n; i++) {
      bMs[blocks] = pMs[i];
      bW[blocks] = pW[i];
      bEnd[blocks] = i;
      blocks++;
      while (blocks > 1 && bMs[blocks - 2] > bMs[blocks - 1]) {
        const w = bW[blocks - 2] + bW[blocks - 1];
        bMs[blocks - 2] = (bMs[blocks - 2] * bW[blocks - 2] + bMs[blocks - 1] * bW[blocks - 1]) / w;
        bW[blocks - 2] = w;
        bEnd[blocks - 2] = bEnd[blocks - 1];
        blocks--;
      }
    }
    let i = 0;
    for (let b = 0; b < blocks; b++) for (; i <= bEnd[b]; i++) pMs[i] = bMs[b];
  }

  /** Linear between points; flat below the first; above the last, at least the prior slope. */
  private interpolate(n: number, out: Float64Array, lo: number, hi: number): void {
    const { pRows, pMs } = this;
    const last = pMs[n - 1];
    let slope = last / PRIOR_ROWS;
    if (n > 1) slope = Math.max(slope, (last - pMs[n - 2]) / (pRows[n - 1] - pRows[n - 2]));
    let j = 0; // first point with pRows[j] >= r
    for (let r = lo; r <= hi; r++) {
      while (j < n && pRows[j] < r) j++;
      if (j === n) out[r] = last + slope * (r - pRows[n - 1]);
      else if (pRows[j] === r || j === 0) out[r] = pMs[j];
      else {
        const f = (r - pRows[j - 1]) / (pRows[j] - pRows[j - 1]);
        out[r] = pMs[j - 1] + f * (pMs[j] - pMs[j - 1]);
      }
    }
  }

  /** Counts samples far from bucket r's estimate on one side; after STALE_RECENT, forgets its past. */
  private forgetIfStale(r: number, expected: number, ms: number): void {
    if (!(expected > 0)) return;
    // In logs: the typical step sits below a mean that includes preempted ones (≈ 0.8x of it).
    const off = Math.log(ms / expected);
    const side = off > STALE_SHIFT ? 1 : off < -STALE_SHIFT ? -1 : 0;
    const run = this.offRun[r];
    this.offRun[r] = side === 0 ? 0 : Math.sign(run) === side ? run + side : side;
    if (Math.abs(this.offRun[r]) < STALE_RECENT) return;
    this.scaleWeight(r, STALE_KEEP);
    this.offRun[r] = 0;
  }

  /**
   * The load moved (the caller saw it on the board): every bucket keeps its estimate but only
   * STALE_KEEP of its weight, so fresh samples decide, and from now on staleness is the caller's
   * to report, not read from samples.
   */
  discount(): void {
    this.sampleStaleness = false;
    for (let r = 1; r <= this.maxRows; r++) {
      this.scaleWeight(r, STALE_KEEP);
      this.offRun[r] = 0;
    }
  }

  /** The board says our core is (not) contended: step times are heavy-tailed there (CLIP_CONTENDED). */
  contended(on: boolean): void {
    this.clipHigh = on ? CLIP_CONTENDED : CLIP;
  }

  /** Staleness comes from the board from now on (discount), not from samples. */
  sensed(): void {
    this.sampleStaleness = false;
  }

  private rescale(): void {
    const k = 1 / this.scale;
    for (let r = 1; r <= this.maxRows; r++) this.scaleWeight(r, k);
    this.scale = 1;
  }

  /** Bucket r's weight and weighted co-moments times k: its means stay, its say changes. */
  private scaleWeight(r: number, k: number): void {
    this.sw[r] *= k;
    this.scc[r] *= k;
    this.scy[r] *= k;
    this.syy[r] *= k;
  }
}
