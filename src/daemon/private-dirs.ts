/** The daemon's own directories (data dir, socket dir) are private to the service user and group. */
import { chmodSync, mkdirSync } from 'node:fs';
import { join, relative, sep } from 'node:path';

/** rwx for the service user, r-x for its group (socket users), nothing for others. */
export const DIR_MODE = 0o750;

/** mkdir -p with DIR_MODE on every directory it creates, whatever the umask; existing ones are left alone. */
export function createPrivateDirs(dir: string): void {
  const first = mkdirSync(dir, { recursive: true, mode: DIR_MODE });
  if (first === undefined) return;
  let p = first;
  chmodSync(p, DIR_MODE);
  for (const part of relative(first, dir).split(sep).filter(Boolean)) {
    p = join(p, part);
    chmodSync(p, DIR_MODE);
  }
}
