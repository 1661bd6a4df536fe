/**
 * The daemon's Unix socket: newline-delimited JSON, one request per line with a `type` field,
 * replies matched by `transaction` (docs/daemon.md "Unix socket"). Closing the connection cancels
 * every request the daemon still holds for it.
 */
import { connect, type Socket } from 'node:net';
import type { Reply, RequestKind, SendOptions, Transport } from './transport.js';

export class SocketTransport implements Transport {
  readonly name = 'socket';
  onReply: (reply: Reply) => void = () => undefined;
  onClose: (reason: string) => void = () => undefined;
  private buf = '';
  private closed = false;

  private constructor(readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
    sock.on('close', () => {
      this.closed = true;
      this.onClose('connection closed by bitad');
    });
    sock.on('error', () => undefined); // 'close' follows and reports it
  }

  static connect(path: string, timeoutMs = 5000): Promise<SocketTransport> {
    return new Promise((resolve, reject) => {
      const s = connect(path);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error(`cannot connect to ${path}: no answer within ${timeoutMs} ms (is bitad running?)`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(new SocketTransport(s));
      });
      s.once('error', (e) => {
        clearTimeout(timer);
        reject(new Error(`cannot connect to ${path}: ${e.message} (is bitad running?)`));
      });
    });
  }

  private onData(d: string): void {
    this.buf += d;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      let reply: Reply;
      try {
        reply = JSON.parse(line) as Reply;
      } catch {
        continue; // the daemon writes JSON lines only; a torn line is not ours to answer
      }
      this.onReply(reply);
    }
  }

  send(kind: RequestKind, body: Record<string, unknown>, _o: SendOptions): void {
    if (this.closed) return; // the calls are failed through onClose
    this.sock.write(JSON.stringify({ type: kind, ...body }) + '\n');
  }

  /** Writes a raw line (tests send malformed input with it). */
  writeRaw(line: string): void {
    this.sock.write(line);
  }

  /**
   * Half-closes: the daemon answers what it still holds (BitadClient sends cancels first) and then
   * ends the connection; after 1 s the socket is destroyed, which cancels whatever is left.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.sock.destroy(), 1000);
      this.sock.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      this.sock.end();
    });
  }
}
