/**
 * Transport-independent request handling: parse → validate → de-duplicate → queue → stream chunks
 * → one final reply → store row. MQTT and the Unix socket only frame bytes and route replies; every
 * failure becomes an error reply with a code (nothing throws back into a transport).
 */
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { MAX_RECENT_REQUESTS } from './config/schema.js';
import {
  errorReply,
  parsePayload,
  REQUEST_KINDS,
  routingFields,
  shownKind,
  toEngineRequest,
  validateBody,
  type CancelFields,
  type ErrorCode,
  type FinalReply,
  type GenerationFields,
  type Reply,
  type RequestKind,
  type Routing,
} from './protocol/envelope.js';
import type { Job, JobOutcome, Scheduler } from './scheduler/scheduler.js';
import { requestRow, type RowIdentity } from './outcome.js';
import type { RequestRow, Store } from './store/store.js';
import { TelemetryWindow } from './telemetry/window.js';

export type TransportName = 'mqtt' | 'socket';

export interface ReplyChannel {
  send(reply: Reply): void;
}

export interface Inbound {
  transport: TransportName;
  /** Request kind from the topic (MQTT) or the `type` field (socket); null when absent. */
  kind: string | null;
  payload: Buffer | string;
  /** Who may cancel/de-duplicate against whom: "mqtt", or one socket connection. */
  scope: string;
  /** Remaining MQTT 5 message expiry, in ms. */
  expiryMs?: number;
  /** Generation requests of this scope allowed in flight at once (socket.max_in_flight); over it → busy. */
  maxInFlight?: number;
  /**
   * Route replies for this request; `routeKey` identifies the reply destination for
   * de-duplication. `refused` names why a requested route was not used: the request is then
   * answered `bad_request` on the channel given (a safe default).
   */
  route(r: Routing): { channel: ReplyChannel; routeKey: string; refused?: string };
}

export interface DispatcherOptions {
  maxPayloadBytes: number;
  maxTokens: number;
  defaultMaxTokens: number;
  defaultDeadlineMs: number;
  /** How long a finished transaction is remembered to drop duplicate deliveries. */
  dedupeTtlMs?: number;
  /** Every logged request's end (Prometheus metrics); `run` is the queue's outcome, absent for a rejected request. */
  onFinal?: (row: RequestRow, run?: JobOutcome) => void;
}

const DEDUPE_MAX = 10_000;
const DEDUPE_TTL_MS = 300_000;

export class Dispatcher {
  private readonly seen = new Map<string, { until: number; digest: string }>(); // dedupe key → expiry (performance.now), payload digest
  private readonly owners = new Map<Job, string>(); // job → scope
  private readonly unanswered = new Map<string, number>(); // scope → final replies waiting for their row's commit
  private closing = false;
  /** The last finished rows (at most the most `telemetry.recent_requests` may ask for, oldest first), for telemetry. */
  readonly recent: RequestRow[] = [];
  /** Counts and percentiles of the requests finished since the last telemetry message. */
  readonly window = new TelemetryWindow();
  stats = { accepted: 0, duplicates: 0, rejected: 0 };

  constructor(
    private readonly scheduler: Scheduler,
    private readonly store: Store | null,
    private readonly model: () => string,
    private readonly health: () => unknown,
    private readonly log: Logger,
    private readonly opts: DispatcherOptions,
  ) {}

  /** From now on new generation requests answer `shutting_down` (health still answers). */
  beginShutdown(): void {
    this.closing = true;
  }

  handle(msg: Inbound): void {
    const receivedAt = performance.now();
    const ts = Date.now();
    const parsed = parsePayload(msg.payload, this.opts.maxPayloadBytes);
    if (!parsed.ok) {
      const { channel } = msg.route({ transaction: null, badTransaction: false });
      this.reject(msg, channel, null, null, parsed.code, parsed.message, ts, receivedAt);
      return;
    }
    const body = parsed.body;
    const routing = routingFields(body);
    const { channel, routeKey, refused } = msg.route(routing);
    const kindName = msg.kind ?? (typeof body.type === 'string' ? body.type : null);
    if (kindName === null || !(REQUEST_KINDS as readonly string[]).includes(kindName)) {
      const shown = kindName === null ? null : shownKind(kindName);
      this.reject(msg, channel, shown, routing.transaction, 'unknown_request', `unknown request "${shown ?? ''}"; expected one of ${REQUEST_KINDS.join(', ')}`, ts, receivedAt);
      return;
    }
    const kind = kindName as RequestKind;
    const problem = refused ?? validateBody(kind, body);
    if (problem) {
      this.reject(msg, channel, kind, routing.transaction, 'bad_request', problem, ts, receivedAt);
      return;
    }
    if (kind === 'health') {
      safeSend(channel, { transaction: routing.transaction, status: 'ok', data: this.health() }, this.log);
      return;
    }
    if (kind === 'cancel') {
      this.cancel(msg, channel, body as unknown as CancelFields);
      return;
    }
    this.generation(msg, channel, routeKey, kind, body as GenerationFields, ts, receivedAt);
  }

  /** Accepted requests of a scope that have not had their final reply yet. */
  inFlight(scope: string): number {
    let n = this.unanswered.get(scope) ?? 0;
    for (const [job, owner] of this.owners) if (owner === scope && !job.settled) n++;
    return n;
  }

  /** Cancels every job of a scope (a socket client went away); no replies are sent to it. */
  cancelScope(scope: string, message: string): number {
    let n = 0;
    for (const [job, owner] of this.owners) if (owner === scope && this.scheduler.stop(job, 'cancelled', message)) n++;
    return n;
  }

  private generation(
    msg: Inbound,
    channel: ReplyChannel,
    routeKey: string,
    kind: 'generate' | 'chat',
    f: GenerationFields,
    ts: number,
    receivedAt: number,
  ): void {
    const transaction = f.transaction ?? null;
    if (this.closing) {
      this.reject(msg, channel, kind, transaction, 'shutting_down', 'bitad is shutting down', ts, receivedAt);
      return;
    }
    if ((f.max_tokens ?? 0) > this.opts.maxTokens) {
      this.reject(msg, channel, kind, transaction, 'bad_request', `max_tokens must be <= ${this.opts.maxTokens}`, ts, receivedAt);
      return;
    }
    const key = transaction === null ? null : `${msg.scope}\0${routeKey}\0${transaction}`;
    const digest = key === null ? '' : payloadDigest(msg.payload);
    const seen = key === null ? 'new' : this.isDuplicate(key, digest, receivedAt);
    if (seen === 'duplicate') {
      this.stats.duplicates++;
      this.log.info({ transaction, transport: msg.transport }, 'duplicate delivery dropped');
      return;
    }
    if (seen === 'reused') {
      const ttlS = Math.round((this.opts.dedupeTtlMs ?? DEDUPE_TTL_MS) / 1000);
      this.reject(msg, channel, kind, transaction, 'bad_request', `transaction "${transaction}" was already used for a different request in the last ${ttlS} s; use a new transaction`, ts, receivedAt);
      return;
    }
    if (msg.maxInFlight !== undefined && this.inFlight(msg.scope) >= msg.maxInFlight) {
      this.reject(msg, channel, kind, transaction, 'busy', `${msg.maxInFlight} requests of this connection are already in flight`, ts, receivedAt);
      return;
    }
    const deadlines = [f.deadline_ms, this.opts.defaultDeadlineMs || undefined, msg.expiryMs].filter(
      (d): d is number => d !== undefined,
    );
    const deadlineAt = deadlines.length ? receivedAt + Math.min(...deadlines) : undefined;
    const { result, job } = this.scheduler.submit({
      transaction,
      request: toEngineRequest(kind, f, this.opts.defaultMaxTokens),
      priority: f.priority ?? 5,
      stream: f.stream ?? true,
      receivedAt,
      deadlineAt,
      onChunk: (seq, chunk) => safeSend(channel, { transaction, seq, text: chunk.text, tokens: chunk.tokens }, this.log),
      finish: (o) => this.finished(msg, channel, kind, transaction, ts, o),
    });
    if (result !== 'queued') {
      const message = result === 'busy' ? `queue full (${this.scheduler.capacity} waiting)` : 'bitad is shutting down';
      this.reject(msg, channel, kind, transaction, result, message, ts, receivedAt);
      return;
    }
    this.stats.accepted++;
    if (key !== null) this.remember(key, digest, receivedAt);
    this.owners.set(job!, msg.scope);
  }

  private cancel(msg: Inbound, channel: ReplyChannel, f: CancelFields): void {
    const jobs = this.scheduler.find(f.target, (j) => this.owners.get(j) === msg.scope);
    let cancelled = 0;
    for (const j of jobs) if (this.scheduler.stop(j, 'cancelled', `cancelled by request ${f.transaction ?? ''}`.trim())) cancelled++;
    safeSend(channel, { transaction: f.transaction ?? null, status: 'ok', data: { target: f.target, cancelled: cancelled > 0 } }, this.log);
  }

  private finished(msg: Inbound, channel: ReplyChannel, kind: string, transaction: string | null, ts: number, o: JobOutcome): void {
    for (const job of this.owners.keys()) if (job.settled) this.owners.delete(job);
    const row = requestRow(this.who(msg, kind, transaction, ts), o.reply, o);
    this.answer(msg, channel, o.reply, row, o);
    this.log.info(
      { transaction, transport: msg.transport, status: o.reply.status, total_ms: row.total_ms, ...(row.error_code ? { code: row.error_code } : {}) },
      'request finished',
    );
  }

  private reject(
    msg: Inbound,
    channel: ReplyChannel,
    kind: string | null,
    transaction: string | null,
    code: ErrorCode,
    message: string,
    ts: number,
    receivedAt: number,
  ): void {
    this.stats.rejected++;
    const reply: FinalReply = errorReply(transaction, code, message);
    this.log.info({ transaction, transport: msg.transport, code }, 'request rejected');
    const never = { queueMs: null, engineMs: null, totalMs: performance.now() - receivedAt, treeBudget: null };
    this.answer(msg, channel, reply, requestRow(this.who(msg, kind, transaction, ts), reply, never));
  }

  /** Who asked, as the request log records it. */
  private who(msg: Inbound, kind: string | null, txn: string | null, ts: number): RowIdentity {
    return { ts, transport: msg.transport, kind, txn, model: this.model() };
  }

  /**
   * Every final reply of a logged request goes out here, after its row is committed (the store
   * commits all rows of one event-loop turn together), so an acknowledged request is never
   * missing from the log after a crash. A degraded store buffers the row and the reply still goes.
   */
  private answer(msg: Inbound, channel: ReplyChannel, reply: FinalReply, row: RequestRow, run?: JobOutcome): void {
    this.opts.onFinal?.(row, run);
    this.window.record(row);
    this.recent.push(row);
    if (this.recent.length > MAX_RECENT_REQUESTS) this.recent.shift();
    if (!this.store) {
      safeSend(channel, reply, this.log);
      return;
    }
    // Until the reply is sent the request is still in flight for its scope (a half-closed
    // socket must not be ended in between).
    this.unanswered.set(msg.scope, (this.unanswered.get(msg.scope) ?? 0) + 1);
    this.store.recordRequest(row, () => {
      const left = (this.unanswered.get(msg.scope) ?? 1) - 1;
      if (left > 0) this.unanswered.set(msg.scope, left);
      else this.unanswered.delete(msg.scope);
      safeSend(channel, reply, this.log);
    });
  }

  /**
   * A redelivery carries the same bytes (QoS 1 resend, a client's retry) and is dropped silently;
   * the same transaction on the same route with other bytes is a different request that would
   * otherwise vanish without a reply (issue 7: a forged request pre-empted the victim's).
   */
  private isDuplicate(key: string, digest: string, now: number): 'new' | 'duplicate' | 'reused' {
    const entry = this.seen.get(key);
    if (entry === undefined || entry.until <= now) return 'new';
    return entry.digest === digest ? 'duplicate' : 'reused';
  }

  /** Transactions remembered for de-duplication right now. */
  get remembered(): number {
    return this.seen.size;
  }

  /**
   * Every entry lives the same TTL and is (re)inserted at the end, so the expired ones are at the
   * front: they are dropped as new ones come, and the memory follows the request rate (at 10 req/s
   * ≈ 3 000 entries) instead of filling up to DEDUPE_MAX and staying there.
   */
  private remember(key: string, digest: string, now: number): void {
    this.seen.delete(key);
    this.seen.set(key, { until: now + (this.opts.dedupeTtlMs ?? DEDUPE_TTL_MS), digest });
    for (const [k, entry] of this.seen) {
      if (entry.until > now && this.seen.size <= DEDUPE_MAX) break;
      this.seen.delete(k); // expired, or the oldest beyond the cap
    }
  }
}

/** SHA-1 of the request bytes: tells a redelivery from a reuse (28 characters per remembered transaction). */
function payloadDigest(payload: Buffer | string): string {
  return createHash('sha1').update(payload).digest('base64');
}

function safeSend(channel: ReplyChannel, reply: Reply, log: Logger): void {
  try {
    channel.send(reply);
  } catch (e) {
    log.warn({ err: e }, 'reply could not be sent');
  }
}
