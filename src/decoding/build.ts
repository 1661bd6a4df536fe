/**
 * buildTree: one dynamic draft tree under a row budget (bita.md section 6).
 *
 * Candidates: a mask child of any node at depth d is one of the top-k tokens of mask d (mask
 * predictions do not depend on the drafted path), scored parentScore * p; each context-draft chain
 * hangs below the root, its first token scored contextRate (chain 0) or contextAltRate (the
 * alternatives) and every further token another factor contextRate. All are expanded best-first from one heap
 * (k-best enumeration: popping an item pushes its next sibling and its first child), so nodes enter
 * in non-increasing score order and every prefix of the node list is a connected tree. A path found by
 * both sources is one node (max score, both source bits).
 *
 * Rows: budget = 1 (b) + nodes + M per mask group. Group 0 goes on the root when its learned gain beats
 * the nodes it displaces, and on every exploration step (so weak masks stop costing rows, and the gain
 * keeps being measured). Further groups go on the nodes where the
 * accepted path most likely ends, P(end at x) = score(x) - sum of its children's scores, as long as
 * P(end) * groupGain beats the scores of the M lowest-scored nodes they displace.
 */
import type { ContextDrafts, MaskDrafts } from './drafts.js';
import { CONTEXT_ALT_HEAD, CONTEXT_MAIN, SOURCE_MASK, type DraftTree } from './tree.js';

export interface BuildLimits {
  /** Rows this step may feed (>= 1). */
  budget: number;
  /** Masks per group (0 = no adapters). */
  M: number;
  /** Deepest node allowed (context length). */
  maxDepth: number;
  /** Deepest node that may still carry a mask group (its masks need positions too). */
  maxGroupDepth: number;
  /** Expected extra committed tokens a mask group at the end of the accepted path brings. */
  groupGain: number;
  /** Probability that a context-draft token is accepted given its parent was (chain 0's first token and
   *  every continuation token). */
  contextRate: number;
  /** The same for the first token of an alternative chain (chains 1..). */
  contextAltRate: number;
  /** Reserve group 0 on the root regardless of its expected gain (to keep measuring it). */
  exploreMasks: boolean;
}

const KIND_MASK = 0;
const KIND_CONTEXT = 1;

export class TreeBuilder {
  // Max-heap of candidate items, all [capacity].
  private heapSize = 0;
  private readonly hScore: Float64Array;
  private readonly hParent: Int32Array; // node the candidate would hang off
  private readonly hKind: Uint8Array;
  private readonly hIndex: Int32Array; // mask rank, or chain * maxLength + position in the chain
  private readonly pEnd: Float64Array; // [treeCapacity]

  /** treeCapacity: most rows of a tree; maxContextTokens: all context-draft tokens (chains x length). */
  constructor(treeCapacity: number, maxContextTokens: number) {
    // Every pop pushes at most two items (net +1) and pops are bounded by nodes + context merges;
    // the start pushes one mask item and one item per chain.
    const capacity = treeCapacity + 2 * maxContextTokens + 4;
    this.hScore = new Float64Array(capacity);
    this.hParent = new Int32Array(capacity);
    this.hKind = new Uint8Array(capacity);
    this.hIndex = new Int32Array(capacity);
    this.pEnd = new Float64Array(treeCapacity);
  }

  /**
   * Fills `tree` (already reset to its root) from the drafts. Returns the number of rows the tree feeds.
   */
  build(tree: DraftTree, masks: MaskDrafts, context: ContextDrafts, limits: BuildLimits): number {
    const { M } = limits;
    const budget = Math.min(limits.budget, tree.capacity);
    const groupFits = M > 0 && budget >= 1 + M && limits.maxGroupDepth >= 0;
    const forced = groupFits && limits.exploreMasks;
    const nodeBudget = budget - 1 - (forced ? M : 0);
    this.heapSize = 0;
    if (nodeBudget > 0 && limits.maxDepth > 0) {
      this.pushMaskChild(tree, masks, 0, 0);
      for (let c = 0; c < context.chains; c++) {
        if (context.length[c] > 0) {
          this.push(c === 0 ? limits.contextRate : limits.contextAltRate, 0, KIND_CONTEXT, c * context.maxLength);
        }
      }
      while (this.heapSize > 0 && tree.nodeCount < nodeBudget) this.expand(tree, masks, context, limits);
    }
    if (forced || (groupFits && this.rootGroupPays(tree, budget, limits))) {
      tree.attachGroup(0);
      this.addGroups(tree, budget, limits);
    }
    return tree.rows(M);
  }

  /**
   * Group 0 costs M rows; it pays when the mask tokens it brings (groupGain, learned) beat the scores
   * of the lowest nodes it displaces. If so, those nodes are removed (they are the newest: nodes
   * enter in non-increasing score order, so the rest stays a connected tree).
   */
  private rootGroupPays(tree: DraftTree, budget: number, limits: BuildLimits): boolean {
    const drop = Math.max(0, limits.M - (budget - tree.rows(limits.M)));
    if (drop > tree.nodeCount) return false;
    let lost = 0;
    for (let i = tree.size - drop; i < tree.size; i++) lost += tree.score[i];
    if (!(limits.groupGain > lost)) return false;
    for (let i = 0; i < drop; i++) tree.removeLast();
    return true;
  }

  private expand(tree: DraftTree, masks: MaskDrafts, context: ContextDrafts, limits: BuildLimits): void {
    const score = this.hScore[0];
    const parent = this.hParent[0];
    const kind = this.hKind[0];
    const index = this.hIndex[0];
    this.pop();
    const depth = tree.depth[parent] + 1;
    let token: number;
    if (kind === KIND_MASK) {
      token = masks.tokens[(depth - 1) * masks.k + index];
      // Next sibling: the next-ranked mask candidate under the same parent.
      if (index + 1 < masks.count[depth - 1]) {
        const p = masks.probs[(depth - 1) * masks.k + index + 1];
        this.push(tree.score[parent] * p, parent, KIND_MASK, index + 1);
      }
    } else {
      token = context.tokens[index];
    }
    const source = kind === KIND_MASK ? SOURCE_MASK : context.source[(index / context.maxLength) | 0];
    let node = tree.findChild(parent, token);
    if (node >= 0) {
      tree.source[node] |= source;
      if (score > tree.score[node]) tree.score[node] = score;
    } else {
      node = tree.addNode(parent, token, source, score);
      if (depth < limits.maxDepth) this.pushMaskChild(tree, masks, node, depth);
    }
    if (kind === KIND_CONTEXT) {
      const L = context.maxLength;
      const chain = (index / L) | 0;
      const at = index - chain * L;
      if (tree.contextRole[node] === 0) tree.contextRole[node] = at === 0 && chain > 0 ? CONTEXT_ALT_HEAD : CONTEXT_MAIN;
      if (at + 1 < context.length[chain] && depth < limits.maxDepth) {
        this.push(score * limits.contextRate, node, KIND_CONTEXT, index + 1);
      }
    }
  }

  /** Pushes the best mask candidate for a child of `node` (at depth+1), if that depth has masks. */
  private pushMaskChild(tree: DraftTree, masks: MaskDrafts, node: number, depth: number): void {
    if (depth < masks.depths && masks.count[depth] > 0) {
      this.push(tree.score[node] * masks.probs[depth * masks.k], node, KIND_MASK, 0);
    }
  }

  private addGroups(tree: DraftTree, budget: number, limits: BuildLimits): void {
    const { M, groupGain } = limits;
    const pEnd = this.pEnd;
    for (;;) {
      const free = budget - tree.rows(M);
      const drop = Math.max(0, M - free);
      const keep = tree.size - drop;
      if (keep < 2) return; // only the root would remain, and it already has group 0
      for (let i = keep; i < tree.size; i++) if (tree.group[i] >= 0) return; // never drop a node carrying a group
      // P(path ends at x) over the kept nodes: own score minus the kept children's scores.
      for (let i = 0; i < keep; i++) pEnd[i] = tree.score[i];
      for (let i = 1; i < keep; i++) pEnd[tree.parent[i]] -= tree.score[i];
      let best = -1;
      for (let i = 1; i < keep; i++) {
        if (tree.group[i] >= 0 || tree.depth[i] > limits.maxGroupDepth) continue;
        if (best < 0 || pEnd[i] > pEnd[best]) best = i;
      }
      if (best < 0) return;
      let lost = 0;
      for (let i = keep; i < tree.size; i++) lost += tree.score[i];
      if (!(pEnd[best] * groupGain > lost)) return;
      while (tree.size > keep) tree.removeLast();
      tree.attachGroup(best);
    }
  }

  private push(score: number, parent: number, kind: number, index: number): void {
    let i = this.heapSize++;
    while (i > 0) {
      const up = (i - 1) >> 1;
      if (this.hScore[up] >= score) break;
      this.move(up, i);
      i = up;
    }
    this.hScore[i] = score;
    this.hParent[i] = parent;
    this.hKind[i] = kind;
    this.hIndex[i] = index;
  }

  private pop(): void {
    const last = --this.heapSize;
    if (last === 0) return;
    const score = this.hScore[last];
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= last) break;
      if (c + 1 < last && this.hScore[c + 1] > this.hScore[c]) c++;
      if (this.hScore[c] <= score) break;
      this.move(c, i);
      i = c;
    }
    this.move(last, i);
  }

  private move(from: number, to: number): void {
    this.hScore[to] = this.hScore[from];
    this.hParent[to] = this.hParent[from];
    this.hKind[to] = this.hKind[from];
    this.hIndex[to] = this.hIndex[from];
  }
}
