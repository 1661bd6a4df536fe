/**
 * The target distribution p that sampled output must follow exactly: softmax(logits / T), then
 * top-k, then top-p, renormalised. Plain and tree decoding call the same code, so "exact" means
 * exactly this function. Greedy (T = 0) bypasses it with argmax (lowest id wins ties).
 */
import { expNonPositive } from './fastexp.js';

export interface SamplingParams {
  /** 0 = greedy (argmax); any T > 0 samples, the tiniest too (see MAX_INV_T). */
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

/** Tokens more than this many nats below the max would get p < e^-40 = 4e-18: they get exactly 0. */
const SKIP_NATS = 40;
/** Top-p buckets tokens by (max - logit/T) so only the bucket where the mass crosses topP is sorted. */
const BUCKETS_PER_NAT = 64;
const BUCKETS = SKIP_NATS * BUCKETS_PER_NAT + 1;
const HEAP_SELECT_MAX_K = 256;
/**
 * Cap on 1/T: logit / T stays finite for every T > 0 and every finite float32 logit
 * (3.4e38 * 1e250 < 1.8e308). Uncapped, 1/T is Infinity below T ~ 5.6e-309 and Infinity - Infinity
 * made every probability NaN. The cap changes no distribution: at 1/T = 1e250 logits that differ at
 * all (by at least 2^-149) are over 1e204 nats apart, far past SKIP_NATS, so every T below 1e-250
 * already gives the T -> 0 limit: one-hot on the maximum, split evenly between exact ties.
 */
const MAX_INV_T = 1e250;
const INSERTION_SORT_MAX = 64;

/** Computes target distributions into one reused buffer (allocated once per vocabulary). */
export class TargetDistribution {
  /** [V] probabilities of the last `compute`, summing to 1 (0 outside the support). */
  readonly probs: Float64Array;
  /** [V] token ids with p > 0 after compute(), ascending: support[0..supportSize). Lets the
   *  normalisation, top-p and draws skip the (for top-k: nearly all) zero tokens. */
  readonly support: Int32Array;
  supportSize = 0;
  private readonly scratch: Float64Array; // [V] quickselect workspace
  private readonly order: Int32Array; // [V] token ids of the crossing top-p bucket
  private readonly bucket: Uint16Array; // [V] top-p bucket of each token
  private readonly bucketMass: Float64Array; // [BUCKETS]
  private readonly byProbDesc = (a: number, b: number): number => this.probs[b] - this.probs[a] || a - b;

  constructor(readonly V: number) {
    this.probs = new Float64Array(V);
    this.support = new Int32Array(V);
    this.scratch = new Float64Array(V);
    this.order = new Int32Array(V);
    this.bucket = new Uint16Array(V);
    this.bucketMass = new Float64Array(BUCKETS);
  }

  /** p for the row at logits[offset .. offset+V). params.temperature must be > 0. */
  compute(logits: Float32Array, offset: number, params: SamplingParams): Float64Array {
    const { V, probs, bucket, support } = this;
    const invT = Math.min(1 / params.temperature, MAX_INV_T);
    let max = -Infinity;
    for (let v = 0; v < V; v++) {
      const x = logits[offset + v] * invT;
      probs[v] = x;
      if (x > max) max = x;
    }
    let cut = -Infinity;
    if (params.topK > 0 && params.topK < V) cut = this.kthLargest(params.topK);
    if (max - SKIP_NATS > cut) cut = max - SKIP_NATS;
    const topP = params.topP < 1;
    let sum = 0;
    let n = 0;
    for (let v = 0; v < V; v++) {
      const x = probs[v];
      if (x >= cut) {
        const e = expNonPositive(x - max);
        probs[v] = e;
        sum += e;
        support[n++] = v;
        if (topP) bucket[v] = ((max - x) * BUCKETS_PER_NAT) | 0; // monotone in p; <= BUCKETS - 1
      } else probs[v] = 0;
    }
    this.supportSize = n;
    this.scaleSupport(1 / sum);
    if (topP) this.applyTopP(params.topP);
    return probs;
  }

  /** Inverse-CDF draw from the last computed distribution, u in [0, 1). */
  sample(u: number): number {
    const { probs, support } = this;
    let acc = 0;
    for (let i = 0; i < this.supportSize; i++) {
      acc += probs[support[i]];
      if (u < acc) return support[i];
    }
    return support[this.supportSize - 1]; // u landed in the rounding gap above the total mass
  }

  /** Sorts order[0..m) by probability descending, ties by id: no allocation. */
  private insertionSort(m: number): void {
    const { order, probs } = this;
    for (let i = 1; i < m; i++) {
      const v = order[i];
      const p = probs[v];
      let j = i - 1;
      while (j >= 0 && (probs[order[j]] < p || (probs[order[j]] === p && order[j] > v))) {
        order[j + 1] = order[j];
        j--;
      }
      order[j + 1] = v;
    }
  }

  private scaleSupport(k: number): void {
    const { probs, support } = this;
    for (let i = 0; i < this.supportSize; i++) probs[support[i]] *= k;
  }

  /** k-th largest of probs[] (holding scaled logits): a min-heap of the k largest in one pass for
   *  small k (most tokens fail one comparison), quickselect on a copy otherwise. */
  private kthLargest(k: number): number {
    return k <= HEAP_SELECT_MAX_K ? this.kthByHeap(k) : this.kthByQuickselect(k);
  }

  private kthByHeap(k: number): number {
    const { probs, V } = this;
    const h = this.scratch; // h[0..k) min-heap
    for (let i = 0; i < k; i++) {
      // sift up
      const x = probs[i];
      let j = i;
      while (j > 0) {
        const up = (j - 1) >> 1;
        if (h[up] <= x) break;
        h[j] = h[up];
        j = up;
      }
      h[j] = x;
    }
    let min = h[0];
    for (let v = k; v < V; v++) {
      const x = probs[v];
      if (x <= min) continue;
      // replace the root and sift down
      let j = 0;
      for (;;) {
        let c = 2 * j + 1;
        if (c >= k) break;
        if (c + 1 < k && h[c + 1] < h[c]) c++;
        if (h[c] >= x) break;
        h[j] = h[c];
        j = c;
      }
      h[j] = x;
      min = h[0];
    }
    return min;
  }

  private kthByQuickselect(k: number): number {
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

  /**
   * Keeps the shortest most-likely prefix of tokens whose mass reaches topP (the same set a full
   * descending sort gives): whole buckets above the crossing bucket, then the crossing bucket sorted.
   */
  private applyTopP(topP: number): void {
    const { probs, bucket, bucketMass: mass, order, support } = this;
    const n = this.supportSize;
    mass.fill(0);
    for (let i = 0; i < n; i++) mass[bucket[support[i]]] += probs[support[i]];
    let cum = 0;
    let crossing = 0;
    while (crossing < BUCKETS - 1 && cum + mass[crossing] < topP) cum += mass[crossing++];
    let m = 0;
    for (let i = 0; i < n; i++) if (bucket[support[i]] === crossing) order[m++] = support[i];
    if (m <= INSERTION_SORT_MAX) this.insertionSort(m);
    else order.subarray(0, m).sort(this.byProbDesc); // typed-array sort with a comparator allocates
    // Zero the crossing bucket's tail past the point where the mass reaches topP.
    let i = 0;
    while (i < m && cum < topP) cum += probs[order[i++]];
    for (; i < m; i++) probs[order[i]] = 0;
    // Drop the buckets below the crossing one and compact the support (ascending ids kept).
    let kept = 0;
    let sum = 0;
    for (let j = 0; j < n; j++) {
      const v = support[j];
      if (bucket[v] > crossing) probs[v] = 0;
      if (probs[v] > 0) {
        support[kept++] = v;
        sum += probs[v];
      }
    }
    this.supportSize = kept;
    this.scaleSupport(1 / sum);
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
