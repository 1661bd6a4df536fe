/** EngineInfo for stand-in engines in tests: a fixed tree of `rows` rows. */
import type { EngineInfo } from '../../../src/engine/types.js';

export function stubInfo(model: string, rows = 1, bita = false): EngineInfo {
  return {
    model,
    contextLength: 512,
    vocabSize: 512,
    bita,
    treeBudget: rows,
    fineTuned: null,
    tree: { policy: 'fixed', active: 'fixed', rows, minRows: 1, maxRows: rows, reason: 'stand-in engine', changes: 0 },
  };
}
