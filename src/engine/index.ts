/**
 * Engine entry point: `loadEngine` starts the engine worker (which owns the ONNX session, the KV
 * cache and every step buffer) and returns an Engine whose calls only pass ids, text and stats.
 */
import { Worker } from 'node:worker_threads';
import { resolve } from 'node:path';
import {
  type Engine, type EngineInfo, type GenerateOptions, type GenerateRequest, type GenerateResult,
  EngineError,
} from './types.js';
import { type FromWorker, type ToWorker, SHARED_SLOTS, SLOT_BUDGET, SLOT_CANCEL } from './protocol.js';

export * from './types.js';

/**
 * Rows per tree step unless configured: on the 2-core VM, 6–10 rows gave the best speedup for the
 * 0.26–0.46 M-parameter packages (bench, budgets 4–16); the load-aware controller may change it.
 */
export const DEFAULT_TREE_BUDGET = 10;

export interface EngineOptions {
  /** Graph variant from the manifest ("default" picks the manifest's choice). */
  variant?: string;
  /** ORT intra-op threads (0 or unset: chosen from the model's size, see threadsFor). */
  threads?: number;
  /** Execution providers, in order (default ["cpu"]). */
  executionProviders?: string[];
  /** Initial draft-tree row budget (default DEFAULT_TREE_BUDGET; 1 = plain decoding). */
  treeBudget?: number;
}

// Compiled (dist/, `npm run build`): the worker is plain JS. From the TypeScript sources, a tiny
// eval bootstrap registers tsx inside the worker, however the main thread was started; tsx costs
// about 35 MB per thread, which is why deployments run the compiled build.
const compiled = import.meta.url.endsWith('.js');
const BOOT = `
const { workerData } = require('node:worker_threads');
import(workerData.tsxApi).then((m) => { m.register(); return import(workerData.entry); });
`;

interface Pending {
  opts: GenerateOptions;
  resolve: (r: GenerateResult) => void;
  reject: (e: Error) => void;
}

class WorkerEngine implements Engine {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closed = false;

  constructor(
    private readonly worker: Worker,
    private readonly shared: Int32Array,
    private infoValue: EngineInfo,
  ) {
    worker.on('message', (m: FromWorker) => this.onMessage(m));
    worker.on('error', (e) => this.failAll(new EngineError('model_error', `engine worker failed: ${e.message}`)));
    worker.on('exit', () => this.failAll(new EngineError('model_error', 'engine worker exited')));
  }

  info(): EngineInfo {
    return { ...this.infoValue, treeBudget: Atomics.load(this.shared, SLOT_BUDGET) };
  }

  setTreeBudget(rows: number): void {
    Atomics.store(this.shared, SLOT_BUDGET, Math.max(1, Math.floor(rows)));
  }

  generate(req: GenerateRequest, opts: GenerateOptions = {}): Promise<GenerateResult> {
    if (this.closed) return Promise.reject(new EngineError('model_error', 'engine is closed'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const signal = opts.signal;
      if (signal?.aborted) return reject(new EngineError('cancelled', 'cancelled before start'));
      const onAbort = () => Atomics.store(this.shared, SLOT_CANCEL, id);
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = () => signal?.removeEventListener('abort', onAbort);
      this.pending.set(id, {
        opts,
        resolve: (r) => (done(), resolve(r)),
        reject: (e) => (done(), reject(e)),
      });
      this.worker.postMessage({ type: 'generate', id, req } satisfies ToWorker);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.worker.terminate();
  }

  private onMessage(m: FromWorker): void {
    if (m.type === 'ready') return;
    const p = this.pending.get(m.id);
    if (!p) return;
    if (m.type === 'chunk') {
      p.opts.onChunk?.({ text: m.text, tokens: m.tokens });
    } else {
      this.pending.delete(m.id);
      if (m.type === 'done') p.resolve(m.result);
      else p.reject(new EngineError(m.code, m.message));
    }
  }

  private failAll(e: EngineError): void {
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }
}

export async function loadEngine(packageDir: string, opts: EngineOptions = {}): Promise<Engine> {
  const shared = new SharedArrayBuffer(SHARED_SLOTS * 4);
  const worker = compiled
    ? new Worker(new URL('./worker.js', import.meta.url))
    : new Worker(BOOT, {
        eval: true,
        workerData: { tsxApi: import.meta.resolve('tsx/esm/api'), entry: new URL('./worker.ts', import.meta.url).href },
      });
  const load: ToWorker = {
    type: 'load',
    shared,
    options: {
      packageDir: resolve(packageDir),
      variant: opts.variant ?? 'default',
      threads: opts.threads ?? 0,
      executionProviders: opts.executionProviders ?? ['cpu'],
      treeBudget: opts.treeBudget ?? DEFAULT_TREE_BUDGET,
    },
  };
  worker.postMessage(load);
  const info = await new Promise<EngineInfo>((resolve, reject) => {
    const onExit = (code: number) => reject(new EngineError('model_error', `engine worker exited during load (${code})`));
    worker.once('error', reject);
    worker.once('exit', onExit);
    worker.on('message', function first(m: FromWorker) {
      if (m.type === 'ready') resolve(m.info);
      else if (m.type === 'error') reject(new EngineError(m.code, m.message));
      else return;
      worker.off('message', first);
      worker.off('error', reject);
      worker.off('exit', onExit);
    });
  }).catch(async (e) => {
    await worker.terminate();
    throw e;
  });
  return new WorkerEngine(worker, new Int32Array(shared), info);
}
