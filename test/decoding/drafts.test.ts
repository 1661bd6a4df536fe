import t from 'tap';
import { ContextDrafts, contextDrafts, draftsFromMasks, MaskDrafts } from '../../src/decoding/drafts.js';
import { expNonPositive } from '../../src/decoding/fastexp.js';
import { Rng } from '../../src/decoding/rng.js';

t.test('the fast exp matches Math.exp to 1e-9 relative down to underflow', async (t) => {
  let worst = 0;
  for (let i = 0; i <= 100000; i++) {
    const x = -(i / 100000) * 700;
    worst = Math.max(worst, Math.abs(expNonPositive(x) / Math.exp(x) - 1));
  }
  t.ok(worst < 1e-9, `max relative error ${worst}`);
  t.equal(expNonPositive(0), 1);
  t.equal(expNonPositive(-1000), 0);
});

t.test('draftsFromMasks keeps the top-k tokens of each mask row with their softmax probabilities', async (t) => {
  const V = 5;
  // rows: 0 = some normal row, 1..2 = the two mask rows
  const logits = Float32Array.from([9, 9, 9, 9, 9, 0, 2, 1, 2.5, -1, 3, 3, 0, 0, 1]);
  const out = new MaskDrafts(3, 2);
  draftsFromMasks(logits, V, 1, 2, out);
  t.equal(out.depths, 2);
  const z1 = Math.exp(0) + Math.exp(2) + Math.exp(1) + Math.exp(2.5) + Math.exp(-1);
  t.same(Array.from(out.tokens.subarray(0, 2)), [3, 1]);
  t.ok(Math.abs(out.probs[0] - Math.exp(2.5) / z1) < 1e-8);
  t.ok(Math.abs(out.probs[1] - Math.exp(2) / z1) < 1e-8);
  // ties keep the lower id first
  t.same(Array.from(out.tokens.subarray(2, 4)), [0, 1]);
  t.equal(out.count[1], 2);
  out.clear();
  t.equal(out.depths, 0);
});

t.test('draftsFromMasks with k above V keeps every token', async (t) => {
  const out = new MaskDrafts(1, 8);
  draftsFromMasks(Float32Array.from([1, 3, 2]), 3, 0, 1, out);
  t.equal(out.count[0], 3);
  t.same(Array.from(out.tokens.subarray(0, 3)), [1, 2, 0]);
  const sum = out.probs[0] + out.probs[1] + out.probs[2];
  t.ok(Math.abs(sum - 1) < 1e-8);
});

t.test('a large vocabulary estimates the normaliser from a strided sample (within 20 %, ranking exact)', async (t) => {
  const V = 32000;
  const rng = new Rng(5);
  const logits = new Float32Array(V);
  for (let v = 0; v < V; v++) logits[v] = 4 * rng.next() + (v % 97 === 0 ? 6 : 0);
  const out = new MaskDrafts(1, 4);
  draftsFromMasks(logits, V, 0, 1, out);
  let z = 0;
  let max = -Infinity;
  for (let v = 0; v < V; v++) max = Math.max(max, logits[v]);
  for (let v = 0; v < V; v++) z += Math.exp(logits[v] - max);
  for (let i = 0; i < 4; i++) {
    const exact = Math.exp(logits[out.tokens[i]] - max) / z;
    t.ok(Math.abs(out.probs[i] / exact - 1) < 0.2, `candidate ${i}: ${out.probs[i]} vs exact ${exact}`);
    if (i > 0) t.ok(logits[out.tokens[i]] <= logits[out.tokens[i - 1]]);
  }
});

/** The single best prompt-lookup chain: its length (0 = no match) and tokens, copied into out. */
function contextDraft(tokens: Int32Array, length: number, minNgram: number, maxNgram: number, out: Int32Array): number {
  const drafts = new ContextDrafts(1, out.length);
  contextDrafts(tokens, length, minNgram, maxNgram, drafts);
  if (drafts.chains === 0) return 0;
  out.set(drafts.tokens.subarray(0, drafts.length[0]));
  return drafts.length[0];
}

t.test('prompt lookup proposes the continuation of the latest match of the last n-gram', async (t) => {
  const out = new Int32Array(4);
  // ... 1 2 3 [9 8] ... 1 2 3 [7 6] ... 1 2 3 → latest earlier match of "1 2 3" is followed by 7 6
  const tokens = Int32Array.from([1, 2, 3, 9, 8, 5, 1, 2, 3, 7, 6, 4, 1, 2, 3]);
  const n = contextDraft(tokens, tokens.length, 1, 3, out);
  t.equal(n, 4);
  t.same(Array.from(out), [7, 6, 4, 1]);
});

t.test('prompt lookup falls back to shorter n-grams and returns 0 without a match', async (t) => {
  const out = new Int32Array(2);
  const tokens = Int32Array.from([5, 6, 7, 1, 6, 8]); // "1 6 8" and "6 8" never occurred before; "8" neither
  t.equal(contextDraft(tokens, 6, 1, 3, out), 0);
  const t2 = Int32Array.from([5, 6, 7, 1, 6]); // "1 6" unseen, "6" seen at 1 → 7 1
  t.equal(contextDraft(t2, 5, 1, 3, out), 2);
  t.same(Array.from(out), [7, 1]);
  t.equal(contextDraft(t2, 5, 2, 3, out), 0, 'minNgram 2 refuses the unigram match');
  t.equal(contextDraft(Int32Array.from([4]), 1, 1, 3, out), 0);
});

t.test('prompt lookup extends periodic text past the end of the context', async (t) => {
  const out = new Int32Array(6);
  const tokens = Int32Array.from([1, 2, 1, 2, 1]); // latest "2 1" match at 1 → 2 1 2 1 2 1 ...
  t.equal(contextDraft(tokens, 5, 1, 3, out), 6);
  t.same(Array.from(out), [2, 1, 2, 1, 2, 1]);
});

t.test('contextDrafts collects chains with distinct first tokens, latest and longest matches first', async (t) => {
  const out = new ContextDrafts(3, 2);
  // last 2-gram "1 2": occurrences followed by 7 (latest), 3, and 7 again (duplicate head, skipped);
  // then the 1-gram "2" adds its other continuation 5.
  const tokens = Int32Array.from([1, 2, 7, 0, 2, 5, 1, 2, 3, 0, 1, 2, 7, 9, 1, 2]);
  contextDrafts(tokens, tokens.length, 1, 3, out);
  t.equal(out.chains, 3);
  const chain = (c: number) => Array.from(out.tokens.subarray(c * 2, c * 2 + out.length[c]));
  t.same(chain(0), [7, 9]);
  t.same(chain(1), [3, 0]);
  t.same(chain(2), [5, 1]);
  const single = new Int32Array(2);
  contextDraft(tokens, tokens.length, 1, 3, single);
  t.same(Array.from(single), chain(0), 'chain 0 is the single prompt-lookup draft');
});
