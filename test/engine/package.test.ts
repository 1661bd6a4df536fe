import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadPackage } from '../../src/engine/package.js';
import { EngineError } from '../../src/engine/types.js';

const sha = (b: string) => createHash('sha256').update(b).digest('hex');

function writePackage(edit: (m: Record<string, any>) => void = () => {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'bitad-pkg-'));
  const files: Record<string, string> = { 'model.onnx': 'graph bytes', 'tokenizer.json': '{}' };
  for (const [f, body] of Object.entries(files)) writeFileSync(join(dir, f), body);
  const m: Record<string, any> = {
    format: 'bitad-model',
    format_version: 1,
    name: 'toy',
    architecture: {
      family: 'llama', dim: 16, n_layers: 1, n_heads: 2, n_kv_heads: 1, head_dim: 8, hidden_dim: 32,
      vocab_size: 10, max_positions: 64, rope_theta: 10000, n_masks: 2, n_prefix: 4,
    },
    bita: { mask_token_ids: [10, 11], prefix_slots: 4 },
    tokenizer: { file: 'tokenizer.json', bos_id: 1, eos_id: 2, add_bos: true },
    graphs: { default: 'fp32', fp32: 'model.onnx' },
    io: { past_key: 'past_key_{i}', past_value: 'past_value_{i}', new_key: 'new_key_{i}', new_value: 'new_value_{i}' },
    files: Object.fromEntries(Object.entries(files).map(([f, b]) => [f, { bytes: b.length, sha256: sha(b) }])),
  };
  edit(m);
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(m));
  return dir;
}

function rejects(t: Test, dir: string, pattern: RegExp) {
  try {
    loadPackage(dir);
    t.fail('expected the package to be rejected');
  } catch (e) {
    t.ok(e instanceof EngineError, 'typed EngineError');
    t.equal((e as EngineError).code, 'package_invalid');
    t.match((e as Error).message, pattern);
  }
}

t.test('a well-formed package loads and resolves the default graph', async (t) => {
  const p = loadPackage(writePackage());
  t.equal(p.variant, 'fp32');
  t.match(p.graphPath, /model\.onnx$/);
  t.same(p.manifest.bita?.mask_token_ids, [10, 11]);
});

t.test('a missing manifest names the file', async (t) => {
  rejects(t, mkdtempSync(join(tmpdir(), 'bitad-empty-')), /manifest\.json: not found/);
});

t.test('a hash mismatch names the file and both hashes', async (t) => {
  const dir = writePackage();
  writeFileSync(join(dir, 'model.onnx'), 'tampered');
  rejects(t, dir, /model\.onnx: sha256 mismatch/);
});

t.test('an unsupported format version is rejected', async (t) => {
  rejects(t, writePackage((m) => (m.format_version = 2)), /format_version 2 is not supported/);
});

t.test('bad architecture fields are rejected with their key', async (t) => {
  rejects(t, writePackage((m) => (m.architecture.n_layers = 0)), /architecture\.n_layers/);
  rejects(t, writePackage((m) => (m.architecture.n_kv_heads = 3)), /multiple of n_kv_heads/);
});

t.test('mask token ids must be V..V+M-1', async (t) => {
  rejects(t, writePackage((m) => (m.bita.mask_token_ids = [10, 12])), /mask_token_ids\[1\] is 12, expected 11/);
});

t.test('an unknown graph variant lists the ones there are', async (t) => {
  const dir = writePackage();
  t.throws(() => loadPackage(dir, 'int4'), /graph variant "int4" not in manifest \(have: fp32\)/);
});

t.test('a listed file that is missing is named', async (t) => {
  rejects(t, writePackage((m) => (m.files['extra.bin'] = { bytes: 1, sha256: 'x' })), /extra\.bin: listed in manifest\.json but missing/);
});

t.test('a graph variant that is not batch-invariant is refused with the variants that are', async (t) => {
  const dir = 'models/tinystories-bita';
  t.throws(() => loadPackage(dir, 'int8'), /graph variant "int8" is not batch-invariant: its DynamicQuantizeMatMul .* use fp32 or int8w/);
  t.equal(loadPackage(dir, 'int8w').variant, 'int8w');
  t.equal(loadPackage(dir, 'fp32').variant, 'fp32');
});

t.test('a fine-tuned package says so: the manifest\'s fine_tuned record reaches the engine\'s info', async (t) => {
  const { cpSync, readFileSync: read, writeFileSync: write, rmSync } = await import('node:fs');
  const { loadEngine } = await import('../../src/engine/index.js');
  const dir = mkdtempSync(join(tmpdir(), 'bitad-ft-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  cpSync('models/tinystories-bita', dir, { recursive: true, filter: (f) => !f.endsWith('.pt') });
  const m = JSON.parse(read(join(dir, 'manifest.json'), 'utf8'));
  m.fine_tuned = { from: { name: 'tinystories-bita' }, steps: 30, agreement_with_original: 0.812, bpb_before: 1.5524, bpb_after: 1.5979 };
  write(join(dir, 'manifest.json'), JSON.stringify(m));
  const engine = await loadEngine(dir, { treePolicy: 'fixed' });
  t.teardown(() => engine.close());
  t.same(engine.info().fineTuned, m.fine_tuned);
  // Without the record, info says null: engine.test.ts (one engine load fewer; ≈ 55 s under qemu).
});
