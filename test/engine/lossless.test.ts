import t from 'tap';
import { BUNDLED_MODEL, STORIES260K_PACKAGE, storyPrompts } from '../../bench/data.js';
import { EveryStepSizing, inProcess, requirePackage } from './helpers.js';

// Losslessness is the product's core promise (bita.md §4): under greedy decoding, tree decoding
// must emit exactly the tokens plain decoding emits, whatever the tree looks like.
const PROMPTS = storyPrompts(30);
const NEW_TOKENS = 128;

const models: [string, string, string][] = [
  ['bundled model', BUNDLED_MODEL, 'git checkout (models/tinystories-bita is committed)'],
  ['stories260K', STORIES260K_PACKAGE, 'npm run model -- stories260k'],
];

for (const [label, dir, how] of models) {
  t.test(`${label}: BiTA greedy output equals plain greedy output token for token`, async (t) => {
    requirePackage(dir, how);
    const m = inProcess(dir);
    const everyStep = new EveryStepSizing(7);
    const perStep = inProcess(dir, 16, 'default', everyStep);
    let accepted = 0;
    let steps = 0;
    for (const [i, prompt] of PROMPTS.entries()) {
      const req = { prompt, maxTokens: NEW_TOKENS, stop: [] as string[] };
      const plain = m.gen.run(1, { ...req, mode: 'plain' }, () => {});
      t.ok(plain.tokens.length > 0, 'plain decoding produced tokens');
      for (const budget of [2, 4, 8, 16, 32]) {
        m.setBudget(budget);
        const bita = m.gen.run(1, { ...req, mode: 'bita' }, () => {});
        if (bita.tokens.join() !== plain.tokens.join()) {
          t.fail(`prompt ${i} budget ${budget}: ${bita.tokens.join(' ')} != ${plain.tokens.join(' ')}`);
        }
        accepted += bita.stats.outputTokens;
        steps += bita.stats.steps;
      }
      // Dynamic tree: a new row budget before every step, set where the tree sizing sets it.
      const before = everyStep.budgets.length;
      const dyn = perStep.gen.run(1, { ...req, mode: 'bita' }, () => {});
      if (dyn.tokens.join() !== plain.tokens.join()) t.fail(`prompt ${i} budget changing every step: output differs`);
      const used = everyStep.budgets.slice(before);
      if (used.length !== dyn.stats.steps) t.fail(`prompt ${i}: ${used.length} budgets for ${dyn.stats.steps} steps`);
    }
    const distinct = new Set(everyStep.budgets).size;
    t.ok(distinct >= 30, `the per-step budgets covered ${distinct} sizes over ${everyStep.budgets.length} steps`);
    t.pass(`${PROMPTS.length} prompts x ${NEW_TOKENS} tokens x 6 tree settings identical`);
    t.ok(accepted / steps > 1, `trees commit more than one token per step (${(accepted / steps).toFixed(2)})`);
  });
}
