/**
 * Runs generation jobs on the one engine, one at a time, highest priority first. Owns deadlines and
 * cancellation; every submitted job ends in exactly one `finish` call (the final reply), whatever
 * happens: ok, engine error, cancel, deadline, shutdown.
 */
import { performance } from 'node:perf_hooks';
import { EngineError, type Chunk, type Engine, type GenerateRequest, type GenerateStats } from '../../engine/types.js';
import { errorReply, type ErrorCode, type FinalReply } from '../protocol/envelope.js';
import { measurements, okReply } from '../outcome.js';
import { BoundedPriorityQueue } from './queue.js';

export interface JobOutcome {
  reply: FinalReply;
  queueMs: number | null; // receipt → engine start (null: never started)
  engineMs: number | null; // wall time of engine.generate
  totalMs: number; // receipt → final reply
  stats?: GenerateStats;
  treeBudget: number;
}

export interface JobSpec {
  transaction: string | null;
  request: GenerateRequest;
  priority: number;
  stream: boolean;
  /** performance.now() at receipt. */
  receivedAt: number;
  /** Absolute performance.now() deadline, if any. */
  deadlineAt?: number;
  onChunk(seq: number, chunk: Chunk): void;
  finish(outcome: JobOutcome): void;
}

export class Job {
  readonly abort = new AbortController();
  abortCode: ErrorCode | null = null;
  abortMessage = '';
  startedAt: number | null = null;
  settled = false;
  timer: NodeJS.Timeout | null = null;
  constructor(readonly spec: JobSpec) {}
  get priority(): number {
    return this.spec.priority;
  }
  get transaction(): string | null {
    return this.spec.transaction;
  }
}

export type SubmitResult = 'queued' | 'busy' | 'shutting_down';

const MAX_MODEL_ERRORS = 3;

/** After the drain deadline aborts the running job: how long stop waits for the engine to let go. */
const DRAIN_ABORT_WAIT_MS = 500;

const ENGINE_CODES: Record<string, ErrorCode> = {
  bad_request: 'bad_request',
  prompt_too_long: 'prompt_too_long',
  cancelled: 'cancelled',
  model_error: 'model_error',
  package_invalid: 'model_error',
};

export class Scheduler {
  private readonly queue: BoundedPriorityQueue<Job>;
  private running: Job | null = null;
  private runningDone: Promise<void> = Promise.resolve();
  private closing = false;
  private lastProgressAt = performance.now();
  /** Consecutive model_error results; a dead engine worker fails every request this way. */
  private modelErrors = 0;
  completed = 0;

  constructor(
    private readonly engine: Engine,
    capacity: number,
  ) {
    this.queue = new BoundedPriorityQueue<Job>(capacity);
  }

  get depth(): number {
    return this.queue.size;
  }
  get capacity(): number {
    return this.queue.capacity;
  }
  get busy(): boolean {
    return this.running !== null;
  }

  /**
   * True while the engine is idle or still making progress, and has not failed the last
   * MAX_MODEL_ERRORS requests in a row (drives the systemd watchdog: a broken engine gets the
   * service restarted).
   */
  responsive(stallMs: number): boolean {
    if (this.modelErrors >= MAX_MODEL_ERRORS) return false;
    if (!this.running) return true;
    const since = Math.max(this.lastProgressAt, this.running.startedAt ?? 0);
    return performance.now() - since < stallMs;
  }

  submit(spec: JobSpec): { result: SubmitResult; job?: Job } {
    if (this.closing) return { result: 'shutting_down' };
    const job = new Job(spec);
    if (!this.queue.push(job)) return { result: 'busy' };
    if (spec.deadlineAt !== undefined) {
      const wait = Math.max(0, spec.deadlineAt - performance.now());
      job.timer = setTimeout(() => this.stop(job, 'deadline_exceeded', 'deadline passed before the answer was complete'), wait);
    }
    this.pump();
    return { result: 'queued', job };
  }

  /** Cancels a queued or running job (reply code `code`); false if it already finished. */
  stop(job: Job, code: ErrorCode, message: string): boolean {
    if (job.settled) return false;
    if (this.queue.remove(job)) {
      this.settle(job, { reply: errorReply(job.transaction, code, message), queueMs: null, engineMs: null });
      return true;
    }
    if (job === this.running && !job.abort.signal.aborted) {
      job.abortCode = code;
      job.abortMessage = message;
      job.abort.abort(new EngineError('cancelled', message));
      // Reply now, not when the engine gets round to settling: an engine stuck in native code
      // may never settle (the supervisor replaces it), and a deadline must always be answered.
      // The engine slot stays taken until the engine call really ends.
      const startedAt = job.startedAt ?? performance.now();
      this.settle(job, { reply: errorReply(job.transaction, code, message), queueMs: startedAt - job.spec.receivedAt, engineMs: performance.now() - startedAt });
      return true;
    }
    return false;
  }

  /** Jobs (queued or running) with the given transaction that `owns` accepts. */
  find(transaction: string, owns: (job: Job) => boolean = () => true): Job[] {
    const all = [...this.queue.values(), ...(this.running ? [this.running] : [])];
    return all.filter((j) => j.transaction === transaction && !j.settled && owns(j));
  }

  /**
   * Shutdown: new submits answer `shutting_down`, queued jobs get `shutting_down` now (another
   * node can serve them), the running one may finish until `deadlineMs`, then it is aborted.
   */
  async drain(deadlineMs: number): Promise<void> {
    this.closing = true;
    for (const job of this.queue.drain()) {
      this.settle(job, { reply: errorReply(job.transaction, 'shutting_down', 'bitad is shutting down'), queueMs: null, engineMs: null });
    }
    const running = this.running;
    if (!running) return;
    const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), deadlineMs).unref());
    if ((await Promise.race([this.runningDone.then(() => 'done' as const), timer])) === 'timeout') {
      this.stop(running, 'shutting_down', 'bitad is shutting down; generation stopped');
      // Its reply is sent; give the engine a moment to stop, but a hung one must not hold the stop
      // (engine close comes next and is bounded).
      await Promise.race([this.runningDone, new Promise((r) => setTimeout(r, DRAIN_ABORT_WAIT_MS).unref())]);
    }
  }

  private pump(): void {
    if (this.running || this.closing) return;
    const job = this.queue.shift();
    if (!job) return;
    this.running = job;
    this.runningDone = this.execute(job).finally(() => {
      this.running = null;
      this.completed++;
      // Start the next job at once: the engine never idles while work waits.
      this.pump();
    });
  }

  private async execute(job: Job): Promise<void> {
    const t0 = performance.now();
    job.startedAt = t0;
    this.lastProgressAt = t0;
    let seq = 0;
    const { spec } = job;
    try {
      const result = await this.engine.generate(spec.request, {
        signal: job.abort.signal,
        onChunk: (chunk) => {
          this.lastProgressAt = performance.now();
          if (spec.stream && !job.settled && !job.abort.signal.aborted) spec.onChunk(seq++, chunk);
        },
      });
      const engineMs = performance.now() - t0;
      this.modelErrors = 0;
      if (job.abortCode) {
        this.settle(job, { reply: errorReply(job.transaction, job.abortCode, job.abortMessage), queueMs: t0 - spec.receivedAt, engineMs, stats: result.stats });
        return;
      }
      // One measurement for the reply and the row (outcome.ts): total_ms on the wire is the row's.
      const measured = {
        queueMs: t0 - spec.receivedAt,
        engineMs,
        stats: result.stats,
        totalMs: performance.now() - spec.receivedAt,
        treeBudget: this.engine.info().treeBudget,
      };
      this.settle(job, { reply: okReply(job.transaction, result, measurements(measured)), ...measured });
    } catch (e) {
      const engineMs = performance.now() - t0;
      let code: ErrorCode;
      let message: string;
      if (job.abortCode) {
        code = job.abortCode;
        message = job.abortMessage;
      } else if (e instanceof EngineError) {
        code = ENGINE_CODES[e.code] ?? 'model_error';
        message = e.message;
      } else {
        code = 'model_error';
        message = e instanceof Error ? e.message : String(e);
      }
      if (code === 'model_error') this.modelErrors++;
      else this.modelErrors = 0;
      this.settle(job, { reply: errorReply(job.transaction, code, message), queueMs: t0 - spec.receivedAt, engineMs });
    } finally {
      this.lastProgressAt = performance.now();
    }
  }

  /** Ends a job with its final reply; totalMs/treeBudget are taken now unless already measured. */
  private settle(job: Job, o: Omit<JobOutcome, 'totalMs' | 'treeBudget'> & Partial<Pick<JobOutcome, 'totalMs' | 'treeBudget'>>): void {
    if (job.settled) return;
    job.settled = true;
    if (job.timer) clearTimeout(job.timer);
    job.spec.finish({ totalMs: performance.now() - job.spec.receivedAt, treeBudget: this.engine.info().treeBudget, ...o });
  }
}
