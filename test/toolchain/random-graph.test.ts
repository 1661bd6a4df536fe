// `bitatool random-graph`: a random-weight graph of a chosen shape for step-cost timing. A tiny
// shape is built here; the manifest must describe it exactly, and the graph must run through the
// engine's own OrtTreeModel (prefill, then a 4-row tree step with mask rows) with finite logits.
import t from 'tap';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { OrtTreeModel } from '../../src/engine/kv-model.js';
import { openSession } from '../../src/engine/ort.js';
import { loadPackage, type Manifest } from '../../src/engine/package.js';
import { py, tempDir } from './helpers.js';

const SHAPE = { dim: 32, layers: 2, heads: 4, kvHeads: 2, hidden: 64, vocab: 1000, maxPositions: 64, masks: 3, prefix: 4 };
const NEG = -1e9;

function build(out: string, seed: number, variant = 'int8w'): string {
  const s = SHAPE;
  return py(['-m', 'bitatool', 'random-graph', '--out', out, '--dim', `${s.dim}`, '--layers', `${s.layers}`,
    '--heads', `${s.heads}`, '--kv-heads', `${s.kvHeads}`, '--hidden', `${s.hidden}`, '--vocab', `${s.vocab}`,
    '--max-positions', `${s.maxPositions}`, '--masks', `${s.masks}`, '--prefix', `${s.prefix}`,
    '--seed', `${seed}`, '--variant', variant, '--threads', '1']);
}

type RandomManifest = Omit<Manifest, 'tokenizer'> & {
  tokenizer: null; random_weights: boolean; timing_only: string;
  parameters: { total: number; base: number; adapters: number; embedding: number };
  io: Manifest['io'] & { inputs: string[]; logits: string };
};

const dir = tempDir(t, 'random-graph-');
const stdout = build(dir, 0);
const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as RandomManifest;

t.test('manifest describes the shape, the adapters and the graphs; no tokenizer', async (t) => {
  const s = SHAPE;
  const a = manifest.architecture;
  t.same([a.dim, a.n_layers, a.n_heads, a.n_kv_heads, a.head_dim, a.hidden_dim, a.vocab_size, a.max_positions],
    [s.dim, s.layers, s.heads, s.kvHeads, s.dim / s.heads, s.hidden, s.vocab, s.maxPositions], 'architecture');
  t.equal(a.family, 'llama');
  t.same(manifest.bita, { mask_token_ids: [1000, 1001, 1002], prefix_slots: s.prefix }, 'bita block');
  t.equal(manifest.random_weights, true, 'marked random');
  t.equal(manifest.tokenizer, null, 'no tokenizer');
  t.match(manifest.timing_only, /timing only/, 'says what it is for');
  t.same(manifest.graphs, { default: 'int8w', int8w: 'model.int8w.onnx', fp32: 'model.onnx' }, 'int8w served, fp32 kept');
  t.same(manifest.io.inputs, ['input_ids', 'position_ids', 'attention_bias']);
  t.equal(manifest.io.past_key, 'past_key_{i}');
  t.equal(manifest.io.new_value, 'new_value_{i}');
  for (const [f, e] of Object.entries(manifest.files)) {
    const b = readFileSync(join(dir, f));
    t.equal(createHash('sha256').update(b).digest('hex'), e.sha256, `${f}: sha256 matches`);
    t.equal(b.length, e.bytes, `${f}: bytes match`);
  }
  t.same(Object.keys(manifest.files).sort(), ['model.int8w.onnx', 'model.onnx'], 'both graphs listed');
  t.throws(() => loadPackage(dir), /tokenizer/, 'the package loader refuses it (timing only)');
});

t.test('parameter count is the LLaMA formula for this shape', async (t) => {
  const s = SHAPE;
  const kvDim = s.kvHeads * (s.dim / s.heads);
  // wq + wo, wk + wv, SwiGLU w1/w2/w3, two RMSNorms; tied head adds nothing.
  const perLayer = 2 * s.dim * s.dim + 2 * s.dim * kvDim + 3 * s.dim * s.hidden + 2 * s.dim;
  const base = s.vocab * s.dim + s.layers * perLayer + s.dim;
  const adapters = s.masks * s.dim + s.prefix * 2 * s.layers * kvDim;
  t.equal(manifest.parameters.base, base, `base ${base}`);
  t.equal(manifest.parameters.adapters, adapters, `adapters ${adapters}`);
  t.equal(manifest.parameters.total, base + adapters);
  t.equal(manifest.parameters.embedding, s.vocab * s.dim);
  t.match(stdout, `${(base + adapters).toLocaleString('en-US')} parameters`, 'printed on the command line');
});

/** Prefill 8 tokens through OrtTreeModel, then one tree step: a token and the 3 masks after it. */
function treeStep(graph: string): { logits: Float32Array; q: number } {
  const model = new OrtTreeModel(openSession(join(dir, graph), { threads: 1 }), manifest as unknown as Manifest, 16);
  const n = 8;
  const ids = Int32Array.from({ length: n }, (_, i) => (i * 37 + 1) % SHAPE.vocab);
  const bias = new Float32Array(n * n).fill(NEG);
  for (let r = 0; r < n; r++) for (let c = 0; c <= r; c++) bias[r * n + c] = 0;
  model.forward(ids, Int32Array.from({ length: n }, (_, i) => i), bias, n);
  model.commit(Int32Array.from({ length: n }, (_, i) => i), n);
  const q = 4;
  const rows = Int32Array.from([5, ...manifest.bita!.mask_token_ids]);
  const stepBias = new Float32Array(q * (n + q)).fill(NEG);
  for (let r = 0; r < q; r++) for (let c = 0; c <= n + r; c++) stepBias[r * (n + q) + c] = 0;
  const logits = model.forward(rows, Int32Array.from([n, n + 1, n + 2, n + 3]), stepBias, q);
  return { logits: logits.slice(), q };
}

t.test('the graph runs in the engine: finite, distinct logits for a 4-row step with mask rows', async (t) => {
  const w = treeStep('model.int8w.onnx');
  t.equal(w.logits.length, w.q * SHAPE.vocab, 'logits are [4, V]');
  t.ok(w.logits.every(Number.isFinite), 'all finite');
  const row = (r: number) => w.logits.subarray(r * SHAPE.vocab, (r + 1) * SHAPE.vocab);
  const spread = Math.max(...row(0)) - Math.min(...row(0));
  t.ok(spread > 1e-3, `logits vary across the vocabulary (range ${spread.toExponential(2)})`);
  t.not(row(1).join(','), row(2).join(','), 'different mask rows give different logits');
  const f = treeStep('model.onnx');
  let worst = 0;
  for (let i = 0; i < f.logits.length; i++) worst = Math.max(worst, Math.abs(f.logits[i] - w.logits[i]));
  t.ok(worst < 0.05 * spread, `int8w stays near fp32 (max diff ${worst.toExponential(2)}, logit range ${spread.toExponential(2)})`);
});

t.test('seeded: the same seed rebuilds the same graph, another seed another one', async (t) => {
  const again = tempDir(t, 'random-graph-');
  const other = tempDir(t, 'random-graph-');
  build(again, 0, 'fp32');
  build(other, 1, 'fp32');
  const sha = (d: string) => (JSON.parse(readFileSync(join(d, 'manifest.json'), 'utf8')) as RandomManifest).files['model.onnx'].sha256;
  t.equal(sha(again), manifest.files['model.onnx'].sha256, 'seed 0 twice: identical fp32 graph');
  t.not(sha(other), sha(again), 'seed 1: different weights');
  t.notOk(existsSync(join(again, 'model.int8w.onnx')), 'only the requested variant is written');
});
