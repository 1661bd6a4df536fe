/**
 * The load-aware tree under real contention: plain, fixed budgets and the adaptive tree policies,
 * interleaved, on an idle board and next to CPU-hog neighbours (child processes), with the engine's
 * ORT threads at 1 and 2. Measures our tokens/s and CPU per token, and the neighbours' work rate
 * (how much we slowed them). Prints a table per condition, then (with --json) one JSON object as
 * the last line.
 *   npm run bench:load -- [--model bundled,stories260k] [--rounds 8] [--prompts 16] [--new-tokens 64]
 *     [--conditions idle,hog1,hog2] [--threads 1,2] [--projection <graph package dir>] [--json]
 */
import { availableParallelism } from 'node:os';
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadEngine, type BoardLoad, type GenerateResult, type TreePolicy, type WorkerEngine } from '../src/engine/index.js';
import { BoardSensor, boardLoad, LoadFeed } from '../src/daemon/sensing/index.js';
import { BUNDLED_MODEL, STORIES260K_PACKAGE, storyPrompts } from './data.js';
import { addWork, hogWork, HogPool, workRate, type HogWork } from './hog-pool.js';
import { openProjection, projectBudget, stepCurve, type ProjectionGraph } from './projection.js';

const USAGE = `usage: npm run bench:load -- [options]
  --model LIST         bundled, stories260k or package dirs, comma-separated (default bundled,stories260k)
  --rounds N           measured rounds per condition; the variant order rotates every round and
                       runs backwards every other round (default 12)
  --prompts N          held-out story openings per variant per round (default 16)
  --new-tokens N       greedy tokens per generation (default 64)
  --conditions LIST    idle, hogN (N CPU-hog processes), hogall (one per core) (default idle,hog1,hog<cores>)
  --threads LIST       ORT intra-op threads, one engine each (default 1,2)
  --pace F             next to hogs, a request arrives every F x plain decoding's generation time
                       (measured at the start of the condition), as on a board serving a request
                       rate; what a variant saves, the hogs get. 0 = back to back (default 1.5)
  --projection DIR     also time a larger graph package's forwards (no tokenizer needed)
  --json               print one JSON object as the last line`;

const { values: args } = parseArgs({
  options: {
    model: { type: 'string', default: 'bundled,stories260k' },
    rounds: { type: 'string', default: '12' },
    prompts: { type: 'string', default: '16' },
    'new-tokens': { type: 'string', default: '64' },
    conditions: { type: 'string', default: `idle,hog1,hog${availableParallelism()}` },
    threads: { type: 'string', default: '1,2' },
    pace: { type: 'string', default: '1.5' },
    projection: { type: 'string' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}

const list = (s: string) => s.split(',').map((x) => x.trim()).filter(Boolean);
const ROUNDS = Number(args.rounds);
const NEW_TOKENS = Number(args['new-tokens']);
const THREADS = list(args.threads).map(Number);
const PROMPTS = storyPrompts(Number(args.prompts));
const PACE = Number(args.pace);
if (!(PACE >= 0)) throw new Error('--pace must be a number >= 0');
/** Untimed generations per variant when a condition starts: JIT, ORT shapes, policies settle. */
const WARMUP = 2;
/** "Hog alone" windows (engine idle) at the start and the end of each condition. */
const HOG_ALONE_MS = 1500;
/** Neighbourly must leave the hogs at least this much more work than fixed 32 to count as measurable. */
const MEASURABLE = 1.03;
const log = (s: string) => process.stderr.write(`[load] ${s}\n`);

// ---------------------------------------------------------------------------------------------
// Variants and conditions

type Adaptive = Exclude<TreePolicy, 'fixed'>;
interface Variant {
  name: string;
  mode: 'plain' | 'bita';
  budget?: number;
  policy?: Adaptive;
}
const FIXED = [2, 4, 8, 16, 32];
const ADAPTIVE: Adaptive[] = ['throughput', 'neighbourly', 'auto'];
const VARIANTS: Variant[] = [
  { name: 'plain', mode: 'plain' },
  ...FIXED.map((b): Variant => ({ name: `fixed_${b}`, mode: 'bita', budget: b })),
  ...ADAPTIVE.map((p): Variant => ({ name: p, mode: 'bita', policy: p })),
  // Control: fixed 8 rows a second time. It differs from fixed_8 only by chance, so its ratio to
  // fixed_8 shows how small a difference this run can resolve.
  { name: 'fixed_8_again', mode: 'bita', budget: 8 },
];

interface Condition {
  name: string;
  hogs: number;
}
function parseCondition(name: string): Condition {
  if (name === 'idle') return { name, hogs: 0 };
  if (name === 'hogall') return { name, hogs: availableParallelism() };
  const m = /^hog(\d+)$/.exec(name);
  if (!m) throw new Error(`unknown condition ${name} (idle, hogN, hogall)`);
  return { name, hogs: Number(m[1]) };
}
const CONDITIONS = list(args.conditions).map(parseCondition);

function resolveModel(name: string): string {
  const dir = name === 'bundled' ? BUNDLED_MODEL : name === 'stories260k' ? STORIES260K_PACKAGE : name;
  if (!existsSync(dir)) {
    const hint = name === 'stories260k' ? ' (build it: npm run model -- stories260k --fast)' : '';
    throw new Error(`model package ${dir} not found${hint}`);
  }
  return dir;
}
const MODELS = list(args.model).map((name) => ({ name, dir: resolveModel(name) }));

// ---------------------------------------------------------------------------------------------
// Engines: one per thread count, serving every variant in turn (the policy and budget are set
// before each turn). One engine, not one per policy: engine instances differed by up to 0.84–1.24x
// on the same fixed tree (the previous design's control, 2026-12-03), more than the 5 % to resolve.
// The sizer keeps its cost and gain models across turns and gives each policy its own last budget
// back (TreeSizer.setPolicy), as a daemon that has been running that policy would have it.

interface BenchEngine {
  threads: number;
  engine: WorkerEngine;
  /** Plain decoding's token ids per prompt: what every variant must reproduce (lossless). */
  reference: number[][];
}

const generate = (e: BenchEngine, v: Variant, prompt: string) =>
  e.engine.generate({ prompt, maxTokens: NEW_TOKENS, mode: v.mode, stop: [] }, { onChunk: () => {} });

async function openEngine(dir: string, threads: number): Promise<BenchEngine> {
  const engine = await loadEngine(dir, { threads, treeBudget: 10, treePolicy: 'fixed' });
  const e: BenchEngine = { threads, engine, reference: [] };
  for (const p of PROMPTS) e.reference.push((await generate(e, VARIANTS[0], p)).tokens);
  // Warm-up: the isolate JIT-compiles the decoding loop and the sizer learns this board's step
  // costs and the gain curve under each policy, as on a daemon that has been serving for a while.
  for (const v of VARIANTS) {
    if (!v.policy && v.budget !== 8) continue;
    configure(e, v);
    for (const p of PROMPTS) await generate(e, v, p);
  }
  return e;
}

/** Sets the policy (and for a fixed variant the budget) the next turn decodes with. */
function configure(e: BenchEngine, v: Variant): void {
  if (v.mode === 'plain') return;
  e.engine.setTreePolicy(v.policy ?? 'fixed');
  if (v.budget) e.engine.setTreeBudget(v.budget);
}

// ---------------------------------------------------------------------------------------------
// Measurement

interface Tally {
  roundTps: number[];
  tokens: number;
  decodeMs: number;
  cpuMs: number;
  steps: number;
  rows: number;
  committed: number;
  /** ORT run time and the rest of the decoding loop (tree building, sizing, streaming), ms. */
  runMs: number;
  hostMs: number;
  work: HogWork;
  /** The hogs' rate in each turn: its spread says how big a difference is measurable. */
  roundHog: number[];
  othersCpu: number[];
  mismatches: number;
  generations: number;
}
const newTally = (): Tally => ({
  roundTps: [], tokens: 0, decodeMs: 0, cpuMs: 0, steps: 0, rows: 0, committed: 0, runMs: 0, hostMs: 0,
  work: { units: 0, seconds: 0 }, roundHog: [], othersCpu: [], mismatches: 0, generations: 0,
});

/**
 * Other processes' CPU share during each turn, from a sensor of its own sampled at the turn's start
 * and end: the feed's 250 ms samples are longer than a turn.
 */
const turnSensor = new BoardSensor({ nvidiaSmi: null });

function record(t: Tally, e: BenchEngine, prompt: number, r: GenerateResult, v: Variant): void {
  t.tokens += r.stats.outputTokens;
  t.decodeMs += r.stats.totalMs - r.stats.prefillMs;
  t.steps += r.stats.steps;
  t.rows += r.stats.meanRowsPerStep * r.stats.steps;
  t.committed += r.stats.meanAcceptedTokens * r.stats.steps;
  t.runMs += r.stats.runMs;
  t.hostMs += r.stats.hostMs;
  t.generations++;
  if (r.tokens.join() !== e.reference[prompt].join()) {
    t.mismatches++;
    log(`MISMATCH: ${v.name} (threads ${e.threads}) prompt ${prompt} differs from plain decoding`);
  }
}

/**
 * One variant's turn in one round: every prompt once, with CPU and hog work measured around it.
 * `periodMs` > 0: the i-th request arrives periodMs x i after the turn starts (a late one starts at
 * once); the engine idles in between, and the hogs get that time.
 */
async function runTurn(e: BenchEngine, v: Variant, t: Tally, hogs: HogPool, periodMs: number): Promise<void> {
  const before = hogs.size ? await hogs.snapshot() : [];
  turnSensor.sample();
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  let tokens = 0;
  let ms = 0;
  for (let i = 0; i < PROMPTS.length; i++) {
    const wait = start + i * periodMs - performance.now();
    if (wait > 0) await sleep(wait);
    const r = await generate(e, v, PROMPTS[i]);
    record(t, e, i, r, v);
    tokens += r.stats.outputTokens;
    ms += r.stats.totalMs - r.stats.prefillMs;
  }
  const tail = start + PROMPTS.length * periodMs - performance.now();
  if (tail > 0) await sleep(tail);
  const cpu = process.cpuUsage(cpu0);
  const others = turnSensor.sample().othersCpu;
  if (others !== null) t.othersCpu.push(others);
  t.cpuMs += (cpu.user + cpu.system) / 1000;
  t.roundTps.push((1000 * tokens) / ms);
  if (!hogs.size) return;
  const work = hogWork(before, await hogs.snapshot());
  t.work = addWork(t.work, work);
  t.roundHog.push(workRate(work) ?? 0);
}

async function hogAlone(hogs: HogPool): Promise<HogWork> {
  if (!hogs.size) return { units: 0, seconds: 0 };
  const before = await hogs.snapshot();
  await sleep(HOG_ALONE_MS);
  return hogWork(before, await hogs.snapshot());
}

/**
 * Warm-up (which also times plain decoding for the request period), hog-alone windows around the
 * rounds, and the rounds with the variant order rotating.
 */
async function measure(e: BenchEngine, variants: Variant[], hogs: HogPool, label: string) {
  const plainMs: number[] = [];
  for (const v of variants) {
    configure(e, v);
    for (let i = 0; i < WARMUP; i++) {
      const t0 = performance.now();
      await generate(e, v, PROMPTS[i % PROMPTS.length]);
      if (v.mode === 'plain') plainMs.push(performance.now() - t0);
    }
  }
  const periodMs = hogs.size ? PACE * Math.max(...plainMs) : 0;
  if (periodMs) log(`${label}: a request every ${periodMs.toFixed(1)} ms (${PACE} x plain's generation time)`);
  const alone = [await hogAlone(hogs)];
  const tallies = new Map(variants.map((v) => [v.name, newTally()]));
  for (let round = 0; round < ROUNDS; round++) {
    log(`${label}: round ${round + 1}/${ROUNDS}`);
    // Rotating the order, and reversing it every other round, spreads drift on a shared machine
    // and what each turn inherits from the one before it (caches, the sizer's models) over all.
    for (let k = 0; k < variants.length; k++) {
      const i = round % 2 ? variants.length - 1 - k : k;
      const v = variants[(i + round) % variants.length];
      configure(e, v);
      await runTurn(e, v, tallies.get(v.name)!, hogs, periodMs);
    }
  }
  alone.push(await hogAlone(hogs));
  return { tallies, aloneRate: workRate(addWork(alone[0], alone[1])), periodMs };
}

// ---------------------------------------------------------------------------------------------
// Summaries

function median(xs: number[]): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
const round = (x: number | null, d = 3) => (x === null || !Number.isFinite(x) ? null : +x.toFixed(d));
const ratio = (a: number | null | undefined, b: number | null | undefined) => (a != null && b ? round(a / b) : null);

/**
 * Median over rounds of a's tokens/s over b's in the same round: turns of one round run seconds
 * apart, so what drifts on a shared machine over minutes cancels in each pair.
 */
function paired(a: VariantResult | null | undefined, b: VariantResult | null | undefined): number | null {
  if (!a || !b) return null;
  const n = Math.min(a.tokens_per_s_rounds.length, b.tokens_per_s_rounds.length);
  const rs = [];
  for (let i = 0; i < n; i++) if (b.tokens_per_s_rounds[i] > 0) rs.push(a.tokens_per_s_rounds[i] / b.tokens_per_s_rounds[i]);
  return rs.length ? round(median(rs)) : null;
}

interface VariantResult {
  tokens_per_s: number | null;
  tokens_per_s_rounds: number[];
  cpu_ms_per_token: number | null;
  rows_per_step: number | null;
  tokens_per_step: number | null;
  run_ms_per_step: number | null;
  host_ms_per_step: number | null;
  hog_units_per_s: number | null;
  hog_units_per_s_rounds: number[];
  hog_vs_alone: number | null;
  others_cpu: number | null;
  generations: number;
  mismatches: number;
}

function summarise(t: Tally, aloneRate: number | null): VariantResult {
  const hogRate = workRate(t.work);
  return {
    tokens_per_s: round(median(t.roundTps), 1),
    tokens_per_s_rounds: t.roundTps.map((x) => +x.toFixed(1)),
    cpu_ms_per_token: round(t.cpuMs / t.tokens, 4),
    rows_per_step: round(t.steps ? t.rows / t.steps : null, 2),
    // Committed tokens per tree step (accepted drafts + the bonus token): the acceptance g(budget).
    tokens_per_step: round(t.steps ? t.committed / t.steps : null),
    // Where a step's time goes: ORT, and everything else in the loop (the sizer's share is in host).
    run_ms_per_step: round(t.steps ? t.runMs / t.steps : null, 4),
    host_ms_per_step: round(t.steps ? t.hostMs / t.steps : null, 4),
    hog_units_per_s: round(hogRate, 1),
    hog_units_per_s_rounds: t.roundHog.map((x) => +x.toFixed(1)),
    hog_vs_alone: ratio(hogRate, aloneRate),
    others_cpu: round(mean(t.othersCpu)),
    generations: t.generations,
    mismatches: t.mismatches,
  };
}

/** Ratios and pass/fail targets of one condition (null where not measured; never assumed). */
function verdict(hogs: number, vs: Record<string, VariantResult | null>) {
  const tps = (n: string) => vs[n]?.tokens_per_s ?? null;
  // Best fixed by median tokens/s; every ratio below is paired per round (see paired).
  const fastest = (names: string[]) => names.reduce((a, b) => ((tps(b) ?? -1) > (tps(a) ?? -1) ? b : a));
  const bestFixed = fastest(FIXED.map((b) => `fixed_${b}`));
  const best = fastest(Object.keys(vs));
  const r = {
    best_fixed: bestFixed,
    adaptive_vs_best_fixed: paired(vs.auto, vs[bestFixed]),
    adaptive_vs_plain: paired(vs.auto, vs.plain),
    throughput_vs_best_fixed: paired(vs.throughput, vs[bestFixed]),
    throughput_vs_plain: paired(vs.throughput, vs.plain),
    // Two identical variants: how far apart chance alone puts them in this run.
    control_fixed_8_again_vs_fixed_8: paired(vs.fixed_8_again, vs.fixed_8),
    neighbourly_vs_widest_hog_work: hogs ? ratio(vs.neighbourly?.hog_units_per_s, vs.fixed_32?.hog_units_per_s) : null,
    neighbourly_vs_best_tokens: paired(vs.neighbourly, vs[best]),
  };
  const ge = (x: number | null, floor: number) => (x === null ? null : x >= floor);
  const neighbourly =
    r.neighbourly_vs_widest_hog_work === null || r.neighbourly_vs_best_tokens === null
      ? null
      : r.neighbourly_vs_widest_hog_work >= MEASURABLE && r.neighbourly_vs_best_tokens >= 0.9;
  const targets = {
    adaptive_ge_095_best_fixed: ge(r.adaptive_vs_best_fixed, 0.95),
    adaptive_ge_plain: ge(r.adaptive_vs_plain, 1.0),
    neighbourly_more_hog_work_le_10pct_loss: hogs ? neighbourly : null,
  };
  return { ...r, targets };
}

function printTable(model: string, c: Condition, threads: number, vs: Record<string, VariantResult | null>, aloneRate: number | null): void {
  const cols = ['variant', 'tok/s', 'x plain', 'CPU ms/tok', 'rows/step', 'tok/step', 'run ms', 'host ms', 'hog units/s', 'hog/alone', 'others CPU', 'mismatch'];
  const w = [14, 9, 8, 11, 10, 9, 8, 8, 12, 10, 11, 9];
  const line = (cells: (string | number | null)[]) => cells.map((x, i) => String(x ?? '-')[i ? 'padStart' : 'padEnd'](w[i])).join('');
  console.log(`\n${model} | ${c.name} (${c.hogs} hog${c.hogs === 1 ? '' : 's'}) | ORT threads ${threads} | hog alone ${round(aloneRate, 1) ?? '-'} units/s`);
  console.log(line(cols));
  for (const v of VARIANTS) {
    const r = vs[v.name];
    if (!r) {
      console.log(line([v.name, 'not measured']));
      continue;
    }
    const xPlain = ratio(r.tokens_per_s, vs.plain?.tokens_per_s);
    console.log(line([v.name, r.tokens_per_s, xPlain, r.cpu_ms_per_token, r.rows_per_step, r.tokens_per_step, r.run_ms_per_step, r.host_ms_per_step, r.hog_units_per_s, r.hog_vs_alone, r.others_cpu, r.mismatches]));
  }
}

function printVerdict(v: ReturnType<typeof verdict>): void {
  const t = (x: boolean | null) => (x === null ? 'n/a' : x ? 'PASS' : 'FAIL');
  console.log(`best fixed ${v.best_fixed}; auto vs best fixed ${v.adaptive_vs_best_fixed ?? '-'} (>= 0.95: ${t(v.targets.adaptive_ge_095_best_fixed)}), ` +
    `auto vs plain ${v.adaptive_vs_plain ?? '-'} (>= 1.0: ${t(v.targets.adaptive_ge_plain)}); throughput vs best fixed ${v.throughput_vs_best_fixed ?? '-'}, vs plain ${v.throughput_vs_plain ?? '-'}`);
  console.log(`neighbourly: hog work vs fixed_32 ${v.neighbourly_vs_widest_hog_work ?? '-'}, tokens/s vs best ${v.neighbourly_vs_best_tokens ?? '-'} ` +
    `(>= ${MEASURABLE} and >= 0.90: ${t(v.targets.neighbourly_more_hog_work_le_10pct_loss)})`);
  console.log(`control: fixed 8 rows run twice as two variants, second vs first ${v.control_fixed_8_again_vs_fixed_8 ?? '-'}`);
}

// ---------------------------------------------------------------------------------------------
// Projection for real board models (optional)

interface Projection {
  graphs: Map<number, ProjectionGraph>;
  results: Record<string, unknown>[];
}

function runProjection(p: Projection, c: Condition, threads: number, vs: Record<string, VariantResult | null>, gainModel: string) {
  const graph = p.graphs.get(threads)!;
  const curve = stepCurve(graph);
  const gains = [{ budget: 1, tokensPerStep: 1, rowsPerStep: 1 }, ...FIXED.flatMap((b) => {
    const r = vs[`fixed_${b}`];
    return r?.tokens_per_step && r.rows_per_step ? [{ budget: b, tokensPerStep: r.tokens_per_step, rowsPerStep: r.rows_per_step }] : [];
  })];
  const pick = projectBudget(curve, gains);
  const result = {
    condition: c.name, threads, graph: graph.name, params: graph.params, gain_from: gainModel,
    step_ms: Object.fromEntries(Object.entries(curve).map(([k, v]) => [k, +v.toFixed(3)])),
    gain: Object.fromEntries(gains.map((g) => [g.budget, g.tokensPerStep])),
    ...pick,
  };
  p.results.push(result);
  console.log(`projection for real board models: ${graph.name} (~${(graph.params / 1e6).toFixed(1)} M params), ${c.name}, threads ${threads}, cached 128`);
  console.log(`  step ms by rows: ${Object.entries(result.step_ms).map(([k, v]) => `${k}:${v}`).join(' ')}`);
  console.log(`  projected tok/s by budget (g from ${gainModel}): ${Object.entries(pick.tokens_per_s).map(([k, v]) => `${k}:${v}`).join(' ')}`);
  console.log(`  sizer (bestBudget) picks: throughput ${pick.throughput_pick} rows, neighbourly ${pick.neighbourly_pick} rows`);
}

// ---------------------------------------------------------------------------------------------
// Main

function estimateMinutes(): number {
  // ~1500 tok/s plain and ~3000 tree: the 2-core VM shared with other work (the full run took
  // 10.4 min against 4.9 estimated from the idle README speeds); hogs take a share of the cores.
  const perVariantTokens = (ROUNDS + WARMUP / PROMPTS.length) * PROMPTS.length * NEW_TOKENS;
  let s = 0;
  for (const c of CONDITIONS) {
    const slow = 1 + c.hogs / availableParallelism();
    const backToBack = perVariantTokens / 1500 + ((VARIANTS.length - 1) * perVariantTokens) / 3000;
    // Paced: every turn lasts about PACE x plain's.
    const paced = (VARIANTS.length * PACE * perVariantTokens) / 1500;
    const variantS = (c.hogs && PACE > 0 ? Math.max(backToBack, paced) : backToBack) * slow;
    s += THREADS.length * (variantS + (c.hogs ? (2 * HOG_ALONE_MS) / 1000 + 1 : 0));
  }
  return (MODELS.length * s + MODELS.length * THREADS.length * 3) / 60;
}

async function runCondition(model: string, engines: BenchEngine[], c: Condition, projection: Projection | null) {
  const hogs = new HogPool();
  await hogs.start(c.hogs);
  const out = [];
  try {
    for (const e of engines) {
      const variants = VARIANTS;
      const label = `${model} ${c.name} threads ${e.threads}`;
      const { tallies, aloneRate, periodMs } = await measure(e, variants, hogs, label);
      const vs = Object.fromEntries(VARIANTS.map((v) => [v.name, tallies.has(v.name) ? summarise(tallies.get(v.name)!, aloneRate) : null]));
      const v = verdict(c.hogs, vs);
      printTable(model, c, e.threads, vs, aloneRate);
      printVerdict(v);
      if (projection) runProjection(projection, c, e.threads, vs, model);
      out.push({ name: c.name, hogs: c.hogs, threads: e.threads, request_period_ms: round(periodMs, 1), hog_alone_units_per_s: round(aloneRate, 1), variants: vs, ...v });
    }
  } finally {
    await hogs.stop();
  }
  return out;
}

async function runModel(dir: string, projection: Projection | null) {
  const engines: BenchEngine[] = [];
  for (const t of THREADS) engines.push(await openEngine(dir, t));
  const model = engines[0].engine.info().model;
  // Exactly as the daemon: a board sample every 250 ms goes to the engine's tree sizing.
  const feed = new LoadFeed({
    intervalMs: 250,
    onSample: (s) => {
      for (const e of engines) e.engine.setLoad(boardLoad(s));
    },
  });
  feed.start();
  const conditions = [];
  try {
    for (const c of CONDITIONS) conditions.push(...(await runCondition(model, engines, c, projection)));
  } finally {
    feed.stop();
    for (const e of engines) await e.engine.close();
  }
  return { model, threads: THREADS, prompts: PROMPTS.length, new_tokens: NEW_TOKENS, rounds: ROUNDS, conditions };
}

async function main(): Promise<void> {
  const t0 = performance.now();
  log(`${MODELS.length} model(s) x ${CONDITIONS.length} condition(s) x ${THREADS.length} thread count(s) x ${VARIANTS.length} variants, ` +
    `${ROUNDS} rounds x ${PROMPTS.length} prompts x ${NEW_TOKENS} tokens: estimated ${estimateMinutes().toFixed(1)} min (+ projection)`);
  const models = [];
  let projection: Projection | null = null;
  if (args.projection) {
    projection = { graphs: new Map(THREADS.map((t) => [t, openProjection(args.projection!, t)])), results: [] };
  }
  for (const [i, m] of MODELS.entries()) {
    // The projection borrows acceptance from the first model (the bundled one by default).
    models.push(await runModel(m.dir, i === 0 ? projection : null));
    log(`${m.name} done after ${((performance.now() - t0) / 60000).toFixed(1)} min`);
  }
  const mismatches = models.flatMap((m) => m.conditions).reduce((n, c) => n + Object.values(c.variants).reduce((k, v) => k + (v?.mismatches ?? 0), 0), 0);
  if (mismatches) console.log(`\n!!! ${mismatches} generation(s) differ from plain decoding: tree decoding was NOT lossless !!!`);
  else console.log('\nevery variant reproduced plain decoding token for token');
  if (args.json) {
    console.log(JSON.stringify({ models, projection: projection?.results ?? null, mismatches, minutes: round((performance.now() - t0) / 60000, 2) }));
  }
}

await main();
