import t from 'tap';
import { Decoder, type DecoderOptions } from '../../src/decoding/decoder.js';
import { DecoderStateError, PromptTooLongError } from '../../src/decoding/errors.js';
import { Rng } from '../../src/decoding/rng.js';
import { FakeModel, referenceGreedy, type FakeSpec } from './fake-model.js';

interface RunStats {
  tokens: number[];
  steps: number;
  rows: number;
  acceptedMask: number;
  acceptedContext: number;
  maxRowsPerStep: number;
}

/** Generates up to maxTokens with the decoder; `budgetAt(step)` may change the budget between steps. */
function generate(
  model: FakeModel,
  decoder: Decoder,
  prompt: number[],
  maxTokens: number,
  mode: 'bita' | 'plain' = 'bita',
  budgetAt?: (step: number) => number,
): RunStats {
  const first = decoder.start(prompt, { mode });
  const tokens = Array.from(first.tokens.subarray(0, first.count));
  const s: RunStats = { tokens, steps: 0, rows: 0, acceptedMask: 0, acceptedContext: 0, maxRowsPerStep: 0 };
  let full = first.contextFull;
  while (tokens.length < maxTokens && !full) {
    if (budgetAt) decoder.setBudget(budgetAt(s.steps));
    const before = model.rowsFed;
    const r = decoder.step();
    if (r.rowsFed !== model.rowsFed - before) throw new Error('rowsFed does not match the model');
    if (r.rowsFed > decoder.budget && mode === 'bita') throw new Error(`step fed ${r.rowsFed} > budget ${decoder.budget}`);
    if (r.count !== r.accepted + 1) throw new Error('count != accepted + 1');
    for (let i = 0; i < r.count; i++) tokens.push(r.tokens[i]);
    s.steps++;
    s.rows += r.rowsFed;
    s.acceptedMask += r.acceptedMask;
    s.acceptedContext += r.acceptedContext;
    s.maxRowsPerStep = Math.max(s.maxRowsPerStep, r.rowsFed);
    full = r.contextFull;
  }
  s.tokens = tokens.slice(0, maxTokens); // the caller stops at maxTokens at a step boundary
  return s;
}

function randomPrompt(rng: Rng, V: number, length: number): number[] {
  return Array.from({ length }, () => rng.nextU32() % V);
}

const budgets: (number | 'dynamic')[] = [1, 2, 4, 8, 16, 32, 'dynamic'];

t.test('tree decoding emits exactly the greedy tokens', async (t) => {
  let configs = 0;
  let totalTokens = 0;
  let totalSteps = 0;
  for (let seed = 1; seed <= 12; seed++) {
    const spec: FakeSpec = { V: 24 + seed, M: 1 + (seed % 3), maxPositions: 160, seed, maskAccuracy: 0.2 + 0.06 * seed };
    const model = new FakeModel(spec);
    const rng = new Rng(seed);
    const prompt = randomPrompt(rng, spec.V, 3 + (seed % 7));
    const want = referenceGreedy(model, prompt, 64);
    for (const contextDrafts of [true, false]) {
      for (const b of budgets) {
        const options: DecoderOptions = { maxRows: 32, budget: b === 'dynamic' ? 8 : b, contextDrafts, maskTopK: 3 };
        const decoder = new Decoder(model, options);
        const dyn = new Rng(seed * 31);
        const got = generate(model, decoder, prompt, 64, 'bita', b === 'dynamic' ? () => 1 + (dyn.nextU32() % 32) : undefined);
        t.same(got.tokens, want, `seed ${seed}, budget ${b}, context drafts ${contextDrafts}`);
        configs++;
        totalTokens += got.tokens.length;
        totalSteps += got.steps + 1;
      }
    }
  }
  t.ok(totalTokens / totalSteps > 1.3, `drafts are accepted: ${(totalTokens / totalSteps).toFixed(2)} tokens per step over ${configs} runs`);
});

t.test('plain mode feeds one row per step and equals the reference', async (t) => {
  const model = new FakeModel({ V: 30, M: 3, maxPositions: 100, seed: 5 });
  const prompt = [1, 2, 3, 4];
  const decoder = new Decoder(model, { budget: 16 });
  const got = generate(model, decoder, prompt, 40, 'plain');
  t.same(got.tokens, referenceGreedy(model, prompt, 40));
  t.equal(got.maxRowsPerStep, 1);
  t.equal(got.steps, 39);
});

t.test('a model without adapters still decodes losslessly with context drafts only', async (t) => {
  const model = new FakeModel({ V: 12, M: 0, maxPositions: 120, seed: 9, order: 1 });
  const prompt = [3, 1, 4, 1, 5];
  const decoder = new Decoder(model, { budget: 8 });
  const got = generate(model, decoder, prompt, 80);
  t.same(got.tokens, referenceGreedy(model, prompt, 80));
  t.equal(got.acceptedMask, 0);
  t.ok(got.acceptedContext > 0, 'order-1 text repeats, so prompt lookup is accepted');
});

t.test('each source is credited separately', async (t) => {
  const spec: FakeSpec = { V: 40, M: 3, maxPositions: 200, seed: 3, maskAccuracy: 0.9 };
  const model = new FakeModel(spec);
  const prompt = [7, 8, 9];
  const masksOnly = generate(model, new Decoder(model, { budget: 12, contextDrafts: false }), prompt, 100);
  t.equal(masksOnly.acceptedContext, 0);
  t.ok(masksOnly.acceptedMask > 20, `accurate masks are accepted (${masksOnly.acceptedMask})`);
  const both = generate(model, new Decoder(model, { budget: 12 }), prompt, 100);
  t.same(both.tokens, masksOnly.tokens);
  t.ok(both.acceptedContext > 0);
});

t.test('the row budget can change between steps and is respected', async (t) => {
  const model = new FakeModel({ V: 20, M: 2, maxPositions: 200, seed: 17 });
  const decoder = new Decoder(model, { maxRows: 24, budget: 4 });
  const prompt = [1, 2, 3];
  const schedule = [1, 24, 3, 2, 7, 1, 1, 16, 5, 100, 0];
  const got = generate(model, decoder, prompt, 100, 'bita', (s) => schedule[s % schedule.length]);
  t.same(got.tokens, referenceGreedy(model, prompt, 100));
  t.ok(got.maxRowsPerStep <= 24);
  decoder.setBudget(0);
  t.equal(decoder.budget, 1);
  decoder.setBudget(1e9);
  t.equal(decoder.budget, 24);
});

t.test('the context length is never exceeded and the last position is used', async (t) => {
  for (const promptLength of [1, 5, 12, 18]) {
    for (const budget of [1, 6, 16]) {
      const model = new FakeModel({ V: 10, M: 3, maxPositions: 20, seed: 23, order: 1 });
      const prompt = randomPrompt(new Rng(promptLength), 10, promptLength);
      const decoder = new Decoder(model, { budget, maxRows: 16 });
      const got = generate(model, decoder, prompt, 1000);
      t.equal(decoder.length, 20, `prompt ${promptLength}, budget ${budget} fills the context`);
      t.same(got.tokens, referenceGreedy(model, prompt, 1000));
      t.ok(decoder.contextFull);
      t.throws(() => decoder.step(), DecoderStateError);
    }
  }
});

t.test('a prompt that leaves no room fails with a typed error', async (t) => {
  const model = new FakeModel({ V: 10, M: 3, maxPositions: 20, seed: 1 });
  const decoder = new Decoder(model);
  const err = t.throws(() => decoder.start(new Array(20).fill(1))) as unknown;
  t.ok(err instanceof PromptTooLongError);
  t.equal((err as PromptTooLongError).code, 'prompt_too_long');
  t.throws(() => decoder.start([]), DecoderStateError);
  const one = decoder.start(new Array(19).fill(1));
  t.equal(one.count, 1);
  t.ok(one.contextFull);
});

t.test('a prompt longer than one prefill chunk is prefilled in chunks', async (t) => {
  const model = new FakeModel({ V: 16, M: 2, maxPositions: 300, seed: 4 });
  const prompt = randomPrompt(new Rng(99), 16, 150);
  const decoder = new Decoder(model, { prefillChunk: 32 });
  const got = generate(model, decoder, prompt, 50);
  t.same(got.tokens, referenceGreedy(model, prompt, 50));
  t.same(model.cached().slice(0, 150), prompt);
});

t.test('start() resets a decoder that was used before', async (t) => {
  const model = new FakeModel({ V: 16, M: 2, maxPositions: 100, seed: 8 });
  const decoder = new Decoder(model);
  generate(model, decoder, [1, 2, 3], 30);
  const again = generate(model, decoder, [4, 5], 30);
  t.same(again.tokens, referenceGreedy(model, [4, 5], 30));
  t.equal(decoder.promptLength, 2);
  t.same(decoder.output().slice(0, 30), again.tokens);
  t.same(model.cached().slice(0, 2), [4, 5]);
});

t.test('a model whose cache disagrees with the decoder is detected', async (t) => {
  const model = new FakeModel({ V: 16, M: 2, maxPositions: 100, seed: 8 });
  const decoder = new Decoder(model);
  decoder.start([1, 2, 3]);
  model.truncate(1);
  t.throws(() => decoder.step(), DecoderStateError);
});

t.test('the gain curve starts at 1, never falls, and predicts what trees of each size commit', async (t) => {
  const model = new FakeModel({ V: 40, M: 3, maxPositions: 2000, seed: 21, maskAccuracy: 0.7 });
  const decoder = new Decoder(model, { maxRows: 32, budget: 8 });
  const prompt = [5, 6, 7, 5, 6];
  decoder.start(prompt);
  // Warm the learned rates, then compare predicted and committed tokens per step at 2 and 24 rows.
  let predicted = [0, 0];
  let committed = [0, 0];
  for (let s = 0; s < 160; s++) {
    const k = s % 2;
    const rows = k === 0 ? 2 : 24;
    decoder.setBudget(rows);
    decoder.measureGainNextStep();
    const r = decoder.step();
    t.equal(r.gainRows, 32);
    const c = decoder.gainCurve;
    if (s === 0) {
      t.equal(c[1], 1, 'one row commits exactly one token');
      for (let i = 2; i <= 32; i++) if (c[i] < c[i - 1]) t.fail(`curve falls at ${i}`);
    }
    if (s >= 60) {
      predicted[k] += c[rows];
      committed[k] += r.count;
    }
  }
  predicted = predicted.map((x) => x / 50);
  committed = committed.map((x) => x / 50);
  t.ok(predicted[1] > predicted[0], `a wider tree is predicted to commit more (${predicted.map((x) => x.toFixed(2))})`);
  t.ok(committed[1] > committed[0], `and does (${committed.map((x) => x.toFixed(2))})`);
  const r = decoder.step();
  t.equal(r.gainRows, 0, 'only steps after measureGainNextStep fill the curve');
});

t.test('a sampled request does not throw away the greedy requests\' learned rates', async (t) => {
  const model = new FakeModel({ V: 30, M: 3, maxPositions: 300, seed: 8, maskAccuracy: 0.9 });
  const decoder = new Decoder(model, { budget: 12 });
  generate(model, decoder, [1, 2, 3, 1, 2, 3], 150);
  const learned = decoder.estimates();
  t.not(learned.groupGain, 1, 'greedy steps moved the mask group gain away from its default');
  decoder.start([4, 5, 6], { temperature: 1, seed: 3 });
  t.same(decoder.estimates(), { contextRate: 0.5, contextAltRate: 0.2, groupGain: 1 }, 'a sampled request starts from the defaults (seed reproducibility)');
  for (let i = 0; i < 20; i++) decoder.step();
  decoder.start([1, 2, 3]);
  t.same(decoder.estimates(), learned, 'the next greedy request continues from what greedy requests learned');
});
