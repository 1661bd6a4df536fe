/**
 * CPU readings from procfs: /proc/stat (whole board and per core), /proc/<pid>/stat (this
 * process, all its threads, the engine worker included), /proc/loadavg and /proc/pressure/cpu.
 */
import { clamp01, readText, under } from './files.js';

/** Clock ticks (USER_HZ) since boot for one `cpu` line of /proc/stat. */
export interface CpuTicks {
  total: number;
  busy: number;
}

export interface ProcStat {
  /** The aggregate `cpu` line: every online core together. */
  all: CpuTicks;
  /** `cpuN` lines keyed by N; offline cores have no line. */
  perCore: Map<number, CpuTicks>;
}

/**
 * Fields of a cpu line: user nice system idle iowait irq softirq steal guest guest_nice. The total
 * stops at steal because guest and guest_nice are already counted inside user and nice.
 */
const COUNTED_FIELDS = 8;
const IDLE = 3;
const IOWAIT = 4;

function parseCpuLine(fields: string[]): CpuTicks | null {
  const ticks = fields.slice(1, 1 + COUNTED_FIELDS).map((f) => (/^\d+$/.test(f) ? Number(f) : NaN));
  if (ticks.length < 4 || ticks.some((v) => !Number.isFinite(v))) return null;
  const total = ticks.reduce((a, b) => a + b, 0);
  // Waiting for I/O leaves the core free for other work, so it counts as idle.
  const busy = total - ticks[IDLE] - (ticks[IOWAIT] ?? 0);
  return { total, busy };
}

export function parseProcStat(text: string | null): ProcStat | null {
  if (text === null) return null;
  let all: CpuTicks | null = null;
  const perCore = new Map<number, CpuTicks>();
  for (const line of text.split('\n')) {
    if (!line.startsWith('cpu')) continue;
    const fields = line.trim().split(/\s+/);
    const ticks = parseCpuLine(fields);
    if (ticks === null) return null; // a garbled cpu line: trust none of the file
    const name = fields[0];
    if (name === 'cpu') all = ticks;
    else if (/^cpu\d+$/.test(name)) perCore.set(Number(name.slice(3)), ticks);
    else return null;
  }
  return all === null ? null : { all, perCore };
}

export const readProcStat = (root: string): ProcStat | null => parseProcStat(readText(under(root, '/proc/stat')));

/**
 * utime + stime (fields 14 and 15, clock ticks) of /proc/<pid>/stat. Field 2 (comm) is in
 * parentheses and may itself contain spaces and ')', so fields are counted after the last ')'.
 */
export function parseSelfTicks(text: string | null): number | null {
  if (text === null) return null;
  const close = text.lastIndexOf(')');
  if (close < 0) return null;
  const rest = text.slice(close + 1).trim().split(/\s+/); // rest[0] is field 3 (state)
  const utime = rest[14 - 3];
  const stime = rest[15 - 3];
  if (utime === undefined || stime === undefined || !/^\d+$/.test(utime) || !/^\d+$/.test(stime)) return null;
  return Number(utime) + Number(stime);
}

export const readSelfTicks = (root: string, pid: number): number | null =>
  parseSelfTicks(readText(under(root, `/proc/${pid}/stat`)));

/** The 1-minute load average (first field of /proc/loadavg). */
export function parseLoadAvg1(text: string | null): number | null {
  if (text === null) return null;
  const first = text.trim().split(/\s+/)[0];
  if (first === undefined || !/^\d+(\.\d+)?$/.test(first)) return null;
  return Number(first);
}

export const readLoadAvg1 = (root: string): number | null => parseLoadAvg1(readText(under(root, '/proc/loadavg')));

/**
 * Total µs that some runnable task waited for a CPU (the `total=` of the `some` line of
 * /proc/pressure/cpu, Linux ≥ 4.20 with PSI); null where absent or garbled. A counter, so a share
 * over any interval is its delta over the interval's µs (the avg10 field lags by seconds).
 */
export function parseCpuPressureUs(text: string | null): number | null {
  if (text === null) return null;
  const some = text.split('\n').find((l) => l.startsWith('some '));
  const total = some ? /(?:^|\s)total=(\d+)(?:\s|$)/.exec(some) : null;
  return total ? Number(total[1]) : null;
}

export const readCpuPressureUs = (root: string): number | null => parseCpuPressureUs(readText(under(root, '/proc/pressure/cpu')));

/** Busy share 0..1 between two readings; null when the counters did not advance or went back. */
export function busyShare(prev: CpuTicks, next: CpuTicks): number | null {
  const dTotal = next.total - prev.total;
  const dBusy = next.busy - prev.busy;
  if (!(dTotal > 0) || dBusy < 0) return null;
  return clamp01(dBusy / dTotal);
}

/** Busy share of every core present in both readings, in core order. */
export function coreShares(prev: ProcStat, next: ProcStat): number[] {
  const shares: number[] = [];
  for (const [n, ticks] of [...next.perCore].sort((a, b) => a[0] - b[0])) {
    const before = prev.perCore.get(n);
    const share = before ? busyShare(before, ticks) : null;
    if (share !== null) shares.push(share);
  }
  return shares;
}
