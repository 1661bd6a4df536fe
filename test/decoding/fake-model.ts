/**
 * Scripted fake models for the decoding core. FakeModel implements TreeModel without knowing
 * anything about trees: every fed row's visible context is reconstructed from the bias and the
 * fake's own cache, validated against bita.md section 2 (cache fully visible, position = visible keys
 * - 1, no normal row sees a mask, a mask sees exactly masks 0..j of its own group), and the logits
 * are a deterministic function of that context. So a wrong bias, position or commit shows up as
 * different tokens or a thrown error, not as a silently passing test.
 */
import { NEG, type TreeModel } from '../../src/decoding/model.js';

export function hash32(a: number, b: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x632be5ab, 0xc2b2ae35);
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  h ^= h >>> 12;
  h = Math.imul(h, 0x297a2d39);
  h ^= h >>> 15;
  return h >>> 0;
}

/** Uniform in [0, 1) from a hash. */
function unit(h: number): number {
  return h / 4294967296;
}

export interface FakeSpec {
  V: number;
  /** Mask tokens per group (0 = no adapters). */
  M: number;
  maxPositions: number;
  seed: number;
  /** How many trailing tokens the next-token function depends on. Default 2. */
  order?: number;
  /** Logit spread; larger = more peaked distributions. Default 4. */
  scale?: number;
  /** Probability that a mask's top-1 is the true greedy future token. Default 0.6. */
  maskAccuracy?: number;
}

export class FakeModel implements TreeModel {
  readonly vocabSize: number;
  readonly maskIds: readonly number[];
  readonly maxPositions: number;
  forwards = 0;
  rowsFed = 0;
  maxRowsSeen = 0;
  private cache: number[] = [];
  private lastIds: number[] = [];
  private lastPositions: number[] = [];
  private out = new Float32Array(0);
  private readonly memo = new Map<string, Float32Array>();
  private readonly order: number;
  private readonly scale: number;
  private readonly maskAccuracy: number;

  constructor(readonly spec: FakeSpec) {
    this.vocabSize = spec.V;
    this.maskIds = Array.from({ length: spec.M }, (_, j) => spec.V + j);
    this.maxPositions = spec.maxPositions;
    this.order = spec.order ?? 2;
    this.scale = spec.scale ?? 4;
    this.maskAccuracy = spec.maskAccuracy ?? 0.6;
  }

  get cacheLength(): number {
    return this.cache.length;
  }

  /** The model's next-token logits after `context` (the ground truth for every test). */
  logitsFor(context: readonly number[]): Float32Array {
    const n = Math.min(this.order, context.length);
    const key = context.slice(context.length - n).join(',');
    let row = this.memo.get(key);
    if (row) return row;
    let h = hash32(this.spec.seed, n);
    for (let i = context.length - n; i < context.length; i++) h = hash32(h, context[i]);
    row = new Float32Array(this.spec.V);
    for (let v = 0; v < this.spec.V; v++) row[v] = this.scale * unit(hash32(h, v + 1000));
    this.memo.set(key, row);
    return row;
  }

  greedyNext(context: readonly number[]): number {
    const row = this.logitsFor(context);
    let best = 0;
    for (let v = 1; v < row.length; v++) if (row[v] > row[best]) best = v;
    return best;
  }

  /** Mask j after `context` aims at the greedy token j+2 places ahead, right with maskAccuracy. */
  private maskLogits(context: readonly number[], j: number, into: Float32Array, off: number): void {
    const V = this.spec.V;
    const rolled = context.slice();
    for (let k = 0; k < j + 2; k++) rolled.push(this.greedyNext(rolled));
    const truth = rolled[rolled.length - 1];
    let h = hash32(this.spec.seed ^ 0x5bd1e995, j);
    for (const t of context) h = hash32(h, t);
    const right = unit(hash32(h, 1)) < this.maskAccuracy;
    const guess = right ? truth : hash32(h, 2) % V;
    for (let v = 0; v < V; v++) into[off + v] = unit(hash32(h, v + 7));
    into[off + guess] = 3;
    into[off + truth] = Math.max(into[off + truth], right ? 3 : 1.5); // wrong guesses keep the truth in the top-k
  }

  forward(ids: Int32Array, positions: Int32Array, bias: Float32Array, q: number): Float32Array {
    const V = this.spec.V;
    const L = this.cache.length;
    const width = L + q;
    if (q < 1) throw new Error('q must be >= 1');
    this.forwards++;
    this.rowsFed += q;
    this.maxRowsSeen = Math.max(this.maxRowsSeen, q);
    if (this.out.length < q * V) this.out = new Float32Array(q * V);
    for (let i = 0; i < q; i++) {
      const pos = positions[i];
      if (pos < 0 || pos >= this.maxPositions) throw new Error(`row ${i}: position ${pos} outside the model`);
      const rowBias = bias.subarray(i * width, (i + 1) * width);
      for (let c = 0; c < width; c++) {
        if (rowBias[c] !== 0 && rowBias[c] !== NEG) throw new Error(`row ${i} col ${c}: bias ${rowBias[c]}`);
      }
      for (let c = 0; c < L; c++) if (rowBias[c] !== 0) throw new Error(`row ${i} cannot see cache row ${c}`);
      if (rowBias[L + i] !== 0) throw new Error(`row ${i} does not see itself`);
      // Visible keys by position: cache rows at 0..L-1, then the visible fed rows.
      const keys: { pos: number; id: number }[] = this.cache.map((id, p) => ({ pos: p, id }));
      for (let j = 0; j < q; j++) if (rowBias[L + j] === 0) keys.push({ pos: positions[j], id: ids[j] });
      keys.sort((a, b) => a.pos - b.pos);
      keys.forEach((k, n) => {
        if (k.pos !== n) throw new Error(`row ${i}: visible positions are not 0..${keys.length - 1}`);
      });
      if (pos !== keys.length - 1) throw new Error(`row ${i}: position ${pos} but ${keys.length} visible keys`);
      const id = ids[i];
      const firstMask = keys.findIndex((k) => k.id >= V);
      const context = (firstMask < 0 ? keys : keys.slice(0, firstMask)).map((k) => k.id);
      if (context.some((t) => t >= V)) throw new Error(`row ${i}: a mask inside the normal context`);
      if (id < V) {
        if (firstMask >= 0) throw new Error(`normal row ${i} sees a mask`);
        this.out.set(this.logitsFor(context), i * V);
      } else {
        const j = id - V;
        if (j >= this.spec.M) throw new Error(`row ${i}: id ${id} is no mask`);
        const masks = keys.slice(firstMask).map((k) => k.id - V);
        if (masks.length !== j + 1 || masks.some((m, n) => m !== n)) {
          throw new Error(`mask row ${i} (j=${j}) sees masks [${masks}]`);
        }
        this.maskLogits(context, j, this.out, i * V);
      }
    }
    this.lastIds = Array.from(ids.subarray(0, q));
    this.lastPositions = Array.from(positions.subarray(0, q));
    return this.out;
  }

  commit(rows: Int32Array, count: number): void {
    for (let k = 0; k < count; k++) {
      const r = rows[k];
      if (r >= this.lastIds.length) throw new Error(`commit of row ${r} that was not fed`);
      if (this.lastIds[r] >= this.spec.V) throw new Error(`commit of mask row ${r}`);
      if (this.lastPositions[r] !== this.cache.length) {
        throw new Error(`commit of row ${r} at position ${this.lastPositions[r]}, cache has ${this.cache.length}`);
      }
      this.cache.push(this.lastIds[r]);
    }
  }

  truncate(n: number): void {
    if (n > this.cache.length) throw new Error('truncate beyond the cache');
    this.cache.length = n;
  }

  /** Committed cache contents (for assertions). */
  cached(): number[] {
    return this.cache.slice();
  }
}

/** Plain greedy decoding straight from the model's function: no cache, no decoder. */
export function referenceGreedy(model: FakeModel, prompt: readonly number[], maxTokens: number): number[] {
  const seq = prompt.slice();
  const out: number[] = [];
  while (out.length < maxTokens && seq.length < model.maxPositions) {
    const y = model.greedyNext(seq);
    seq.push(y);
    out.push(y);
  }
  return out;
}
