/**
 * Load probe on a slow timer: systeminformation's first currentLoad() takes ~0.5 s and it runs shell
 * commands, so it is never called per request (platform-notes). Jetson GPU load and Raspberry Pi
 * throttling come from sysfs, which systeminformation does not read, through the board sensor's
 * readers (sensing/: one place knows each board's layout).
 */
import { findThrottledFile, readThrottle } from '../sensing/thermal.js';
import { jetsonGpuLoadFiles, readJetsonGpu } from '../sensing/gpu.js';

export interface LoadSample {
  ts: number;
  cpu_load_pct: number | null;
  cpu_temp_c: number | null;
  gpu_load_pct: number | null;
  mem_used_mb: number | null;
  rss_mb: number;
  throttled: number | null;
}

// Found on first use, as the board sensor does: the layout does not change while the daemon runs.
let sysfs: { gpu: string[]; throttled: string | null } | null = null;

export async function sampleLoad(): Promise<LoadSample> {
  // Imported on first use (~11 MB of RSS), so a daemon with telemetry off never loads it.
  const si = (await import('systeminformation')).default;
  sysfs ??= { gpu: jetsonGpuLoadFiles('/'), throttled: findThrottledFile('/') };
  const [load, temp, mem] = await Promise.all([
    si.currentLoad().catch(() => null),
    si.cpuTemperature().catch(() => null),
    si.mem().catch(() => null),
  ]);
  const gpu = readJetsonGpu(sysfs.gpu);
  return {
    ts: Date.now(),
    cpu_load_pct: load ? round(load.currentLoad) : null,
    cpu_temp_c: temp && typeof temp.main === 'number' ? temp.main : null,
    gpu_load_pct: gpu === null ? null : round(gpu * 100),
    mem_used_mb: mem ? round((mem.total - mem.available) / 2 ** 20) : null,
    rss_mb: round(process.memoryUsage.rss() / 2 ** 20),
    throttled: readThrottle(sysfs.throttled)?.raw ?? null,
  };
}

export class LoadMonitor {
  latest: LoadSample | null = null;
  private timer: NodeJS.Timeout | null = null;
  private inFlight = false;

  constructor(
    private readonly periodMs: number,
    private readonly onSample: (s: LoadSample) => void = () => undefined,
  ) {}

  start(): void {
    const tick = () => {
      if (this.inFlight) return;
      this.inFlight = true;
      sampleLoad()
        .then((s) => {
          this.latest = s;
          this.onSample(s);
        })
        .catch(() => undefined)
        .finally(() => (this.inFlight = false));
    };
    tick(); // in the background: start-up does not wait for the first (slow) sample
    this.timer = setInterval(tick, this.periodMs).unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}
