/** What BitadClient needs from a connection: send a request, hear every reply, learn when it is gone. */
import type { Reply, RequestKind } from '../daemon/protocol/envelope.js';

export type { Reply, RequestKind };

export interface SendOptions {
  /** MQTT: node or "fleet" (ignored on the socket). */
  node?: string;
  /** MQTT 5 Message Expiry Interval, seconds. */
  expiryS?: number;
}

export interface Transport {
  readonly name: 'mqtt' | 'socket';
  /**
   * True when losing the daemon closes the connection (the socket): silence then only means the
   * request is queued, so calls have no silence timeout by default. False over MQTT, where a dead
   * board is merely silent.
   */
  readonly reportsLoss: boolean;
  /** The bytes `send` would put on the wire for this request: what the daemon checks against its payload limit. */
  size(kind: RequestKind, body: Record<string, unknown>): number;
  /**
   * Sends one request. The same `body` must give the same bytes on every send: the daemon drops a
   * redelivery with identical bytes (and route) and refuses the same transaction with other bytes.
   */
  send(kind: RequestKind, body: Record<string, unknown>, o: SendOptions): void;
  /** Set by BitadClient: every reply received, whatever its transaction. */
  onReply: (reply: Reply) => void;
  /**
   * Set by BitadClient: the requests sent so far are lost (the socket closed, or reconnecting
   * failed). The socket reconnects on the next send; MQTT reconnects by itself and never calls it.
   */
  onClose: (reason: string) => void;
  close(): Promise<void>;
}
