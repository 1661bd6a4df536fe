// Measure a package's graphs with onnxruntime-node (Python has no onnxruntime on Debian):
//   node models/bitatool/ort_eval.mjs PACKAGE_DIR SEQUENCES.json [--time]
// SEQUENCES.json: [[token ids], ...] (held-out text, BOS first). For every graph variant it
// prefills each sequence once (teacher forcing) and compares the argmax at every position with the
// fp32 graph's: the greedy next-token agreement. Prints one JSON object on stdout.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import * as ort from 'onnxruntime-node';

const NEG = -1e9;
const [dir, seqFile, ...flags] = process.argv.slice(2);
if (!dir || !seqFile) {
  console.error('usage: ort_eval.mjs PACKAGE_DIR SEQUENCES.json [--time]');
  process.exit(2);
}
const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
const a = manifest.architecture;
const seqs = JSON.parse(readFileSync(seqFile, 'utf8'));

function feeds(ids, past, pastTensors) {
  const q = ids.length;
  const bias = new Float32Array(q * (past + q)).fill(NEG);
  for (let r = 0; r < q; r++) for (let c = 0; c <= past + r; c++) bias[r * (past + q) + c] = 0;
  const f = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, q]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map((_, i) => BigInt(past + i))), [1, q]),
    attention_bias: new ort.Tensor('float32', bias, [1, 1, q, past + q]),
  };
  for (let i = 0; i < a.n_layers; i++) {
    for (const kind of ['key', 'value']) {
      f[`past_${kind}_${i}`] = pastTensors?.[`${kind}_${i}`] ??
        new ort.Tensor('float32', new Float32Array(past * a.n_kv_heads * a.head_dim), [1, past, a.n_kv_heads, a.head_dim]);
    }
  }
  return f;
}

function argmaxRows(t) {
  const [, q, v] = t.dims;
  const d = t.data;
  const out = new Int32Array(q);
  for (let r = 0; r < q; r++) {
    let best = 0;
    for (let j = 1; j < v; j++) if (d[r * v + j] > d[r * v + best]) best = j;
    out[r] = best;
  }
  return out;
}

async function predictions(session) {
  const out = [];
  for (const s of seqs) out.push(argmaxRows((await session.run(feeds(s, 0))).logits));
  return out;
}

// Interleaved timing: the machine's load drifts, so every round times every variant once and the
// medians are compared (ratios within one run are meaningful, absolute numbers less so).
async function timeAll(sessions, q, past, reps = 40) {
  const ids = Array.from({ length: q }, (_, i) => 3 + (i % 200));
  const f = feeds(ids, past);
  const ms = new Map([...sessions.keys()].map((v) => [v, []]));
  for (const s of sessions.values()) for (let i = 0; i < 3; i++) await s.run(f);
  for (let r = 0; r < reps; r++) {
    for (const [v, s] of sessions) {
      const t0 = performance.now();
      await s.run(f);
      ms.get(v).push(performance.now() - t0);
    }
  }
  const med = {};
  for (const [v, xs] of ms) {
    xs.sort((x, y) => x - y);
    med[v] = Number(xs[xs.length >> 1].toFixed(3));
  }
  return med;
}

// One intra-op thread: on a shared 2-core machine spinning worker threads make timings erratic.
const opts = { intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all' };
const variants = Object.keys(manifest.graphs).filter((k) => k !== 'default');
const result = { positions: 0, agreement_vs_fp32: {}, ms: {}, bytes: {} };
let ref = null;
const order = ['fp32', ...variants.filter((v) => v !== 'fp32')];
const sessions = new Map();
for (const v of order) {
  if (!manifest.graphs[v]) continue;
  const file = manifest.graphs[v];
  const session = await ort.InferenceSession.create(join(dir, file), opts);
  sessions.set(v, session);
  const pred = await predictions(session);
  result.bytes[v] = manifest.files[file]?.bytes;
  if (v === 'fp32') {
    ref = pred;
    result.positions = pred.reduce((n, p) => n + p.length, 0);
  } else if (ref) {
    let same = 0;
    pred.forEach((p, i) => p.forEach((x, j) => { if (x === ref[i][j]) same++; }));
    result.agreement_vs_fp32[v] = Number((same / result.positions).toFixed(5));
  }
}
if (flags.includes('--time')) {
  for (const [q, past] of [[1, 128], [16, 128]]) {
    const med = await timeAll(sessions, q, past);
    for (const [v, m] of Object.entries(med)) (result.ms[v] ??= {})[`q${q}_past${past}`] = m;
  }
}
for (const s of sessions.values()) await s.release();
console.log(JSON.stringify(result));
