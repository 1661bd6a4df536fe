/**
 * MQTT transport (mqtt.js): requests on `<base>/request/<kind>`, replies to the MQTT 5 Response
 * Topic with its Correlation Data, else to `reply_to`, else `<prefix>/response/<transaction>`.
 * Retained `<base>/state` (also the Last Will) and `<base>/info` are re-published on every
 * (re)connect. QoS 1 and a persistent session, so requests survive a reconnect.
 */
import { readFileSync } from 'node:fs';
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import type { BitadConfig } from '../config/schema.js';
import type { Dispatcher, ReplyChannel } from '../dispatcher.js';
import type { Reply } from '../protocol/envelope.js';
import type { ComponentHealth } from '../health.js';

export interface MqttTransportOptions {
  cfg: BitadConfig['mqtt'];
  nodeId: string;
  /** Broker port actually used (the embedded broker may have picked one). */
  port: number;
  dispatcher: Dispatcher;
  log: Logger;
  info: () => unknown;
  connectTimeoutMs?: number;
}

const REQUEST_TOPIC = /^(.*)\/request\/([^/]+)$/;

export class MqttTransport {
  readonly base: string;
  private client: MqttClient | null = null;
  private subscribed: Promise<void> = Promise.resolve();
  connects = 0;

  constructor(private readonly o: MqttTransportOptions) {
    this.base = `${o.cfg.base_topic}/${o.nodeId}`;
  }

  get connected(): boolean {
    return this.client?.connected ?? false;
  }

  health(): ComponentHealth {
    return this.connected
      ? { status: 'ok', base: this.base, connects: this.connects }
      : { status: 'degraded', reason: 'broker disconnected', base: this.base, connects: this.connects };
  }

  async start(): Promise<void> {
    const { cfg } = this.o;
    const v5 = cfg.protocol_version === 5;
    const opts: IClientOptions = {
      host: cfg.host,
      port: this.o.port,
      protocol: cfg.tls.enabled ? 'mqtts' : 'mqtt',
      protocolVersion: cfg.protocol_version,
      clientId: cfg.client_id,
      username: cfg.username,
      password: cfg.password,
      clean: false, // persistent session: QoS 1 requests queued while we were away are delivered
      keepalive: cfg.keepalive_s,
      reconnectPeriod: cfg.reconnect_ms,
      connectTimeout: this.o.connectTimeoutMs ?? 10_000,
      will: { topic: `${this.base}/state`, payload: Buffer.from('{"state":"offline"}'), qos: 1, retain: true },
      ...(v5 ? { properties: { sessionExpiryInterval: cfg.session_expiry_s } } : {}),
    };
    if (cfg.tls.enabled) {
      if (cfg.tls.ca) opts.ca = readFileSync(cfg.tls.ca);
      if (cfg.tls.cert) opts.cert = readFileSync(cfg.tls.cert);
      if (cfg.tls.key) opts.key = readFileSync(cfg.tls.key);
      opts.rejectUnauthorized = cfg.tls.reject_unauthorized;
    }
    const client = mqtt.connect(opts);
    this.client = client;
    client.on('connect', (connack) => this.onConnect(connack.sessionPresent));
    client.on('message', (topic, payload, packet) => this.onMessage(topic, payload, packet));
    client.on('reconnect', () => this.o.log.info('mqtt reconnecting'));
    client.on('offline', () => this.o.log.warn('mqtt offline'));
    client.on('error', (e) => this.o.log.error({ err: e }, 'mqtt error'));
    // Start-up fails fast on the first error (TLS, credentials, refused connection): it is a
    // configuration or broker problem, and systemd's Restart= retries. After the first connect,
    // mqtt.js reconnects by itself.
    await new Promise<void>((resolve, reject) => {
      const fail = (e: Error) => {
        clearTimeout(timer);
        client.off('connect', ok);
        client.end(true);
        this.client = null;
        reject(new Error(`mqtt: cannot connect to ${cfg.host}:${this.o.port}: ${e.message}`));
      };
      const ok = () => {
        clearTimeout(timer);
        client.off('error', fail);
        resolve();
      };
      const timer = setTimeout(() => fail(new Error(`no CONNACK within ${opts.connectTimeout} ms`)), (opts.connectTimeout ?? 10_000) + 500);
      client.once('connect', ok);
      client.once('error', fail);
    });
    // READY only once the broker has confirmed the subscriptions: no request can slip past.
    await this.subscribed;
  }

  private onConnect(sessionPresent: boolean): void {
    const client = this.client!;
    this.connects++;
    // mqtt.js never sets TCP_NODELAY; with Nagle a QoS 1 round trip on loopback costs 44–88 ms.
    (client.stream as { setNoDelay?: (v: boolean) => void }).setNoDelay?.(true);
    const topics = [`${this.base}/request/+`];
    if (this.o.cfg.shared_group) topics.push(`$share/${this.o.cfg.shared_group}/${this.o.cfg.base_topic}/fleet/request/+`);
    this.subscribed = new Promise<void>((resolve) =>
      client.subscribe(topics, { qos: 1 }, (err) => {
        if (err) this.o.log.error({ err }, 'mqtt subscribe failed');
        resolve();
      }),
    );
    this.publish('state', { state: 'online' }, true);
    this.publish('info', this.o.info(), true);
    this.o.log.info({ base: this.base, sessionPresent, connects: this.connects }, 'mqtt connected');
  }

  private onMessage(topic: string, payload: Buffer, packet: IPublishPacket): void {
    const m = REQUEST_TOPIC.exec(topic);
    if (!m) return;
    const prefix = m[1];
    const props = packet.properties;
    const responseTopic = props?.responseTopic;
    const correlationData = props?.correlationData;
    this.o.dispatcher.handle({
      transport: 'mqtt',
      kind: m[2],
      payload,
      scope: 'mqtt',
      expiryMs: props?.messageExpiryInterval !== undefined ? props.messageExpiryInterval * 1000 : undefined,
      route: ({ transaction, replyTo }) => {
        if (responseTopic) {
          return {
            channel: this.channel(responseTopic, correlationData),
            routeKey: `rt:${responseTopic}:${correlationData?.toString('hex') ?? ''}`,
          };
        }
        const t = replyTo ?? `${prefix}/response/${transaction ?? 'error'}`;
        return { channel: this.channel(t), routeKey: `t:${t}` };
      },
    });
  }

  private channel(topic: string, correlationData?: Buffer): ReplyChannel {
    return {
      send: (reply: Reply) => {
        this.client?.publish(topic, JSON.stringify(reply), {
          qos: 1,
          ...(correlationData ? { properties: { correlationData } } : {}),
        });
      },
    };
  }

  publish(sub: string, body: unknown, retain = false): void {
    if (!this.client?.connected) return;
    this.client.publish(`${this.base}/${sub}`, JSON.stringify(body), { qos: 1, retain });
  }

  /** Publishes the retained offline state (the Will covers crashes) and disconnects. */
  async stop(): Promise<void> {
    const client = this.client;
    if (!client) return;
    this.client = null;
    if (client.connected) {
      await new Promise<void>((resolve) =>
        client.publish(`${this.base}/state`, '{"state":"offline"}', { qos: 1, retain: true }, () => resolve()),
      );
    }
    await client.endAsync(false);
  }
}
