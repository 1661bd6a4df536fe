/**
 * What the daemon subscribes to, and what the broker does with it: a retained request replayed on
 * a new subscription is not executed again; a subscription the broker refuses, or a fleet
 * connection that is down, shows in health as `degraded` with the reason.
 */
import t from 'tap';
import { createServer, type AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt, { type MqttClient } from 'mqtt';
import pino from 'pino';
import { startDaemon, type TestDaemon } from './helpers/daemon.js';
import { startMosquitto, type Mosquitto } from './helpers/mosquitto.js';

let broker: Mosquitto;
t.before(async () => {
  broker = await startMosquitto();
});
t.teardown(async () => broker?.stop());

/** Final replies seen under `<base>/response/`, by transaction. */
async function finalsOf(port: number, base: string, version: 4 | 5): Promise<{ c: MqttClient; finals: Map<string, number> }> {
  const c = await mqtt.connectAsync({ host: '127.0.0.1', port, protocolVersion: version, reconnectPeriod: 0 });
  const finals = new Map<string, number>();
  c.on('message', (_t, p) => {
    const m = JSON.parse(p.toString() || '{}') as { status?: string; transaction?: string };
    if (m.status && m.transaction) finals.set(m.transaction, (finals.get(m.transaction) ?? 0) + 1);
  });
  await c.subscribeAsync(`${base}/response/#`, { qos: 1 });
  return { c, finals };
}

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  for (let waited = 0; waited < ms && !cond(); waited += 10) await sleep(10);
  return cond();
}

/** An aedes broker on a free loopback port that refuses (SUBACK 0x80) the topics in `deny`. */
async function refusingBroker(deny: (topic: string) => boolean): Promise<{ port: number; close(): Promise<void> }> {
  const { Aedes } = await import('aedes');
  const aedes = await Aedes.createBroker({ authorizeSubscribe: (_c, sub, cb) => cb(null, deny(sub.topic) ? null : sub) });
  const server = createServer(aedes.handle);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((r) => aedes.close(() => server.close(() => r()))),
  };
}

const retainedReq = (transaction: string) => JSON.stringify({ transaction, prompt: 'Once upon a time', max_tokens: 3, stream: false });

for (const version of [5, 4] as const) {
  t.test(`mosquitto MQTT ${version === 5 ? '5' : '3.1.1'}: a retained request runs once; the broker's replay after a restart is dropped and counted`, async (t) => {
    const node = `retain-v${version}`;
    const mq = { embedded: false, port: broker.port, protocol_version: version, client_id: `bitad-retain-${version}` };
    const setNode = (c: Record<string, unknown>) => void (c.node_id = node);
    const first = await startDaemon(mq, setNode);
    const base = first.controller.mqtt!.base;
    const w = await finalsOf(broker.port, base, version);
    t.teardown(async () => {
      // Clear the retained requests so nothing else on this broker sees them.
      for (const kind of ['generate', 'chat']) await w.c.publishAsync(`${base}/request/${kind}`, '', { qos: 1, retain: true });
      await w.c.endAsync();
    });
    await w.c.publishAsync(`${base}/request/generate`, retainedReq('ret-live'), { qos: 1, retain: true });
    t.ok(await until(() => w.finals.get('ret-live') === 1, 2000), 'published live: executed and answered');
    t.equal(first.controller.mqtt!.health().retained_dropped, 0, 'a live delivery is not a replay');
    await first.stop();
    // Queued in the persistent session while the daemon is down: delivered without RETAIN, runs once.
    const chat = JSON.stringify({ transaction: 'ret-down', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3, stream: false });
    await w.c.publishAsync(`${base}/request/chat`, chat, { qos: 1, retain: true });
    const second = await startDaemon(mq, setNode);
    t.teardown(() => second.stop());
    t.ok(await until(() => w.finals.get('ret-down') === 1 && second.controller.mqtt!.health().retained_dropped === 2, 2000), 'the request sent while down is answered; both replays are counted');
    await sleep(200);
    t.equal(w.finals.get('ret-live'), 1, 'the retained request is not answered again');
    t.equal(w.finals.get('ret-down'), 1, 'nor the one sent while the daemon was down');
    t.equal(second.engine.calls, 1, 'the restarted daemon executed only the request queued for it');
    t.match(second.controller.mqtt!.health(), { status: 'ok' });
  });
}

t.test('embedded aedes: a retained request is not executed again when the daemon reconnects', async (t) => {
  const d = await startDaemon({ embedded: true, port: 0, reconnect_ms: 100 });
  t.teardown(() => d.stop());
  const port = d.controller.broker!.port;
  const base = d.controller.mqtt!.base;
  const w = await finalsOf(port, base, 4);
  t.teardown(() => w.c.endAsync());
  await w.c.publishAsync(`${base}/request/generate`, retainedReq('ret-aedes'), { qos: 1, retain: true });
  t.ok(await until(() => w.finals.get('ret-aedes') === 1, 2000), 'executed once when published');
  const connects = d.controller.mqtt!.connects;
  (d.controller.mqtt as unknown as { client: { stream: { destroy(): void } } }).client.stream.destroy();
  t.ok(await until(() => d.controller.mqtt!.connects > connects && d.controller.mqtt!.health().retained_dropped === 1, 3000), 'reconnected; the replay was dropped and counted');
  await sleep(200);
  t.equal(w.finals.get('ret-aedes'), 1, 'answered once');
  t.equal(d.engine.calls, 1, 'executed once');
});

t.test('a retained replay over limits.max_payload_bytes is not parsed: logged without a transaction', async (t) => {
  const warnings: Record<string, unknown>[] = [];
  const log = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(JSON.parse(line)) });
  const d = await startDaemon({ embedded: true, port: 0, reconnect_ms: 100 }, undefined, {}, log);
  t.teardown(() => d.stop());
  const port = d.controller.broker!.port;
  const base = d.controller.mqtt!.base;
  const w = await finalsOf(port, base, 4);
  t.teardown(() => w.c.endAsync());
  const big = JSON.stringify({ transaction: 'ret-big', prompt: 'x'.repeat(d.cfg.limits.max_payload_bytes), max_tokens: 3 });
  await w.c.publishAsync(`${base}/request/generate`, big, { qos: 1, retain: true });
  t.ok(await until(() => d.rows().some((r) => r.error_code === 'payload_too_large'), 2000), 'answered payload_too_large when published');
  const connects = d.controller.mqtt!.connects;
  (d.controller.mqtt as unknown as { client: { stream: { destroy(): void } } }).client.stream.destroy();
  t.ok(await until(() => d.controller.mqtt!.connects > connects && d.controller.mqtt!.health().retained_dropped === 1, 3000), 'the replay was dropped and counted');
  const replay = warnings.find((l) => String(l.msg).startsWith('retained request replayed'));
  t.match(replay, { transaction: null }, 'no transaction read from a payload over the limit');
  t.equal(d.engine.calls, 0, 'never executed');
});

t.test('a refused subscription: the daemon starts degraded naming the topic, retries, and is ok once granted', async (t) => {
  let refusing = true;
  const b = await refusingBroker((topic) => refusing && topic.includes('/request/'));
  t.teardown(() => b.close());
  const d = await startDaemon({ embedded: false, port: b.port, protocol_version: 4, client_id: 'bitad-refused', reconnect_ms: 200 });
  t.teardown(() => d.stop());
  t.match(d.controller.mqtt!.health(), { status: 'degraded', reason: 'broker refused subscription to bitad/testnode/request/+' });
  t.match(d.controller.components().mqtt, { status: 'degraded' }, 'the daemon as a whole reports it');
  refusing = false; // e.g. the ACL fixed and the broker reloaded, without dropping the connection
  t.ok(await until(() => d.controller.mqtt!.health().status === 'ok', 2000), 'retried and granted: ok again');
  const w = await finalsOf(b.port, d.controller.mqtt!.base, 4);
  t.teardown(() => w.c.endAsync());
  await w.c.publishAsync(`${d.controller.mqtt!.base}/request/generate`, JSON.stringify({ transaction: 'after-grant', prompt: 'hi', max_tokens: 2 }), { qos: 1 });
  t.ok(await until(() => w.finals.get('after-grant') === 1, 2000), 'and requests are served');
});

t.test('a refused Home Assistant status subscription is a health detail, not degraded: requests still arrive', async (t) => {
  const b = await refusingBroker((topic) => topic === 'homeassistant/status');
  t.teardown(() => b.close());
  const d = await startDaemon({ embedded: false, port: b.port, protocol_version: 4, client_id: 'bitad-ha-refused' }, (c) => {
    c.homeassistant = { enabled: true };
  });
  t.teardown(() => d.stop());
  t.match(d.controller.mqtt!.health(), { status: 'ok', ha_status_subscription: 'broker refused subscription to homeassistant/status' });
  t.match(d.controller.components().mqtt, { status: 'ok' }, 'the daemon as a whole is not degraded by it');
  const w = await finalsOf(b.port, d.controller.mqtt!.base, 4);
  t.teardown(() => w.c.endAsync());
  await w.c.publishAsync(`${d.controller.mqtt!.base}/request/generate`, JSON.stringify({ transaction: 'ha-refused', prompt: 'hi', max_tokens: 2 }), { qos: 1 });
  t.ok(await until(() => w.finals.get('ha-refused') === 1, 2000), 'requests are served');
});

t.test('a refused fleet subscription leaves the daemon degraded, naming the shared topic', async (t) => {
  const b = await refusingBroker((topic) => topic.startsWith('$share/'));
  t.teardown(() => b.close());
  const d = await startDaemon({ embedded: false, port: b.port, protocol_version: 4, client_id: 'bitad-fleet-refused', shared_group: 'fleet' });
  t.teardown(() => d.stop());
  t.match(d.controller.mqtt!.health(), { status: 'degraded', reason: 'broker refused subscription to $share/fleet/bitad/fleet/request/+', fleet_connected: true });
});

t.test('a lost fleet connection makes health degraded until it is back', async (t) => {
  const d = await startDaemon({ embedded: false, port: broker.port, protocol_version: 5, client_id: 'bitad-fleet-lost', shared_group: 'fleet', reconnect_ms: 1000 });
  t.teardown(() => d.stop());
  t.match(d.controller.mqtt!.health(), { status: 'ok', fleet_connected: true });
  // Another client takes over the fleet connection's client id: the broker drops the daemon's.
  const intruder = await mqtt.connectAsync({ host: '127.0.0.1', port: broker.port, protocolVersion: 5, clientId: 'bitad-fleet-lost-fleet', reconnectPeriod: 0 });
  t.teardown(() => intruder.endAsync(true));
  t.ok(await until(() => d.controller.mqtt!.health().fleet_connected === false, 1000), 'the fleet connection dropped');
  t.match(d.controller.mqtt!.health(), { status: 'degraded', reason: 'fleet connection down' });
  await intruder.endAsync(true);
  t.ok(await until(() => d.controller.mqtt!.health().status === 'ok', 3000), 'ok again once the fleet connection is back');
});
