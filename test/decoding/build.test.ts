import t from 'tap';
import { TreeBuilder, type BuildLimits } from '../../src/decoding/build.js';
import { ContextDrafts, MaskDrafts } from '../../src/decoding/drafts.js';
import { CONTEXT_ALT_HEAD, CONTEXT_MAIN, DraftTree, SOURCE_CONTEXT, SOURCE_MASK } from '../../src/decoding/tree.js';

/** Mask drafts from explicit (token, prob) lists per depth. */
function masks(perDepth: [number, number][][], k = 4): MaskDrafts {
  const m = new MaskDrafts(perDepth.length, k);
  perDepth.forEach((cands, d) => {
    cands.forEach(([tok, p], i) => {
      m.tokens[d * k + i] = tok;
      m.probs[d * k + i] = p;
    });
    m.count[d] = cands.length;
  });
  m.depths = perDepth.length;
  return m;
}

function limits(over: Partial<BuildLimits>): BuildLimits {
  return { budget: 16, M: 3, maxDepth: 100, maxGroupDepth: 100, groupGain: 0, contextRate: 0.5, contextAltRate: 0.2, exploreMasks: true, ...over };
}

/** Context-draft chains from explicit token lists. */
function chains(...lists: number[][]): ContextDrafts {
  const c = new ContextDrafts(4, 8);
  lists.forEach((l, i) => {
    c.tokens.set(l, i * 8);
    c.length[i] = l.length;
  });
  c.chains = lists.length;
  return c;
}

function nodes(tree: DraftTree): string[] {
  const out: string[] = [];
  for (let i = 1; i < tree.size; i++) out.push(`${tree.parent[i]}>${tree.token[i]}`);
  return out;
}

const threeDepths = masks([
  [
    [10, 0.6],
    [11, 0.3],
  ],
  [
    [20, 0.55],
    [21, 0.4],
  ],
  [[30, 0.9]],
]);

t.test('the dynamic tree takes the nodes with the highest path confidence', async (t) => {
  const tree = new DraftTree(32);
  tree.reset(1);
  const b = new TreeBuilder(32, 8);
  const rows = b.build(tree, threeDepths, chains(), limits({ budget: 1 + 3 + 4 }));
  // scores: 10:.6, 10-20:.33, 11:.3, 10-20-30:.297, 10-21:.24, 11-20:.165 ... best 4 are the first four
  t.same(nodes(tree), ['0>10', '1>20', '0>11', '2>30']);
  t.equal(rows, 8);
  t.equal(tree.groupCount, 1);
  t.equal(tree.groupNode[0], 0, 'group 0 sits on the root');
  for (let i = 1; i < tree.size; i++) t.ok(tree.score[i] <= tree.score[tree.parent[i]], 'scores fall along paths');
});

t.test('a budget of one row is a plain step; below 1 + M there is no mask group', async (t) => {
  const tree = new DraftTree(32);
  const b = new TreeBuilder(32, 8);
  tree.reset(1);
  t.equal(b.build(tree, threeDepths, chains([5, 6]), limits({ budget: 1 })), 1);
  t.equal(tree.groupCount, 0);
  tree.reset(1);
  t.equal(b.build(tree, threeDepths, chains(), limits({ budget: 3 })), 3);
  t.equal(tree.groupCount, 0);
  t.same(nodes(tree), ['0>10', '1>20']);
  tree.reset(1);
  t.equal(b.build(tree, threeDepths, chains(), limits({ budget: 4 })), 4);
  t.same([tree.groupCount, tree.nodeCount], [1, 0]);
});

t.test('a path proposed by both sources becomes one node carrying both source bits', async (t) => {
  const tree = new DraftTree(32);
  tree.reset(1);
  const b = new TreeBuilder(32, 8);
  // context proposes 10 20 99: 10 and 20 coincide with the best mask path
  b.build(tree, threeDepths, chains([10, 20, 99]), limits({ budget: 1 + 3 + 6, contextRate: 0.8 }));
  const n10 = tree.findChild(0, 10);
  const n20 = tree.findChild(n10, 20);
  const n99 = tree.findChild(n20, 99);
  t.ok(n10 > 0 && n20 > 0 && n99 > 0);
  t.equal(tree.source[n10], SOURCE_MASK | SOURCE_CONTEXT);
  t.equal(tree.source[n20], SOURCE_MASK | SOURCE_CONTEXT);
  t.equal(tree.source[n99], SOURCE_CONTEXT);
  t.ok(Math.abs(tree.score[n10] - 0.8) < 1e-12, 'merged score is the larger one');
  const seen = new Set<string>();
  for (let i = 1; i < tree.size; i++) {
    const key = `${tree.parent[i]}>${tree.token[i]}`;
    t.notOk(seen.has(key), `no duplicate child ${key}`);
    seen.add(key);
  }
});

t.test('the tree never goes deeper than maxDepth and groups only go where their masks fit', async (t) => {
  const tree = new DraftTree(32);
  tree.reset(1);
  const b = new TreeBuilder(32, 8);
  b.build(tree, threeDepths, chains([7, 7, 7, 7, 7]), limits({ budget: 30, maxDepth: 2, maxGroupDepth: -1 }));
  for (let i = 1; i < tree.size; i++) t.ok(tree.depth[i] <= 2);
  t.equal(tree.groupCount, 0, 'not even the root group fits');
  t.ok(tree.nodeCount > 0);
});

t.test('extra mask groups go where the path most likely ends when they beat the nodes they displace', async (t) => {
  const tree = new DraftTree(32);
  const b = new TreeBuilder(32, 8);
  const sure = masks([[[10, 0.95]], [[20, 0.9]], [[30, 0.01]]]);
  tree.reset(1);
  b.build(tree, sure, chains(), limits({ budget: 1 + 3 + 3 + 2, M: 3, groupGain: 2 }));
  // nodes 10 (.95), 20 (.855), 30 (.00855); P(end) at 20 = .855 - .00855: group there, node 30 dropped
  t.same(nodes(tree), ['0>10', '1>20']);
  t.equal(tree.groupCount, 2);
  t.equal(tree.groupNode[1], 2);
  t.equal(tree.rows(3), 9);
  tree.reset(1);
  b.build(tree, sure, chains(), limits({ budget: 1 + 3 + 3 + 2, M: 3, groupGain: 0 }));
  t.equal(tree.groupCount, 1, 'no gain, no extra group');
  t.equal(tree.nodeCount, 3);
});

t.test('alternative context chains branch below the root with their own first-token rate', async (t) => {
  const tree = new DraftTree(32);
  tree.reset(1);
  const b = new TreeBuilder(32, 32);
  const none = masks([]);
  b.build(tree, none, chains([4, 5, 6], [7, 8], [4, 9]), limits({ budget: 7, M: 0, contextRate: 0.9, contextAltRate: 0.5 }));
  // scores: 4 .9, 5 .81, 6 .729, 7 .5, 8 .45, (4 again: merged) 9 .45 → 6 nodes fit
  const paths: string[] = [];
  for (let i = 1; i < tree.size; i++) {
    const p: number[] = [];
    for (let n = i; n > 0; n = tree.parent[n]) p.unshift(tree.token[n]);
    paths.push(p.join('/'));
  }
  t.same(paths.sort(), ['4', '4/5', '4/5/6', '4/9', '7', '7/8']);
  const n4 = tree.findChild(0, 4);
  const n7 = tree.findChild(0, 7);
  t.equal(tree.contextRole[n4], CONTEXT_MAIN);
  t.equal(tree.contextRole[n7], CONTEXT_ALT_HEAD);
  t.equal(tree.contextRole[tree.findChild(n7, 8)], CONTEXT_MAIN, 'continuations count as main-rate tokens');
  t.ok(Math.abs(tree.score[tree.findChild(n4, 9)] - 0.45) < 1e-12, 'a chain merged at its head continues below the shared node');
});

t.test('group 0 goes on the root only when its learned gain beats the nodes it displaces', async (t) => {
  const m = masks([[[5, 0.9], [6, 0.05]], [[7, 0.8]], [[8, 0.7]]]);
  const build = (groupGain: number) => {
    const tree = new DraftTree(16);
    tree.reset(1);
    new TreeBuilder(16, 32).build(tree, m, chains(), limits({ budget: 6, exploreMasks: false, groupGain }));
    return tree;
  };
  const weak = build(0.1);
  t.equal(weak.groupCount, 0, 'weak masks: no group, all 5 node rows kept');
  t.equal(weak.nodeCount, 5);
  const strong = build(5);
  t.equal(strong.groupCount, 1, 'strong masks: group 0 placed');
  t.equal(strong.group[0] >= 0, true, 'on the root');
  t.equal(strong.nodeCount, 2, 'the lowest nodes made room for M = 3 mask rows');
  t.equal(strong.rows(3), 6, 'within the budget');
});
