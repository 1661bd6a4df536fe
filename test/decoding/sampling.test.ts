import t from 'tap';
import { argmax, sampleIndex, TargetDistribution } from '../../src/decoding/sampling.js';
import { Rng } from '../../src/decoding/rng.js';

/** Logits are float32, so compare to 1e-6. */
function close(got: ArrayLike<number>, want: number[], what: string): [boolean, string] {
  const ok = want.every((w, i) => Math.abs(got[i] - w) < 1e-6);
  return [ok, `${what}: got [${Array.from(got).map((x) => x.toFixed(4))}] want [${want.map((x) => x.toFixed(4))}]`];
}

const logits = Float32Array.from([Math.log(0.1), Math.log(0.4), Math.log(0.2), Math.log(0.3)]);

t.test('temperature 1 is the softmax, temperature 0.5 squares and renormalises', async (t) => {
  const d = new TargetDistribution(4);
  t.ok(...close(d.compute(logits, 0, { temperature: 1, topK: 0, topP: 1 }), [0.1, 0.4, 0.2, 0.3], 'T=1'));
  const sq = [0.01, 0.16, 0.04, 0.09];
  const z = sq.reduce((a, b) => a + b);
  t.ok(...close(d.compute(logits, 0, { temperature: 0.5, topK: 0, topP: 1 }), sq.map((x) => x / z), 'T=0.5'));
});

t.test('top-k keeps the k most likely tokens', async (t) => {
  const d = new TargetDistribution(4);
  t.ok(...close(d.compute(logits, 0, { temperature: 1, topK: 2, topP: 1 }), [0, 4 / 7, 0, 3 / 7], 'k=2'));
  t.ok(...close(d.compute(logits, 0, { temperature: 1, topK: 1, topP: 1 }), [0, 1, 0, 0], 'k=1'));
  t.ok(...close(d.compute(logits, 0, { temperature: 1, topK: 9, topP: 1 }), [0.1, 0.4, 0.2, 0.3], 'k>V'));
});

t.test('top-p keeps the shortest most-likely prefix reaching p', async (t) => {
  const d = new TargetDistribution(4);
  t.ok(...close(d.compute(logits, 0, { temperature: 1, topK: 0, topP: 0.65 }), [0, 4 / 7, 0, 3 / 7], 'p=0.65'));
  t.ok(...close(d.compute(logits, 0, { temperature: 1, topK: 0, topP: 0.75 }), [0, 4 / 9, 2 / 9, 3 / 9], 'p=0.75'));
  t.ok(...close(d.compute(logits, 0, { temperature: 1, topK: 0, topP: 0.01 }), [0, 1, 0, 0], 'p tiny keeps one'));
  t.ok(...close(d.compute(logits, 0, { temperature: 1, topK: 3, topP: 0.6 }), [0, 4 / 7, 0, 3 / 7], 'k then p'));
});

t.test('top-p over a large vocabulary matches a full sort (bucketed path)', async (t) => {
  const V = 3000;
  const rng = new Rng(3);
  const big = new Float32Array(V);
  for (let v = 0; v < V; v++) big[v] = 6 * rng.next();
  const d = new TargetDistribution(V);
  for (const topP of [0.3, 0.9, 0.999]) {
    const got = Float64Array.from(d.compute(big, 0, { temperature: 1, topK: 0, topP }));
    const full = Float64Array.from(d.compute(big, 0, { temperature: 1, topK: 0, topP: 1 }));
    const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => full[b] - full[a] || a - b);
    const want = new Float64Array(V);
    let cum = 0;
    let kept = 0;
    for (const v of order) {
      cum += full[v];
      kept++;
      if (cum >= topP) break;
    }
    let z = 0;
    for (let i = 0; i < kept; i++) z += full[order[i]];
    for (let i = 0; i < kept; i++) want[order[i]] = full[order[i]] / z;
    let err = 0;
    for (let v = 0; v < V; v++) err = Math.max(err, Math.abs(got[v] - want[v]));
    t.ok(err < 1e-12, `topP ${topP}: max error ${err}`);
  }
});

t.test('argmax returns the first maximum of the row at the offset', async (t) => {
  t.equal(argmax(Float32Array.from([0, 0, 5, 1, 9, 9, 2]), 3, 4), 1);
  t.equal(argmax(Float32Array.from([3, 3]), 0, 2), 0);
});

t.test('sampleIndex inverts the CDF and skips zero-probability tokens', async (t) => {
  const p = Float64Array.from([0, 0.5, 0, 0.5]);
  t.equal(sampleIndex(p, 0), 1);
  t.equal(sampleIndex(p, 0.49), 1);
  t.equal(sampleIndex(p, 0.5), 3);
  t.equal(sampleIndex(p, 0.9999999999), 3);
});

t.test('the seeded generator is deterministic and roughly uniform', async (t) => {
  const a = new Rng(42);
  const b = new Rng(42);
  const c = new Rng(43);
  const xs = Array.from({ length: 5 }, () => a.next());
  t.same(xs, Array.from({ length: 5 }, () => b.next()));
  t.not(xs[0], c.next());
  const r = new Rng(1);
  const bins = new Array(10).fill(0);
  let outside = 0;
  for (let i = 0; i < 100000; i++) {
    const u = r.next();
    if (!(u >= 0 && u < 1)) outside++;
    else bins[Math.floor(u * 10)]++;
  }
  t.equal(outside, 0);
  t.ok(bins.every((n) => Math.abs(n - 10000) < 500), `bins ${bins}`);
});

t.test('top-k agrees between the heap (small k) and quickselect (large k) paths', async (t) => {
  const V = 2000;
  const rng = new Rng(11);
  const row = new Float32Array(V);
  for (let v = 0; v < V; v++) row[v] = Math.round(40 * rng.next()) / 4; // many ties
  const d = new TargetDistribution(V);
  for (const k of [1, 7, 256, 257, 1000]) {
    const p = d.compute(row, 0, { temperature: 1, topK: k, topP: 1 });
    const sorted = Array.from(row).sort((a, b) => b - a);
    const kth = sorted[k - 1];
    let wrong = 0;
    for (let v = 0; v < V; v++) if ((p[v] > 0) !== (row[v] >= kth)) wrong++;
    t.equal(wrong, 0, `k=${k}: kept exactly the tokens at or above the k-th logit`);
    t.equal(d.supportSize, Array.from(row).filter((x) => x >= kth).length);
  }
});

t.test('a temperature too small for 1/T to be finite still gives the greedy limit, never NaN', async (t) => {
  const d = new TargetDistribution(4);
  for (const temperature of [1e-320, Number.MIN_VALUE, 1e-300, 1e-12]) {
    for (const [topK, topP] of [[0, 1], [2, 1], [0, 0.5], [3, 0.9]]) {
      const p = d.compute(logits, 0, { temperature, topK, topP });
      t.ok(...close(p, [0, 1, 0, 0], `T=${temperature} k=${topK} p=${topP}`));
      t.equal(d.sample(0.999), 1);
    }
  }
  // The limit of softmax(l / T) splits the mass evenly between tied maxima.
  const tied = Float32Array.from([1, 3, -2, 3]);
  t.ok(...close(d.compute(tied, 0, { temperature: 1e-320, topK: 0, topP: 1 }), [0, 0.5, 0, 0.5], 'tied maxima'));
});

t.test('top-p down to the smallest double keeps the most likely token', async (t) => {
  const d = new TargetDistribution(4);
  t.ok(...close(d.compute(logits, 0, { temperature: 1, topK: 0, topP: Number.MIN_VALUE }), [0, 1, 0, 0], 'p = 5e-324'));
  t.ok(...close(d.compute(logits, 0, { temperature: 1, topK: 0, topP: 1 - 1e-16 }), [0.1, 0.4, 0.2, 0.3], 'p just below 1'));
  t.ok(...close(d.compute(logits, 0, { temperature: 1, topK: 2 ** 53, topP: 1 }), [0.1, 0.4, 0.2, 0.3], 'k far above V'));
});
