/**
 * The client over the Unix socket when things go wrong: an oversize request, a daemon that
 * restarts or goes silent, timers beyond setTimeout's range. Mostly against a scriptable stand-in
 * server (test/client/helpers/fake-socket.ts); the daemon's own oversize answer against the real one.
 */
import t from 'tap';
import { mock } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { BitadClient, BitadError } from '../../src/client/index.js';
import { startDaemon } from '../daemon/helpers/daemon.js';
import { fakeSocketServer, reply, type FakeSocketServer } from './helpers/fake-socket.js';

/** The outcome of `p` if it settles within `ms`, else 'pending'. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | unknown> {
  return Promise.race([p.then((v) => v, (e: unknown) => e), sleep(ms, 'pending')]);
}

let fake: FakeSocketServer;
t.beforeEach(async () => {
  fake = await fakeSocketServer();
});
t.afterEach(() => fake.dispose());

t.test('a request over maxPayloadBytes fails at once with payload_too_large and is never sent', async (t) => {
  const client = await BitadClient.socket(fake.path);
  const g = client.generate({ prompt: 'x'.repeat(70_000) });
  t.match(await within(g.result, 2000), { code: 'payload_too_large', fromDaemon: false, transaction: g.transaction });
  const small = await BitadClient.socket(fake.path, { maxPayloadBytes: 1024 });
  t.match(await within(small.generate({ prompt: 'y'.repeat(2000) }).result, 2000), { code: 'payload_too_large' }, 'the limit is an option');
  await sleep(50);
  t.equal(fake.lines.length, 0, 'nothing reached the daemon');
  await client.close();
  await small.close();
});

t.test("the daemon's payload_too_large (transaction null) fails the request it can only be", async (t) => {
  // The test daemon's limit is 4096 bytes, below the client's default: the client sends it.
  const daemon = await startDaemon({ enabled: false });
  t.teardown(() => daemon.stop());
  const client = await BitadClient.socket(daemon.cfg.socket.path);
  const g = client.generate({ prompt: 'x'.repeat(5000) });
  t.match(await within(g.result, 2000), { code: 'payload_too_large', fromDaemon: true, transaction: g.transaction });
  t.equal((await client.generate({ prompt: 'fine', maxTokens: 2 }).result).tokens.length, 2, 'the connection still works');
  await client.close();
});

t.test('after the daemon restarts, the next call reconnects (not "closed": close() was never called)', async (t) => {
  const client = await BitadClient.socket(fake.path);
  fake.onLine = (l, conn) => reply(conn, { transaction: l.transaction, status: 'ok', data: { state: 'online', node_id: 'n', components: {} } });
  t.equal((await client.health()).state, 'online');
  await fake.stop();
  await sleep(50);
  const down = client.health();
  t.match(await within(down, 2000), { code: 'disconnected', fromDaemon: false }, 'while it is down: disconnected');
  await fake.start();
  t.equal((await client.health()).state, 'online', 'back up: the same client works again');
  await client.close();
  await t.rejects(client.health(), { code: 'closed' }, 'after close(): closed');
});

t.test('giving up with no_reply tells the daemon to cancel the request', async (t) => {
  const client = await BitadClient.socket(fake.path);
  const g = client.generate({ prompt: 'x' }, { idleTimeoutMs: 100, retries: 1 });
  t.match(await within(g.result, 2000), { code: 'no_reply' });
  await fake.waitLines(3, 500);
  t.same(
    fake.lines.map((l) => (l.type === 'cancel' ? `cancel ${String(l.target)}` : `${String(l.type)} ${String(l.transaction)}`)),
    [`generate ${g.transaction}`, `generate ${g.transaction}`, `cancel ${g.transaction}`],
  );
  await client.close();
});

t.test('on the socket a silent (queued) request is not resent or given up by default', async (t) => {
  const client = await BitadClient.socket(fake.path);
  mock.timers.enable({ apis: ['setTimeout'] });
  t.teardown(() => mock.timers.reset());
  const g = client.generate({ prompt: 'queued behind others' });
  await fake.waitLines(1);
  mock.timers.tick(10 * 60_000);
  await new Promise((r) => setImmediate(r)); // an I/O turn: a resend would have been written by now
  mock.timers.reset();
  await sleep(50);
  t.equal(fake.lines.length, 1, 'sent once');
  t.equal(await within(g.result, 20), 'pending', 'still waiting after 10 minutes of silence');
  const conn = [...fake.conns][0];
  reply(conn, { transaction: g.transaction, status: 'ok', data: { text: 'ok', tokens: [1], finish_reason: 'length', stats: {} } });
  t.equal((await g.result).text, 'ok');
  await client.close();
});

t.test('timeouts beyond setTimeout range (2^31 ms) do not fire at once', async (t) => {
  const client = await BitadClient.socket(fake.path);
  const g = client.generate({ prompt: 'x' }, { idleTimeoutMs: 2 ** 31 + 10 });
  await sleep(200);
  t.equal(fake.lines.length, 1, 'no resend after 200 ms');
  t.equal(await within(g.result, 10), 'pending');
  t.throws(() => client.generate({ prompt: 'x' }, { deadlineMs: 2 ** 31 }), TypeError, "a deadline over the daemon's maximum never leaves the client");
  const day = client.generate({ prompt: 'x' }, { deadlineMs: 86_400_000 });
  t.equal(await within(day.result, 200), 'pending', 'a one-day deadline does not fire at once');
  await client.close();
  t.ok((await g.result.catch((e: unknown) => e)) instanceof BitadError);
});
