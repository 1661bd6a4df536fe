/**
 * Plain vs BiTA decoding on the same prompts, interleaved, in one process, through the real
 * engine worker. Prints a table, then (with --json) one JSON object as the last line.
 *   npm run bench -- [--model <dir>] [--prompts 20] [--new-tokens 128] [--budget 10] [--policy fixed] [--json]
 * `--policy` sizes the tree (fixed at --budget by default, or auto / throughput / neighbourly).
 */
import { parseArgs } from 'node:util';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { loadEngine, TREE_POLICIES, type GenerateResult, type TreePolicy } from '../src/engine/index.js';
import { BUNDLED_MODEL, storyPrompts } from './data.js';

const { values: args } = parseArgs({
  options: {
    model: { type: 'string', default: BUNDLED_MODEL },
    prompts: { type: 'string', default: '20' },
    'new-tokens': { type: 'string', default: '128' },
    budget: { type: 'string', default: '10' },
    policy: { type: 'string', default: 'fixed' },
    threads: { type: 'string', default: '0' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log('usage: npm run bench -- [--model <package dir>] [--prompts N] [--new-tokens N] [--budget ROWS] [--policy fixed|auto|throughput|neighbourly] [--threads N] [--json]');
  process.exit(0);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
};
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

const nPrompts = Number(args.prompts);
const newTokens = Number(args['new-tokens']);
if (!(TREE_POLICIES as readonly string[]).includes(args.policy!)) {
  console.error(`--policy must be one of ${TREE_POLICIES.join(', ')}`);
  process.exit(2);
}
const engine = await loadEngine(args.model, { threads: Number(args.threads), treeBudget: Number(args.budget), treePolicy: args.policy as TreePolicy });
const modelName = engine.info().model;
const prompts = storyPrompts(nPrompts);
const runs: { plain: GenerateResult; bita: GenerateResult }[] = [];
const loop = monitorEventLoopDelay({ resolution: 1 });

// Warm-up: the first generations pay for ORT's lazy allocations and V8's JIT.
for (let i = 0; i < 3; i++) {
  for (const mode of ['plain', 'bita'] as const) await engine.generate({ prompt: prompts[i], maxTokens: newTokens, mode });
}

loop.enable();
for (let i = 0; i < prompts.length; i++) {
  // Alternate which variant goes first so drift on a shared machine hits both alike.
  const order = i % 2 === 0 ? (['plain', 'bita'] as const) : (['bita', 'plain'] as const);
  const r: Partial<Record<'plain' | 'bita', GenerateResult>> = {};
  for (const mode of order) {
    r[mode] = await engine.generate({ prompt: prompts[i], maxTokens: newTokens, mode, stop: [] }, { onChunk: () => {} });
  }
  runs.push(r as { plain: GenerateResult; bita: GenerateResult });
}
loop.disable();
await engine.close();

const tps = (rs: GenerateResult[]) => sum(rs.map((r) => r.stats.outputTokens)) / (sum(rs.map((r) => r.stats.totalMs - r.stats.prefillMs)) / 1000);
const plain = runs.map((r) => r.plain);
const bita = runs.map((r) => r.bita);
const identical = runs.every((r) => r.plain.tokens.join() === r.bita.tokens.join());
const steps = sum(bita.map((r) => r.stats.steps));
const result = {
  model: modelName,
  prompts: prompts.length,
  new_tokens: newTokens,
  budget_rows: Number(args.budget),
  tree_policy: args.policy,
  ar_tokens_per_s: +tps(plain).toFixed(1),
  bita_tokens_per_s: +tps(bita).toFixed(1),
  speedup: +(tps(bita) / tps(plain)).toFixed(3),
  speedup_median_per_prompt: +median(runs.map((r) => (r.plain.stats.totalMs - r.plain.stats.prefillMs) / (r.bita.stats.totalMs - r.bita.stats.prefillMs))).toFixed(3),
  // Committed tokens per tree step (accepted drafts + the bonus token); the first token comes from prefill.
  mean_accepted_tokens: +(sum(bita.map((r) => r.stats.meanAcceptedTokens * r.stats.steps)) / steps).toFixed(3),
  accepted_per_step_by_source: Object.fromEntries(
    (['mask', 'context', 'ngram'] as const).map((k) => [k, +(sum(bita.map((r) => r.stats.acceptedBySource[k])) / steps).toFixed(3)]),
  ),
  mean_rows_per_step: +(sum(bita.map((r) => r.stats.meanRowsPerStep * r.stats.steps)) / steps).toFixed(2),
  identical,
  host_ms_per_step: +(sum(bita.map((r) => r.stats.hostMs)) / steps).toFixed(4),
  run_ms_per_step: +(sum(bita.map((r) => r.stats.runMs)) / steps).toFixed(4),
  ar_ms_per_token: +(sum(plain.map((r) => r.stats.totalMs - r.stats.prefillMs)) / sum(plain.map((r) => r.stats.outputTokens))).toFixed(4),
  event_loop_p99_ms: +(loop.percentile(99) / 1e6).toFixed(3),
};

const rows: [string, string, string][] = [
  ['tokens/s', String(result.ar_tokens_per_s), String(result.bita_tokens_per_s)],
  ['tokens per step', '1', String(result.mean_accepted_tokens)],
  ['rows per step', '1', String(result.mean_rows_per_step)],
  ['accepted/step by source', '-', Object.entries(result.accepted_per_step_by_source).map(([k, v]) => `${k} ${v}`).join(' ')],
  ['ms per step (run / host)', `${median(plain.map((r) => r.stats.runMs / r.stats.steps)).toFixed(3)} / ${median(plain.map((r) => r.stats.hostMs / r.stats.steps)).toFixed(3)}`, `${result.run_ms_per_step} / ${result.host_ms_per_step}`],
];
console.log(`model ${result.model}: ${result.prompts} prompts x ${newTokens} new tokens, tree ${result.tree_policy}${result.tree_policy === "fixed" ? ` at ${result.budget_rows} rows` : ""}`);
console.log(`${'metric'.padEnd(26)}${'plain'.padStart(18)}${'bita'.padStart(34)}`);
for (const [k, a, b] of rows) console.log(`${k.padEnd(26)}${a.padStart(18)}${b.padStart(34)}`);
console.log(`speedup ${result.speedup}x (median per prompt ${result.speedup_median_per_prompt}x), identical greedy output: ${identical}, main event-loop p99 ${result.event_loop_p99_ms} ms`);
if (args.json) console.log(JSON.stringify(result));
