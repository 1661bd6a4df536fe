/**
 * The daemon's Unix socket: newline-delimited JSON, one request per line with a `type` field,
 * replies matched by `transaction` (docs/daemon.md "Unix socket"). Closing the connection cancels
 * every request the daemon still holds for it. After the daemon closes it (a restart), the next
 * send connects again.
 */
import { connect, type Socket } from 'node:net';
import type { Reply, RequestKind, SendOptions, Transport } from './transport.js';

export class SocketTransport implements Transport {
  readonly name = 'socket';
  readonly reportsLoss = true;
  onReply: (reply: Reply) => void = () => undefined;
  onClose: (reason: string) => void = () => undefined;
  private buf = '';
  private current: Socket;
  private live = true;
  private closing = false;
  /** Lines sent while reconnecting, written once the new connection is up. */
  private pending: string[] = [];
  private reconnecting: Promise<void> | null = null;

  private constructor(
    private readonly path: string,
    private readonly timeoutMs: number,
    sock: Socket,
  ) {
    this.current = sock;
    this.attach(sock);
  }

  /** The current connection (tests read it raw). */
  get sock(): Socket {
    return this.current;
  }

  static async connect(path: string, timeoutMs = 5000): Promise<SocketTransport> {
    return new SocketTransport(path, timeoutMs, await dial(path, timeoutMs));
  }

  private attach(sock: Socket): void {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
    sock.on('close', () => {
      if (sock !== this.current) return;
      this.live = false;
      this.buf = '';
      this.onClose('connection closed by bitad');
    });
    sock.on('error', () => undefined); // 'close' follows and reports it
  }

  /**
   * A new connection for the requests sent after the old one closed (the daemon restarted): a
   * long-lived client outlives its daemon, as over MQTT. If bitad is not back, they fail at once.
   */
  private reconnect(): void {
    if (this.reconnecting) return;
    this.reconnecting = dial(this.path, this.timeoutMs)
      .then(
        (sock) => {
          if (this.closing) return void sock.destroy();
          this.current = sock;
          this.live = true;
          this.attach(sock);
          for (const line of this.pending.splice(0)) sock.write(line);
        },
        (e: Error) => {
          this.pending = [];
          this.onClose(e.message);
        },
      )
      .finally(() => (this.reconnecting = null));
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
    if (this.closing) return;
    const line = requestLine(kind, body) + '\n';
    if (this.live) return void this.current.write(line);
    this.pending.push(line);
    this.reconnect();
  }

  size(kind: RequestKind, body: Record<string, unknown>): number {
    return Buffer.byteLength(requestLine(kind, body));
  }

  /** Writes a raw line on the current connection (tests send malformed input with it); never reconnects. */
  writeRaw(line: string): void {
    if (this.live) this.current.write(line);
  }

  /**
   * Half-closes: the daemon answers what it still holds (BitadClient sends cancels first) and then
   * ends the connection; after 1 s the socket is destroyed, which cancels whatever is left.
   */
  async close(): Promise<void> {
    this.closing = true;
    this.pending = [];
    await this.reconnecting;
    if (!this.live) return;
    const sock = this.current;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => sock.destroy(), 1000);
      sock.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      sock.end();
    });
  }
}

/** One request line as the daemon reads it (without the newline, which its limit does not count). */
function requestLine(kind: RequestKind, body: Record<string, unknown>): string {
  return JSON.stringify({ type: kind, ...body });
}

function dial(path: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`cannot connect to ${path}: no answer within ${timeoutMs} ms (is bitad running?)`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot connect to ${path}: ${e.message} (is bitad running?)`));
    });
  });
}
