/**
 * A board's recent requests on the dashboard: the rows a daemon lists in its telemetry
 * (`recent_requests`) are stored once in the dashboard's SQLite (each message repeats the last N),
 * survive a restart without duplicates, show in `GET /api/board/<node>` and reach a board page's
 * event stream (`/api/events?node=<node>`, event `requests`) — end to end from a real daemon's
 * telemetry through mosquitto.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt from 'mqtt';
import t from 'tap';
import { Fleet, boardRequests } from '../../src/dashboard/fleet.js';
import { History, type BoardRequest } from '../../src/dashboard/history.js';
import { startDashboard } from '../../src/dashboard/index.js';
import { startDaemon } from '../daemon/helpers/daemon.js';
import { startMosquitto } from '../daemon/helpers/mosquitto.js';
import { until } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'bitad-dash-req-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** Request `i` as the daemon's telemetry lists it (nulls already left out). */
function wireRow(i: number): Record<string, unknown> {
  return { ts: 1_800_000_000_000 + i * 1000, transport: 'mqtt', kind: 'generate', outcome: 'ok', output_tokens: 10 + i, ttft_ms: 4.5, tokens_per_s: 90 + i, total_ms: 100 + i, tree_budget: 8, tree_policy: 'throughput' };
}

/** A telemetry message listing requests `from`..`to` (newest at "0", as the daemon sends them). */
function telemetry(from: number, to: number): Record<string, unknown> {
  const rows = [];
  for (let i = to; i >= from; i--) rows.push(wireRow(i));
  return { ts: Date.now(), window_s: 30, requests: 1, ok: 0, errors: { busy: 1 }, recent_requests: Object.fromEntries(rows.map((r, k) => [String(k), r])) };
}

t.test('stored once though every message repeats them, across a restart; new ones handed to the event stream', async (t) => {
  const path = join(dir, 'r.db');
  const now = 1_800_000_100_000;
  let h = new History({ path, retentionMs: 3_600_000, maxPoints: 1000 });
  let fleet = new Fleet(h, { startedAt: now });
  fleet.onTelemetry('a', telemetry(0, 9), now);
  fleet.onTelemetry('a', telemetry(0, 9), now + 1000);
  fleet.onTelemetry('a', telemetry(2, 11), now + 2000);
  t.same(h.requests('a', 100).map((r) => r.ts), Array.from({ length: 12 }, (_, i) => wireRow(11 - i).ts), '12 distinct requests, newest first');
  t.same(h.requests('a', 1)[0], { ...wireRow(11), error_code: null }, 'every field, a missing one as null');
  const fresh = h.takeFreshRequests();
  t.same(fresh.get('a')!.map((r) => r.ts), Array.from({ length: 12 }, (_, i) => wireRow(i).ts), 'fresh: each once, oldest first');
  t.equal(h.takeFreshRequests().size, 0, 'taken once');
  t.notOk('recent_requests' in fleet.get('a')!.telemetry!, 'the list is not kept in the board\'s latest telemetry');
  t.equal(fleet.view(fleet.get('a')!, now + 2000).errors, 1, 'errors by code (as the daemon sends them) are counted');
  h.close();

  h = new History({ path, retentionMs: 3_600_000, maxPoints: 1000 });
  fleet = new Fleet(h, { startedAt: now });
  fleet.onTelemetry('a', telemetry(3, 12), now + 3000);
  t.equal(h.requests('a', 100).length, 13, 'after a restart the repeated ones are not stored again');
  t.same(h.takeFreshRequests().get('a')!.map((r) => r.ts), [wireRow(12).ts], 'only the new one is fresh');
  t.equal(h.requests('b', 10).length, 0, 'per board');

  h.prune(now + 3000 + 3_600_001);
  t.equal(h.requests('a', 100).length, 0, 'retention by receive time');
  h.close();
});

t.test('a board is trusted with figures, not with what the dashboard stores', async (t) => {
  const rows = boardRequests({ '0': { ...wireRow(1), prompt: 'secret', txn: 'x', kind: 'k'.repeat(500) }, '1': { outcome: 'ok' }, '2': null, '3': 'junk' });
  t.equal(rows.length, 1, 'rows without a numeric ts, and non-objects, are dropped');
  t.notOk('prompt' in rows[0] || 'txn' in rows[0], 'unknown fields dropped');
  t.equal(rows[0].kind!.length, 64, 'strings capped');
  t.same(boardRequests([wireRow(1)]).length, 1, 'an array is read too');
  t.same(boardRequests(undefined), []);
});

t.test('a real daemon\'s requests reach the board API and the board page\'s event stream, without prompt text', async (t) => {
  const mosq = await startMosquitto();
  t.teardown(() => mosq.stop());
  const dash = await startDashboard({
    mqtt: { host: '127.0.0.1', port: mosq.port, protocolVersion: 5, baseTopic: 'bitad' },
    host: '127.0.0.1',
    port: 0,
    token: null,
    dbPath: join(dir, 'live.db'),
    retentionMs: 3_600_000,
    maxPoints: 10_000,
  });
  t.teardown(() => dash.stop());
  const daemon = await startDaemon({ embedded: false, host: '127.0.0.1', port: mosq.port, protocol_version: 5 }, (c) => {
    c.node_id = 'rr';
    c.telemetry = { enabled: true, interval_s: 1, load_poll_s: 1, recent_requests: 3 };
  });
  t.teardown(() => daemon.stop());
  await until('the board known to the dashboard', () => dash.fleet.get('rr'));

  const events = await openEvents(`${dash.url}api/events?node=rr`);
  t.teardown(() => events.close());
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${mosq.port}`, { protocolVersion: 5 });
  t.teardown(() => client.endAsync());
  await client.subscribeAsync('bitad/rr/response/#', { qos: 1 });
  const finals = new Set<string>();
  client.on('message', (_topic, payload) => {
    const m = JSON.parse(payload.toString()) as { transaction?: string; status?: string };
    if (m.status && m.transaction) finals.add(m.transaction);
  });
  // One at a time: the test daemon's queue holds 2, and distinct receive times keep the order plain.
  for (let i = 0; i < 4; i++) {
    await client.publishAsync('bitad/rr/request/generate', JSON.stringify({ transaction: `other-client-${i}`, prompt: `my private prompt ${i}`, max_tokens: 4 }), { qos: 1 });
    await until(`final reply ${i}`, () => finals.has(`other-client-${i}`), 10_000);
    await sleep(5);
  }

  const rows = daemon.rows();
  t.equal(rows.length, 4, 'the daemon finished 4 requests');
  const last = rows[3].ts;
  const detail = await until('the last request in the board API', async () => {
    const d = (await (await fetch(`${dash.url}api/board/rr`)).json()) as { requests: BoardRequest[] };
    return d.requests[0]?.ts === last ? d : undefined;
  }, 15_000);
  const newest3 = rows.slice(-3).reverse();
  const fields = (r: Pick<BoardRequest, 'ts' | 'output_tokens' | 'total_ms' | 'ttft_ms' | 'outcome' | 'kind' | 'transport'>) => [r.ts, r.output_tokens, r.total_ms, r.ttft_ms, r.outcome, r.kind, r.transport];
  t.same(detail.requests.slice(0, 3).map(fields), newest3.map(fields), 'the daemon\'s newest 3 (N = 3), newest first, with its figures');
  t.match(detail.requests[0], { outcome: 'ok', kind: 'generate', transport: 'mqtt', output_tokens: 4 });
  await sleep(2500); // two more telemetry messages, each listing the same 3 again
  const again = (await (await fetch(`${dash.url}api/board/rr`)).json()) as { requests: BoardRequest[] };
  t.equal(again.requests.length, detail.requests.length, 'repeated telemetry adds no duplicates');
  const body = JSON.stringify(again);
  t.notMatch(body, /private prompt|other-client/, 'no prompt text or transaction id of the other client');

  const pushed = await until('the last request on the board page\'s stream', () => (events.requests().at(-1)?.ts === last ? events.requests() : undefined), 10_000);
  t.same(pushed.slice(-3).map((r) => r.ts), rows.slice(-3).map((r) => r.ts), 'pushed live, oldest first');
  t.equal(events.requests().length, new Set(events.requests().map((r) => r.ts + '|' + r.total_ms)).size, 'each pushed once');
});

/** An SSE reader for `/api/events`: collects the `requests` events' rows. */
async function openEvents(url: string): Promise<{ requests: () => BoardRequest[]; close: () => void }> {
  const ac = new AbortController();
  const res = await fetch(url, { signal: ac.signal });
  const got: BoardRequest[] = [];
  let buf = '';
  void (async () => {
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += Buffer.from(chunk).toString('utf8');
        let k: number;
        while ((k = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, k);
          buf = buf.slice(k + 2);
          const ev = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (ev === 'requests' && data) got.push(...(JSON.parse(data) as { requests: BoardRequest[] }).requests);
        }
      }
    } catch {
      // aborted at close
    }
  })();
  return { requests: () => got, close: () => ac.abort() };
}
