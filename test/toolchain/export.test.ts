// The exported graph computes exactly the torch reference model (docs/package-format.md):
// stories260K with random BiTA adapters, so mask rows exercise the in-graph prefix K/V.
import t from 'tap';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { argmaxRows, maxAbsDiff, openSession, py, readTensors, runCase, tempDir } from './helpers.js';

const dir = tempDir(t);
py(['test/toolchain/py/ort_vectors.py', dir]);

t.test('fp32 graph matches torch logits and new K/V within 1e-4', async (t) => {
  const s = await openSession(join(dir, 'model.onnx'));
  for (const name of ['prefill', 'tree']) {
    const c = readTensors(join(dir, name));
    const out = await runCase(s, c);
    const past = c.get('past_key_0')!.dims[1];
    t.equal(past, name === 'prefill' ? 0 : 7, `${name}: past length`);
    for (const o of s.outputNames) {
      const d = maxAbsDiff(out[o]!, c.get(o)!);
      t.ok(d <= 1e-4, `${name}: ${o} max abs diff ${d.toExponential(2)} ≤ 1e-4`);
    }
  }
});

t.test('a multi-head (no GQA) model exports exactly too (aidreams260K)', async (t) => {
  const mha = tempDir(t);
  py(['test/toolchain/py/ort_vectors.py', mha, 'aidreams260K']);
  const s = await openSession(join(mha, 'model.onnx'));
  for (const name of ['prefill', 'tree']) {
    const c = readTensors(join(mha, name));
    const out = await runCase(s, c);
    let worst = 0;
    for (const o of s.outputNames) worst = Math.max(worst, maxAbsDiff(out[o]!, c.get(o)!));
    t.ok(worst <= 1e-4, `${name}: every output within ${worst.toExponential(2)} ≤ 1e-4`);
  }
});

t.test('positions at or beyond max_positions are refused, not silently wrapped', async (t) => {
  const s = await openSession(join(dir, 'model.onnx'));
  const c = readTensors(join(dir, 'prefill'));
  const q = c.get('input_ids')!.dims[1]!;
  const pos = new BigInt64Array(q).fill(511n);
  c.set('position_ids', new ort.Tensor('int64', pos, [1, q]));
  await t.resolves(runCase(s, c), 'position 511 (the last of 512) runs');
  c.set('position_ids', new ort.Tensor('int64', new BigInt64Array(q).fill(512n), [1, q]));
  await t.rejects(runCase(s, c), /out of range/, 'position 512 is an error');
});

t.test('quantised graphs store the embedding once and round like fake_quant_int8', async (t) => {
  type Facts = {
    bytes: Record<string, number>; vocab_tables: Record<string, string[]>;
    fake_quant_max_abs_diff: number; fake_quant_weights_compared: number; prefix_initializers: string[];
  };
  const f = JSON.parse(py(['test/toolchain/py/quant_facts.py', dir])) as Facts;
  t.same(f.prefix_initializers, [0, 1, 2, 3, 4].flatMap((i) => [`prefix_key_${i}`, `prefix_value_${i}`]).sort(),
    'BiTA prefix K/V are named initializers, one pair per layer');
  t.same(f.vocab_tables.fp32, ['(512, 64)'], 'fp32: the tied LM head reads the embedding (no transposed copy)');
  t.same(f.vocab_tables.int8, ['(512, 64)'], 'int8: one int8 table serves lookup and LM head');
  t.same(f.vocab_tables.int8w, ['(512, 64)'], 'int8w: one int8 table');
  t.same(f.vocab_tables.int4, ['(512, 1)', '(512, 2)', '(512, 32)'], 'int4: one packed table (+ scales, zero points)');
  t.ok(f.bytes.int8! < 0.45 * f.bytes.fp32!, `int8 ${f.bytes.int8} B < 45% of fp32 ${f.bytes.fp32} B`);
  t.ok(f.bytes.int4! < f.bytes.int8!, `int4 ${f.bytes.int4} B < int8`);
  t.ok(f.fake_quant_weights_compared >= 36, `${f.fake_quant_weights_compared} weight tensors compared`);
  t.equal(f.fake_quant_max_abs_diff, 0, 'graph int8 weights equal fake_quant_int8 weights exactly');
  // int8w computes fake_quant_int8's function; int8 (DynamicQuantizeMatMul) also rounds activations.
  const fq = readTensors(join(dir, 'fq_tree'));
  const w = await runCase(await openSession(join(dir, 'model.int8w.onnx')), fq);
  for (const o of ['logits', 'new_key_4', 'new_value_4']) {
    const d = maxAbsDiff(w[o]!, fq.get(o)!);
    t.ok(d <= 1e-4, `int8w vs torch fake-quant ${o}: ${d.toExponential(2)} ≤ 1e-4`);
  }
  for (const v of ['int8', 'int4']) {
    const out = await runCase(await openSession(join(dir, `model.${v}.onnx`)), fq);
    const same = argmaxRows(out.logits!).filter((x, i) => x === argmaxRows(fq.get('logits')!)[i]).length;
    t.comment(`${v}: tree-case argmax agreement with fake-quant torch ${same}/10`);
    t.ok(same >= (v === 'int8' ? 7 : 4), `${v} graph runs the tree case sensibly (${same}/10 argmax agree)`);
  }
});
