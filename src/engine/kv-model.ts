/**
 * TreeModel over an ONNX package graph with the KV cache owned here (docs/package-format.md).
 * Cache: one preallocated sequence-major buffer [maxPositions, KVH, D] per layer and K/V; the first
 * `cacheLength` rows are passed to ORT as a zero-copy view, and committing a fed row copies its
 * KVH·D floats to the end. Only `logits` and the new rows' K/V come back from a run.
 */
import type { TreeModel } from '../decoding/model.js';
import type { Architecture, Manifest } from './package.js';
import { type Feeds, type Outputs, type SyncSession, tensor } from './ort.js';
import { EngineError } from './types.js';

export interface StepTimes {
  /** Milliseconds spent inside session.run, summed since the last reset. */
  runMs: number;
  runs: number;
}

export class OrtTreeModel implements TreeModel {
  readonly vocabSize: number;
  readonly maskIds: readonly number[];
  readonly maxPositions: number;
  readonly maxRows: number;
  readonly times: StepTimes = { runMs: 0, runs: 0 };
  private length = 0;
  private readonly kvHeads: number;
  private readonly headDim: number;
  private readonly rowFloats: number; // KVH * D
  private readonly caches: Float32Array[]; // per layer: [K, V], each [maxPositions, KVH, D]
  private readonly ids: BigInt64Array; // [maxRows]
  private readonly positions: BigInt64Array; // [maxRows]
  private readonly pastNames: string[];
  private readonly newNames: string[];
  private readonly fetches: Record<string, null>;
  private last: Outputs | null = null;

  constructor(
    private readonly session: SyncSession,
    manifest: Manifest,
    maxRows: number,
  ) {
    const a: Architecture = manifest.architecture;
    this.vocabSize = a.vocab_size;
    this.maskIds = manifest.bita?.mask_token_ids ?? [];
    this.maxPositions = a.max_positions;
    this.maxRows = maxRows;
    this.kvHeads = a.n_kv_heads;
    this.headDim = a.head_dim;
    this.rowFloats = a.n_kv_heads * a.head_dim;
    this.caches = [];
    this.pastNames = [];
    this.newNames = [];
    const io = manifest.io;
    for (let i = 0; i < a.n_layers; i++) {
      for (const [past, neu] of [[io.past_key, io.new_key], [io.past_value, io.new_value]]) {
        this.pastNames.push(past.replace('{i}', String(i)));
        this.newNames.push(neu.replace('{i}', String(i)));
        this.caches.push(new Float32Array(a.max_positions * this.rowFloats));
      }
    }
    const missing = [...this.pastNames, 'input_ids', 'position_ids', 'attention_bias'].filter(
      (n) => !session.inputNames.includes(n),
    );
    missing.push(...[...this.newNames, 'logits'].filter((n) => !session.outputNames.includes(n)));
    if (missing.length) throw new EngineError('package_invalid', `graph lacks inputs/outputs: ${missing.join(', ')}`);
    this.fetches = Object.fromEntries(['logits', ...this.newNames].map((n) => [n, null]));
    this.ids = new BigInt64Array(maxRows);
    this.positions = new BigInt64Array(maxRows);
  }

  get cacheLength(): number {
    return this.length;
  }

  forward(ids: Int32Array, positions: Int32Array, bias: Float32Array, q: number): Float32Array {
    const past = this.length;
    if (q > this.maxRows) throw new EngineError('model_error', `step of ${q} rows exceeds the ${this.maxRows}-row buffers`);
    for (let r = 0; r < q; r++) {
      this.ids[r] = BigInt(ids[r]);
      this.positions[r] = BigInt(positions[r]);
    }
    const kvDims = [1, past, this.kvHeads, this.headDim];
    const feeds: Feeds = {
      input_ids: tensor('int64', this.ids.subarray(0, q), [1, q]),
      position_ids: tensor('int64', this.positions.subarray(0, q), [1, q]),
      attention_bias: tensor('float32', bias.subarray(0, q * (past + q)), [1, 1, q, past + q]),
    };
    for (let i = 0; i < this.caches.length; i++) {
      feeds[this.pastNames[i]] = tensor('float32', this.caches[i].subarray(0, past * this.rowFloats), kvDims);
    }
    const t0 = performance.now();
    this.last = this.session.run(feeds, this.fetches);
    this.times.runMs += performance.now() - t0;
    this.times.runs++;
    return this.last.logits.data as Float32Array;
  }

  commit(rows: Int32Array, count: number): void {
    const out = this.last;
    if (!out) throw new EngineError('model_error', 'commit before forward');
    if (this.length + count > this.maxPositions) throw new EngineError('model_error', 'KV cache full');
    const n = this.rowFloats;
    for (let i = 0; i < this.caches.length; i++) {
      const src = out[this.newNames[i]].data as Float32Array; // [Q, KVH, D]
      const dst = this.caches[i];
      for (let k = 0; k < count; k++) {
        // A plain loop: KVH·D is a few dozen floats, where subarray + set costs more than the copy.
        const from = rows[k] * n;
        const to = (this.length + k) * n;
        for (let j = 0; j < n; j++) dst[to + j] = src[from + j];
      }
    }
    this.length += count;
  }

  truncate(n: number): void {
    if (n < 0 || n > this.length) throw new EngineError('model_error', `truncate(${n}) outside 0..${this.length}`);
    this.length = n;
  }
}
