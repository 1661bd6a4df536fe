/**
 * Attention bias and rotary positions for fed rows (bita.md section 2).
 *
 * Every fed row hangs off at most one earlier fed row (its parent) and sees: the whole KV cache,
 * its parent's visible fed rows, and itself. That single rule covers all cases:
 * - b (the unfed bonus token) has no parent: it sees the cache and itself;
 * - a tree node's parent is its tree parent (b for depth 1), so it sees exactly its path;
 * - mask 0 of a group hangs off the node the group is attached to and mask j off mask j-1, so mask j
 *   sees the path to that node and masks 0..j of its own group, never other groups, and no normal
 *   row ever sees a mask (masks are nobody's parent except the next mask);
 * - a prefill chunk is a chain (row i hangs off row i-1), i.e. causal.
 * Position = number of visible non-prefix keys - 1 = cacheLength + (length of the parent chain),
 * which gives L + d for a node at depth d and L + d + 1 + j for mask j of a group attached at depth d.
 * The prefix columns are added inside the graph (package-format.md), not here.
 */
import { NEG } from './model.js';

/**
 * parentRow: [q] fed-row index of each row's parent, -1 for none; parents precede children.
 * Fills bias [q, cacheLength+q] row-major (0 visible / NEG hidden) and positions [q].
 */
export function rowsAttentionBias(
  parentRow: Int32Array,
  q: number,
  cacheLength: number,
  bias: Float32Array,
  positions: Int32Array,
): void {
  const width = cacheLength + q;
  for (let i = 0; i < q; i++) {
    const start = i * width;
    bias.fill(0, start, start + cacheLength);
    const p = parentRow[i];
    if (p < 0) {
      bias.fill(NEG, start + cacheLength, start + width);
      positions[i] = cacheLength;
    } else {
      if (p >= i) throw new RangeError(`row ${i} has parent ${p}: parents must precede children`);
      // The parent's fed-row columns after itself are all hidden, so copying its row is exact.
      const parentStart = p * width;
      bias.copyWithin(start + cacheLength, parentStart + cacheLength, parentStart + width);
      positions[i] = positions[p] + 1;
    }
    bias[start + cacheLength + i] = 0;
  }
}
