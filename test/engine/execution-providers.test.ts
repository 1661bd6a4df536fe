import t from 'tap';
import { BUNDLED_MODEL } from '../../bench/data.js';
import { loadEngine } from '../../src/engine/index.js';

// model.execution_providers goes to onnxruntime as the session's provider list. The npm build of
// onnxruntime-node here has no CUDA provider (its postinstall download is skipped), as on a Jetson
// with the stock package: the load must fail saying which provider is missing and what to do,
// not as a broken model package, and never fall back to the CPU unannounced.
t.test('a configured provider this onnxruntime lacks fails the load with a clear error', async (t) => {
  for (const providers of [['cuda'], ['cuda', 'cpu']]) {
    await t.rejects(loadEngine(BUNDLED_MODEL, { executionProviders: providers }), {
      code: 'model_error',
      message: new RegExp(`execution provider "cuda" \\(model\\.execution_providers: \\[${providers.join(', ')}\\]\\) is not available in this onnxruntime-node build.*does not fall back.*Use \\[cpu\\]`),
    }, `[${providers.join(', ')}]`);
  }
});

t.test('a provider name onnxruntime does not know is named the same way', async (t) => {
  await t.rejects(loadEngine(BUNDLED_MODEL, { executionProviders: ['no-such-ep'] }), {
    code: 'model_error',
    message: /execution provider "no-such-ep" .* is not available/,
  });
});

t.test('[cpu] loads and generates', async (t) => {
  const engine = await loadEngine(BUNDLED_MODEL, { executionProviders: ['cpu'] });
  t.teardown(() => engine.close());
  const r = await engine.generate({ prompt: 'Once upon a time', maxTokens: 8 });
  t.equal(r.tokens.length, 8);
});
