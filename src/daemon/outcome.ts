/**
 * The one place that turns a finished request into what the client is told (`data.stats` of the
 * final reply) and what the request log keeps (a `requests` row): the same measurements, rounded
 * the same way, with the same null rules, so the wire and `bitad stats` never disagree.
 */
import type { GenerateResult, GenerateStats } from '../engine/types.js';
import type { FinalReply, OkReply } from './protocol/envelope.js';
import type { RequestRow } from './store/store.js';

/** What the scheduler measured for one request (all times in ms, unrounded). */
export interface Measured {
  /** Receipt → engine start; null when the request never reached the engine. */
  queueMs: number | null;
  /** Wall time of the engine call; null when it never ran. */
  engineMs: number | null;
  /** Receipt → final reply. */
  totalMs: number;
  /** Draft-tree row budget when the request ended; null when no engine was involved. */
  treeBudget: number | null;
  /** The engine's statistics; absent when generation failed or never ran. */
  stats?: GenerateStats;
}

/** The measurement fields shared by the wire and the row (snake_case, as on both). */
export type Measurements = Pick<
  RequestRow,
  | 'prompt_tokens' | 'output_tokens' | 'queue_ms' | 'ttft_ms' | 'tpot_ms' | 'engine_ms' | 'total_ms' | 'tokens_per_s'
  | 'mean_accepted_tokens' | 'tree_budget' | 'rows_per_step' | 'tree_policy' | 'finish_reason'
>;

/** The documented `data.stats` keys of an ok final reply (docs/daemon.md "Envelopes"). */
const WIRE_STATS = [
  'prompt_tokens', 'output_tokens', 'queue_ms', 'ttft_ms', 'tpot_ms', 'engine_ms', 'total_ms', 'tokens_per_s',
  'mean_accepted_tokens', 'tree_budget', 'rows_per_step', 'tree_policy',
] as const;
export type WireStats = Pick<Measurements, (typeof WIRE_STATS)[number]>;

/** Who asked, as the row records it. */
export interface RowIdentity {
  ts: number;
  transport: RequestRow['transport'];
  kind: string | null;
  txn: string | null;
  model: string;
}

/**
 * Rounding: 3 decimals (µs) for times and rates. Null rules: a time-to-first-token only exists
 * with ≥ 1 output token, a time-per-output-token (after the first) only with ≥ 2.
 */
export function measurements(m: Measured): Measurements {
  const s = m.stats;
  return {
    prompt_tokens: s?.promptTokens ?? null,
    output_tokens: s?.outputTokens ?? null,
    queue_ms: round(m.queueMs),
    ttft_ms: s && s.outputTokens > 0 ? round(s.ttftMs) : null,
    tpot_ms: s && s.outputTokens > 1 ? round(s.tpotMs) : null,
    engine_ms: round(m.engineMs),
    total_ms: round(m.totalMs),
    tokens_per_s: round(s?.tokensPerS ?? null),
    mean_accepted_tokens: round(s?.meanAcceptedTokens ?? null),
    tree_budget: m.treeBudget,
    rows_per_step: round(s?.meanRowsPerStep ?? null),
    tree_policy: s?.treePolicy ?? null,
    finish_reason: s?.finishReason ?? null,
  };
}

export function wireStats(m: Measurements): WireStats {
  return Object.fromEntries(WIRE_STATS.map((k) => [k, m[k]])) as WireStats;
}

/** The ok final reply: text, tokens, finish reason and the stats. */
export function okReply(transaction: string | null, result: Pick<GenerateResult, 'text' | 'tokens'>, m: Measurements): OkReply {
  return {
    transaction,
    status: 'ok',
    data: { text: result.text, tokens: result.tokens, finish_reason: m.finish_reason, stats: wireStats(m) },
  };
}

/** The request-log row for a request that ended with `reply`. */
export function requestRow(who: RowIdentity, reply: FinalReply, m: Measured): RequestRow {
  return {
    ...who,
    ...measurements(m),
    outcome: reply.status === 'ok' ? 'ok' : 'error',
    error_code: reply.status === 'ok' ? null : reply.error.code,
  };
}

function round(x: number | null): number | null {
  return x === null || !Number.isFinite(x) ? null : Math.round(x * 1000) / 1000;
}
