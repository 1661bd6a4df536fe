/**
 * The fleet as the dashboard knows it: per board the last retained `state` and `info` and the last
 * `telemetry`, and what the page shows of it. A board is offline when its state says so (a clean
 * stop or the Last Will the broker publishes for a dead one), stale when it claims to be online but
 * its telemetry stopped (a hung process, a partitioned network: the broker keeps its session and
 * no Will fires), degraded when its telemetry says a part of it is down or degraded, online
 * otherwise.
 */
import { overallState, type Components } from '../daemon/health.js';
import type { BoardRequest, BoardRow, History, Point } from './history.js';
import { cleanTelemetry } from './intake.js';

export type BoardStatus = 'online' | 'degraded' | 'offline' | 'stale';

export interface Board {
  node: string;
  state: string | null;
  /** Receive time of the last live `state` (a retained one handed out again is no sign of life). */
  stateTs: number | null;
  info: Record<string, any> | null; // eslint-disable-line @typescript-eslint/no-explicit-any
  telemetry: Record<string, any> | null; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** Receive time of the last telemetry (the dashboard's clock: boards without an RTC drift). */
  telemetryTs: number | null;
}

/** What a card shows: flat, rounded, null when the board did not report it. */
export interface BoardView {
  node: string;
  status: BoardStatus;
  status_reason: string;
  model: string | null;
  version: string | null;
  tokens_per_s: number | null;
  ttft_ms_p95: number | null;
  tpot_ms_p95: number | null;
  mean_accepted_tokens: number | null;
  tree_rows: number | null;
  tree_policy: string | null;
  tree_active: string | null;
  tree_reason: string | null;
  queue_depth: number | null;
  busy: boolean | null;
  cpu_pct: number | null;
  gpu_pct: number | null;
  temp_c: number | null;
  throttled: boolean | null;
  rss_mb: number | null;
  requests: number | null;
  errors: number | null;
  window_s: number | null;
  health: string | null;
  /** Fresh telemetry (online or degraded): its last window stands for now and counts in the totals. */
  reporting: boolean;
  /** Its tokens/s counts toward the fleet's: reporting, and an engine that is not down. */
  serving: boolean;
  last_seen: number | null;
}

export interface FleetTotals {
  boards: number;
  online: number;
  degraded: number;
  stale: number;
  offline: number;
  tokens_per_s: number;
  requests: number;
  errors: number;
  queue_depth: number;
}

export interface FleetOptions {
  /** Stale after this long without telemetry; default 3 telemetry intervals (window_s), 90 s before the first. */
  staleMs?: number;
  /** Reference time for boards never heard from since this process started. */
  startedAt?: number;
}

/** Boards whose telemetry is fresh: their last window stands for now (a stale board's is old news). */
const reporting = (s: BoardStatus): boolean => s === 'online' || s === 'degraded';
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);

export class Fleet {
  private readonly boards = new Map<string, Board>();
  /** Per board, the recent requests of its previous telemetry (each message repeats the last N). */
  private readonly seenRequests = new Map<string, Set<string>>();
  private readonly startedAt: number;

  constructor(
    private readonly history: History | null,
    private readonly opts: FleetOptions = {},
  ) {
    this.startedAt = opts.startedAt ?? Date.now();
    for (const row of history?.boards() ?? []) this.boards.set(row.node, fromRow(row));
  }

  nodes(): string[] {
    return [...this.boards.keys()].sort();
  }

  get(node: string): Board | undefined {
    return this.boards.get(node);
  }

  private board(node: string): Board {
    let b = this.boards.get(node);
    if (!b) this.boards.set(node, (b = { node, state: null, stateTs: null, info: null, telemetry: null, telemetryTs: null }));
    return b;
  }

  /**
   * A retained empty payload clears the topic (a decommissioned board): the board is forgotten.
   * A `retained` state is the broker's copy handed out on (re)subscribe, maybe hours old: its value
   * stands (the Will of a dead board is one) but it does not count as hearing from the board, or
   * every dashboard restart or reconnect would show a hung board online again.
   */
  onState(node: string, payload: Record<string, unknown> | null, now = Date.now(), retained = false): void {
    if (payload === null) return this.forget(node);
    const b = this.board(node);
    b.state = str(payload.state) ?? 'unknown';
    if (!retained) b.stateTs = now;
    this.history?.saveState(node, b.state, b.stateTs);
  }

  onInfo(node: string, payload: Record<string, unknown> | null): void {
    if (payload === null) return;
    this.board(node).info = payload;
    this.history?.saveInfo(node, payload);
  }

  /** The request list goes to its own table (not kept in the board's latest telemetry). */
  onTelemetry(node: string, payload: Record<string, unknown>, now = Date.now()): void {
    const { recent_requests: recent, ...rest } = payload;
    const telemetry = cleanTelemetry(rest);
    const b = this.board(node);
    b.telemetry = telemetry;
    b.telemetryTs = now;
    this.history?.saveTelemetry(node, telemetry, now, pointOf(node, telemetry, now));
    this.onRequests(node, boardRequests(recent), now);
  }

  /** Only the requests the previous message did not list go to the store (which de-duplicates again, across restarts). */
  private onRequests(node: string, rows: BoardRequest[], now: number): void {
    const keys = new Set(rows.map((r) => JSON.stringify(r)));
    const seen = this.seenRequests.get(node);
    this.seenRequests.set(node, keys);
    const fresh = seen ? rows.filter((r) => !seen.has(JSON.stringify(r))) : rows;
    this.history?.saveRequests(node, fresh, now);
  }

  private forget(node: string): void {
    this.boards.delete(node);
    this.seenRequests.delete(node);
    this.history?.forgetBoard(node);
  }

  status(b: Board, now = Date.now()): { status: BoardStatus; reason: string } {
    if (b.state === 'offline') return { status: 'offline', reason: 'state offline (stopped, or its Last Will)' };
    const windowS = num(b.telemetry?.window_s) ?? null;
    const staleMs = this.opts.staleMs ?? (windowS ? 3 * windowS * 1000 : 90_000);
    const heard = Math.max(b.telemetryTs ?? 0, b.stateTs ?? 0, b.telemetryTs === null ? this.startedAt : 0);
    if (now - heard > staleMs) return { status: 'stale', reason: `no telemetry for ${Math.round((now - heard) / 1000)} s` };
    if (b.state !== 'online') return { status: 'stale', reason: `state ${b.state ?? 'unknown'}` };
    const sick = degradedReason(b.telemetry);
    if (sick) return { status: 'degraded', reason: sick };
    return { status: 'online', reason: 'online' };
  }

  view(b: Board, now = Date.now()): BoardView {
    const t = b.telemetry ?? {};
    const load = (t.load ?? {}) as Record<string, unknown>;
    const tree = (t.tree ?? {}) as Record<string, unknown>;
    const sensed = (tree.board ?? {}) as Record<string, unknown>;
    const model = b.info?.model as Record<string, unknown> | null | undefined;
    const st = this.status(b, now);
    const throttled = num(load.throttled) !== null ? (num(load.throttled)! & 0xf) !== 0 : typeof sensed.throttled === 'boolean' ? sensed.throttled : null;
    return {
      node: b.node,
      status: st.status,
      status_reason: st.reason,
      model: str(model?.name),
      version: str(b.info?.version),
      tokens_per_s: num(t.tokens_per_s_p50),
      ttft_ms_p95: num(t.ttft_ms_p95),
      tpot_ms_p95: num(t.tpot_ms_p95),
      mean_accepted_tokens: num(t.mean_accepted_tokens),
      tree_rows: num(tree.rows) ?? num(t.tree_budget),
      tree_policy: str(tree.policy),
      tree_active: str(tree.active),
      tree_reason: str(tree.reason),
      queue_depth: num(t.queue_depth),
      busy: typeof t.busy === 'boolean' ? t.busy : null,
      cpu_pct: num(load.cpu_load_pct),
      gpu_pct: num(load.gpu_load_pct) ?? num(sensed.gpu_busy_pct),
      temp_c: num(load.cpu_temp_c) ?? num(sensed.cpu_temp_c),
      throttled,
      rss_mb: num(load.rss_mb),
      requests: num(t.requests),
      errors: errorCount(t.errors),
      window_s: num(t.window_s),
      health: str(t.state),
      reporting: reporting(st.status),
      serving: reporting(st.status) && (t.components as Components | undefined)?.engine?.status !== 'down',
      last_seen: b.telemetryTs ?? b.stateTs,
    };
  }

  views(now = Date.now()): BoardView[] {
    return this.nodes().map((n) => this.view(this.boards.get(n)!, now));
  }

  /**
   * Fleet totals over the latest telemetry windows of the boards `reporting` (online, degraded):
   * requests, errors and queue as they were, a dead engine's failures included; tokens/s only of
   * boards `serving`, since one whose engine is down serves none now, whatever its last window
   * measured.
   */
  totals(views: BoardView[]): FleetTotals {
    const t: FleetTotals = { boards: views.length, online: 0, degraded: 0, stale: 0, offline: 0, tokens_per_s: 0, requests: 0, errors: 0, queue_depth: 0 };
    for (const v of views) {
      t[v.status]++;
      if (!v.reporting) continue;
      if (v.serving) t.tokens_per_s += v.tokens_per_s ?? 0;
      t.requests += v.requests ?? 0;
      t.errors += v.errors ?? 0;
      t.queue_depth += v.queue_depth ?? 0;
    }
    t.tokens_per_s = Math.round(t.tokens_per_s * 10) / 10;
    return t;
  }
}

/**
 * Why a board that says online is degraded: the daemon's own rule (health.ts) over the parts it
 * reported, or its word alone when it names none; null when it is not.
 */
function degradedReason(t: Record<string, unknown> | null): string | null {
  const { reasons } = overallState((t?.components ?? {}) as Components);
  if (reasons.length > 0) return reasons.join('; ');
  return t?.state === 'degraded' ? 'state degraded' : null;
}

/** The charted figures of one telemetry message (see SERIES). */
export function pointOf(node: string, t: Record<string, any>, ts: number): Point { // eslint-disable-line @typescript-eslint/no-explicit-any
  const load = t.load ?? {};
  const sensed = t.tree?.board ?? {};
  return {
    node,
    ts,
    tokens_per_s: num(t.tokens_per_s_p50),
    ttft_ms_p95: num(t.ttft_ms_p95),
    tpot_ms_p95: num(t.tpot_ms_p95),
    mean_accepted: num(t.mean_accepted_tokens),
    queue_depth: num(t.queue_depth),
    tree_rows: num(t.tree?.rows) ?? num(t.tree_budget),
    cpu_pct: num(load.cpu_load_pct),
    temp_c: num(load.cpu_temp_c) ?? num(sensed.cpu_temp_c),
    rss_mb: num(load.rss_mb),
    requests: num(t.requests),
    errors: errorCount(t.errors),
  };
}

/** The daemon sends failed requests by error code (`{"busy": 2}`, `{}` for none); a plain number is taken as is. */
function errorCount(v: unknown): number | null {
  if (num(v) !== null) return num(v);
  if (!v || typeof v !== 'object' || Array.isArray(v)) return null;
  return Object.values(v).reduce<number>((sum, n) => sum + (num(n) ?? 0), 0);
}

const REQUEST_TEXT = ['transport', 'kind', 'outcome', 'error_code', 'tree_policy'] as const;
const REQUEST_NUM = ['output_tokens', 'ttft_ms', 'tokens_per_s', 'total_ms', 'tree_budget'] as const;

/**
 * A telemetry message's `recent_requests` (an object keyed "0", "1", … as the daemon sends it; an
 * array is taken too) as rows of known fields only, in one key order (the store's identity is the
 * row's JSON), strings capped: a board is trusted with figures, not with what the page stores.
 */
export function boardRequests(v: unknown): BoardRequest[] {
  if (!v || typeof v !== 'object') return [];
  const out: BoardRequest[] = [];
  for (const r of Object.values(v).slice(0, 100) as Array<Record<string, unknown> | null>) {
    if (!r || typeof r !== 'object' || num(r.ts) === null) continue;
    const row = { ts: Math.round(r.ts as number) } as Record<string, unknown>;
    for (const k of REQUEST_TEXT) row[k] = str(r[k])?.slice(0, 64) ?? null;
    for (const k of REQUEST_NUM) row[k] = num(r[k]);
    out.push(row as unknown as BoardRequest);
  }
  return out;
}

function fromRow(r: BoardRow): Board {
  return {
    node: r.node,
    state: r.state,
    stateTs: r.state_ts,
    info: (r.info as Record<string, unknown>) ?? null,
    telemetry: r.telemetry ? cleanTelemetry(r.telemetry as Record<string, unknown>) : null,
    telemetryTs: r.telemetry_ts,
  };
}
