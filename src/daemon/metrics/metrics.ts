/**
 * The daemon's Prometheus metrics (docs/daemon.md "Metrics"). Names follow vLLM / llama.cpp
 * (`bitad_` instead of `vllm:`) so their dashboards translate. Request metrics are fed from the one
 * place a finished request becomes a reply and a row (Dispatcher → `observe`), with the row's
 * measurements: the wire, `bitad stats` and /metrics count the same thing. Gauges read the daemon
 * when scraped, so an idle daemon costs nothing between scrapes.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { GenerateStats } from '../../engine/types.js';
import type { RequestRow } from '../store/store.js';

/** 1 ms – 60 s: a TinyStories TTFT on a desktop is a few ms, a long prompt on a Pi Zero seconds. */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60];
/** Per-token times are shorter: 0.5 ms (a desktop) – 2.5 s (a throttled board). */
export const TPOT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5];

/** What the gauges read at scrape time (the controller's live state). */
export interface MetricsSources {
  /** Requests the engine is generating now (0 or 1: one generation at a time). */
  running(): number;
  /** Requests waiting in the queue. */
  waiting(): number;
  /** Controller.treeStatus(): the tree sizing and the board readings it uses; null before the engine. */
  tree(): TreeStatusView | null;
  build(): { version: string; model: string; node: string };
}

/** The parts of Controller.treeStatus() the gauges use (percentages as it shows them). */
export interface TreeStatusView {
  policy?: unknown;
  active?: unknown;
  rows?: unknown;
  board?: { others_cpu_pct?: number | null; cpu_temp_c?: number | null; throttled?: boolean | null } | null;
}

/** The request's run, when it went through the queue (rejected requests have none). */
export interface RunInfo {
  stats?: GenerateStats;
}

export class DaemonMetrics {
  readonly registry = new Registry();
  private readonly ttft: Histogram;
  private readonly tpot: Histogram;
  private readonly e2e: Histogram;
  private readonly queueTime: Histogram;
  private readonly promptTokens: Counter;
  private readonly generationTokens: Counter;
  private readonly requests: Counter<'outcome' | 'code'>;
  private readonly drafts: Counter;
  private readonly draftTokens: Counter;
  private readonly acceptedTokens: Counter;
  private readonly acceptedPerPos: Counter<'position'>;

  constructor(sources: MetricsSources, opts: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    const seconds = (name: string, help: string, buckets: number[]) => new Histogram({ name, help, buckets, registers });
    this.ttft = seconds('bitad_time_to_first_token_seconds', 'Engine start to first token (the wire ttft_ms; queue time excluded, see bitad_request_queue_time_seconds).', LATENCY_BUCKETS);
    this.tpot = seconds('bitad_time_per_output_token_seconds', 'Mean time per output token after the first, one observation per request with >= 2 tokens (the wire tpot_ms).', TPOT_BUCKETS);
    this.e2e = seconds('bitad_e2e_request_latency_seconds', 'Receipt to final reply of every request that was queued (the wire total_ms); rejected requests are not observed.', LATENCY_BUCKETS);
    this.queueTime = seconds('bitad_request_queue_time_seconds', 'Receipt to engine start of every request that reached the engine (the wire queue_ms).', LATENCY_BUCKETS);
    this.promptTokens = new Counter({ name: 'bitad_prompt_tokens_total', help: 'Prompt tokens of requests the engine ran.', registers });
    this.generationTokens = new Counter({ name: 'bitad_generation_tokens_total', help: 'Output tokens of requests the engine ran (cancelled ones included).', registers });
    this.requests = new Counter({ name: 'bitad_requests_total', help: 'Requests with a request-log row (generation requests and rejections) by outcome (ok|error) and error code (none when ok).', labelNames: ['outcome', 'code'], registers });
    this.drafts = new Counter({ name: 'bitad_spec_decode_num_drafts_total', help: 'Tree steps (one draft tree verified per step); plain-mode requests excluded.', registers });
    this.draftTokens = new Counter({ name: 'bitad_spec_decode_num_draft_tokens_total', help: 'Draft rows fed to the model: rows per step minus the root row (BiTA mask rows included).', registers });
    this.acceptedTokens = new Counter({ name: 'bitad_spec_decode_num_accepted_tokens_total', help: 'Draft tokens accepted by verification (committed tokens minus the bonus token, per step).', registers });
    this.acceptedPerPos = new Counter({ name: 'bitad_spec_decode_num_accepted_tokens_per_pos', help: 'Accepted draft tokens by depth in the tree (position 1 = the first token after the root).', labelNames: ['position'], registers });
    this.gauges(sources);
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /**
   * One finished request, as its row records it. `run` is present when the request went through
   * the queue (it may still have failed); rejected requests only count in bitad_requests_total.
   */
  observe(row: RequestRow, run?: RunInfo): void {
    this.requests.inc({ outcome: row.outcome, code: row.error_code ?? 'none' });
    if (!run) return;
    if (row.total_ms !== null) this.e2e.observe(row.total_ms / 1000);
    if (row.queue_ms !== null) this.queueTime.observe(row.queue_ms / 1000);
    if (row.ttft_ms !== null) this.ttft.observe(row.ttft_ms / 1000);
    if (row.tpot_ms !== null) this.tpot.observe(row.tpot_ms / 1000);
    if (row.prompt_tokens !== null) this.promptTokens.inc(row.prompt_tokens);
    if (row.output_tokens !== null) this.generationTokens.inc(row.output_tokens);
    if (run.stats) this.observeSpeculation(run.stats);
  }

  /** Drafts, draft tokens and accepted tokens of one request's tree steps. */
  private observeSpeculation(s: GenerateStats): void {
    if (s.treePolicy === 'plain' || s.steps === 0) return;
    this.drafts.inc(s.steps);
    // meanRowsPerStep is rows/steps exactly, so the product gives back the integer total.
    this.draftTokens.inc(Math.max(0, Math.round(s.meanRowsPerStep * s.steps) - s.steps));
    const perPos = acceptedPerPosition(s.acceptedHistogram);
    let accepted = 0;
    perPos.forEach((n, i) => {
      if (i === 0 || n === 0) return;
      accepted += n;
      this.acceptedPerPos.inc({ position: String(i) }, n);
    });
    if (accepted > 0) this.acceptedTokens.inc(accepted);
  }

  /** Gauges that read the daemon when scraped. */
  private gauges(src: MetricsSources): void {
    const registers = [this.registry];
    const gauge = <L extends string>(name: string, help: string, read: (g: Gauge<L>) => void, labelNames: L[] = []) =>
      new Gauge<L>({ name, help, labelNames, registers, collect() { read(this); } });
    gauge('bitad_num_requests_running', 'Requests being generated now.', (g) => g.set(src.running()));
    gauge('bitad_num_requests_waiting', 'Requests waiting in the queue.', (g) => g.set(src.waiting()));
    gauge('bitad_tree_budget_rows', 'Rows per tree step the sizing uses now.', (g) => setOrNaN(g, num(src.tree()?.rows)));
    gauge('bitad_tree_policy_info', 'Configured tree policy and the one sizing trees now (value 1).', (g) => {
      g.reset();
      const t = src.tree();
      if (t) g.set({ policy: String(t.policy), active: String(t.active) }, 1);
    }, ['policy', 'active']);
    gauge('bitad_cpu_others_ratio', 'CPU share (0..1 of all cores) used by other processes, as the tree sizing sees it (NaN before the first reading).', (g) => {
      const pct = num(src.tree()?.board?.others_cpu_pct);
      setOrNaN(g, pct === null ? null : pct / 100);
    });
    gauge('bitad_cpu_temperature_celsius', 'CPU temperature (NaN when the board has no sensor).', (g) => setOrNaN(g, num(src.tree()?.board?.cpu_temp_c)));
    gauge('bitad_throttled', '1 while the board reports thermal or power throttling, 0 when not, NaN when it cannot tell.', (g) => {
      const th = src.tree()?.board?.throttled;
      setOrNaN(g, typeof th === 'boolean' ? Number(th) : null);
    });
    gauge('bitad_build_info', 'bitad version, served model and node (value 1).', (g) => {
      g.reset();
      g.set(src.build(), 1);
    }, ['version', 'model', 'node']);
  }
}

/**
 * index p = tree steps that accepted a draft at depth p. `histogram[n]` counts steps that committed
 * n tokens: the accepted path at depths 1..n−1 plus the bonus token, so such a step accepted
 * positions 1..n−1.
 */
export function acceptedPerPosition(histogram: readonly number[]): number[] {
  const out = new Array<number>(Math.max(0, histogram.length - 1)).fill(0);
  for (let n = 2; n < histogram.length; n++) for (let p = 1; p < n; p++) out[p] += histogram[n] ?? 0;
  return out;
}

function num(x: unknown): number | null {
  return typeof x === 'number' && Number.isFinite(x) ? x : null;
}

/**
 * A reading the board cannot give is NaN, not 0 (a 0 °C or "not throttled" would be a lie) and not
 * a missing series (Prometheus practice: series should not come and go).
 */
function setOrNaN(g: Gauge<string>, v: number | null): void {
  g.set(v ?? Number.NaN);
}
