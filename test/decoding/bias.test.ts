import t from 'tap';
import { NEG } from '../../src/decoding/model.js';
import { rowsAttentionBias } from '../../src/decoding/bias.js';
import { DraftTree, SOURCE_MASK, treeAttentionBias } from '../../src/decoding/tree.js';

/** Renders the fed-row columns of bias [q, L+q] as strings, 'x' visible, '.' hidden; checks the cache part. */
function render(t: { fail(msg: string): unknown }, bias: Float32Array, q: number, L: number): string[] {
  const rows: string[] = [];
  for (let i = 0; i < q; i++) {
    let s = '';
    for (let c = 0; c < L + q; c++) {
      const v = bias[i * (L + q) + c];
      if (v !== 0 && v !== NEG) t.fail(`bias[${i},${c}] = ${v}`);
      if (c < L) {
        if (v !== 0) t.fail(`row ${i} does not see cache column ${c}`);
      } else s += v === 0 ? 'x' : '.';
    }
    rows.push(s);
  }
  return rows;
}

t.test('a hand-drawn 3-node tree with two mask groups gets the bias and positions of bita.md section 2', async (t) => {
  //        b ── n1(5) ── n3(7)
  //        └─── n2(6)
  // group 0 on b, group 1 on n1; M = 2; 3 cached rows.
  const tree = new DraftTree(16);
  tree.reset(9);
  const n1 = tree.addNode(0, 5, SOURCE_MASK, 0.5);
  const n2 = tree.addNode(0, 6, SOURCE_MASK, 0.3);
  const n3 = tree.addNode(n1, 7, SOURCE_MASK, 0.2);
  t.same([n1, n2, n3], [1, 2, 3]);
  tree.attachGroup(0);
  tree.attachGroup(n1);
  const L = 3;
  const ids = new Int32Array(16);
  const positions = new Int32Array(16);
  const bias = new Float32Array(16 * 32).fill(123); // garbage must be overwritten
  const q = treeAttentionBias(tree, [20, 21], L, ids, positions, bias);
  t.equal(q, 8);
  t.same(Array.from(ids.subarray(0, q)), [9, 5, 6, 7, 20, 21, 20, 21]);
  t.same(render(t, bias, q, L), [
    'x.......', // b
    'xx......', // n1 sees b
    'x.x.....', // n2 sees b, not its sibling
    'xx.x....', // n3 sees b, n1
    'x...x...', // group 0 mask 0 sees b
    'x...xx..', // group 0 mask 1 sees b and mask 0
    'xx....x.', // group 1 mask 0 sees b, n1, not group 0
    'xx....xx', // group 1 mask 1
  ]);
  // b at L; nodes at L + depth; mask j of a group at depth d at L + d + 1 + j.
  t.same(Array.from(positions.subarray(0, q)), [3, 4, 4, 5, 4, 5, 5, 6]);
});

t.test('a 5-node chain-and-branch tree without groups sees only its own paths', async (t) => {
  //  b ── a(1) ── b'(2) ── c(3)
  //        └──── d(4)
  //  └── e(5)
  const tree = new DraftTree(8);
  tree.reset(0);
  const a = tree.addNode(0, 1, SOURCE_MASK, 0.9);
  const e = tree.addNode(0, 5, SOURCE_MASK, 0.1);
  const b2 = tree.addNode(a, 2, SOURCE_MASK, 0.8);
  const d = tree.addNode(a, 4, SOURCE_MASK, 0.05);
  tree.addNode(b2, 3, SOURCE_MASK, 0.7);
  t.same([a, e, b2, d], [1, 2, 3, 4]);
  const ids = new Int32Array(8);
  const positions = new Int32Array(8);
  const bias = new Float32Array(8 * 8);
  const q = treeAttentionBias(tree, [], 0, ids, positions, bias);
  t.equal(q, 6);
  t.same(render(t, bias, q, 0), ['x.....', 'xx....', 'x.x...', 'xx.x..', 'xx..x.', 'xx.x.x']);
  t.same(Array.from(positions.subarray(0, q)), [0, 1, 1, 2, 2, 3]);
  t.same(Array.from(ids.subarray(0, q)), [0, 1, 5, 2, 4, 3]);
});

t.test('a prefill chunk with a mask group is causal and the masks see the whole prompt', async (t) => {
  const parent = Int32Array.from([-1, 0, 1, 2, 3]); // 3 prompt rows, then masks 0 and 1
  const positions = new Int32Array(5);
  const bias = new Float32Array(5 * 7);
  rowsAttentionBias(parent, 5, 2, bias, positions);
  t.same(render(t, bias, 5, 2), ['x....', 'xx...', 'xxx..', 'xxxx.', 'xxxxx']);
  t.same(Array.from(positions), [2, 3, 4, 5, 6]);
});

t.test('a parent after its child is refused', async (t) => {
  t.throws(() => rowsAttentionBias(Int32Array.from([-1, 2, 0]), 3, 0, new Float32Array(9), new Int32Array(3)), RangeError);
});

t.test('removing the newest node unlinks it from its parent', async (t) => {
  const tree = new DraftTree(4);
  tree.reset(0);
  const a = tree.addNode(0, 1, SOURCE_MASK, 0.5);
  tree.addNode(0, 2, SOURCE_MASK, 0.4);
  tree.removeLast();
  t.equal(tree.size, 2);
  t.equal(tree.findChild(0, 2), -1);
  t.equal(tree.findChild(0, 1), a);
  t.throws(() => {
    for (let i = 0; i < 4; i++) tree.addNode(0, 9 + i, SOURCE_MASK, 0.1);
  }, RangeError);
});
