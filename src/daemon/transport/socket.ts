/**
 * Unix socket transport: newline-delimited JSON, one request per line with a `type` field
 * (generate | chat | cancel | health), replies as lines in the MQTT envelopes. The socket file is
 * created with mode 0660 (owner and group only). A client that disconnects cancels its requests;
 * one that does not read its replies is no longer read from (backpressure) and loses chunk replies
 * past CHUNK_DROP_BYTES; each connection may have socket.max_in_flight generations in flight.
 */
import { chmodSync, existsSync, unlinkSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { createPrivateDirs } from '../private-dirs.js';
import type { Dispatcher, ReplyChannel } from '../dispatcher.js';
import type { ComponentHealth } from '../health.js';
import type { Reply } from '../protocol/envelope.js';

export interface SocketTransportOptions {
  path: string;
  dispatcher: Dispatcher;
  maxLineBytes: number;
  /** socket.max_in_flight: generation requests per connection queued or running at once. */
  maxInFlight: number;
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

/**
 * Unsent bytes on a connection above which its chunk replies are dropped (final replies, which
 * carry the whole text, are always queued). With reading paused at the write high-water mark and
 * at most socket.max_in_flight requests, what a client that never reads can make the daemon hold
 * is bounded by this, its final replies and one read (64 KiB of lines, answered busy when over the
 * in-flight limit): measured in test/daemon/socket-backpressure.test.ts.
 */
const CHUNK_DROP_BYTES = 256 * 1024;

/**
 * A client that reached end of input with requests in flight is either half-closed (`nc`: still
 * reading) or gone: at EOF they look the same. A zero-byte write tells them apart on a Unix stream
 * socket (EPIPE once the peer has fully closed, 0 after a half-close; checked with strace), so
 * it runs at EOF and then this often until the last reply: a client that closes later is noticed
 * within this time and its jobs are cancelled, freeing their queue slots.
 */
const PROBE_MS = 200;

/** Request lines taken from one connection per event-loop turn (see yieldTurn). */
const LINES_PER_TURN = 32;

export class SocketTransport {
  private server: Server | null = null;
  private readonly clients = new Set<Socket>();
  private nextId = 0;
  private droppedChunks = 0;
  private pausedClients = 0;

  constructor(private readonly o: SocketTransportOptions) {}

  async start(): Promise<void> {
    createPrivateDirs(dirname(this.o.path)); // 0750 like the store's: the socket's group may enter
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

  health(): ComponentHealth {
    if (!this.server) return { status: 'down', reason: 'not listening' };
    let unsent = 0;
    for (const c of this.clients) unsent += c.writableLength;
    return { status: 'ok', clients: this.clients.size, clients_not_reading: this.pausedClients, unsent_bytes: unsent, dropped_chunks: this.droppedChunks };
  }

  private onConnection(sock: Socket): void {
    const scope = `socket:${++this.nextId}`;
    this.clients.add(sock);
    const inFlight = () => this.o.dispatcher.inFlight(scope);
    let buf = '';
    let discarding = false; // inside an over-long line: skip to its newline
    let clientDone = false; // end of input: no more requests will come
    let paused = false; // reading stopped until the client takes its replies
    let yielding = false; // LINES_PER_TURN taken: the rest waits for the next turn
    let probe: NodeJS.Timeout | null = null;

    const endIfIdle = () => {
      if (!clientDone || paused || yielding || buf.includes('\n') || inFlight() > 0 || sock.destroyed) return;
      if (probe) clearInterval(probe);
      sock.end();
    };
    // A full close shows as EPIPE on a zero-byte write; the 'error' and 'close' handlers cancel.
    const checkStillThere = () => {
      if (!sock.destroyed) sock.write('', (err) => err && sock.destroy());
    };
    const pauseReading = () => {
      if (paused) return;
      paused = true;
      this.pausedClients++;
      sock.pause();
      sock.once('drain', () => {
        paused = false;
        this.pausedClients--;
        continueReading();
      });
    };
    const continueReading = () => {
      if (paused || yielding || sock.destroyed) return;
      sock.resume();
      takeLines();
      endIfIdle();
    };
    // Replies may be sent a turn later (the dispatcher answers once the store row is committed),
    // so write backpressure alone would not stop a burst of lines: take LINES_PER_TURN, then let
    // their replies go out (and pause us if the client is not reading) before taking more.
    const yieldTurn = () => {
      yielding = true;
      sock.pause();
      setImmediate(() => {
        yielding = false;
        continueReading();
      });
    };
    const channel: ReplyChannel = {
      send: (reply: Reply) => {
        if (sock.destroyed || !sock.writable) return;
        const final = 'status' in reply;
        if (!final && sock.writableLength > CHUNK_DROP_BYTES) {
          this.droppedChunks++;
          return;
        }
        if (!sock.write(JSON.stringify(reply) + '\n')) pauseReading();
        if (final) endIfIdle();
      },
    };
    const route = () => ({ channel, routeKey: scope });
    const handle = (payload: string) =>
      this.o.dispatcher.handle({ transport: 'socket', kind: null, payload, scope, route, maxInFlight: this.o.maxInFlight });
    // Lines are taken only while the client reads its replies: a client that never reads stops
    // being read at the write high-water mark, so it cannot make us queue replies without bound.
    const takeLines = () => {
      let nl: number;
      let taken = 0;
      while (!paused && !yielding && (nl = buf.indexOf('\n')) >= 0) {
        if (taken++ === LINES_PER_TURN) {
          yieldTurn();
          return;
        }
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (discarding) {
          discarding = false;
          continue;
        }
        if (line.trim() !== '') handle(line);
      }
      if (buf.includes('\n')) return;
      if (!discarding && Buffer.byteLength(buf) > this.o.maxLineBytes) {
        // Answer now rather than buffering an unbounded line; the rest of it is dropped.
        handle(buf);
        buf = '';
        discarding = true;
      } else if (discarding) {
        buf = '';
      }
    };
    sock.setEncoding('utf8');
    sock.on('data', (data: string) => {
      buf += data;
      takeLines();
    });
    sock.on('end', () => {
      clientDone = true;
      endIfIdle();
      if (sock.destroyed || sock.writableEnded) return;
      checkStillThere();
      probe = setInterval(checkStillThere, PROBE_MS).unref();
    });
    sock.on('error', () => undefined); // a reset is the same as a close for us
    sock.on('close', () => {
      if (probe) clearInterval(probe);
      if (paused) this.pausedClients--;
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
