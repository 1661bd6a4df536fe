/**
 * GPU busy share: the Jetson (Tegra) load file in sysfs, or NVIDIA utilisation from one
 * long-lived `nvidia-smi` child. nvidia-smi takes tens to hundreds of ms to start, so it is never
 * run per sample: it prints on its own timer (-lms) and the sensor keeps the last values.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter } from 'node:path';
import { clamp01, parseInteger, readText, under } from './files.js';

const JETSON_LOAD = ['/sys/devices/gpu.0/load', '/sys/devices/platform/gpu.0/load']; // per mille

export function readJetsonGpu(root: string): number | null {
  for (const p of JETSON_LOAD) {
    const perMille = parseInteger(readText(under(root, p)));
    if (perMille !== null && perMille >= 0) return clamp01(perMille / 1000);
  }
  return null;
}

/** First executable `name` on `pathList` (PATH syntax), each directory resolved under `root`. */
export function findOnPath(name: string, root: string, pathList = process.env.PATH ?? ''): string | null {
  for (const dir of pathList.split(delimiter)) {
    if (!dir) continue;
    const candidate = under(root, `${dir}/${name}`);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return null;
}

export interface NvidiaSmiOptions {
  /** nvidia-smi's own print period. */
  intervalMs?: number;
  /** Values older than this are null: a child that hangs must not report a frozen GPU load. */
  staleMs?: number;
}

/**
 * One `nvidia-smi --query-gpu=index,utilization.gpu … -lms N` child. The index column lets
 * lines be matched to GPUs whatever way the output is chunked; the reading is the busiest GPU.
 */
export class NvidiaSmiWatcher {
  private readonly child: ChildProcess | null;
  private readonly byGpu = new Map<string, number>(); // GPU index → busy share 0..1
  private lastLineAt = 0;
  private partial = '';
  private alive = true;
  private readonly staleMs: number;

  constructor(bin: string, opts: NvidiaSmiOptions = {}) {
    const intervalMs = opts.intervalMs ?? 500;
    this.staleMs = opts.staleMs ?? Math.max(3000, 6 * intervalMs);
    this.child = this.launch(bin, intervalMs);
  }

  /** Busy share 0..1 of the busiest GPU; null before the first line, after exit, or when stale. */
  get busy(): number | null {
    if (!this.alive || this.byGpu.size === 0 || Date.now() - this.lastLineAt > this.staleMs) return null;
    return Math.max(...this.byGpu.values());
  }

  stop(): void {
    this.markDead();
    const c = this.child;
    if (c && c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  }

  private launch(bin: string, intervalMs: number): ChildProcess | null {
    const args = ['--query-gpu=index,utilization.gpu', '--format=csv,noheader,nounits', '-lms', String(intervalMs)];
    let child: ChildProcess;
    try {
      child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'ignore'] });
    } catch {
      this.markDead(); // e.g. an empty path: rejected before anything runs
      return null;
    }
    child.on('error', () => this.markDead()); // absent or not executable
    child.on('exit', () => this.markDead());
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => this.onData(chunk));
    // The sensor must never keep the daemon or a benchmark alive on its own.
    child.unref();
    (child.stdout as unknown as { unref?: () => void } | null)?.unref?.();
    return child;
  }

  private markDead(): void {
    this.alive = false;
    this.byGpu.clear();
  }

  private onData(chunk: string): void {
    const lines = (this.partial + chunk).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) this.onLine(line);
  }

  /** `0, 37`: a GPU index and its utilisation in %. `[N/A]` and anything else is skipped. */
  private onLine(line: string): void {
    const m = /^\s*(\d+)\s*,\s*(\d+(?:\.\d+)?)\s*$/.exec(line);
    if (!m) return;
    this.byGpu.set(m[1], clamp01(Number(m[2]) / 100));
    this.lastLineAt = Date.now();
  }
}
