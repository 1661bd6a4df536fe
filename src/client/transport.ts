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
   * Sends one request. The same `body` must give the same bytes on every send: the daemon drops a
   * redelivery with identical bytes (and route) and refuses the same transaction with other bytes.
   */
  send(kind: RequestKind, body: Record<string, unknown>, o: SendOptions): void;
  /** Set by BitadClient: every reply received, whatever its transaction. */
  onReply: (reply: Reply) => void;
  /** Set by BitadClient: the connection is gone for good (socket closed by the daemon). */
  onClose: (reason: string) => void;
  close(): Promise<void>;
}
