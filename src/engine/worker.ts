/** The engine worker: owns the ONNX session, the KV cache and all step buffers. */
import { parentPort } from 'node:worker_threads';
import { loadPackage, threadsFor } from './package.js';
import { openSession } from './ort.js';
import { loadCodec } from './text.js';
import { Generator } from './generate.js';
import { type FromWorker, type ToWorker, SLOT_BUDGET, writePolicy } from './protocol.js';
import { TreeSizing } from './tree-sizing.js';
import { EngineError } from './types.js';

const port = parentPort!;
let generator: Generator | null = null;
let sizing: TreeSizing | null = null;
let shared: Int32Array;

function post(m: FromWorker): void {
  port.postMessage(m);
}

port.on('message', (m: ToWorker) => {
  if (m.type === 'load') {
    try {
      shared = new Int32Array(m.shared);
      Atomics.store(shared, SLOT_BUDGET, m.options.tree.fixedRows);
      writePolicy(shared, m.options.tree.policy);
      const pkg = loadPackage(m.options.packageDir, m.options.variant);
      const session = openSession(pkg.graphPath, {
        threads: m.options.threads || threadsFor(pkg.manifest.architecture),
        executionProviders: m.options.executionProviders,
      });
      sizing = new TreeSizing(shared, m.options.tree, (tree) => post({ type: 'tree', tree }));
      generator = new Generator(pkg, session, loadCodec(pkg), shared, sizing);
      sizing.calibrate(generator.model);
      post({ type: 'ready', info: generator.info() });
    } catch (e) {
      const code = e instanceof EngineError ? e.code : 'package_invalid';
      post({ type: 'error', id: 0, code, message: (e as Error).message });
    }
    return;
  }
  if (!generator) {
    post({ type: 'error', id: m.id, code: 'model_error', message: 'engine not loaded' });
    return;
  }
  try {
    const result = generator.run(m.id, m.req, (text, tokens) => post({ type: 'chunk', id: m.id, text, tokens }));
    sizing?.report(true);
    post({ type: 'done', id: m.id, result });
  } catch (e) {
    const code = e instanceof EngineError ? e.code : ((e as { code?: string }).code === 'prompt_too_long' ? 'prompt_too_long' : 'model_error');
    post({ type: 'error', id: m.id, code: code as EngineError['code'], message: (e as Error).message });
  }
});
