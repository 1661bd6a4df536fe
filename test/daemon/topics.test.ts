import t from 'tap';
import { randomUUID } from 'node:crypto';
import { MAX_TOPIC_BYTES, MAX_TOPIC_LEVELS, TopicPolicy, topicProblem, transactionProblem } from '../../src/daemon/transport/topics.js';

const policy = new TopicPolicy({ baseTopic: 'bitad', nodeId: 'n1', replyPrefixes: ['bitad/reply/'] });

t.test('topics the brokers refuse are refused, each with its reason', async (t) => {
  const cases: [string, RegExp][] = [
    ['', /empty/],
    ['a/\u0000b', /control character U\+0000/],
    ['a/\u0001b', /U\+0001/],
    ['a/\u007fb', /U\+007F/],
    ['a/\u0085b', /U\+0085/],
    ['a/\ud800b', /lone surrogate/],
    ['a/b\udc00', /lone surrogate/],
    ['a/\ufdd0', /noncharacter U\+FDD0/],
    ['a/\uffff', /noncharacter U\+FFFF/],
    ['a/\ud83f\udfff', /noncharacter U\+1FFFF/],
    ['a/+/b', /wildcard/],
    ['a/#', /wildcard/],
    ['$SYS/x', /starts with \$/],
    ['x'.repeat(MAX_TOPIC_BYTES + 1), /bytes long/],
    ['é'.repeat(MAX_TOPIC_BYTES / 2 + 1), /bytes long/],
    ['a/'.repeat(MAX_TOPIC_LEVELS) + 'a', /levels/],
  ];
  for (const [topic, reason] of cases) t.match(topicProblem(topic), reason, JSON.stringify(topic.slice(0, 20)));
  for (const ok of ['bitad/reply/app/x', 'a/$b', 'bitad/reply/😀/ü', 'a/'.repeat(MAX_TOPIC_LEVELS - 1) + 'a']) {
    t.equal(topicProblem(ok), null, `${JSON.stringify(ok.slice(0, 20))} is fine`);
  }
});

t.test('a transaction is one topic level: UUIDs and ordinary ids pass, slashes and controls do not', async (t) => {
  for (const ok of [randomUUID(), 'req-42', 'a.b_c:d', '$x', 'ü😀']) t.equal(transactionProblem(ok), null, ok);
  t.match(transactionProblem('a/b'), /contains "\/"/);
  t.match(transactionProblem('/'.repeat(105)), /contains "\/"/);
  t.match(transactionProblem('c\u0001x'), /control/);
  t.match(transactionProblem('a+b'), /wildcard/);
  t.match(transactionProblem(''), /empty/);
  t.match(transactionProblem('x'.repeat(129)), /129 characters/);
});

t.test('named reply routes must lie in the namespace and never on a daemon topic', async (t) => {
  t.equal(policy.namedReplyProblem('bitad/reply/app/replies'), null);
  t.equal(policy.namedReplyProblem('bitad/reply'), null, 'the prefix itself');
  t.match(policy.namedReplyProblem('bitad/replyx'), /outside the reply namespace/);
  t.match(policy.namedReplyProblem('app/replies'), /outside the reply namespace \(bitad\/reply\/…\)/);
  for (const topic of ['bitad/n1/request/generate', 'bitad/other/request/chat', 'bitad/fleet/request/generate', 'bitad/n1/response/t1', 'bitad/n1/state', 'bitad/n2/info', 'bitad/n1/telemetry']) {
    t.match(policy.namedReplyProblem(topic), /daemon (request|response|state|info|telemetry) topic|outside/, topic);
  }
  // Even a namespace that covers daemon topics never lets a request name one.
  const wide = new TopicPolicy({ baseTopic: 'bitad', nodeId: 'n1', replyPrefixes: ['bitad'] });
  t.match(wide.namedReplyProblem('bitad/n1/state'), /daemon state topic/);
  t.match(wide.namedReplyProblem('bitad/reply/request/x'), /daemon request topic/, 'a node called "reply" is a node too');
  t.equal(wide.namedReplyProblem('bitad/n1/state/x'), null, 'below state is not the state topic');
});

t.test('default replies use the transaction only when it is a safe level', async (t) => {
  t.equal(policy.defaultReply('bitad/n1', 't1'), 'bitad/n1/response/t1');
  t.equal(policy.defaultReply('bitad/n1', 'a/b'), 'bitad/n1/response/error');
  t.equal(policy.defaultReply('bitad/fleet', null), 'bitad/fleet/response/error');
  t.same(policy.requestPrefix('bitad/n1/request/generate'), { prefix: 'bitad/n1', kind: 'generate' });
  t.same(policy.requestPrefix('bitad/fleet/request/chat'), { prefix: 'bitad/fleet', kind: 'chat' });
  t.equal(policy.requestPrefix('bitad/n1/request/a/b'), null);
  t.equal(policy.requestPrefix('bitad/n2/request/generate'), null);
});

t.test('a base topic or reply prefix that would publish to invalid topics stops the start', async (t) => {
  t.throws(() => new TopicPolicy({ baseTopic: '$SYS', nodeId: 'n1', replyPrefixes: [] }), /mqtt\.base_topic/);
  t.throws(() => new TopicPolicy({ baseTopic: 'a/+', nodeId: 'n1', replyPrefixes: [] }), /wildcard/);
  t.throws(() => new TopicPolicy({ baseTopic: 'bitad', nodeId: 'n1', replyPrefixes: ['app/#'] }), /mqtt\.reply_prefixes.*wildcard/);
  t.throws(() => new TopicPolicy({ baseTopic: 'bitad', nodeId: 'n1', replyPrefixes: ['/'] }), /mqtt\.reply_prefixes.*empty/);
});
