/**
 * Draft sources. Both only propose; verification decides, so neither can change the output.
 * - Mask drafts (bita.md section 4): top-k tokens of each mask row of one group, with softmax probabilities.
 * - Context drafts (prompt lookup, bita.md section 6): the continuation of the latest earlier occurrence of
 *   the context's last n-gram.
 */

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
  const k = Math.min(out.k, V);
  const n = Math.min(depths, out.maxDepths);
  for (let d = 0; d < n; d++) {
    const off = (firstRow + d) * V;
    const base = d * out.k;
    let max = -Infinity;
    for (let v = 0; v < V; v++) if (logits[off + v] > max) max = logits[off + v];
    let sum = 0;
    let filled = 0;
    for (let v = 0; v < V; v++) {
      const x = logits[off + v];
      sum += Math.exp(x - max);
      // Insertion into the sorted top-k (k is small); probs[] holds raw logits until normalised.
      if (filled < k || x > out.probs[base + filled - 1]) {
        let i = filled < k ? filled++ : filled - 1;
        while (i > 0 && out.probs[base + i - 1] < x) {
          out.probs[base + i] = out.probs[base + i - 1];
          out.tokens[base + i] = out.tokens[base + i - 1];
          i--;
        }
        out.probs[base + i] = x;
        out.tokens[base + i] = v;
      }
    }
    for (let i = 0; i < filled; i++) out.probs[base + i] = Math.exp(out.probs[base + i] - max) / sum;
    out.count[d] = filled;
  }
  out.depths = n;
}

/**
 * Prompt lookup: for n = maxNgram down to minNgram, find the latest earlier occurrence of the last n
 * tokens of tokens[0..length) and copy what followed it (up to out.length tokens) into out. The copy
 * may run past the end of the context into its own output, which extends periodic text naturally.
 * Returns the number of draft tokens (0 = no match).
 */
export function contextDraft(
  tokens: Int32Array,
  length: number,
  minNgram: number,
  maxNgram: number,
  out: Int32Array,
): number {
  for (let n = Math.min(maxNgram, length - 1); n >= minNgram; n--) {
    const tail = length - n;
    // Latest start s < tail (so at least one token follows the earlier occurrence).
    for (let s = tail - 1; s >= 0; s--) {
      let j = 0;
      while (j < n && tokens[s + j] === tokens[tail + j]) j++;
      if (j < n) continue;
      const from = s + n;
      let count = 0;
      for (; count < out.length; count++) {
        const x = from + count;
        out[count] = x < length ? tokens[x] : out[x - length];
      }
      return count;
    }
  }
  return 0;
}
