/**
 * The client over MQTT: the embedded aedes broker (3.1.1: `reply_to` in the payload) and mosquitto
 * (MQTT 5: Response Topic + Correlation Data), the same cases as over the socket, plus the route
 * the replies really took, seen by an observer on the reply namespace.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import mqtt from 'mqtt';
import { BitadClient, type MqttClientOptions } from '../../src/client/index.js';
import { startDaemon, type TestDaemon } from '../daemon/helpers/daemon.js';
import { startMosquitto, type Mosquitto } from '../daemon/helpers/mosquitto.js';
import { clientCases, closeCase, type Ctx } from './cases.js';

let mosquitto: Mosquitto;
t.before(async () => {
  mosquitto = await startMosquitto();
});
t.teardown(async () => mosquitto?.stop());

const brokers = [
  { name: 'aedes, MQTT 3.1.1', version: 4, daemon: () => ({ embedded: true, port: 0 }) },
  { name: 'mosquitto, MQTT 5', version: 5, daemon: () => ({ embedded: false, host: '127.0.0.1', port: mosquitto.port, protocol_version: 5, client_id: 'bitad-client-test' }) },
] as const;

for (const b of brokers) {
  t.test(b.name, async (t) => {
    let ctx: Ctx;
    let opts: MqttClientOptions;
    t.before(async () => {
      const daemon: TestDaemon = await startDaemon(b.daemon(), () => undefined, { chunkDelayMs: 20 });
      const port = b.version === 4 ? daemon.controller.broker!.port : mosquitto.port;
      opts = { host: '127.0.0.1', port, protocolVersion: b.version, node: daemon.cfg.node_id };
      ctx = { daemon, client: await BitadClient.mqtt(opts) };
    });
    t.teardown(async () => {
      await ctx?.client.close();
      await ctx?.daemon.stop();
    });

    clientCases(t, () => ctx);

    t.test('close() cancels what is in flight', (t) => closeCase(t, () => BitadClient.mqtt(opts), ctx.daemon));

    t.test(`replies come on the client's reply topic${b.version === 5 ? ' with the transaction as Correlation Data' : ' (reply_to)'}`, async (t) => {
      const replyTopic = `bitad/reply/route-${randomUUID()}`;
      const observer = await mqtt.connectAsync({ host: '127.0.0.1', port: opts.port, protocolVersion: b.version });
      const seen: { topic: string; corr?: string; transaction: string }[] = [];
      observer.on('message', (topic, payload, packet) =>
        seen.push({ topic, corr: packet.properties?.correlationData?.toString(), transaction: JSON.parse(payload.toString()).transaction }),
      );
      await observer.subscribeAsync('bitad/#', { qos: 1 });
      const c = await BitadClient.mqtt({ ...opts, replyTopic });
      const g = c.generate({ prompt: 'route', maxTokens: 3 });
      await g.result;
      await new Promise((r) => setTimeout(r, 100));
      const replies = seen.filter((s) => s.transaction === g.transaction && !s.topic.includes('/request/'));
      t.ok(replies.length >= 2, `${replies.length} replies seen`);
      t.ok(replies.every((s) => s.topic === replyTopic), 'all on the reply topic');
      if (b.version === 5) t.ok(replies.every((s) => s.corr === g.transaction), 'correlation data = transaction');
      await c.close();
      await observer.endAsync();
    });

    t.test('an unreachable broker is a clear connect error', async (t) => {
      await t.rejects(BitadClient.mqtt({ host: '127.0.0.1', port: 1, node: 'x', connectTimeoutMs: 2000 }), /mqtt: cannot connect to 127.0.0.1:1/);
    });
  });
}
