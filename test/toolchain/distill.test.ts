// bitatool distill --init-from: continue distillation from a model file (the bundle ships weights,
// not distill's resumable checkpoint), on a tiny student so each run takes a second or two.
import { join } from 'node:path';
import t from 'tap';
import { py, tempDir } from './helpers.js';

const TINY = ['--dim', '16', '--n-layers', '1', '--n-heads', '2', '--n-kv-heads', '1', '--hidden-dim', '32',
  '--batch', '2', '--seq-len', '16', '--teacher-samples', '4', '--warmup', '1', '--ckpt-every', '1'];

const distill = (out: string, extra: string[]) => py(['-m', 'bitatool', 'distill', '--out', out, ...TINY, ...extra]);

type Same = { max_abs_diff: number; extra_b: { steps_history: { init_from?: { name: string; sha256: string }; at_step?: number; old_steps?: number; new_steps?: number }[] } };
const same = (a: string, b: string) => JSON.parse(py(['test/toolchain/py/mask_aware_tiny.py', 'same', a, b])) as Same;

t.test('distill --init-from starts from a model file at a given step, records it, and extends like a run', async (t) => {
  const dir = tempDir(t, 'distill-');
  const a = join(dir, 'a.pt');
  distill(a, ['--steps', '3']);

  const b = join(dir, 'b.pt');
  const log = distill(b, ['--steps', '3', '--init-from', a, '--init-step', '3']);
  t.match(log, /initialised from .*a\.pt at step 3/);
  const r = same(a, b);
  t.equal(r.max_abs_diff, 0, 'no steps to run: exactly the weights it started from');
  t.equal(r.extra_b.steps_history[0]!.init_from!.name, 'a.pt');
  t.match(r.extra_b.steps_history[0]!.init_from!.sha256, /^[0-9a-f]{64}$/);
  t.equal(r.extra_b.steps_history[0]!.at_step, 3);

  const more = distill(b, ['--steps', '5']);
  t.match(more, /extending from 3 to 5 steps at step 3/);
  t.match(more, /step 5\/5/);
  const r2 = same(a, b);
  t.ok(r2.max_abs_diff > 0, 'two more steps moved the weights');
  t.same(r2.extra_b.steps_history.map((h) => h.at_step), [3, 3], 'the init and the extension, both recorded');
});

t.test('distill --init-from refuses a model of another architecture, naming the mismatch', async (t) => {
  const dir = tempDir(t, 'distill-');
  const a = join(dir, 'a.pt');
  distill(a, ['--steps', '1']);
  t.throws(() => distill(join(dir, 'wide.pt'), ['--steps', '2', '--dim', '32', '--init-from', a]),
    /not this student's architecture \(first mismatch: /);
});
