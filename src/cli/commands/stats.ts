/** `bitad stats`: latency percentiles from the SQLite request log. */
import { existsSync } from 'node:fs';
import { parseSince, summarize } from '../../daemon/store/stats.js';
import { Store } from '../../daemon/store/store.js';
import { fmt, table } from '../format.js';
import { UsageError } from '../usage.js';

export const statsHelp = `Usage: bitad stats [--since <30m|24h|7d|ISO date>] [--config <file>] [--db <path>] [--json]

Prints p50/p95/p99 of TTFT, TPOT, total latency and tokens/s of successful requests, and error
counts by code, from the daemon's SQLite log (default: the last 24 h). A request's row is committed
before its final reply is sent (unless the store is degraded: see bitad status). The file is the config's store.path, or
/var/lib/bitad/bitad.db when bitad runs as the systemd unit.`;

export function stats(db: string, since: string, json: boolean): number {
  const sinceMs = sinceOption(since);
  if (!existsSync(db)) {
    process.stderr.write(`no request log at ${db} (has bitad run with this config?)\n`);
    return 1;
  }
  const store = new Store(db, { readonly: true });
  const rows = store.requestsSince(sinceMs);
  store.close();
  const s = summarize(rows);
  if (json) {
    process.stdout.write(JSON.stringify({ since: new Date(sinceMs).toISOString(), ...s }) + '\n');
    return 0;
  }
  const r = (name: string, d: { p50: number | null; p95: number | null; p99: number | null; n: number }, digits: number) => [
    name, fmt(d.p50, digits), fmt(d.p95, digits), fmt(d.p99, digits), d.n,
  ];
  process.stdout.write(`requests since ${new Date(sinceMs).toISOString()}: ${s.requests} (${s.ok} ok)\n\n`);
  process.stdout.write(
    table(['metric', 'p50', 'p95', 'p99', 'n'], [
      r('ttft_ms', s.ttft_ms, 2),
      r('tpot_ms', s.tpot_ms, 2),
      r('total_ms', s.total_ms, 2),
      r('queue_ms', s.queue_ms, 2),
      r('tokens_per_s', s.tokens_per_s, 1),
    ]) + '\n',
  );
  if (s.mean_accepted_tokens !== null) process.stdout.write(`\nmean accepted tokens per step: ${s.mean_accepted_tokens.toFixed(2)}\n`);
  const errs = Object.entries(s.errors);
  if (errs.length) process.stdout.write(`\nerrors: ${errs.map(([k, v]) => `${k} ${v}`).join(', ')}\n`);
  return 0;
}

/** `--since` as epoch ms; a value that is no duration or date, or lies outside what a Date holds, is a usage error. */
function sinceOption(since: string): number {
  let ms: number;
  try {
    ms = parseSince(since);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (Number.isNaN(new Date(ms).getTime())) throw new UsageError(`--since: "${since}" reaches before the earliest date there is (year -271821)`);
  return ms;
}
