/** Minimal NDJSON client for the daemon's Unix socket (used by `bitad ask` and `bitad status`). */
import { randomUUID } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import type { ChunkReply, FinalReply, Reply } from '../daemon/protocol/envelope.js';

export class SocketClient {
  private buf = '';
  private readonly waiters = new Map<string, { onChunk?: (c: ChunkReply) => void; resolve: (r: FinalReply) => void }>();
  private closedError: Error | null = null;

  private constructor(readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        if (line) this.dispatch(JSON.parse(line) as Reply);
      }
    });
    sock.on('close', () => {
      this.closedError = new Error('connection closed by bitad');
      for (const w of this.waiters.values()) w.resolve({ transaction: null, status: 'error', error: { code: 'internal', message: 'connection closed' } });
      this.waiters.clear();
    });
    sock.on('error', () => undefined);
  }

  static connect(path: string): Promise<SocketClient> {
    return new Promise((resolve, reject) => {
      const s = connect(path);
      s.once('connect', () => resolve(new SocketClient(s)));
      s.once('error', (e) => reject(new Error(`cannot connect to ${path}: ${(e as Error).message} (is bitad running?)`)));
    });
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
      this.sock.write(JSON.stringify({ type, ...body, transaction }) + '\n');
    });
  }

  /** Writes a raw line (tests send malformed input with it). */
  writeRaw(line: string): void {
    this.sock.write(line);
  }

  close(): void {
    this.sock.end();
  }
}
