/** Public request, result and option types of `bitad/client`. */
import type { ChatMessage, FinishReason } from '../engine/types.js';
import type { WireStats } from '../daemon/outcome.js';

export type { ChatMessage, FinishReason };

/** Sampling and scheduling fields shared by generate and chat (the daemon's defaults apply when absent). */
export interface SamplingParams {
  /** Tokens to generate; the daemon's `limits.default_max_tokens` when absent. */
  maxTokens?: number;
  /** 0 = greedy (the default). */
  temperature?: number;
  topP?: number;
  topK?: number;
  seed?: number;
  stop?: string[];
  mode?: 'bita' | 'plain';
  /** 0–9, higher first (default 5). */
  priority?: number;
  /** false: no chunks, only the result (the async iterator then yields nothing). Default true. */
  stream?: boolean;
}

export interface GenerateRequest extends SamplingParams {
  prompt: string;
}

export interface ChatRequest extends SamplingParams {
  messages: ChatMessage[];
}

/** Per-call options. */
export interface CallOptions {
  /** Aborting sends the daemon a `cancel` for this request and rejects it with `cancelled` at once. */
  signal?: AbortSignal;
  /**
   * Sent as `deadline_ms` (the daemon answers `deadline_exceeded`) and, over MQTT 5, as the
   * Message Expiry Interval; the client also gives up by itself shortly after it (and sends a
   * cancel). 1 to 86 400 000 (the daemon's maximum).
   */
  deadlineMs?: number;
  /** Resends of the same request (same bytes, same transaction) after `busy`, `shutting_down` or silence. Default 2. */
  retries?: number;
  /**
   * A request that gets no chunk or reply for this long is resent (a dead board; with the fleet,
   * another board takes it); after the last retry it fails with `no_reply` and the daemon is sent a
   * cancel. MQTT default 30 000. A queued request is silent until it starts: keep this above the
   * longest expected queue wait, or a fleet request may run on two boards (the client still reports
   * exactly one result). Socket default: none (Infinity), since a lost daemon closes the
   * connection; values over 2^31 - 1 ms also mean none.
   */
  idleTimeoutMs?: number;
  /** The request's transaction id (one topic level: no "/", + or #, ≤ 128 characters); default a random UUID. */
  transaction?: string;
  /** MQTT only: this node (or "fleet") instead of the client's default. */
  node?: string;
}

/** One streamed piece of the answer. */
export interface Chunk {
  /** The daemon's chunk number (0, 1, …); after a failover the stream goes on at the next unseen seq. */
  seq: number;
  text: string;
  tokens: number[];
  /** 1 for the first send, 2 after the first retry, … */
  attempt: number;
}

/** `data.stats` of the final reply, exactly as documented (snake_case, as the request log stores it). */
export type RequestStats = WireStats;

export interface GenerationResult {
  transaction: string;
  /** The whole answer (authoritative: after a failover the stream may have been spliced from two boards). */
  text: string;
  tokens: number[];
  finishReason: FinishReason | null;
  stats: RequestStats;
  /** Sends it took (1 = no retry). */
  attempts: number;
}

/** A request in flight: iterate it for chunks; `result` settles with the one final outcome. */
export interface Generation extends AsyncIterable<Chunk> {
  readonly transaction: string;
  /** Resolves with the result, or rejects with a BitadError. Settles exactly once. */
  readonly result: Promise<GenerationResult>;
}

/** The `health` reply's data, as `bitad status --json` prints it; fields beyond these vary by version. */
export interface HealthReport {
  /** `online`, `degraded` (see `reasons`), `starting` or `stopping`. */
  state: string;
  reasons?: string[];
  node_id: string;
  components: Record<string, { status: 'ok' | 'degraded' | 'down' | 'off'; reason?: string; [detail: string]: unknown }>;
  [key: string]: unknown;
}

export interface MqttClientOptions {
  /** `mqtt://host:port` or `mqtts://…`; or host/port. */
  url?: string;
  host?: string;
  port?: number;
  /** 5 (default) or 4 (MQTT 3.1.1). */
  protocolVersion?: 4 | 5;
  /** The node requests go to (`<baseTopic>/<node>/request/…`), or "fleet" for the shared queue. */
  node: string;
  /** Default "bitad". */
  baseTopic?: string;
  username?: string;
  password?: string;
  /** Default a random `bitad-client-<uuid>`. */
  clientId?: string;
  /**
   * Where replies come: this client subscribes to it and names it as Response Topic (MQTT 5) or
   * `reply_to` (3.1.1). Must lie in the daemon's `mqtt.reply_prefixes`. Default
   * `<baseTopic>/reply/<username>/<clientId>` (`<baseTopic>/reply/<clientId>` without a user name),
   * which the shipped ACL lets only that user read.
   */
  replyTopic?: string;
  tls?: { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer; rejectUnauthorized?: boolean };
  /** Give up connecting after this long (default 10 000 ms). */
  connectTimeoutMs?: number;
  /** See SocketClientOptions.maxPayloadBytes. */
  maxPayloadBytes?: number;
}

export interface SocketClientOptions {
  /** Give up connecting after this long (default 5 000 ms). */
  connectTimeoutMs?: number;
  /**
   * The daemon's `limits.max_payload_bytes` (default 65 536, the daemon's default): a larger
   * request fails at once with `payload_too_large` and is not sent. Set it when the daemon's differs
   * (`health()` reports it as `limits.max_payload_bytes`).
   */
  maxPayloadBytes?: number;
}
