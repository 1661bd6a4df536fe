/**
 * The request/response contract every transport must meet (issue 4, "What it must show"), run
 * against one Harness + TestDaemon. Each case also checks the SQLite row it leaves behind.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Test } from 'tap';
import type { ErrorReply, FinalReply, OkReply } from '../../../src/daemon/protocol/envelope.js';
import type { RequestRow } from '../../../src/daemon/store/store.js';
import type { Harness } from './harness.js';
import type { TestDaemon } from './daemon.js';

const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([p, sleep(ms).then(() => Promise.reject(new Error(`timeout: ${what}`)))]);

function rowFor(d: TestDaemon, txn: string | null, kind?: string | null): RequestRow | undefined {
  const rows = d.rows().filter((r) => r.txn === txn && (kind === undefined || r.kind === kind));
  return rows[rows.length - 1];
}

function code(r: FinalReply): string | undefined {
  return r.status === 'error' ? (r as ErrorReply).error.code : undefined;
}

/** A valid request after an error proves the transport and queue are still healthy. */
async function stillServes(t: Test, h: Harness): Promise<void> {
  const p = h.send('generate', { prompt: 'the next one', max_tokens: 4 });
  const f = await within(p.final, 5000, 'follow-up request');
  t.equal(f.status, 'ok', 'the next valid request still succeeds');
}

export function conformance(t: Test, transport: 'mqtt' | 'socket', getDaemon: () => TestDaemon, getHarness: () => Harness): void {
  /** Tests that need a request to stay busy slow the fake engine to 20 ms per step (~0.6 s for 60 tokens). */
  const slowly = (fn: (t: Test) => Promise<void>) => async (t: Test) => {
    const e = getDaemon().engine;
    e.chunkDelayMs = 20;
    try {
      await fn(t);
    } finally {
      e.chunkDelayMs = 2;
    }
  };
  const cancelAll = async (...ps: { transaction: string | null; final: Promise<FinalReply> }[]) => {
    const h = getHarness();
    for (const p of ps) {
      h.send('cancel', { target: p.transaction });
      await within(p.final, 5000, 'cancelled final');
    }
  };

  t.test('a generate request streams chunks, then exactly one final ok reply', async (t) => {
    const h = getHarness();
    const p = h.send('generate', { prompt: 'Once upon a time', max_tokens: 12 });
    const f = (await within(p.final, 5000, 'final')) as OkReply;
    await sleep(100); // a second final reply would arrive within this
    t.equal(p.finals.length, 1, 'one final reply');
    t.equal(f.status, 'ok');
    t.equal(f.transaction, p.transaction, 'transaction echoed');
    t.ok(p.chunks.length >= 2, `streamed ${p.chunks.length} chunks`);
    t.same(p.chunks.map((c) => c.seq), p.chunks.map((_, i) => i), 'chunk seq counts from 0');
    const data = f.data as { text: string; tokens: number[]; finish_reason: string; stats: Record<string, number> };
    t.equal(p.chunks.map((c) => c.text).join(''), data.text, 'chunks add up to the final text');
    t.equal(data.stats.output_tokens, 12);
    t.equal(data.finish_reason, 'length');
    const row = rowFor(getDaemon(), p.transaction)!;
    t.ok(row, 'a row was stored');
    t.match(row, { transport, kind: 'generate', model: 'fake', prompt_tokens: 4, output_tokens: 12, outcome: 'ok', error_code: null, finish_reason: 'length', tree_budget: 16 });
    for (const k of ['queue_ms', 'ttft_ms', 'tpot_ms', 'engine_ms', 'total_ms', 'tokens_per_s', 'mean_accepted_tokens'] as const) {
      t.ok(typeof row[k] === 'number' && row[k]! >= 0, `${k} recorded (${row[k]})`);
    }
    t.ok(row.total_ms! >= row.engine_ms!, 'total time includes engine time');
  });

  t.test('a chat request is answered, and stream:false sends only the final reply', async (t) => {
    const h = getHarness();
    const p = h.send('chat', { messages: [{ role: 'user', content: 'tell me a story' }], max_tokens: 5, stream: false });
    const f = await within(p.final, 5000, 'final');
    t.equal(f.status, 'ok');
    t.equal(p.chunks.length, 0, 'no chunks');
    t.match(rowFor(getDaemon(), p.transaction), { kind: 'chat', outcome: 'ok', output_tokens: 5 });
  });

  t.test('cancel mid-stream ends the request with one cancelled error reply', slowly(async (t) => {
    const h = getHarness();
    const p = h.send('generate', { prompt: 'a long story', max_tokens: 60 });
    await within(p.firstChunk, 5000, 'first chunk');
    const c = h.send('cancel', { target: p.transaction });
    const cf = (await within(c.final, 5000, 'cancel reply')) as OkReply;
    t.same(cf.data, { target: p.transaction, cancelled: true }, 'the cancel request is acknowledged');
    const f = await within(p.final, 5000, 'final');
    await sleep(50);
    t.equal(code(f), 'cancelled');
    t.equal(p.finals.length, 1, 'one final reply');
    t.ok(p.chunks.length < 30, `stopped early (${p.chunks.length} chunks)`);
    t.match(rowFor(getDaemon(), p.transaction), { outcome: 'error', error_code: 'cancelled' });
  }));

  t.test('a duplicate delivery of the same transaction is executed once', async (t) => {
    const d = getDaemon();
    const h = getHarness();
    const calls = d.engine.calls;
    const p = h.send('generate', { prompt: 'twice', max_tokens: 3 }, { times: 2 });
    await within(p.final, 5000, 'final');
    await sleep(150);
    t.equal(d.engine.calls - calls, 1, 'the engine ran once');
    t.equal(p.finals.length, 1, 'one final reply');
    t.equal(d.rows().filter((r) => r.txn === p.transaction).length, 1, 'one row');
  });

  t.test('an expired deadline gets a deadline_exceeded error reply, queued or running', slowly(async (t) => {
    const h = getHarness();
    const blocker = h.send('generate', { prompt: 'occupy the engine', max_tokens: 60 });
    await within(blocker.firstChunk, 5000, 'blocker started');
    const queued = h.send('generate', { prompt: 'too late', max_tokens: 3, deadline_ms: 30 });
    const fq = await within(queued.final, 5000, 'queued final');
    t.equal(code(fq), 'deadline_exceeded', 'expired while waiting');
    t.match(rowFor(getDaemon(), queued.transaction), { outcome: 'error', error_code: 'deadline_exceeded', queue_ms: null });
    await cancelAll(blocker);
    const running = h.send('generate', { prompt: 'slow', max_tokens: 60, deadline_ms: 100 });
    const fr = await within(running.final, 5000, 'running final');
    t.equal(code(fr), 'deadline_exceeded', 'expired while generating');
    t.ok(running.chunks.length > 0 && running.chunks.length < 30, 'it had started and was stopped');
    await stillServes(t, h);
  }));

  t.test('a full queue answers busy at once', slowly(async (t) => {
    const h = getHarness();
    const running = h.send('generate', { prompt: 'one', max_tokens: 60 });
    await within(running.firstChunk, 5000, 'running');
    const q1 = h.send('generate', { prompt: 'two', max_tokens: 60 });
    const q2 = h.send('generate', { prompt: 'three', max_tokens: 60 });
    await sleep(30);
    const over = h.send('generate', { prompt: 'four', max_tokens: 60 });
    const f = await within(over.final, 1000, 'busy reply');
    t.equal(code(f), 'busy');
    t.ok(running.finals.length === 0, 'the running request is unaffected');
    t.match(rowFor(getDaemon(), over.transaction), { outcome: 'error', error_code: 'busy' });
    await cancelAll(q2, q1, running);
    t.equal(code(await q1.final), 'cancelled', 'a queued request can be cancelled');
    await stillServes(t, h);
  }));

  const badCases: [string, string, Record<string, unknown> | string, string][] = [
    ['malformed JSON', 'generate', '{"prompt": "unterminated', 'bad_json'],
    ['a JSON array', 'generate', '[1,2,3]', 'bad_json'],
    ['a wrong type', 'generate', { prompt: 'hi', max_tokens: 'ten' }, 'bad_request'],
    ['a missing prompt', 'generate', { max_tokens: 3 }, 'bad_request'],
    ['an unknown field', 'generate', { prompt: 'hi', colour: 'blue' }, 'bad_request'],
    ['an oversize payload', 'generate', { prompt: 'word '.repeat(1000) }, 'payload_too_large'],
    ['a prompt longer than the context', 'generate', { prompt: 'word '.repeat(100), max_tokens: 3 }, 'prompt_too_long'],
    ['an unknown request', 'frobnicate', { prompt: 'hi' }, 'unknown_request'],
  ];
  for (const [what, kind, body, expected] of badCases) {
    t.test(`${what} gets an error reply with code ${expected}, and the next request succeeds`, async (t) => {
      const h = getHarness();
      const before = getDaemon().rows().length;
      const p = h.send(kind, body);
      const f = await within(p.final, 5000, 'error reply');
      t.equal(f.status, 'error');
      t.equal(code(f), expected);
      t.ok((f as ErrorReply).error.message.length > 0, `message: ${(f as ErrorReply).error.message}`);
      // Unparsed payloads have no readable transaction; the reply says so rather than guessing.
      const txn = expected === 'bad_json' || expected === 'payload_too_large' ? null : p.transaction;
      t.equal(f.transaction, txn, 'transaction echoed when readable');
      const rows = getDaemon().rows().slice(before);
      t.match(rows[0], { transport, outcome: 'error', error_code: expected, txn }, 'an error row was stored');
      await stillServes(t, h);
    });
  }

  t.test('health answers with model, queue and tree size', async (t) => {
    const f = (await within(getHarness().send('health', {}).final, 5000, 'health')) as OkReply;
    t.match(f.data, { state: 'online', model: 'fake', tree_budget: 16, queue: { capacity: 2 } });
  });
}
