/** Real-model fixtures for engine tests: an in-process Generator over a package folder. */
import { existsSync } from 'node:fs';
import { loadPackage } from '../../src/engine/package.js';
import { openSession } from '../../src/engine/ort.js';
import { loadCodec } from '../../src/engine/text.js';
import { Generator, type Sizing, type StepHook } from '../../src/engine/generate.js';
import { SHARED_SLOTS, SLOT_BUDGET, writePolicy, type TreeOptions } from '../../src/engine/protocol.js';
import { TreeSizing } from '../../src/engine/tree-sizing.js';
import type { TreeInfo } from '../../src/engine/types.js';
import { Rng } from '../../src/decoding/rng.js';

export interface InProcess {
  gen: Generator;
  shared: Int32Array;
  setBudget(rows: number): void;
}

/**
 * An in-process Generator, sized as the worker sizes it (TreeSizing; policy fixed at `budget` rows
 * unless `tree` says otherwise), or by `sizing` when given.
 */
export function inProcess(dir: string, budget = 16, variant = 'default', sizing?: Sizing, tree: Partial<TreeOptions> = {}): InProcess & { tree: TreeInfo[] } {
  const pkg = loadPackage(dir, variant);
  const shared = new Int32Array(new SharedArrayBuffer(SHARED_SLOTS * 4));
  shared[SLOT_BUDGET] = budget;
  const options: TreeOptions = { policy: 'fixed', fixedRows: budget, minRows: 1, maxRows: 32, ...tree };
  writePolicy(shared, options.policy);
  const posted: TreeInfo[] = [];
  const real = new TreeSizing(shared, options, (info) => posted.push(info));
  const gen = new Generator(pkg, openSession(pkg.graphPath, { threads: 2 }), loadCodec(pkg), shared, sizing ?? real);
  if (!sizing) real.calibrate(gen.model);
  return { gen, shared, setBudget: (rows) => (shared[SLOT_BUDGET] = rows), tree: posted };
}

/** Sizing that gives every step a different budget from a seeded sequence (1..maxRows); counts steps. */
export class EveryStepSizing implements Sizing {
  readonly budgets: number[] = [];
  private readonly rng: Rng;
  constructor(seed: number, private readonly maxRows = 40) {
    this.rng = new Rng(seed);
  }
  forRequest(): StepHook {
    return {
      policy: 'every-step',
      before: (dec) => {
        const rows = 1 + (this.rng.nextU32() % this.maxRows);
        this.budgets.push(rows);
        dec.setBudget(rows);
      },
      after: () => {},
    };
  }
  info(): TreeInfo {
    return { policy: 'fixed', active: 'fixed', rows: 0, minRows: 1, maxRows: this.maxRows, reason: 'test: a new budget every step', changes: this.budgets.length };
  }
}

export function requirePackage(dir: string, how: string): void {
  if (!existsSync(`${dir}/manifest.json`)) {
    throw new Error(`model package ${dir} is missing: build it with \`${how}\``);
  }
}
