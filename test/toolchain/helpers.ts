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
