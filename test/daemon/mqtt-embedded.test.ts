import t from 'tap';
import mqtt from 'mqtt';
import { conformance } from './helpers/conformance.js';
import { startDaemon, type TestDaemon } from './helpers/daemon.js';
import { mqttHarness, type Harness } from './helpers/harness.js';

// The embedded aedes broker (the default for `npm start`) speaks MQTT 3.1.1 only.
let d: TestDaemon;
let h: Harness;
t.before(async () => {
  d = await startDaemon({ embedded: true, port: 0 });
  h = await mqttHarness('aedes', d.controller.broker!.port, d.controller.mqtt!.base, 4);
});
t.teardown(async () => {
  await h?.close();
  await d?.stop();
});

t.test('the embedded broker listens on loopback only and the daemon speaks 3.1.1 to it', async (t) => {
  t.equal(d.cfg.mqtt.protocol_version, 4);
  t.ok(d.controller.broker!.port > 0);
  t.ok(d.controller.mqtt!.connected);
});

t.test('an MQTT 5 client is refused by the embedded broker (aedes is 3.1.1 only)', async (t) => {
  await t.rejects(mqtt.connectAsync({ host: '127.0.0.1', port: d.controller.broker!.port, protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 2000 }));
});

conformance(t, 'mqtt', () => d, () => h);
