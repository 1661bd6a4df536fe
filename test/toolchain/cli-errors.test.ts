// bitatool on bad input: a user's mistake (a missing or corrupt file, an empty text, a numeric
// option out of range) gets one line naming the file or option and a non-zero exit, not a traceback.
import { copyFileSync, writeFileSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import t from 'tap';
import { REPO, py, tempDir } from './helpers.js';

type Run = { argv: string[]; code: number | null; stderr: string; stdout: string; raised: string | null };
const runAll = (argvs: string[][], parseOnly = false): Run[] =>
  JSON.parse(py(['test/toolchain/py/cli_errors.py', ...(parseOnly ? ['--parse-only'] : []), JSON.stringify(argvs)])) as Run[];

t.test('missing, corrupt and wrong-kind input files: one line naming the file, exit 1', async (t) => {
  const dir = tempDir(t, 'cli-errors-');
  const missing = join(dir, 'missing.pt');
  const corrupt = join(dir, 'truncated.pt');
  writeFileSync(corrupt, 'PK\x03\x04 not a whole checkpoint');
  const folder = join(dir, 'a-folder');
  mkdirSync(folder);
  const empty = join(dir, 'empty.txt');
  writeFileSync(empty, '');
  const notes = join(dir, 'notes.txt');
  writeFileSync(notes, 'hello\n');
  const torchFile = join(REPO, 'models/stories260K-bita/adapters.pt');
  const cases: [string[], RegExp][] = [
    [['export', missing, '--out', join(dir, 'x.onnx')], /missing\.pt/],
    [['package', missing, '--out', join(dir, 'pkg'), '--name', 'n'], /missing\.pt/],
    [['export', corrupt, '--out', join(dir, 'x.onnx')], /truncated\.pt: not a bitatool checkpoint/],
    [['export', folder, '--out', join(dir, 'x.onnx')], /a-folder.*config\.json/],
    [['bpb', '--no-baseline', '--text', folder], /a-folder/],
    [['bpb', '--no-baseline', '--text', empty], /empty\.txt: .*blank line/],
    [['convert-tokenizer', join(dir, 'missing.model'), '--out', join(dir, 't.json')], /missing\.model/],
    [['quantize', notes, '--out', join(dir, 'q.onnx')], /notes\.txt: not an ONNX model/],
    [['quantize', torchFile, '--out', join(dir, 'q.onnx'), '--bits', '4'], /adapters\.pt: not an ONNX model/],
    [['quantize', empty, '--out', join(dir, 'q.onnx')], /empty\.txt: not an ONNX model/],
  ];
  const runs = runAll(cases.map(([argv]) => argv));
  cases.forEach(([argv, names], i) => {
    const r = runs[i]!;
    t.equal(r.raised, null, `${argv[0]} ${argv[1]}: nothing escapes main()`);
    t.equal(r.code, 1, `${argv[0]}: exit code 1`);
    t.match(r.stderr, new RegExp(`^bitatool ${argv[0]}: error: `), `${argv[0]}: "bitatool <command>: error:" line`);
    t.match(r.stderr, names, `${argv[0]}: names the input`);
    t.notMatch(r.stderr, /Traceback/, `${argv[0]}: no traceback`);
  });
});

t.test('numeric options out of range are refused while parsing, naming the option', async (t) => {
  const cases: [string[], string][] = [
    [['distill', '--steps', '-3'], '--steps'],
    [['distill', '--steps', '0'], '--steps'],
    [['distill', '--batch', '0'], '--batch'],
    [['distill', '--lr', '-1'], '--lr'],
    [['distill', '--ckpt-every', '0'], '--ckpt-every'],
    [['distill', '--teacher-sample-frac', '1.5'], '--teacher-sample-frac'],
    [['train-bita', '--steps', '0'], '--steps'],
    [['train-bita', '--prefix-dropout', '-0.1'], '--prefix-dropout'],
    [['train-mask-aware', '--model', 'm.pt', '--out', 'o.pt', '--batch', '0'], '--batch'],
    [['train-mask-aware', '--model', 'm.pt', '--out', 'o.pt', '--lr-base', '-1e-3'], '--lr-base'],
    [['distill', '--threads', '0'], '--threads'],
    [['distill', '--init-step', '-1'], '--init-step'],
    [['import-llama2c', 'x.bin', '--out', 'o.pt', '--max-positions', '0'], '--max-positions'],
    [['import-hf', 'dir', '--out', 'o.pt', '--max-positions', '-1'], '--max-positions'],
    [['bpb', '--max-paragraphs', '0'], '--max-paragraphs'],
    [['gen-data', '--n-train', '0'], '--n-train'],
    [['gen-data', '--n-new', '0'], '--n-new'],
    [['train-bita', '--n-eval', '0'], '--n-eval'],
    [['eval-masks', '--k', '0'], '--k'],
    [['train-mask-aware', '--model', 'm.pt', '--out', 'o.pt', '--stop-after', '0'], '--stop-after'],
    [['train-mask-aware', '--model', 'm.pt', '--out', 'o.pt', '--eval-paragraphs', '0'], '--eval-paragraphs'],
    [['quality', 'm.pt', '--prompts', '0'], '--prompts'],
    [['quality', 'm.pt', '--paragraphs', '-2'], '--paragraphs'],
    [['ngram', '--model', 'stories260k', '--out', 'n.bin', '--n', '0'], '--n'],
    [['ngram', '--model', 'stories260k', '--out', 'n.bin', '--new-tokens', '0'], '--new-tokens'],
    [['ngram', '--model', 'stories260k', '--out', 'n.bin', '--threads', '0'], '--threads'],
    [['random-graph', '--out', 'g', '--dim', '0'], '--dim'],
    [['random-graph', '--out', 'g', '--layers', '-1'], '--layers'],
    [['random-graph', '--out', 'g', '--vocab', '0'], '--vocab'],
    [['random-graph', '--out', 'g', '--masks', '-1'], '--masks'],
    [['random-graph', '--out', 'g', '--threads', '0'], '--threads'],
  ];
  const runs = runAll(cases.map(([argv]) => argv), true);
  cases.forEach(([argv, option], i) => {
    const r = runs[i]!;
    const what = argv.slice(-2).join(' ');
    t.equal(r.code, 2, `${argv[0]} ${what}: usage error (exit 2)`);
    t.notMatch(r.stdout, /ran/, `${argv[0]} ${what}: the command did not start`);
    t.match(r.stderr, `argument ${option}: `, `${argv[0]} ${what}: names ${option}`);
  });
  const ok = runAll([['distill', '--steps', '3', '--warmup', '0', '--weight-decay', '0', '--seed', '-1'],
    ['random-graph', '--out', 'g', '--masks', '0', '--prefix', '0', '--seed', '-5']], true);
  ok.forEach((r) => t.equal(r.code, 0, `${r.argv.join(' ')}: in-range values still parse`));
});

t.test('a non-empty package folder or a finished model at --out is not replaced unless --force', async (t) => {
  const dir = tempDir(t, 'cli-errors-');
  const served = join(dir, 'served');
  mkdirSync(served);
  writeFileSync(join(served, 'manifest.json'), 'a package someone serves');
  const model = join(dir, 'model.pt');
  py(['test/toolchain/py/mask_aware_tiny.py', 'make', model]);
  const finished = join(dir, 'finished.pt');  // a model written elsewhere: no resumable checkpoint next to it
  copyFileSync(model, finished);
  // train-bita keeps its resumable checkpoint in models/_build under --out's base name: a unique one
  const adapters = join(dir, `${basename(dir)}-adapters.pt`);
  copyFileSync(model, adapters);
  const tok = join(REPO, 'models/tinystories-bita/tokenizer.json');
  const cases: string[][] = [
    ['package', model, '--tokenizer', tok, '--out', served, '--name', 'n', '--variants', 'fp32'],
    ['random-graph', '--out', served, '--dim', '16', '--layers', '1', '--heads', '2', '--kv-heads', '1',
      '--hidden', '32', '--vocab', '64', '--max-positions', '16', '--variant', 'fp32'],
    ['stories260k', '--out', served, '--fast', '--no-adapters', '--variants', 'fp32'],
    ['build-default', '--out', served],
    ['distill', '--out', finished, '--dim', '16', '--n-layers', '1', '--n-heads', '2', '--n-kv-heads', '1',
      '--hidden-dim', '32', '--batch', '2', '--seq-len', '16', '--teacher-samples', '4', '--steps', '1'],
    ['train-bita', '--model', model, '--out', adapters, '--n-train', '4', '--n-eval', '2', '--n-new', '8',
      '--steps', '1', '--batch', '2', '--groups', '2'],
    ['train-mask-aware', '--model', model, '--out', finished, '--work', join(dir, 'work'), '--steps', '1',
      '--batch', '2', '--groups', '2', '--text-batch', '1', '--text-len', '16', '--n-train', '4', '--n-new', '8',
      '--eval-paragraphs', '1'],
  ];
  const runs = runAll(cases);
  cases.forEach((argv, i) => {
    const r = runs[i]!;
    const out = argv[argv.indexOf('--out') + 1]!;
    t.equal(r.raised, null, `${argv[0]}: nothing escapes main()`);
    t.equal(r.code, 1, `${argv[0]}: exit code 1`);
    t.match(r.stderr, new RegExp(`^bitatool ${argv[0]}: error: ${out.replace(/[.]/g, '\\.')}: .*--force`),
      `${argv[0]}: names the folder or file and --force`);
  });
  t.equal(readFileSync(join(served, 'manifest.json'), 'utf8'), 'a package someone serves', 'the package is untouched');
  t.same(readdirSync(served), ['manifest.json'], 'nothing was added to it');
  t.same(readFileSync(finished), readFileSync(model), 'the finished model is untouched');
  t.same(readFileSync(adapters), readFileSync(model), 'the finished adapters are untouched');

  const forced = runAll([[...cases[0]!, '--force']])[0]!;
  t.equal(forced.code, 0, 'package --force writes into the folder');
  t.match(JSON.parse(readFileSync(join(served, 'manifest.json'), 'utf8')), { name: 'n' }, 'the new manifest');
});
