/**
 * A scriptable stand-in for the daemon's Unix socket: records every line it reads, answers only
 * what the test tells it to (by default nothing), and can hang up or be restarted on the same path.
 * For the failure modes a real daemon shows only by accident (crash, hang, an oversize line).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface FakeSocketServer {
  path: string;
  /** Parsed request lines, in arrival order, over every connection. */
  lines: Record<string, unknown>[];
  /** Live connections. */
  conns: Set<Socket>;
  /** Called for each parsed line with its connection; default: say nothing. */
  onLine: (line: Record<string, unknown>, conn: Socket) => void;
  /** Destroys every connection (a daemon crash, as the client sees it). */
  dropAll(): void;
  /** Stops listening and drops connections; `start()` listens again on the same path (a restart). */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Waits until `n` lines arrived (or ms passed). */
  waitLines(n: number, ms?: number): Promise<boolean>;
  dispose(): Promise<void>;
}

export async function fakeSocketServer(): Promise<FakeSocketServer> {
  const dir = mkdtempSync(join(tmpdir(), 'bitad-fake-sock-'));
  let server: Server | null = null;
  const f: FakeSocketServer = {
    path: join(dir, 'bitad.sock'),
    lines: [],
    conns: new Set(),
    onLine: () => undefined,
    dropAll() {
      for (const c of f.conns) c.destroy();
      f.conns.clear();
    },
    async stop() {
      f.dropAll();
      const s = server;
      server = null;
      if (s) await new Promise<void>((r) => s.close(() => r()));
    },
    async start() {
      const s = createServer((conn) => accept(f, conn));
      await new Promise<void>((r) => s.listen(f.path, r));
      server = s;
    },
    async waitLines(n, ms = 3000) {
      const end = Date.now() + ms;
      while (f.lines.length < n && Date.now() < end) await sleep(10);
      return f.lines.length >= n;
    },
    async dispose() {
      await f.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await f.start();
  return f;
}

function accept(f: FakeSocketServer, conn: Socket): void {
  f.conns.add(conn);
  conn.on('close', () => f.conns.delete(conn));
  conn.on('error', () => undefined);
  let buf = '';
  conn.setEncoding('utf8');
  conn.on('data', (d: string) => {
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
      buf = buf.slice(nl + 1);
      f.lines.push(line);
      f.onLine(line, conn);
    }
  });
}

/** Writes one reply line. */
export function reply(conn: Socket, r: Record<string, unknown>): void {
  conn.write(JSON.stringify(r) + '\n');
}
