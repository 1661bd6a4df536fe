/** Real-model fixtures for engine tests: an in-process Generator over a package folder. */
import { existsSync } from 'node:fs';
import { loadPackage } from '../../src/engine/package.js';
import { openSession } from '../../src/engine/ort.js';
import { loadCodec } from '../../src/engine/text.js';
import { Generator } from '../../src/engine/generate.js';
import { SHARED_SLOTS, SLOT_BUDGET } from '../../src/engine/protocol.js';

export interface InProcess {
  gen: Generator;
  shared: Int32Array;
  setBudget(rows: number): void;
}

export function inProcess(dir: string, budget = 16, variant = 'default'): InProcess {
  const pkg = loadPackage(dir, variant);
  const shared = new Int32Array(new SharedArrayBuffer(SHARED_SLOTS * 4));
  shared[SLOT_BUDGET] = budget;
  const gen = new Generator(pkg, openSession(pkg.graphPath, { threads: 2 }), loadCodec(pkg), shared);
  return { gen, shared, setBudget: (rows) => (shared[SLOT_BUDGET] = rows) };
}

export function requirePackage(dir: string, how: string): void {
  if (!existsSync(`${dir}/manifest.json`)) {
    throw new Error(`model package ${dir} is missing: build it with \`${how}\``);
  }
}
