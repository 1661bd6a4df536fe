// stories260K, imported from llama2.c and exported by bitatool, decodes through onnxruntime-node
// to the greedy ids recorded in ../shared/data/PROVENANCE.md; its int8 graph agrees with fp32.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { Tokenizer } from '@huggingface/tokenizers';
import { REPO, SHARED, argmaxRows, openSession, py, tempDir } from './helpers.js';

const NEG = -1e9;

function provenanceIds(): number[] {
  const text = readFileSync(join(SHARED, 'PROVENANCE.md'), 'utf8');
  const m = /first 40 greedy token ids after BOS \(1\) are: ([\d ]+)\./.exec(text);
  if (!m) throw new Error('PROVENANCE.md: greedy ids not found');
  return m[1]!.trim().split(/\s+/).map(Number);
}

type Manifest = { architecture: { n_layers: number; n_kv_heads: number; head_dim: number }; graphs: Record<string, string> };

/** KV-cached greedy decoding, one token per step, the cache kept by concatenating new rows. */
async function greedy(s: ort.InferenceSession, m: Manifest, prompt: number[], n: number): Promise<number[]> {
  const { n_layers: L, n_kv_heads: H, head_dim: D } = m.architecture;
  const cache: Float32Array[] = Array.from({ length: 2 * L }, () => new Float32Array(0));
  let past = 0;
  let feed = prompt;
  const out: number[] = [];
  while (out.length < n) {
    const q = feed.length;
    const bias = new Float32Array(q * (past + q)).fill(NEG);
    for (let r = 0; r < q; r++) for (let c = 0; c <= past + r; c++) bias[r * (past + q) + c] = 0;
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(feed.map(BigInt)), [1, q]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from(feed.map((_, i) => BigInt(past + i))), [1, q]),
      attention_bias: new ort.Tensor('float32', bias, [1, 1, q, past + q]),
    };
    for (let i = 0; i < L; i++) {
      feeds[`past_key_${i}`] = new ort.Tensor('float32', cache[2 * i]!, [1, past, H, D]);
      feeds[`past_value_${i}`] = new ort.Tensor('float32', cache[2 * i + 1]!, [1, past, H, D]);
    }
    const r = await s.run(feeds);
    for (let i = 0; i < L; i++) {
      for (const [j, name] of [[2 * i, `new_key_${i}`], [2 * i + 1, `new_value_${i}`]] as const) {
        const add = r[name]!.data as Float32Array;
        const next = new Float32Array(cache[j]!.length + add.length);
        next.set(cache[j]!);
        next.set(add, cache[j]!.length);
        cache[j] = next;
      }
    }
    past += q;
    const next = argmaxRows(r.logits!).at(-1)!;
    out.push(next);
    feed = [next];
  }
  return out;
}

t.test('stories260K package', async (t) => {
  const dir = tempDir(t);
  py(['test/toolchain/py/stories_package.py', dir, '24']);
  const pkg = join(dir, 'package');
  const manifest = JSON.parse(readFileSync(join(pkg, 'manifest.json'), 'utf8')) as Manifest & { bita: unknown };
  t.equal(manifest.bita, null, 'no adapters: plain decoding package');

  await t.test('fp32 graph reproduces the greedy ids in PROVENANCE.md', async (t) => {
    const expected = provenanceIds();
    t.equal(expected.length, 40);
    const s = await openSession(join(pkg, manifest.graphs.fp32!));
    t.same(await greedy(s, manifest, [1], 40), expected, 'first 40 greedy ids after BOS');
    const tok = new Tokenizer(JSON.parse(readFileSync(join(pkg, 'tokenizer.json'), 'utf8')),
      JSON.parse(readFileSync(join(pkg, 'tokenizer_config.json'), 'utf8')));
    t.match(tok.decode(expected), /^Once upon a time, there was a little girl named Lily\./);
  });

  await t.test('int8 graphs agree with fp32 on held-out greedy tokens', async (t) => {
    const seqs = JSON.parse(readFileSync(join(dir, 'heldout.json'), 'utf8')) as number[][];
    const out = JSON.parse(
      (await import('node:child_process')).execFileSync('node', [join(REPO, 'models/bitatool/ort_eval.mjs'), pkg,
        join(dir, 'heldout.json')], { encoding: 'utf8' }).trim()) as {
      positions: number; agreement_vs_fp32: Record<string, number>;
    };
    t.equal(out.positions, seqs.reduce((n, s) => n + s.length, 0), `${out.positions} held-out positions`);
    const int8 = out.agreement_vs_fp32.int8!;
    const int8w = out.agreement_vs_fp32.int8w!;
    const int4 = out.agreement_vs_fp32.int4!;
    t.comment(`greedy agreement vs fp32: int8 ${int8}, int8w ${int8w}, int4 ${int4}`);
    t.ok(int8 >= 0.92, `int8 (DynamicQuantizeMatMul) agreement ${int8} ≥ 0.92`);
    t.ok(int8w >= 0.96, `int8w (int8 storage, fp32 compute) agreement ${int8w} ≥ 0.96`);
    t.ok(int8w > int8, 'int8 storage with fp32 compute is closer than int8 compute');
    t.ok(int4 >= 0.7, `int4 agreement ${int4} ≥ 0.7 (4-bit is lossy on a 260K model)`);
    t.ok(int8 > int4, 'int8 is closer to fp32 than 4-bit');
  });
});
