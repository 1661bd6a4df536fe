/**
 * Engine entry point: `loadEngine` starts the engine worker (which owns the ONNX session, the KV
 * cache and every step buffer) and returns an Engine whose calls only pass ids, text and stats.
 */
import { Worker } from 'node:worker_threads';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  type Engine, type EngineInfo, type GenerateOptions, type GenerateRequest, type GenerateResult,
  EngineError,
} from './types.js';
import {
  type FromWorker, type ToWorker, type TreeOptions, clampRows, SHARED_SLOTS, SLOT_BUDGET, SLOT_CANCEL,
  writeLoad, writePolicy,
} from './protocol.js';
import type { BoardLoad, TreePolicy } from './load.js';

export * from './types.js';
export { TREE_POLICIES, type BoardLoad, type TreePolicy } from './load.js';

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
  /** Rows for policy fixed and for sampled requests (default DEFAULT_TREE_BUDGET; 1 = plain decoding). */
  treeBudget?: number;
  /** How trees are sized (default auto; docs/daemon.md "Load-aware tree"). */
  treePolicy?: TreePolicy;
  /** Bounds for the adaptive policies (defaults 1 and 32). */
  treeMinRows?: number;
  treeMaxRows?: number;
}

/**
 * Widest tree the adaptive policies try unless configured: on the 2-core VM no model we bench
 * gained from more than 32 rows (platform-notes step costs: 64 rows cost 2.2x one row on the
 * bundled model's shape and 5.4x on a 15 M one, while the gain curve is flat well before).
 */
export const DEFAULT_TREE_MAX_ROWS = 32;

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

/**
 * worker.terminate() cannot interrupt a synchronous native call (session.run): close() waits at
 * most this long for the thread to stop, then leaves it to finish in the background (its pending
 * calls are already rejected, so nothing waits on it).
 */
export const TERMINATE_TIMEOUT_MS = 2000;

/**
 * close() on a busy worker: time for the cancelled generation to return before terminate. The
 * worker checks its cancel slot every step (0.5 ms bundled model; tens of ms for 40 M-parameter
 * models, platform notes).
 */
const CANCEL_WAIT_MS = 500;

export class WorkerEngine implements Engine {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly deathListeners: ((reason: string) => void)[] = [];
  /** Why the engine can no longer generate (closed by us or the worker died); null while usable. */
  private gone: string | null = null;

  constructor(
    /** The engine's thread: supervision tests terminate it to simulate a crash. */
    readonly worker: Worker,
    private readonly shared: Int32Array,
    private infoValue: EngineInfo,
  ) {
    worker.on('message', (m: FromWorker) => this.onMessage(m));
    worker.on('error', (e) => this.die(`engine worker failed: ${e.message}`));
    worker.on('exit', (code) => this.die(`engine worker exited (code ${code})`));
  }

  info(): EngineInfo {
    return this.infoValue;
  }

  setTreeBudget(rows: number): void {
    Atomics.store(this.shared, SLOT_BUDGET, clampRows(rows));
  }

  setTreePolicy(policy: TreePolicy): void {
    writePolicy(this.shared, policy);
  }

  setLoad(load: BoardLoad): void {
    writeLoad(this.shared, load);
  }

  onDeath(listener: (reason: string) => void): void {
    this.deathListeners.push(listener);
  }

  generate(req: GenerateRequest, opts: GenerateOptions = {}): Promise<GenerateResult> {
    // A dead or closed worker would never answer: refuse at once instead of posting into the void.
    if (this.gone !== null) return Promise.reject(new EngineError('model_error', this.gone));
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

  /**
   * Stops the worker; bounded even when it is stuck in native code. A generation still running is
   * cancelled first and given CANCEL_WAIT_MS to return: a terminate() that lands inside
   * onnxruntime's native run aborts the whole process (Napi::Error → std::terminate, measured).
   */
  async close(): Promise<void> {
    if (this.gone !== null) return;
    this.gone = 'engine is closed';
    if (this.pending.size > 0) {
      for (const id of this.pending.keys()) Atomics.store(this.shared, SLOT_CANCEL, id);
      await this.settledOrTimeout(CANCEL_WAIT_MS);
    }
    this.failAll(new EngineError('model_error', 'engine is closed'));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((r) => (timer = setTimeout(r, TERMINATE_TIMEOUT_MS).unref()));
    await Promise.race([this.worker.terminate().then(() => undefined, () => undefined), timeout]);
    clearTimeout(timer);
  }

  /** Waits until no call is pending (the worker answered them) or `ms` passed. */
  private async settledOrTimeout(ms: number): Promise<void> {
    const end = performance.now() + ms;
    while (this.pending.size > 0 && performance.now() < end) await new Promise((r) => setTimeout(r, 5));
  }

  private onMessage(m: FromWorker): void {
    if (m.type === 'ready') return;
    if (m.type === 'tree') {
      this.infoValue = { ...this.infoValue, treeBudget: m.tree.rows, tree: m.tree };
      return;
    }
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

  /** The worker crashed or exited on its own: fail what waits, refuse what comes, tell the supervisor. */
  private die(reason: string): void {
    if (this.gone !== null) return; // closed by us, or already reported
    this.gone = reason;
    this.failAll(new EngineError('model_error', reason));
    for (const l of this.deathListeners) l(reason);
  }

  private failAll(e: EngineError): void {
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }
}

function treeOptions(opts: EngineOptions): TreeOptions {
  const minRows = clampRows(opts.treeMinRows ?? 1);
  return {
    policy: opts.treePolicy ?? 'auto',
    fixedRows: clampRows(opts.treeBudget ?? DEFAULT_TREE_BUDGET),
    minRows,
    maxRows: Math.max(minRows, clampRows(opts.treeMaxRows ?? DEFAULT_TREE_MAX_ROWS)),
  };
}

export async function loadEngine(packageDir: string, opts: EngineOptions = {}): Promise<WorkerEngine> {
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
      tree: treeOptions(opts),
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
