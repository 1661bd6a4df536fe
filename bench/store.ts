/**
 * What committing a request row before its final reply costs, with WAL `synchronous` NORMAL
 * (survives a crash of the process) and FULL (also a power cut: one fsync per commit).
 * Each commit is one request row in its own transaction through the Store's own path
 * (recordRequest + flush), the worst case: one request finishing per event-loop turn.
 * Modes run interleaved (NORMAL, FULL, NORMAL, …) so drift on a shared machine hits both.
 *
 *   node --import tsx bench/store.ts [--commits 300] [--rounds 5] [--dir <folder on the disk to test>] [--json]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { percentile } from '../src/daemon/store/stats.js';
import { Store, type RequestRow } from '../src/daemon/store/store.js';

const { values: args } = parseArgs({
  options: {
    commits: { type: 'string', default: '300' },
    rounds: { type: 'string', default: '5' },
    dir: { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});
const COMMITS = Number(args.commits);
const ROUNDS = Number(args.rounds);
const MODES = ['normal', 'full'] as const;

function row(i: number): RequestRow {
  return {
    ts: Date.now(), transport: 'socket', kind: 'generate', txn: `bench-${i}`, model: 'tinystories-bita', prompt_tokens: 5,
    output_tokens: 8, queue_ms: 0.4, ttft_ms: 3.1, tpot_ms: 0.9, engine_ms: 8.2, total_ms: 8.9, tokens_per_s: 731,
    mean_accepted_tokens: 2.1, tree_budget: 10, rows_per_step: 8.5, tree_policy: 'throughput', finish_reason: 'length', outcome: 'ok', error_code: null,
  };
}

/** One run: a fresh file, COMMITS single-row commits; per-commit latency (ms) and commits/s. */
function run(base: string, mode: (typeof MODES)[number], round: number): { p50: number; p99: number; perS: number } {
  const dir = join(base, `${mode}-${round}`);
  const store = new Store(join(dir, 'bitad.db'), { synchronous: mode });
  const lat: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < COMMITS; i++) {
    const t = performance.now();
    store.recordRequest(row(i));
    store.flush();
    lat.push(performance.now() - t);
  }
  const seconds = (performance.now() - t0) / 1000;
  store.close();
  rmSync(dir, { recursive: true, force: true });
  lat.sort((a, b) => a - b);
  return { p50: percentile(lat, 50)!, p99: percentile(lat, 99)!, perS: COMMITS / seconds };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const base = mkdtempSync(join(args.dir ?? tmpdir(), 'bitad-bench-store-'));
try {
  const runs: Record<string, { p50: number; p99: number; perS: number }[]> = { normal: [], full: [] };
  for (let r = 0; r < ROUNDS; r++) for (const mode of MODES) runs[mode].push(run(base, mode, r));
  const summary = Object.fromEntries(
    MODES.map((m) => [
      m,
      {
        commit_ms_p50: +median(runs[m].map((x) => x.p50)).toFixed(3),
        commit_ms_p99: +median(runs[m].map((x) => x.p99)).toFixed(3),
        commits_per_s: Math.round(median(runs[m].map((x) => x.perS))),
      },
    ]),
  );
  if (args.json) console.log(JSON.stringify({ commits: COMMITS, rounds: ROUNDS, dir: base, ...summary }));
  else {
    console.log(`${COMMITS} single-row commits × ${ROUNDS} interleaved rounds in ${base} (medians over rounds)`);
    console.log('synchronous  commit p50 ms  commit p99 ms  commits/s');
    for (const m of MODES) {
      const s = summary[m] as { commit_ms_p50: number; commit_ms_p99: number; commits_per_s: number };
      console.log(`${m.padEnd(11)}  ${String(s.commit_ms_p50).padStart(13)}  ${String(s.commit_ms_p99).padStart(13)}  ${String(s.commits_per_s).padStart(9)}`);
    }
  }
} finally {
  rmSync(base, { recursive: true, force: true });
}
