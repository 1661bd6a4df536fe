/**
 * Small-file reads for the board sensors. Every reader is optional: a missing, unreadable or
 * garbled file is null, never a throw, because each board has a different subset of these files.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** `path` (absolute, as on a real board) under `root`, so tests can point at a fake procfs/sysfs. */
export function under(root: string, path: string): string {
  return join(root, path);
}

/** The file's text, or null when it cannot be read (absent on this board, permission, EIO…). */
export function readText(path: string): string | null {
  try {
    // Synchronous on purpose: these are tiny kernel files (µs each); an async read would cost more
    // in promise bookkeeping than the read itself.
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

/** The entries of a folder, sorted; none when it cannot be listed. */
export function listDir(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

/** A whole decimal integer (sysfs style, optional sign); anything else is null. */
export function parseInteger(text: string | null): number | null {
  if (text === null) return null;
  const s = text.trim();
  if (!/^[+-]?\d+$/.test(s)) return null;
  const v = Number(s);
  return Number.isSafeInteger(v) ? v : null;
}

export function clamp01(x: number): number {
  return x < 0 ? 0 : x > 1 ? 1 : x;
}
