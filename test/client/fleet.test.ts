/**
 * Many boards, one queue (issue 9): three `bitad start` processes (FakeEngine) share one fleet queue
 * through mosquitto's shared subscription; 300 requests from the client library to "fleet"; one
 * board is SIGKILLed mid-run. Every request must end with exactly one final result at the client,
 * and — from the boards' own request logs and an observer on the wire — be answered exactly once.
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import mqtt from 'mqtt';
import { BitadClient, BitadError, type GenerationResult } from '../../src/client/index.js';
import { startMosquitto, type Mosquitto } from '../daemon/helpers/mosquitto.js';

const N = 300;
const CONCURRENCY = 24;
const KILL_AFTER = 100;
const BOARDS = ['board-0', 'board-1', 'board-2'];

const dir = mkdtempSync(join(tmpdir(), 'bitad-fleet-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function spawnBoard(node: string, port: number): ChildProcess {
  const data = join(dir, node);
  const config = join(dir, `${node}.yaml`);
  writeFileSync(
    config,
    [
      `node_id: ${node}`,
      `data_dir: ${data}`,
      `mqtt: { embedded: false, host: 127.0.0.1, port: ${port}, protocol_version: 5, client_id: bitad-${node}, shared_group: fleet }`,
      'socket: { enabled: false }',
      'queue: { capacity: 64 }',
      'store: { flush_ms: 20 }',
      'telemetry: { enabled: false }',
      'log: { level: silent }',
    ].join('\n'),
  );
  return spawn(process.execPath, ['--import', 'tsx', 'test/daemon/helpers/fake-daemon.ts', '--config', config], {
    env: { ...process.env, FAKE_ENGINE: '{"chunkDelayMs":3,"contextLength":64}' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

/** Rows each board logged: transaction → outcome (error code or "ok"). */
function boardRows(node: string): { txn: string; outcome: string }[] {
  const db = new Database(join(dir, node, 'bitad.db'), { readonly: true });
  try {
    return (db.prepare('SELECT txn, outcome, error_code FROM requests').all() as { txn: string; outcome: string; error_code: string | null }[]).map((r) => ({
      txn: r.txn,
      outcome: r.error_code ?? r.outcome,
    }));
  } finally {
    db.close();
  }
}

async function waitOnline(port: number): Promise<void> {
  const watcher = await mqtt.connectAsync({ host: '127.0.0.1', port, protocolVersion: 5 });
  const online = new Set<string>();
  watcher.on('message', (topic, p) => {
    if (JSON.parse(p.toString()).state === 'online') online.add(topic.split('/')[1]);
  });
  await watcher.subscribeAsync('bitad/+/state', { qos: 1 });
  const end = Date.now() + 30_000;
  while (online.size < BOARDS.length && Date.now() < end) await sleep(50);
  await watcher.endAsync();
  if (online.size < BOARDS.length) throw new Error(`boards online: ${[...online].join(', ')}`);
}

t.test('three boards, one shared queue, 300 requests, one board SIGKILLed mid-run', async (t) => {
  const broker: Mosquitto = await startMosquitto();
  t.teardown(() => broker.stop());
  const boards = BOARDS.map((b) => spawnBoard(b, broker.port));
  t.teardown(() => boards.forEach((c) => c.exitCode === null && c.signalCode === null && c.kill('SIGKILL')));
  await waitOnline(broker.port);

  // An observer counts the final replies that really went over the wire to the client.
  const replyTopic = 'bitad/reply/fleet-test';
  const wireFinals = new Map<string, number>();
  const observer = await mqtt.connectAsync({ host: '127.0.0.1', port: broker.port, protocolVersion: 5 });
  observer.on('message', (_topic, p) => {
    const m = JSON.parse(p.toString()) as { transaction: string; status?: string };
    if (m.status) wireFinals.set(m.transaction, (wireFinals.get(m.transaction) ?? 0) + 1);
  });
  await observer.subscribeAsync(replyTopic, { qos: 1 });

  const client = await BitadClient.mqtt({ host: '127.0.0.1', port: broker.port, protocolVersion: 5, node: 'fleet', replyTopic });
  // The fleet queue's connection is up on every board (health, asked of each board directly).
  for (const b of BOARDS) {
    const h = await client.health({ node: b });
    t.equal(h.components.mqtt?.fleet_connected, true, `${b} serves the fleet queue`);
  }
  const settled = new Map<string, number>();
  const results = new Map<string, GenerationResult | BitadError>();
  let killedAt = -1;
  let next = 0;
  const worker = async () => {
    while (next < N) {
      const txn = `fleet-${next++}`;
      const g = client.generate({ prompt: `request ${txn}`, maxTokens: 6 }, { transaction: txn, idleTimeoutMs: 2500, retries: 4 });
      try {
        for await (const _ of g) void _; // consume the stream as an application would
      } catch {
        // the same BitadError as g.result's
      }
      const outcome = await g.result.catch((e: unknown) => e as BitadError);
      settled.set(txn, (settled.get(txn) ?? 0) + 1);
      results.set(txn, outcome);
      if (results.size === KILL_AFTER && killedAt < 0) {
        killedAt = results.size;
        boards[0].kill('SIGKILL');
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker).map((p) => p.catch((e) => results.set(`worker-error-${Math.random()}`, e))));
  await sleep(300); // late duplicates would arrive now
  await client.close();
  await observer.endAsync();
  for (const b of boards.slice(1)) b.kill('SIGTERM');
  await Promise.all(boards.map((b) => (b.exitCode !== null || b.signalCode !== null ? null : new Promise((r) => b.once('exit', r)))));
  t.equal(boards[0].signalCode, 'SIGKILL', 'board-0 was killed');

  const failed = [...results].filter(([, r]) => r instanceof BitadError) as [string, BitadError][];
  const retried = [...results.values()].filter((r): r is GenerationResult => !(r instanceof BitadError) && r.attempts > 1);
  t.equal(results.size, N, 'every request has an outcome');
  t.ok([...settled.values()].every((n) => n === 1), 'each settled exactly once at the client');
  t.same(failed.map(([txn, e]) => `${txn}: ${e.message}`), [], 'none failed (a failure would be a clear BitadError)');
  t.ok(retried.length > 0, `${retried.length} answered after a retry with the same transaction`);

  const rows = new Map(BOARDS.map((b) => [b, boardRows(b)]));
  const okBy = new Map<string, string[]>();
  for (const [b, rs] of rows) {
    const txns = rs.map((r) => r.txn);
    t.equal(new Set(txns).size, txns.length, `${b}: no transaction logged twice (duplicates dropped)`);
    for (const r of rs) if (r.outcome === 'ok') okBy.set(r.txn, [...(okBy.get(r.txn) ?? []), b]);
  }
  const counts = BOARDS.map((b) => rows.get(b)!.filter((r) => r.outcome === 'ok').length);
  t.ok(counts.every((n) => n >= 20), `work spread over all three boards: ${BOARDS.map((b, i) => `${b} ${counts[i]}`).join(', ')}`);
  const notOnce = [...results.keys()].filter((txn) => (okBy.get(txn)?.length ?? 0) !== 1);
  t.same(notOnce.map((txn) => `${txn}: ${okBy.get(txn)?.join('+') ?? 'none'}`), [], 'every request completed on exactly one board');
  const wireNotOnce = [...results.keys()].filter((txn) => wireFinals.get(txn) !== 1);
  t.same(wireNotOnce.map((txn) => `${txn}: ${wireFinals.get(txn) ?? 0}`), [], 'exactly one final reply on the wire per request');
  t.comment(`retried: ${retried.length} (attempts ${retried.map((r) => r.attempts).join(',')}); board-0 killed after ${killedAt} results`);
});
