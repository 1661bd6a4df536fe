/** A fake procfs/sysfs tree in a temp folder, for BoardSensor's `root` option. */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';

export interface FakeRoot {
  root: string;
  /** Writes `text` at the absolute board path `path` (e.g. '/proc/stat') under the root. */
  write(path: string, text: string): void;
  /** Writes an executable script at `path` under the root and returns its real path. */
  script(path: string, text: string): string;
  remove(path: string): void;
  /** A relative symlink at `path` to the board path `target`, as sysfs links its class entries. */
  link(path: string, target: string): void;
  /** A directory at `path`: reading it as a file fails (EISDIR), like a sensor that returns EAGAIN. */
  dir(path: string): void;
  /** A thermal zone with its type, temperature (°C) and optional trip points. */
  zone(n: number, type: string, tempC: number | string, trips?: { tempC: number; type?: string }[]): void;
  cleanup(): void;
}

export function fakeRoot(): FakeRoot {
  const root = mkdtempSync(join(tmpdir(), 'bitad-sensing-'));
  const at = (path: string) => join(root, path);
  const write = (path: string, text: string) => {
    mkdirSync(dirname(at(path)), { recursive: true });
    writeFileSync(at(path), text);
  };
  return {
    root,
    write,
    script(path, text) {
      write(path, text);
      chmodSync(at(path), 0o755);
      return at(path);
    },
    remove: (path) => rmSync(at(path), { force: true, recursive: true }),
    link(path, target) {
      mkdirSync(dirname(at(path)), { recursive: true });
      symlinkSync(relative(dirname(at(path)), at(target)), at(path));
    },
    dir: (path) => mkdirSync(at(path), { recursive: true }),
    zone(n, type, tempC, trips = []) {
      const dir = `/sys/class/thermal/thermal_zone${n}`;
      write(`${dir}/type`, `${type}\n`);
      write(`${dir}/temp`, typeof tempC === 'number' ? `${Math.round(tempC * 1000)}\n` : tempC);
      trips.forEach((trip, i) => {
        write(`${dir}/trip_point_${i}_temp`, `${Math.round(trip.tempC * 1000)}\n`);
        if (trip.type) write(`${dir}/trip_point_${i}_type`, `${trip.type}\n`);
      });
    },
    cleanup: () => rmSync(root, { force: true, recursive: true }),
  };
}

/** A /proc/<pid>/stat line with the given utime and stime (fields 14, 15) and an awkward comm. */
export function pidStat(pid: number, utime: number, stime: number, comm = 'node (bitad) x'): string {
  // fields 3..13: state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
  return `${pid} (${comm}) S 1 ${pid} ${pid} 0 -1 4194560 1000 0 0 0 ${utime} ${stime} 0 0 20 0 11 0 500 1000000 2000\n`;
}

/** Polls `check` until it is true or `ms` pass; returns the last result. */
export async function until(check: () => boolean, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return check();
}
