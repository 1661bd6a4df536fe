/**
 * Keeps one engine alive: the daemon's Engine is this supervisor, which forwards to the current
 * engine and replaces it when it dies (worker crash or exit) or hangs (a cancelled call that the
 * engine does not settle within `abortGraceMs`).
 *
 * - On death every in-flight call fails with `model_error` at once (the engine rejects them) and
 *   later calls never reach the dead worker.
 * - Restarts are unbounded, with backoff `initialBackoffMs` doubling to `maxBackoffMs` while
 *   loads fail or new engines die before finishing a request. Unbounded because an in-process
 *   restart keeps MQTT sessions and socket clients, and without systemd nobody else would
 *   restart the engine; under systemd the watchdog decides: the controller withholds WATCHDOG=1
 *   once the engine has been down longer than `lifecycle.engine_stall_ms`, so systemd restarts
 *   the whole process (which also frees anything a stuck native thread holds).
 * - A call made while the engine is restarting waits for the new engine, until its AbortSignal
 *   fires (deadline, cancel, shutdown): requests queue within their deadlines, as when busy.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { EngineError, type Engine, type EngineInfo, type GenerateOptions, type GenerateRequest, type GenerateResult } from '../engine/types.js';
import type { BoardLoad, TreePolicy } from '../engine/load.js';
import type { ComponentHealth } from './health.js';

export interface SupervisorOptions {
  /** Loads a fresh engine (the controller's engine factory). */
  load: () => Promise<Engine>;
  log: Logger;
  /** First restart delay; doubles per consecutive failure. 500 ms: a crash is retried before a human notices. */
  initialBackoffMs?: number;
  /** Backoff ceiling: 30 s keeps a crash-looping package from burning the board's CPU on loads. */
  maxBackoffMs?: number;
  /**
   * How long a cancelled call may run on before the engine counts as hung and is replaced. The
   * real engine checks its cancel slot every tree step (0.5 ms on the bundled model, tens of ms
   * for 40 M-parameter models, platform notes), so 2 s means it is stuck in native code.
   */
  abortGraceMs?: number;
}

type State = 'created' | 'ok' | 'restarting' | 'closed';

export class EngineSupervisor implements Engine {
  private current: Engine | null = null;
  /**
   * One reject per call running on the current engine: when the engine is given up they all fail,
   * so no call waits on a dead or hung engine. Per call and removed when it ends: racing every call
   * against one long-lived promise kept each call's result alive until the engine died (the soak
   * bench's heap grew with every request).
   */
  private readonly running = new Set<(e: EngineError) => void>();
  private state: State = 'created';
  private lastInfo: EngineInfo | null = null;
  /** What the daemon told the tree sizing, replayed onto a restarted engine. */
  private readonly tree: { budget?: number; policy?: TreePolicy; load?: BoardLoad } = {};
  /** Completed restarts since start. */
  restarts = 0;
  /** Consecutive restarts without a finished request: the backoff exponent. */
  private failures = 0;
  private downSince: number | null = null;
  private downReason = '';
  private nextAttemptAt = 0;
  private restartTimer: NodeJS.Timeout | null = null;
  private readonly waiters = new Set<() => void>();
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly abortGraceMs: number;

  constructor(private readonly o: SupervisorOptions) {
    this.initialBackoffMs = o.initialBackoffMs ?? 500;
    this.maxBackoffMs = o.maxBackoffMs ?? 30_000;
    this.abortGraceMs = o.abortGraceMs ?? 2000;
  }

  /** First load; its failure fails the daemon's start (a package that never loads is a config error). */
  async start(): Promise<void> {
    this.adopt(await this.o.load());
  }

  info(): EngineInfo {
    const info = this.current?.info() ?? this.lastInfo;
    if (!info) throw new Error('engine not loaded');
    return info;
  }

  setTreeBudget(rows: number): void {
    this.tree.budget = rows;
    this.current?.setTreeBudget(rows);
  }

  setTreePolicy(policy: TreePolicy): void {
    this.tree.policy = policy;
    this.current?.setTreePolicy(policy);
  }

  setLoad(load: BoardLoad): void {
    this.tree.load = load;
    this.current?.setLoad(load);
  }

  async generate(req: GenerateRequest, opts: GenerateOptions = {}): Promise<GenerateResult> {
    const engine = this.current ?? (await this.waitForEngine(opts.signal));
    const call = engine.generate(req, opts);
    const stopGuard = this.guardAbort(engine, call, opts.signal);
    let fail!: (e: EngineError) => void;
    const lost = new Promise<never>((_, reject) => (fail = reject));
    this.running.add(fail);
    try {
      const result = await Promise.race([call, lost]);
      this.failures = 0; // this engine works: the next crash restarts after the initial delay again
      return result;
    } finally {
      this.running.delete(fail);
      stopGuard();
    }
  }

  /** Fails every call running on the engine being given up. */
  private failRunning(e: EngineError): void {
    for (const fail of this.running) fail(e);
    this.running.clear();
  }

  /** Bounded: engines bound their own close (WorkerEngine: TERMINATE_TIMEOUT_MS). */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.wakeWaiters();
    const engine = this.current;
    this.current = null;
    this.failRunning(new EngineError('model_error', 'engine is closed'));
    await engine?.close();
  }

  /** How long the engine has been unavailable (0 while it serves). */
  downForMs(): number {
    return this.downSince === null ? 0 : performance.now() - this.downSince;
  }

  health(): ComponentHealth {
    if (this.state === 'restarting') {
      const inMs = Math.max(0, Math.round(this.nextAttemptAt - performance.now()));
      return { status: 'down', reason: `${this.downReason}; restarting (attempt ${this.failures}, next in ${inMs} ms)`, restarts: this.restarts, down_ms: Math.round(this.downForMs()) };
    }
    if (this.state !== 'ok') return { status: 'down', reason: this.state === 'closed' ? 'closed' : 'not loaded', restarts: this.restarts };
    return { status: 'ok', restarts: this.restarts };
  }

  private adopt(engine: Engine): void {
    if (this.state === 'closed') {
      void engine.close();
      return;
    }
    this.current = engine;
    this.lastInfo = engine.info();
    if (this.tree.budget !== undefined) engine.setTreeBudget(this.tree.budget);
    if (this.tree.policy !== undefined) engine.setTreePolicy(this.tree.policy);
    if (this.tree.load !== undefined) engine.setLoad(this.tree.load);
    engine.onDeath?.((reason) => this.lost(engine, reason));
    this.state = 'ok';
    this.downSince = null;
    this.wakeWaiters();
  }

  /** The engine died or hung: drop it and schedule a restart. */
  private lost(engine: Engine, reason: string): void {
    if (engine !== this.current || this.state === 'closed') return;
    this.current = null;
    this.failRunning(new EngineError('model_error', reason));
    void engine.close(); // no-op for a dead worker; frees a hung one (bounded)
    this.downSince = performance.now();
    this.downReason = reason;
    this.o.log.error({ reason, restarts: this.restarts }, 'engine lost; restarting');
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    this.state = 'restarting';
    const delay = Math.min(this.maxBackoffMs, this.initialBackoffMs * 2 ** this.failures);
    this.failures++;
    this.nextAttemptAt = performance.now() + delay;
    this.restartTimer = setTimeout(() => void this.restart(), delay);
  }

  private async restart(): Promise<void> {
    this.restartTimer = null;
    if (this.state === 'closed') return;
    const t0 = performance.now();
    try {
      const engine = await this.o.load();
      this.restarts++;
      this.adopt(engine);
      this.o.log.info({ restarts: this.restarts, load_ms: Math.round(performance.now() - t0), down_ms: Math.round(t0 - (this.downSince ?? t0)) }, 'engine restarted');
    } catch (e) {
      if ((this.state as State) === 'closed') return; // closed while loading
      this.downReason = `restart failed: ${e instanceof Error ? e.message : String(e)}`;
      this.o.log.error({ err: e, attempt: this.failures }, 'engine restart failed');
      this.scheduleRestart();
    }
  }

  /** Resolves with the next engine; rejects when the signal aborts or the supervisor closes. */
  private waitForEngine(signal?: AbortSignal): Promise<Engine> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        if (this.current) resolve(this.current);
        else if (this.state === 'closed') reject(new EngineError('model_error', 'engine is closed'));
        else if (signal?.aborted) reject(new EngineError('cancelled', 'cancelled while the engine was restarting'));
        else return false;
        this.waiters.delete(wake);
        signal?.removeEventListener('abort', wake);
        return true;
      };
      const wake = () => void check();
      if (check()) return;
      this.waiters.add(wake);
      signal?.addEventListener('abort', wake, { once: true });
    });
  }

  private wakeWaiters(): void {
    for (const w of [...this.waiters]) w();
  }

  /** After an abort, an engine that does not settle the call within abortGraceMs is hung: replace it. */
  private guardAbort(engine: Engine, call: Promise<unknown>, signal?: AbortSignal): () => void {
    if (!signal) return () => undefined;
    let timer: NodeJS.Timeout | null = null;
    let settled = false;
    const onAbort = () => {
      timer = setTimeout(() => {
        if (!settled) this.lost(engine, `engine did not stop a cancelled generation within ${this.abortGraceMs} ms`);
      }, this.abortGraceMs);
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    void call.catch(() => undefined);
    return () => {
      settled = true;
      signal.removeEventListener('abort', onAbort);
      if (timer) clearTimeout(timer);
    };
  }
}
