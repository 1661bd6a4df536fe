import t from 'tap';
import { BUNDLED_MODEL } from '../../bench/data.js';
import { chiSquareHomogeneity } from '../decoding/stats.js';
import { inProcess, requirePackage } from './helpers.js';

// Tree sampling must leave the model's distribution unchanged (bita.md §6, SpecInfer-style
// verification). On the real model the exact distribution is unknown, so plain and tree sampling
// are compared with each other: the tokens at output positions 1 and 2 are the first ones that
// tree verification (not prefill) decides, so their frequencies must agree.
const MODEL = process.env.BITAD_TEST_PACKAGE ?? BUNDLED_MODEL;
const DRAWS = 2500;

t.test('plain and tree sampling give the same token frequencies on the real model', async (t) => {
  requirePackage(MODEL, 'git checkout (the bundled model is committed)');
  const m = inProcess(MODEL, 16);
  const req = { prompt: 'Once upon a time, there was a', maxTokens: 3, temperature: 1, topK: 12, topP: 0.95, stop: [] };
  const counts = { plain: [new Map(), new Map()], bita: [new Map(), new Map()] } as Record<'plain' | 'bita', Map<string, number>[]>;
  let multi = 0;
  for (let seed = 1; seed <= DRAWS; seed++) {
    for (const mode of ['plain', 'bita'] as const) {
      const r = m.gen.run(1, { ...req, mode, seed: mode === 'plain' ? seed : seed + 1_000_000 }, () => {});
      if (mode === 'bita' && r.stats.acceptedHistogram.length > 2) multi++;
      for (const pos of [1, 2]) {
        const key = r.tokens.slice(0, pos + 1).join(',');
        counts[mode][pos - 1].set(key, (counts[mode][pos - 1].get(key) ?? 0) + 1);
      }
    }
  }
  t.ok(multi > DRAWS / 20, `tree steps accepted drafts in ${multi} of ${DRAWS} sampled generations`);
  for (const pos of [0, 1]) {
    const c = chiSquareHomogeneity(counts.plain[pos], counts.bita[pos]);
    t.ok(c.p > 0.01, `prefixes up to output ${pos + 1}: chi-square ${c.statistic.toFixed(1)} on ${c.df} df, p = ${c.p.toFixed(3)}`);
  }
});
