/**
 * Raw NDJSON access to the daemon's Unix socket for `bitad status`, the tests and the benches: one
 * final reply per request, whatever it says. Applications use `bitad/client` (src/client), which
 * shares this connection code and adds streaming, deadlines, cancellation and retries.
 */
import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import { SocketTransport } from '../client/socket.js';
import type { ChunkReply, FinalReply, Reply } from '../daemon/protocol/envelope.js';

export class SocketClient {
  private readonly waiters = new Map<string, { onChunk?: (c: ChunkReply) => void; resolve: (r: FinalReply) => void }>();
  private closedError: Error | null = null;

  private constructor(private readonly transport: SocketTransport) {
    transport.onReply = (r) => this.dispatch(r);
    transport.onClose = () => {
      this.closedError = new Error('connection closed by bitad');
      for (const w of this.waiters.values()) w.resolve({ transaction: null, status: 'error', error: { code: 'internal', message: 'connection closed' } });
      this.waiters.clear();
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
    else {
      this.waiters.delete(r.transaction!);
      w.resolve(r);
    }
  }

  /** Sends one request (a `transaction` is added if missing) and resolves with its final reply. */
  request(type: string, body: Record<string, unknown>, onChunk?: (c: ChunkReply) => void): Promise<FinalReply> {
    if (this.closedError) return Promise.reject(this.closedError);
    const transaction = (body.transaction as string | undefined) ?? randomUUID();
    return new Promise((resolve) => {
      this.waiters.set(transaction, { onChunk, resolve });
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
