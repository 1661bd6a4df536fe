/**
 * The wire envelopes shared by MQTT and the Unix socket (snake_case JSON).
 *
 * Request: `{transaction?, prompt | messages, max_tokens, temperature, top_p, top_k, seed, stop,
 * mode, stream, deadline_ms, priority, reply_to}`; over the socket also `type`.
 * Replies: chunks `{transaction, seq, text, tokens}`, then exactly one final
 * `{transaction, status: "ok", data}` or `{transaction, status: "error", error: {code, message}}`.
 */
import { Ajv } from 'ajv';
import type { ChatMessage, GenerateRequest } from '../../engine/types.js';
import { topicProblem, transactionProblem } from '../transport/topics.js';
import { MAX_DEADLINE_MS } from './limits.js';

export type RequestKind = 'generate' | 'chat' | 'cancel' | 'health';
export const REQUEST_KINDS: readonly RequestKind[] = ['generate', 'chat', 'cancel', 'health'];

/**
 * Most characters of an unknown request kind that are echoed in its error and recorded (row,
 * telemetry): the kind comes from a topic level or the socket's `type`, which a client can make
 * 20 000 characters long; the longest real kind has 8.
 */
const SHOWN_KIND_MAX = 32;

/** An unknown request kind as it may be echoed and recorded: cut to SHOWN_KIND_MAX characters, marked with "…". */
export function shownKind(kind: string): string {
  if (kind.length <= SHOWN_KIND_MAX) return kind;
  const cut = kind.slice(0, SHOWN_KIND_MAX);
  // Never half a surrogate pair: it does not encode as UTF-8.
  return (/[\ud800-\udbff]$/.test(cut) ? cut.slice(0, -1) : cut) + '…';
}

/** Every error reply carries one of these codes. */
export type ErrorCode =
  | 'bad_json' // payload is not a JSON object
  | 'bad_request' // schema violation: wrong type, missing field, out of range
  | 'payload_too_large' // over limits.max_payload_bytes (not parsed)
  | 'unknown_request' // no such request kind
  | 'prompt_too_long' // prompt does not fit the model's context
  | 'busy' // queue full
  | 'deadline_exceeded' // deadline_ms / message expiry passed before the answer was complete
  | 'cancelled' // cancelled by a cancel request
  | 'shutting_down' // the daemon is stopping
  | 'model_error' // the engine failed
  | 'internal'; // a bug in bitad

export interface ErrorReply {
  transaction: string | null;
  status: 'error';
  error: { code: ErrorCode; message: string };
}
export interface OkReply {
  transaction: string | null;
  status: 'ok';
  data: unknown;
}
export type FinalReply = OkReply | ErrorReply;
export interface ChunkReply {
  transaction: string | null;
  seq: number;
  text: string;
  tokens: number[];
}
export type Reply = FinalReply | ChunkReply;

export function errorReply(transaction: string | null, code: ErrorCode, message: string): ErrorReply {
  return { transaction, status: 'error', error: { code, message } };
}

// transaction and reply_to become (parts of) MQTT topics: their form is checked by
// transactionProblem / topicProblem (transport/topics.ts) in validateBody, one rule for both.
const common = {
  transaction: { type: 'string' },
  type: { type: 'string' }, // socket envelopes name the kind here; checked by the transport
  reply_to: { type: 'string' },
  deadline_ms: { type: 'integer', minimum: 1, maximum: MAX_DEADLINE_MS },
} as const;

const generation = {
  ...common,
  max_tokens: { type: 'integer', minimum: 1 },
  temperature: { type: 'number', minimum: 0, maximum: 10 },
  top_p: { type: 'number', exclusiveMinimum: 0, maximum: 1 },
  top_k: { type: 'integer', minimum: 0 },
  seed: { type: 'integer' },
  stop: { type: 'array', maxItems: 16, items: { type: 'string', minLength: 1, maxLength: 256 } },
  mode: { enum: ['bita', 'plain'] },
  stream: { type: 'boolean' },
  priority: { type: 'integer', minimum: 0, maximum: 9 },
} as const;

const schemas = {
  generate: {
    type: 'object',
    additionalProperties: false,
    required: ['prompt'],
    properties: { ...generation, prompt: { type: 'string', minLength: 1 } },
  },
  chat: {
    type: 'object',
    additionalProperties: false,
    required: ['messages'],
    properties: {
      ...generation,
      messages: {
        type: 'array',
        minItems: 1,
        maxItems: 256,
        items: {
          type: 'object',
          additionalProperties: false,
          required: ['role', 'content'],
          properties: { role: { enum: ['system', 'user', 'assistant'] }, content: { type: 'string' } },
        },
      },
    },
  },
  cancel: {
    type: 'object',
    additionalProperties: false,
    required: ['target'],
    properties: { ...common, target: { type: 'string', minLength: 1, maxLength: 128 } },
  },
  health: { type: 'object', additionalProperties: false, properties: { ...common } },
};

const ajv = new Ajv({ allErrors: false, strict: true });
const validators = Object.fromEntries(
  Object.entries(schemas).map(([k, s]) => [k, ajv.compile(s)]),
) as Record<RequestKind, ReturnType<typeof ajv.compile>>;

export interface GenerationFields {
  transaction?: string;
  reply_to?: string;
  deadline_ms?: number;
  prompt?: string;
  messages?: ChatMessage[];
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  seed?: number;
  stop?: string[];
  mode?: 'bita' | 'plain';
  stream?: boolean;
  priority?: number;
}
export interface CancelFields {
  transaction?: string;
  reply_to?: string;
  target: string;
}

export type Parsed =
  | { ok: true; body: Record<string, unknown> }
  | { ok: false; code: ErrorCode; message: string; transaction: string | null; replyTo?: string };

/** Size check, JSON parse and best-effort transaction/reply_to extraction (for routing errors). */
export function parsePayload(payload: Buffer | string, maxBytes: number): Parsed {
  const size = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
  if (size > maxBytes) {
    return { ok: false, code: 'payload_too_large', message: `payload is ${size} bytes, limit ${maxBytes}`, transaction: null };
  }
  let body: unknown;
  try {
    body = JSON.parse(payload.toString());
  } catch (e) {
    return { ok: false, code: 'bad_json', message: `not JSON: ${(e as Error).message}`, transaction: null };
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return { ok: false, code: 'bad_json', message: 'payload must be a JSON object', transaction: null };
  }
  return { ok: true, body: body as Record<string, unknown> };
}

export interface Routing {
  /** The transaction when it is usable as a topic level (else null: replies say null). */
  transaction: string | null;
  /** `reply_to` as sent, when it is a string: the transport decides whether it may be used. */
  replyTo?: string;
  /** The payload has a transaction that cannot be used (its reply goes to the error topic). */
  badTransaction: boolean;
}

/** Transaction and reply_to for routing, so even a rejected request gets its reply routed. */
export function routingFields(body: Record<string, unknown>): Routing {
  const t = body.transaction;
  const r = body.reply_to;
  const usable = typeof t === 'string' && transactionProblem(t) === null;
  return {
    transaction: usable ? t : null,
    replyTo: typeof r === 'string' ? r : undefined,
    badTransaction: t !== undefined && !usable,
  };
}

/** The rules for fields that end up in topics; a readable reason, or null. */
function topicFieldProblem(body: Record<string, unknown>): string | null {
  if (typeof body.transaction === 'string') {
    const p = transactionProblem(body.transaction);
    if (p) return `transaction ${p}`;
  }
  if (typeof body.reply_to === 'string') {
    const p = topicProblem(body.reply_to);
    if (p) return `reply_to ${p}`;
  }
  return null;
}

/** Schema check for one kind; returns a readable reason on failure. */
export function validateBody(kind: RequestKind, body: Record<string, unknown>): string | null {
  const topicField = topicFieldProblem(body);
  if (topicField) return topicField;
  const v = validators[kind];
  if (v(body)) return null;
  const e = v.errors![0];
  const where = e.instancePath ? e.instancePath.slice(1).replaceAll('/', '.') : '';
  if (e.keyword === 'additionalProperties') {
    return `unknown field ${where ? where + '.' : ''}${(e.params as { additionalProperty: string }).additionalProperty}`;
  }
  return `${where || 'request'} ${e.message}`;
}

export function toEngineRequest(kind: 'generate' | 'chat', f: GenerationFields, defaultMaxTokens: number): GenerateRequest {
  const req: GenerateRequest = { maxTokens: f.max_tokens ?? defaultMaxTokens };
  if (kind === 'generate') req.prompt = f.prompt;
  else req.messages = f.messages;
  if (f.temperature !== undefined) req.temperature = f.temperature;
  if (f.top_p !== undefined) req.topP = f.top_p;
  if (f.top_k !== undefined) req.topK = f.top_k;
  if (f.seed !== undefined) req.seed = f.seed;
  if (f.stop !== undefined) req.stop = f.stop;
  if (f.mode !== undefined) req.mode = f.mode;
  return req;
}
