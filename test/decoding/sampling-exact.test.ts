import t from 'tap';
import { Decoder } from '../../src/decoding/decoder.js';
import { TargetDistribution, type SamplingParams } from '../../src/decoding/sampling.js';
import { FakeModel, type FakeSpec } from './fake-model.js';
import { chiSquare } from './stats.js';

/**
 * End to end: the first three generated tokens of tree-sampled generations (prefill, then tree steps
 * with mask and context drafts) must follow p(y1) p(y2|y1) p(y3|y1,y2) of the fake model's own
 * distributions after temperature / top-k / top-p.
 */
interface Case {
  name: string;
  spec: FakeSpec;
  prompt: number[];
  params: SamplingParams;
  contextDrafts: boolean;
}

const cases: Case[] = [
  {
    name: 'good mask drafts, temperature 1',
    spec: { V: 5, M: 2, maxPositions: 64, seed: 11, scale: 3, maskAccuracy: 0.95 },
    prompt: [0, 1],
    params: { temperature: 1, topK: 0, topP: 1 },
    contextDrafts: false,
  },
  {
    name: 'bad mask drafts, temperature 1',
    spec: { V: 5, M: 2, maxPositions: 64, seed: 12, scale: 3, maskAccuracy: 0 },
    prompt: [0, 1],
    params: { temperature: 1, topK: 0, topP: 1 },
    contextDrafts: false,
  },
  {
    name: 'mask and context drafts, temperature 0.8, top-k 3',
    spec: { V: 5, M: 3, maxPositions: 64, seed: 13, scale: 3, maskAccuracy: 0.6 },
    prompt: [0, 1, 2, 0, 1, 2, 0, 1],
    params: { temperature: 0.8, topK: 3, topP: 1 },
    contextDrafts: true,
  },
  {
    name: 'mask and context drafts, temperature 1.2, top-p 0.85',
    spec: { V: 5, M: 2, maxPositions: 64, seed: 14, scale: 3, maskAccuracy: 0.6 },
    prompt: [3, 4, 3, 4, 3],
    params: { temperature: 1.2, topK: 0, topP: 0.85 },
    contextDrafts: true,
  },
];

const N = 20000;

for (const c of cases) {
  t.test(`sampling is exact: ${c.name}`, async (t) => {
    const model = new FakeModel(c.spec);
    const V = c.spec.V;
    const dist = new TargetDistribution(V);
    const p = (context: number[]): Float64Array => Float64Array.from(dist.compute(model.logitsFor(context), 0, c.params));
    const expected = new Map<string, number>();
    const p1 = p(c.prompt);
    for (let a = 0; a < V; a++) {
      const p2 = p([...c.prompt, a]);
      for (let b = 0; b < V; b++) {
        const p3 = p([...c.prompt, a, b]);
        for (let d = 0; d < V; d++) expected.set(`${a},${b},${d}`, p1[a] * p2[b] * p3[d]);
      }
    }
    const decoder = new Decoder(model, { budget: 12, maskTopK: 3, contextDrafts: c.contextDrafts });
    const observed = new Map<string, number>();
    let accepted = 0;
    let multiStep = 0;
    for (let i = 0; i < N; i++) {
      decoder.start(c.prompt, { ...c.params, seed: i });
      let steps = 0;
      while (decoder.length < c.prompt.length + 3) {
        accepted += decoder.step().accepted;
        steps++;
      }
      if (steps > 1) multiStep++;
      const key = decoder.output().slice(0, 3).join(',');
      observed.set(key, (observed.get(key) ?? 0) + 1);
    }
    const chi = chiSquare(observed, expected, N);
    t.equal(chi.impossible, 0, 'no sequence outside the target support');
    t.ok(chi.p > 0.01, `chi-square ${chi.statistic.toFixed(1)} on ${chi.df} df, p = ${chi.p.toFixed(3)}`);
    t.ok(accepted > N / 10, `drafts were accepted (${accepted} over ${N} generations, ${multiStep} needed 2 steps)`);
  });
}
