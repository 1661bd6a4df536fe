/**
 * The dashboard's parts without a browser: the SQLite history (survives a restart, buckets,
 * retention), the fleet rules (offline / stale / online, a cleared retained state forgets the
 * board), token auth, the page's size budget, the command's options, and a prompt round trip over
 * MQTT 5 and 3.1.1 against an in-process daemon on mosquitto.
 */
import { gzipSync } from 'node:zlib';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { dashboardOptions, parseDuration } from '../../src/cli/commands/dashboard.js';
import { TokenAuth, isLoopback } from '../../src/dashboard/auth.js';
import { Fleet, pointOf } from '../../src/dashboard/fleet.js';
import { History } from '../../src/dashboard/history.js';
import { DashboardConfigError, startDashboard } from '../../src/dashboard/index.js';
import { FleetLink, type ReplyMessage } from '../../src/dashboard/link.js';
import { PACKAGE_ROOT } from '../../src/daemon/package-root.js';
import { loadAssets } from '../../src/dashboard/server.js';
import { startDaemon } from '../daemon/helpers/daemon.js';
import { startMosquitto } from '../daemon/helpers/mosquitto.js';
import { simTelemetry, until } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'bitad-dash-unit-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('history: boards and points survive a restart; charts bucket per board; retention prunes', async (t) => {
  const path = join(dir, 'h.db');
  const now = 1_800_000_000_000;
  let h = new History({ path, retentionMs: 3_600_000, maxPoints: 1000 });
  let fleet = new Fleet(h, { startedAt: now });
  fleet.onState('a', { state: 'online' }, now - 7_200_000);
  fleet.onInfo('a', { version: '1.2.3', model: { name: 'm' } });
  for (let s = 0; s < 20; s++) {
    fleet.onTelemetry('a', simTelemetry(1, s, 1), now - 7_200_000 + s * 1000); // two hours ago: past retention
    fleet.onTelemetry('a', simTelemetry(1, s, 1), now - 20_000 + s * 1000);
    fleet.onTelemetry('b', simTelemetry(2, s, 1), now - 20_000 + s * 1000);
  }
  h.close();
  h = new History({ path, retentionMs: 3_600_000, maxPoints: 1000 });
  fleet = new Fleet(h, { startedAt: now });
  t.same(fleet.nodes(), ['a', 'b'], 'boards back after a restart');
  t.equal(fleet.view(fleet.get('a')!, now).version, '1.2.3', 'with their info');
  t.equal(fleet.view(fleet.get('b')!, now).tokens_per_s, simTelemetry(2, 19, 1).tokens_per_s_p50, 'and their last telemetry');
  t.equal(h.pointCount(), 60, 'every point stored');
  const s = h.series('tokens_per_s', now - 60_000, 5000);
  t.same(s.nodes, ['a', 'b'], 'one series per board');
  t.equal(s.xs.length, 4, '20 s of points in 5 s buckets');
  t.equal(s.ys[1][0], 102.2, 'bucket = mean of its points (102.1, 102.2, 102.3, 102.4, 102.0)');
  t.equal(h.series('tokens_per_s', 0, 5000, ['b']).nodes.length, 1, 'one board only');
  t.equal(h.prune(now), 20, 'the points older than the retention go');
  const capped = new History({ path: join(dir, 'cap.db'), retentionMs: 1e12, maxPoints: 5 });
  for (let i = 0; i < 12; i++) capped.saveTelemetry('x', {}, i, pointOf('x', simTelemetry(0, i, 1), i));
  t.equal(capped.prune(100), 7, 'beyond maxPoints the oldest go');
  t.equal(capped.recentPoints('x', 10)[0].ts, 11, 'the newest stay');
  capped.close();
  h.close();
});

t.test('fleet: offline from the state (Will or clean stop), stale when telemetry stops, forgotten when state is cleared', async (t) => {
  const now = 1_800_000_000_000;
  const fleet = new Fleet(null, { startedAt: now });
  fleet.onState('a', { state: 'online' }, now);
  fleet.onTelemetry('a', { window_s: 2, tokens_per_s_p50: 10 }, now);
  t.equal(fleet.status(fleet.get('a')!, now + 5_000).status, 'online', 'within 3 intervals');
  t.equal(fleet.status(fleet.get('a')!, now + 6_500).status, 'stale', 'after 3 telemetry intervals');
  t.match(fleet.status(fleet.get('a')!, now + 6_500).reason, /no telemetry for 7 s/);
  fleet.onState('a', { state: 'offline' }, now + 7_000);
  t.equal(fleet.status(fleet.get('a')!, now + 7_000).status, 'offline');
  fleet.onState('b', { state: 'online' }, now);
  t.equal(fleet.status(fleet.get('b')!, now + 60_000).status, 'online', 'no telemetry yet: 90 s grace');
  t.equal(fleet.status(fleet.get('b')!, now + 91_000).status, 'stale');
  const views = fleet.views(now + 1000);
  t.same(fleet.totals(views), { boards: 2, online: 1, degraded: 0, stale: 0, offline: 1, tokens_per_s: 0, requests: 0, errors: 0, queue_depth: 0 }, 'totals count the reporting (online, degraded) boards only');
  fleet.onState('a', null);
  t.same(fleet.nodes(), ['b'], 'an empty retained state (decommissioned) forgets the board');
  const v = new Fleet(null).view({ node: 'x', state: 'online', stateTs: Date.now(), info: null, telemetry: simTelemetry(13, 0, 1), telemetryTs: Date.now() });
  t.equal(v.throttled, true, 'Pi throttle bits decoded');
  t.equal(v.tree_rows, 13);
  t.equal(v.tree_active, 'throughput');
  t.equal(v.gpu_pct, null, 'a reading the board does not have stays null');
});

t.test('auth: loopback rule, bearer, cookie, ?token= swapped for a cookie, everything else 401', async (t) => {
  t.ok(isLoopback('127.0.0.1') && isLoopback('::1') && isLoopback('localhost') && isLoopback('127.1.2.3'));
  t.notOk(isLoopback('0.0.0.0') || isLoopback('192.168.1.5') || isLoopback('::'));
  const auth = new TokenAuth('s3cret');
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    if (auth.check(req, res, url) === 'ok') res.end('in');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const get = (path: string, headers: Record<string, string> = {}) => fetch(base + path, { headers, redirect: 'manual' });
  t.equal((await get('/api/fleet')).status, 401);
  t.equal((await get('/api/fleet', { authorization: 'Bearer s3cre' })).status, 401, 'a prefix is not the token');
  t.equal((await get('/api/fleet', { authorization: 'Bearer s3cret' })).status, 200);
  t.equal((await get('/', { cookie: 'x=1; bitad_dashboard=s3cret' })).status, 200);
  t.equal((await get('/?token=nope')).status, 401);
  const r = await get('/board/a?token=s3cret&x=1');
  t.equal(r.status, 302);
  t.equal(r.headers.get('location'), '/board/a?x=1', 'redirect without the token');
  t.match(r.headers.get('set-cookie'), /bitad_dashboard=s3cret; HttpOnly; SameSite=Strict/);
  t.equal((await get('/', { authorization: 'Bearer s3cret' })).status, 200);
});

t.test('the page: assets well under 200 KB gzipped, uPlot from node_modules', async (t) => {
  const assets = loadAssets(join(PACKAGE_ROOT, 'src/dashboard/static'));
  let raw = 0;
  let gz = 0;
  for (const [path, a] of assets) {
    raw += a.body.length;
    gz += gzipSync(a.body).length;
    t.ok(a.gzip.length < a.body.length, `${path} served gzipped`);
  }
  t.comment(`page assets: ${(raw / 1024).toFixed(1)} KB raw, ${(gz / 1024).toFixed(1)} KB gzipped`);
  t.ok(gz < 100 * 1024, `gzipped ${(gz / 1024).toFixed(1)} KB < 100 KB (budget 200 KB)`);
  t.match(assets.get('/assets/uPlot.min.js')!.body.toString('utf8', 0, 200), /uPlot/);
  t.notMatch(assets.get('/')!.body.toString(), /https?:\/\//, 'no CDN (no absolute URL in the page)');
});

t.test('options: loopback by default, a token required elsewhere, broker from the config or --broker', async (t) => {
  const env = { BITAD_DASHBOARD_TOKEN: 'tok', BITAD_MQTT_EMBEDDED: 'false', BITAD_MQTT_PORT: '1999', BITAD_MQTT_HOST: 'broker.lan' };
  const o = dashboardOptions([], env);
  if (o === 'help') throw new Error('help');
  t.equal(o.host, '127.0.0.1');
  t.equal(o.token, 'tok', 'the token variable is read (and not refused as an unknown config key)');
  t.same([o.mqtt.host, o.mqtt.port, o.mqtt.protocolVersion], ['broker.lan', 1999, 5]);
  const o2 = dashboardOptions(['--broker', 'mqtt://10.0.0.2:1884', '--protocol', '4', '--listen', '0.0.0.0:9000', '--retention', '7d'], {});
  if (o2 === 'help') throw new Error('help');
  t.same([o2.mqtt.host, o2.mqtt.port, o2.mqtt.protocolVersion, o2.host, o2.port, o2.retentionMs], ['10.0.0.2', 1884, 4, '0.0.0.0', 9000, 7 * 86_400_000]);
  t.equal(parseDuration('90m'), 5_400_000);
  t.throws(() => parseDuration('soon'), /a duration like 90m/);
  t.ok((() => { try { parseDuration('soon'); } catch (e) { return e instanceof DashboardConfigError; } })(), 'a usage error (exit 2)');
  await t.rejects(startDashboard({ ...o2, token: null, dbPath: join(dir, 'x.db') }), /not loopback\) needs a token/, 'exposed without a token: refused before anything starts');
});

t.test('prompt round trip over MQTT 5 (Response Topic) and 3.1.1 (reply_to), and a board that never answers', async (t) => {
  const mosq = await startMosquitto();
  t.teardown(() => mosq.stop());
  const daemon = await startDaemon({ embedded: false, host: '127.0.0.1', port: mosq.port, protocol_version: 5 }, (c) => (c.node_id = 'unit'));
  t.teardown(() => daemon.stop());
  for (const protocolVersion of [5, 4] as const) {
    const link = new FleetLink({ host: '127.0.0.1', port: mosq.port, protocolVersion, baseTopic: 'bitad' }, { onBoard: () => undefined });
    await link.connect();
    const got: ReplyMessage[] = [];
    link.request('unit', 'generate', { prompt: 'Once upon a time', max_tokens: 5 }, (m) => got.push(m), 10_000);
    const final = await until('final reply', () => got.find((m) => 'status' in m));
    t.equal(final.status, 'ok', `MQTT ${protocolVersion}: final reply ok`);
    const chunks = got.filter((m) => 'seq' in m);
    t.ok(chunks.length > 1, `MQTT ${protocolVersion}: ${chunks.length} streamed chunks before it`);
    t.equal(chunks.map((c) => c.text).join(''), (final.data as { text: string }).text, 'the chunks add up to the final text');
    t.equal(got.indexOf(final), got.length - 1, 'the final reply last');
    const none: ReplyMessage[] = [];
    link.request('nobody', 'generate', { prompt: 'x' }, (m) => none.push(m), 300);
    const timeout = await until('synthesized final', () => none[0]);
    t.match(timeout, { status: 'error', error: { code: 'no_reply' } }, 'a board that never answers still ends the request');
    await link.close();
  }
  t.equal(daemon.rows().length, 2, 'the daemon executed each request once');
});
