/**
 * What went wrong with the store, in words an operator can act on: "disk full (SQLITE_FULL)".
 * SQLite reports storage trouble as SqliteError codes (extended codes such as SQLITE_IOERR_WRITE
 * share their primary prefix); opening and creating files reports Node errno codes.
 */

const SQLITE_LABELS: [prefix: string, label: string][] = [
  ['SQLITE_FULL', 'disk full'],
  ['SQLITE_READONLY', 'read-only'],
  ['SQLITE_BUSY', 'locked'],
  ['SQLITE_LOCKED', 'locked'],
  ['SQLITE_IOERR', 'I/O error'],
  ['SQLITE_CANTOPEN', 'cannot open'],
  ['SQLITE_CORRUPT', 'database corrupt'],
  ['SQLITE_NOTADB', 'database corrupt'],
  ['SQLITE_PERM', 'permission denied'],
  ['SQLITE_NOMEM', 'out of memory'],
];

const ERRNO_LABELS: Record<string, string> = {
  ENOSPC: 'disk full',
  EDQUOT: 'disk full',
  EROFS: 'read-only',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  ENOTDIR: 'not a directory',
  // mkdir({recursive}) reports EEXIST when a path component is a file, not a directory.
  EEXIST: 'not a directory',
  EIO: 'I/O error',
};

/** "disk full (SQLITE_FULL)", "locked (SQLITE_BUSY)", "not a directory (ENOTDIR)", … */
export function describeFault(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string') {
    const sqlite = SQLITE_LABELS.find(([prefix]) => code.startsWith(prefix));
    const label = sqlite ? sqlite[1] : (ERRNO_LABELS[code] ?? 'write failed');
    return `${label} (${code})`;
  }
  return `write failed (${e instanceof Error ? e.message : String(e)})`;
}

/**
 * True when SQLite refused the row itself (a constraint, a value it cannot bind), not the disk:
 * retrying such a row can never succeed, so it is dropped (and counted) instead of blocking the
 * rows behind it.
 */
export function isRowFault(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string') return code.startsWith('SQLITE_CONSTRAINT') || code === 'SQLITE_MISMATCH' || code === 'SQLITE_TOOBIG';
  return e instanceof TypeError || e instanceof RangeError;
}
