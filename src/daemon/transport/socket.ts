/**
 * Unix socket transport: newline-delimited JSON, one request per line with a `type` field
 * (generate | chat | cancel | health), replies as lines in the MQTT envelopes. The socket file is
 * created with mode 0660 (owner and group only), and again if it is deleted while running. A
 * client that disconnects cancels its requests; one that does not read its replies is no longer
 * read from (backpressure) and loses chunk replies past CHUNK_DROP_BYTES; each connection may have
 * socket.max_in_flight generations in flight, and at most MAX_CLIENTS connections are open.
 * End of input ends the last line even without its newline. A connection whose last MAX_BAD_LINES
 * lines were all not requests is closed (see there).
 */
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { createPrivateDirs } from '../private-dirs.js';
import { socketListenFailure, socketPathState } from '../lifecycle/preflight.js';
import type { Dispatcher, ReplyChannel } from '../dispatcher.js';
import type { ComponentHealth } from '../health.js';
import { errorReply, type ErrorCode, type FinalReply, type Reply } from '../protocol/envelope.js';

export interface SocketTransportOptions {
  path: string;
  dispatcher: Dispatcher;
  maxLineBytes: number;
  /** socket.max_in_flight: generation requests per connection queued or running at once. */
  maxInFlight: number;
  log: Logger;
}

/** Refuses to steal the socket of a running daemon; removes a stale one (the rule: preflight.ts socketPathState). */
async function clearStale(path: string): Promise<void> {
  if ((await socketPathState(path)) === 'stale') unlinkSync(path);
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
 * Connections open at once; one more is answered `busy` (transaction null) and closed. Each holds
 * up to max_payload_bytes of a line it has not finished, so without a cap the connections alone
 * grew a daemon without bound: 2000 of them with 60 KB each took 167 MB (a client that opens a
 * connection per request and never closes them gets there by itself). With the cap it is at most
 * ≈ 256 × 64 KiB = 16 MiB by default; one generation runs at a time, so 256 is far beyond any
 * use that waits for its answers.
 */
export const MAX_CLIENTS = 256;

/**
 * How often the socket path is checked. A socket file deleted under a running daemon (`rm -rf var/`
 * to clear the log, a cleaner in /tmp) left it listening on a file no path names: every new
 * client got ENOENT ("is bitad running?") until a restart, while health said the socket was ok.
 * So a path found empty is bound again (within this time); one found holding another file is left
 * alone and health says the socket is down.
 */
const PATH_CHECK_MS = 1000;

/** Device and inode of what the path names (not following a link); null when nothing is there. */
function fileAt(path: string): { dev: number; ino: number } | null {
  const st = lstatSync(path, { throwIfNoEntry: false });
  return st ? { dev: st.dev, ino: st.ino } : null;
}

/**
 * A client that reached end of input with requests in flight is either half-closed (`nc`: still
 * reading) or gone: at EOF they look the same. A zero-byte write tells them apart on a Unix stream
 * socket (EPIPE once the peer has fully closed, 0 after a half-close; checked with strace), so
 * it runs at EOF and then this often until the last reply: a client that closes later is noticed
 * within this time and its jobs are cancelled, freeing their queue slots.
 */
const PROBE_MS = 200;

/**
 * Lines taken from one connection per event-loop turn, however many reads (data events) the turn
 * brings: the cut-off is known only once a turn's replies go out, so this bounds the lines answered
 * after the MAX_BAD_LINES-th (see yieldTurn).
 */
const LINES_PER_TURN = 32;

/**
 * Lines in a row (in the order sent) answered with one of NOT_REQUEST_CODES after which a
 * connection is closed. Each such line costs a request-log row: a client sending `x\n` in a loop
 * had 22 000 rows/s written. A peer that sends nothing else is not speaking this protocol (the
 * wrong program on the socket, a client stuck in a loop), so it is cut off rather than throttled:
 * a throttled one would still write rows for ever (10 lines/s is 864 000 rows a day: a day of real
 * history pushed out of a 1 000 000-row log). Any other line (a request that ran, was busy, a
 * health request) breaks the run, so a client that sends requests is not cut off; the fuzz test
 * sends at most 40 bad lines between health requests.
 */
const MAX_BAD_LINES = 100;
const NOT_REQUEST_CODES: ReadonlySet<ErrorCode> = new Set(['bad_json', 'payload_too_large', 'unknown_request', 'bad_request']);

/** What a connection needs from its transport: the dispatcher, limits and shared counters. */
interface ConnectionContext {
  o: SocketTransportOptions;
  clients: Set<Socket>;
  counters: Counters;
}

interface Counters {
  droppedChunks: number;
  pausedClients: number;
  cutOffClients: number;
  refusedClients: number;
}

/**
 * One client connection: splits lines (bounded), hands them to the dispatcher, writes replies with
 * backpressure, and notices when the client is gone (its jobs are then cancelled).
 */
class Connection {
  private buf = '';
  private discarding = false; // inside an over-long line: skip to its newline
  private clientDone = false; // end of input: no more requests will come
  private paused = false; // reading stopped until the client takes its replies
  private yielding = false; // LINES_PER_TURN taken: the rest waits for the next turn
  private turnLines = 0; // lines taken this event-loop turn
  private turnEnd: NodeJS.Immediate | null = null; // resets turnLines once this turn's replies are out
  private probe: NodeJS.Timeout | null = null;
  private lines = 0; // lines handed to the dispatcher
  private lastBadLine = -2; // number of the last line answered with a NOT_REQUEST_CODES code
  private badRun = 0; // lines in a row, up to lastBadLine, answered with a NOT_REQUEST_CODES code
  private cutOff = false; // MAX_BAD_LINES reached: nothing more is read; closed once answered
  /**
   * The dispatcher asks for the route inside handle(), so each line's channel knows its number:
   * replies do not come in line order (a health answer overtakes error replies waiting for their
   * row's commit), but bad lines in a row are still counted as sent.
   */
  private readonly route = () => {
    const line = this.lines;
    const channel: ReplyChannel = { send: (reply) => this.send(reply, line) };
    return { channel, routeKey: this.scope };
  };

  constructor(
    private readonly sock: Socket,
    private readonly scope: string,
    private readonly ctx: ConnectionContext,
  ) {
    ctx.clients.add(sock);
    sock.setEncoding('utf8');
    sock.on('data', (data: string) => {
      if (this.cutOff) return;
      this.buf += data;
      this.takeLines();
    });
    sock.on('end', () => this.onEnd());
    sock.on('error', () => undefined); // a reset is the same as a close for us
    sock.on('close', () => this.onClose());
  }

  private inFlight(): number {
    return this.ctx.o.dispatcher.inFlight(this.scope);
  }

  private send(reply: Reply, line: number): void {
    const { sock } = this;
    if (sock.destroyed || !sock.writable) return;
    const final = 'status' in reply;
    if (!final && sock.writableLength > CHUNK_DROP_BYTES) {
      this.ctx.counters.droppedChunks++;
      return;
    }
    if (!sock.write(JSON.stringify(reply) + '\n')) this.pauseReading();
    if (final) {
      this.countBadLine(reply, line);
      this.endIfIdle();
    }
  }

  /** Error replies that wait for their row's commit go out in line order, so a gap in the numbers is a line that was a request. */
  private countBadLine(reply: FinalReply, line: number): void {
    if (reply.status === 'ok' || !NOT_REQUEST_CODES.has(reply.error.code)) return;
    this.badRun = line === this.lastBadLine + 1 ? this.badRun + 1 : 1;
    this.lastBadLine = line;
    if (this.badRun === MAX_BAD_LINES) this.stopReading();
  }

  /** MAX_BAD_LINES: lines already taken are still answered; what the client sent after them is not read. */
  private stopReading(): void {
    this.cutOff = true;
    this.clientDone = true;
    this.buf = '';
    this.sock.pause();
    this.ctx.counters.cutOffClients++;
    this.ctx.o.log.warn({ scope: this.scope, lines: MAX_BAD_LINES }, 'socket client sent only lines that are not requests; connection closed');
  }

  private handle(payload: string): void {
    this.lines++;
    this.ctx.o.dispatcher.handle({ transport: 'socket', kind: null, payload, scope: this.scope, route: this.route, maxInFlight: this.ctx.o.maxInFlight });
    // Scheduled after the dispatcher, so the store commit it may have scheduled (which sends this
    // turn's replies and so a cut-off) runs first, before the next turn's lines are taken.
    this.turnEnd ??= setImmediate(() => this.endTurn());
  }

  /**
   * Lines are taken only while the client reads its replies: a client that never reads stops
   * being read at the write high-water mark, so it cannot make us queue replies without bound.
   */
  private takeLines(): void {
    let nl: number;
    while (!this.paused && !this.yielding && !this.cutOff && (nl = this.buf.indexOf('\n')) >= 0) {
      if (this.turnLines++ === LINES_PER_TURN) {
        this.yieldTurn();
        return;
      }
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      if (this.discarding) {
        this.discarding = false;
        continue;
      }
      if (line.trim() !== '') this.handle(line);
    }
    if (!this.buf.includes('\n')) this.boundLine();
  }

  /** Answers an over-long line now rather than buffering it without bound; the rest of it is dropped. */
  private boundLine(): void {
    if (!this.discarding && Buffer.byteLength(this.buf) > this.ctx.o.maxLineBytes) {
      this.handle(this.buf);
      this.buf = '';
      this.discarding = true;
    } else if (this.discarding) {
      this.buf = '';
    }
  }

  private pauseReading(): void {
    if (this.paused) return;
    this.paused = true;
    this.ctx.counters.pausedClients++;
    this.sock.pause();
    this.sock.once('drain', () => {
      this.paused = false;
      this.ctx.counters.pausedClients--;
      this.continueReading();
    });
  }

  private continueReading(): void {
    if (this.paused || this.yielding || this.sock.destroyed) return;
    if (!this.cutOff) {
      this.sock.resume();
      this.takeLines();
    }
    this.endIfIdle();
  }

  /**
   * Replies may be sent a turn later (the dispatcher answers once the store row is committed), so
   * write backpressure alone would not stop a burst of lines: take LINES_PER_TURN, then let their
   * replies go out (and pause us if the client is not reading) before taking more.
   */
  private yieldTurn(): void {
    this.yielding = true;
    this.sock.pause();
    this.turnEnd ??= setImmediate(() => this.endTurn());
  }

  private endTurn(): void {
    this.turnEnd = null;
    this.turnLines = 0;
    if (!this.yielding) return;
    this.yielding = false;
    this.continueReading();
  }

  private endIfIdle(): void {
    if (!this.clientDone || this.paused || this.yielding || this.buf.includes('\n') || this.inFlight() > 0 || this.sock.destroyed) return;
    if (this.probe) clearInterval(this.probe);
    // A client cut off may still be writing to a socket no longer read: close it once our replies are out.
    this.sock.end(this.cutOff ? () => this.sock.destroy() : undefined);
  }

  /** A full close shows as EPIPE on a zero-byte write; the 'error' and 'close' handlers cancel. */
  private checkStillThere(): void {
    if (!this.sock.destroyed) this.sock.write('', (err) => err && this.sock.destroy());
  }

  /**
   * End of input also ends the last line: bytes after the last newline are taken as a line (after
   * the lines before them, which may still wait for their turn), so `printf '{…}' | nc -U` is answered.
   */
  private onEnd(): void {
    this.clientDone = true;
    if (this.buf !== '' && !this.buf.endsWith('\n') && !this.cutOff) {
      this.buf += '\n';
      this.takeLines();
    }
    this.endIfIdle();
    if (this.sock.destroyed || this.sock.writableEnded) return;
    this.checkStillThere();
    this.probe = setInterval(() => this.checkStillThere(), PROBE_MS).unref();
  }

  private onClose(): void {
    if (this.probe) clearInterval(this.probe);
    if (this.paused) this.ctx.counters.pausedClients--;
    this.ctx.clients.delete(this.sock);
    const n = this.ctx.o.dispatcher.cancelScope(this.scope, 'client disconnected');
    if (n > 0) this.ctx.o.log.info({ scope: this.scope, cancelled: n }, 'socket client gone; its requests cancelled');
  }
}

export class SocketTransport {
  private server: Server | null = null;
  private readonly clients = new Set<Socket>();
  private nextId = 0;
  private readonly counters: Counters = { droppedChunks: 0, pausedClients: 0, cutOffClients: 0, refusedClients: 0 };
  private refusing = false; // at MAX_CLIENTS: the first refusal of a run is logged
  private bound: { dev: number; ino: number } | null = null; // the socket file the server made
  private watch: NodeJS.Timeout | null = null; // PATH_CHECK_MS
  private rebinding = false;
  private lost: string | null = null; // why nobody can connect at the path, while that holds

  constructor(private readonly o: SocketTransportOptions) {}

  async start(): Promise<void> {
    createPrivateDirs(dirname(this.o.path)); // 0750 like the store's: the socket's group may enter
    await clearStale(this.o.path);
    this.server = await this.listen();
    this.watch = setInterval(() => void this.checkPath(), PATH_CHECK_MS).unref();
    this.o.log.info({ path: this.o.path }, 'socket listening');
  }

  /** Binds a new listening socket at the path, mode 0660, and remembers which file it is. */
  private async listen(): Promise<Server> {
    // allowHalfOpen: a client that closes its sending side (`printf … | nc -U`) still gets its
    // answers; we end the connection once its last request has been answered.
    const server = createServer({ allowHalfOpen: true }, (sock) => this.accept(sock));
    // umask during bind so the file never exists with wider permissions than 0660.
    const old = process.umask(0o117);
    try {
      await new Promise<void>((resolve, reject) => {
        const failed = (e: Error) => reject(socketListenFailure(this.o.path, e));
        server.once('error', failed);
        server.listen(this.o.path, () => {
          server.off('error', failed);
          resolve();
        });
      });
    } finally {
      process.umask(old);
    }
    chmodSync(this.o.path, 0o660);
    this.bound = fileAt(this.o.path);
    return server;
  }

  /** What the socket path names now: the socket file the server made, nothing, or another file. */
  private pathState(): 'ours' | 'gone' | 'other' {
    const now = fileAt(this.o.path);
    if (!now) return 'gone';
    return now.dev === this.bound?.dev && now.ino === this.bound.ino ? 'ours' : 'other';
  }

  /** PATH_CHECK_MS: binds again when the socket file is gone; says so when another file took its place. */
  private async checkPath(): Promise<void> {
    const state = this.pathState();
    if (this.rebinding || !this.server || state === 'ours') return;
    if (state === 'other') {
      this.setLost(`${this.o.path} is no longer this daemon's socket and is not one; nobody can connect`);
      return;
    }
    this.rebinding = true;
    try {
      this.server.close(); // its file is gone; connections made through it are still served
      createPrivateDirs(dirname(this.o.path));
      this.server = await this.listen();
      this.lost = null;
      this.o.log.warn({ path: this.o.path }, 'socket file was deleted; listening at the path again');
    } catch (e) {
      this.setLost(`socket file deleted; listening at ${this.o.path} again failed (retried every ${PATH_CHECK_MS} ms): ${(e as Error).message}`);
    } finally {
      this.rebinding = false;
    }
  }

  /** Health says `down` with this reason; logged when it changes, not on every check. */
  private setLost(reason: string): void {
    if (reason !== this.lost) this.o.log.error({ path: this.o.path }, reason);
    this.lost = reason;
  }

  private accept(sock: Socket): void {
    if (this.clients.size >= MAX_CLIENTS) {
      this.refuse(sock);
      return;
    }
    this.refusing = false;
    new Connection(sock, `socket:${++this.nextId}`, { o: this.o, clients: this.clients, counters: this.counters });
  }

  /** One `busy` line, then closed (not left half-open: a peer that never closes would keep its file descriptor). */
  private refuse(sock: Socket): void {
    this.counters.refusedClients++;
    if (!this.refusing) this.o.log.warn({ clients: this.clients.size }, `socket connection refused: ${MAX_CLIENTS} connections open`);
    this.refusing = true;
    sock.on('error', () => undefined);
    const reply = errorReply(null, 'busy', `too many socket connections (${MAX_CLIENTS})`);
    sock.end(JSON.stringify(reply) + '\n', () => sock.destroy());
  }

  health(): ComponentHealth {
    if (!this.server) return { status: 'down', reason: 'not listening' };
    if (this.lost) return { status: 'down', reason: this.lost };
    let unsent = 0;
    for (const c of this.clients) unsent += c.writableLength;
    return { status: 'ok', clients: this.clients.size, clients_not_reading: this.counters.pausedClients, unsent_bytes: unsent, dropped_chunks: this.counters.droppedChunks, cut_off_clients: this.counters.cutOffClients, refused_clients: this.counters.refusedClients };
  }

  /**
   * Ends every connection (their pending replies flush; stragglers are destroyed after 1 s) and
   * closes the listening socket, which removes its file (libuv unlinks the path at close). So one
   * whose path now names another file is not closed, only unreferenced: that file is not ours.
   */
  async stop(): Promise<void> {
    if (this.watch) clearInterval(this.watch);
    const server = this.server;
    if (!server) return;
    this.server = null;
    const clientsGone = Promise.all([...this.clients].map((c) => new Promise((resolve) => c.once('close', resolve))));
    if (this.pathState() === 'other') server.unref();
    else server.close();
    for (const c of this.clients) c.end();
    const t = setTimeout(() => this.clients.forEach((c) => c.destroy()), 1000).unref();
    await clientsGone;
    clearTimeout(t);
  }
}
