/** Messages between the main-thread Engine and the engine worker (only ids, text and stats cross). */
import type { EngineErrorCode, EngineInfo, GenerateRequest, GenerateResult } from './types.js';

/** Shared Int32Array slots written by the main thread and read by the worker at step boundaries. */
export const SLOT_CANCEL = 0; // id of the request to cancel (0 = none)
export const SLOT_BUDGET = 1; // draft-tree row budget
export const SHARED_SLOTS = 2;

export interface LoadOptions {
  packageDir: string;
  variant: string;
  threads: number; // 0 = auto
  executionProviders: string[];
  treeBudget: number;
}

export type ToWorker =
  | { type: 'load'; options: LoadOptions; shared: SharedArrayBuffer }
  | { type: 'generate'; id: number; req: GenerateRequest };

export type FromWorker =
  | { type: 'ready'; info: EngineInfo }
  | { type: 'chunk'; id: number; text: string; tokens: number[] }
  | { type: 'done'; id: number; result: GenerateResult }
  | { type: 'error'; id: number; code: EngineErrorCode; message: string };
