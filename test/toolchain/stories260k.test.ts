// stories260K, imported from llama2.c and exported by bitatool, decodes through onnxruntime-node
// to the greedy ids recorded in ../shared/data/PROVENANCE.md; its int8 graph agrees with fp32.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { REPO, greedy, openSession, provenanceIds, py, tempDir, type Manifest } from './helpers.js';

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
      (await import('node:child_process')).execFileSync(process.execPath, [join(REPO, 'models/bitatool/ort_eval.mjs'), pkg,
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
