// A synthetic Hugging Face folder (written by the test: config.json + hand-written safetensors,
// sharded or not, F32/F16/BF16, Qwen2-style q/k/v bias, tied and untied heads) imports into the
// reference model and computes the same logits as an independent HF-style forward, in torch and
// through the exported graph in onnxruntime.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { cosine, maxAbsDiff, openSession, py, readTensors, runCase, tempDir } from './helpers.js';

type Report = Record<string, {
  max_abs_diff: number; tokenizer: string | null; qkv_bias: boolean; tied: boolean; meta: Record<string, unknown>;
}>;

t.test('Hugging Face folders import and match an independent forward', async (t) => {
  const dir = tempDir(t);
  const report = JSON.parse(py(['test/toolchain/py/hf_folder.py', dir])) as Report;
  t.same(Object.keys(report).sort(), ['llama_bias_f16', 'llama_tied_bf16', 'qwen2_bias_f32_sharded']);
  t.ok(report.qwen2_bias_f32_sharded!.qkv_bias, 'qwen2 gets q/k/v bias');
  t.ok(report.llama_tied_bf16!.tied, 'tie_word_embeddings is honoured');
  for (const [name, r] of Object.entries(report)) {
    t.ok(r.max_abs_diff <= 1e-4, `${name}: torch vs reference max abs diff ${r.max_abs_diff.toExponential(2)}`);
    const s = await openSession(join(dir, name, 'onnx', 'model.onnx'));
    const c = readTensors(join(dir, name, 'onnx', 'case'));
    const out = await runCase(s, c);
    const d = maxAbsDiff(out.logits!, c.get('logits')!);
    t.ok(d <= 1e-4, `${name}: onnxruntime vs reference max abs diff ${d.toExponential(2)}`);
    // Quantised variants of tied/untied, biased, padded-block (K=48) models load and stay close.
    // Measured cosines: int8 ≥ 0.9993, int8w ≥ 0.9998, int4 0.96 (random weights, dim 32).
    for (const [v, floor] of [['int8', 0.998], ['int8w', 0.999], ['int4', 0.85]] as const) {
      const q = await runCase(await openSession(join(dir, name, 'onnx', `model.${v}.onnx`)), c);
      const cos = cosine(q.logits!, c.get('logits')!);
      t.ok(cos >= floor, `${name} ${v}: logits cosine ${cos.toFixed(4)} ≥ ${floor}`);
    }
  }
  // tokenizer.model is converted; tokenizer.json is taken as it is; both load in tokenizers.js.
  for (const name of ['llama_tied_bf16', 'qwen2_bias_f32_sharded']) {
    t.equal(report[name]!.tokenizer, 'tokenizer.json', `${name}: a tokenizer.json comes back`);
  }
  t.equal(report.llama_bias_f16!.tokenizer, null, 'a folder without tokenizer gives none');
  t.same(report.qwen2_bias_f32_sharded!.meta, {
    eos_id: 2, add_bos: false, chat_template: '{% for m in messages %}{{ m.content }}{% endfor %}',
  }, 'tokenizer_config.json: eos, add_bos and chat template are picked up for the manifest');
  const tj = JSON.parse(readFileSync(join(dir, 'qwen2_bias_f32_sharded', 'tokenizer.json'), 'utf8'));
  const tok = new Tokenizer(tj, { add_bos_token: true, bos_token: '<s>' });
  t.same(tok.encode('Once upon a time', { add_special_tokens: false }).ids, [403, 407, 261, 378]);
});
