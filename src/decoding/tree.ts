/**
 * A draft tree as data. Node i is fed row i; node 0 is the root b, the bonus token of the previous
 * step (committed, not yet fed). Nodes are kept in insertion order with parents before children,
 * so the prefix of nodes 0..n-1 is always a connected tree. Mask groups are attached to nodes and
 * fed after all nodes: group g occupies rows size + g*M .. size + g*M + M - 1.
 */
import { rowsAttentionBias } from './bias.js';

/** Which draft source proposed a node (bit flags: a path found by both is deduplicated into one node). */
export const SOURCE_MASK = 1;
export const SOURCE_CONTEXT = 2;
export const SOURCE_NGRAM = 4;
/** How a context-draft node was proposed (for learning its acceptance rate): a main-chain token or a
 *  continuation, or the first token of an alternative chain. */
export const CONTEXT_MAIN = 1;
export const CONTEXT_ALT_HEAD = 2;

export class DraftTree {
  /** Nodes in use, root included (= rows before the mask groups). */
  size = 1;
  groupCount = 0;
  // All arrays are [capacity] and indexed by node = fed row.
  readonly parent: Int32Array; // parent node, -1 for the root
  readonly depth: Int32Array; // root 0
  readonly token: Int32Array;
  readonly source: Uint8Array; // SOURCE_* bits; 0 for the root
  readonly contextRole: Uint8Array; // CONTEXT_* for context-draft nodes, 0 otherwise
  readonly score: Float64Array; // estimated probability that the node is reached (root 1)
  readonly firstChild: Int32Array; // -1 none; children are linked newest first
  readonly nextSibling: Int32Array;
  readonly group: Int32Array; // index of the mask group attached to the node, -1 none
  readonly groupNode: Int32Array; // [capacity] node each group is attached to
  /** [capacity] scratch: parent fed row of every row, for the bias. */
  readonly parentRow: Int32Array;

  /** capacity: the most rows a step may feed (nodes + mask rows). */
  constructor(readonly capacity: number) {
    this.parent = new Int32Array(capacity);
    this.depth = new Int32Array(capacity);
    this.token = new Int32Array(capacity);
    this.source = new Uint8Array(capacity);
    this.contextRole = new Uint8Array(capacity);
    this.score = new Float64Array(capacity);
    this.firstChild = new Int32Array(capacity);
    this.nextSibling = new Int32Array(capacity);
    this.group = new Int32Array(capacity);
    this.groupNode = new Int32Array(capacity);
    this.parentRow = new Int32Array(capacity);
  }

  get nodeCount(): number {
    return this.size - 1;
  }

  reset(rootToken: number): void {
    this.size = 1;
    this.groupCount = 0;
    this.parent[0] = -1;
    this.depth[0] = 0;
    this.token[0] = rootToken;
    this.source[0] = 0;
    this.contextRole[0] = 0;
    this.score[0] = 1;
    this.firstChild[0] = -1;
    this.nextSibling[0] = -1;
    this.group[0] = -1;
  }

  addNode(parent: number, token: number, source: number, score: number): number {
    if (this.size >= this.capacity) throw new RangeError('draft tree is full');
    if (parent < 0 || parent >= this.size) throw new RangeError(`no node ${parent}`);
    const i = this.size++;
    this.parent[i] = parent;
    this.depth[i] = this.depth[parent] + 1;
    this.token[i] = token;
    this.source[i] = source;
    this.contextRole[i] = 0;
    this.score[i] = score;
    this.firstChild[i] = -1;
    this.group[i] = -1;
    this.nextSibling[i] = this.firstChild[parent];
    this.firstChild[parent] = i;
    return i;
  }

  /** Removes the newest node; it is always a leaf and the head of its parent's child list. */
  removeLast(): void {
    const i = this.size - 1;
    if (i < 1) throw new RangeError('cannot remove the root');
    if (this.group[i] >= 0) throw new RangeError('cannot remove a node with a mask group');
    this.firstChild[this.parent[i]] = this.nextSibling[i];
    this.size = i;
  }

  findChild(node: number, token: number): number {
    for (let c = this.firstChild[node]; c >= 0; c = this.nextSibling[c]) if (this.token[c] === token) return c;
    return -1;
  }

  attachGroup(node: number): number {
    if (this.group[node] >= 0) throw new RangeError(`node ${node} already has a mask group`);
    const g = this.groupCount++;
    this.groupNode[g] = node;
    this.group[node] = g;
    return g;
  }

  /** First fed row of group g, given M masks per group. */
  groupRow(g: number, M: number): number {
    return this.size + g * M;
  }

  /** Rows this tree feeds with M masks per group. */
  rows(M: number): number {
    return this.size + this.groupCount * M;
  }
}

/**
 * Lays the tree out as fed rows [b, nodes..., group 0 masks..., group 1 masks...] and fills ids,
 * positions and the bias [q, cacheLength+q] (bita.md section 2). Returns q.
 */
export function treeAttentionBias(
  tree: DraftTree,
  maskIds: readonly number[],
  cacheLength: number,
  ids: Int32Array,
  positions: Int32Array,
  bias: Float32Array,
): number {
  const M = maskIds.length;
  const q = tree.rows(M);
  if (q > tree.capacity || q > ids.length) throw new RangeError(`tree of ${q} rows exceeds its buffers`);
  const parentRow = tree.parentRow;
  for (let i = 0; i < tree.size; i++) {
    ids[i] = tree.token[i];
    parentRow[i] = tree.parent[i];
  }
  let row = tree.size;
  for (let g = 0; g < tree.groupCount; g++) {
    for (let j = 0; j < M; j++, row++) {
      ids[row] = maskIds[j];
      parentRow[row] = j === 0 ? tree.groupNode[g] : row - 1;
    }
  }
  rowsAttentionBias(parentRow, q, cacheLength, bias, positions);
  return q;
}
