/** Boots the real Controller with a FakeEngine, temp data dir and silent logs (unless a test passes its own). */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { buildConfig } from '../../../src/daemon/config/load.js';
import type { BitadConfig } from '../../../src/daemon/config/schema.js';
import { Controller } from '../../../src/daemon/controller.js';
import { FakeEngine, type FakeEngineOptions } from './fake-engine.js';
import type { RequestRow } from '../../../src/daemon/store/store.js';

export interface TestDaemon {
  controller: Controller;
  engine: FakeEngine;
  cfg: BitadConfig;
  dir: string;
  rows(): RequestRow[];
  stop(): Promise<void>;
}

/** Settings every transport test shares: a small queue and payload limit (the FakeEngine has a 64-token context). */
export function testConfigInput(dir: string, mqtt: Record<string, unknown>): Record<string, unknown> {
  return {
    node_id: 'testnode',
    data_dir: dir,
    mqtt,
    queue: { capacity: 2 },
    limits: { max_payload_bytes: 4096 },
    store: { flush_ms: 20 },
    telemetry: { enabled: false },
    lifecycle: { drain_timeout_ms: 2000 },
    log: { level: 'silent' },
  };
}

export async function startDaemon(
  mqtt: Record<string, unknown>,
  extra: (c: Record<string, unknown>) => void = () => undefined,
  fake: FakeEngineOptions = {},
  log: Logger = pino({ level: 'silent' }),
): Promise<TestDaemon> {
  const dir = mkdtempSync(join(tmpdir(), 'bitad-test-'));
  const input = testConfigInput(dir, mqtt);
  extra(input);
  const cfg = buildConfig(input, { env: {} });
  const engine = new FakeEngine({ contextLength: 64, chunkDelayMs: 2, ...fake });
  const controller = new Controller(cfg, { engineFactory: async () => engine, log });
  try {
    await controller.start();
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    controller,
    engine,
    cfg,
    dir,
    rows: () => {
      controller.store!.flush();
      return controller.store!.requestsSince(0);
    },
    stop: async () => {
      await controller.stop('test teardown');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
