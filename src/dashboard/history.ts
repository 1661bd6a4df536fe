/**
 * The dashboard's own SQLite file: the last known state/info/telemetry of every board (so a
 * restarted dashboard shows the fleet at once), a bounded time series of telemetry figures for the
 * charts, and the requests sent from the prompt box. Writes are batched: telemetry arrives from
 * hundreds of boards, and one transaction per second costs far less than one per message.
 */
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
`;

export class History {
  private readonly db: Database.Database;
  private pending: Point[] = [];
  /** Latest telemetry per board not yet written (one upsert per board per flush, not per message). */
  private pendingLatest = new Map<string, { telemetry: string; telemetry_ts: number }>();
  private readonly insertPoint: Database.Statement;
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

  saveState(node: string, state: string, ts: number): void {
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

  /** Writes the queued points in one transaction (called about once a second). */
  flush(): void {
    if (this.pending.length === 0 && this.pendingLatest.size === 0) return;
    const batch = this.pending;
    const latest = this.pendingLatest;
    this.pending = [];
    this.pendingLatest = new Map();
    this.db.transaction(() => {
      for (const p of batch) this.insertPoint.run(p);
      for (const [node, t] of latest) this.upsertBoard.telemetry.run({ node, ...t });
    })();
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

  /** Retention: points older than retentionMs, then the oldest beyond maxPoints; prompts with the same age rule. */
  prune(now = Date.now()): number {
    this.flush();
    const cutoff = now - this.opts.retentionMs;
    let removed = this.db.prepare('DELETE FROM points WHERE ts < ?').run(cutoff).changes;
    this.db.prepare('DELETE FROM prompts WHERE ts < ?').run(cutoff);
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
