/**
 * MQTT transport (mqtt.js): requests on `<base>/request/<kind>`, replies to the MQTT 5 Response
 * Topic with its Correlation Data, else to `reply_to`, else `<prefix>/response/<transaction>`.
 * Named reply routes must pass TopicPolicy (topics.ts); every publish goes through `send`, which
 * checks the topic once more and never lets one refused publish cost the connection for good.
 * Retained `<base>/state` (also the Last Will) and `<base>/info` are re-published on every
 * (re)connect. QoS 1 and a persistent session, so requests survive a reconnect. With
 * `homeassistant.enabled`, the retained Home Assistant discovery payload too (ha-discovery.ts).
 */
import { createHash } from 'node:crypto';
import mqtt, { type IClientOptions, type IClientPublishOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import type { BitadConfig } from '../config/schema.js';
import { configTls, tlsClientOptions } from './tls.js';
import type { Dispatcher, ReplyChannel } from '../dispatcher.js';
import { errorReply, parsePayload, routingFields, shownKind, type Reply, type Routing } from '../protocol/envelope.js';
import type { ComponentHealth } from '../health.js';
import { defaultReplyPrefixes, topicProblem, TopicPolicy } from './topics.js';
import { HaDiscovery, type HomeAssistantConfig } from './ha-discovery.js';
import { Subscriptions } from './subscriptions.js';

export interface MqttTransportOptions {
  cfg: BitadConfig['mqtt'];
  nodeId: string;
  /** Broker port actually used (the embedded broker may have picked one). */
  port: number;
  dispatcher: Dispatcher;
  log: Logger;
  info: () => unknown;
  connectTimeoutMs?: number;
  /** Home Assistant discovery; off when absent or disabled. */
  homeassistant?: HomeAssistantConfig;
  /** limits.max_payload_bytes: payloads this transport reads itself (replays, poison) are held to it too. */
  maxPayloadBytes: number;
}

/**
 * A stored QoS 1 publish that is the oldest unacknowledged one when the connection closes this
 * many times in a row is dropped. mqtt.js resends its outgoing store one packet at a time after a
 * reconnect, so a publish the broker answers by disconnecting becomes the oldest on the next
 * close; a good one gets acknowledged. Three lets a reply survive two ordinary reconnects.
 */
const MAX_CLOSES_OUTSTANDING = 3;
/**
 * stop() waits this long for the offline state and pending replies to be acknowledged, then ends
 * the client by force (the broker then publishes the Will). Without a bound, endAsync waits for an
 * empty outgoing store forever while the broker is gone (issue 7: systemd had to SIGKILL).
 */
const STOP_FLUSH_MS = 1000;
/** Requests whose reply cost the connection, remembered to answer a redelivery without executing it. */
const POISON_MAX = 1000;

interface Outgoing {
  topic: string;
  /** Fingerprint of the request this reply answers. */
  origin?: string;
  closes: number;
  messageId?: number;
  /** Already counted as dropped (by the close rule or stop()). */
  dropped?: boolean;
  cb: (err?: Error) => void;
}

export class MqttTransport {
  readonly base: string;
  readonly topics: TopicPolicy;
  readonly ha: HaDiscovery | null = null;
  private client: MqttClient | null = null;
  /** The fleet queue's own connection (mqtt.shared_group), see startFleet. */
  private fleetClient: MqttClient | null = null;
  private subs: Subscriptions | null = null;
  /** Home Assistant's status topic apart: refused, requests still arrive (only discovery is not re-sent when HA restarts). */
  private haSubs: Subscriptions | null = null;
  private fleetSubs: Subscriptions | null = null;
  private subscribed: Promise<void> = Promise.resolve();
  private readonly outgoing = new Set<Outgoing>();
  private readonly poisoned = new Set<string>();
  /** A CONNACK arrived since the last close: only such a close can have been caused by a publish. */
  private sessionUp = false;
  connects = 0;
  /** Counters for health(): publishes refused by the broker (PUBACK ≥ 0x80), dropped after costing the connection, refused routes, poison redeliveries answered, retained requests replayed by the broker and dropped. */
  readonly stats = { publishes_refused: 0, publishes_dropped: 0, routes_refused: 0, poison_answered: 0, retained_dropped: 0 };

  constructor(private readonly o: MqttTransportOptions) {
    this.topics = new TopicPolicy({
      baseTopic: o.cfg.base_topic,
      nodeId: o.nodeId,
      replyPrefixes: o.cfg.reply_prefixes ?? defaultReplyPrefixes(o.cfg.base_topic),
    });
    this.base = this.topics.base;
    if (o.homeassistant?.enabled) {
      this.ha = new HaDiscovery(o.homeassistant, o.nodeId, this.base, o.info);
      const problem = topicProblem(this.ha.topic);
      if (problem) throw new Error(`homeassistant.prefix: "${this.ha.topic}" ${problem}`);
    }
  }

  get connected(): boolean {
    return this.client?.connected ?? false;
  }

  health(): ComponentHealth {
    const details = {
      base: this.base,
      connects: this.connects,
      ...this.stats,
      ...(this.fleetClient ? { fleet_connected: this.fleetClient.connected } : {}),
      ...(this.connected && this.haSubs?.problem ? { ha_status_subscription: this.haSubs.problem } : {}),
    };
    const reason = this.problems().join('; ');
    return reason ? { status: 'degraded', reason, ...details } : { status: 'ok', ...details };
  }

  /** What keeps requests from reaching this board, for health; a subscription counts only while its connection is up. */
  private problems(): string[] {
    const out: string[] = [];
    if (!this.connected) out.push('broker disconnected');
    else if (this.subs?.problem) out.push(this.subs.problem);
    if (this.fleetClient && !this.fleetClient.connected) out.push('fleet connection down');
    else if (this.fleetSubs?.problem) out.push(this.fleetSubs.problem);
    return out;
  }

  async start(): Promise<void> {
    const client = mqtt.connect(this.clientOptions());
    this.client = client;
    this.subs = new Subscriptions(client, [`${this.base}/request/+`], this.o.cfg.reconnect_ms, this.o.log);
    if (this.ha) this.haSubs = new Subscriptions(client, [this.ha.statusTopic], this.o.cfg.reconnect_ms, this.o.log, 'warn');
    // PUBACK before the request is handled: mqtt.js acknowledges an incoming QoS 1 message only
    // after handleMessage, and a rejected request's error reply was written before its PUBACK, so a
    // reply that cost the connection left the request unacknowledged and the broker redelivered it
    // from the persistent session on every reconnect and restart (issue 7).
    client.handleMessage = (packet, done) => {
      done();
      this.onMessage(packet);
    };
    client.on('connect', (connack) => this.onConnect(connack.sessionPresent));
    client.on('packetreceive', (p) => {
      if (p.cmd === 'connack') this.sessionUp = true;
    });
    client.on('close', () => this.onClose());
    client.on('reconnect', () => this.o.log.info('mqtt reconnecting'));
    client.on('offline', () => this.o.log.warn('mqtt offline'));
    client.on('error', (e) => this.o.log.error({ err: e }, 'mqtt error'));
    await this.firstConnect(client);
    // READY only once the broker has answered the subscriptions: no request it granted can slip
    // past. One it refused leaves the daemon up and degraded, retrying (subscriptions.ts says why).
    await this.subscribed;
    if (this.o.cfg.shared_group) await this.startFleet(this.o.cfg.shared_group);
  }

  /**
   * The fleet's shared subscription lives on a second connection with a clean, non-persistent
   * session (`<client_id>-fleet`). On the persistent main session, mosquitto (2.0) keeps handing
   * every Nth fleet request to a board that has died or stopped, where it waits unanswered until
   * the board comes back (measured: 67 of 300 requests retried, one lost after 5 sends, with one
   * of three boards SIGKILLed); a clean session leaves the group the moment its connection drops,
   * so the broker gives the queue to the live boards only. Requests a dead board was holding are
   * lost with it; the client library resends them (same transaction) to the fleet.
   */
  private async startFleet(group: string): Promise<void> {
    const { cfg } = this.o;
    const fleet = mqtt.connect({
      ...this.clientOptions(),
      clientId: `${cfg.client_id}-fleet`,
      clean: true,
      will: undefined,
      ...(cfg.protocol_version === 5 ? { properties: { sessionExpiryInterval: 0 } } : {}),
    });
    this.fleetClient = fleet;
    const topic = `$share/${group}/${this.topics.fleet}/request/+`;
    const subs = new Subscriptions(fleet, [topic], cfg.reconnect_ms, this.o.log);
    this.fleetSubs = subs;
    fleet.handleMessage = (packet, done) => {
      done();
      this.onMessage(packet);
    };
    let subscribed!: () => void;
    const ready = new Promise<void>((r) => (subscribed = r));
    fleet.on('connect', () => {
      (fleet.stream as { setNoDelay?: (v: boolean) => void }).setNoDelay?.(true);
      void subs.subscribe().then(subscribed);
    });
    fleet.on('error', (e) => this.o.log.error({ err: e }, 'mqtt fleet connection error'));
    const timeoutMs = this.o.connectTimeoutMs ?? 10_000;
    const timer = delay(timeoutMs).then(() => this.o.log.error(`mqtt: fleet connection not ready within ${timeoutMs} ms; retrying in the background`));
    await Promise.race([ready, timer]);
  }

  private clientOptions(): IClientOptions {
    const { cfg } = this.o;
    const opts: IClientOptions = {
      host: cfg.host,
      port: this.o.port,
      protocol: cfg.tls.enabled ? 'mqtts' : 'mqtt',
      protocolVersion: cfg.protocol_version,
      clientId: cfg.client_id,
      username: cfg.username,
      password: cfg.password,
      clean: false, // persistent session: QoS 1 requests queued while we were away are delivered
      // Subscriptions are made on every connect by Subscriptions, which reads the SUBACK; mqtt.js's
      // own resubscribe takes no callback, so a refusal there would go unseen.
      resubscribe: false,
      keepalive: cfg.keepalive_s,
      reconnectPeriod: cfg.reconnect_ms,
      connectTimeout: this.o.connectTimeoutMs ?? 10_000,
      will: { topic: this.topics.own('state'), payload: Buffer.from('{"state":"offline"}'), qos: 1, retain: true },
      ...(cfg.protocol_version === 5 ? { properties: { sessionExpiryInterval: cfg.session_expiry_s } } : {}),
    };
    return { ...opts, ...tlsClientOptions(configTls(cfg.tls)) };
  }

  /**
   * Start-up fails fast on the first error (TLS, credentials, refused connection): it is a
   * configuration or broker problem, and systemd's Restart= retries. After the first connect,
   * mqtt.js reconnects by itself.
   */
  private firstConnect(client: MqttClient): Promise<void> {
    const { cfg } = this.o;
    const timeoutMs = (this.o.connectTimeoutMs ?? 10_000) + 500;
    return new Promise<void>((resolve, reject) => {
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
      const timer = setTimeout(() => fail(new Error(`no CONNACK within ${timeoutMs - 500} ms`)), timeoutMs);
      client.once('connect', ok);
      client.once('error', fail);
    });
  }

  private onConnect(sessionPresent: boolean): void {
    const client = this.client!;
    this.connects++;
    // mqtt.js never sets TCP_NODELAY; with Nagle a QoS 1 round trip on loopback costs 44–88 ms.
    (client.stream as { setNoDelay?: (v: boolean) => void }).setNoDelay?.(true);
    // Fleet requests come on their own connection (startFleet); a persistent session from an older
    // bitad may still hold the shared subscription, which would keep queueing fleet work here.
    if (this.o.cfg.shared_group) client.unsubscribe(`$share/${this.o.cfg.shared_group}/${this.topics.fleet}/request/+`);
    this.subscribed = Promise.all([this.subs!.subscribe(), this.haSubs?.subscribe()]).then(() => undefined);
    this.publish('state', { state: 'online' }, true);
    this.publish('info', this.o.info(), true);
    this.publishDiscovery();
    this.o.log.info({ base: this.base, sessionPresent, connects: this.connects }, 'mqtt connected');
  }

  private onMessage(packet: IPublishPacket): void {
    const topic = packet.topic.toString();
    if (this.ha?.isStatus(topic)) {
      if (this.ha.wantsResend(packet.payload)) this.publishDiscovery();
      return;
    }
    const m = this.topics.requestPrefix(topic);
    if (!m) return;
    const props = packet.properties;
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    // We never ask for Retain As Published, so a broker clears RETAIN on a live delivery and on one
    // queued in our session while we were away (mosquitto and aedes do); set, it is a retained
    // message replayed because we subscribed, i.e. on every restart and reconnect.
    if (packet.retain) {
      this.dropRetained(m.prefix, m.kind, payload);
      return;
    }
    const origin = this.fingerprint(topic, payload, props?.responseTopic, props?.correlationData);
    if (this.poisoned.has(origin)) {
      this.answerPoison(m.prefix, payload, props?.correlationData, origin);
      return;
    }
    this.o.dispatcher.handle({
      transport: 'mqtt',
      kind: m.kind,
      payload,
      scope: 'mqtt',
      expiryMs: props?.messageExpiryInterval !== undefined ? props.messageExpiryInterval * 1000 : undefined,
      route: (r) => this.route(m.prefix, r, props?.responseTopic, props?.correlationData, origin),
    });
  }

  /** Named route (Response Topic, else reply_to) when TopicPolicy allows it, else the default reply topic. */
  private route(prefix: string, r: Routing, responseTopic: string | undefined, correlationData: Buffer | undefined, origin: string) {
    const fallback = this.topics.defaultReply(prefix, r.transaction);
    const named = responseTopic ?? r.replyTo;
    const problem = named === undefined ? null : this.topics.namedReplyProblem(named);
    if (named !== undefined && problem === null) {
      const routeKey = responseTopic !== undefined ? `rt:${responseTopic}:${correlationData?.toString('hex') ?? ''}` : `t:${named}`;
      return { channel: this.channel(named, correlationData, origin), routeKey };
    }
    const channel = this.channel(fallback, correlationData, origin);
    if (problem !== null || r.badTransaction) {
      this.stats.routes_refused++;
      this.o.log.warn({ transaction: r.transaction, route: named === undefined ? undefined : JSON.stringify(named), problem }, 'mqtt reply route refused');
    }
    if (problem === null) return { channel, routeKey: `t:${fallback}` };
    const field = responseTopic !== undefined ? 'Response Topic' : 'reply_to';
    return { channel, routeKey: `t:${fallback}`, refused: `${field} ${problem}` };
  }

  private channel(topic: string, correlationData: Buffer | undefined, origin: string): ReplyChannel {
    return {
      send: (reply: Reply) => {
        this.send(topic, JSON.stringify(reply), { qos: 1, ...(correlationData ? { properties: { correlationData } } : {}) }, origin);
      },
    };
  }

  /** Own topics: `<base>/state`, `info`, `telemetry`. */
  publish(sub: 'state' | 'info' | 'telemetry', body: unknown, retain = false): void {
    if (!this.client?.connected) return;
    this.send(this.topics.own(sub), JSON.stringify(body), { qos: 1, retain });
  }

  /** The retained Home Assistant device discovery payload (when enabled). */
  private publishDiscovery(): void {
    if (!this.ha || !this.client?.connected) return;
    this.ha.sent++;
    this.send(this.ha.topic, this.ha.payload(), { qos: 1, retain: true });
  }

  /** The one place the daemon publishes: the topic is checked, and the publish tracked until acknowledged. */
  private send(topic: string, payload: string, opts: IClientPublishOptions, origin?: string): void {
    const client = this.client;
    if (!client) return;
    const problem = topicProblem(topic);
    if (problem) {
      this.stats.routes_refused++;
      this.o.log.error({ topic: JSON.stringify(topic), problem }, 'refusing to publish to an invalid topic');
      return;
    }
    const entry: Outgoing = { topic, origin, closes: 0, cb: () => undefined };
    entry.cb = (err?: Error) => {
      this.outgoing.delete(entry);
      if (err) this.onPublishError(entry, err);
    };
    this.outgoing.add(entry);
    client.publish(topic, payload, opts, entry.cb);
    entry.messageId = this.messageIdOf(client, entry.cb);
  }

  private onPublishError(entry: Outgoing, err: Error): void {
    if (entry.dropped) return;
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'number' && code >= 0x80) {
      // MQTT 5: the broker refused this publish (e.g. 0x87 not authorized) and stays connected.
      this.stats.publishes_refused++;
      this.o.log.warn({ topic: entry.topic, reason_code: code, err }, 'broker refused a publish');
    } else {
      // mqtt.js fails publishes still queued behind its resend when the connection closes.
      this.stats.publishes_dropped++;
      this.o.log.warn({ topic: entry.topic, err }, 'publish dropped by the MQTT client');
    }
  }

  /** mqtt.js hands out no message id; find it by our callback while the packet is not yet resent. */
  private messageIdOf(client: MqttClient, cb: Outgoing['cb']): number | undefined {
    for (const [id, o] of Object.entries(client.outgoing)) if (o.cb === cb) return Number(id);
    return undefined;
  }

  /**
   * The oldest unacknowledged publish is the one the broker most likely refused by disconnecting;
   * after MAX_CLOSES_OUTSTANDING closes in a row it is dropped and its request remembered as
   * poison. A close without a CONNACK before it (broker unreachable) sent nothing and counts for
   * nothing. Removal waits a tick: mqtt.js tears down its resend stream in its own close handler.
   */
  private onClose(): void {
    const client = this.client;
    if (!client || !this.sessionUp) return;
    this.sessionUp = false;
    for (const e of this.outgoing) e.messageId ??= this.messageIdOf(client, e.cb);
    const oldest = this.outgoing.values().next().value as Outgoing | undefined;
    if (!oldest) return;
    oldest.closes++;
    if (oldest.closes < MAX_CLOSES_OUTSTANDING) return;
    setImmediate(() => this.drop(client, oldest));
  }

  private drop(client: MqttClient, entry: Outgoing): void {
    if (!this.outgoing.has(entry)) return;
    this.stats.publishes_dropped++;
    this.o.log.error({ topic: JSON.stringify(entry.topic), closes: entry.closes }, 'dropping a publish that was outstanding across repeated disconnects');
    if (entry.origin) this.rememberPoison(entry.origin);
    entry.dropped = true;
    this.outgoing.delete(entry);
    if (entry.messageId !== undefined) client.removeOutgoingMessage(entry.messageId);
  }

  private rememberPoison(origin: string): void {
    this.poisoned.add(origin);
    if (this.poisoned.size > POISON_MAX) this.poisoned.delete(this.poisoned.values().next().value as string);
  }

  /** A redelivered request whose reply cost the connection: an error on the safe default topic, not executed again. */
  private answerPoison(prefix: string, payload: Buffer, correlationData: Buffer | undefined, origin: string): void {
    this.stats.poison_answered++;
    const transaction = this.transactionOf(payload);
    const topic = this.topics.defaultReply(prefix, transaction);
    this.o.log.warn({ transaction, topic }, 'redelivered request whose reply cost the connection: answered, not executed');
    const reply = errorReply(transaction, 'bad_request', 'the broker refused the reply to this request (it cost the connection); it is not executed again');
    this.channel(topic, correlationData, origin).send(reply);
  }

  /**
   * A retained request replayed on subscribing is not executed, nor answered: it was answered when
   * it was first delivered, and a reply on every restart would be a second final reply to a
   * transaction whose client had one long ago.
   */
  private dropRetained(prefix: string, kind: string, payload: Buffer): void {
    this.stats.retained_dropped++;
    const transaction = this.transactionOf(payload);
    this.o.log.warn({ prefix, kind: shownKind(kind), transaction }, 'retained request replayed by the broker: not executed (clear it by publishing an empty retained message to its topic)');
  }

  /** The transaction of a payload the dispatcher would parse; null when over the limit or unreadable. */
  private transactionOf(payload: Buffer): string | null {
    const parsed = parsePayload(payload, this.o.maxPayloadBytes);
    return parsed.ok ? routingFields(parsed.body).transaction : null;
  }

  private fingerprint(topic: string, payload: Buffer, responseTopic?: string, correlationData?: Buffer): string {
    const h = createHash('sha1').update(topic).update('\0').update(payload).update('\0').update(responseTopic ?? '').update('\0');
    if (correlationData) h.update(correlationData);
    return h.digest('base64');
  }

  /**
   * Publishes the retained offline state (the Will covers crashes) and disconnects, within
   * STOP_FLUSH_MS: with the broker gone nothing pending can be delivered, so the client is ended
   * by force at once.
   */
  async stop(): Promise<void> {
    const client = this.client;
    if (!client) return;
    this.subs?.stop();
    this.haSubs?.stop();
    this.fleetSubs?.stop();
    // Leave the fleet queue first: while this board drains, new fleet requests go to the others.
    const fleet = this.fleetClient;
    this.fleetClient = null;
    if (fleet) await Promise.race([fleet.endAsync(true).catch(() => undefined), delay(STOP_FLUSH_MS)]);
    const deadline = Date.now() + STOP_FLUSH_MS;
    const bounded = (p: Promise<unknown>) => Promise.race([p.then(() => true, () => true), delay(Math.max(0, deadline - Date.now())).then(() => false)]);
    if (client.connected) {
      this.send(this.topics.own('state'), '{"state":"offline"}', { qos: 1, retain: true });
      await bounded(this.acknowledged());
    }
    this.client = null;
    if (this.outgoing.size > 0) {
      this.stats.publishes_dropped += this.outgoing.size;
      this.o.log.warn({ pending: this.outgoing.size, connected: client.connected }, 'stopping with unacknowledged publishes; they are dropped');
      for (const e of this.outgoing) e.dropped = true;
      this.outgoing.clear();
    }
    // A clean DISCONNECT when everything was acknowledged; else by force (the broker publishes the Will).
    // (end(false) waits for an empty outgoing store, so it is only used when that holds.)
    const clean = client.connected && Object.keys(client.outgoing).length === 0;
    await bounded(client.endAsync(!clean));
  }

  /** Resolves once every tracked publish has been acknowledged (or failed). */
  private async acknowledged(): Promise<void> {
    while (this.outgoing.size > 0) await delay(10);
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
