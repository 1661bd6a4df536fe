/** Latency percentiles over request rows (what `bitad stats` and telemetry print). */
import type { RequestRow } from './store.js';

/** Nearest-rank percentile of an ascending-sorted array; null when empty. */
export function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

export interface Dist {
  p50: number | null;
  p95: number | null;
  p99: number | null;
  n: number;
}

export function dist(values: (number | null)[]): Dist {
  const v = values.filter((x): x is number => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  return { p50: percentile(v, 50), p95: percentile(v, 95), p99: percentile(v, 99), n: v.length };
}

export interface Summary {
  requests: number;
  ok: number;
  errors: Record<string, number>;
  ttft_ms: Dist;
  tpot_ms: Dist;
  total_ms: Dist;
  queue_ms: Dist;
  tokens_per_s: Dist;
  mean_accepted_tokens: number | null;
}

/**
 * The counting rules of a Summary: requests, ok, errors by code, mean accepted tokens over the ok
 * rows that have it. One place for `summarize` (all rows at hand) and the telemetry window (rows
 * one at a time, percentiles from a sample of the ok ones).
 */
export class RowTally {
  private requests = 0;
  private ok = 0;
  private errors: Record<string, number> = {};
  private acceptedSum = 0;
  private acceptedN = 0;

  add(r: RequestRow): void {
    this.requests++;
    if (r.outcome !== 'ok') {
      const code = r.error_code ?? 'unknown';
      this.errors[code] = (this.errors[code] ?? 0) + 1;
      return;
    }
    this.ok++;
    if (r.mean_accepted_tokens !== null) {
      this.acceptedSum += r.mean_accepted_tokens;
      this.acceptedN++;
    }
  }

  /** These counts, with latency percentiles over `okRows` (every ok row, or a sample of them). */
  summary(okRows: readonly RequestRow[]): Summary {
    return {
      requests: this.requests,
      ok: this.ok,
      errors: this.errors,
      ttft_ms: dist(okRows.map((r) => r.ttft_ms)),
      tpot_ms: dist(okRows.map((r) => r.tpot_ms)),
      total_ms: dist(okRows.map((r) => r.total_ms)),
      queue_ms: dist(okRows.map((r) => r.queue_ms)),
      tokens_per_s: dist(okRows.map((r) => r.tokens_per_s)),
      mean_accepted_tokens: this.acceptedN ? this.acceptedSum / this.acceptedN : null,
    };
  }
}

export function summarize(rows: readonly RequestRow[]): Summary {
  const tally = new RowTally();
  for (const r of rows) tally.add(r);
  return tally.summary(rows.filter((r) => r.outcome === 'ok'));
}

/** "30m", "24h", "7d", "90s" or an ISO date → epoch ms. */
export function parseSince(s: string, now = Date.now()): number {
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$/.exec(s.trim());
  if (m) {
    const unit = { s: 1e3, m: 6e4, h: 36e5, d: 864e5, w: 6048e5 }[m[2] as 's' | 'm' | 'h' | 'd' | 'w'];
    return now - Number(m[1]) * unit;
  }
  const t = Date.parse(s);
  if (Number.isNaN(t)) throw new Error(`--since: expected a duration like 30m, 24h, 7d or an ISO date, got "${s}"`);
  return t;
}
