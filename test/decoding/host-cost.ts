/**
 * Host-side cost of one decoding step (everything but the forward pass), measured with a null model
 * whose forward returns fixed random logits. Not a test (speed targets stay out of unit tests):
 *   node --expose-gc --import tsx test/decoding/host-cost.ts
 * Prints microseconds per step for several budgets, vocabularies and sampling settings, and the
 * heap bytes a step leaves behind (no GC in between: garbage counts too).
 */
import { Decoder, type GenerationOptions } from '../../src/decoding/decoder.js';
import type { TreeModel } from '../../src/decoding/model.js';
import { Rng } from '../../src/decoding/rng.js';

class NullModel implements TreeModel {
  readonly maskIds: readonly number[];
  cacheLength = 0;
  private readonly logits: Float32Array;
  constructor(
    readonly vocabSize: number,
    M: number,
    readonly maxPositions: number,
    maxQ: number,
  ) {
    this.maskIds = Array.from({ length: M }, (_, j) => vocabSize + j);
    const rng = new Rng(1);
    this.logits = new Float32Array(maxQ * vocabSize);
    for (let i = 0; i < this.logits.length; i++) this.logits[i] = 8 * rng.next();
  }
  forward(): Float32Array {
    return this.logits;
  }
  commit(_rows: Int32Array, count: number): void {
    this.cacheLength += count;
  }
  truncate(n: number): void {
    this.cacheLength = n;
  }
}

function measure(V: number, budget: number, gen: GenerationOptions, label: string): void {
  const M = 3;
  const maxPositions = 512;
  const model = new NullModel(V, M, maxPositions, 128);
  const decoder = new Decoder(model, { maxRows: 64, budget, prefillChunk: 64 });
  // Repetitive prompt so prompt lookup finds matches.
  const prompt = Array.from({ length: 40 }, (_, i) => (i * 7) % 23);
  let steps = 0;
  let ms = 0;
  let rows = 0;
  for (let rep = 0; rep < 40; rep++) {
    decoder.start(prompt, { ...gen, seed: rep });
    while (!decoder.contextFull && decoder.length < 300) {
      const t0 = performance.now();
      const r = decoder.step();
      ms += performance.now() - t0;
      rows += r.rowsFed;
      steps++;
    }
  }
  // Allocation: steps only (start() is per request), heap measured around them after full GCs.
  const gc = (globalThis as { gc?: () => void }).gc;
  let allocated = 'n/a (run with node --expose-gc)';
  if (gc) {
    decoder.start(prompt, { ...gen, seed: 1 });
    gc();
    const before = process.memoryUsage().heapUsed;
    let n = 0;
    while (!decoder.contextFull && decoder.length < 300) {
      decoder.step();
      n++;
    }
    const after = process.memoryUsage().heapUsed;
    allocated = `${((after - before) / n).toFixed(0)} B/step retained+garbage over ${n} steps`;
  }
  console.log(
    `${label.padEnd(28)} V=${String(V).padEnd(6)} budget=${String(budget).padEnd(3)} ` +
      `${((ms / steps) * 1000).toFixed(1).padStart(7)} us/step  rows/step=${(rows / steps).toFixed(1)}  ${allocated}`,
  );
}

for (const V of [512, 32000]) {
  for (const budget of [1, 8, 16, 32]) measure(V, budget, {}, 'greedy');
  for (const budget of [8, 16]) measure(V, budget, { temperature: 0.8, topP: 0.9, topK: 40 }, 'T=0.8 top-k 40 top-p 0.9');
  measure(V, 16, { temperature: 1 }, 'T=1');
}
measure(512, 1, { mode: 'plain' }, 'plain mode');
