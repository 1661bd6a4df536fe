// The toolchain CLI and the stories260K recipe with adapters attached.
import t from 'tap';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { py, tempDir } from './helpers.js';

const COMMANDS = ['import-llama2c', 'import-hf', 'convert-tokenizer', 'export', 'quantize', 'package', 'bpb', 'stories260k'];

// One interpreter for all the --help calls (each python + torch start costs seconds here).
const HELP = `
import contextlib, io, json, sys
from bitatool.__main__ import main
out = {}
for argv in [["--help"]] + [[c, "--help"] for c in sys.argv[1:]]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    out[argv[0]] = {"code": code, "text": buf.getvalue()}
print(json.dumps(out))
`;

t.test('bitatool lists its commands and each answers --help', async (t) => {
  const r = JSON.parse(py(['-c', HELP, ...COMMANDS])) as Record<string, { code: number; text: string }>;
  for (const c of COMMANDS) {
    t.match(r['--help']!.text, c, `${c} is listed`);
    t.equal(r[c]!.code, 0, `${c} --help exits 0`);
    t.match(r[c]!.text, new RegExp(`usage: bitatool ${c}`), `${c} --help prints its usage`);
  }
});

t.test('stories260k recipe attaches adapters and records them in the manifest', async (t) => {
  const dir = tempDir(t);
  type M = {
    bita: { mask_token_ids: number[]; prefix_slots: number } | null; architecture: { n_masks: number; n_prefix: number };
    graphs: Record<string, string>; files: Record<string, { bytes: number; sha256: string }>;
    eval: Record<string, unknown>; provenance: { adapters: { sha256: string } | null };
  };
  const r = JSON.parse(py(['test/toolchain/py/adapters_package.py', dir])) as { manifest: M; refused: string | null };
  const m = r.manifest;
  t.same(m.bita, { mask_token_ids: [512, 513, 514, 515], prefix_slots: 8 }, 'bita block from the adapters');
  t.equal(m.architecture.n_masks, 4);
  t.equal(m.architecture.n_prefix, 8);
  t.same(m.eval.mask_top1, [0.5, 0.3, 0.2, 0.1], 'mask accuracy carried from the adapters file');
  t.same(m.graphs, { default: 'int8w', fp32: 'model.onnx', int8w: 'model.int8w.onnx' }, 'graphs listed, int8w served');
  const adapters = createHash('sha256').update(readFileSync(join(dir, 'adapters.pt'))).digest('hex');
  t.equal(m.provenance.adapters?.sha256, adapters, 'provenance pins the adapters file');
  for (const [f, e] of Object.entries(m.files)) {
    const b = readFileSync(join(dir, 'package', f));
    t.equal(createHash('sha256').update(b).digest('hex'), e.sha256, `${f}: sha256 matches`);
    t.equal(b.length, e.bytes, `${f}: bytes match`);
  }
  t.match(r.refused ?? '', /do not fit/, 'adapters of another shape are refused');
});
