/** Messages between the main-thread Engine and the engine worker (only ids, text and stats cross). */
import type { BoardLoad, TreePolicy } from './load.js';
import type { EngineErrorCode, EngineInfo, GenerateRequest, GenerateResult, TreeInfo } from './types.js';
import { TREE_POLICIES } from './load.js';

/**
 * Shared Int32Array slots written by the main thread and read by the worker at step boundaries
 * (a step reads them without a message, so a new load reading reaches the very next step).
 */
export const SLOT_CANCEL = 0; // id of the request to cancel (0 = none)
export const SLOT_BUDGET = 1; // fixed draft-tree row budget (policy fixed, sampled requests)
export const SLOT_POLICY = 2; // index into TREE_POLICIES
export const SLOT_OTHERS_CPU = 3; // BoardLoad.othersCpu, per mille
export const SLOT_CORES = 4;
export const SLOT_TEMP = 5; // BoardLoad.tempC in centi-degrees, NO_READING when none
export const SLOT_THROTTLED = 6; // 0 / 1
export const SLOT_GPU = 7; // BoardLoad.gpuBusy, per mille, NO_READING when none
export const SLOT_LOAD_SET = 8; // 1 once a load reading was written
export const SLOT_PRESSURE = 9; // BoardLoad.cpuPressure, per mille, NO_READING when none
export const SHARED_SLOTS = 10;
const NO_READING = -0x80000000;

/** Largest tree a step may use (rows); CPU steps stop paying well before this (platform-notes). */
export const MAX_TREE_ROWS = 64;

/** A row budget as steps can use it: an integer in 1..MAX_TREE_ROWS. */
export function clampRows(rows: number): number {
  return Math.min(MAX_TREE_ROWS, Math.max(1, Math.floor(rows)));
}

export function writeLoad(shared: Int32Array, load: BoardLoad): void {
  Atomics.store(shared, SLOT_OTHERS_CPU, Math.round(clamp01(load.othersCpu) * 1000));
  Atomics.store(shared, SLOT_CORES, Math.max(1, Math.round(load.cores)));
  Atomics.store(shared, SLOT_TEMP, load.tempC === null || !Number.isFinite(load.tempC) ? NO_READING : Math.round(load.tempC * 100));
  Atomics.store(shared, SLOT_THROTTLED, load.throttled ? 1 : 0);
  Atomics.store(shared, SLOT_GPU, perMille(load.gpuBusy));
  Atomics.store(shared, SLOT_PRESSURE, perMille(load.cpuPressure));
  Atomics.store(shared, SLOT_LOAD_SET, 1);
}

/** The last load the main thread wrote into `into` (no allocation); false when none was written yet. */
export function readLoad(shared: Int32Array, into: BoardLoad): boolean {
  if (Atomics.load(shared, SLOT_LOAD_SET) !== 1) return false;
  into.othersCpu = Atomics.load(shared, SLOT_OTHERS_CPU) / 1000;
  into.cores = Atomics.load(shared, SLOT_CORES);
  const temp = Atomics.load(shared, SLOT_TEMP);
  into.tempC = temp === NO_READING ? null : temp / 100;
  into.throttled = Atomics.load(shared, SLOT_THROTTLED) === 1;
  into.gpuBusy = share(Atomics.load(shared, SLOT_GPU));
  into.cpuPressure = share(Atomics.load(shared, SLOT_PRESSURE));
  return true;
}

/** An optional 0..1 share as stored in a slot: per mille, NO_READING when unknown. */
function perMille(x: number | null): number {
  return x === null || !Number.isFinite(x) ? NO_READING : Math.round(clamp01(x) * 1000);
}

function share(slot: number): number | null {
  return slot === NO_READING ? null : slot / 1000;
}

export function writePolicy(shared: Int32Array, policy: TreePolicy): void {
  Atomics.store(shared, SLOT_POLICY, TREE_POLICIES.indexOf(policy));
}

export function readPolicy(shared: Int32Array): TreePolicy {
  return TREE_POLICIES[Atomics.load(shared, SLOT_POLICY)] ?? 'fixed';
}

function clamp01(x: number): number {
  return Number.isFinite(x) ? Math.min(1, Math.max(0, x)) : 0;
}

export interface LoadOptions {
  packageDir: string;
  variant: string;
  threads: number; // 0 = auto
  executionProviders: string[];
  tree: TreeOptions;
}

/** Tree sizing settings (config `tree.*`). */
export interface TreeOptions {
  policy: TreePolicy;
  /** Rows for policy fixed and for sampled requests (which keep a fixed tree: see tree-sizing.ts). */
  fixedRows: number;
  minRows: number;
  maxRows: number;
}

export type ToWorker =
  | { type: 'load'; options: LoadOptions; shared: SharedArrayBuffer }
  | { type: 'generate'; id: number; req: GenerateRequest };

export type FromWorker =
  | { type: 'ready'; info: EngineInfo }
  | { type: 'tree'; tree: TreeInfo }
  | { type: 'chunk'; id: number; text: string; tokens: number[] }
  | { type: 'done'; id: number; result: GenerateResult }
  | { type: 'error'; id: number; code: EngineErrorCode; message: string };
