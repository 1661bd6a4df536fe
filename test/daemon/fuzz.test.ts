/**
 * Seeded fuzz test (fast-check) of the documented wire contract, over MQTT 5, MQTT 3.1.1 (both through
 * a real mosquitto) and the Unix socket, each against its own in-process daemon (FakeEngine, no delay).
 *
 * Every run of the property is one batch of generated messages: random bytes, broken JSON, JSON of
 * wrong shapes, valid-looking requests with hostile fields (transaction / reply_to with control
 * characters, NUL, lone surrogates, wildcards, `$SYS/…`, hundreds of `/` levels, long strings, other
 * nodes' and this node's state/request topics, wrong types, unknown fields), odd request kinds, and on
 * MQTT 5 Response Topics of the same hostile kinds; plus valid requests interleaved. The batch is sent
 * pipelined; health barriers on the same connection and waiting until nothing of it is in flight
 * in the daemon make every reply of the batch arrive before the batch is checked (see settle()).
 *
 * "Usable reply address", from the routing rules of docs/daemon.md ("Where replies go"):
 * - socket: the connection, for every non-blank line (blank lines are not requests);
 * - MQTT: the route picked in the documented order — Response Topic (+ Correlation Data), else the
 *   payload's `reply_to`, else `<base>/response/<transaction>`, else `<base>/response/error` (no
 *   readable transaction) — is usable when every part of it is plainly valid: a Response Topic or
 *   `reply_to` inside the client reply namespace (`mqtt.reply_prefixes`, default `<base_topic>/reply/`)
 *   made of ordinary characters,
 *   a transaction of letters and digits. Such a message must get **exactly one** final reply there
 *   (with the Correlation Data echoed), `ok` or an error with a code of the docs' error table.
 * - A message whose route names anything else (hostile or out-of-namespace topic, hostile
 *   transaction) has no usable address of its own: it may get **at most one** final reply, and only on
 *   a safe default (`<base>/response/error`, `<base>/response/<transaction>`, or the named topic if it
 *   lies inside the reply namespace) — never on the hostile topic.
 * Valid interleaved requests must all succeed; the daemon's MQTT connection must never drop; every
 * topic the daemon publishes to must be one the batch allowed; the process RSS after the warm-up
 * batches stays within +10 % of its value at the end of the warm-up.
 */
import t, { type Test } from 'tap';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt, { type MqttClient } from 'mqtt';
import { PACKAGE_ROOT } from '../../src/daemon/config/load.js';
import { startDaemon, type TestDaemon } from './helpers/daemon.js';
import { startMosquitto, type Mosquitto } from './helpers/mosquitto.js';

const SEED = 20261202;
const NODE = 'testnode';
const BASE = `bitad/${NODE}`;
const MAX_PAYLOAD = 4096; // limits.max_payload_bytes in the test config (helpers/daemon.ts)
const RUNS_PER_TRANSPORT = 200; // batches of 1–40 messages: ≈ 3 700 per transport, ≥ 10 000 in all
const WARMUP_RUNS = 60;
const RSS_EVERY_RUNS = 10;
// A full collection before each RSS sample, so the samples compare live memory rather than how much
// garbage happened to be waiting (the sample is the whole test process: clients, fast-check, daemon).
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const BARRIER_TIMEOUT_MS = 5000;

/** The documented error codes: the table under "### Error codes" in docs/daemon.md. */
const DOCUMENTED_CODES = (() => {
  const doc = readFileSync(join(PACKAGE_ROOT, 'docs/daemon.md'), 'utf8');
  const section = doc.slice(doc.indexOf('### Error codes'));
  const table = section.slice(0, section.indexOf('\n## '));
  return new Set([...table.matchAll(/^\| `([a-z_]+)` \|/gm)].map((m) => m[1]));
})();

// ---------------------------------------------------------------------------------------------
// Generated messages. Unique parts (transactions, safe topics, correlation data) are filled in at
// send time from a counter, so shrinking keeps them unique (duplicates are documented to be dropped).

type Transport = 'v5' | 'v4' | 'socket';
type TxnSpec = { tag: 'absent' } | { tag: 'safe' } | { tag: 'hostile'; s: string } | { tag: 'wrongType'; v: unknown };
type TopicSpec = { tag: 'absent' } | { tag: 'safe' } | { tag: 'hostile'; s: string } | { tag: 'wrongType'; v: unknown };
type Body =
  | { tag: 'bytes'; bytes: Uint8Array }
  | { tag: 'text'; text: string }
  | { tag: 'request'; fields: Record<string, unknown>; txn: TxnSpec; replyTo: TopicSpec }
  | { tag: 'valid'; kind: 'generate' | 'chat'; maxTokens: number; stream: boolean };
interface FuzzMsg {
  kind: string;
  body: Body;
  /** MQTT 5 Response Topic. */
  rt: TopicSpec;
}

const anyChar = fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)); // lone surrogates included
const controlChar = fc.oneof(fc.integer({ min: 0, max: 0x1f }), fc.integer({ min: 0x7f, max: 0x9f })).map((c) => String.fromCharCode(c));
const HOSTILE_TOPICS = [
  '$SYS/x', '$SYS/broker/clients/total', '$share/g/t', '$foo/bar', '+', '#', 'a/+/b', 'a/#', '/', '//',
  `${BASE}/state`, `${BASE}/info`, `${BASE}/telemetry`, `${BASE}/request/generate`, `${BASE}/request/health`,
  'bitad/othernode/state', 'bitad/othernode/request/generate', 'bitad/fleet/request/generate', 'bitad/+/state',
  'app/replies/x', 'other/client/inbox', 'a\u0000b', 'c\u0001x', '\u007f', 'a\u0085b', '\ud800', 'a\udc00b', ' ', '',
];
/** Strings a client must not be able to turn into a reply topic (and some merely odd ones). */
const hostileString = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...HOSTILE_TOPICS) },
  { weight: 2, arbitrary: fc.string({ unit: anyChar, maxLength: 24 }) },
  { weight: 1, arbitrary: fc.string({ unit: controlChar, minLength: 1, maxLength: 4 }).map((c) => `x${c}y`) },
  { weight: 1, arbitrary: fc.integer({ min: 100, max: 400 }).map((n) => 'l/'.repeat(n)) },
  { weight: 1, arbitrary: fc.integer({ min: 100, max: 120 }).map((n) => '/'.repeat(n)) },
  { weight: 1, arbitrary: fc.integer({ min: 129, max: 3000 }).map((n) => 'x'.repeat(n)) },
);
/**
 * What mosquitto refuses in a topic or Response Topic from a client (it disconnects the client):
 * NUL, C0/C1 controls, DEL, noncharacters. Lone surrogates never reach it (mqtt.js encodes U+FFFD).
 */
const BROKER_REFUSES = /[\u0000-\u001f\u007f-\u009f\ufdd0-\ufdef\ufffe\uffff]/;
/** A Response Topic the broker itself accepts from a client. */
const hostileResponseTopic = hostileString.filter((s) => s !== '' && !BROKER_REFUSES.test(s));
const wrongType = fc.oneof(fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.string(), { maxLength: 2 }), fc.dictionary(fc.string(), fc.integer(), { maxKeys: 2 }));

const txnSpec: fc.Arbitrary<TxnSpec> = fc.oneof(
  { weight: 3, arbitrary: fc.constant({ tag: 'absent' as const }) },
  { weight: 3, arbitrary: fc.constant({ tag: 'safe' as const }) },
  { weight: 4, arbitrary: hostileString.map((s) => ({ tag: 'hostile' as const, s })) },
  { weight: 1, arbitrary: wrongType.map((v) => ({ tag: 'wrongType' as const, v })) },
);
const replyToSpec: fc.Arbitrary<TopicSpec> = fc.oneof(
  { weight: 5, arbitrary: fc.constant({ tag: 'absent' as const }) },
  { weight: 2, arbitrary: fc.constant({ tag: 'safe' as const }) },
  { weight: 4, arbitrary: hostileString.map((s) => ({ tag: 'hostile' as const, s })) },
  { weight: 1, arbitrary: wrongType.map((v) => ({ tag: 'wrongType' as const, v })) },
);
const rtSpec: fc.Arbitrary<TopicSpec> = fc.oneof(
  { weight: 3, arbitrary: fc.constant({ tag: 'absent' as const }) },
  { weight: 4, arbitrary: fc.constant({ tag: 'safe' as const }) },
  { weight: 4, arbitrary: hostileResponseTopic.map((s) => ({ tag: 'hostile' as const, s })) },
);

const REAL_KINDS = ['generate', 'chat', 'cancel', 'health'] as const;
/** Odd request kinds that are still valid topic levels (no `/`, wildcards, NUL or controls). */
const oddKind = fc.oneof(
  fc.constantFrom('Generate', 'GENERATE', 'generate ', ' chat', 'gen', 'response', 'state', 'info', '$SYS', 'heälth', '\ufffd', '💥', 'k'.repeat(300)),
  fc.string({ unit: anyChar, minLength: 1, maxLength: 12 }).filter((s) => !/[/+#\ud800-\udfff]/.test(s) && !BROKER_REFUSES.test(s)),
);
const kindArb = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...REAL_KINDS) }, { weight: 1, arbitrary: oddKind });

const prompt = fc.oneof(fc.constantFrom('Once upon a time', 'hello there', 'a b c'), fc.string({ unit: anyChar, maxLength: 30 }), fc.integer().map((n) => 'w '.repeat(Math.abs(n) % 200)));
const requestFields = fc.record(
  {
    prompt: fc.oneof(prompt, wrongType),
    messages: fc.oneof(
      fc.array(fc.record({ role: fc.oneof(fc.constantFrom('system', 'user', 'assistant'), fc.string()), content: fc.oneof(prompt, wrongType) }), { maxLength: 3 }),
      wrongType,
    ),
    max_tokens: fc.oneof(fc.integer({ min: 1, max: 8 }), fc.constantFrom(0, -1, 1.5, 5000, '3', null)),
    temperature: fc.oneof(fc.double({ min: 0, max: 2, noNaN: true }), fc.constantFrom(-1, 11, 'hot')),
    top_p: fc.constantFrom(0, 0.5, 1, 2),
    seed: fc.oneof(fc.integer(), fc.constant(1.5)),
    stop: fc.oneof(fc.array(fc.string({ maxLength: 5 }), { maxLength: 3 }), wrongType),
    mode: fc.constantFrom('bita', 'plain', 'turbo'),
    stream: fc.oneof(fc.boolean(), fc.constant('yes')),
    deadline_ms: fc.oneof(fc.integer({ min: 1, max: 50 }), fc.constantFrom(0, -5, 1e12, 'soon')),
    priority: fc.oneof(fc.integer({ min: 0, max: 9 }), fc.constantFrom(10, -1, 'high')),
    target: fc.oneof(hostileString, wrongType),
    type: fc.oneof(fc.constantFrom(...REAL_KINDS), hostileString, wrongType),
    x_unknown: fc.jsonValue({ maxDepth: 1 }), // not in any schema: bad_request
  },
  { requiredKeys: [] },
);

const bodyArb: fc.Arbitrary<Body> = fc.oneof(
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 200 }).map((bytes) => ({ tag: 'bytes' as const, bytes })) },
  { weight: 1, arbitrary: fc.integer({ min: MAX_PAYLOAD + 1, max: MAX_PAYLOAD + 2000 }).map((n) => ({ tag: 'text' as const, text: '{"prompt":"' + 'y'.repeat(n) + '"}' })) },
  // Broken JSON: a proper prefix of a request object is never valid JSON.
  { weight: 2, arbitrary: fc.tuple(requestFields, fc.nat()).map(([f, n]) => { const s = JSON.stringify({ transaction: 'b', ...f }); return { tag: 'text' as const, text: s.slice(0, n % s.length) }; }) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => ({ tag: 'text' as const, text: JSON.stringify(v) ?? 'undefined' })) },
  { weight: 8, arbitrary: fc.tuple(requestFields, txnSpec, replyToSpec).map(([fields, txn, replyTo]) => ({ tag: 'request' as const, fields, txn, replyTo })) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constantFrom('generate' as const, 'chat' as const), maxTokens: fc.integer({ min: 1, max: 6 }), stream: fc.boolean() }).map((v) => ({ tag: 'valid' as const, ...v })) },
);
const msgArb: fc.Arbitrary<FuzzMsg> = fc.record({ kind: kindArb, body: bodyArb, rt: rtSpec });
// `size: 'max'`: lengths spread over 1–40 (the default size would keep batches tiny).
const batchArb = fc.array(msgArb, { minLength: 1, maxLength: 40, size: 'max' });

// ---------------------------------------------------------------------------------------------
// The contract: where each message's final reply may go, as documented.

/** The client reply namespace (`mqtt.reply_prefixes`, default `<base_topic>/reply/`). */
const REPLY_PREFIX = 'bitad/reply/';
/** Inside the reply namespace and made of ordinary characters: a topic the daemon may publish to. */
function inReplyNamespace(topic: string): boolean {
  return topic.startsWith(REPLY_PREFIX) && /^[A-Za-z0-9._\-/]{1,200}$/.test(topic) && !topic.includes('//') && topic.split('/').length <= 8;
}

/** A message turned into bytes plus what the contract promises for it. */
interface Realized {
  topic: string; // MQTT request topic (unused on the socket)
  payload: Buffer;
  responseTopic?: string;
  correlation?: Buffer;
  /** Where its final reply may arrive (reply keys), and whether one must (else at most one may). */
  keys: string[];
  required: boolean;
  valid: boolean; // must succeed
  garbage: boolean; // unusable by construction: must be an error
}

/** Reply keys: topic + correlation data (hex) on MQTT, "socket" on the socket. */
const key = (topic: string, corr?: Buffer | string) => `${topic}|${typeof corr === 'string' ? corr : (corr?.toString('hex') ?? '')}`;

class Realizer {
  private n = 0;
  constructor(private readonly transport: Transport) {}

  realize(m: FuzzMsg): Realized {
    const n = ++this.n;
    const kind = m.body.tag === 'valid' ? m.body.kind : m.kind;
    const obj = this.object(m, n, kind);
    const text = m.body.tag === 'bytes' ? null : obj !== null ? JSON.stringify(obj) : (m.body as { text: string }).text;
    let payload = text === null ? Buffer.from((m.body as { bytes: Uint8Array }).bytes) : Buffer.from(text);
    if (this.transport === 'socket') payload = Buffer.from(payload.map((b) => (b === 0x0a ? 0x20 : b)));
    const parsed = payload.length <= MAX_PAYLOAD ? parseObject(payload) : null;
    const r: Realized = { topic: `${BASE}/request/${kind}`, payload, valid: m.body.tag === 'valid', garbage: parsed === null, keys: [], required: true };
    if (this.transport === 'socket') {
      socketRoute(r, parsed);
      return r;
    }
    // Valid requests over MQTT 5 always carry a safe Response Topic.
    const rt: TopicSpec = m.body.tag === 'valid' && this.transport === 'v5' ? { tag: 'safe' } : m.rt;
    if (this.transport === 'v5' && rt.tag !== 'absent') {
      r.correlation = Buffer.from(`c${n}`);
      r.responseTopic = rt.tag === 'safe' ? `${REPLY_PREFIX}fuzz/q${n}` : (rt as { s: string }).s;
    }
    route(r, parsed);
    return r;
  }

  private transaction(m: FuzzMsg, n: number): unknown {
    if (m.body.tag === 'valid') return `v${n}`;
    if (m.body.tag !== 'request') return undefined;
    const s = m.body.txn;
    return s.tag === 'safe' ? `t${n}` : s.tag === 'hostile' ? `${s.s}${n}` : s.tag === 'wrongType' ? s.v : undefined;
  }

  private object(m: FuzzMsg, n: number, kind: string): Record<string, unknown> | null {
    const txn = this.transaction(m, n);
    const socketType = this.transport === 'socket' ? { type: kind } : {};
    if (m.body.tag === 'valid') {
      const input = m.body.kind === 'generate' ? { prompt: 'Once upon a time' } : { messages: [{ role: 'user', content: 'hello' }] };
      return { type: m.body.kind, transaction: txn, ...input, max_tokens: m.body.maxTokens, stream: m.body.stream };
    }
    if (m.body.tag !== 'request') return null;
    const o: Record<string, unknown> = { ...socketType, ...m.body.fields };
    if (txn !== undefined) o.transaction = txn;
    const rt = m.body.replyTo;
    if (rt.tag !== 'absent') o.reply_to = rt.tag === 'safe' ? `${REPLY_PREFIX}fuzz/r${n}` : rt.tag === 'hostile' ? rt.s : rt.v;
    return o;
  }
}

/**
 * The documented order: Response Topic, else reply_to, else <base>/response/<transaction|error>.
 * `parsed`: the payload as the daemon reads it (null when too large or not a JSON object).
 */
function route(r: Realized, parsed: Record<string, unknown> | null): void {
  const txn = parsed?.transaction;
  const replyTo = parsed?.reply_to;
  // Where a refused route may still be answered: the defaults, or a named topic inside the reply
  // namespace; with or without the Correlation Data.
  const candidates = [`${BASE}/response/error`, ...(typeof txn === 'string' ? [`${BASE}/response/${txn}`] : [])];
  for (const named of [r.responseTopic, replyTo]) if (typeof named === 'string' && inReplyNamespace(named)) candidates.push(named);
  const fallback = candidates.flatMap((tp) => [key(tp), ...(r.correlation ? [key(tp, r.correlation)] : [])]);
  const exactly = (k: string) => (r.keys = [k]);
  const atMostOne = () => {
    r.keys = fallback;
    r.required = false;
  };
  if (r.responseTopic !== undefined) {
    if (inReplyNamespace(r.responseTopic)) exactly(key(r.responseTopic, r.correlation));
    else atMostOne();
  } else if (parsed === null) exactly(key(`${BASE}/response/error`));
  else if (replyTo !== undefined) {
    if (typeof replyTo === 'string' && inReplyNamespace(replyTo) && (txn === undefined || isSafeTransaction(txn))) exactly(key(replyTo));
    else atMostOne();
  } else if (txn === undefined) exactly(key(`${BASE}/response/error`));
  else if (isSafeTransaction(txn)) exactly(key(`${BASE}/response/${txn}`));
  else atMostOne();
}

/**
 * The socket answers every non-blank line on the connection (blank lines are not requests). The
 * reply echoes the transaction when the daemon accepts its form, else says null.
 */
function socketRoute(r: Realized, parsed: Record<string, unknown> | null): void {
  const txn = parsed?.transaction;
  if (r.payload.toString('utf8').trim() === '') {
    r.keys = ['socket|'];
    r.required = false;
  } else if (typeof txn !== 'string') r.keys = ['socket|'];
  else if (isSafeTransaction(txn)) r.keys = [`socket|${txn}`];
  else r.keys = [`socket|${txn}`, 'socket|'];
}

function parseObject(payload: Buffer): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(payload.toString());
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

const isSafeTransaction = (t: unknown): boolean => typeof t === 'string' && /^[A-Za-z0-9]{1,64}$/.test(t);

// ---------------------------------------------------------------------------------------------
// Observation: every final reply the daemon sends, with its key.

interface Seen {
  key: string;
  topic: string;
  reply: Record<string, unknown>;
}

interface Side {
  /** The daemon's de-duplication/in-flight scope of this side's requests, when known. */
  readonly scope: string | null;
  /** Final replies seen since the last take. */
  finalsSeen(): number;
  /** Sends the realized messages of a batch, pipelined. */
  send(batch: Realized[]): void;
  /** Barrier: resolves when the daemon has answered everything sent before it. */
  barrier(): Promise<void>;
  /** Final replies seen since the last take (barrier replies excluded). */
  take(): { finals: Seen[]; strays: string[] };
  close(): Promise<void>;
}

class MqttSide implements Side {
  readonly scope = 'mqtt';
  private finals: Seen[] = [];
  private strays: string[] = []; // daemon publishes outside any reply the contract allows
  private sent = new Map<string, number>(); // our own requests, seen again by the `#` observer
  private waiting = new Map<string, () => void>();
  private allowedChunkTopics = new Set<string>();
  private barriers = 0;

  private constructor(
    private readonly client: MqttClient,
    private readonly observer: MqttClient,
    private readonly version: 4 | 5,
  ) {
    observer.on('message', (topic, payload, packet) => this.observe(topic, payload, packet.properties?.correlationData));
  }

  static async open(port: number, version: 4 | 5, tag: string): Promise<MqttSide> {
    const client = await mqtt.connectAsync({ host: '127.0.0.1', port, protocolVersion: version, clientId: `fuzz-${tag}`, reconnectPeriod: 0 });
    // The observer sees every publish on the broker but retained ones (rh 2): it is how the test
    // knows where the daemon published, whichever topic that was.
    const observer = await mqtt.connectAsync({ host: '127.0.0.1', port, protocolVersion: 5, clientId: `fuzz-${tag}-observer`, reconnectPeriod: 0 });
    for (const c of [client, observer]) (c.stream as { setNoDelay?: (v: boolean) => void }).setNoDelay?.(true);
    const side = new MqttSide(client, observer, version);
    await observer.subscribeAsync({ '#': { qos: 1, rh: 2 }, '$SYS/#': { qos: 1, rh: 2 }, '$foo/#': { qos: 1, rh: 2 } });
    return side;
  }

  private observe(topic: string, payload: Buffer, corr?: Buffer): void {
    const own = `${topic}\u0000${payload.toString('latin1')}`;
    const n = this.sent.get(own);
    if (n !== undefined) {
      if (n === 1) this.sent.delete(own);
      else this.sent.set(own, n - 1);
      return;
    }
    if (topic.startsWith('$SYS/broker/')) return; // mosquitto's own statistics
    const reply = parseObject(payload);
    if (reply === null || !('transaction' in reply)) {
      this.strays.push(`${JSON.stringify(topic).slice(0, 200)}: ${payload.toString().slice(0, 200)}`);
      return;
    }
    const txn = reply.transaction;
    if (typeof txn === 'string' && txn.startsWith('barrier-') && 'status' in reply) {
      this.waiting.get(txn)?.();
      this.waiting.delete(txn);
      return;
    }
    if ('status' in reply) this.finals.push({ key: key(topic, corr), topic, reply });
    else if (!this.allowedChunkTopics.has(topic)) this.strays.push(`chunk on ${JSON.stringify(topic).slice(0, 200)}`);
  }

  send(batch: Realized[]): void {
    this.allowedChunkTopics.clear();
    for (const r of batch) {
      for (const k of r.keys) this.allowedChunkTopics.add(k.slice(0, k.lastIndexOf('|')));
      const own = `${r.topic}\u0000${r.payload.toString('latin1')}`;
      this.sent.set(own, (this.sent.get(own) ?? 0) + 1);
      const props = this.version === 5 && r.responseTopic !== undefined ? { properties: { responseTopic: r.responseTopic, correlationData: r.correlation } } : {};
      this.client.publish(r.topic, r.payload, { qos: 1, ...props });
    }
  }

  async barrier(): Promise<void> {
    const txn = `barrier-${++this.barriers}`;
    const done = new Promise<void>((resolve) => this.waiting.set(txn, resolve));
    const topic = `${BASE}/request/health`;
    const payload = JSON.stringify({ transaction: txn });
    this.sent.set(`${topic}\u0000${payload}`, 1);
    this.client.publish(topic, payload, { qos: 1 });
    await withTimeout(done, () => `no answer to ${txn} over MQTT ${this.version} (test client connected ${this.client.connected}, observer connected ${this.observer.connected})`);
  }

  finalsSeen(): number {
    return this.finals.length;
  }

  take(): { finals: Seen[]; strays: string[] } {
    const out = { finals: this.finals, strays: this.strays };
    this.finals = [];
    this.strays = [];
    return out;
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
    await this.observer.endAsync(true);
  }
}

class SocketSide implements Side {
  readonly scope = null;
  private finals: Seen[] = [];
  private buf = '';
  private waiting = new Map<string, () => void>();
  private barriers = 0;

  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
  }

  static async open(path: string): Promise<SocketSide> {
    const sock = connect(path);
    await new Promise((r, j) => sock.once('connect', r).once('error', j));
    return new SocketSide(sock);
  }

  private onData(d: string): void {
    this.buf += d;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const reply = JSON.parse(this.buf.slice(0, nl)) as Record<string, unknown>;
      this.buf = this.buf.slice(nl + 1);
      const txn = reply.transaction;
      if (typeof txn === 'string' && txn.startsWith('barrier-') && 'status' in reply) {
        this.waiting.get(txn)?.();
        this.waiting.delete(txn);
      } else if ('status' in reply) this.finals.push({ key: `socket|${typeof txn === 'string' ? txn : ''}`, topic: 'socket', reply });
    }
  }

  send(batch: Realized[]): void {
    this.sock.write(Buffer.concat(batch.flatMap((r) => [r.payload, Buffer.from('\n')])));
  }

  async barrier(): Promise<void> {
    const txn = `barrier-${++this.barriers}`;
    const done = new Promise<void>((resolve) => this.waiting.set(txn, resolve));
    this.sock.write(JSON.stringify({ type: 'health', transaction: txn }) + '\n');
    await withTimeout(done, () => `no answer to ${txn} over the socket`);
  }

  finalsSeen(): number {
    return this.finals.length;
  }

  take(): { finals: Seen[]; strays: string[] } {
    const out = { finals: this.finals, strays: [] };
    this.finals = [];
    return out;
  }

  async close(): Promise<void> {
    this.sock.destroy();
  }
}

async function withTimeout(p: Promise<void>, what: () => string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(what())), BARRIER_TIMEOUT_MS)));
  try {
    await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------
// One batch: send, settle, compare what arrived with what the contract promises.

/**
 * Waits until every reply of the batch has arrived: the barrier (answered at once, but possibly
 * before error replies that wait for their row's commit), then as many final replies as messages
 * that must be answered and no request of this side still in flight in the daemon, then a second
 * barrier behind anything sent meanwhile.
 */
async function settle(d: TestDaemon, side: Side, batch: Realized[]): Promise<void> {
  await side.barrier();
  const required = batch.filter((r) => r.required).length;
  const s = d.controller.scheduler!;
  const busy = () => s.depth > 0 || s.busy || (side.scope !== null && d.controller.dispatcher!.inFlight(side.scope) > 0);
  const until = Date.now() + BARRIER_TIMEOUT_MS;
  while ((side.finalsSeen() < required || busy()) && Date.now() < until) await sleep(1);
  await side.barrier();
}

/** Problems with one batch, each naming the message(s) concerned; empty when the contract held. */
function check(batch: Realized[], finals: Seen[], strays: string[]): string[] {
  const problems: string[] = strays.map((s) => `published where no reply was allowed: ${s}`);
  for (const f of finals) {
    const status = f.reply.status;
    const code = (f.reply.error as { code?: string } | undefined)?.code;
    if (status !== 'ok' && !(status === 'error' && code !== undefined && DOCUMENTED_CODES.has(code))) {
      problems.push(`undocumented reply ${JSON.stringify(f.reply).slice(0, 300)}`);
    }
  }
  const owner = attribute(batch, finals);
  const matched = new Map<Realized, Seen>();
  owner.forEach((r, i) => r && matched.set(r, finals[i]));
  const expectedBy = new Map<string, number>();
  for (const r of batch) for (const k of r.keys) expectedBy.set(k, (expectedBy.get(k) ?? 0) + 1);
  for (const r of batch) {
    const got = matched.get(r);
    if (!got) {
      if (r.required) problems.push(`no final reply (exactly one expected) for ${describe(r)}`);
      continue;
    }
    const alone = r.keys.length === 1 && expectedBy.get(r.keys[0]) === 1; // no other message shares its address
    if (r.valid && got.reply.status !== 'ok') problems.push(`valid request failed: ${describe(r)} → ${JSON.stringify(got.reply).slice(0, 300)}`);
    if (r.garbage && alone && got.reply.status !== 'error') problems.push(`unreadable request answered ok: ${describe(r)}`);
  }
  owner.forEach((r, i) => {
    if (!r) problems.push(`extra or misplaced final reply (key ${JSON.stringify(finals[i].key).slice(0, 200)}): ${JSON.stringify(finals[i].reply).slice(0, 600)}`);
  });
  return problems;
}

/**
 * Which message each final reply answers: a maximum bipartite matching (Kuhn) between messages and
 * replies whose key is one of the message's addresses, messages that must be answered first, so an
 * ambiguous address (e.g. `<base>/response/error`, shared by every message without a transaction)
 * never hides a missing or an extra reply.
 */
function attribute(batch: Realized[], finals: Seen[]): (Realized | undefined)[] {
  const owner: (Realized | undefined)[] = finals.map(() => undefined);
  const byKey = new Map<string, number[]>();
  finals.forEach((f, i) => byKey.set(f.key, [...(byKey.get(f.key) ?? []), i]));
  const augment = (r: Realized, seen: Set<number>): boolean => {
    for (const k of r.keys) {
      for (const i of byKey.get(k) ?? []) {
        if (seen.has(i)) continue;
        seen.add(i);
        const prev = owner[i];
        if (prev === undefined || augment(prev, seen)) {
          owner[i] = r;
          return true;
        }
      }
    }
    return false;
  };
  for (const r of [...batch].sort((a, b) => Number(b.required) - Number(a.required))) augment(r, new Set());
  return owner;
}

function describe(r: Realized): string {
  return JSON.stringify({ topic: r.topic, responseTopic: r.responseTopic, payload: r.payload.toString().slice(0, 300), keys: r.keys.map((k) => k.slice(0, 120)), required: r.required });
}

interface FuzzStats {
  messages: number;
  valid: number;
  rss: number[];
}

async function fuzz(t: Test, d: TestDaemon, side: Side, transport: Transport, seed: number): Promise<FuzzStats> {
  const realizer = new Realizer(transport);
  const stats: FuzzStats = { messages: 0, valid: 0, rss: [] };
  const mqttOk = () => transport === 'socket' || (d.controller.mqtt!.connects === 1 && d.controller.mqtt!.connected);
  let broken = false;
  let runs = 0;
  const property = fc.asyncProperty(batchArb, async (msgs) => {
    // Once the daemon lost its MQTT connection every later batch fails for that reason alone, so
    // shrinking could not learn anything: the first failing batch is reported as it was.
    if (broken) return true;
    const batch = msgs.map((m) => realizer.realize(m));
    side.send(batch);
    const late = await settle(d, side, batch).then(() => null, (e: Error) => e.message);
    const { finals, strays } = side.take();
    stats.messages += batch.length;
    stats.valid += batch.filter((r) => r.valid).length;
    if (++runs % RSS_EVERY_RUNS === 0) {
      gc();
      stats.rss.push(process.memoryUsage.rss());
    }
    const problems = check(batch, finals, strays);
    // A batch that was never fully answered leaves replies in flight that would be blamed on the
    // next one: report this batch as it is.
    if (late) broken = true;
    if (late) problems.unshift(`${late}; daemon: ${JSON.stringify({ requests: d.controller.dispatcher?.stats, mqtt: d.controller.mqtt?.health(), queue: d.controller.scheduler?.depth })}`);
    if (!mqttOk()) {
      broken = true;
      problems.unshift(`the daemon's MQTT connection dropped (connects ${d.controller.mqtt!.connects}, connected ${d.controller.mqtt!.connected})`);
    }
    if (problems.length) throw new Error(problems.slice(0, 5).join('\n'));
    return true;
  });
  const result = await fc.check(property, { seed, numRuns: RUNS_PER_TRANSPORT, endOnFailure: false, markInterruptAsFailure: true, includeErrorInReport: true });
  if (result.failed) {
    const shown = fc.stringify(result.counterexample).replace(/(.)\1{40,}/g, (run, c: string) => `${c}×${run.length}`);
    const error = result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance);
    t.fail(`${error}\n(seed ${result.seed}, path ${result.counterexample ? result.counterexamplePath : '-'}, shrunk ${result.numShrinks} times)\ncounterexample: ${shown.slice(0, 4000)}`);
  } else t.pass(`${stats.messages} generated messages (${stats.valid} valid) answered as documented`);
  return stats;
}

function checkRss(t: Test, rss: number[]): void {
  const warm = WARMUP_RUNS / RSS_EVERY_RUNS;
  if (rss.length <= warm) {
    t.fail(`only ${rss.length * RSS_EVERY_RUNS} batches ran: too few to judge memory after the warm-up`);
    return;
  }
  const base = rss[warm - 1];
  const peak = Math.max(...rss.slice(warm));
  t.ok(peak <= base * 1.1, `RSS after warm-up ${(base / 2 ** 20).toFixed(1)} MB, peak later ${(peak / 2 ** 20).toFixed(1)} MB (+10 % allowed)`);
}

// ---------------------------------------------------------------------------------------------

let broker: Mosquitto;
t.before(async () => {
  broker = await startMosquitto();
});
t.teardown(async () => broker?.stop());

/** A queue deep enough that generated generation requests never make a valid one `busy`. */
const roomyQueue = (c: Record<string, unknown>) => {
  c.queue = { capacity: 256 };
  c.socket = { max_in_flight: 256 };
};
let total = 0;

t.test('every line sent over the Unix socket gets exactly one documented final reply', async (t) => {
  const d = await startDaemon({ enabled: false }, roomyQueue, { chunkDelayMs: 0 });
  const side = await SocketSide.open(d.cfg.socket.path);
  t.teardown(async () => {
    await side.close();
    await d.stop();
  });
  const stats = await fuzz(t, d, side, 'socket', SEED);
  total += stats.messages;
  t.ok(stats.valid > 0, 'valid requests were interleaved');
  checkRss(t, stats.rss);
});

for (const version of [4, 5] as const) {
  const name = version === 5 ? 'MQTT 5 (Response Topic, Correlation Data, reply_to)' : 'MQTT 3.1.1';
  t.test(`every message over ${name} with a usable reply address gets exactly one documented final reply, and the daemon stays connected`, async (t) => {
    const mq = { embedded: false, host: '127.0.0.1', port: broker.port, protocol_version: version, client_id: `bitad-fuzz-v${version}` };
    const d = await startDaemon(mq, roomyQueue, { chunkDelayMs: 0 });
    const side = await MqttSide.open(broker.port, version, `v${version}`);
    t.teardown(async () => {
      await side.close();
      await d.stop();
    });
    const stats = await fuzz(t, d, side, version === 5 ? 'v5' : 'v4', SEED + version);
    total += stats.messages;
    t.equal(d.controller.mqtt!.connects, 1, 'the daemon connected once and never reconnected');
    t.ok(d.controller.mqtt!.connected, 'the daemon is still connected');
    t.ok(stats.valid > 0, 'valid requests were interleaved');
    checkRss(t, stats.rss);
  });
}

t.test('at least 10 000 generated messages were sent', async (t) => {
  t.ok(total >= 10_000, `${total} messages`);
});
