/**
 * How the dashboard reads a board's health, beyond online / stale / offline (units.test.ts): a
 * board whose telemetry says degraded shows so, with its parts' reasons, and a dead engine adds
 * nothing to the fleet's tokens/s; a retained state the broker hands out again (dashboard restart,
 * reconnect) is no sign of life, so a hung board stays stale; telemetry from a buggy or hostile
 * board is checked where it comes in (window_s in the daemon's range, components as objects).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt from 'mqtt';
import t from 'tap';
import { Fleet } from '../../src/dashboard/fleet.js';
import { History } from '../../src/dashboard/history.js';
import { startDashboard } from '../../src/dashboard/index.js';
import { FleetLink } from '../../src/dashboard/link.js';
import { startMosquitto } from '../daemon/helpers/mosquitto.js';
import { simTelemetry, until } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'bitad-dash-status-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const now = 1_800_000_000_000;

/** The reviewer's sick board: the daemon says degraded, its engine worker is gone and its disk full. */
const sick = {
  ...simTelemetry(0, 0, 30),
  state: 'degraded',
  components: { engine: { status: 'down', reason: 'worker exited' }, store: { status: 'degraded', reason: 'disk full' }, mqtt: { status: 'ok' } },
  tokens_per_s_p50: 500,
};

t.test('a board whose telemetry says degraded shows degraded with its parts\' reasons, and its dead engine adds no tokens/s', async (t) => {
  const fleet = new Fleet(null, { startedAt: now });
  for (const node of ['sick', 'well', 'full']) fleet.onState(node, { state: 'online' }, now);
  fleet.onTelemetry('sick', sick, now);
  fleet.onTelemetry('well', { ...simTelemetry(0, 0, 30), tokens_per_s_p50: 100 }, now);
  // The telemetry's own state is online, but a part is not: the parts decide too.
  fleet.onTelemetry('full', { ...simTelemetry(0, 0, 30), tokens_per_s_p50: 40, components: { engine: { status: 'ok' }, store: { status: 'degraded', reason: 'disk full' } } }, now);
  const v = fleet.view(fleet.get('sick')!, now + 1000);
  t.equal(v.status, 'degraded');
  t.equal(v.status_reason, 'engine: down (worker exited); store: degraded (disk full)', 'why: the parts that are not ok');
  t.equal(fleet.view(fleet.get('full')!, now + 1000).status, 'degraded', 'a degraded part makes the board degraded');
  const totals = fleet.totals(fleet.views(now + 1000));
  t.match(totals, { boards: 3, online: 1, degraded: 2, stale: 0, offline: 0 }, 'counted as degraded, not online');
  t.equal(totals.tokens_per_s, 140, 'tokens/s: the well board and the one whose engine still runs, not the dead engine\'s 500');
  t.equal(totals.requests, 30, 'requests in the window, 10 each: every board that reports (a dead engine\'s failures count)');
  fleet.onTelemetry('sick', { ...sick, state: 'online', components: { engine: { status: 'ok' } } }, now + 2000);
  t.equal(fleet.view(fleet.get('sick')!, now + 2000).status, 'online', 'recovered: online again');
  fleet.onTelemetry('sick', { ...sick, components: undefined }, now + 3000);
  t.match(fleet.view(fleet.get('sick')!, now + 3000), { status: 'degraded', status_reason: 'state degraded' }, 'degraded with no part named');
});

t.test('a retained state handed out again (dashboard restart, reconnect) is no sign of life: a hung board stays stale', async (t) => {
  const path = join(dir, 'hung.db');
  let h = new History({ path, retentionMs: 3_600_000, maxPoints: 1000 });
  let fleet = new Fleet(h, { startedAt: now });
  fleet.onState('hung', { state: 'online' }, now);
  fleet.onTelemetry('hung', { ...simTelemetry(0, 0, 2), tokens_per_s_p50: 77 }, now);
  t.match(fleet.status(fleet.get('hung')!, now + 9000), { status: 'stale', reason: 'no telemetry for 9 s' });
  fleet.onState('hung', { state: 'online' }, now + 9000, true); // the dashboard's MQTT reconnect
  t.match(fleet.status(fleet.get('hung')!, now + 9000), { status: 'stale', reason: 'no telemetry for 9 s' }, 'still stale after a reconnect');
  h.close();

  h = new History({ path, retentionMs: 3_600_000, maxPoints: 1000 });
  fleet = new Fleet(h, { startedAt: now + 9000 });
  fleet.onState('hung', { state: 'online' }, now + 9000, true);
  t.match(fleet.status(fleet.get('hung')!, now + 9500), { status: 'stale', reason: 'no telemetry for 10 s' }, 'still stale after a restart');
  const totals = fleet.totals(fleet.views(now + 9500));
  t.match(totals, { online: 0, stale: 1, tokens_per_s: 0 }, 'its old tokens/s not in the total');
  fleet.onState('hung', { state: 'offline' }, now + 9600, true);
  t.equal(fleet.status(fleet.get('hung')!, now + 9600).status, 'offline', 'a retained offline still counts (the Will it left)');
  fleet.onState('hung', { state: 'online' }, now + 9700);
  t.equal(fleet.status(fleet.get('hung')!, now + 9700).status, 'online', 'a live state (a board that started) is a sign of life');
  h.close();
});

t.test('the link tells a retained message handed out on subscribe from a live one', async (t) => {
  const mosq = await startMosquitto();
  t.teardown(() => mosq.stop());
  const board = await mqtt.connectAsync({ host: '127.0.0.1', port: mosq.port, protocolVersion: 5 });
  t.teardown(() => board.endAsync());
  await board.publishAsync('bitad/r/state', '{"state":"online"}', { qos: 1, retain: true });
  const got: Array<[string, boolean | undefined]> = [];
  const link = new FleetLink({ host: '127.0.0.1', port: mosq.port, protocolVersion: 5, baseTopic: 'bitad' }, { onBoard: (node, kind, _p, retained) => got.push([kind, retained]) });
  await link.connect();
  t.teardown(() => link.close());
  await until('the retained state', () => got.length >= 1);
  await board.publishAsync('bitad/r/state', '{"state":"online"}', { qos: 1, retain: true });
  await until('the live state', () => got.length >= 2);
  t.same(got, [['state', true], ['state', false]]);
});

t.test('end to end: a hung board stays stale across a dashboard restart on the same db', async (t) => {
  const mosq = await startMosquitto();
  t.teardown(() => mosq.stop());
  const board = await mqtt.connectAsync({ host: '127.0.0.1', port: mosq.port, protocolVersion: 5 });
  t.teardown(() => board.endAsync());
  await board.publishAsync('bitad/hung/state', '{"state":"online"}', { qos: 1, retain: true });
  const opts = { mqtt: { host: '127.0.0.1', port: mosq.port, protocolVersion: 5 as const, baseTopic: 'bitad' }, host: '127.0.0.1', port: 0, token: null, dbPath: join(dir, 'e2e.db'), retentionMs: 3_600_000, maxPoints: 1000, staleMs: 1000 };
  let d = await startDashboard(opts);
  await board.publishAsync('bitad/hung/telemetry', JSON.stringify(simTelemetry(0, 0, 1)), { qos: 1 });
  await until('its telemetry', () => d.fleet.get('hung')?.telemetryTs);
  await d.stop();
  await sleep(1500);
  d = await startDashboard(opts);
  t.teardown(() => d.stop());
  await until('the retained state', () => d.link.messages >= 1);
  const fleet = (await (await fetch(`${d.url}api/fleet`)).json()) as { boards: Array<{ node: string; status: string }> };
  t.equal(fleet.boards.find((b) => b.node === 'hung')?.status, 'stale', 'stale, not online again');
});

t.test('telemetry from a buggy or hostile board is checked where it comes in', async (t) => {
  const fleet = new Fleet(null, { startedAt: now });
  fleet.onState('huge', { state: 'online' }, now);
  fleet.onTelemetry('huge', { ...simTelemetry(0, 0, 1), window_s: 1e12 }, now);
  t.equal(fleet.status(fleet.get('huge')!, now + 91_000).status, 'stale', 'window_s 1e12: not never stale (outside the daemon\'s 1..86400 s, so the 90 s default)');
  fleet.onState('neg', { state: 'online' }, now);
  fleet.onTelemetry('neg', { ...simTelemetry(0, 0, 1), window_s: -1 }, now);
  t.equal(fleet.status(fleet.get('neg')!, now + 1000).status, 'online', 'window_s -1: not stale at once');
  t.equal(fleet.view(fleet.get('neg')!, now).window_s, null, 'an impossible window is not shown either');
  fleet.onState('odd', { state: 'online' }, now);
  fleet.onTelemetry('odd', { ...simTelemetry(0, 0, 1), components: { engine: null, store: 'x', mqtt: { status: 5, reason: { a: 1 } }, socket: { status: 'ok', reason: 'r'.repeat(1000) } } }, now);
  const comps = fleet.get('odd')!.telemetry!.components as Record<string, { status: string; reason?: string }>;
  t.same(Object.keys(comps), ['socket'], 'only parts with a status string are kept (what the board page reads)');
  t.equal(comps.socket.reason!.length, 200, 'reasons capped');
  fleet.onTelemetry('odd', { ...simTelemetry(0, 0, 1), components: [{ status: 'down' }], tree: 'x', load: null }, now);
  t.notOk('components' in fleet.get('odd')!.telemetry!, 'components that are not an object are dropped');
  t.notOk('tree' in fleet.get('odd')!.telemetry!, 'so is a tree that is not an object');
  t.equal(fleet.view(fleet.get('odd')!, now).status, 'online');
});
