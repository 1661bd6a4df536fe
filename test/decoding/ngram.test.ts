import t from 'tap';
import { Decoder } from '../../src/decoding/decoder.js';
import { ContextDrafts } from '../../src/decoding/drafts.js';
import { NgramTable } from '../../src/decoding/ngram.js';
import { SOURCE_CONTEXT, SOURCE_NGRAM } from '../../src/decoding/tree.js';
import { FakeModel, referenceGreedy } from './fake-model.js';

type Entries = [number[], number][];

/** Writes the BNG1 layout of models/bitatool/ngram.py (test-side writer). */
function tableBytes(V: number, orders: Map<number, Entries>): Uint8Array {
  const buf: ArrayBuffer[] = [];
  const head = new DataView(new ArrayBuffer(12));
  head.setUint32(0, 0x31474e42, true);
  head.setInt32(4, V, true);
  head.setInt32(8, orders.size, true);
  buf.push(head.buffer);
  for (const [n, entries] of orders) {
    const rows = entries.map(([ctx, next]) => [ctx.reduce((k, x) => k * V + x, 0), next]).sort((a, b) => a[0] - b[0]);
    const dv = new DataView(new ArrayBuffer(8 + rows.length * 12));
    dv.setInt32(0, n, true);
    dv.setInt32(4, rows.length, true);
    rows.forEach(([k], i) => dv.setFloat64(8 + 8 * i, k, true));
    rows.forEach(([, x], i) => dv.setInt32(8 + 8 * rows.length + 4 * i, x, true));
    buf.push(dv.buffer);
  }
  const out = new Uint8Array(buf.reduce((s, b) => s + b.byteLength, 0));
  let at = 0;
  for (const b of buf) (out.set(new Uint8Array(b), at), (at += b.byteLength));
  return out;
}

const ctx = (xs: number[]) => Int32Array.from(xs);

t.test('the longest known context decides, shorter ones back it off', async (t) => {
  const table = NgramTable.parse(tableBytes(10, new Map([
    [2, [[[1, 2], 7]] as Entries],
    [1, [[[2], 5], [[7], 3]] as Entries],
  ])));
  t.equal(table.predict(ctx([4, 1, 2]), 3), 7, 'bigram context 1,2 -> 7');
  t.equal(table.predict(ctx([4, 9, 2]), 3), 5, 'unknown bigram backs off to unigram 2 -> 5');
  t.equal(table.predict(ctx([4, 9, 8]), 3), -1, 'nothing known');
  const out = new Int32Array(4);
  t.equal(table.chain(ctx([1, 2]), 2, out, 0, 4), 2, 'walk stops where the table knows nothing');
  t.same(Array.from(out.subarray(0, 2)), [7, 3]);
});

t.test('a file that is not a table is refused', async (t) => {
  t.throws(() => NgramTable.parse(new Uint8Array(16)), /bad magic/);
  const good = tableBytes(10, new Map([[1, [[[1], 2]] as Entries]]));
  t.throws(() => NgramTable.parse(good.subarray(0, good.length - 3)), /truncated/);
});

t.test('the n-gram chain goes first and replaces a lookup chain with the same first token', async (t) => {
  const table = NgramTable.parse(tableBytes(10, new Map([[1, [[[3], 4], [[4], 5]] as Entries]])));
  const drafts = new ContextDrafts(3, 2);
  // Three lookup chains: [4,9], [6,6], [8,8].
  drafts.chains = 3;
  drafts.tokens.set([4, 9, 6, 6, 8, 8]);
  drafts.length.set([2, 2, 2]);
  drafts.prependNgram(table, ctx([3]), 1);
  t.equal(drafts.chains, 3);
  t.same(Array.from(drafts.tokens), [4, 5, 6, 6, 8, 8], 'n-gram [4,5] first; [4,9] dropped');
  t.same(Array.from(drafts.source), [SOURCE_NGRAM, SOURCE_CONTEXT, SOURCE_CONTEXT]);
  // Full and no duplicate: the last lookup chain falls off.
  drafts.tokens.set([6, 6, 7, 7, 8, 8]);
  drafts.source.fill(SOURCE_CONTEXT);
  drafts.prependNgram(table, ctx([3]), 1);
  t.same(Array.from(drafts.tokens), [4, 5, 6, 6, 7, 7]);
});

/** A table of the fake model's own greedy continuations (what the toolchain counts), or noise. */
function tableFor(model: FakeModel, prompts: number[][], noisy: boolean): NgramTable {
  const V = model.vocabSize;
  const seen = new Map<number, Map<string, number>>([[2, new Map()], [1, new Map()]]);
  for (const p of prompts) {
    const seq = [...p, ...referenceGreedy(model, p, 60)];
    for (let i = 2; i < seq.length; i++) {
      for (const n of [2, 1]) seen.get(n)!.set(seq.slice(i - n, i).join(','), noisy ? (seq[i] * 7 + 3) % V : seq[i]);
    }
  }
  const orders = new Map<number, Entries>();
  for (const [n, m] of seen) orders.set(n, [...m].map(([k, v]) => [k.split(',').map(Number), v]));
  return NgramTable.parse(tableBytes(V, orders));
}

t.test('tree decoding with n-gram drafts emits exactly the greedy tokens', async (t) => {
  let ngramAccepted = 0;
  for (const seed of [1, 2, 3, 4]) {
    const model = new FakeModel({ V: 24, M: 2, maxPositions: 140, seed, order: 2, scale: 6 });
    const prompts = Array.from({ length: 12 }, (_, i) => [1, (i * 5 + seed) % 24, (i * 11 + 3) % 24]);
    for (const noisy of [false, true]) {
      const ngram = tableFor(model, prompts.slice(0, 8), noisy);
      for (const budget of [2, 5, 12]) {
        const dec = new Decoder(model, { budget, ngram });
        for (const prompt of prompts.slice(8)) {
          const want = referenceGreedy(model, prompt, 60);
          const r = dec.start(prompt);
          const got = Array.from(r.tokens.subarray(0, r.count));
          while (got.length < 60) {
            const s = dec.step();
            if (!noisy) ngramAccepted += s.acceptedNgram;
            got.push(...s.tokens.subarray(0, s.count));
          }
          t.same(got.slice(0, 60), want, `seed ${seed} budget ${budget} ${noisy ? 'noisy' : 'true'} table`);
        }
      }
    }
  }
  t.ok(ngramAccepted > 100, `n-gram drafts were accepted (${ngramAccepted} tokens)`);
});
