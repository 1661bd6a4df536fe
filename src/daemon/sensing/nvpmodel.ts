/**
 * Jetson power mode from nvpmodel's own files, without running `nvpmodel -q` (a process per
 * sample would cost more than the whole rest of a sample). nvpmodel keeps the active mode id in
 * /var/lib/nvpmodel/status as `pmode:0002`; /etc/nvpmodel.conf names each id in a
 * `< POWER_MODEL ID=2 NAME=MAXN_SUPER >` line.
 */
import { readText, under } from './files.js';

const STATUS = '/var/lib/nvpmodel/status';
const CONF = '/etc/nvpmodel.conf';

export interface PowerModeSource {
  statusPath: string;
  /** Mode id → name from nvpmodel.conf, read once (the file only changes when someone edits it). */
  names: Map<number, string>;
}

/** Null on boards without nvpmodel (neither file exists). */
export function findPowerMode(root: string): PowerModeSource | null {
  const statusPath = under(root, STATUS);
  const conf = readText(under(root, CONF));
  if (conf === null && readText(statusPath) === null) return null;
  return { statusPath, names: parseModeNames(conf) };
}

export function parseModeNames(conf: string | null): Map<number, string> {
  const names = new Map<number, string>();
  for (const m of (conf ?? '').matchAll(/<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)\s*>/g)) names.set(Number(m[1]), m[2]);
  return names;
}

/** The mode id in a status file (`pmode:0002`, possibly with other `key:value` lines). */
export function parsePmode(status: string | null): number | null {
  const m = /(?:^|\s)pmode:(\d+)(?:\s|$)/.exec(status ?? '');
  return m ? Number(m[1]) : null;
}

/** The active mode's name, or its id as text when the conf does not name it; null if unknown. */
export function readPowerMode(src: PowerModeSource): string | null {
  const id = parsePmode(readText(src.statusPath));
  return id === null ? null : (src.names.get(id) ?? String(id));
}
