/**
 * One request's life in the client: send, stream chunks, resend the same bytes after `busy`,
 * `shutting_down` or silence, honour the deadline and the AbortSignal, and settle exactly once.
 * Replies after that (a second board that also ran it, a QoS 1 redelivery) are ignored.
 */
import { BitadError, RETRYABLE_CODES, type BitadErrorCode } from './errors.js';
import type { Chunk, Generation, GenerationResult } from './types.js';
import type { Reply, RequestKind, SendOptions } from './transport.js';

/** The client gives the daemon this much past the deadline to send its own `deadline_exceeded`. */
const DEADLINE_GRACE_MS = 1000;
const BACKOFF_BASE_MS = 100;
const BACKOFF_MAX_MS = 2000;
export const DEFAULT_RETRIES = 2;
/** Over MQTT a dead board is silent: this much silence and a request is resent (another board may take it). */
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000;
/** setTimeout's largest delay; Node fires longer ones after 1 ms (TimeoutOverflowWarning), so they mean "never" here. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface CallEnv {
  send(kind: RequestKind, body: Record<string, unknown>, o: SendOptions): void;
  /** Asks the daemon to stop the request (a fresh `cancel` request; its reply is not awaited). */
  cancel(target: string, o: SendOptions): void;
  /** The call settled: its transaction no longer routes replies. */
  release(transaction: string): void;
}

export interface CallSpec<T> {
  kind: RequestKind;
  body: Record<string, unknown> & { transaction: string };
  send: SendOptions;
  signal?: AbortSignal;
  deadlineMs?: number;
  retries: number;
  /** Silence (no chunk, no reply) before a resend or `no_reply`; Infinity (or over 2^31 - 1): no such timeout. */
  idleTimeoutMs: number;
  /** The request's encoded size (what the daemon measures against its limit); 0 when unknown. */
  bytes?: number;
  /** Turns an ok final reply's `data` into the result. */
  ok(data: unknown, attempts: number): T;
}

export class Call<T> implements AsyncIterable<Chunk> {
  readonly transaction: string;
  readonly result: Promise<T>;
  private resolve!: (v: T) => void;
  private reject!: (e: BitadError) => void;
  private readonly queued: Chunk[] = [];
  private wake: (() => void) | null = null;
  private lastSeq = -1;
  private attempt = 0;
  private settled = false;
  private answered = false;
  private failure: BitadError | null = null;
  private idleTimer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private readonly onAbort = () => this.abort();

  constructor(
    private readonly env: CallEnv,
    private readonly spec: CallSpec<T>,
  ) {
    this.transaction = spec.body.transaction;
    this.result = new Promise<T>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    // A caller that only iterates must not get an unhandled rejection; awaiting `result` still throws.
    this.result.catch(() => undefined);
  }

  start(): void {
    const { signal, deadlineMs } = this.spec;
    if (signal?.aborted) {
      this.fail('cancelled', 'aborted before it was sent', false);
      return;
    }
    signal?.addEventListener('abort', this.onAbort, { once: true });
    if (deadlineMs !== undefined) {
      this.deadlineTimer = setTimeout(() => this.giveUp('deadline_exceeded', `no final reply within the deadline of ${deadlineMs} ms`), deadlineMs + DEADLINE_GRACE_MS);
    }
    this.sendAttempt();
  }

  /** Whether the daemon has answered any send of it (so it could read the request). */
  get heard(): boolean {
    return this.answered;
  }

  get bytes(): number {
    return this.spec.bytes ?? 0;
  }

  /** Every reply with this call's transaction. */
  onReply(reply: Reply): void {
    if (this.settled) return;
    this.answered = true;
    if ('seq' in reply) {
      this.armIdle();
      if (reply.seq <= this.lastSeq) return; // redelivery, or a retry replaying what we already have
      this.lastSeq = reply.seq;
      this.push({ seq: reply.seq, text: reply.text, tokens: reply.tokens, attempt: this.attempt });
      return;
    }
    if (reply.status === 'ok') {
      this.settle(() => this.resolve(this.spec.ok(reply.data, this.attempt)));
      return;
    }
    const { code, message } = reply.error;
    if (RETRYABLE_CODES.has(code) && this.attempt <= this.spec.retries) {
      clearTimeout(this.idleTimer);
      const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (this.attempt - 1));
      this.idleTimer = setTimeout(() => this.sendAttempt(), backoff);
      return;
    }
    this.fail(code, message, true);
  }

  /** The connection or the client went away. */
  fail(code: BitadErrorCode, message: string, fromDaemon: boolean): void {
    if (this.settled) return;
    const err = new BitadError(code, message, this.transaction, fromDaemon);
    this.failure = err;
    this.settle(() => this.reject(err));
  }

  /** Stops the request in the daemon too (client closing, or the caller's AbortSignal). */
  abort(reason = 'aborted by the caller'): void {
    this.giveUp(this.spec.signal?.aborted ? 'cancelled' : 'closed', reason);
  }

  /**
   * The client stops waiting: tell the daemon (best effort, its reply not awaited) so it does not
   * run the request for nobody, then fail.
   */
  private giveUp(code: BitadErrorCode, message: string): void {
    if (this.settled) return;
    if (this.attempt > 0) this.env.cancel(this.transaction, this.spec.send);
    this.fail(code, message, false);
  }

  private sendAttempt(): void {
    if (this.settled) return;
    this.attempt++;
    this.env.send(this.spec.kind, this.spec.body, this.spec.send);
    this.armIdle();
  }

  /** No chunk or reply for idleTimeoutMs: the board is presumed dead; resend, or give up. */
  private armIdle(): void {
    clearTimeout(this.idleTimer);
    const ms = this.spec.idleTimeoutMs;
    if (ms > MAX_TIMER_MS) return;
    this.idleTimer = setTimeout(() => {
      if (this.attempt <= this.spec.retries) this.sendAttempt();
      else this.giveUp('no_reply', `no reply from bitad after ${this.attempt} attempt(s), ${ms} ms of silence each`);
    }, ms);
  }

  private push(chunk: Chunk): void {
    this.queued.push(chunk);
    this.wake?.();
  }

  private settle(outcome: () => void): void {
    this.settled = true;
    clearTimeout(this.idleTimer);
    clearTimeout(this.deadlineTimer);
    this.spec.signal?.removeEventListener('abort', this.onAbort);
    this.env.release(this.transaction);
    outcome();
    this.wake?.();
  }

  /** Chunks as they arrive; ends after the final reply, throwing its BitadError if it failed. */
  async *[Symbol.asyncIterator](): AsyncIterator<Chunk> {
    for (;;) {
      const next = this.queued.shift();
      if (next !== undefined) {
        yield next;
        continue;
      }
      if (this.settled) {
        if (this.failure) throw this.failure;
        return;
      }
      await new Promise<void>((r) => (this.wake = r));
      this.wake = null;
    }
  }
}

/** Narrows a Call producing GenerationResult to the public Generation shape. */
export type GenerationCall = Call<GenerationResult> & Generation;
