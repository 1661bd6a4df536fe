/**
 * The requests one telemetry message reports: every request that finished since the previous
 * message. Each finished request is recorded once, when its row is made, so it is counted in
 * exactly one window (the one in which it finished, however long it ran), errors and rejections
 * included. Counts and the mean accepted tokens are exact at any rate; the latency percentiles
 * come from a bounded uniform sample of the window's ok requests, so memory stays flat.
 */
import { RowTally, type Summary } from '../store/stats.js';
import type { RequestRow } from '../store/store.js';

/**
 * Ok requests kept per window for percentiles: the 1 000 rows the daemon used to keep in total
 * (≈ 0.6 KB each). Below it the percentiles are exact; above it a p95 from 1 000 samples lies
 * within the window's p94.3–p95.7 (one standard error, √(0.95 · 0.05 / 1000) ≈ 0.7 points).
 */
export const WINDOW_SAMPLE = 1000;

export class TelemetryWindow {
  private tally = new RowTally();
  /** Ok rows seen this window; the sample holds a uniform choice of at most `sampleSize` of them. */
  private okSeen = 0;
  private sample: RequestRow[] = [];

  /** `random` in [0, 1) picks the sample (injected so tests are deterministic). */
  constructor(
    private readonly sampleSize = WINDOW_SAMPLE,
    private readonly random: () => number = Math.random,
  ) {}

  record(row: RequestRow): void {
    this.tally.add(row);
    if (row.outcome === 'ok') this.keepSample(row);
  }

  /** The window's summary; the next window starts empty. */
  take(): Summary {
    const s = this.tally.summary(this.sample);
    this.tally = new RowTally();
    this.okSeen = 0;
    this.sample = [];
    return s;
  }

  /** Reservoir sampling (Vitter's algorithm R): every ok row of the window is equally likely to be kept. */
  private keepSample(row: RequestRow): void {
    this.okSeen++;
    if (this.sample.length < this.sampleSize) {
      this.sample.push(row);
      return;
    }
    const j = Math.floor(this.random() * this.okSeen);
    if (j < this.sampleSize) this.sample[j] = row;
  }
}
