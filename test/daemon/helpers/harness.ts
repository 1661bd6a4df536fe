/**
 * One client interface over both transports so the same conformance cases run against mosquitto
 * (MQTT 5 and 3.1.1), the embedded aedes broker and the Unix socket.
 */
import { randomUUID } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import { SocketClient } from '../../../src/cli/socket-client.js';
import type { ChunkReply, FinalReply, Reply } from '../../../src/daemon/protocol/envelope.js';

export interface Pending {
  transaction: string | null;
  chunks: ChunkReply[];
  finals: FinalReply[];
  /** Resolves with the first final reply. */
  final: Promise<FinalReply>;
  /** Resolves when the first chunk arrives. */
  firstChunk: Promise<ChunkReply>;
  /** MQTT 5: correlation data seen on each reply packet (hex). */
  correlations: string[];
}

export interface Harness {
  name: string;
  /** Sends `body` (object → JSON with a fresh transaction unless given; string → raw bytes). */
  send(kind: string, body: Record<string, unknown> | string, opts?: { times?: number; props?: Record<string, unknown> }): Pending;
  close(): Promise<void>;
}

function pending(transaction: string | null): Pending & { push(r: Reply, corr?: string): void } {
  let resolveFinal!: (r: FinalReply) => void;
  let resolveChunk!: (c: ChunkReply) => void;
  const p = {
    transaction,
    chunks: [] as ChunkReply[],
    finals: [] as FinalReply[],
    correlations: [] as string[],
    final: new Promise<FinalReply>((r) => (resolveFinal = r)),
    firstChunk: new Promise<ChunkReply>((r) => (resolveChunk = r)),
    push(r: Reply, corr?: string) {
      if (corr !== undefined) p.correlations.push(corr);
      if ('seq' in r) {
        p.chunks.push(r);
        if (p.chunks.length === 1) resolveChunk(r);
      } else {
        p.finals.push(r);
        resolveFinal(r);
      }
    },
  };
  return p;
}

function prepare(body: Record<string, unknown> | string): { payload: string; transaction: string | null } {
  if (typeof body === 'string') return { payload: body, transaction: null };
  const transaction = 'transaction' in body ? (body.transaction as string) : randomUUID();
  return { payload: JSON.stringify({ ...body, transaction }), transaction };
}

/**
 * MQTT client. v5: every request carries a Response Topic and Correlation Data (replies are
 * matched by it). v3.1.1: replies come on <base>/response/<transaction> (or /error when the
 * request had no readable transaction).
 */
export async function mqttHarness(name: string, port: number, base: string, protocolVersion: 4 | 5): Promise<Harness> {
  const clientId = `test-${randomUUID()}`;
  const client: MqttClient = await mqtt.connectAsync({ host: '127.0.0.1', port, protocolVersion, clientId, reconnectPeriod: 0 });
  (client.stream as { setNoDelay?: (v: boolean) => void }).setNoDelay?.(true);
  // Inside the daemon's default reply namespace (<base_topic>/reply/, docs/daemon.md "Reply routes").
  const replyTopic = `${base.split('/')[0]}/reply/${clientId}`;
  const byKey = new Map<string, ReturnType<typeof pending>>();
  let last: ReturnType<typeof pending> | null = null;
  await client.subscribeAsync(protocolVersion === 5 ? replyTopic : `${base}/response/#`, { qos: 1 });
  client.on('message', (topic, payload, packet) => {
    const reply = JSON.parse(payload.toString()) as Reply;
    const corr = packet.properties?.correlationData?.toString('hex');
    const key = protocolVersion === 5 ? corr : topic.slice(`${base}/response/`.length);
    // v3.1.1: unreadable requests (no transaction) are answered on <base>/response/error.
    const p = protocolVersion === 4 && key === 'error' ? last : key !== undefined ? byKey.get(key) : undefined;
    p?.push(reply, corr);
  });
  return {
    name,
    send(kind, body, opts = {}) {
      const { payload, transaction } = prepare(body);
      const p = pending(transaction);
      const corrId = randomUUID();
      const key = protocolVersion === 5 ? Buffer.from(corrId).toString('hex') : (transaction ?? 'error');
      byKey.set(key, p);
      last = p;
      for (let i = 0; i < (opts.times ?? 1); i++) {
        client.publish(`${base}/request/${kind}`, payload, {
          qos: 1,
          ...(protocolVersion === 5 ? { properties: { responseTopic: replyTopic, correlationData: Buffer.from(corrId), ...opts.props } } : {}),
        });
      }
      return p;
    },
    close: () => client.endAsync(),
  };
}

/** Unix socket client: replies with a null transaction (unreadable requests) go to the last send. */
export async function socketHarness(path: string): Promise<Harness> {
  const client = await SocketClient.connect(path);
  const byTxn = new Map<string, ReturnType<typeof pending>>();
  let lastRaw: ReturnType<typeof pending> | null = null;
  // The client library routes by transaction itself; read the raw socket so null-transaction
  // replies (unreadable requests) are visible too.
  client.sock.removeAllListeners('data');
  let buf = '';
  client.sock.on('data', (d: string) => {
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      const r = JSON.parse(line) as Reply;
      (r.transaction !== null ? byTxn.get(r.transaction) : lastRaw)?.push(r);
    }
  });
  return {
    name: 'unix socket',
    send(kind, body, opts = {}) {
      const raw = typeof body === 'string';
      const { payload, transaction } = raw ? { payload: body, transaction: null } : prepare({ type: kind, ...body });
      const p = pending(transaction);
      if (transaction !== null) byTxn.set(transaction, p);
      lastRaw = p;
      for (let i = 0; i < (opts.times ?? 1); i++) client.writeRaw(payload.replace(/\n/g, ' ') + '\n');
      return p;
    },
    close: async () => client.close(),
  };
}
