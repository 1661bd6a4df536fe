/**
 * Issue 7: one MQTT message must not take the MQTT side down. Reply topics built from request
 * fields are checked before the daemon publishes (a broker that refuses a publish disconnects the
 * client, and mqtt.js would resend it on every reconnect), reply routes stay inside the reply
 * namespace, and stop() is bounded when the broker is gone.
 */
import t, { type Test } from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt, { type MqttClient } from 'mqtt';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../../src/daemon/config/load.js';
import { startDaemon, type TestDaemon } from './helpers/daemon.js';
import { startMosquitto, type Mosquitto } from './helpers/mosquitto.js';

interface Seen {
  topic: string;
  body: Record<string, unknown>;
}

/** A client that sees every reply the daemon publishes under `<base_topic>/` (replies, state, defaults). */
async function watcher(port: number, version: 4 | 5): Promise<{ c: MqttClient; seen: Seen[]; final(txn: string | null, ms: number, from?: number): Promise<Seen> }> {
  const c = await mqtt.connectAsync({ host: '127.0.0.1', port, protocolVersion: version, reconnectPeriod: 0 });
  const seen: Seen[] = [];
  c.on('message', (topic, p) => {
    try {
      seen.push({ topic, body: JSON.parse(p.toString()) });
    } catch {
      seen.push({ topic, body: {} });
    }
  });
  await c.subscribeAsync(['bitad/#'], { qos: 1 });
  /** The first final reply for `txn` among the messages seen from index `from` on. */
  const final = async (txn: string | null, ms: number, from = 0) => {
    for (let waited = 0; waited <= ms; waited += 10) {
      const hit = seen.slice(from).find((s) => s.body.status !== undefined && s.body.transaction === txn);
      if (hit) return hit;
      await sleep(10);
    }
    throw new Error(`no final reply for ${JSON.stringify(txn)} within ${ms} ms`);
  };
  return { c, seen, final };
}

const req = (fields: Record<string, unknown>) => JSON.stringify({ prompt: 'hi', max_tokens: 2, ...fields });

/** Sends each poison request, then a good one; the good one is answered within 2 s on the same connection. */
async function poisonThenGood(t: Test, d: TestDaemon, port: number, version: 4 | 5, poisons: [string, string, Record<string, unknown>?][]): Promise<void> {
  const base = d.controller.mqtt!.base;
  const w = await watcher(port, version);
  t.teardown(() => w.c.endAsync());
  const connects = d.controller.mqtt!.connects;
  for (const [what, payload, props] of poisons) {
    const from = w.seen.length;
    await w.c.publishAsync(`${base}/request/generate`, payload, { qos: 1, ...(props ? { properties: props } : {}) });
    const txn = (JSON.parse(payload) as { transaction?: unknown }).transaction;
    // The reply echoes the transaction only when it is usable as a topic level.
    const safeTxn = typeof txn === 'string' && !/[/\u0000-\u001f\u007f-\u009f+#\ufdd0-\ufdef\ufffe\uffff\ud800-\udfff]/.test(txn) ? txn : null;
    const f = await w.final(safeTxn, 2000, from);
    t.match(f.body, { status: 'error', error: { code: 'bad_request' } }, `${what}: refused with bad_request (${(f.body.error as { message?: string })?.message})`);
    t.equal(f.topic, `${base}/response/${safeTxn ?? 'error'}`, `${what}: the error reply goes to the safe default topic`);
  }
  await w.c.publishAsync(`${base}/request/generate`, req({ transaction: 'good-after-poison' }), { qos: 1 });
  const good = await w.final('good-after-poison', 2000);
  t.match(good.body, { status: 'ok' }, 'a good request is answered within 2 s');
  t.equal(d.controller.mqtt!.connects, connects, 'the daemon never lost its connection');
  t.ok(d.controller.mqtt!.connected, 'still connected');
  const h = d.controller.mqtt!.health();
  t.ok((h.routes_refused as number) >= poisons.length, `refused routes are counted (${h.routes_refused})`);
}

const MOSQUITTO_POISONS: [string, string, Record<string, unknown>?][] = [
  ['reply_to with NUL', req({ transaction: 'p-nul', reply_to: 'bitad/reply/a\u0000b' })],
  ['reply_to with U+0001', req({ transaction: 'p-soh', reply_to: 'bitad/reply/a\u0001b' })],
  ['transaction with U+0001', req({ transaction: 'c\u0001x' })],
  ['reply_to with 300 levels', req({ transaction: 'p-levels', reply_to: 'bitad/reply/' + 'x/'.repeat(297) + 'x' })],
  ['reply_to with 40 short levels', req({ transaction: 'p-levels-short', reply_to: 'bitad/reply/' + 'x/'.repeat(37) + 'x' })],
  ['a transaction with a noncharacter', req({ transaction: 'n\uffffx' })],
  ['reply_to with a lone surrogate', req({ transaction: 'p-surrogate', reply_to: 'bitad/reply/a\ud800b' })],
];

let broker: Mosquitto;
t.before(async () => {
  broker = await startMosquitto();
});
t.teardown(async () => broker?.stop());

for (const version of [5, 4] as const) {
  t.test(`mosquitto MQTT ${version === 5 ? '5' : '3.1.1'}: poison reply topics are refused and the daemon keeps serving`, async (t) => {
    const d = await startDaemon({ embedded: false, port: broker.port, protocol_version: version, client_id: `bitad-poison-${version}` });
    t.teardown(() => d.stop());
    const poisons = [...MOSQUITTO_POISONS];
    if (version === 5) poisons.push(['a Response Topic outside the reply namespace', req({ transaction: 'p-rt' }), { responseTopic: 'elsewhere/x' }]);
    await poisonThenGood(t, d, broker.port, version, poisons);
  });
}

t.test('embedded aedes: a $SYS reply_to and a transaction of 105 slashes are refused and the daemon keeps serving', async (t) => {
  const d = await startDaemon({ embedded: true, port: 0 });
  t.teardown(() => d.stop());
  await poisonThenGood(t, d, d.controller.broker!.port, 4, [
    ['reply_to under $SYS', req({ transaction: 'p-sys', reply_to: '$SYS/x' })],
    ['a transaction of 105 slashes', req({ transaction: '/'.repeat(105) })],
  ]);
});

t.test('reply_to naming a request, state or default reply topic is refused: one request is one row', async (t) => {
  const d = await startDaemon({ embedded: false, port: broker.port, protocol_version: 5, client_id: 'bitad-loop' });
  t.teardown(() => d.stop());
  const base = d.controller.mqtt!.base;
  const w = await watcher(broker.port, 5);
  t.teardown(() => w.c.endAsync());
  const cases: [string, string][] = [
    ['its own request topic', `${base}/request/generate`],
    ['another node request topic', 'bitad/othernode/request/chat'],
    ['the state topic', `${base}/state`],
    ['the telemetry topic', `${base}/telemetry`],
    ["another client's default reply topic", `${base}/response/victim-1`],
  ];
  for (const [i, [what, topic]] of cases.entries()) {
    const txn = `loop-${i}`;
    await w.c.publishAsync(`${base}/request/generate`, req({ transaction: txn, reply_to: topic }), { qos: 1 });
    const f = await w.final(txn, 2000);
    t.match(f.body, { status: 'error', error: { code: 'bad_request' } }, `${what}: refused`);
    t.equal(f.topic, `${base}/response/${txn}`, `${what}: answered on the default topic`);
  }
  await sleep(200);
  t.notOk(w.seen.some((s) => s.topic === `${base}/state` && s.body.state !== 'online'), 'the state topic only ever says online');
  const rows = d.rows();
  for (const [i] of cases.entries()) t.equal(rows.filter((r) => r.txn === `loop-${i}`).length, 1, `loop-${i}: one row`);
  t.equal(rows.filter((r) => r.txn?.startsWith('loop-')).length, cases.length, 'no request multiplied itself');
});

t.test('a transaction reused with a different payload gets an error reply; an identical redelivery is still dropped', async (t) => {
  const d = await startDaemon({ embedded: false, port: broker.port, protocol_version: 4, client_id: 'bitad-reuse' });
  t.teardown(() => d.stop());
  const base = d.controller.mqtt!.base;
  const w = await watcher(broker.port, 4);
  t.teardown(() => w.c.endAsync());
  await w.c.publishAsync(`${base}/request/generate`, req({ transaction: 'reuse-1', prompt: 'first' }), { qos: 1 });
  t.match((await w.final('reuse-1', 2000)).body, { status: 'ok' });
  await w.c.publishAsync(`${base}/request/generate`, req({ transaction: 'reuse-1', prompt: 'first' }), { qos: 1 });
  await sleep(200);
  t.equal(w.seen.filter((s) => s.body.transaction === 'reuse-1' && s.body.status !== undefined).length, 1, 'the identical redelivery is dropped silently');
  await w.c.publishAsync(`${base}/request/generate`, req({ transaction: 'reuse-1', prompt: 'second, different' }), { qos: 1 });
  for (let i = 0; i < 200 && w.seen.filter((s) => s.body.transaction === 'reuse-1' && s.body.status !== undefined).length < 2; i++) await sleep(10);
  const finals = w.seen.filter((s) => s.body.transaction === 'reuse-1' && s.body.status !== undefined);
  t.equal(finals.length, 2, 'the different payload is answered');
  t.match(finals[1]?.body, { status: 'error', error: { code: 'bad_request', message: /transaction.*already used/ } });
});

t.test('stop() finishes within the drain timeout when the broker is gone and replies are pending', async (t) => {
  const own = await startMosquitto();
  let ownStopped = false;
  t.teardown(() => (ownStopped ? undefined : own.stop()));
  const d = await startDaemon({ embedded: false, port: own.port, protocol_version: 5, client_id: 'bitad-stop', reconnect_ms: 100 });
  d.engine.chunkDelayMs = 20;
  const base = d.controller.mqtt!.base;
  const c = await mqtt.connectAsync({ host: '127.0.0.1', port: own.port, protocolVersion: 5, reconnectPeriod: 0 });
  let chunks = 0;
  c.on('message', () => chunks++);
  await c.subscribeAsync(`${base}/response/#`, { qos: 1 });
  for (const n of [1, 2]) await c.publishAsync(`${base}/request/generate`, req({ transaction: `inflight-${n}`, max_tokens: 60 }), { qos: 1 });
  for (let i = 0; i < 200 && chunks === 0; i++) await sleep(10);
  t.ok(chunks > 0, 'a request is streaming');
  c.end(true);
  await own.stop();
  ownStopped = true;
  await sleep(100); // replies keep being published into the offline store
  const drain = d.cfg.lifecycle.drain_timeout_ms;
  const t0 = Date.now();
  const stopped = d.stop().then(() => 'stopped');
  const outcome = await Promise.race([stopped, sleep(drain + 3000).then(() => 'hung')]);
  t.equal(outcome, 'stopped', `stop() returned (after ${Date.now() - t0} ms)`);
  t.ok(Date.now() - t0 <= drain + 1500, `within drain_timeout_ms + 1.5 s (${Date.now() - t0} ms, drain ${drain} ms)`);
});

t.test('SIGTERM to a daemon process whose broker is gone with replies pending exits 0 within the drain timeout', async (t) => {
  const own = await startMosquitto();
  let ownStopped = false;
  t.teardown(() => (ownStopped ? undefined : own.stop()));
  const dir = mkdtempSync(join(tmpdir(), 'bitad-sigterm-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const drain = 1500;
  const file = join(dir, 'bitad.yaml');
  writeFileSync(file, JSON.stringify({
    node_id: 'sigterm', data_dir: dir, log: { level: 'info' }, telemetry: { enabled: false },
    mqtt: { embedded: false, port: own.port, protocol_version: 5, client_id: 'bitad-sigterm', reconnect_ms: 100 },
    lifecycle: { drain_timeout_ms: drain },
  }));
  const daemon = spawn(process.execPath, ['--import', 'tsx', join(PACKAGE_ROOT, 'test/daemon/helpers/fake-daemon.ts'), '--config', file], {
    env: { ...process.env, FAKE_ENGINE: '{"chunkDelayMs":20}' },
  });
  t.teardown(() => daemon.kill('SIGKILL'));
  let logs = '';
  daemon.stdout.on('data', (d) => (logs += d));
  const exited = new Promise<number | null>((r) => daemon.on('exit', (code) => r(code)));
  for (let i = 0; i < 500 && !logs.includes('bitad ready'); i++) await sleep(20);
  t.match(logs, /bitad ready/, 'the daemon process is up');
  const c = await mqtt.connectAsync({ host: '127.0.0.1', port: own.port, protocolVersion: 5, reconnectPeriod: 0 });
  let chunks = 0;
  c.on('message', () => chunks++);
  await c.subscribeAsync('bitad/sigterm/response/#', { qos: 1 });
  for (const n of [1, 2, 3]) await c.publishAsync('bitad/sigterm/request/generate', req({ transaction: `p-${n}`, max_tokens: 80 }), { qos: 1 });
  for (let i = 0; i < 300 && chunks === 0; i++) await sleep(10);
  t.ok(chunks > 0, 'a request is streaming');
  c.end(true);
  await own.stop(); // the broker is gone; the daemon's replies pile up in its offline store
  ownStopped = true;
  await sleep(100);
  const t0 = Date.now();
  daemon.kill('SIGTERM');
  const code = await Promise.race([exited, sleep(drain + 5000).then(() => 'hung' as const)]);
  const ms = Date.now() - t0;
  t.equal(code, 0, `exit code 0 after SIGTERM (${ms} ms)`);
  t.ok(ms <= drain + 3000, `within drain_timeout_ms + 3 s (${ms} ms, drain ${drain} ms)`);
  t.match(logs, /"msg":"stopped"/);
});

t.test('a publish the broker answers by disconnecting is dropped after three closes; its redelivered request is answered, not executed', async (t) => {
  // A final reply of ~1 KB against mosquitto's max_packet_size 700: the topic is fine, the broker
  // still disconnects the daemon, and mqtt.js would resend it on every reconnect. The retained
  // info (~330 bytes) fits.
  const small = await startMosquitto({ maxPacketSize: 700 });
  t.teardown(() => small.stop());
  const d = await startDaemon({ embedded: false, port: small.port, protocol_version: 4, client_id: 'bitad-oversize', reconnect_ms: 100 });
  t.teardown(() => d.stop());
  const base = d.controller.mqtt!.base;
  const w = await watcher(small.port, 4);
  t.teardown(() => w.c.endAsync());
  const big = req({ transaction: 'too-big', max_tokens: 60, stream: false });
  await w.c.publishAsync(`${base}/request/generate`, big, { qos: 1 });
  const dropped = () => d.controller.mqtt!.health().publishes_dropped;
  for (let i = 0; i < 300 && !dropped(); i++) await sleep(10);
  t.equal(dropped(), 1, 'the oversize reply was dropped');
  await w.c.publishAsync(`${base}/request/generate`, req({ transaction: 'small-after' }), { qos: 1 });
  t.match((await w.final('small-after', 2000)).body, { status: 'ok' }, 'the next request is answered within 2 s');
  const connects = d.controller.mqtt!.connects;
  const calls = d.engine.calls;
  await w.c.publishAsync(`${base}/request/generate`, big, { qos: 1 });
  const f = await w.final('too-big', 2000);
  t.match(f.body, { status: 'error', error: { code: 'bad_request', message: /refused the reply/ } }, 'the same request again is answered with an error');
  t.equal(f.topic, `${base}/response/too-big`);
  t.equal(d.engine.calls, calls, 'and not executed again');
  await sleep(300);
  t.equal(d.controller.mqtt!.connects, connects, 'the connection holds');
  t.match(d.controller.mqtt!.health(), { status: 'ok', publishes_dropped: 1, poison_answered: 1 });
});

t.test('a reply waiting while the broker is down survives the failed reconnect attempts', async (t) => {
  const first = await startMosquitto();
  const port = first.port;
  let broker = first;
  t.teardown(() => broker.stop());
  const d = await startDaemon({ embedded: false, port, protocol_version: 4, client_id: 'bitad-outage', reconnect_ms: 100 });
  t.teardown(() => d.stop());
  d.engine.chunkDelayMs = 20;
  const c = await mqtt.connectAsync({ host: '127.0.0.1', port, protocolVersion: 4, reconnectPeriod: 0 });
  await c.publishAsync(`${d.controller.mqtt!.base}/request/generate`, req({ transaction: 'outage', max_tokens: 20, stream: false }), { qos: 1 });
  c.end(true);
  await first.stop(); // the final reply (~0.4 s later) goes into the offline store
  await sleep(1000); // ~10 refused reconnect attempts, each a close
  const connects = d.controller.mqtt!.connects;
  broker = await startMosquitto({ port });
  for (let i = 0; i < 300 && d.controller.mqtt!.connects === connects; i++) await sleep(10);
  t.ok(d.controller.mqtt!.connects > connects, 'reconnected');
  t.match(d.controller.mqtt!.health(), { status: 'ok', publishes_dropped: 0 }, 'the waiting reply was not dropped');
});

t.test('a request on <base>/request/ with an empty kind is answered unknown_request, not left without a reply', async (t) => {
  const d = await startDaemon({ embedded: false, port: broker.port, protocol_version: 5, client_id: 'bitad-poison-empty-kind' });
  t.teardown(() => d.stop());
  const w = await watcher(broker.port, 5);
  t.teardown(() => w.c.endAsync());
  const base = d.controller.mqtt!.base;
  await w.c.publishAsync(`${base}/request/`, req({ transaction: 'empty-kind' }), { qos: 1 });
  const f = await w.final('empty-kind', 2000);
  t.match(f.body, { status: 'error', error: { code: 'unknown_request' } });
  t.equal(f.topic, `${base}/response/empty-kind`);
});

t.test('a 20 000-character unknown kind in the topic is answered unknown_request and recorded bounded', async (t) => {
  const d = await startDaemon({ embedded: false, port: broker.port, protocol_version: 4, client_id: 'bitad-poison-long-kind' });
  t.teardown(() => d.stop());
  const w = await watcher(broker.port, 4);
  t.teardown(() => w.c.endAsync());
  const base = d.controller.mqtt!.base;
  await w.c.publishAsync(`${base}/request/${'Z'.repeat(20_000)}`, '{}', { qos: 1 });
  const f = await w.final(null, 2000);
  t.match(f.body, { status: 'error', error: { code: 'unknown_request' } });
  const message = (f.body.error as { message: string }).message;
  t.ok(message.length < 200, `the error message is bounded (${message.length} chars)`);
  const row = d.rows().find((r) => r.kind?.startsWith('ZZZ'));
  t.ok(row, 'the request has a row');
  t.ok(row!.kind!.length <= 40, `its kind is bounded (${row!.kind!.length} chars)`);
  t.match(row!.kind, /…$/, 'and marked as cut');
  const recent = d.controller.dispatcher!.recent.find((r) => r.kind?.startsWith('ZZZ'));
  t.ok(recent && recent.kind!.length <= 40, 'bounded in the recent requests telemetry reads too');
});
