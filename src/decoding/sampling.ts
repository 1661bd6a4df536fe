/**
 * The target distribution p that sampled output must follow exactly: softmax(logits / T), then
 * top-k, then top-p, renormalised. Plain and tree decoding call the same code, so "exact" means
 * exactly this function. Greedy (T = 0) bypasses it with argmax (lowest id wins ties).
 */

export interface SamplingParams {
  /** 0 = greedy. */
  temperature: number;
  /** 0 = off. Keeps every token whose logit ties the k-th largest. */
  topK: number;
  /** 1 = off. Keeps the most likely tokens until their mass reaches topP (at least one). */
  topP: number;
}

export const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1 };

export function isGreedy(p: SamplingParams): boolean {
  return !(p.temperature > 0);
}

/** Index of the largest of logits[offset .. offset+V), lowest index on ties. */
export function argmax(logits: Float32Array, offset: number, V: number): number {
  let best = 0;
  let bestValue = logits[offset];
  for (let v = 1; v < V; v++) {
    const x = logits[offset + v];
    if (x > bestValue) {
      bestValue = x;
      best = v;
    }
  }
  return best;
}

/** Below this many candidates top-p sorts them all; above, it first tries the tokens with p >= this. */
const TOP_P_PREFILTER_COUNT = 1024;
const TOP_P_PREFILTER_PROB = 1e-4;

/** Computes target distributions into one reused buffer (allocated once per vocabulary). */
export class TargetDistribution {
  /** [V] probabilities of the last `compute`, summing to 1. */
  readonly probs: Float64Array;
  private readonly scratch: Float64Array; // [V] quickselect workspace
  private readonly order: Int32Array; // [V] token ids sorted for top-p
  private readonly byProbDesc = (a: number, b: number): number => this.probs[b] - this.probs[a] || a - b;

  constructor(readonly V: number) {
    this.probs = new Float64Array(V);
    this.scratch = new Float64Array(V);
    this.order = new Int32Array(V);
  }

  /** p for the row at logits[offset .. offset+V). params.temperature must be > 0. */
  compute(logits: Float32Array, offset: number, params: SamplingParams): Float64Array {
    const { V, probs } = this;
    const invT = 1 / params.temperature;
    let max = -Infinity;
    for (let v = 0; v < V; v++) {
      const x = logits[offset + v] * invT;
      probs[v] = x;
      if (x > max) max = x;
    }
    let cut = -Infinity;
    if (params.topK > 0 && params.topK < V) cut = this.kthLargest(params.topK);
    let sum = 0;
    for (let v = 0; v < V; v++) {
      const x = probs[v];
      const e = x >= cut ? Math.exp(x - max) : 0;
      probs[v] = e;
      sum += e;
    }
    const inv = 1 / sum;
    for (let v = 0; v < V; v++) probs[v] *= inv;
    if (params.topP < 1) this.applyTopP(params.topP);
    return probs;
  }

  /** k-th largest of probs[] (holding scaled logits) by quickselect on a copy. */
  private kthLargest(k: number): number {
    const a = this.scratch;
    a.set(this.probs);
    let lo = 0;
    let hi = this.V - 1;
    const target = k - 1; // index in descending order
    while (lo < hi) {
      const pivot = a[(lo + hi) >> 1];
      let i = lo;
      let j = hi;
      while (i <= j) {
        while (a[i] > pivot) i++;
        while (a[j] < pivot) j--;
        if (i <= j) {
          const t = a[i];
          a[i] = a[j];
          a[j] = t;
          i++;
          j--;
        }
      }
      if (target <= j) hi = j;
      else if (target >= i) lo = i;
      else break;
    }
    return a[target];
  }

  private applyTopP(topP: number): void {
    const { V, probs, order } = this;
    let n = 0;
    let kept = -1;
    let nonzero = 0;
    for (let v = 0; v < V; v++) if (probs[v] > 0) nonzero++;
    if (nonzero > TOP_P_PREFILTER_COUNT) {
      // The tokens above a threshold are a prefix of the full descending order, so if their mass
      // already reaches topP the kept set is the same as with a full sort.
      for (let v = 0; v < V; v++) if (probs[v] >= TOP_P_PREFILTER_PROB) order[n++] = v;
      kept = this.prefixReaching(n, topP);
    }
    if (kept < 0) {
      n = 0;
      for (let v = 0; v < V; v++) if (probs[v] > 0) order[n++] = v;
      kept = this.prefixReaching(n, topP);
      if (kept < 0) kept = n; // rounding: the whole mass fell just short of topP
    }
    let sum = 0;
    for (let i = 0; i < kept; i++) sum += probs[order[i]];
    const inv = 1 / sum;
    // Zero everything, then restore the kept tokens renormalised (order[] still holds their ids).
    for (let i = 0; i < kept; i++) this.scratch[i] = probs[order[i]] * inv;
    probs.fill(0);
    for (let i = 0; i < kept; i++) probs[order[i]] = this.scratch[i];
  }

  /** Sorts order[0..n) by probability and returns the length of the shortest prefix with mass >= topP, or -1. */
  private prefixReaching(n: number, topP: number): number {
    this.order.subarray(0, n).sort(this.byProbDesc);
    let cum = 0;
    for (let i = 0; i < n; i++) {
      cum += this.probs[this.order[i]];
      if (cum >= topP) return i + 1;
    }
    return -1;
  }
}

/** Inverse-CDF draw from probs[0..V) with u in [0,1); skips nothing. */
export function sampleIndex(probs: Float64Array, u: number): number {
  const V = probs.length;
  let acc = 0;
  let last = 0;
  for (let v = 0; v < V; v++) {
    const p = probs[v];
    if (p <= 0) continue;
    acc += p;
    last = v;
    if (u < acc) return v;
  }
  return last; // u landed in the rounding gap above the total mass
}
