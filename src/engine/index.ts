/** Engine entry point: load a model package and return an Engine (see types.ts). */
import { EngineError, type Engine } from './types.js';

export * from './types.js';

export interface EngineOptions {
  /** Graph variant from the manifest ("default" picks the manifest's choice). */
  variant?: string;
  /** ORT intra-op threads (default: 2). */
  threads?: number;
  /** Execution providers, in order (default ["cpu"]). */
  executionProviders?: string[];
  /** Initial draft-tree row budget. */
  treeBudget?: number;
}

// Placeholder until the ORT engine lands (in progress in this session).
export async function loadEngine(packageDir: string, _opts: EngineOptions = {}): Promise<Engine> {
  throw new EngineError('package_invalid', `engine not yet implemented (package ${packageDir})`);
}
