import t from 'tap';
import { DraftTree, SOURCE_CONTEXT, SOURCE_MASK } from '../../src/decoding/tree.js';
import { Acceptance, acceptPath, VerifiedPath, verifyGreedy, verifySampling } from '../../src/decoding/verify.js';
import { TargetDistribution, type SamplingParams } from '../../src/decoding/sampling.js';
import { Rng } from '../../src/decoding/rng.js';
import { chiSquare } from './stats.js';

const V = 8;
const M = 2;

/** b ── n1(5) ── n3(7);  b ── n2(6); group 0 on b, group 1 on n1 (rows 4-5 and 6-7). */
function handTree(): DraftTree {
  const tree = new DraftTree(16);
  tree.reset(1);
  tree.addNode(0, 5, SOURCE_MASK, 0.5);
  tree.addNode(0, 6, SOURCE_CONTEXT, 0.3);
  tree.addNode(1, 7, SOURCE_MASK | SOURCE_CONTEXT, 0.2);
  tree.attachGroup(0);
  tree.attachGroup(1);
  return tree;
}

/** logits [q, V] whose argmax at row r is argmaxes[r]. */
function greedyLogits(argmaxes: number[]): Float32Array {
  const logits = new Float32Array(argmaxes.length * V);
  argmaxes.forEach((a, r) => {
    for (let v = 0; v < V; v++) logits[r * V + v] = (v * 7919) % 13 / 100; // noise below 1
    logits[r * V + a] = 5;
  });
  return logits;
}

t.test('verifyGreedy walks down the children equal to the argmax and returns the last argmax as bonus', async (t) => {
  const tree = handTree();
  const path = new VerifiedPath(16);
  // rows: b→5 (n1), n1→7 (n3), n2→0, n3→2; mask rows irrelevant
  verifyGreedy(tree, greedyLogits([5, 7, 0, 2, 0, 0, 0, 0]), V, path);
  t.same(Array.from(path.rows.subarray(0, path.length)), [0, 1, 3]);
  t.equal(path.bonus, 2);
  t.equal(path.accepted, 2);

  verifyGreedy(tree, greedyLogits([3, 7, 0, 2, 0, 0, 0, 0]), V, path);
  t.same(Array.from(path.rows.subarray(0, path.length)), [0]);
  t.equal(path.bonus, 3);

  verifyGreedy(tree, greedyLogits([6, 7, 4, 2, 0, 0, 0, 0]), V, path);
  t.same(Array.from(path.rows.subarray(0, path.length)), [0, 2]);
  t.equal(path.bonus, 4);
});

t.test('argmax ties go to the lowest token id', async (t) => {
  const tree = new DraftTree(4);
  tree.reset(0);
  tree.addNode(0, 3, SOURCE_MASK, 0.5);
  const logits = new Float32Array(2 * V);
  logits[2] = 1;
  logits[3] = 1; // tie between 2 and 3: 2 wins, so the draft 3 is rejected
  const path = verifyGreedy(tree, logits, V, new VerifiedPath(4));
  t.equal(path.length, 1);
  t.equal(path.bonus, 2);
});

t.test('acceptPath commits b and the accepted nodes and picks the mask group of the deepest accepted node', async (t) => {
  const tree = handTree();
  const path = new VerifiedPath(16);
  const acc = new Acceptance();

  // Nothing accepted: group 0 (rows 4, 5) drafts depths 1 and 2 of the next tree.
  acceptPath(tree, verifyGreedy(tree, greedyLogits([3, 0, 0, 0, 0, 0, 0, 0]), V, path), M, acc);
  t.equal(acc.commitCount, 1);
  t.same([acc.nextMaskRow, acc.nextMaskDepths], [4, 2]);
  t.same([acc.acceptedMask, acc.acceptedContext, acc.acceptedBoth], [0, 0, 0]);

  // n1 accepted and it carries group 1 (rows 6, 7).
  acceptPath(tree, verifyGreedy(tree, greedyLogits([5, 0, 0, 0, 0, 0, 0, 0]), V, path), M, acc);
  t.same(Array.from(path.rows.subarray(0, acc.commitCount)), [0, 1]);
  t.same([acc.nextMaskRow, acc.nextMaskDepths], [6, 2]);
  t.same([acc.acceptedMask, acc.acceptedContext], [1, 0]);

  // n1, n3 accepted; n3 has no group: group 1 shifted by one, mask 1 (row 7) drafts depth 1.
  acceptPath(tree, verifyGreedy(tree, greedyLogits([5, 7, 0, 2, 0, 0, 0, 0]), V, path), M, acc);
  t.same(Array.from(path.rows.subarray(0, acc.commitCount)), [0, 1, 3]);
  t.same([acc.nextMaskRow, acc.nextMaskDepths], [7, 1]);
  t.same([acc.acceptedMask, acc.acceptedContext, acc.acceptedBoth], [2, 1, 1]);

  // n2 (context, no group) accepted: group 0 shifted by one (row 5).
  acceptPath(tree, verifyGreedy(tree, greedyLogits([6, 0, 1, 0, 0, 0, 0, 0]), V, path), M, acc);
  t.same([acc.nextMaskRow, acc.nextMaskDepths], [5, 1]);
  t.same([acc.acceptedMask, acc.acceptedContext], [0, 1]);
});

t.test('acceptPath gives no masks when the shift uses up the group, or without adapters', async (t) => {
  const tree = new DraftTree(16);
  tree.reset(0);
  const a = tree.addNode(0, 1, SOURCE_CONTEXT, 0.5);
  const b = tree.addNode(a, 2, SOURCE_CONTEXT, 0.4);
  tree.addNode(b, 3, SOURCE_CONTEXT, 0.3);
  tree.attachGroup(0);
  const path = verifyGreedy(tree, greedyLogits([1, 2, 3, 4, 0, 0]), V, new VerifiedPath(16));
  t.equal(path.accepted, 3);
  const acc = acceptPath(tree, path, M, new Acceptance());
  t.equal(acc.nextMaskRow, -1);
  t.equal(acc.commitCount, 4);
  const plain = new DraftTree(2);
  plain.reset(0);
  const one = acceptPath(plain, verifyGreedy(plain, greedyLogits([4]), V, new VerifiedPath(2)), 0, new Acceptance());
  t.same([one.commitCount, one.nextMaskRow], [1, -1]);
});

// ---- sampling ----------------------------------------------------------------------------------

interface Scenario {
  name: string;
  params: SamplingParams;
  /** Per-node probabilities before temperature (logits = log p): rows 0.. of the tree. */
  rows: number[][];
  /** Children: [parent, token] in insertion order. */
  nodes: [number, number][];
}

const P6 = [0.05, 0.3, 0.25, 0.1, 0.2, 0.1];

const scenarios: Scenario[] = [
  {
    name: 'good drafts, three candidates at the root',
    params: { temperature: 1, topK: 0, topP: 1 },
    rows: [P6, [0.6, 0.1, 0.1, 0.1, 0.05, 0.05], [0.2, 0.2, 0.2, 0.2, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1, 0.1, 0.5], P6],
    nodes: [
      [0, 1],
      [0, 2],
      [0, 4],
      [1, 0],
    ],
  },
  {
    name: 'bad drafts (least likely tokens), two levels',
    params: { temperature: 1, topK: 0, topP: 1 },
    rows: [P6, [0.02, 0.5, 0.3, 0.08, 0.05, 0.05], [0.3, 0.3, 0.1, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.05, 0.1, 0.1]],
    nodes: [
      [0, 0],
      [1, 0],
      [0, 5],
    ],
  },
  {
    name: 'temperature 0.7 with top-k 3 (some drafts impossible)',
    params: { temperature: 0.7, topK: 3, topP: 1 },
    rows: [P6, [0.1, 0.1, 0.4, 0.2, 0.1, 0.1], [0.3, 0.05, 0.05, 0.3, 0.2, 0.1], P6, P6],
    nodes: [
      [0, 0],
      [0, 1],
      [2, 3],
      [2, 5],
    ],
  },
  {
    name: 'temperature 1.3 with top-p 0.8',
    params: { temperature: 1.3, topK: 0, topP: 0.8 },
    rows: [P6, [0.4, 0.3, 0.1, 0.1, 0.05, 0.05], P6, P6],
    nodes: [
      [0, 2],
      [1, 0],
      [0, 0],
    ],
  },
];

for (const sc of scenarios) {
  t.test(`sampling is exact on a hand-drawn tree: ${sc.name}`, async (t) => {
    const V6 = 6;
    const tree = new DraftTree(16);
    tree.reset(0);
    for (const [parent, token] of sc.nodes) tree.addNode(parent, token, SOURCE_MASK, 0.5);
    const logits = new Float32Array(sc.rows.length * V6);
    sc.rows.forEach((p, r) => p.forEach((x, v) => (logits[r * V6 + v] = Math.log(x))));
    const dist = new TargetDistribution(V6);

    // Exact law of the committed sequence: at node u, token x ends the step unless x is a child.
    const expected = new Map<string, number>();
    const walk = (node: number, prefix: number[], prob: number): void => {
      const p = Float64Array.from(dist.compute(logits, node * V6, sc.params));
      for (let x = 0; x < V6; x++) {
        if (!(p[x] > 0)) continue;
        const child = tree.findChild(node, x);
        if (child >= 0) walk(child, [...prefix, x], prob * p[x]);
        else expected.set([...prefix, x].join(','), prob * p[x]);
      }
    };
    walk(0, [], 1);

    const n = 40000;
    const rng = new Rng(12345);
    const path = new VerifiedPath(16);
    const observed = new Map<string, number>();
    let acceptedDrafts = 0;
    for (let i = 0; i < n; i++) {
      verifySampling(tree, logits, V6, sc.params, dist, rng, path);
      const seq: number[] = [];
      for (let k = 1; k < path.length; k++) seq.push(tree.token[path.rows[k]]);
      seq.push(path.bonus);
      acceptedDrafts += path.accepted;
      const key = seq.join(',');
      observed.set(key, (observed.get(key) ?? 0) + 1);
    }
    const chi = chiSquare(observed, expected, n);
    t.equal(chi.impossible, 0, 'no sequence outside the target support');
    t.ok(chi.p > 0.01, `chi-square ${chi.statistic.toFixed(1)} on ${chi.df} df, p = ${chi.p.toFixed(3)}`);
    t.ok(acceptedDrafts > 0, 'some drafts were accepted');
  });
}

t.test('a sampler that ignores the residual is caught by the same test', async (t) => {
  // Guard against a test that cannot fail: accepting a child with probability p(c) but then
  // sampling the bonus from the full p (not the residual) over-weights the drafted tokens.
  const V6 = 6;
  const p = P6;
  const n = 40000;
  const rng = new Rng(7);
  const observed = new Map<string, number>();
  const children = [1, 2];
  for (let i = 0; i < n; i++) {
    let out = -1;
    for (const c of children) if (rng.next() < p[c]) { out = c; break; }
    if (out < 0) {
      let u = rng.next();
      out = V6 - 1;
      for (let v = 0; v < V6; v++) if ((u -= p[v]) < 0) { out = v; break; }
    }
    observed.set(String(out), (observed.get(String(out)) ?? 0) + 1);
  }
  const expected = new Map(p.map((x, v) => [String(v), x]));
  t.ok(chiSquare(observed, expected, n).p < 0.01);
});
