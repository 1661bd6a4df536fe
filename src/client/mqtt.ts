/**
 * MQTT connection of the client: requests to `<baseTopic>/<node>/request/<kind>` (node may be
 * "fleet": the boards' shared subscription), replies on one reply topic of this client, named as
 * the MQTT 5 Response Topic with the transaction as Correlation Data, or as `reply_to` in the
 * payload for MQTT 3.1.1 (docs/daemon.md "Where replies go"). QoS 1 both ways.
 */
import { randomUUID } from 'node:crypto';
import mqtt, { type IClientOptions, type IClientPublishOptions, type MqttClient } from 'mqtt';
import type { MqttClientOptions } from './types.js';
import type { Reply, RequestKind, SendOptions, Transport } from './transport.js';

export class MqttTransport implements Transport {
  readonly name = 'mqtt';
  readonly reportsLoss = false;
  onReply: (reply: Reply) => void = () => undefined;
  onClose: (reason: string) => void = () => undefined;
  readonly baseTopic: string;
  readonly node: string;

  private constructor(
    private readonly client: MqttClient,
    readonly replyTopic: string,
    private readonly v5: boolean,
    o: MqttClientOptions,
  ) {
    this.baseTopic = o.baseTopic ?? 'bitad';
    this.node = o.node;
    // After the first connect mqtt.js reconnects by itself; its errors meanwhile are not fatal
    // (calls without replies are resent after their idle timeout).
    client.on('error', () => undefined);
    client.on('message', (topic, payload) => {
      if (topic !== replyTopic) return;
      let reply: Reply;
      try {
        reply = JSON.parse(payload.toString()) as Reply;
      } catch {
        return; // not from bitad
      }
      this.onReply(reply);
    });
  }

  static async connect(o: MqttClientOptions): Promise<MqttTransport> {
    const clientId = o.clientId ?? `bitad-client-${randomUUID()}`;
    const base = o.baseTopic ?? 'bitad';
    const replyTopic = o.replyTopic ?? `${base}/reply/${o.username ? `${o.username}/` : ''}${clientId}`;
    const client = await firstConnect(o, clientOptions(o, clientId), o.connectTimeoutMs ?? 10_000);
    // mqtt.js never sets TCP_NODELAY; with Nagle a QoS 1 round trip on loopback costs 44–88 ms.
    const nodelay = () => (client.stream as { setNoDelay?: (v: boolean) => void }).setNoDelay?.(true);
    nodelay();
    client.on('connect', nodelay);
    try {
      await client.subscribeAsync(replyTopic, { qos: 1 });
    } catch (e) {
      client.end(true);
      throw new Error(`mqtt: cannot subscribe to the reply topic ${replyTopic}: ${(e as Error).message}`);
    }
    return new MqttTransport(client, replyTopic, (o.protocolVersion ?? 5) === 5, o);
  }

  /**
   * MQTT 5: Response Topic + Correlation Data (the transaction); 3.1.1: `reply_to` in the payload.
   * Both are the same on every send of one request, so the daemon's duplicate check sees one route.
   */
  send(kind: RequestKind, body: Record<string, unknown>, o: SendOptions): void {
    const topic = `${this.baseTopic}/${o.node ?? this.node}/request/${kind}`;
    const transaction = typeof body.transaction === 'string' ? body.transaction : '';
    if (this.v5) {
      const properties: NonNullable<IClientPublishOptions['properties']> = { responseTopic: this.replyTopic, correlationData: Buffer.from(transaction) };
      if (o.expiryS !== undefined) properties.messageExpiryInterval = o.expiryS;
      this.client.publish(topic, this.payload(body), { qos: 1, properties });
    } else {
      this.client.publish(topic, this.payload(body), { qos: 1 });
    }
  }

  size(_kind: RequestKind, body: Record<string, unknown>): number {
    return Buffer.byteLength(this.payload(body));
  }

  private payload(body: Record<string, unknown>): string {
    return JSON.stringify(this.v5 ? body : { ...body, reply_to: this.replyTopic });
  }

  async close(): Promise<void> {
    // Force after 1 s: a graceful end waits for every QoS 1 publish to be acknowledged.
    await Promise.race([this.client.endAsync(false), new Promise((r) => setTimeout(r, 1000).unref())]);
    if (this.client.connected) await this.client.endAsync(true);
  }
}

function clientOptions(o: MqttClientOptions, clientId: string): IClientOptions {
  const opts: IClientOptions = {
    protocolVersion: o.protocolVersion ?? 5,
    clientId,
    username: o.username,
    password: o.password,
    clean: true, // replies of a previous run are of no use to this one
    reconnectPeriod: 1000,
    connectTimeout: o.connectTimeoutMs ?? 10_000,
  };
  if (o.host !== undefined) opts.host = o.host;
  if (o.port !== undefined) opts.port = o.port;
  if (o.tls) {
    if (o.url === undefined) opts.protocol = 'mqtts';
    if (o.tls.ca !== undefined) opts.ca = o.tls.ca;
    if (o.tls.cert !== undefined) opts.cert = o.tls.cert;
    if (o.tls.key !== undefined) opts.key = o.tls.key;
    if (o.tls.rejectUnauthorized !== undefined) opts.rejectUnauthorized = o.tls.rejectUnauthorized;
  }
  return opts;
}

/** The first connection fails fast (refused, TLS, credentials, timeout); later ones reconnect by themselves. */
function firstConnect(o: MqttClientOptions, opts: IClientOptions, timeoutMs: number): Promise<MqttClient> {
  const where = o.url ?? `${o.host ?? 'localhost'}:${o.port ?? 1883}`;
  const client = o.url !== undefined ? mqtt.connect(o.url, opts) : mqtt.connect(opts);
  return new Promise((resolve, reject) => {
    const fail = (e: Error) => {
      clearTimeout(timer);
      client.off('connect', ok);
      client.end(true);
      reject(new Error(`mqtt: cannot connect to ${where}: ${e.message}`));
    };
    const ok = () => {
      clearTimeout(timer);
      client.off('error', fail);
      client.off('offline', offline);
      resolve(client);
    };
    const offline = () => fail(new Error('connection refused or closed'));
    const timer = setTimeout(() => fail(new Error(`no CONNACK within ${timeoutMs} ms`)), timeoutMs);
    client.once('connect', ok);
    client.once('error', fail);
    client.once('offline', offline);
  });
}
