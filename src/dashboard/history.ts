/**
 * The dashboard's own SQLite file: the last known state/info/telemetry of every board (so a
 * restarted dashboard shows the fleet at once), a bounded time series of telemetry figures for the
 * charts, the requests sent from the prompt box, and every board's recent requests from its
 * telemetry (de-duplicated: each telemetry message repeats the last N). Writes are batched: telemetry arrives from
 * hundreds of boards, and one transaction per second costs far less than one per message.
 */
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';

/** Figures charted per board, as columns of `points` (null when the board did not report it). */
export const SERIES = ['tokens_per_s', 'ttft_ms_p95', 'tpot_ms_p95', 'mean_accepted', 'queue_depth', 'tree_rows', 'cpu_pct', 'temp_c', 'rss_mb', 'requests', 'errors'] as const;
export type SeriesName = (typeof SERIES)[number];
export type Point = { node: string; ts: number } & Record<SeriesName, number | null>;

export interface BoardRow {
  node: string;
  state: string | null;
  state_ts: number | null;
  info: unknown;
  telemetry: unknown;
  telemetry_ts: number | null;
}

export interface PromptRow {
  txn: string;
  node: string;
  ts: number;
  prompt: string;
  text: string;
  outcome: string | null;
  error: string | null;
  stats: unknown;
}

/**
 * One finished request as a board's telemetry lists it (`recent_requests`, docs/daemon.md "Recent
 * requests in telemetry"); null where the board left the reading out. `ts` is the board's clock.
 */
export interface BoardRequest {
  ts: number;
  transport: string | null;
  kind: string | null;
  outcome: string | null;
  error_code: string | null;
  output_tokens: number | null;
  ttft_ms: number | null;
  tokens_per_s: number | null;
  total_ms: number | null;
  tree_budget: number | null;
  tree_policy: string | null;
}

/** Kept per board beyond the age rule (the board page shows far fewer). */
export const MAX_REQUESTS_PER_BOARD = 200;
/** New requests waiting for the event stream are dropped beyond this (no page listening). */
const MAX_FRESH = 10_000;

export interface HistoryOptions {
  path: string;
  /** Points older than this are pruned (the longest chart range is 24 h). */
  retentionMs: number;
  /** Oldest points beyond this many are pruned, whatever their age. */
  maxPoints: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS boards (node TEXT PRIMARY KEY, state TEXT, state_ts INTEGER, info TEXT, telemetry TEXT, telemetry_ts INTEGER);
CREATE TABLE IF NOT EXISTS points (node TEXT NOT NULL, ts INTEGER NOT NULL, ${SERIES.map((s) => `${s} REAL`).join(', ')});
CREATE INDEX IF NOT EXISTS points_ts ON points (ts);
CREATE INDEX IF NOT EXISTS points_node_ts ON points (node, ts);
CREATE TABLE IF NOT EXISTS prompts (txn TEXT PRIMARY KEY, node TEXT NOT NULL, ts INTEGER NOT NULL, prompt TEXT NOT NULL, text TEXT NOT NULL, outcome TEXT, error TEXT, stats TEXT);
CREATE INDEX IF NOT EXISTS prompts_node_ts ON prompts (node, ts);
CREATE TABLE IF NOT EXISTS requests (node TEXT NOT NULL, key TEXT NOT NULL, ts INTEGER NOT NULL, received INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (node, key));
CREATE INDEX IF NOT EXISTS requests_node_ts ON requests (node, ts);
CREATE INDEX IF NOT EXISTS requests_received ON requests (received);
`;

export class History {
  private readonly db: Database.Database;
  private pending: Point[] = [];
  /** Latest telemetry per board not yet written (one upsert per board per flush, not per message). */
  private pendingLatest = new Map<string, { telemetry: string; telemetry_ts: number }>();
  private pendingRequests: Array<{ node: string; received: number; rows: BoardRequest[] }> = [];
  /** Requests stored since the event stream last took them, per board. */
  private fresh = new Map<string, BoardRequest[]>();
  private freshCount = 0;
  private readonly insertPoint: Database.Statement;
  private readonly insertRequest: Database.Statement;
  private readonly upsertBoard: { state: Database.Statement; info: Database.Statement; telemetry: Database.Statement };

  constructor(private readonly opts: HistoryOptions) {
    mkdirSync(dirname(opts.path), { recursive: true, mode: 0o750 });
    this.db = new Database(opts.path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(SCHEMA);
    this.insertPoint = this.db.prepare(`INSERT INTO points (node, ts, ${SERIES.join(', ')}) VALUES (@node, @ts, ${SERIES.map((s) => '@' + s).join(', ')})`);
    const upsert = (cols: string) =>
      this.db.prepare(`INSERT INTO boards (node, ${cols}) VALUES (@node, ${cols.split(', ').map((c) => '@' + c).join(', ')})
        ON CONFLICT(node) DO UPDATE SET ${cols.split(', ').map((c) => `${c} = excluded.${c}`).join(', ')}`);
    this.upsertBoard = { state: upsert('state, state_ts'), info: upsert('info'), telemetry: upsert('telemetry, telemetry_ts') };
    // The key is the whole row: the daemon sends no id (no transaction ids in telemetry), and two
    // different requests with the same receive ms, transport, kind, outcome and figures to the µs
    // are, for this table, the same row.
    this.insertRequest = this.db.prepare('INSERT OR IGNORE INTO requests (node, key, ts, received, data) VALUES (?, ?, ?, ?, ?)');
  }

  boards(): BoardRow[] {
    this.flush();
    const rows = this.db.prepare('SELECT * FROM boards ORDER BY node').all() as Array<Record<string, unknown>>;
    return rows.map((r) => ({
      node: r.node as string,
      state: r.state as string | null,
      state_ts: r.state_ts as number | null,
      info: parseJson(r.info),
      telemetry: parseJson(r.telemetry),
      telemetry_ts: r.telemetry_ts as number | null,
    }));
  }

  saveState(node: string, state: string, ts: number | null): void {
    this.upsertBoard.state.run({ node, state, state_ts: ts });
  }

  /** A decommissioned board (its retained state cleared): its last values go, its points age out. */
  forgetBoard(node: string): void {
    this.pendingLatest.delete(node);
    this.db.prepare('DELETE FROM boards WHERE node = ?').run(node);
  }

  saveInfo(node: string, info: unknown): void {
    this.upsertBoard.info.run({ node, info: JSON.stringify(info) });
  }

  /** The latest telemetry is kept per board; the chart figures are queued for the next flush. */
  saveTelemetry(node: string, telemetry: unknown, ts: number, point: Point): void {
    this.pendingLatest.set(node, { telemetry: JSON.stringify(telemetry), telemetry_ts: ts });
    this.pending.push(point);
  }

  /** A board's recent requests from one telemetry message, stored at the next flush unless known. */
  saveRequests(node: string, rows: BoardRequest[], received: number): void {
    if (rows.length > 0) this.pendingRequests.push({ node, received, rows });
  }

  /** Writes the queued points and requests in one transaction (called about once a second). */
  flush(): void {
    if (this.pending.length === 0 && this.pendingLatest.size === 0 && this.pendingRequests.length === 0) return;
    const batch = this.pending;
    const latest = this.pendingLatest;
    const requests = this.pendingRequests;
    this.pending = [];
    this.pendingLatest = new Map();
    this.pendingRequests = [];
    this.db.transaction(() => {
      for (const p of batch) this.insertPoint.run(p);
      for (const [node, t] of latest) this.upsertBoard.telemetry.run({ node, ...t });
      for (const r of requests) this.storeRequests(r.node, r.rows, r.received);
    })();
  }

  /** Oldest first, so the fresh list (and a page appending it) keeps the board's order. */
  private storeRequests(node: string, rows: BoardRequest[], received: number): void {
    for (const row of [...rows].sort((a, b) => a.ts - b.ts)) {
      const data = JSON.stringify(row);
      const key = createHash('sha1').update(data).digest('base64url');
      if (this.insertRequest.run(node, key, row.ts, received, data).changes === 0) continue;
      if (this.freshCount >= MAX_FRESH) continue;
      let list = this.fresh.get(node);
      if (!list) this.fresh.set(node, (list = []));
      list.push(row);
      this.freshCount++;
    }
  }

  /** The requests stored since the last call, per board, oldest first (the event stream sends them). */
  takeFreshRequests(): Map<string, BoardRequest[]> {
    this.flush();
    const f = this.fresh;
    this.fresh = new Map();
    this.freshCount = 0;
    return f;
  }

  /** A board's stored requests, newest first (by the board's clock). */
  requests(node: string, limit: number): BoardRequest[] {
    this.flush();
    const rows = this.db.prepare('SELECT data FROM requests WHERE node = ? ORDER BY ts DESC, rowid DESC LIMIT ?').all(node, limit) as Array<{ data: string }>;
    return rows.map((r) => parseJson(r.data) as BoardRequest);
  }

  /**
   * One chart's data: every board's mean of `series` per bucket of `bucketMs` since `since`, as
   * uPlot wants it (shared x in seconds, one y array per board, null where a board has no point).
   */
  series(series: SeriesName, since: number, bucketMs: number, nodes?: string[]): { xs: number[]; nodes: string[]; ys: Array<Array<number | null>> } {
    if (!SERIES.includes(series)) throw new Error(`unknown series ${series}`);
    this.flush();
    const rows = this.db
      .prepare(`SELECT node, CAST(ts / @bucket AS INTEGER) * @bucket AS b, avg(${series}) AS v FROM points WHERE ts >= @since GROUP BY node, b ORDER BY b`)
      .all({ bucket: bucketMs, since }) as Array<{ node: string; b: number; v: number | null }>;
    const wanted = nodes ? new Set(nodes) : null;
    const xsSet = new Map<number, number>();
    const byNode = new Map<string, Map<number, number | null>>();
    for (const r of rows) {
      if (wanted && !wanted.has(r.node)) continue;
      xsSet.set(r.b, 0);
      let m = byNode.get(r.node);
      if (!m) byNode.set(r.node, (m = new Map()));
      m.set(r.b, r.v === null ? null : Math.round(r.v * 1000) / 1000);
    }
    const bs = [...xsSet.keys()].sort((a, b) => a - b);
    const names = [...byNode.keys()].sort();
    return {
      xs: bs.map((b) => b / 1000),
      nodes: names,
      ys: names.map((n) => bs.map((b) => byNode.get(n)!.get(b) ?? null)),
    };
  }

  /** One board's most recent points, newest first (its "recent windows" table: requests, errors, latency). */
  recentPoints(node: string, limit: number): Point[] {
    this.flush();
    return this.db.prepare('SELECT * FROM points WHERE node = ? ORDER BY ts DESC LIMIT ?').all(node, limit) as Point[];
  }

  savePrompt(p: PromptRow): void {
    this.db
      .prepare(
        `INSERT INTO prompts (txn, node, ts, prompt, text, outcome, error, stats) VALUES (@txn, @node, @ts, @prompt, @text, @outcome, @error, @stats)
         ON CONFLICT(txn) DO UPDATE SET text = excluded.text, outcome = excluded.outcome, error = excluded.error, stats = excluded.stats`,
      )
      .run({ ...p, stats: p.stats === null || p.stats === undefined ? null : JSON.stringify(p.stats) });
  }

  prompts(node: string, limit: number): PromptRow[] {
    const rows = this.db.prepare('SELECT * FROM prompts WHERE node = ? ORDER BY ts DESC LIMIT ?').all(node, limit) as Array<Record<string, unknown>>;
    return rows.map((r) => ({ ...(r as unknown as PromptRow), stats: parseJson(r.stats) }));
  }

  /**
   * Retention: points older than retentionMs, then the oldest beyond maxPoints; prompts with the
   * same age rule; board requests by the age rule on their receive time (a board's clock may be
   * far off), then beyond MAX_REQUESTS_PER_BOARD per board. Returns the points removed.
   */
  prune(now = Date.now()): number {
    this.flush();
    const cutoff = now - this.opts.retentionMs;
    let removed = this.db.prepare('DELETE FROM points WHERE ts < ?').run(cutoff).changes;
    this.db.prepare('DELETE FROM prompts WHERE ts < ?').run(cutoff);
    this.db.prepare('DELETE FROM requests WHERE received < ?').run(cutoff);
    this.db
      .prepare(
        `DELETE FROM requests WHERE rowid IN (SELECT rowid FROM
           (SELECT rowid, row_number() OVER (PARTITION BY node ORDER BY ts DESC) AS n FROM requests) WHERE n > ?)`,
      )
      .run(MAX_REQUESTS_PER_BOARD);
    const count = (this.db.prepare('SELECT count(*) AS n FROM points').get() as { n: number }).n;
    if (count > this.opts.maxPoints) {
      removed += this.db
        .prepare('DELETE FROM points WHERE rowid IN (SELECT rowid FROM points ORDER BY ts LIMIT ?)')
        .run(count - this.opts.maxPoints).changes;
    }
    return removed;
  }

  pointCount(): number {
    this.flush();
    return (this.db.prepare('SELECT count(*) AS n FROM points').get() as { n: number }).n;
  }

  close(): void {
    this.flush();
    this.db.close();
  }
}

function parseJson(v: unknown): unknown {
  if (typeof v !== 'string') return null;
  try {
    return JSON.parse(v);
  } catch {
    return null;
  }
}
