/**
 * The one seam of the decoding core: a KV-cached forward pass over a set of fed rows.
 * The onnxruntime engine implements it; tests implement it with scripted fakes.
 */

/** Hidden attention bias. Never -Infinity: a fully masked row becomes NaN in ORT (platform-notes). */
export const NEG = -1e9;

export interface TreeModel {
  readonly vocabSize: number; // V; logits are V wide
  readonly maskIds: readonly number[]; // BiTA mask token ids V..V+M-1 ([] = no adapters: plain decoding only)
  readonly maxPositions: number;
  readonly cacheLength: number; // committed rows in the KV cache
  /** Run q rows over [cache | rows]. ids, positions: first q entries used. bias: Float32Array, first
   *  q*(cacheLength+q) entries used, row-major [q, cacheLength+q], 0 visible / NEG hidden, every row sees itself.
   *  Returns logits [q, V] row-major (may be a reused buffer, valid until the next forward call). */
  forward(ids: Int32Array, positions: Int32Array, bias: Float32Array, q: number): Float32Array;
  /** Append the K/V of these fed rows of the last forward (row indices, in path order) to the cache. */
  commit(rows: Int32Array, count: number): void;
  /** Drop the cache back to n rows (n <= cacheLength). */
  truncate(n: number): void;
}
