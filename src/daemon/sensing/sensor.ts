/**
 * BoardSensor: one cheap sample of the board's load (CPU, temperature, throttling, GPU) from
 * small procfs/sysfs files, cheap enough to take every ~250 ms. src/daemon/telemetry/load.ts
 * stays the slow, richer probe for telemetry.
 */
import { availableParallelism } from 'node:os';
import type { BoardLoad } from '../../engine/load.js';
import { clamp01 } from './files.js';
import { findOnPath, jetsonGpuLoadFiles, NvidiaSmiWatcher, readJetsonGpu, type NvidiaSmiOptions } from './gpu.js';
import { findPowerMode, readPowerMode, type PowerModeSource } from './nvpmodel.js';
import { busyShare, coreShares, readCpuPressureUs, readLoadAvg1, readProcStat, readSelfTicks, type ProcStat } from './procfs.js';
import { discoverZones, findThrottledFile, readThermal, readThrottle, throttlingNow, type ThermalZone, type ThrottleBits } from './thermal.js';

export interface BoardSensorOptions {
  /** Every path is resolved under this folder (tests point it at a fake procfs/sysfs). */
  root?: string;
  /** The process whose CPU is "self" (the daemon; its engine worker thread is part of it). */
  pid?: number;
  /** nvidia-smi to run: a path, null for none; by default the first on PATH (under `root`). */
  nvidiaSmi?: string | null;
  nvidia?: NvidiaSmiOptions;
  /** Monotonic ms clock for rates over wall time (tests pass their own). */
  now?: () => number;
}

export interface BoardSample {
  ts: number;
  /** Online cores (`cpuN` lines of /proc/stat); null when /proc/stat is unreadable. */
  cores: number | null;
  /** Busy share 0..1 of the whole board since the previous sample (null on the first). */
  cpuBusy: number | null;
  /** This process's share 0..1 of the whole board (all cores) since the previous sample. */
  selfCpu: number | null;
  /** Everyone else: max(0, cpuBusy − selfCpu); null unless both are known. */
  othersCpu: number | null;
  /** Per-core busy shares 0..1 in core order (null on the first sample). */
  coreBusy: number[] | null;
  /**
   * Share 0..1 of the time since the previous sample that some runnable task waited for a CPU
   * (Linux PSI); null on the first sample and where the kernel has no /proc/pressure/cpu.
   */
  cpuPressure: number | null;
  /** The busiest core's share: one saturated core slows the engine even on an idle board. */
  busiestCore: number | null;
  loadAvg1: number | null;
  cpuTempC: number | null;
  /** Raspberry Pi firmware bits; null where the file does not exist. */
  throttle: ThrottleBits | null;
  /** Slowed down now: Pi bits 1–3, or a thermal zone at its lowest passive/hot/critical trip. */
  throttled: boolean;
  gpuBusy: number | null;
  gpuSource: 'jetson' | 'nvidia' | null;
  /**
   * Jetson nvpmodel mode (`MAXN_SUPER`, `15W`; the id as text if the conf does not name it), null
   * when unreadable. Absent on boards without nvpmodel.
   */
  powerMode?: string | null;
}

interface CpuSnapshot {
  stat: ProcStat | null;
  selfTicks: number | null;
  pressureUs: number | null;
  /** performance.now() when read, ms. */
  at: number;
}

interface CpuReading {
  cpuBusy: number | null;
  selfCpu: number | null;
  othersCpu: number | null;
  coreBusy: number[] | null;
  cpuPressure: number | null;
}

export class BoardSensor {
  private readonly root: string;
  private readonly pid: number;
  private readonly now: () => number;
  // Found once, when the sensor is built; a sample only reads these files.
  private readonly zones: ThermalZone[];
  private readonly gpuLoadFiles: string[];
  private readonly throttledFile: string | null;
  private readonly powerMode: PowerModeSource | null;
  private readonly nvidia: NvidiaSmiWatcher | null;
  private prev: CpuSnapshot = { stat: null, selfTicks: null, pressureUs: null, at: 0 };

  constructor(opts: BoardSensorOptions = {}) {
    this.root = opts.root ?? '/';
    this.pid = opts.pid ?? process.pid;
    this.now = opts.now ?? (() => performance.now());
    this.zones = discoverZones(this.root);
    this.gpuLoadFiles = jetsonGpuLoadFiles(this.root);
    this.throttledFile = findThrottledFile(this.root);
    this.powerMode = findPowerMode(this.root);
    const smi = opts.nvidiaSmi === undefined ? findOnPath('nvidia-smi', this.root) : opts.nvidiaSmi;
    this.nvidia = smi === null ? null : new NvidiaSmiWatcher(smi, opts.nvidia);
  }

  sample(): BoardSample {
    const now: CpuSnapshot = {
      stat: readProcStat(this.root),
      selfTicks: readSelfTicks(this.root, this.pid),
      pressureUs: readCpuPressureUs(this.root),
      at: this.now(),
    };
    const cpu = cpuReading(this.prev, now);
    this.prev = now;
    const thermal = readThermal(this.zones);
    const throttle = readThrottle(this.throttledFile);
    const jetson = readJetsonGpu(this.gpuLoadFiles);
    const nvidia = jetson === null ? (this.nvidia?.busy ?? null) : null;
    return {
      ts: Date.now(),
      cores: now.stat ? now.stat.perCore.size : null,
      ...cpu,
      busiestCore: cpu.coreBusy && cpu.coreBusy.length > 0 ? Math.max(...cpu.coreBusy) : null,
      loadAvg1: readLoadAvg1(this.root),
      cpuTempC: thermal.cpuTempC,
      throttle,
      throttled: (throttle !== null && throttlingNow(throttle)) || thermal.atTrip,
      gpuBusy: jetson ?? nvidia,
      gpuSource: jetson !== null ? 'jetson' : nvidia !== null ? 'nvidia' : null,
      ...(this.powerMode ? { powerMode: readPowerMode(this.powerMode) } : {}),
    };
  }

  /** Ends the nvidia-smi child, if any. Sampling afterwards still works, without NVIDIA. */
  stop(): void {
    this.nvidia?.stop();
  }
}

/**
 * Shares between two snapshots. /proc/stat and /proc/<pid>/stat count the same clock ticks, so
 * this process's ticks over the board's total ticks is its share of all cores, whatever USER_HZ is.
 */
function cpuReading(prev: CpuSnapshot, now: CpuSnapshot): CpuReading {
  const cpuPressure = pressureShare(prev, now);
  if (!prev.stat || !now.stat) return { cpuBusy: null, selfCpu: null, othersCpu: null, coreBusy: null, cpuPressure };
  const cpuBusy = busyShare(prev.stat.all, now.stat.all);
  const dTotal = now.stat.all.total - prev.stat.all.total;
  const dSelf = prev.selfTicks !== null && now.selfTicks !== null ? now.selfTicks - prev.selfTicks : null;
  // A negative delta means the pid now names another process: no reading rather than a wrong one.
  const selfCpu = dSelf !== null && dSelf >= 0 && dTotal > 0 ? clamp01(dSelf / dTotal) : null;
  // The two files are read microseconds apart, so self can slightly exceed the board: floor at 0.
  const othersCpu = cpuBusy !== null && selfCpu !== null ? Math.max(0, cpuBusy - selfCpu) : null;
  return { cpuBusy, selfCpu, othersCpu, coreBusy: coreShares(prev.stat, now.stat), cpuPressure };
}

/** PSI stall µs between two snapshots over the µs between them; null if unknown or gone back. */
function pressureShare(prev: CpuSnapshot, now: CpuSnapshot): number | null {
  if (prev.pressureUs === null || now.pressureUs === null) return null;
  const stalled = now.pressureUs - prev.pressureUs;
  const elapsedUs = (now.at - prev.at) * 1000;
  return stalled >= 0 && elapsedUs > 0 ? clamp01(stalled / elapsedUs) : null;
}

/** The engine's view (src/engine/load.ts). Unknown others count as none; unknown cores as what
 * Node sees, so sizing never divides by an absent count. */
export function boardLoad(s: BoardSample): BoardLoad {
  return {
    othersCpu: s.othersCpu ?? 0,
    cores: s.cores ?? availableParallelism(),
    tempC: s.cpuTempC,
    throttled: s.throttled,
    gpuBusy: s.gpuBusy,
    cpuPressure: s.cpuPressure,
  };
}
