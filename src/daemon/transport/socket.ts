/**
 * Unix socket transport: newline-delimited JSON, one request per line with a `type` field
 * (generate | chat | cancel | health), replies as lines in the MQTT envelopes. The socket file is
 * created with mode 0660 (owner and group only). A client that disconnects cancels its requests.
 */
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import type { Dispatcher, ReplyChannel } from '../dispatcher.js';
import type { Reply } from '../protocol/envelope.js';

export interface SocketTransportOptions {
  path: string;
  dispatcher: Dispatcher;
  maxLineBytes: number;
  log: Logger;
}

/** Refuses to steal the socket of a running daemon; removes a stale file left by a crash. */
async function clearStale(path: string): Promise<void> {
  if (!existsSync(path)) return;
  const alive = await new Promise<boolean>((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (alive) throw new Error(`socket ${path} is in use by another process`);
  unlinkSync(path);
}

export class SocketTransport {
  private server: Server | null = null;
  private readonly clients = new Set<Socket>();
  private nextId = 0;

  constructor(private readonly o: SocketTransportOptions) {}

  async start(): Promise<void> {
    mkdirSync(dirname(this.o.path), { recursive: true });
    await clearStale(this.o.path);
    // allowHalfOpen: a client that closes its sending side (`printf … | nc -U`) still gets its
    // answers; we end the connection once its last request has been answered.
    const server = createServer({ allowHalfOpen: true }, (sock) => this.onConnection(sock));
    // umask during bind so the file never exists with wider permissions than 0660.
    const old = process.umask(0o117);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(this.o.path, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(old);
    }
    chmodSync(this.o.path, 0o660);
    this.server = server;
    this.o.log.info({ path: this.o.path }, 'socket listening');
  }

  private onConnection(sock: Socket): void {
    const scope = `socket:${++this.nextId}`;
    this.clients.add(sock);
    let buf = '';
    let discarding = false; // inside an over-long line: skip to its newline
    let clientDone = false; // the client half-closed: no more requests will come
    const endIfIdle = () => {
      if (clientDone && this.o.dispatcher.inFlight(scope) === 0 && !sock.destroyed) sock.end();
    };
    const channel: ReplyChannel = {
      send: (reply: Reply) => {
        if (!sock.destroyed && sock.writable) sock.write(JSON.stringify(reply) + '\n');
        if ('status' in reply) endIfIdle();
      },
    };
    const route = () => ({ channel, routeKey: scope });
    sock.setEncoding('utf8');
    sock.on('data', (data: string) => {
      buf += data;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (discarding) {
          discarding = false;
          continue;
        }
        if (line.trim() === '') continue;
        this.o.dispatcher.handle({ transport: 'socket', kind: null, payload: line, scope, route });
      }
      if (!discarding && Buffer.byteLength(buf) > this.o.maxLineBytes) {
        // Answer now rather than buffering an unbounded line; the rest of it is dropped.
        this.o.dispatcher.handle({ transport: 'socket', kind: null, payload: buf, scope, route });
        buf = '';
        discarding = true;
      } else if (discarding) {
        buf = '';
      }
    });
    sock.on('end', () => {
      clientDone = true;
      endIfIdle();
    });
    sock.on('error', () => undefined); // a reset is the same as a close for us
    sock.on('close', () => {
      this.clients.delete(sock);
      const n = this.o.dispatcher.cancelScope(scope, 'client disconnected');
      if (n > 0) this.o.log.info({ scope, cancelled: n }, 'socket client gone; its requests cancelled');
    });
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const c of this.clients) c.end();
    // end() lets pending replies flush; destroy stragglers that never close.
    const t = setTimeout(() => this.clients.forEach((c) => c.destroy()), 1000).unref();
    await closed;
    clearTimeout(t);
    if (existsSync(this.o.path)) unlinkSync(this.o.path);
  }
}
