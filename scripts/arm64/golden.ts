/**
 * The golden decoding check: fixed prompts decoded greedily, plain and tree, whose token ids on an
 * arm64 board (or under emulation) must equal the ones recorded on x86.
 *
 *   node --import tsx scripts/arm64/golden.ts write [--out test/arm64/golden.json] [--count 12]
 *   node --import tsx scripts/arm64/golden.ts check [--golden test/arm64/golden.json] [--json]
 *
 * `write` runs on x86 and records the prompts with both outputs; `check` decodes the recorded
 * prompts on this machine and compares. One ORT thread and a fixed 10-row tree on both sides, so
 * nothing but the architecture (MLAS kernels, libm) differs between the two runs.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { arch } from 'node:os';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { loadEngine, type WorkerEngine } from '../../src/engine/index.js';

const ROOT = resolve(import.meta.dirname, '../..');
const MODEL = resolve(ROOT, 'models/tinystories-bita');
// 32 new tokens: under qemu the tree path runs ≈ 4 tok/s (10 rows cost ≈ 10x one row when every
// SIMD instruction is emulated), so 12 prompts x 32 tokens x 2 modes keep this stage near 3 minutes.
const MAX_TOKENS = 32;
const ENGINE_OPTS = { threads: 1, treePolicy: 'fixed', treeBudget: 10 } as const;

export interface GoldenCase {
  prompt: string;
  plain: number[];
  tree: number[];
  text: string;
}

export interface Golden {
  model: string;
  arch: string;
  node: string;
  maxTokens: number;
  engine: typeof ENGINE_OPTS;
  cases: GoldenCase[];
}

interface Decoded {
  cases: GoldenCase[];
  tokens: number;
  plainS: number;
  treeS: number;
}

async function decodeAll(engine: WorkerEngine, prompts: string[], maxTokens: number): Promise<Decoded> {
  const out: Decoded = { cases: [], tokens: 0, plainS: 0, treeS: 0 };
  for (const prompt of prompts) {
    const req = { prompt, maxTokens, stop: [] as string[] };
    let t0 = performance.now();
    const plain = await engine.generate({ ...req, mode: 'plain' });
    out.plainS += (performance.now() - t0) / 1000;
    t0 = performance.now();
    const tree = await engine.generate({ ...req, mode: 'bita' });
    out.treeS += (performance.now() - t0) / 1000;
    out.tokens += plain.tokens.length;
    out.cases.push({ prompt, plain: plain.tokens, tree: tree.tokens, text: tree.text });
  }
  return out;
}

/** Held-out TinyStories openings (bench/data.ts), as the decoding benchmark uses them. */
async function prompts(count: number): Promise<string[]> {
  const { storyPrompts } = await import('../../bench/data.js');
  return storyPrompts(count);
}

async function write(outPath: string, count: number): Promise<void> {
  const engine = await loadEngine(MODEL, ENGINE_OPTS);
  try {
    const d = await decodeAll(engine, await prompts(count), MAX_TOKENS);
    const bad = d.cases.filter((c) => c.plain.join() !== c.tree.join());
    if (bad.length) throw new Error(`tree output differs from plain on this machine for ${bad.length} prompts: not a golden`);
    const golden: Golden = {
      model: 'models/tinystories-bita', arch: arch(), node: process.versions.node,
      maxTokens: MAX_TOKENS, engine: ENGINE_OPTS, cases: d.cases,
    };
    // One case per line: reviewable in a diff, and a changed token shows which prompt moved.
    const { cases, ...head } = golden;
    const body = JSON.stringify(head, null, 1).replace(/\n}$/, `,\n "cases": [\n${cases.map((c) => '  ' + JSON.stringify(c)).join(',\n')}\n ]\n}`);
    writeFileSync(outPath, body + '\n');
    console.log(`golden: ${d.cases.length} prompts, ${d.tokens} tokens each way, written to ${outPath}`);
  } finally {
    await engine.close();
  }
}

export interface CheckResult {
  prompts: number;
  plainIdentical: number;
  treeIdentical: number;
  /** Tokens per second of this machine (under qemu: emulated, not a board's speed). */
  plainTokS: number;
  treeTokS: number;
  mismatches: string[];
}

async function check(goldenPath: string): Promise<CheckResult> {
  const golden = JSON.parse(readFileSync(goldenPath, 'utf8')) as Golden;
  const engine = await loadEngine(MODEL, golden.engine);
  try {
    const d = await decodeAll(engine, golden.cases.map((c) => c.prompt), golden.maxTokens);
    const mismatches: string[] = [];
    let plainIdentical = 0;
    let treeIdentical = 0;
    golden.cases.forEach((g, i) => {
      const got = d.cases[i];
      if (got.plain.join() === g.plain.join()) plainIdentical++;
      else mismatches.push(`prompt ${i} plain: first difference at token ${firstDiff(got.plain, g.plain)}`);
      if (got.tree.join() === g.tree.join()) treeIdentical++;
      else mismatches.push(`prompt ${i} tree: first difference at token ${firstDiff(got.tree, g.tree)}`);
    });
    const treeTokens = d.cases.reduce((n, c) => n + c.tree.length, 0);
    return {
      prompts: golden.cases.length, plainIdentical, treeIdentical,
      plainTokS: d.tokens / d.plainS, treeTokS: treeTokens / d.treeS, mismatches,
    };
  } finally {
    await engine.close();
  }
}

function firstDiff(a: number[], b: number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

async function main(): Promise<number> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      out: { type: 'string', default: resolve(ROOT, 'test/arm64/golden.json') },
      golden: { type: 'string', default: resolve(ROOT, 'test/arm64/golden.json') },
      count: { type: 'string', default: '12' },
      json: { type: 'boolean', default: false },
    },
  });
  if (positionals[0] === 'write') {
    await write(values.out, Number(values.count));
    return 0;
  }
  if (positionals[0] !== 'check') {
    console.error('usage: golden.ts write [--out FILE] [--count N] | check [--golden FILE] [--json]');
    return 2;
  }
  const r = await check(values.golden);
  const ok = r.plainIdentical === r.prompts && r.treeIdentical === r.prompts;
  for (const m of r.mismatches) console.error(`golden: ${m}`);
  console.log(
    `golden (${arch()}): plain ${r.plainIdentical}/${r.prompts}, tree ${r.treeIdentical}/${r.prompts} identical to the x86 golden; ` +
      `${r.plainTokS.toFixed(1)} / ${r.treeTokS.toFixed(1)} tok/s plain / tree on this machine`,
  );
  if (values.json) console.log(JSON.stringify({ ok, arch: arch(), ...r }));
  return ok ? 0 : 1;
}

process.exitCode = await main();
