/**
 * The only module that imports onnxruntime-node. It uses the package's native binding directly:
 * its `run` is synchronous (the public `InferenceSession.run` wraps the same call in a Promise and
 * a setImmediate hop per step), which lets the decoding core stay a plain synchronous loop inside
 * the engine worker (platform-notes.md: run blocks anyway, so it lives off the main thread).
 */
import * as ort from 'onnxruntime-node';
import { binding, initOrt } from 'onnxruntime-node/dist/binding.js';
import { EngineError } from './types.js';

export type Feeds = Record<string, ort.Tensor>;
export type Outputs = Record<string, ort.Tensor>;

export interface SessionOptions {
  threads?: number;
  executionProviders?: string[];
}

export interface SyncSession {
  readonly inputNames: string[];
  readonly outputNames: string[];
  run(feeds: Feeds, fetches: Record<string, null>): Outputs;
  dispose(): void;
}

interface NativeSession {
  loadModel(path: string, options: object): void;
  readonly inputMetadata: { name: string }[];
  readonly outputMetadata: { name: string }[];
  run(feeds: Feeds, fetches: Record<string, null>, options: object): Outputs;
  dispose(): void;
}

export function openSession(path: string, opts: SessionOptions = {}): SyncSession {
  initOrt();
  const native = new (binding.InferenceSession as unknown as new () => NativeSession)();
  try {
    native.loadModel(path, {
      intraOpNumThreads: opts.threads ?? 2,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      executionProviders: opts.executionProviders ?? ['cpu'],
    });
  } catch (e) {
    throw loadError(path, opts.executionProviders ?? ['cpu'], (e as Error).message);
  }
  const runOptions = {};
  return {
    inputNames: native.inputMetadata.map((m) => m.name),
    outputNames: native.outputMetadata.map((m) => m.name),
    run: (feeds, fetches) => native.run(feeds, fetches, runOptions),
    dispose: () => native.dispose(),
  };
}

/**
 * A configured execution provider this onnxruntime build lacks fails the whole load (there is no
 * fallback to the next provider in the list), and onnxruntime's words ("Failed to load shared
 * library", "is unsupported") read as if the model were broken: say which provider and what to do.
 */
function loadError(path: string, providers: string[], message: string): EngineError {
  const missing = /AppendExecutionProvider_(\w+)|executionProviders\[\d+\] is unsupported: '([^']+)'/.exec(message);
  if (!missing) return new EngineError('package_invalid', `${path}: onnxruntime could not load the graph (${message})`);
  const name = (missing[1] ?? missing[2]).toLowerCase();
  return new EngineError(
    'model_error',
    `execution provider "${name}" (model.execution_providers: [${providers.join(', ')}]) is not available in this ` +
      `onnxruntime-node build (${message}); bitad does not fall back to the next provider. Use [cpu], or install an ` +
      `onnxruntime build that has the ${name} execution provider (README "Boards").`,
  );
}

export function tensor(type: 'float32', data: Float32Array, dims: number[]): ort.Tensor;
export function tensor(type: 'int64', data: BigInt64Array, dims: number[]): ort.Tensor;
export function tensor(type: 'float32' | 'int64', data: Float32Array | BigInt64Array, dims: number[]): ort.Tensor {
  return new ort.Tensor(type, data, dims);
}
