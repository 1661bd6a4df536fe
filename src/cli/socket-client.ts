/**
 * Raw NDJSON access to the daemon's Unix socket for `bitad status`, the tests and the benches: one
 * final reply per request, whatever it says. Applications use `bitad/client` (src/client), which
 * shares this connection code and adds streaming, deadlines, cancellation and retries.
 */
import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import type { ClientErrorCode } from '../client/errors.js';
import { SocketTransport } from '../client/socket.js';
import type { ChunkReply, FinalReply, Reply } from '../daemon/protocol/envelope.js';

/**
 * The outcome when no final reply can come, in the final reply's shape but with the client
 * library's codes (the daemon's are its own: `internal` means a bug in bitad) and transaction
 * null, as no reply of the daemon's carried it.
 */
export interface ClientFailure {
  transaction: null;
  status: 'error';
  error: { code: Extract<ClientErrorCode, 'disconnected' | 'no_reply'>; message: string };
}

type Outcome = FinalReply | ClientFailure;

interface Waiter {
  onChunk?: (c: ChunkReply) => void;
  resolve: (r: Outcome) => void;
  timer?: NodeJS.Timeout;
}

export class SocketClient {
  private readonly waiters = new Map<string, Waiter>();
  private closedError: Error | null = null;

  private constructor(private readonly transport: SocketTransport) {
    transport.onReply = (r) => this.dispatch(r);
    transport.onClose = () => {
      this.closedError = new Error('connection closed by bitad');
      for (const [txn, w] of this.waiters) this.fail(txn, w, 'disconnected', 'the connection to bitad closed before the reply');
    };
  }

  /** The connection itself (tests read it raw). */
  get sock(): Socket {
    return this.transport.sock;
  }

  static async connect(path: string): Promise<SocketClient> {
    return new SocketClient(await SocketTransport.connect(path));
  }

  /** Unrouted replies (e.g. for unparseable lines) go to this handler. */
  onOther: (r: Reply) => void = () => undefined;

  private dispatch(r: Reply): void {
    const w = r.transaction !== null ? this.waiters.get(r.transaction) : undefined;
    if (!w) return this.onOther(r);
    if ('seq' in r) w.onChunk?.(r);
    else this.settle(r.transaction!, w, r);
  }

  private settle(transaction: string, w: Waiter, outcome: Outcome): void {
    clearTimeout(w.timer);
    this.waiters.delete(transaction);
    w.resolve(outcome);
  }

  private fail(transaction: string, w: Waiter, code: ClientFailure['error']['code'], message: string): void {
    this.settle(transaction, w, { transaction: null, status: 'error', error: { code, message } });
  }

  /**
   * Sends one request (a `transaction` is added if missing) and resolves with its final reply,
   * whatever it says, or a ClientFailure: `disconnected` when the connection closes first,
   * `no_reply` after `timeoutMs` without the final reply (default: no limit).
   */
  request(type: string, body: Record<string, unknown>, onChunk?: (c: ChunkReply) => void, timeoutMs?: number): Promise<Outcome> {
    if (this.closedError) return Promise.reject(this.closedError);
    const transaction = (body.transaction as string | undefined) ?? randomUUID();
    return new Promise((resolve) => {
      const w: Waiter = { onChunk, resolve };
      if (timeoutMs !== undefined) {
        w.timer = setTimeout(() => this.fail(transaction, w, 'no_reply', `no reply from bitad within ${timeoutMs} ms`), timeoutMs);
      }
      this.waiters.set(transaction, w);
      this.transport.writeRaw(JSON.stringify({ type, ...body, transaction }) + '\n');
    });
  }

  /** Writes a raw line (tests send malformed input with it). */
  writeRaw(line: string): void {
    this.transport.writeRaw(line);
  }

  close(): void {
    this.transport.sock.end();
  }
}
