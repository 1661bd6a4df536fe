// BiTA training packs many mask groups into one sequence; each group must compute exactly what it
// computes alone (context r[0..s-1] plus its own masks, bita.md section 2) and be trained on
// r[s+1+j] for mask j.
import t from 'tap';
import { SHARED, py } from './helpers.js';

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
