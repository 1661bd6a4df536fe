/**
 * Projection part of bench/load.ts: times forward passes of a larger graph package (manifest and
 * ONNX graph, no tokenizer: random weights) at several row counts, then asks the sizer which budget
 * it would pick for that step-cost curve with the acceptance measured on a real model in the same
 * run. "Projection for real board models": the tiny bundled models' steps cost nearly the same at
 * 1 and 32 rows, a 15–40 M-parameter model's do not.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { rowsAttentionBias } from '../src/decoding/index.js';
import { OrtTreeModel } from '../src/engine/kv-model.js';
import { openSession } from '../src/engine/ort.js';
import type { Manifest } from '../src/engine/package.js';
import { bestBudget } from '../src/engine/sizing/budget.js';

export const PROJECTION_ROWS = [1, 2, 4, 8, 16, 32, 64];
export const PROJECTION_CACHED = 128;
/** Sweeps over all row counts: at least MIN_REPS, and more until MIN_MS per row count is spent. */
const MIN_REPS = 5;
const MIN_MS = 250;
const MAX_REPS = 60;

export interface ProjectionGraph {
  name: string;
  params: number;
  model: OrtTreeModel;
}

/** Opens the package's default graph without its tokenizer (the projection package has none). */
export function openProjection(dir: string, threads: number): ProjectionGraph {
  const root = resolve(dir);
  const m = JSON.parse(readFileSync(join(root, 'manifest.json'), 'utf8')) as Manifest;
  const variant = m.graphs.default ?? 'fp32';
  const graph = m.graphs[variant] ?? m.graphs.fp32;
  if (!graph) throw new Error(`${root}/manifest.json: no graph for variant ${variant}`);
  const a = m.architecture;
  a.n_masks ??= 0;
  a.n_prefix ??= 0;
  m.bita ??= null;
  const session = openSession(join(root, graph), { threads });
  // bitatool random-graph writes its parameter count; otherwise count the transformer's matrices.
  const counted = (m as { parameters?: { total?: number } }).parameters?.total;
  const params = counted ?? a.n_layers * (2 * a.dim * a.dim + 2 * a.dim * a.n_kv_heads * a.head_dim + 3 * a.dim * a.hidden_dim) + a.vocab_size * a.dim;
  return { name: m.name, params, model: new OrtTreeModel(session, m, Math.max(...PROJECTION_ROWS)) };
}

/** Scratch buffers for a causal chain of q rows over the cache (a prefill chunk's shape). */
function chain(model: OrtTreeModel, q: number) {
  const L = model.cacheLength;
  const parents = Int32Array.from({ length: q }, (_, i) => i - 1);
  const bias = new Float32Array(q * (L + q));
  const positions = new Int32Array(q);
  rowsAttentionBias(parents, q, L, bias, positions);
  // Token ids only need to be valid: random weights make every id as costly as any other.
  const ids = Int32Array.from({ length: q }, (_, i) => (7 * (L + i) + 3) % model.vocabSize);
  return { ids, positions, bias };
}

/** Fills the KV cache to `cached` rows (once per graph; forwards that are not committed leave it). */
export function fillCache(model: OrtTreeModel, cached = PROJECTION_CACHED): void {
  model.truncate(0);
  while (model.cacheLength < cached) {
    const q = Math.min(64, cached - model.cacheLength);
    const { ids, positions, bias } = chain(model, q);
    model.forward(ids, positions, bias, q);
    model.commit(Int32Array.from({ length: q }, (_, i) => i), q);
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Time one forward of a prepared chain (ms). */
function timeOnce(model: OrtTreeModel, c: ReturnType<typeof chain>, q: number): number {
  const t0 = performance.now();
  model.forward(c.ids, c.positions, c.bias, q);
  return performance.now() - t0;
}

/**
 * Step-cost curve: rows -> median ms per forward at the filled cache length. Row counts are timed
 * in interleaved sweeps (one forward of each per sweep), not one after another, so a neighbour's
 * burst on the shared board lands on all row counts alike instead of bending the curve.
 */
export function stepCurve(graph: ProjectionGraph): Record<number, number> {
  const model = graph.model;
  if (model.cacheLength !== PROJECTION_CACHED) fillCache(model);
  const chains = PROJECTION_ROWS.map((q) => chain(model, q));
  PROJECTION_ROWS.forEach((q, i) => timeOnce(model, chains[i], q)); // untimed: a new shape allocates
  const ms: number[][] = PROJECTION_ROWS.map(() => []);
  const budget = MIN_MS * PROJECTION_ROWS.length;
  const start = performance.now();
  for (let sweep = 0; sweep < MIN_REPS || (performance.now() - start < budget && sweep < MAX_REPS); sweep++) {
    PROJECTION_ROWS.forEach((q, i) => ms[i].push(timeOnce(model, chains[i], q)));
  }
  return Object.fromEntries(PROJECTION_ROWS.map((q, i) => [q, median(ms[i])]));
}

/** Linear interpolation of the curve at a (fractional) row count. */
export function costAt(curve: Record<number, number>, rows: number): number {
  const xs = Object.keys(curve).map(Number).sort((a, b) => a - b);
  if (rows <= xs[0]) return curve[xs[0]];
  for (let i = 1; i < xs.length; i++) {
    if (rows <= xs[i]) {
      const f = (rows - xs[i - 1]) / (xs[i] - xs[i - 1]);
      return curve[xs[i - 1]] + f * (curve[xs[i]] - curve[xs[i - 1]]);
    }
  }
  return curve[xs[xs.length - 1]];
}

/** A fixed budget's measured acceptance on a real model: committed tokens and rows fed per step. */
export interface MeasuredGain {
  budget: number;
  tokensPerStep: number;
  rowsPerStep: number;
}

export interface ProjectedBudget {
  /** Budget -> projected tokens/s on the projection graph (its step cost at the rows the budget fed). */
  tokens_per_s: Record<number, number>;
  throughput_pick: number;
  neighbourly_pick: number;
}

/**
 * What the sizer (bestBudget) would pick: cost[b] is the projection graph's step time at the mean
 * rows budget b actually fed on the real model (a budget is a cap; small trees often stop short).
 */
export function projectBudget(curve: Record<number, number>, gains: MeasuredGain[]): ProjectedBudget {
  const cost: number[] = [];
  const gain: number[] = [];
  for (const g of gains) {
    cost[g.budget] = costAt(curve, g.rowsPerStep);
    gain[g.budget] = g.tokensPerStep;
  }
  const candidates = gains.map((g) => g.budget);
  return {
    tokens_per_s: Object.fromEntries(gains.map((g) => [g.budget, +((1000 * gain[g.budget]) / cost[g.budget]).toFixed(1)])),
    throughput_pick: bestBudget(candidates, cost, gain, 'throughput'),
    neighbourly_pick: bestBudget(candidates, cost, gain, 'neighbourly'),
  };
}
