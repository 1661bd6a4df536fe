/**
 * `bitad/client`: generate and chat against a bitad daemon over MQTT (5 or 3.1.1) or its Unix
 * socket, streaming as an async iterator, with deadlines, AbortSignal cancellation and retries that
 * resend the same transaction (so one board executes a retried request once). docs/client.md.
 *
 *   const client = await BitadClient.mqtt({ url: 'mqtt://broker:1883', node: 'fleet' });
 *   const g = client.generate({ prompt: 'Once upon a time', maxTokens: 32 });
 *   for await (const chunk of g) process.stdout.write(chunk.text);
 *   const { stats } = await g.result;
 */
import { randomUUID } from 'node:crypto';
import { DEFAULT_MAX_PAYLOAD_BYTES, MAX_DEADLINE_MS } from '../daemon/protocol/limits.js';
import { transactionProblem } from '../daemon/transport/topics.js';
import { Call, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_RETRIES, type CallEnv, type CallSpec } from './call.js';
import { BitadError } from './errors.js';
import { SocketTransport } from './socket.js';
import type { Reply, RequestKind, SendOptions, Transport } from './transport.js';
import type {
  CallOptions,
  ChatMessage,
  ChatRequest,
  GenerateRequest,
  Generation,
  GenerationResult,
  HealthReport,
  MqttClientOptions,
  RequestStats,
  SamplingParams,
  SocketClientOptions,
} from './types.js';

export { BitadError, RETRYABLE_CODES, type BitadErrorCode, type ClientErrorCode, type DaemonErrorCode } from './errors.js';
export type * from './types.js';

/** The daemon's default `limits.max_payload_bytes`. */
export { DEFAULT_MAX_PAYLOAD_BYTES };

export class BitadClient {
  private readonly calls = new Map<string, Call<unknown>>();
  private closed = false;
  /** The largest request the daemon has answered by transaction, so could read (see routeUnaddressed). */
  private readBytes = 0;
  private readonly env: CallEnv = {
    send: (kind, body, o) => this.transport.send(kind, body, o),
    cancel: (target, o) => this.transport.send('cancel', { transaction: randomUUID(), target }, o),
    release: (txn) => this.calls.delete(txn),
  };

  private constructor(
    private readonly transport: Transport,
    private readonly maxPayloadBytes: number,
  ) {
    transport.onReply = (r) => this.route(r);
    // Not `closed`: only close() closes the client; the socket reconnects on the next call.
    transport.onClose = (reason) => {
      for (const call of [...this.calls.values()]) call.fail('disconnected', reason, false);
    };
  }

  /** Connects to a broker; requests go to `options.node` (a node id, or "fleet") unless a call names another. */
  static async mqtt(options: MqttClientOptions): Promise<BitadClient> {
    const { MqttTransport } = await import('./mqtt.js'); // socket-only users never load mqtt.js
    return new BitadClient(await MqttTransport.connect(options), options.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES);
  }

  /**
   * Connects to the daemon's Unix socket (`<data_dir>/bitad.sock`, `/run/bitad/bitad.sock` under
   * systemd). If the daemon closes it (restart), the next call connects again.
   */
  static async socket(path: string, options: SocketClientOptions = {}): Promise<BitadClient> {
    const transport = await SocketTransport.connect(path, options.connectTimeoutMs);
    return new BitadClient(transport, options.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES);
  }

  /** Generation from a prompt. Iterate the result for chunks; `await g.result` for the whole answer. */
  generate(req: GenerateRequest, opts: CallOptions = {}): Generation {
    return this.generation('generate', { prompt: req.prompt, ...wireParams(req) }, opts);
  }

  /** Generation from chat messages (the model's chat template); an array is shorthand for `{ messages }`. */
  chat(req: ChatRequest | ChatMessage[], opts: CallOptions = {}): Generation {
    const r: ChatRequest = Array.isArray(req) ? { messages: req } : req;
    return this.generation('chat', { messages: r.messages, ...wireParams(r) }, opts);
  }

  /** The daemon's health report (`bitad status`); not queued, not retried. */
  health(opts: { node?: string; timeoutMs?: number; signal?: AbortSignal } = {}): Promise<HealthReport> {
    const spec: CallSpec<HealthReport> = {
      kind: 'health',
      body: { transaction: randomUUID() },
      send: { node: opts.node },
      signal: opts.signal,
      retries: 0,
      idleTimeoutMs: opts.timeoutMs ?? 5000,
      ok: (data) => data as HealthReport,
    };
    return this.start(spec).result;
  }

  /** Cancels what is in flight (each fails with `closed`) and disconnects. */
  async close(): Promise<void> {
    for (const call of [...this.calls.values()]) call.abort('the client was closed');
    this.closed = true;
    await this.transport.close();
  }

  private generation(kind: 'generate' | 'chat', fields: Record<string, unknown>, opts: CallOptions): Generation {
    const transaction = opts.transaction ?? randomUUID();
    const problem = transactionProblem(transaction);
    if (problem) throw new TypeError(`transaction ${problem}`);
    if (opts.deadlineMs !== undefined && !(Number.isInteger(opts.deadlineMs) && opts.deadlineMs >= 1 && opts.deadlineMs <= MAX_DEADLINE_MS)) {
      throw new TypeError(`deadlineMs must be an integer from 1 to ${MAX_DEADLINE_MS}`);
    }
    if (opts.idleTimeoutMs !== undefined && !(opts.idleTimeoutMs > 0)) throw new TypeError('idleTimeoutMs must be > 0 (Infinity: none)');
    const body: CallSpec<GenerationResult>['body'] = { transaction, ...fields };
    if (opts.deadlineMs !== undefined) body.deadline_ms = opts.deadlineMs;
    const send: SendOptions = { node: opts.node };
    if (opts.deadlineMs !== undefined) send.expiryS = Math.ceil(opts.deadlineMs / 1000);
    return this.start<GenerationResult>({
      kind,
      body,
      send,
      signal: opts.signal,
      deadlineMs: opts.deadlineMs,
      retries: opts.retries ?? DEFAULT_RETRIES,
      // Over the socket a lost daemon closes the connection, and a queued request is silent until
      // it starts (the daemon sends no "queued" reply), so silence there is no reason to give up.
      idleTimeoutMs: opts.idleTimeoutMs ?? (this.transport.reportsLoss ? Infinity : DEFAULT_IDLE_TIMEOUT_MS),
      ok: (data, attempts) => generationResult(transaction, data, attempts),
    });
  }

  private start<T>(spec: CallSpec<T>): Call<T> {
    const txn = spec.body.transaction;
    if (this.calls.has(txn)) throw new TypeError(`transaction "${txn}" is already in flight on this client`);
    const bytes = this.transport.size(spec.kind, spec.body);
    const call = new Call<T>(this.env, { ...spec, bytes });
    if (this.closed) {
      call.fail('closed', 'the client is closed', false);
      return call;
    }
    // The daemon would refuse it unread, with a reply it cannot address to this request.
    if (bytes > this.maxPayloadBytes) {
      call.fail('payload_too_large', `request is ${bytes} bytes, over maxPayloadBytes ${this.maxPayloadBytes} (the daemon's limits.max_payload_bytes); not sent`, false);
      return call;
    }
    this.calls.set(txn, call as Call<unknown>);
    call.start();
    return call;
  }

  private route(reply: Reply): void {
    if (reply.transaction === null) return this.routeUnaddressed(reply);
    const call = this.calls.get(reply.transaction);
    if (!call) return;
    this.readBytes = Math.max(this.readBytes, call.bytes);
    call.onReply(reply);
  }

  /**
   * A reply with transaction null answers a line the daemon could not read: from this client only
   * one over the daemon's limit, when that is below maxPayloadBytes. Over the socket every line is
   * ours and each oversize line gets one such reply; whichever it answers, the largest request still
   * unanswered and larger than any the daemon has read is over the limit too, so it takes the error.
   * Over MQTT such replies cannot be told apart from other clients' (the idle timeout covers them).
   */
  private routeUnaddressed(reply: Reply): void {
    if (this.transport.name !== 'socket' || 'seq' in reply) return;
    let culprit: Call<unknown> | undefined;
    for (const c of this.calls.values()) {
      if (!c.heard && c.bytes > this.readBytes && c.bytes > (culprit?.bytes ?? 0)) culprit = c;
    }
    culprit?.onReply({ ...reply, transaction: culprit.transaction });
  }
}

/** camelCase parameters → the wire's snake_case fields (absent stays absent: the daemon's defaults apply). */
function wireParams(p: SamplingParams): Record<string, unknown> {
  const wire: Record<string, unknown> = {
    max_tokens: p.maxTokens,
    temperature: p.temperature,
    top_p: p.topP,
    top_k: p.topK,
    seed: p.seed,
    stop: p.stop,
    mode: p.mode,
    priority: p.priority,
    stream: p.stream,
  };
  for (const k of Object.keys(wire)) if (wire[k] === undefined) delete wire[k];
  return wire;
}

function generationResult(transaction: string, data: unknown, attempts: number): GenerationResult {
  const d = data as { text: string; tokens: number[]; finish_reason: GenerationResult['finishReason']; stats: RequestStats };
  return { transaction, text: d.text, tokens: d.tokens, finishReason: d.finish_reason, stats: d.stats, attempts };
}
