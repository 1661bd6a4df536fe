// Shared helpers for the toolchain tests: run the Python toolchain, read tensors it wrote
// (models/bitatool/tensorio.py layout) and run ONNX graphs with onnxruntime-node.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as ort from 'onnxruntime-node';

export const REPO = resolve(import.meta.dirname, '../..');
export const SHARED = resolve(REPO, '../shared/data');
export const PY = '/usr/bin/python3';

/** Run python with models/ on PYTHONPATH; throws with stderr on failure. */
export function py(args: string[], opts: { cwd?: string } = {}): string {
  const r = spawnSync(PY, args, {
    cwd: opts.cwd ?? REPO,
    env: { ...process.env, PYTHONPATH: join(REPO, 'models'), PYTHONWARNINGS: 'ignore' },
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  if (r.status !== 0) throw new Error(`python ${args.join(' ')} failed (${r.status}):\n${r.stderr}`);
  return r.stdout;
}

export function tempDir(t: { teardown: (f: () => void) => void }, prefix = 'bitatool-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

type Entry = { dtype: string; shape: number[]; file: string };

export function readTensors(dir: string): Map<string, ort.Tensor> {
  const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as Record<string, Entry>;
  const out = new Map<string, ort.Tensor>();
  for (const [name, e] of Object.entries(index)) {
    const b = readFileSync(join(dir, e.file));
    const ab = b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
    if (e.dtype === 'float32') out.set(name, new ort.Tensor('float32', new Float32Array(ab), e.shape));
    else if (e.dtype === 'int64') out.set(name, new ort.Tensor('int64', new BigInt64Array(ab), e.shape));
    else if (e.dtype === 'int32') out.set(name, new ort.Tensor('int32', new Int32Array(ab), e.shape));
    else throw new Error(`unsupported dtype ${e.dtype}`);
  }
  return out;
}

export async function openSession(path: string): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(path, { intraOpNumThreads: 1, graphOptimizationLevel: 'all' });
}

/** Run the graph on the inputs found in `tensors` (by the session's input names). */
export async function runCase(s: ort.InferenceSession, tensors: Map<string, ort.Tensor>) {
  const feeds: Record<string, ort.Tensor> = {};
  for (const n of s.inputNames) {
    const v = tensors.get(n);
    if (!v) throw new Error(`case lacks input ${n}`);
    feeds[n] = v;
  }
  return s.run(feeds);
}

export function maxAbsDiff(a: ort.Tensor, b: ort.Tensor): number {
  if (a.dims.join(',') !== b.dims.join(',')) throw new Error(`shape ${a.dims} vs ${b.dims}`);
  const x = a.data as Float32Array;
  const y = b.data as Float32Array;
  let m = 0;
  for (let i = 0; i < x.length; i++) {
    const d = Math.abs(x[i]! - y[i]!);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/** argmax over the last axis of a [1, Q, V] float tensor. */
export function argmaxRows(t: ort.Tensor): number[] {
  const [, q, v] = t.dims as number[];
  const d = t.data as Float32Array;
  const out: number[] = [];
  for (let r = 0; r < q!; r++) {
    let best = 0;
    for (let j = 1; j < v!; j++) if (d[r * v! + j]! > d[r * v! + best]!) best = j;
    out.push(best);
  }
  return out;
}

export function cosine(a: ort.Tensor, b: ort.Tensor): number {
  const x = a.data as Float32Array;
  const y = b.data as Float32Array;
  let xy = 0;
  let xx = 0;
  let yy = 0;
  for (let i = 0; i < x.length; i++) {
    xy += x[i]! * y[i]!;
    xx += x[i]! * x[i]!;
    yy += y[i]! * y[i]!;
  }
  return xy / Math.sqrt(xx * yy);
}

const NEG = -1e9;

export type Manifest = { architecture: { n_layers: number; n_kv_heads: number; head_dim: number }; graphs: Record<string, string> };

/** KV-cached greedy decoding, one token per step, the cache kept by concatenating new rows. */
export async function greedy(s: ort.InferenceSession, m: Manifest, prompt: number[], n: number): Promise<number[]> {
  const { n_layers: L, n_kv_heads: H, head_dim: D } = m.architecture;
  const cache: Float32Array[] = Array.from({ length: 2 * L }, () => new Float32Array(0));
  let past = 0;
  let feed = prompt;
  const out: number[] = [];
  while (out.length < n) {
    const q = feed.length;
    const bias = new Float32Array(q * (past + q)).fill(NEG);
    for (let r = 0; r < q; r++) for (let c = 0; c <= past + r; c++) bias[r * (past + q) + c] = 0;
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(feed.map(BigInt)), [1, q]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from(feed.map((_, i) => BigInt(past + i))), [1, q]),
      attention_bias: new ort.Tensor('float32', bias, [1, 1, q, past + q]),
    };
    for (let i = 0; i < L; i++) {
      feeds[`past_key_${i}`] = new ort.Tensor('float32', cache[2 * i]!, [1, past, H, D]);
      feeds[`past_value_${i}`] = new ort.Tensor('float32', cache[2 * i + 1]!, [1, past, H, D]);
    }
    const r = await s.run(feeds);
    for (let i = 0; i < L; i++) {
      for (const [j, name] of [[2 * i, `new_key_${i}`], [2 * i + 1, `new_value_${i}`]] as const) {
        const add = r[name]!.data as Float32Array;
        const next = new Float32Array(cache[j]!.length + add.length);
        next.set(cache[j]!);
        next.set(add, cache[j]!.length);
        cache[j] = next;
      }
    }
    past += q;
    const next = argmaxRows(r.logits!).at(-1)!;
    out.push(next);
    feed = [next];
  }
  return out;
}


/** The greedy ids ../shared/data/PROVENANCE.md records for stories260K (read, not copied). */
export function provenanceIds(): number[] {
  const text = readFileSync(join(SHARED, 'PROVENANCE.md'), 'utf8');
  const m = /first 40 greedy token ids after BOS \(1\) are: ([\d ]+)\./.exec(text);
  if (!m) throw new Error('PROVENANCE.md: greedy ids not found');
  return m[1]!.trim().split(/\s+/).map(Number);
}
