/**
 * LoadFeed: samples the board on a timer and hands every sample to a callback. The daemon uses it
 * to feed the engine's tree sizing; benchmarks use it to record the load they ran under.
 */
import { BoardSensor, type BoardSample, type BoardSensorOptions } from './sensor.js';

export interface LoadFeedOptions {
  /** Sampling period; 250 ms follows load changes within a few decoding steps at < 1 ms each. */
  intervalMs?: number;
  /** A sensor to sample; by default the feed builds one from `sensorOptions` and stops it on stop(). */
  sensor?: BoardSensor;
  sensorOptions?: BoardSensorOptions;
  onSample?: (s: BoardSample) => void;
}

export class LoadFeed {
  latest: BoardSample | null = null;
  readonly intervalMs: number;
  private readonly sensor: BoardSensor;
  private readonly ownsSensor: boolean;
  private readonly onSample: (s: BoardSample) => void;
  private timer: NodeJS.Timeout | null = null;

  constructor(opts: LoadFeedOptions = {}) {
    this.intervalMs = opts.intervalMs ?? 250;
    this.ownsSensor = opts.sensor === undefined;
    this.sensor = opts.sensor ?? new BoardSensor(opts.sensorOptions);
    this.onSample = opts.onSample ?? (() => undefined);
  }

  /** Takes a first sample at once (it primes the CPU counters; its shares are null), then ticks. */
  start(): void {
    if (this.timer) return;
    this.tick();
    // unref: a feed alone never keeps the process alive.
    this.timer = setInterval(() => this.tick(), this.intervalMs).unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.ownsSensor) this.sensor.stop();
  }

  private tick(): void {
    this.latest = this.sensor.sample();
    this.onSample(this.latest);
  }
}
