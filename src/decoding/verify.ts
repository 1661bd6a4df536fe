/**
 * Verification (bita.md section 4) and acceptance.
 *
 * Greedy: y = argmax at b; accept the child whose token is y, continue from it; the last y is the
 * bonus token. Output equals plain greedy decoding token for token.
 *
 * Sampling: multi-candidate speculative sampling (SpecInfer's recursive rejection) with deterministic
 * drafts. A drafted child is a point mass q = delta(c). At a node with target p and children
 * c1..cm (distinct tokens): accept c1 with probability min(1, p(c1)/q(c1)) = p(c1); on rejection
 * the residual is normalize(max(p - q, 0)), i.e. p with c1's mass removed; accept c2 with
 * probability r(c2) = p(c2) / (1 - p(c1)); and so on; if all are rejected, sample the bonus from
 * the final residual. Then P(out = ci) = prod_{j<i}(1 - r(cj)) * r(ci) = p(ci), and every other token
 * has probability (1 - sum p(ci)) * p(t) / (1 - sum p(ci)) = p(t): exactly p. An accepted child
 * continues the walk at its own row, whose logits condition on exactly the accepted path.
 */
import { argmax, type SamplingParams, type TargetDistribution } from './sampling.js';
import type { Rng } from './rng.js';
import { SOURCE_CONTEXT, SOURCE_MASK, SOURCE_NGRAM, type DraftTree } from './tree.js';

/** The accepted path of one verification. rows[0] = 0 (b); rows[1..length) accepted nodes. */
export class VerifiedPath {
  length = 0;
  bonus = 0;
  readonly rows: Int32Array;
  constructor(capacity: number) {
    this.rows = new Int32Array(capacity);
  }
  /** Accepted draft nodes (committed tokens - 1). */
  get accepted(): number {
    return this.length - 1;
  }
}

/** logits: [q, V] of the fed rows; node i's logits are row i. */
export function verifyGreedy(tree: DraftTree, logits: Float32Array, V: number, out: VerifiedPath): VerifiedPath {
  let node = 0;
  out.rows[0] = 0;
  out.length = 1;
  for (;;) {
    const y = argmax(logits, node * V, V);
    const child = tree.findChild(node, y);
    if (child < 0) {
      out.bonus = y;
      return out;
    }
    out.rows[out.length++] = child;
    node = child;
  }
}

/** Lossless sampled verification; params.temperature > 0. dist's buffer is overwritten. */
export function verifySampling(
  tree: DraftTree,
  logits: Float32Array,
  V: number,
  params: SamplingParams,
  dist: TargetDistribution,
  rng: Rng,
  out: VerifiedPath,
): VerifiedPath {
  let node = 0;
  out.rows[0] = 0;
  out.length = 1;
  for (;;) {
    const p = dist.compute(logits, node * V, params);
    let remaining = 1; // mass of the residual: 1 - sum of rejected candidates' p
    let accepted = -1;
    for (let c = tree.firstChild[node]; c >= 0; c = tree.nextSibling[c]) {
      const t = tree.token[c];
      const pc = p[t];
      if (pc <= 0) continue;
      // pc >= remaining only through rounding when c holds all that is left: accept outright.
      if (pc >= remaining || rng.next() * remaining < pc) {
        accepted = c;
        break;
      }
      remaining -= pc;
      p[t] = 0; // residual = max(p - delta(c), 0), kept unnormalised
    }
    if (accepted < 0) {
      out.bonus = sampleResidual(p, dist.support, dist.supportSize, rng.next() * remaining);
      return out;
    }
    out.rows[out.length++] = accepted;
    node = accepted;
  }
}

/** Inverse CDF over an unnormalised residual (p restricted to its support); u is in [0, its mass). */
function sampleResidual(p: Float64Array, support: Int32Array, size: number, u: number): number {
  let acc = 0;
  let last = -1;
  for (let i = 0; i < size; i++) {
    const v = support[i];
    if (p[v] <= 0) continue; // a rejected draft
    acc += p[v];
    last = v;
    if (u < acc) return v;
  }
  if (last < 0) throw new RangeError('empty residual distribution');
  return last;
}

/** What a verified path means for the cache and for the next tree. */
export class Acceptance {
  /** Fed rows to append to the KV cache, in path order (b first): path.rows[0..commitCount). */
  commitCount = 0;
  /** First fed row of the masks that draft the next tree, -1 if no group applies. */
  nextMaskRow = -1;
  /** How many of those mask rows apply (next-tree depths 1..nextMaskDepths). */
  nextMaskDepths = 0;
  acceptedMask = 0; // accepted nodes proposed by the masks (also counted if context proposed them too)
  acceptedContext = 0; // accepted nodes proposed by the context draft
  acceptedBoth = 0; // accepted nodes proposed by both
  acceptedNgram = 0; // accepted nodes proposed by the n-gram table
}

/**
 * acceptPath: the rows to commit are b plus the accepted nodes, in path order. The next tree's masks
 * come from the group attached to the deepest accepted node x: those masks saw exactly the committed
 * context except the new bonus token, and mask j predicts position pos(x) + 2 + j, i.e. depth j+1
 * below the new bonus (bita.md section 4). If x has no group, the nearest ancestor a with one is used,
 * shifted: its mask j predicts pos(a) + 2 + j, so masks j >= depth(x) - depth(a) still land on the next
 * tree's depths 1, 2, ... They saw a shorter context (weaker, never wrong: drafts cannot change the
 * output). If even the shift uses up the group, the next tree has context drafts only.
 */
export function acceptPath(tree: DraftTree, path: VerifiedPath, M: number, out: Acceptance): Acceptance {
  out.commitCount = path.length;
  out.acceptedMask = 0;
  out.acceptedContext = 0;
  out.acceptedBoth = 0;
  out.acceptedNgram = 0;
  for (let i = 1; i < path.length; i++) {
    const s = tree.source[path.rows[i]];
    if (s & SOURCE_NGRAM) out.acceptedNgram++;
    if (s & SOURCE_MASK) out.acceptedMask++;
    if (s & SOURCE_CONTEXT) out.acceptedContext++;
    if (s & SOURCE_MASK && s & SOURCE_CONTEXT) out.acceptedBoth++;
  }
  out.nextMaskRow = -1;
  out.nextMaskDepths = 0;
  if (M === 0) return out;
  const deepest = path.rows[path.length - 1];
  for (let i = path.length - 1; i >= 0; i--) {
    const a = path.rows[i];
    const g = tree.group[a];
    if (g < 0) continue;
    const shift = tree.depth[deepest] - tree.depth[a];
    if (shift < M) {
      out.nextMaskRow = tree.groupRow(g, M) + shift;
      out.nextMaskDepths = M - shift;
    }
    break;
  }
  return out;
}
