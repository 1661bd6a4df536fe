import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt from 'mqtt';
import { conformance } from './helpers/conformance.js';
import { startDaemon, type TestDaemon } from './helpers/daemon.js';
import { mqttHarness, type Harness } from './helpers/harness.js';
import { startMosquitto, type Mosquitto } from './helpers/mosquitto.js';

// One real mosquitto for the file; the daemon and the client speak the protocol version under test.
let broker: Mosquitto;
t.before(async () => {
  broker = await startMosquitto();
});
t.teardown(async () => broker?.stop());

for (const version of [5, 4] as const) {
  t.test(`mosquitto, MQTT ${version === 5 ? '5' : '3.1.1'}`, async (t) => {
    let d: TestDaemon;
    let h: Harness;
    t.before(async () => {
      d = await startDaemon({ embedded: false, host: '127.0.0.1', port: broker.port, protocol_version: version, client_id: `bitad-v${version}` });
      h = await mqttHarness(`mqtt${version}`, broker.port, d.controller.mqtt!.base, version);
    });
    t.teardown(async () => {
      await h?.close();
      await d?.stop();
    });

    t.test('retained state is online while running', async (t) => {
      const c = await mqtt.connectAsync({ host: '127.0.0.1', port: broker.port, protocolVersion: version });
      const got = new Promise<string>((r) => c.on('message', (topic, p) => topic.endsWith('/state') && r(p.toString())));
      await c.subscribeAsync(`${d.controller.mqtt!.base}/state`);
      t.same(JSON.parse(await got), { state: 'online' });
      await c.endAsync();
    });

    conformance(t, 'mqtt', () => d, () => h);

    if (version === 5) {
      t.test('correlation data is echoed on every chunk and the final reply', async (t) => {
        const p = h.send('generate', { prompt: 'echo', max_tokens: 4 });
        await p.final;
        t.ok(p.correlations.length === p.chunks.length + 1 && p.chunks.length > 0);
        t.equal(new Set(p.correlations).size, 1, 'the same correlation data on all of them');
      });

      t.test('an MQTT 5 message expiry acts as a deadline', async (t) => {
        d.engine.chunkDelayMs = 50; // the blocker outlives the 1 s expiry
        const blocker = h.send('generate', { prompt: 'occupy', max_tokens: 60, deadline_ms: 5000 });
        await blocker.firstChunk;
        const p = h.send('generate', { prompt: 'expires', max_tokens: 3 }, { props: { messageExpiryInterval: 1 } });
        const f = await p.final;
        t.match(f, { status: 'error', error: { code: 'deadline_exceeded' } });
        h.send('cancel', { target: blocker.transaction });
        await blocker.final;
        d.engine.chunkDelayMs = 2;
      });
    } else {
      t.test('reply_to in the payload overrides the default response topic', async (t) => {
        const c = await mqtt.connectAsync({ host: '127.0.0.1', port: broker.port, protocolVersion: 4 });
        const got = new Promise<string>((r) => c.on('message', (_t, p) => {
          if (JSON.parse(p.toString()).status) r(p.toString());
        }));
        await c.subscribeAsync('bitad/reply/elsewhere/answers', { qos: 1 });
        await c.publishAsync(`${d.controller.mqtt!.base}/request/generate`, JSON.stringify({ transaction: 'rt1', prompt: 'hi', max_tokens: 2, reply_to: 'bitad/reply/elsewhere/answers' }), { qos: 1 });
        t.match(JSON.parse(await got), { transaction: 'rt1', status: 'ok' });
        await c.endAsync();
      });
    }
  });
}

t.test('a request published while the daemon is down is answered after it restarts (persistent session)', async (t) => {
  for (const version of [5, 4] as const) {
    const mq = { embedded: false, port: broker.port, protocol_version: version, client_id: `bitad-persist-${version}` };
    const first = await startDaemon(mq);
    const base = first.controller.mqtt!.base;
    await first.stop();
    const c = await mqtt.connectAsync({ host: '127.0.0.1', port: broker.port, protocolVersion: version });
    const got = new Promise<Record<string, unknown>>((r) => c.on('message', (_t, p) => {
      const m = JSON.parse(p.toString());
      if (m.status) r(m);
    }));
    await c.subscribeAsync(`${base}/response/#`, { qos: 1 });
    await c.publishAsync(`${base}/request/generate`, JSON.stringify({ transaction: `while-down-${version}`, prompt: 'hello', max_tokens: 2 }), { qos: 1 });
    const second = await startDaemon(mq);
    t.match(await got, { transaction: `while-down-${version}`, status: 'ok' }, `MQTT ${version === 5 ? '5' : '3.1.1'}`);
    await c.endAsync();
    await second.stop();
  }
});

t.test('two boards in a shared-subscription group serve one fleet queue, each request once', async (t) => {
  const mk = (n: string) => startDaemon({ embedded: false, port: broker.port, protocol_version: 5, client_id: `bitad-fleet-${n}`, shared_group: 'fleet' }, (c) => {
    c.node_id = n;
    c.queue = { capacity: 8 }; // room for all: this test is about distribution, not busy
  });
  const a = await mk('board-a');
  const b = await mk('board-b');
  const c = await mqtt.connectAsync({ host: '127.0.0.1', port: broker.port, protocolVersion: 5 });
  const finals = new Map<string, number>();
  c.on('message', (_t, p) => {
    const m = JSON.parse(p.toString());
    if (m.status) finals.set(m.transaction, (finals.get(m.transaction) ?? 0) + 1);
  });
  await c.subscribeAsync('bitad/fleet/response/#', { qos: 1 });
  const callsBefore = a.engine.calls + b.engine.calls;
  for (let i = 0; i < 8; i++) {
    await c.publishAsync('bitad/fleet/request/generate', JSON.stringify({ transaction: `f${i}`, prompt: 'hi', max_tokens: 2 }), { qos: 1 });
  }
  for (let i = 0; i < 150 && finals.size < 8; i++) await sleep(20);
  await sleep(100);
  t.equal(finals.size, 8, 'every request answered');
  t.ok([...finals.values()].every((n) => n === 1), 'each exactly once');
  t.equal(a.engine.calls + b.engine.calls - callsBefore, 8, 'eight generations in total');
  t.ok(a.engine.calls > 0 && b.engine.calls > 0, `both boards served (${a.engine.calls}/${b.engine.calls})`);
  await c.endAsync();
  await a.stop();
  await b.stop();
});

t.test('the Last Will marks the node offline when the daemon dies, and reconnect re-publishes online', async (t) => {
  const d = await startDaemon({ embedded: false, port: broker.port, protocol_version: 5, client_id: 'bitad-will', keepalive_s: 1, reconnect_ms: 200 });
  const base = d.controller.mqtt!.base;
  const watcher = await mqtt.connectAsync({ host: '127.0.0.1', port: broker.port, protocolVersion: 5 });
  const states: string[] = [];
  watcher.on('message', (_t, p) => states.push(JSON.parse(p.toString()).state));
  await watcher.subscribeAsync(`${base}/state`, { qos: 1 });
  // Kill the TCP connection under mqtt.js (no DISCONNECT sent): the broker publishes the Will.
  (d.controller.mqtt as unknown as { client: { stream: { destroy(): void } } }).client.stream.destroy();
  for (let i = 0; i < 100 && !states.includes('offline'); i++) await sleep(20);
  t.ok(states.includes('offline'), `will published (${states.join(',')})`);
  for (let i = 0; i < 150 && states[states.length - 1] !== 'online'; i++) await sleep(20);
  t.equal(states[states.length - 1], 'online', 'online again after the reconnect');
  t.ok(d.controller.mqtt!.connects >= 2, 'reconnected');
  await watcher.endAsync();
  await d.stop();
});
