// BiTA training packs many mask groups into one sequence; each group must compute exactly what it
// computes alone (context r[0..s-1] plus its own masks, bita.md section 2) and be trained on
// r[s+1+j] for mask j.
import t from 'tap';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { REPO, SHARED, py, tempDir } from './helpers.js';

t.test('packed mask groups equal groups run one at a time, with targets r[s+1+j]', async (t) => {
  const r = JSON.parse(py(['test/toolchain/py/bita_pack_check.py', SHARED])) as {
    max_abs_diff: number;
    groups: number;
    targets_ok: boolean;
  };
  t.equal(r.groups, 12, 'two sequences with six groups each');
  t.ok(r.max_abs_diff <= 1e-4, `packed vs alone max abs diff ${r.max_abs_diff.toExponential(2)}`);
  t.ok(r.targets_ok, 'mask j of the group at s targets r[s+1+j] and nothing past the end');
});

// train-bita's resumable checkpoint lived in models/_build under --out's base name only, so
// `--out a/adapters.pt` then `--out b/adapters.pt` (another base model, say) "resumed" the first run:
// with its step count reached, b/adapters.pt was a's adapters, written without a word.
t.test('train-bita runs into different folders do not share a checkpoint', async (t) => {
  const dir = tempDir(t, 'bita-ckpt-');
  const model = join(dir, 'model.pt');
  py(['test/toolchain/py/mask_aware_tiny.py', 'make', model]);
  const name = `${basename(dir)}.pt`; // unique to this test: no other run's checkpoint has it
  const run = (sub: string) => {
    mkdirSync(join(dir, sub));
    return py(['-m', 'bitatool', 'train-bita', '--model', model, '--out', join(dir, sub, name), '--n-train', '4',
      '--n-eval', '2', '--n-new', '8', '--steps', '1', '--batch', '2', '--groups', '2', '--shared', SHARED]);
  };
  t.teardown(() => {
    for (const f of readdirSync(join(REPO, 'models/_build'))) if (f.includes(basename(dir))) rmSync(join(REPO, 'models/_build', f));
  });
  t.notMatch(run('a'), /resumed at step/, 'the first run starts afresh');
  t.notMatch(run('b'), /resumed at step/, 'the second, into another folder, starts afresh too');
});
