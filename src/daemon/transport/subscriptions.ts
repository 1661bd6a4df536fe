/**
 * One MQTT connection's subscriptions, made on every connect and checked against the SUBACK. A
 * topic the broker refuses (an ACL, a broker without shared subscriptions) is named in `problem`,
 * which health reports (as `degraded` for request topics), and asked for again every `retryMs`
 * while connected.
 *
 * A refusal does not fail the start: on an unattended board a crash loop reloads the model every
 * few seconds and takes the Unix socket down with it, for a fault only the broker's operator can
 * fix; and an ACL fixed with a broker reload (mosquitto SIGHUP) drops no connection, so only a
 * retry on the same connection notices it. Health says what is wrong meanwhile.
 */
import type { ClientSubscribeCallback, ISubscriptionGrant, MqttClient } from 'mqtt';
import type { Logger } from 'pino';

/** The SUBACK as mqtt.js hands it to a subscribe callback (mqtt-packet's type, not a dependency of ours). */
type Suback = Parameters<ClientSubscribeCallback>[2];

/**
 * The topics a SUBACK refused (reason code ≥ 0x80: 0x80 in MQTT 3.1.1, e.g. 0x87 in MQTT 5), or
 * null when there was no SUBACK to read (the connection closed first). mqtt.js 5 reports a refusal
 * as an error carrying the SUBACK packet; older versions as a granted QoS of 128.
 */
export function refusedTopics(topics: readonly string[], granted: readonly ISubscriptionGrant[] | undefined, suback: Suback): string[] | null {
  const codes = (suback?.granted as number[] | undefined) ?? granted?.map((g) => g.qos);
  if (!codes || codes.length !== topics.length) return null;
  return topics.filter((_, i) => typeof codes[i] === 'number' && codes[i]! >= 0x80);
}

export class Subscriptions {
  private refused: string[] = [];
  private retry: NodeJS.Timeout | null = null;

  constructor(
    private readonly client: MqttClient,
    private readonly topics: readonly string[],
    private readonly retryMs: number,
    private readonly log: Logger,
    /** How loud a refusal is: 'error' where it keeps requests out, 'warn' where it only costs an extra. */
    private readonly level: 'error' | 'warn' = 'error',
  ) {}

  /** Why not every topic is subscribed, for health; null when all are. */
  get problem(): string | null {
    return this.refused.length ? `broker refused subscription to ${this.refused.join(', ')}` : null;
  }

  /** Subscribes (every topic, or the refused ones on a retry); resolves once the broker has answered. */
  subscribe(topics: readonly string[] = this.topics): Promise<void> {
    this.stop();
    return new Promise((resolve) =>
      this.client.subscribe([...topics], { qos: 1 }, (err, granted, suback) => {
        this.settle(topics, refusedTopics(topics, granted, suback), err);
        resolve();
      }),
    );
  }

  stop(): void {
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
  }

  private settle(asked: readonly string[], refused: string[] | null, err: Error | null): void {
    if (refused === null || (err && refused.length === 0)) {
      // No answer to read: the connection closed first. The next connect subscribes again.
      this.log.warn({ err, topics: asked }, 'mqtt subscribe not answered');
      return;
    }
    const before = this.problem;
    this.refused = [...this.refused.filter((t) => !asked.includes(t)), ...refused];
    const now = this.problem;
    // One line per change, not per retry: a refusal can last for days on an unattended board.
    if (now !== before) {
      if (now) this.log[this.level]({ err, refused: this.refused, retry_ms: this.retryMs }, `mqtt: ${now}; retrying`);
      else this.log.info({ topics: asked }, 'mqtt subscriptions granted');
    }
    if (this.refused.length) this.retry = setTimeout(() => this.retryRefused(), this.retryMs).unref();
  }

  private retryRefused(): void {
    this.retry = null;
    // While disconnected there is nothing to retry on; the connect subscribes everything again.
    if (this.client.connected) void this.subscribe(this.refused);
  }
}
