/**
 * The dashboard's MQTT side (mqtt.js): subscribes to every board's `state`, `info` and
 * `telemetry` under the base topic, and sends requests to one board with the daemon's envelopes
 * (docs/daemon.md): MQTT 5 Response Topic + Correlation Data, or `reply_to` in the payload on
 * 3.1.1, always under `<base>/reply/<user>/…` (the reply namespace the daemon accepts and the
 * ACL lets only that user read).
 */
import { randomUUID } from 'node:crypto';
import mqtt, { type IClientOptions, type IClientPublishOptions, type MqttClient } from 'mqtt';
import { tlsClientOptions, type TlsFiles } from '../daemon/transport/tls.js';

export interface LinkOptions {
  host: string;
  port: number;
  protocolVersion: 4 | 5;
  baseTopic: string;
  username?: string;
  password?: string;
  tls?: TlsFiles | null;
  clientId?: string;
  connectTimeoutMs?: number;
}

export type TopicKind = 'state' | 'info' | 'telemetry';

export interface LinkEvents {
  /**
   * `payload` is null for an empty (cleared retained) message; unparsable JSON is dropped.
   * `retained`: the broker's stored copy, handed out on (re)subscribe, not a message just sent.
   */
  onBoard(node: string, kind: TopicKind, payload: Record<string, unknown> | null, retained: boolean): void;
}

/** A chunk (`seq`, `text`) or the final reply (`status`) of one request, as the daemon sent it. */
export type ReplyMessage = Record<string, unknown>;

interface Pending {
  onReply: (m: ReplyMessage) => void;
  timer: NodeJS.Timeout;
}

/** A node id as it may appear in a topic level: what `+` matched, never a wildcard or separator. */
export function validNode(node: string): boolean {
  return node.length > 0 && node.length <= 128 && !/[/+#\u0000-\u001f\u007f]/.test(node) && !node.startsWith('$');
}

export class FleetLink {
  private client: MqttClient | null = null;
  private readonly pending = new Map<string, Pending>();
  /** `<base>/reply/<user>/dashboard-<random>`: this process's own reply tree. */
  readonly replyBase: string;
  connected = false;
  messages = 0;

  constructor(
    private readonly opts: LinkOptions,
    private readonly events: LinkEvents,
  ) {
    this.replyBase = `${opts.baseTopic}/reply/${opts.username ?? 'dashboard'}/dashboard-${randomUUID().slice(0, 8)}`;
  }

  /** Resolves on the first connect; rejects on the first error (wrong host, refused credentials). */
  async connect(): Promise<void> {
    const client = mqtt.connect(this.clientOptions());
    this.client = client;
    client.on('message', (topic, payload, packet) => this.onMessage(topic, payload, packet.retain, packet.properties?.correlationData));
    client.on('connect', () => {
      this.connected = true;
      const b = this.opts.baseTopic;
      client.subscribe([`${b}/+/state`, `${b}/+/info`, `${b}/+/telemetry`, `${this.replyBase}/#`], { qos: 1 });
    });
    client.on('close', () => (this.connected = false));
    await new Promise<void>((resolve, reject) => {
      const fail = (e: Error) => {
        client.end(true);
        reject(new Error(`cannot connect to the broker mqtt://${this.opts.host}:${this.opts.port}: ${e.message}`));
      };
      client.once('connect', () => {
        client.off('error', fail);
        client.on('error', () => undefined); // later errors: mqtt.js reconnects
        resolve();
      });
      client.once('error', fail);
    });
  }

  private clientOptions(): IClientOptions {
    const o = this.opts;
    const opts: IClientOptions = {
      host: o.host,
      port: o.port,
      protocol: o.tls ? 'mqtts' : 'mqtt',
      protocolVersion: o.protocolVersion,
      clientId: o.clientId ?? `bitad-dashboard-${randomUUID().slice(0, 8)}`,
      username: o.username,
      password: o.password,
      clean: true,
      reconnectPeriod: 2000,
      connectTimeout: o.connectTimeoutMs ?? 10_000,
    };
    return { ...opts, ...tlsClientOptions(o.tls ?? null) };
  }

  private onMessage(topic: string, payload: Buffer, retained: boolean, correlation: Buffer | undefined): void {
    this.messages++;
    if (topic.startsWith(this.replyBase + '/')) return this.onReply(topic.slice(this.replyBase.length + 1), payload, correlation);
    const rest = topic.slice(this.opts.baseTopic.length + 1).split('/');
    if (rest.length !== 2 || !validNode(rest[0])) return;
    const kind = rest[1] as TopicKind;
    if (kind !== 'state' && kind !== 'info' && kind !== 'telemetry') return;
    if (payload.length === 0) return this.events.onBoard(rest[0], kind, null, retained);
    const body = parseObject(payload);
    if (body) this.events.onBoard(rest[0], kind, body, retained);
  }

  private onReply(sub: string, payload: Buffer, correlation: Buffer | undefined): void {
    const txn = correlation?.toString() ?? sub;
    const p = this.pending.get(txn);
    const body = parseObject(payload);
    if (!p || !body) return;
    if ('status' in body) this.settle(txn);
    p.onReply(body);
  }

  private settle(txn: string): void {
    const p = this.pending.get(txn);
    if (p) clearTimeout(p.timer);
    this.pending.delete(txn);
  }

  /**
   * Sends one request (`generate`, `chat`, `health`) to a board; every chunk and the final reply
   * go to `onReply`. A board that never answers (offline, its queue lost in a crash) gets a
   * synthesized `no_reply` final reply after `timeoutMs`, so every request ends.
   */
  request(node: string, kind: string, body: Record<string, unknown>, onReply: (m: ReplyMessage) => void, timeoutMs: number): string {
    if (!this.client) throw new Error('not connected');
    if (!validNode(node)) throw new Error(`invalid node "${node}"`);
    const txn = `dash-${randomUUID()}`;
    const replyTopic = `${this.replyBase}/${txn}`;
    const timer = setTimeout(() => {
      this.settle(txn);
      onReply({ transaction: txn, status: 'error', error: { code: 'no_reply', message: `no final reply within ${Math.round(timeoutMs / 1000)} s` } });
    }, timeoutMs);
    timer.unref();
    this.pending.set(txn, { onReply, timer });
    const v5 = this.opts.protocolVersion === 5;
    const payload = JSON.stringify({ ...body, transaction: txn, ...(v5 ? {} : { reply_to: replyTopic }) });
    const publishOpts: IClientPublishOptions = { qos: 1 };
    if (v5) publishOpts.properties = { responseTopic: replyTopic, correlationData: Buffer.from(txn) };
    this.client.publish(`${this.opts.baseTopic}/${node}/request/${kind}`, payload, publishOpts);
    return txn;
  }

  async close(): Promise<void> {
    for (const txn of [...this.pending.keys()]) this.settle(txn);
    const c = this.client;
    this.client = null;
    if (c) await Promise.race([c.endAsync(), new Promise((r) => setTimeout(r, 1000).unref())]).then(() => c.end(true));
  }
}

function parseObject(payload: Buffer): Record<string, unknown> | null {
  try {
    const v = JSON.parse(payload.toString('utf8')) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
