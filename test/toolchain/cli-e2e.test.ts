// The CLI path a user takes for a llama2.c model: import, convert the tokenizer, export, quantise.
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { SHARED, greedy, openSession, provenanceIds, py, tempDir } from './helpers.js';

t.test('import-llama2c → export → quantize produce graphs that decode stories260K', async (t) => {
  const dir = tempDir(t);
  const st = join(SHARED, 'models/stories260K');
  const script = `
import sys
from bitatool.__main__ import main
d, st = sys.argv[1], sys.argv[2]
for argv in (["import-llama2c", st + "/stories260K.bin", "--out", d + "/m.pt", "--tokenizer", st + "/tok512.bin"],
             ["convert-tokenizer", st + "/tok512.model", "--out", d + "/sp.json"],
             ["export", d + "/m.pt", "--out", d + "/m.onnx"],
             ["quantize", d + "/m.onnx", "--out", d + "/m.int8.onnx"],
             ["quantize", d + "/m.onnx", "--bits", "4", "--out", d + "/m.int4.onnx"]):
    assert main(argv) == 0, argv
`;
  const log = py(['-c', script, dir, st]);
  t.match(log, /\[import\].*260032 parameters/, 'import reports the parameter count');
  t.match(log, /\[quantize\].*8-bit/);
  for (const f of ['m.pt', 'tokenizer.json', 'sp.json', 'm.onnx', 'm.int8.onnx', 'm.int4.onnx']) {
    t.ok(existsSync(join(dir, f)), `${f} written`);
  }
  t.same(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')).model.merges,
    JSON.parse(readFileSync(join(dir, 'sp.json'), 'utf8')).model.merges, 'tok512.bin and tok512.model convert alike');
  const arch = { n_layers: 5, n_kv_heads: 4, head_dim: 8 };
  const s = await openSession(join(dir, 'm.onnx'));
  const ids = await greedy(s, { architecture: arch, graphs: {} }, [1], 20);
  t.same(ids, provenanceIds().slice(0, 20), 'exported graph: first 20 greedy ids');
  const q = await greedy(await openSession(join(dir, 'm.int8.onnx')), { architecture: arch, graphs: {} }, [1], 20);
  t.ok(q.filter((x, i) => x === ids[i]).length >= 10, `int8 graph follows for a while: ${q.join(' ')}`);
  const tok = new Tokenizer(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')), {});
  t.match(tok.decode(ids), /^Once upon a time/);
});
