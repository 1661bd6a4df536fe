import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { Dispatcher } from '../../src/daemon/dispatcher.js';
import type { Reply } from '../../src/daemon/protocol/envelope.js';
import { Scheduler } from '../../src/daemon/scheduler/scheduler.js';
import { FakeEngine } from './helpers/fake-engine.js';

t.test('expired transactions are forgotten, so the duplicate memory follows the request rate, not its 10 000 cap', async (t) => {
  // Before: entries were only dropped past 10 000, so at any rate the map grew to 10 000 keys and
  // digests (the soak's main-heap growth over its first ~17 minutes at 10 req/s).
  const ttlMs = 400;
  const d = new Dispatcher(new Scheduler(new FakeEngine({ chunkDelayMs: 0 }), 64), null, () => 'fake', () => ({}), pino({ level: 'silent' }), {
    maxPayloadBytes: 4096, maxTokens: 64, defaultMaxTokens: 4, defaultDeadlineMs: 0, dedupeTtlMs: ttlMs,
  });
  const finals: Reply[] = [];
  const send = (txn: string, prompt = 'once upon') =>
    d.handle({
      transport: 'socket', kind: 'generate', scope: 's', payload: JSON.stringify({ transaction: txn, prompt, max_tokens: 2 }),
      route: () => ({ channel: { send: (r) => ('status' in r ? finals.push(r) : 0) }, routeKey: 'r' }),
    });
  for (let i = 0; i < 50; i++) send(`t${i}`);
  for (let i = 0; i < 200 && finals.length < 50; i++) await sleep(5);
  t.equal(finals.length, 50, 'all answered');
  t.equal(d.remembered, 50, 'each accepted transaction is remembered while it may be redelivered');
  send('t0');
  await sleep(20);
  t.equal(finals.length, 50, 'a redelivery within the TTL is dropped');
  await sleep(ttlMs + 10);
  send('t-late');
  for (let i = 0; i < 200 && finals.length < 51; i++) await sleep(5);
  t.equal(d.remembered, 1, 'the expired ones are gone');
  send('t0', 'other words');
  for (let i = 0; i < 200 && finals.length < 52; i++) await sleep(5);
  t.match(finals.at(-1), { transaction: 't0', status: 'ok' }, 'an expired transaction is a new request again');
});
