/**
 * The CPU-hog neighbours of bench/load.ts: forks bench/hog.ts children, reads their completed work
 * units over IPC, and makes sure none outlives the bench (stop(), process exit, SIGINT/SIGTERM).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** A hog's reply to 'count': its completed work units and its own clock (ms) when it counted. */
export interface HogCount {
  type: 'count';
  units: number;
  ms: number;
}

/** Counts of every hog at one moment (one entry per hog, in pool order). */
export type HogSnapshot = HogCount[];

const HOG = fileURLToPath(new URL('./hog.ts', import.meta.url));
const live = new Set<ChildProcess>();
let cleanupInstalled = false;

/** Kills every hog still running: synchronous, so it also works from an 'exit' handler. */
function killAll(): void {
  for (const c of live) c.kill('SIGKILL');
  live.clear();
}

function installCleanup(): void {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      killAll();
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }
}

class Hog {
  private waiting: ((c: HogCount) => void)[] = [];

  constructor(readonly child: ChildProcess) {
    child.on('message', (m: HogCount) => {
      if (m.type === 'count') this.waiting.shift()?.(m);
    });
  }

  count(): Promise<HogCount> {
    return new Promise((resolve, reject) => {
      if (!this.child.connected) return reject(new Error(`hog ${this.child.pid} is gone`));
      this.waiting.push(resolve);
      this.child.send('count');
    });
  }
}

export class HogPool {
  private hogs: Hog[] = [];

  get size(): number {
    return this.hogs.length;
  }

  /** Forks `n` hogs and waits until each has answered once (tsx has loaded and it is working). */
  async start(n: number): Promise<void> {
    installCleanup();
    for (let i = 0; i < n; i++) {
      const child = fork(HOG, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
      live.add(child);
      child.once('exit', () => live.delete(child));
      this.hogs.push(new Hog(child));
    }
    await this.snapshot();
  }

  snapshot(): Promise<HogSnapshot> {
    return Promise.all(this.hogs.map((h) => h.count()));
  }

  async stop(): Promise<void> {
    const exits = this.hogs.map((h) => new Promise<void>((r) => (h.child.exitCode !== null ? r() : h.child.once('exit', () => r()))));
    for (const h of this.hogs) if (h.child.connected) h.child.send('stop');
    await Promise.all(exits);
    this.hogs = [];
  }
}

/**
 * Work the hogs did between two snapshots of the same pool: units summed over hogs, seconds the
 * window's length on the hogs' clocks (mean over hogs; their windows differ by a slice at most).
 * Windows add up (units and seconds), so units / seconds is the pool's rate over any set of them.
 */
export interface HogWork {
  units: number;
  seconds: number;
}

export function hogWork(before: HogSnapshot, after: HogSnapshot): HogWork {
  let units = 0;
  let seconds = 0;
  before.forEach((b, i) => {
    units += after[i].units - b.units;
    seconds += (after[i].ms - b.ms) / 1000;
  });
  return { units, seconds: before.length ? seconds / before.length : 0 };
}

export const addWork = (a: HogWork, b: HogWork): HogWork => ({ units: a.units + b.units, seconds: a.seconds + b.seconds });

/** Units per second of the whole pool; null without hogs or time. */
export const workRate = (w: HogWork): number | null => (w.seconds > 0 ? w.units / w.seconds : null);
