/**
 * GPU busy share: the Jetson (Tegra) load file in sysfs, or NVIDIA utilisation from one
 * long-lived `nvidia-smi` child. nvidia-smi takes tens to hundreds of ms to start, so it is never
 * run per sample: it prints on its own timer (-lms) and the sensor keeps the last values.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter } from 'node:path';
import { clamp01, listDir, parseInteger, readText, under } from './files.js';

/**
 * The nvgpu `gpu.0` links to the GPU device: /sys/devices/gpu.0 (Nano, Xavier) and
 * /sys/devices/platform/gpu.0 (Xavier, Orin). Load is in per mille.
 */
const JETSON_LOAD = ['/sys/devices/gpu.0/load', '/sys/devices/platform/gpu.0/load'];
const DEVFREQ_DIR = '/sys/class/devfreq';
/**
 * Device-tree node names of Jetson integrated GPUs, as jetson-stats (jtop/core/gpu.py) matches
 * them: `gpu` (Nano's gm20b, Orin on JetPack 6), `gp10b` (TX2), `gv11b` (Xavier), `ga10b` (Orin
 * on JetPack 5).
 */
const JETSON_GPU_NODES = new Set(['gpu', 'gp10b', 'gv11b', 'ga10b']);

/**
 * The GPU load files to try, found once. First every devfreq device whose device-tree node is a
 * Jetson GPU (`/sys/class/devfreq/<dev>/device/load`, the route that works on every JetPack,
 * e.g. /sys/devices/platform/bus@0/17000000.gpu on Orin with JetPack 6), then the `gpu.0` links.
 * The links stay in the list even when absent now, so a GPU driver that comes up late is found.
 */
export function jetsonGpuLoadFiles(root: string): string[] {
  const found: string[] = [];
  for (const dev of listDir(under(root, DEVFREQ_DIR))) {
    const device = under(root, `${DEVFREQ_DIR}/${dev}/device`);
    // of_node/name is a device-tree string: NUL-terminated.
    const node = readText(`${device}/of_node/name`)?.replace(/\0/g, '').trim();
    if (node !== undefined && JETSON_GPU_NODES.has(node) && readText(`${device}/load`) !== null) found.push(`${device}/load`);
  }
  return [...found, ...JETSON_LOAD.map((p) => under(root, p))];
}

/** Busy share 0..1 from the first of `files` that holds a per-mille load. */
export function readJetsonGpu(files: readonly string[]): number | null {
  for (const file of files) {
    const perMille = parseInteger(readText(file));
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
