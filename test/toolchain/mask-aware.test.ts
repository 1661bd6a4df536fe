// Mask-aware joint training (bitatool train-mask-aware) and the quality guards (bitatool quality),
// on a tiny random model (dim 16, 2 layers, stories260K's 512-token vocabulary) so every run takes
// a second or two.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { REPO, py, tempDir } from './helpers.js';

const TINY = ['--batch', '2', '--groups', '8', '--text-batch', '2', '--text-len', '32', '--warmup', '2',
  '--n-train', '6', '--n-new', '24', '--eval-paragraphs', '3'];

// One tiny model for every test (each python start costs a second of torch import).
const ROOT = tempDir(t, 'mask-aware-');
const TINY_PT = join(ROOT, 'tiny.pt');
py(['test/toolchain/py/mask_aware_tiny.py', 'make', TINY_PT]);

function train(dir: string, out: string, extra: string[]): string {
  return py(['-m', 'bitatool', 'train-mask-aware', '--model', TINY_PT, '--out', join(dir, out),
    '--work', join(dir, 'work'), ...TINY, ...extra]);
}

/** Mask loss and share of moved targets per logged step. */
function progress(log: string): Map<number, { mask: number; moved: number }> {
  const out = new Map<number, { mask: number; moved: number }>();
  for (const m of log.matchAll(/step (\d+)\/\d+ loss [\d.]+ mask ([\d.]+) .* targets moved ([\d.]+)%/g)) {
    out.set(Number(m[1]), { mask: Number(m[2]), moved: Number(m[3]) });
  }
  return out;
}

t.test('train-mask-aware reads its --model checkpoint once', async (t) => {
  const r = JSON.parse(py(['test/toolchain/py/mask_aware_tiny.py', 'loads', TINY_PT, tempDir(t, 'mask-aware-')])) as { loads: number };
  t.equal(r.loads, 1, 'one torch.load of --model (the model and its extra from the same read)');
});

t.test('train-mask-aware: loss falls, online targets follow the model, provenance recorded and packaged', async (t) => {
  const dir = ROOT; // online.pt is the tuned model of the quality test below
  const fast = ['--steps', '30', '--lr-base', '1e-2', '--lr-adapters', '5e-2'];
  const online = progress(train(dir, 'online.pt', fast));
  t.ok(online.get(30)!.mask < online.get(10)!.mask - 0.5, `mask loss ${online.get(10)!.mask} -> ${online.get(30)!.mask}`);
  t.ok(online.get(30)!.moved > 0, 'online targets differ from the stored greedy tokens once the model moved');
  const stored = progress(train(dir, 'stored.pt', [...fast, '--targets', 'stored']));
  t.equal(stored.get(30)!.moved, 0, 'stored targets stay the original greedy tokens');

  const r = JSON.parse(py(['test/toolchain/py/mask_aware_tiny.py', 'same', TINY_PT, join(dir, 'online.pt')])) as {
    max_abs_diff: number; extra_b: { name: string; fine_tuned: Record<string, unknown> };
  };
  t.ok(r.max_abs_diff > 0, 'the base weights changed');
  const ft = r.extra_b.fine_tuned as {
    from: { name: string; sha256: string }; steps: number; options: { steps: number; targets: string; anchor_ce: number };
    agreement_with_original: number; bpb_before: number; bpb_after: number;
  };
  t.equal(r.extra_b.name, 'tiny', 'the input checkpoint extra is kept');
  t.equal(ft.from.name, 'tiny.pt');
  t.match(ft.from.sha256, /^[0-9a-f]{64}$/);
  t.equal(ft.steps, 30);
  t.same([ft.options.steps, ft.options.targets, ft.options.anchor_ce], [30, 'online', 0.3]);
  t.ok(ft.agreement_with_original >= 0 && ft.agreement_with_original <= 1, `agreement ${ft.agreement_with_original}`);
  t.ok(ft.bpb_before > 0 && ft.bpb_after > 0 && ft.bpb_before !== ft.bpb_after, `bpb ${ft.bpb_before} -> ${ft.bpb_after}`);

  const pkg = join(dir, 'pkg');
  py(['-m', 'bitatool', 'package', join(dir, 'online.pt'), '--tokenizer', join(REPO, 'models/tinystories-bita/tokenizer.json'),
    '--out', pkg, '--name', 'tiny', '--variants', 'fp32']);
  const manifest = JSON.parse(readFileSync(join(pkg, 'manifest.json'), 'utf8')) as { fine_tuned?: typeof ft };
  t.same(manifest.fine_tuned, ft, 'the package manifest carries the fine_tuned record');
});

t.test('train-mask-aware: online targets start at the stored greedy tokens; the KL anchor holds the normal rows', async (t) => {
  const dir = tempDir(t, 'mask-aware-');
  // Step 1's loss is computed on the untouched original, whose argmax on its own greedy text is that text.
  t.equal(progress(train(dir, 'one.pt', ['--steps', '1'])).get(1)!.moved, 0);
  const kl = (extra: string[], out: string) => {
    const log = train(dir, out, ['--steps', '30', '--lr-base', '1e-2', '--lr-adapters', '5e-2', '--anchor-ce', '0', ...extra]);
    return Number(/step 30\/30 .* kl ([\d.]+)/.exec(log)![1]);
  };
  const free = kl(['--anchor-kl', '0'], 'free.pt');
  const held = kl(['--anchor-kl', '10'], 'held.pt');
  t.ok(held < free / 2, `KL to the original after 30 steps: ${held} anchored vs ${free} free`);
});

t.test('train-mask-aware --anchor teacher: the KL pulls toward stories260K, and the record says so', async (t) => {
  const dir = tempDir(t, 'mask-aware-');
  const klAt = (log: string, step: number) => Number(new RegExp(`step ${step}/\\d+ .* kl ([\\d.]+)`).exec(log)![1]);
  // Step 1's loss is computed before any update: zero KL to itself, not to a teacher it never saw.
  t.equal(klAt(train(dir, 'o1.pt', ['--steps', '1']), 1), 0, 'anchor original: KL 0 at the start');
  t.ok(klAt(train(dir, 't1.pt', ['--steps', '1', '--anchor', 'teacher']), 1) > 0.5, 'anchor teacher: the tiny model is far from stories260K');
  const pull = train(dir, 'teach.pt', ['--steps', '30', '--anchor', 'teacher', '--anchor-kl', '10', '--anchor-ce', '0',
    '--mask-weight', '0', '--lr-base', '1e-2']);
  t.ok(klAt(pull, 30) < klAt(pull, 10), `KL to the teacher falls: ${klAt(pull, 10)} -> ${klAt(pull, 30)}`);
  const r = JSON.parse(py(['test/toolchain/py/mask_aware_tiny.py', 'same', TINY_PT, join(dir, 'teach.pt')])) as {
    extra_b: { fine_tuned: { anchor: { name: string; sha256: string }; options: { anchor: string } } };
  };
  t.equal(r.extra_b.fine_tuned.anchor.name, 'stories260K');
  t.match(r.extra_b.fine_tuned.anchor.sha256, /^[0-9a-f]{64}$/);
  t.equal(r.extra_b.fine_tuned.options.anchor, 'teacher');
});

t.test('train-mask-aware: a run stopped and resumed equals an uninterrupted one', async (t) => {
  const dir = tempDir(t, 'mask-aware-');
  const six = ['--steps', '6', '--ckpt-every', '2', '--lr-base', '1e-2'];
  train(dir, 'whole.pt', six);
  const first = train(dir, 'split.pt', [...six, '--stop-after', '3']);
  t.match(first, /stopped at step 3\/6/);
  t.notOk(existsSync(join(dir, 'split.pt')), 'no output checkpoint before the last step');
  const second = train(dir, 'split.pt', six);
  t.match(second, /resumed at step 3/);
  t.match(second, /step 6\/6/);
  const r = JSON.parse(py(['test/toolchain/py/mask_aware_tiny.py', 'same', join(dir, 'whole.pt'), join(dir, 'split.pt')])) as {
    max_abs_diff: number; extra_b: { fine_tuned: { steps: number } };
  };
  t.equal(r.max_abs_diff, 0, 'identical weights');
  t.equal(r.extra_b.fine_tuned.steps, 6);
});

t.test('quality: every field, in range, for the model and its reference', async (t) => {
  const tunedPt = join(ROOT, 'online.pt');
  const out = JSON.parse(py(['-m', 'bitatool', 'quality', tunedPt, '--reference', TINY_PT,
    '--paragraphs', '3', '--prompts', '4', '--n-new', '16', '--json'])) as { models: Record<string, Record<string, number | null>> };
  const tuned = out.models[tunedPt]!;
  const ref = out.models[TINY_PT]!;
  for (const [name, m] of [['tuned', tuned], ['reference', ref]] as const) {
    t.ok(m.bpb! > 0 && m.bpb! < 20, `${name} bpb ${m.bpb}`);
    for (const k of ['rep4_greedy', 'rep4_sampled']) t.ok(m[k]! >= 0 && m[k]! <= 1, `${name} ${k} ${m[k]}`);
    // A random model's text is far from the teacher: NLL above 0 and finite.
    for (const k of ['teacher_nll_greedy', 'teacher_nll_sampled']) t.ok(m[k]! > 0 && m[k]! < 100, `${name} ${k} ${m[k]}`);
  }
  t.ok(tuned.agreement_with_reference! > 0 && tuned.agreement_with_reference! <= 1, `agreement ${tuned.agreement_with_reference}`);
  t.equal(ref.agreement_with_reference, null, 'no agreement of the reference with itself');
});

t.test('repeated-4-gram share on hand-made sequences', async (t) => {
  const cases = [
    [[1, 2, 3, 4, 1, 2, 3, 4, 1]], // six 4-grams, the last two repeat the first two
    [[1, 2, 3, 4, 1, 2, 3, 4, 1], [5, 6, 7, 8]],
    [[1, 2, 3, 4], [1, 2, 3, 4]],
    [[7, 7, 7, 7, 7, 7]],
    [[1, 2, 3]],
  ];
  const got = JSON.parse(py(['test/toolchain/py/mask_aware_tiny.py', 'rep4', JSON.stringify(cases)])) as number[];
  t.equal(got[0], 2 / 6);
  t.equal(got[1], 2 / 7, 'pooled over sequences');
  t.equal(got[2], 0, 'a 4-gram counts as repeated only within its own sequence');
  t.equal(got[3], 2 / 3);
  t.equal(got[4], 0, 'no 4-gram at all');
});
