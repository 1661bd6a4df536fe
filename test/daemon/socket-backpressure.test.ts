/**
 * The socket under clients that misbehave: one that never reads its replies, one that sends more
 * than socket.max_in_flight requests, one that disconnects while its requests wait in the queue.
 */
import t from 'tap';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDaemon, type TestDaemon } from './helpers/daemon.js';
import { MAX_CLIENTS } from '../../src/daemon/transport/socket.js';

async function open(path: string): Promise<Socket> {
  const sock = connect(path);
  await new Promise((r) => sock.once('connect', r));
  return sock;
}

/** Reads NDJSON replies; `finals` resolves once `n` final replies arrived. */
function reader(sock: Socket) {
  const lines: Record<string, unknown>[] = [];
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(buf.slice(0, nl)));
      buf = buf.slice(nl + 1);
    }
  });
  const finals = () => lines.filter((l) => 'status' in l);
  return {
    lines,
    finals,
    async waitFinals(n: number, ms: number) {
      const end = performance.now() + ms;
      while (finals().length < n && performance.now() < end) await sleep(10);
      return finals();
    },
  };
}

const line = (o: Record<string, unknown>) => JSON.stringify(o) + '\n';

/** The daemon side's unsent bytes for all socket clients (the transport's own sockets). */
const unsent = (d: TestDaemon) => [...(d.controller.socket as unknown as { clients: Set<Socket> }).clients].reduce((n, c) => n + c.writableLength, 0);

t.test('a client that never reads stops being read, so the daemon holds a bounded amount for it', async (t) => {
  const d = await startDaemon({ enabled: false }, (c) => ((c.queue as Record<string, number>).capacity = 64), { chunkDelayMs: 0 });
  t.teardown(() => d.stop());
  const sock = await open(d.cfg.socket.path);
  sock.pause(); // never read: the kernel buffers fill, then the daemon's writes queue
  // 3000 requests with 120-character transactions: answering them all (busy beyond the
  // in-flight limit) would queue ≈ 700 KB of replies for this client, plus the chunks.
  const pad = 'x'.repeat(110);
  for (let i = 0; i < 3000; i++) sock.write(line({ type: 'generate', transaction: `${pad}${i}`, prompt: 'once upon a time', max_tokens: 60 }));
  let max = 0;
  for (let i = 0; i < 100; i++) {
    max = Math.max(max, unsent(d));
    await sleep(20);
  }
  t.ok(max < 320 * 1024, `at most ${Math.round(max / 1024)} KiB unsent (bound: 256 KiB chunk-drop threshold + one read)`);
  t.match((d.controller.health().components as Record<string, unknown>).socket, { status: 'ok', clients_not_reading: 1 }, 'health counts the client that is not reading');
  // Once it reads again, every request gets exactly one final reply: nothing acknowledged is lost.
  const r = reader(sock);
  sock.resume();
  const finals = await r.waitFinals(3000, 20_000);
  t.equal(finals.length, 3000, 'one final reply per request');
  t.equal(new Set(finals.map((f) => f.transaction)).size, 3000, 'no request answered twice');
  t.ok(finals.filter((f) => f.status === 'ok').length >= 8, 'the requests within the in-flight limit ran');
  sock.destroy();
});

t.test('chunk replies to a client that is not reading are dropped past 256 KiB unsent; its final reply still comes', async (t) => {
  const d = await startDaemon({ enabled: false }, (c) => ((c.limits as Record<string, number>).max_tokens = 30_000), { chunkDelayMs: 0, contextLength: 40_000 });
  t.teardown(() => d.stop());
  const sock = await open(d.cfg.socket.path);
  sock.pause();
  // ≈ 15 000 chunk lines of ≈ 80 bytes: ≈ 1.2 MB of chunks for one request.
  sock.write(line({ type: 'generate', transaction: 'big', prompt: 'once', max_tokens: 30_000 }));
  let max = 0;
  while (d.controller.dispatcher!.stats.accepted === 0 || d.controller.scheduler!.busy) {
    max = Math.max(max, unsent(d));
    await sleep(5);
  }
  const socketHealth = (d.controller.health().components as Record<string, { dropped_chunks: number }>).socket;
  t.ok(socketHealth.dropped_chunks > 0, `${socketHealth.dropped_chunks} chunks dropped`);
  t.ok(max < 320 * 1024, `at most ${Math.round(max / 1024)} KiB unsent`);
  const r = reader(sock);
  sock.resume();
  const [final] = await r.waitFinals(1, 10_000);
  t.match(final, { transaction: 'big', status: 'ok', data: { stats: { output_tokens: 30_000 } } }, 'the final reply carries the whole text');
  const seqs = r.lines.filter((l) => 'seq' in l).map((l) => l.seq as number);
  t.ok(seqs.every((q, i) => i === 0 || q > seqs[i - 1]), 'the chunks that were sent are in order (with gaps where dropped)');
  sock.destroy();
});

t.test('requests over socket.max_in_flight on one connection are answered busy at once', async (t) => {
  const d = await startDaemon({ enabled: false }, (c) => {
    (c.queue as Record<string, number>).capacity = 8;
    c.socket = { max_in_flight: 2 };
  }, { chunkDelayMs: 20 });
  t.teardown(() => d.stop());
  const sock = await open(d.cfg.socket.path);
  const r = reader(sock);
  for (const txn of ['a', 'b', 'c']) sock.write(line({ type: 'generate', transaction: txn, prompt: 'once', max_tokens: 10 }));
  const first = await r.waitFinals(1, 2000);
  t.match(first[0], { transaction: 'c', status: 'error', error: { code: 'busy' } }, 'the third is refused before the others finish');
  const all = await r.waitFinals(3, 5000);
  t.same(all.filter((f) => f.status === 'ok').map((f) => f.transaction).sort(), ['a', 'b'], 'the two within the limit ran');
  // Another connection has its own allowance.
  const other = await open(d.cfg.socket.path);
  const ro = reader(other);
  other.write(line({ type: 'generate', transaction: 'o', prompt: 'once', max_tokens: 2 }));
  t.match((await ro.waitFinals(1, 2000))[0], { transaction: 'o', status: 'ok' });
  sock.destroy();
  other.destroy();
});

t.test('a client that disconnects with queued requests frees their queue slots at once, and the next client runs', async (t) => {
  const d = await startDaemon({ enabled: false }, () => undefined, { chunkDelayMs: 30 }); // queue capacity 2
  t.teardown(() => d.stop());
  const b = await open(d.cfg.socket.path);
  const rb = reader(b);
  b.write(line({ type: 'generate', transaction: 'long', prompt: 'once', max_tokens: 60 })); // ≈ 30 steps × 30 ms
  while (!d.controller.scheduler!.busy) await sleep(5);
  const a = await open(d.cfg.socket.path);
  a.write(line({ type: 'generate', transaction: 'qa1', prompt: 'once', max_tokens: 4 }) + line({ type: 'generate', transaction: 'qa2', prompt: 'once', max_tokens: 4 }));
  while (d.controller.scheduler!.depth < 2) await sleep(5);
  const t0 = performance.now();
  a.destroy(); // gone for good, with both requests still queued behind "long"
  while (d.controller.scheduler!.depth > 0 && performance.now() - t0 < 600) await sleep(5);
  const freedMs = performance.now() - t0;
  t.equal(d.controller.scheduler!.depth, 0, `queue slots freed after ${Math.round(freedMs)} ms`);
  t.ok(rb.finals().length === 0, 'while the other client\'s generation still runs');
  const c = await open(d.cfg.socket.path);
  const rc = reader(c);
  c.write(line({ type: 'generate', transaction: 'next', prompt: 'once', max_tokens: 2 }));
  t.match((await rc.waitFinals(1, 5000))[0], { transaction: 'next', status: 'ok' }, 'the next client\'s request was queued and ran');
  for (let i = 0; i < 100 && !d.rows().some((r) => r.txn === 'qa2'); i++) await sleep(20);
  t.match(d.rows().filter((r) => r.txn?.startsWith('qa')), [{ error_code: 'cancelled' }, { error_code: 'cancelled' }], 'the gone client\'s requests were cancelled');
  b.destroy();
  c.destroy();
});

t.test('a client that half-closes with several requests in flight is not mistaken for gone: it gets every answer', async (t) => {
  const d = await startDaemon({ enabled: false }, () => undefined, { chunkDelayMs: 20 }); // the probe runs every 200 ms meanwhile
  t.teardown(() => d.stop());
  const sock = await open(d.cfg.socket.path);
  const r = reader(sock);
  const ended = new Promise((res) => sock.once('end', res));
  sock.end(['h1', 'h2', 'h3'].map((txn) => line({ type: 'generate', transaction: txn, prompt: 'once', max_tokens: 30 })).join(''));
  await ended;
  t.same(r.finals().map((f) => [f.transaction, f.status]), [['h1', 'ok'], ['h2', 'ok'], ['h3', 'ok']]);
});

t.test('stop() completes promptly while a client is not reading', async (t) => {
  const d = await startDaemon({ enabled: false }, (c) => ((c.limits as Record<string, number>).max_tokens = 30_000), { chunkDelayMs: 0, contextLength: 40_000 });
  const sock = await open(d.cfg.socket.path);
  sock.pause();
  sock.write(line({ type: 'generate', transaction: 'big', prompt: 'once', max_tokens: 30_000 }));
  while (unsent(d) < 64 * 1024) await sleep(5);
  const t0 = performance.now();
  await d.stop();
  const ms = performance.now() - t0;
  t.ok(ms < 4000, `stopped in ${Math.round(ms)} ms (bound: drain_timeout 2 s, then the unread connection is destroyed after 1 s)`);
  sock.destroy();
});

/** Lines that are not requests, one of each code the cut-off counts (the test limit is 4096 bytes). */
const NOT_REQUESTS = ['x', '{}', JSON.stringify({ type: 'generate' }), 'y'.repeat(5000)];
const NOT_REQUEST_CODES = ['bad_json', 'unknown_request', 'bad_request', 'payload_too_large'];

t.test('a connection that sends only lines that are not requests is closed after 100, each line it was read answered', async (t) => {
  const d = await startDaemon({ enabled: false });
  t.teardown(() => d.stop());
  const sock = await open(d.cfg.socket.path);
  sock.on('error', () => undefined); // EPIPE / ECONNRESET once the daemon has closed it
  const r = reader(sock);
  const closed = new Promise<boolean>((res) => sock.once('close', () => res(true)));
  for (let i = 0; i < 5000; i++) sock.write(NOT_REQUESTS[i % NOT_REQUESTS.length] + '\n');
  t.ok(await Promise.race([closed, sleep(5000).then(() => false)]), 'the daemon closed the connection');
  const finals = r.finals();
  t.ok(finals.length >= 100 && finals.length <= 100 + 32, `${finals.length} replies (the 100th cuts off; lines already taken that turn are still answered)`);
  t.ok(finals.every((f) => NOT_REQUEST_CODES.includes((f as { error?: { code: string } }).error?.code ?? '')), 'each an error reply that names why');
  t.equal(d.rows().length, finals.length, 'one row per answered line, none for the lines never read');
  t.match((d.controller.health().components as Record<string, unknown>).socket, { cut_off_clients: 1 }, 'health counts the connection cut off');
  // Another connection is served as usual.
  const other = await open(d.cfg.socket.path);
  const ro = reader(other);
  other.write(line({ type: 'generate', transaction: 'fine', prompt: 'once', max_tokens: 2 }));
  t.match((await ro.waitFinals(1, 2000))[0], { transaction: 'fine', status: 'ok' });
  other.destroy();
});

t.test('the cut-off answers at most 32 lines beyond the 100th, also when lines arrive in many reads of a few lines each', async (t) => {
  const d = await startDaemon({ enabled: false });
  t.teardown(() => d.stop());
  const sock = await open(d.cfg.socket.path);
  sock.on('error', () => undefined);
  const r = reader(sock);
  const closed = new Promise<boolean>((res) => sock.once('close', () => res(true)));
  sock.write('x\n'.repeat(99));
  t.equal((await r.waitFinals(99, 5000)).length, 99, '99 lines answered: the next one cuts off');
  // Long lines: a 64 KiB read holds about 20, under the 32 one read may take, so several reads
  // (data events) come in the 100th line's event-loop turn, before its reply (and the cut-off).
  const bad = 'x'.repeat(3000) + '\n';
  for (let i = 0; i < 2000; i++) sock.write(bad);
  t.ok(await Promise.race([closed, sleep(5000).then(() => false)]), 'the daemon closed the connection');
  const finals = r.finals();
  t.ok(finals.length >= 100 && finals.length <= 100 + 32, `${finals.length} replies (at most 32 lines taken in the 100th line's turn)`);
  t.equal(d.rows().length, finals.length, 'one row per answered line');
});

t.test('lines that are not requests do not cut off a client that also sends requests: every line is answered', async (t) => {
  const d = await startDaemon({ enabled: false });
  t.teardown(() => d.stop());
  const sock = await open(d.cfg.socket.path);
  const r = reader(sock);
  const ended = new Promise((res) => sock.once('end', res));
  let text = '';
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 99; i++) text += NOT_REQUESTS[i % NOT_REQUESTS.length] + '\n';
    text += line({ type: 'health', transaction: `h${round}` });
  }
  sock.end(text);
  await Promise.race([ended, sleep(5000)]);
  const finals = r.finals();
  t.equal(finals.length, 300, 'one final reply per line');
  t.same(finals.filter((f) => f.status === 'ok').map((f) => f.transaction), ['h0', 'h1', 'h2']);
});

t.test(`connections beyond ${MAX_CLIENTS} are answered busy and closed; a freed place takes the next client`, async (t) => {
  const d = await startDaemon({ enabled: false });
  t.teardown(() => d.stop());
  // Each holds a line it never finishes (the daemon keeps up to max_payload_bytes of it): without
  // a cap, 2000 such connections with 60 KB each grew a daemon by 167 MB.
  const held: Socket[] = [];
  for (let i = 0; i < MAX_CLIENTS; i++) {
    const s = await open(d.cfg.socket.path);
    s.write('{"type":"generate","prompt":"' + 'a'.repeat(2000));
    held.push(s);
  }
  t.teardown(() => held.forEach((s) => s.destroy()));
  const extra = await open(d.cfg.socket.path);
  const r = reader(extra);
  const closed = new Promise<boolean>((res) => extra.once('close', () => res(true)));
  extra.write(line({ type: 'health', transaction: 'h-extra' }));
  t.ok(await Promise.race([closed, sleep(3000).then(() => false)]), 'the connection over the cap is closed');
  t.match(r.finals(), [{ transaction: null, status: 'error', error: { code: 'busy', message: `too many socket connections (${MAX_CLIENTS})` } }], 'with one busy line first');
  t.match((d.controller.health().components as Record<string, unknown>).socket, { clients: MAX_CLIENTS, refused_clients: 1 });
  held.pop()!.destroy();
  await sleep(100);
  const next = await open(d.cfg.socket.path);
  const rn = reader(next);
  next.write(line({ type: 'health', transaction: 'h-next' }));
  t.match(await rn.waitFinals(1, 3000), [{ transaction: 'h-next', status: 'ok' }], 'a client that comes once a place is free is served');
  next.destroy();
});
