/**
 * The client library's behaviour against a real daemon (in-process Controller with a FakeEngine),
 * the same cases over the Unix socket, the embedded aedes broker (MQTT 3.1.1) and mosquitto (MQTT 5).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Test } from 'tap';
import { BitadClient, BitadError, type Chunk } from '../../src/client/index.js';
import type { TestDaemon } from '../daemon/helpers/daemon.js';
import type { RequestRow } from '../../src/daemon/store/store.js';

export interface Ctx {
  client: BitadClient;
  daemon: TestDaemon;
}

function rowsFor(d: TestDaemon, txn: string): RequestRow[] {
  return d.rows().filter((r) => r.txn === txn);
}

async function waitFor<T>(what: () => T | undefined, ms = 3000): Promise<T | undefined> {
  const end = Date.now() + ms;
  for (;;) {
    const v = what();
    if (v !== undefined || Date.now() > end) return v;
    await sleep(20);
  }
}

async function collect(g: AsyncIterable<Chunk>): Promise<{ chunks: Chunk[]; error: unknown }> {
  const chunks: Chunk[] = [];
  try {
    for await (const c of g) chunks.push(c);
    return { chunks, error: null };
  } catch (e) {
    return { chunks, error: e };
  }
}

/** Occupies the engine for a while (≈ 20 steps at chunkDelayMs) so a following request waits in the queue. */
function blocker(ctx: Ctx, txn: string) {
  return ctx.client.generate({ prompt: 'hold the engine', maxTokens: 40 }, { transaction: txn });
}

export function clientCases(t: Test, get: () => Ctx): void {
  t.test('generate streams chunks in order and the result matches them and the stored row', async (t) => {
    const { client, daemon } = get();
    const g = client.generate({ prompt: 'once upon a time', maxTokens: 8 });
    const { chunks, error } = await collect(g);
    t.equal(error, null);
    const r = await g.result;
    t.ok(chunks.length >= 3, `${chunks.length} chunks`);
    t.same(chunks.map((c) => c.seq), chunks.map((_, i) => i), 'seq 0, 1, 2, …');
    t.equal(chunks.map((c) => c.text).join(''), r.text, 'chunks add up to the text');
    t.same(chunks.flatMap((c) => c.tokens), r.tokens);
    t.equal(r.tokens.length, 8);
    t.equal(r.finishReason, 'length');
    t.equal(r.attempts, 1);
    t.equal(r.transaction, g.transaction);
    t.equal(r.stats.output_tokens, 8);
    t.type(r.stats.total_ms, 'number');
    const rows = rowsFor(daemon, g.transaction);
    t.equal(rows.length, 1);
    t.equal(rows[0].total_ms, r.stats.total_ms, 'wire stats = stored row');
  });

  t.test('chat, with the array shorthand and stream off', async (t) => {
    const { client } = get();
    const g = client.chat([{ role: 'user', content: 'hello there' }], {});
    const r = await g.result;
    t.ok(r.text.length > 0);
    const quiet = client.chat({ messages: [{ role: 'user', content: 'hi' }], maxTokens: 3, stream: false });
    const { chunks } = await collect(quiet);
    t.equal(chunks.length, 0, 'no chunks with stream: false');
    t.equal((await quiet.result).tokens.length, 3);
  });

  t.test("typed errors carry the daemon's codes, from result and from the iterator", async (t) => {
    const { client } = get();
    const long = client.generate({ prompt: Array.from({ length: 80 }, (_, i) => `w${i}`).join(' ') });
    const err = await long.result.then(() => null, (e: unknown) => e);
    t.ok(err instanceof BitadError);
    t.match(err, { code: 'prompt_too_long', fromDaemon: true, transaction: long.transaction });
    const { error } = await collect(long);
    t.equal(error, err, 'the iterator throws the same error');
    await t.rejects(client.generate({ prompt: 'x', maxTokens: 100_000 }).result, { code: 'bad_request' });
    t.throws(() => client.generate({ prompt: 'x' }, { transaction: 'a/b' }), TypeError, 'a transaction with "/" never leaves the client');
  });

  t.test('AbortSignal mid-stream: rejects with cancelled at once and the daemon really cancels it', async (t) => {
    const { client, daemon } = get();
    const ac = new AbortController();
    const g = client.generate({ prompt: 'a long story', maxTokens: 40 }, { signal: ac.signal });
    const chunks: Chunk[] = [];
    const err = await (async () => {
      try {
        for await (const c of g) {
          chunks.push(c);
          if (chunks.length === 2) ac.abort();
        }
      } catch (e) {
        return e;
      }
      return null;
    })();
    t.match(err, { code: 'cancelled', fromDaemon: false });
    t.equal(chunks.length, 2);
    await t.rejects(g.result, { code: 'cancelled' });
    const row = await waitFor(() => rowsFor(daemon, g.transaction)[0]);
    t.equal(row?.error_code, 'cancelled', 'the daemon got the cancel (its row says cancelled, not ok)');
    const pre = new AbortController();
    pre.abort();
    const calls = daemon.engine.calls;
    await t.rejects(client.generate({ prompt: 'x' }, { signal: pre.signal }).result, { code: 'cancelled' });
    await sleep(50);
    t.equal(daemon.engine.calls, calls, 'an already aborted signal sends nothing');
  });

  t.test('deadline: the daemon answers deadline_exceeded', async (t) => {
    const { client } = get();
    const g = client.generate({ prompt: 'slow', maxTokens: 40 }, { deadlineMs: 60 });
    await t.rejects(g.result, { code: 'deadline_exceeded', fromDaemon: true });
  });

  t.test('silence → resend of the same transaction: the daemon drops the duplicates and runs it once', async (t) => {
    const { client, daemon } = get();
    const b = blocker(get(), `blk-${Date.now()}`);
    await waitFor(() => (daemon.engine.active > 0 ? true : undefined));
    const calls = daemon.engine.calls;
    const g = client.generate({ prompt: 'patient', maxTokens: 4 }, { idleTimeoutMs: 80, retries: 20 });
    const r = await g.result;
    await b.result;
    t.ok(r.attempts >= 2, `resent while queued (${r.attempts} sends)`);
    t.equal(daemon.engine.calls - calls, 1, 'executed once');
    t.equal(rowsFor(daemon, g.transaction).length, 1, 'one row');
  });

  t.test('busy → backoff and resend with the same transaction until a slot is free', async (t) => {
    const { client, daemon } = get();
    const b = blocker(get(), `blk2-${Date.now()}`);
    await waitFor(() => (daemon.engine.active > 0 ? true : undefined));
    // queue.capacity is 2: fill it, then one more is busy.
    const fillers = [0, 1].map(() => client.generate({ prompt: 'filler', maxTokens: 2 }));
    await sleep(30);
    const calls = daemon.engine.calls;
    const g = client.generate({ prompt: 'late', maxTokens: 2 }, { retries: 6 });
    const r = await g.result;
    await Promise.all([b.result, ...fillers.map((f) => f.result)]);
    t.ok(r.attempts >= 2, `${r.attempts} sends`);
    const rows = rowsFor(daemon, g.transaction);
    t.same(rows.map((x) => x.error_code ?? 'ok').sort(), [...Array(rows.length - 1).fill('busy'), 'ok'].sort(), 'busy rows, then one ok');
    t.equal(daemon.engine.calls - calls, 3, 'the fillers and the late one, each once');
  });

  t.test('health', async (t) => {
    const { client } = get();
    const h = await client.health();
    t.equal(h.state, 'online');
    t.equal(h.node_id, get().daemon.cfg.node_id);
    t.equal(h.components.engine?.status, 'ok');
  });
}

/** close() with a request in flight: it fails with closed and the daemon is told to cancel it. */
export async function closeCase(t: Test, connect: () => Promise<BitadClient>, daemon: TestDaemon): Promise<void> {
  const c = await connect();
  const g = c.generate({ prompt: 'cut short', maxTokens: 40 });
  for await (const _ of g) break;
  await c.close();
  await t.rejects(g.result, { code: 'closed' });
  const row = await waitFor(() => rowsFor(daemon, g.transaction)[0]);
  t.equal(row?.error_code, 'cancelled');
  t.rejects(c.generate({ prompt: 'after' }).result, { code: 'closed' }, 'a closed client refuses new requests');
}
