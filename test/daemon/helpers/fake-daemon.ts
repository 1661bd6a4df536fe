/**
 * `bitad start` with the model-free FakeEngine, as its own process: for tests that must kill or
 * signal a real daemon process and for bench/transport.ts without a model. Same arguments as
 * `bitad start` (`--config <file>`, BITAD_CONFIG, BITAD_*); FakeEngine options come as JSON in
 * FAKE_ENGINE (e.g. '{"chunkDelayMs":0,"contextLength":64}'). Exit codes as the CLI's.
 */
import { parseArgs } from 'node:util';
import { start } from '../../../src/cli/commands/start.js';
import { ConfigError } from '../../../src/daemon/config/load.js';
import { FakeEngine, type FakeEngineOptions } from './fake-engine.js';

const { values } = parseArgs({ options: { config: { type: 'string' } } });
const opts = JSON.parse(process.env.FAKE_ENGINE ?? '{}') as FakeEngineOptions;

start(values.config, { engineFactory: async (cfg) => new FakeEngine({ treeBudget: cfg.tree.fixed_rows, ...opts }) }).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`fake-daemon: ${(e as Error).message ?? e}\n`);
    process.exit(e instanceof ConfigError ? 2 : 1);
  },
);
