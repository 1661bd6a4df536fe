/**
 * Periodic `<base>/telemetry` snapshot: counts and latency percentiles of the requests finished
 * since the previous message (window.ts), the last finished requests, queue, tree, load.
 * The JSON is shaped for Telegraf's json_v2 and Home Assistant templates (deploy/telegraf): a
 * numeric `ts` (epoch ms), nested objects rather than arrays, and a reading the board does not
 * have (no temperature sensor, no percentiles in a window without a finished request) left out
 * rather than null: Telegraf would otherwise drop or mistype the field, and a series that is
 * sometimes a number and sometimes null breaks InfluxDB's one-type-per-field rule.
 */
import type { Summary } from '../store/stats.js';
import type { RequestRow } from '../store/store.js';
import type { LoadSample } from './load.js';
import { overallState, type Components } from '../health.js';

export interface TelemetrySources {
  /** The last finished requests, oldest first (any number; the snapshot lists the last `recentRequests`). */
  recent: () => readonly RequestRow[];
  /** Ends the current window: its summary, and the next window starts empty (TelemetryWindow.take). */
  takeWindow: () => Summary;
  queueDepth: () => number;
  busy: () => boolean;
  treeBudget: () => number;
  tree: () => Record<string, unknown> | null;
  load: () => LoadSample | null;
  uptimeS: () => number;
  components: () => Components;
  /** How many of the last finished requests the snapshot lists (`telemetry.recent_requests`; 0 = none); absent: 10. */
  recentRequests?: number;
}

export const DEFAULT_RECENT_REQUESTS = 10;

/**
 * The fields of a request row that telemetry may carry. Telemetry is readable by every app user
 * under the ACL (deploy/mosquitto/bitad.acl), so this is an allow-list: never the prompt or the
 * answer (the row has neither), never the transaction id, which another client could use to
 * cancel or to recognise someone else's request, never anything added to the row later by default.
 */
const RECENT_FIELDS = ['ts', 'transport', 'kind', 'outcome', 'error_code', 'output_tokens', 'ttft_ms', 'tokens_per_s', 'total_ms', 'tree_budget', 'tree_policy'] as const;
export type RecentRequest = Pick<RequestRow, (typeof RECENT_FIELDS)[number]>;

/**
 * The last `n` finished requests, newest first, so index "0" is always the latest once
 * telegrafFriendly keys the array by index. Not limited to the window: a dashboard that missed a
 * snapshot still gets them from the next one (it de-duplicates).
 */
export function recentRequests(rows: readonly RequestRow[], n: number): RecentRequest[] {
  if (n <= 0) return [];
  return rows
    .slice(-n)
    .reverse()
    .map((r) => Object.fromEntries(RECENT_FIELDS.map((k) => [k, r[k]])) as RecentRequest);
}

/**
 * The telemetry message, in its wire form (see telegrafFriendly). It ends the request window
 * (`src.takeWindow`), so call it once per message; `windowMs` is the interval it reports as `window_s`.
 */
export function telemetrySnapshot(src: TelemetrySources, windowMs: number, now = Date.now()): Record<string, unknown> {
  return telegrafFriendly(rawSnapshot(src, windowMs, now)) as Record<string, unknown>;
}

function rawSnapshot(src: TelemetrySources, windowMs: number, now: number): Record<string, unknown> {
  const n = src.recentRequests ?? DEFAULT_RECENT_REQUESTS;
  const s = src.takeWindow();
  const components = src.components();
  return {
    ts: now,
    state: overallState(components).state,
    components,
    uptime_s: Math.round(src.uptimeS()),
    window_s: Math.round(windowMs / 1000),
    requests: s.requests,
    ok: s.ok,
    errors: s.errors,
    tokens_per_s_p50: s.tokens_per_s.p50,
    ttft_ms_p50: s.ttft_ms.p50,
    ttft_ms_p95: s.ttft_ms.p95,
    tpot_ms_p50: s.tpot_ms.p50,
    tpot_ms_p95: s.tpot_ms.p95,
    total_ms_p95: s.total_ms.p95,
    mean_accepted_tokens: s.mean_accepted_tokens,
    tree_budget: src.treeBudget(),
    tree: src.tree(),
    queue_depth: src.queueDepth(),
    busy: src.busy(),
    load: src.load(),
    // Absent when turned off; an empty object (no request yet) otherwise, so the key is stable.
    recent_requests: n > 0 ? recentRequests(src.recent(), n) : undefined,
  };
}

/**
 * `value` with null, undefined and non-finite numbers left out (at any depth) and arrays turned
 * into objects keyed by index ("0", "1", ...), so every leaf is a number, string or boolean.
 * Returns undefined for a value that is itself left out.
 */
export function telegrafFriendly(value: unknown): unknown {
  if (value === null || value === undefined) return undefined;
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  if (typeof value !== 'object') return typeof value === 'function' || typeof value === 'symbol' ? undefined : value;
  const out: Record<string, unknown> = {};
  const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v] as const) : Object.entries(value);
  for (const [k, v] of entries) {
    const clean = telegrafFriendly(v);
    if (clean !== undefined) out[k] = clean;
  }
  return out;
}

export class TelemetryPublisher {
  private timer: NodeJS.Timeout | null = null;
  constructor(
    private readonly periodMs: number,
    private readonly src: TelemetrySources,
    private readonly publish: (body: Record<string, unknown>) => void,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.publish(telemetrySnapshot(this.src, this.periodMs)), this.periodMs).unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
