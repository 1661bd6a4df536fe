// bitatool on bad input: a user's mistake (a missing or corrupt file, an empty text, a numeric
// option out of range) gets one line naming the file or option and a non-zero exit, not a traceback.
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { py, tempDir } from './helpers.js';

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
  const cases: [string[], RegExp][] = [
    [['export', missing, '--out', join(dir, 'x.onnx')], /missing\.pt/],
    [['package', missing, '--out', join(dir, 'pkg'), '--name', 'n'], /missing\.pt/],
    [['export', corrupt, '--out', join(dir, 'x.onnx')], /truncated\.pt: not a bitatool checkpoint/],
    [['export', folder, '--out', join(dir, 'x.onnx')], /a-folder.*config\.json/],
    [['bpb', '--no-baseline', '--text', folder], /a-folder/],
    [['bpb', '--no-baseline', '--text', empty], /empty\.txt: .*blank line/],
    [['convert-tokenizer', join(dir, 'missing.model'), '--out', join(dir, 't.json')], /missing\.model/],
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
  ];
  const runs = runAll(cases.map(([argv]) => argv), true);
  cases.forEach(([argv, option], i) => {
    const r = runs[i]!;
    const what = argv.slice(-2).join(' ');
    t.equal(r.code, 2, `${argv[0]} ${what}: usage error (exit 2)`);
    t.notMatch(r.stdout, /ran/, `${argv[0]} ${what}: the command did not start`);
    t.match(r.stderr, `argument ${option}: `, `${argv[0]} ${what}: names ${option}`);
  });
  const ok = runAll([['distill', '--steps', '3', '--warmup', '0', '--weight-decay', '0', '--seed', '-1']], true)[0]!;
  t.equal(ok.code, 0, 'in-range values still parse');
});
