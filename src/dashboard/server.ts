/**
 * The dashboard's HTTP side (node:http, no framework): the static page (gzipped once at start;
 * uPlot served from node_modules, no CDN), JSON APIs, and Server-Sent Events: `/api/events` for the
 * fleet (a snapshot, then once a second the boards that changed; with `?node=` also that board's
 * newly reported requests), `/api/prompt/<txn>/events` for one prompt's answer.
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { TokenAuth, loopbackHost } from './auth.js';
import type { Fleet } from './fleet.js';
import { SERIES, type BoardRequest, type History, type SeriesName } from './history.js';
import { validNode, type FleetLink } from './link.js';
import type { PromptStreams, StreamEvent } from './prompts.js';

/** Chart ranges: span and bucket (about 180 points per series whatever the range). */
export const RANGES: Record<string, { spanMs: number; bucketMs: number }> = {
  '15m': { spanMs: 15 * 60_000, bucketMs: 5_000 },
  '6h': { spanMs: 6 * 3_600_000, bucketMs: 120_000 },
  '24h': { spanMs: 24 * 3_600_000, bucketMs: 480_000 },
};

const MAX_BODY = 64 * 1024;
/** An event-stream client that lets this much pile up unsent is cut off; it reconnects and gets a snapshot. */
const MAX_UNSENT = 1 << 20;
/** Board requests the board page gets at load (it adds the live ones). */
const BOARD_REQUESTS = 50;

interface Asset {
  type: string;
  body: Buffer;
  gzip: Buffer;
  cache: string;
}

export interface ServerDeps {
  fleet: Fleet;
  history: History;
  link: FleetLink;
  prompts: PromptStreams;
  baseTopic: string;
  token: string | null;
  staticDir: string;
  maxTokens: number;
}

/** Bytes of every page asset, raw and gzipped (the size budget the tests check). */
export function loadAssets(staticDir: string): Map<string, Asset> {
  const require = createRequire(import.meta.url);
  const uplotDir = join(require.resolve('uplot'), '..');
  const files: Array<[string, string, string, string]> = [
    ['/', join(staticDir, 'index.html'), 'text/html; charset=utf-8', 'no-cache'],
    ['/assets/app.js', join(staticDir, 'app.js'), 'text/javascript; charset=utf-8', 'no-cache'],
    ['/assets/app.css', join(staticDir, 'app.css'), 'text/css; charset=utf-8', 'no-cache'],
    ['/assets/uPlot.min.js', join(uplotDir, 'uPlot.iife.min.js'), 'text/javascript; charset=utf-8', 'max-age=86400'],
    ['/assets/uPlot.min.css', join(uplotDir, 'uPlot.min.css'), 'text/css; charset=utf-8', 'max-age=86400'],
  ];
  const assets = new Map<string, Asset>();
  for (const [path, file, type, cache] of files) {
    const body = readFileSync(file);
    assets.set(path, { type, body, gzip: gzipSync(body, { level: 9 }), cache });
  }
  return assets;
}

export class DashboardServer {
  private server: Server | null = null;
  private port = 0;
  private readonly auth: TokenAuth;
  private readonly assets: Map<string, Asset>;
  /** Event-stream clients, each with the board whose requests it follows (null: the fleet page). */
  private readonly clients = new Map<ServerResponse, string | null>();
  private readonly lastSent = new Map<string, string>();
  private tick: NodeJS.Timeout | null = null;
  private heartbeat = 0;

  constructor(private readonly deps: ServerDeps) {
    this.auth = new TokenAuth(deps.token);
    this.assets = loadAssets(deps.staticDir);
  }

  async listen(host: string, port: number): Promise<number> {
    const server = createServer((req, res) => this.handle(req, res));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    this.tick = setInterval(() => this.pushUpdates(), 1000);
    this.port = (server.address() as AddressInfo).port;
    return this.port;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://dashboard');
    res.setHeader('x-content-type-options', 'nosniff');
    res.setHeader('content-security-policy', "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'");
    res.setHeader('referrer-policy', 'no-referrer');
    // With a token a rebound page has none, so any Host may be served (proxies, LAN names).
    if (!this.auth.enabled && !loopbackHost(req.headers.host, this.port)) return misdirected(res, url);
    if (this.auth.check(req, res, url) !== 'ok') return;
    this.route(req, res, url).catch((e: unknown) => {
      if (!res.headersSent) json(res, 500, { error: 'internal', message: (e as Error).message });
      else res.end();
    });
  }

  private async route(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const p = url.pathname;
    const board = /^\/api\/board\/([^/]+)(\/[a-z]+)?$/.exec(p);
    if (req.method === 'GET' && (p === '/' || p.startsWith('/board/'))) return this.asset(req, res, '/');
    if (req.method === 'GET' && this.assets.has(p) && p !== '/') return this.asset(req, res, p);
    if (p === '/favicon.ico') return void res.writeHead(204).end();
    if (req.method === 'GET' && p === '/api/fleet') return json(res, 200, this.fleetSnapshot());
    if (req.method === 'GET' && p === '/api/history') return this.historyApi(res, url);
    if (req.method === 'GET' && p === '/api/events') return this.events(req, res, url.searchParams.get('node'));
    const promptEvents = /^\/api\/prompt\/([^/]+)\/events$/.exec(p);
    if (req.method === 'GET' && promptEvents) return this.promptEvents(req, res, decodeURIComponent(promptEvents[1]));
    if (board) {
      const node = decodeURIComponent(board[1]);
      if (!validNode(node) || !this.deps.fleet.get(node)) return json(res, 404, { error: 'not_found', message: `no board "${node}"` });
      if (req.method === 'GET' && !board[2]) return json(res, 200, this.boardDetail(node));
      if (req.method === 'GET' && board[2] === '/health') return this.healthApi(res, node);
      if (req.method === 'POST' && board[2] === '/generate') return this.generateApi(req, res, node);
    }
    json(res, 404, { error: 'not_found', message: `${req.method} ${p}` });
  }

  private asset(req: IncomingMessage, res: ServerResponse, path: string): void {
    const a = this.assets.get(path)!;
    const gz = /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
    res.writeHead(200, { 'content-type': a.type, 'cache-control': a.cache, vary: 'accept-encoding', ...(gz ? { 'content-encoding': 'gzip' } : {}) });
    res.end(gz ? a.gzip : a.body);
  }

  fleetSnapshot(): Record<string, unknown> {
    const boards = this.deps.fleet.views();
    return { ts: Date.now(), base_topic: this.deps.baseTopic, broker_connected: this.deps.link.connected, boards, totals: this.deps.fleet.totals(boards) };
  }

  private historyApi(res: ServerResponse, url: URL): void {
    const series = url.searchParams.get('series') ?? 'tokens_per_s';
    const range = RANGES[url.searchParams.get('range') ?? '15m'];
    const node = url.searchParams.get('node');
    if (!SERIES.includes(series as SeriesName) || !range) return json(res, 400, { error: 'bad_request', message: `series one of ${SERIES.join(', ')}; range one of ${Object.keys(RANGES).join(', ')}` });
    const data = this.deps.history.series(series as SeriesName, Date.now() - range.spanMs, range.bucketMs, node ? [node] : undefined);
    json(res, 200, { series, range: url.searchParams.get('range') ?? '15m', bucket_s: range.bucketMs / 1000, span_s: range.spanMs / 1000, ...data });
  }

  private boardDetail(node: string): Record<string, unknown> {
    const b = this.deps.fleet.get(node)!;
    return {
      board: this.deps.fleet.view(b),
      info: b.info,
      telemetry: b.telemetry,
      prompts: this.deps.history.prompts(node, 20),
      requests: this.deps.history.requests(node, BOARD_REQUESTS),
      windows: this.deps.history.recentPoints(node, 20),
      max_tokens: this.deps.maxTokens,
    };
  }

  /** A health request to the board over MQTT (its components and request counters), answered as JSON. */
  private healthApi(res: ServerResponse, node: string): void {
    this.deps.link.request(node, 'health', {}, (m) => json(res, 200, m), 5000);
  }

  private async generateApi(req: IncomingMessage, res: ServerResponse, node: string): Promise<void> {
    if (!sameOrigin(req)) return json(res, 403, { error: 'forbidden', message: 'cross-origin request' });
    const body = await readJson(req);
    const prompt = body?.prompt;
    const maxTokens = body?.max_tokens ?? 64;
    if (typeof prompt !== 'string' || prompt.length === 0 || prompt.length > 8000) return json(res, 400, { error: 'bad_request', message: 'prompt: a string of 1–8000 characters' });
    if (!Number.isInteger(maxTokens) || (maxTokens as number) < 1 || (maxTokens as number) > this.deps.maxTokens) return json(res, 400, { error: 'bad_request', message: `max_tokens: an integer 1–${this.deps.maxTokens}` });
    const txn = this.deps.prompts.start(node, prompt, maxTokens as number);
    json(res, 202, { transaction: txn, events: `/api/prompt/${encodeURIComponent(txn)}/events` });
  }

  private promptEvents(req: IncomingMessage, res: ServerResponse, txn: string): void {
    let unsubscribe: (() => void) | null = null;
    const send = (e: StreamEvent) => {
      res.write(`event: ${e.event}\ndata: ${JSON.stringify(e.data)}\n\n`);
      if (e.event === 'final') {
        unsubscribe?.();
        res.end();
      }
    };
    sseHead(res);
    unsubscribe = this.deps.prompts.subscribe(txn, send);
    if (!unsubscribe) {
      res.write(`event: final\ndata: ${JSON.stringify({ transaction: txn, status: 'error', error: { code: 'unknown', message: 'unknown transaction' } })}\n\n`);
      res.end();
      return;
    }
    req.on('close', () => unsubscribe?.());
  }

  private events(req: IncomingMessage, res: ServerResponse, node: string | null): void {
    sseHead(res);
    res.write(`event: snapshot\ndata: ${JSON.stringify(this.fleetSnapshot())}\n\n`);
    this.clients.set(res, node !== null && validNode(node) ? node : null);
    req.on('close', () => this.clients.delete(res));
  }

  /** Once a second: new board requests to the pages following those boards, then the fleet update. */
  private pushUpdates(): void {
    const fresh = this.deps.history.takeFreshRequests();
    if (this.clients.size === 0) return;
    this.pushRequests(fresh);
    this.pushFleet();
  }

  /** `requests` `{node, requests}` (oldest first) to each page that follows one of these boards. */
  private pushRequests(fresh: Map<string, BoardRequest[]>): void {
    if (fresh.size === 0) return;
    for (const [c, node] of this.clients) {
      const rows = node === null ? undefined : fresh.get(node);
      if (rows) this.send(c, `event: requests\ndata: ${JSON.stringify({ node, requests: rows })}\n\n`);
    }
  }

  /** The boards whose card changed (a status can change by time alone: stale), and the totals. */
  private pushFleet(): void {
    const views = this.deps.fleet.views();
    const changed = views.filter((v) => {
      // Every telemetry arrival is sent (last_seen moves: the page's live charts take a point),
      // but a stale board's "no telemetry for N s" counting up alone is not a change.
      const { status_reason: reason, ...rest } = v;
      const key = JSON.stringify(rest) + reason.replace(/\d+ s$/, '');
      if (this.lastSent.get(v.node) === key) return false;
      this.lastSent.set(v.node, key);
      return true;
    });
    const known = new Set(views.map((v) => v.node));
    const removed = [...this.lastSent.keys()].filter((n) => !known.has(n));
    for (const n of removed) this.lastSent.delete(n);
    this.heartbeat = (this.heartbeat + 1) % 15;
    if (changed.length === 0 && removed.length === 0 && this.heartbeat !== 0) return;
    const msg = `event: update\ndata: ${JSON.stringify({ ts: Date.now(), boards: changed, removed, totals: this.deps.fleet.totals(views), broker_connected: this.deps.link.connected })}\n\n`;
    for (const c of this.clients.keys()) this.send(c, msg);
  }

  private send(c: ServerResponse, msg: string): void {
    if (c.writableLength > MAX_UNSENT) {
      c.destroy();
      this.clients.delete(c);
    } else c.write(msg);
  }

  async close(): Promise<void> {
    if (this.tick) clearInterval(this.tick);
    for (const c of this.clients.keys()) c.end();
    this.clients.clear();
    const s = this.server;
    this.server = null;
    if (s) {
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
  }
}

function json(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return;
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

/** 421: the token-less dashboard answers only to a loopback Host (auth.ts loopbackHost: DNS rebinding). */
function misdirected(res: ServerResponse, url: URL): void {
  const message = 'without a dashboard token only http://localhost, 127.0.0.1 or [::1] with the listening port is served';
  if (url.pathname.startsWith('/api/')) return json(res, 421, { error: 'misdirected', message });
  res.writeHead(421, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`421: ${message}\n`);
}

function sseHead(res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
  res.write('retry: 2000\n\n');
}

/** A browser's POST carries Origin; one from another site (CSRF) is refused. Scripts without Origin pass. */
function sameOrigin(req: IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (!origin) return true;
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown> | null> {
  let size = 0;
  const parts: Buffer[] = [];
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) return null;
    parts.push(chunk as Buffer);
  }
  try {
    const v = JSON.parse(Buffer.concat(parts).toString('utf8')) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
