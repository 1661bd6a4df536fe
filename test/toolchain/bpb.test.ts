// bits_per_byte: exact on a model whose predictions are known, plausible on stories260K.
import t from 'tap';
import { py } from './helpers.js';

t.test('bits per byte counts -log2 p per byte of held-out text', async (t) => {
  const r = JSON.parse(py(['test/toolchain/py/bpb_facts.py'])) as {
    uniform: number; expected_uniform: number; real: number; paragraphs: number;
  };
  t.equal(r.paragraphs, 6);
  t.ok(Math.abs(r.uniform - r.expected_uniform) < 1e-6,
    `uniform model: ${r.uniform.toFixed(6)} = 9 bits × tokens / bytes = ${r.expected_uniform.toFixed(6)} (windowed at 16)`);
  // stories260K on the whole held-out text measures 1.2756; a few paragraphs land near it.
  t.ok(r.real > 0.9 && r.real < 1.7, `stories260K: ${r.real.toFixed(4)} bits/byte on 6 held-out paragraphs`);
  t.ok(r.real < r.uniform / 2, 'a trained model beats a uniform guess by far');
});
