/**
 * Periodic `<base>/telemetry` snapshot: latency percentiles of recent requests, queue, tree, load.
 * The JSON is shaped for Telegraf's json_v2 and Home Assistant templates (deploy/telegraf): a
 * numeric `ts` (epoch ms), nested objects rather than arrays, and a reading the board does not
 * have (no temperature sensor, no percentiles before the first request) left out rather than
 * null: Telegraf would otherwise drop or mistype the field, and a series that is sometimes a
 * number and sometimes null breaks InfluxDB's one-type-per-field rule.
 */
import { summarize } from '../store/stats.js';
import type { RequestRow } from '../store/store.js';
import type { LoadSample } from './load.js';
import { overallState, type Components } from '../health.js';

export interface TelemetrySources {
  recent: () => RequestRow[];
  queueDepth: () => number;
  busy: () => boolean;
  treeBudget: () => number;
  tree: () => Record<string, unknown> | null;
  load: () => LoadSample | null;
  uptimeS: () => number;
  components: () => Components;
}

/** Summary over the requests finished in the last `windowMs`, in its wire form (see telegrafFriendly). */
export function telemetrySnapshot(src: TelemetrySources, windowMs: number, now = Date.now()): Record<string, unknown> {
  return telegrafFriendly(rawSnapshot(src, windowMs, now)) as Record<string, unknown>;
}

function rawSnapshot(src: TelemetrySources, windowMs: number, now: number): Record<string, unknown> {
  const rows = src.recent().filter((r) => r.ts >= now - windowMs);
  const s = summarize(rows);
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
