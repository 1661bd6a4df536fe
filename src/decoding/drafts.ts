/**
 * Draft sources. Both only propose; verification decides, so neither can change the output.
 * - Mask drafts (bita.md section 4): top-k tokens of each mask row of one group, with softmax probabilities.
 * - Context drafts (prompt lookup, bita.md section 6): the continuation of the latest earlier occurrence of
 *   the context's last n-gram.
 */

import { expNonPositive } from './fastexp.js';
import type { NgramTable } from './ngram.js';
import { SOURCE_CONTEXT, SOURCE_NGRAM } from './tree.js';

/** Top-k candidates per depth from one mask group; depth i (0-based) predicts next-tree depth i+1. */
export class MaskDrafts {
  depths = 0;
  readonly count: Int32Array; // [maxDepths] candidates at each depth
  readonly tokens: Int32Array; // [maxDepths, k] best first
  readonly probs: Float64Array; // [maxDepths, k] softmax probability of each candidate

  constructor(
    readonly maxDepths: number,
    readonly k: number,
  ) {
    this.count = new Int32Array(Math.max(1, maxDepths));
    this.tokens = new Int32Array(Math.max(1, maxDepths * k));
    this.probs = new Float64Array(Math.max(1, maxDepths * k));
  }

  clear(): void {
    this.depths = 0;
  }
}

/**
 * Reads `depths` consecutive mask rows starting at fed row firstRow of logits [q, V] and keeps the
 * top out.k tokens of each with their softmax probabilities (temperature 1: these are confidences
 * for choosing the tree, not the target distribution).
 */
export function draftsFromMasks(
  logits: Float32Array,
  V: number,
  firstRow: number,
  depths: number,
  out: MaskDrafts,
): void {
  const K = out.k;
  const k = Math.min(K, V);
  const n = k > 0 ? Math.min(depths, out.maxDepths) : 0;
  const tokens = out.tokens;
  const vals = out.probs; // holds raw logits until normalised
  for (let d = 0; d < n; d++) {
    const off = (firstRow + d) * V;
    const base = d * K;
    // Pass 1: max and the sorted top-k (insertion; k is small and the threshold test rejects most tokens).
    let max = -Infinity;
    let filled = 0;
    let kth = -Infinity; // smallest kept logit once the top-k is full
    for (let v = 0; v < V; v++) {
      const x = logits[off + v];
      if (x > max) max = x;
      if (filled === k && !(x > kth)) continue;
      let i = filled < k ? filled++ : k - 1;
      while (i > 0 && vals[base + i - 1] < x) {
        vals[base + i] = vals[base + i - 1];
        tokens[base + i] = tokens[base + i - 1];
        i--;
      }
      vals[base + i] = x;
      tokens[base + i] = v;
      if (filled === k) kth = vals[base + k - 1];
    }
    // Pass 2: the softmax normaliser, only a confidence for ranking candidates, so it may be estimated:
    // the top-k terms exactly, the rest from every stride-th token (1 below MASK_STRIDE_FROM_V, where
    // it is exact). Tokens more than MASK_SKIP_NATS below the max skip the exp (< V * e^-20 relative).
    const stride = V >= MASK_STRIDE_FROM_V ? MASK_STRIDE : 1;
    const floor = max - MASK_SKIP_NATS;
    let top = 0;
    let topInSample = 0;
    for (let i = 0; i < filled; i++) {
      const e = expNonPositive(vals[base + i] - max);
      top += e;
      if (tokens[base + i] % stride === 0) topInSample += e;
      vals[base + i] = e;
    }
    let sampled = 0;
    for (let v = 0; v < V; v += stride) {
      const x = logits[off + v];
      if (x > floor) sampled += expNonPositive(x - max);
    }
    const sum = top + Math.max(0, sampled - topInSample) * stride;
    for (let i = 0; i < filled; i++) vals[base + i] /= sum;
    out.count[d] = filled;
  }
  out.depths = n;
}

const MASK_SKIP_NATS = 20;
/** Large vocabularies estimate the normaliser from every MASK_STRIDE-th token: 3 mask rows of a
 *  32000-token vocabulary cost ~1 ms per step in exps otherwise (2-core VM). */
const MASK_STRIDE_FROM_V = 4096;
const MASK_STRIDE = 8;

/**
 * Prompt lookup: chains with distinct first tokens, from the latest earlier occurrences of the
 * context's last n-gram (n = maxNgram down to minNgram), each proposing what followed it. The copy
 * may run past the end of the context into its own output, which extends periodic text naturally.
 * Chain 0 is the latest longest match; the others are alternatives the tree can branch into.
 */
export class ContextDrafts {
  chains = 0;
  readonly length: Int32Array; // [maxChains] tokens in each chain
  readonly tokens: Int32Array; // [maxChains, maxLength]
  readonly source: Uint8Array; // [maxChains] SOURCE_CONTEXT (prompt lookup) or SOURCE_NGRAM
  private readonly scratch: Int32Array; // [maxLength]

  constructor(
    readonly maxChains: number,
    readonly maxLength: number,
  ) {
    this.length = new Int32Array(Math.max(1, maxChains));
    this.tokens = new Int32Array(Math.max(1, maxChains * maxLength));
    this.source = new Uint8Array(Math.max(1, maxChains)).fill(SOURCE_CONTEXT);
    this.scratch = new Int32Array(Math.max(1, maxLength));
  }

  clear(): void {
    this.chains = 0;
  }

  /**
   * Puts the n-gram walk first (chain 0), ahead of the prompt-lookup chains already found; a lookup
   * chain with the same first token is dropped (the trees would share that node anyway), and the
   * last chain falls off when all slots are taken.
   */
  prependNgram(table: NgramTable, tokens: Int32Array, length: number): void {
    const L = this.maxLength;
    if (this.maxChains === 0 || L === 0) return;
    const count = table.chain(tokens, length, this.scratch, 0, L);
    if (count === 0) return;
    const first = this.scratch[0];
    let kept = 0;
    for (let c = 0; c < this.chains; c++) {
      if (this.tokens[c * L] === first) continue;
      if (kept !== c) this.move(c, kept);
      kept++;
    }
    kept = Math.min(kept, this.maxChains - 1);
    for (let c = kept - 1; c >= 0; c--) this.move(c, c + 1);
    this.tokens.set(this.scratch.subarray(0, count), 0);
    this.length[0] = count;
    this.source[0] = SOURCE_NGRAM;
    this.chains = kept + 1;
  }

  private move(from: number, to: number): void {
    const L = this.maxLength;
    this.tokens.copyWithin(to * L, from * L, from * L + L);
    this.length[to] = this.length[from];
    this.source[to] = this.source[from];
  }
}

export function contextDrafts(
  tokens: Int32Array,
  length: number,
  minNgram: number,
  maxNgram: number,
  out: ContextDrafts,
): void {
  out.chains = 0;
  const L = out.maxLength;
  if (L === 0 || out.maxChains === 0) return;
  for (let n = Math.min(maxNgram, length - 1); n >= minNgram && out.chains < out.maxChains; n--) {
    const tail = length - n;
    for (let s = tail - 1; s >= 0 && out.chains < out.maxChains; s--) {
      let j = 0;
      while (j < n && tokens[s + j] === tokens[tail + j]) j++;
      if (j < n) continue;
      const from = s + n;
      const first = tokens[from];
      let seen = false;
      for (let c = 0; c < out.chains; c++) if (out.tokens[c * L] === first) seen = true;
      if (seen) continue;
      const base = out.chains * L;
      for (let i = 0; i < L; i++) {
        const x = from + i;
        out.tokens[base + i] = x < length ? tokens[x] : out.tokens[base + x - length];
      }
      out.source[out.chains] = SOURCE_CONTEXT;
      out.length[out.chains++] = L;
    }
  }
}

