/** The daemon's own directories (data dir, socket dir) are private to the service user and group. */
import { chmodSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** rwx for the service user, r-x for its group (socket users), nothing for others. */
export const DIR_MODE = 0o750;

/**
 * mkdir -p with DIR_MODE on every directory it creates, whatever the umask; existing ones are left
 * alone. One level at a time, not mkdirSync's `recursive`: under /proc that never returns (Node 20
 * retries the parent it cannot create for ever; `bitad start` with data_dir /proc/… spun at 100 %
 * CPU, deaf to SIGTERM), where a plain mkdir fails with ENOENT.
 */
export function createPrivateDirs(dir: string): void {
  const missing: string[] = [];
  for (let p = resolve(dir); !existsSync(p); p = dirname(p)) {
    missing.push(p);
    if (dirname(p) === p) break;
  }
  // A file where a directory belongs: the EEXIST that mkdir -p gives (the store's reason text names it).
  const found = missing.length ? dirname(missing[missing.length - 1]) : resolve(dir);
  if (!statSync(found).isDirectory()) mkdirSync(found);
  for (const p of missing.reverse()) {
    try {
      mkdirSync(p, { mode: DIR_MODE });
    } catch (e) {
      // Made meanwhile by someone else (a second daemon starting): theirs, left alone.
      if ((e as NodeJS.ErrnoException).code === 'EEXIST' && statSync(p).isDirectory()) continue;
      throw e;
    }
    chmodSync(p, DIR_MODE);
  }
}
