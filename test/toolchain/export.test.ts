// The exported graph computes exactly the torch reference model (docs/package-format.md):
// stories260K with random BiTA adapters, so mask rows exercise the in-graph prefix K/V.
import t from 'tap';
import { join } from 'node:path';
import { maxAbsDiff, openSession, py, readTensors, runCase, tempDir } from './helpers.js';

t.test('fp32 graph matches torch logits and new K/V within 1e-4', async (t) => {
  const dir = tempDir(t);
  py([join('test/toolchain/py/ort_vectors.py'), dir]);
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
