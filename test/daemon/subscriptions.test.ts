import t from 'tap';
import { refusedTopics } from '../../src/daemon/transport/subscriptions.js';

t.test('refusedTopics reads a refusal from the SUBACK packet or from a granted QoS of 128', async (t) => {
  const topics = ['a/request/+', 'ha/status'];
  t.same(refusedTopics(topics, undefined, { cmd: 'suback', granted: [1, 0x80] }), ['ha/status'], 'MQTT 3.1.1 failure 0x80 in the SUBACK');
  t.same(refusedTopics(topics, undefined, { cmd: 'suback', granted: [0x87, 1] }), ['a/request/+'], 'MQTT 5 reason code 0x87');
  t.same(refusedTopics(topics, [{ topic: topics[0]!, qos: 128 }, { topic: topics[1]!, qos: 1 }], undefined), ['a/request/+'], 'granted QoS 128 (older mqtt.js)');
  t.same(refusedTopics(topics, [{ topic: topics[0]!, qos: 1 }, { topic: topics[1]!, qos: 1 }], undefined), [], 'all granted');
  t.equal(refusedTopics(topics, undefined, undefined), null, 'no SUBACK (connection closed): unknown');
});
