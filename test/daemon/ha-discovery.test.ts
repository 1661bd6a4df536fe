/**
 * Home Assistant discovery and Telegraf-friendly telemetry against a real broker (aedes, outside
 * the daemon so the broker outlives it for the decommission step) and a FakeEngine daemon.
 * The allowed keys and units below are Home Assistant's documented ones (MQTT integration,
 * "Device discovery payload"; sensor device classes), so a typo or an undocumented key fails here.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import t from 'tap';
import mqtt, { type IPublishPacket, type MqttClient } from 'mqtt';
import { buildConfig } from '../../src/daemon/config/load.js';
import { VERSION } from '../../src/daemon/version.js';
import { startEmbeddedBroker, type EmbeddedBroker } from '../../src/daemon/transport/broker.js';
import { discoveryPayload, haDiscoveryTopic, haObjectId } from '../../src/daemon/transport/ha-discovery.js';
import { topicProblem } from '../../src/daemon/transport/topics.js';
import { decommission } from '../../src/cli/commands/decommission.js';
import { startDaemon, type TestDaemon } from './helpers/daemon.js';
import { mqttHarness, type Harness } from './helpers/harness.js';

const TOPIC = 'homeassistant/device/bitad_testnode/config';
const BASE = 'bitad/testnode';

/** Root keys: `dev` and `o` are mandatory; the shared options Home Assistant documents for device discovery. */
const ROOT_REQUIRED = ['dev', 'o', 'cmps'];
const ROOT_ALLOWED = new Set([...ROOT_REQUIRED, 'availability', 'availability_mode', 'availability_topic', 'state_topic', 'command_topic', 'qos', 'encoding']);
const DEVICE_ALLOWED = new Set(['ids', 'name', 'mf', 'mdl', 'sw', 'hw', 'sn', 'cns', 'sa', 'cu', 'via_device']);
const ORIGIN_ALLOWED = new Set(['name', 'sw', 'url']);
const AVAILABILITY_ALLOWED = new Set(['topic', 'value_template', 'payload_available', 'payload_not_available']);
/** Options of the MQTT sensor and binary_sensor platforms that this payload may use. */
const COMPONENT_ALLOWED = new Set([
  'p', 'name', 'unique_id', 'value_template', 'device_class', 'state_class', 'unit_of_measurement',
  'suggested_display_precision', 'entity_category', 'icon', 'expire_after', 'force_update', 'payload_on', 'payload_off',
]);
/** Units Home Assistant accepts per sensor device class (those used here). */
const UNITS: Record<string, string[]> = {
  temperature: ['°C', '°F', 'K'],
  duration: ['d', 'h', 'min', 's', 'ms'],
  data_size: ['bit', 'kbit', 'Mbit', 'Gbit', 'B', 'kB', 'MB', 'GB', 'TB', 'KiB', 'MiB', 'GiB', 'TiB'],
};
const BINARY_CLASSES = new Set(['running', 'problem', 'connectivity', 'power', 'heat']);

let broker: EmbeddedBroker;
let d: TestDaemon;
let h: Harness;
const clients: MqttClient[] = [];

async function client(): Promise<MqttClient> {
  const c = await mqtt.connectAsync({ host: '127.0.0.1', port: broker.port, protocolVersion: 4, clientId: `t-${randomUUID()}`, reconnectPeriod: 0 });
  clients.push(c);
  return c;
}

/** Subscribes a fresh client to `topic` (a filter) and records every message with its retain flag. */
async function watch(topic: string): Promise<{ c: MqttClient; msgs: { payload: string; retain: boolean }[] }> {
  const c = await client();
  const msgs: { payload: string; retain: boolean }[] = [];
  c.on('message', (_tp, payload, packet: IPublishPacket) => msgs.push({ payload: payload.toString(), retain: packet.retain }));
  await c.subscribeAsync(topic, { qos: 1 });
  return { c, msgs };
}

async function until(cond: () => boolean, ms = 5000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; ) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return cond();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function walk(v: unknown, path: string, visit: (path: string, v: unknown) => void): void {
  visit(path, v);
  if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) walk(x, `${path}.${k}`, visit);
}

t.before(async () => {
  broker = await startEmbeddedBroker('127.0.0.1', 0);
  d = await startDaemon({ embedded: false, host: '127.0.0.1', port: broker.port, protocol_version: 4 }, (c) => {
    c.homeassistant = { enabled: true };
    c.telemetry = { enabled: true, interval_s: 1, load_poll_s: 1 };
  });
  h = await mqttHarness('aedes', broker.port, BASE, 4);
});
t.teardown(async () => {
  await h?.close();
  for (const c of clients) await c.endAsync(true);
  await d?.stop();
  await broker?.close();
});

t.test('discovery is off by default; the object id keeps only the characters Home Assistant allows', async (t) => {
  t.same(buildConfig({}, { env: {} }).homeassistant, { enabled: false, prefix: 'homeassistant' });
  t.equal(haObjectId('kitchen_pi-5_a'), 'bitad_kitchen_pi-5_a');
  t.equal(haObjectId('kitchen.pi-5_a'), 'bitad_kitchen_pi-5_a_79f4501a', 'a `.` becomes `_`, plus the first 8 hex of the raw id\'s SHA-256');
  t.equal(haDiscoveryTopic('homeassistant', 'kitchen.pi'), 'homeassistant/device/bitad_kitchen_pi_c1667b0c/config');
  t.equal(topicProblem(haDiscoveryTopic('ha/prefix', 'n1')), null);
  t.throws(() => buildConfig({ homeassistant: { prefix: 'home/+' } }, { env: {} }), /homeassistant.prefix/);
});

t.test('node ids that differ only by `.` and `_` get different discovery topics, device ids and unique_ids; valid ids keep theirs', async (t) => {
  const ids = ['a.b', 'a_b', 'a.b.c', 'a_b.c', 'a.b_c', 'a_b_c', 'kitchen.pi'];
  const topics = ids.map((n) => haDiscoveryTopic('homeassistant', n));
  t.equal(new Set(topics).size, ids.length, `one topic each: ${topics.join(', ')}`);
  const uniqueIds = ids.flatMap((n) => Object.values(discoveryPayload({ nodeId: n, base: `bitad/${n}`, info: {} }).cmps as Record<string, { unique_id: string }>).map((c) => c.unique_id));
  t.equal(new Set(uniqueIds).size, uniqueIds.length, 'no unique_id shared between boards');
  t.not(haObjectId('a.b'), haObjectId('a_b'), 'device ids differ');
  t.equal(haObjectId('a.b'), haObjectId('a.b'), 'stable across restarts');
  for (const n of ['a_b', 'testnode', 'Kitchen-Pi_5', 'x'.repeat(64)]) t.equal(haObjectId(n), `bitad_${n}`, `${n}: a valid id is kept (existing entities stay)`);
  for (const n of ['a.b', 'kitchen.pi']) t.match(haObjectId(n), /^bitad_[A-Za-z0-9_-]+$/, `${n}: only the characters Home Assistant allows`);
});

let payload: Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

t.test('one retained device payload per board with the documented keys', async (t) => {
  const w = await watch(TOPIC);
  t.ok(await until(() => w.msgs.length > 0), 'a new subscriber gets the payload');
  t.equal(w.msgs[0].retain, true, 'retained');
  payload = JSON.parse(w.msgs[0].payload);
  for (const k of ROOT_REQUIRED) t.ok(k in payload, `root has ${k}`);
  t.same(Object.keys(payload).filter((k) => !ROOT_ALLOWED.has(k)), [], 'no undocumented root keys');
  t.same(Object.keys(payload.dev).filter((k) => !DEVICE_ALLOWED.has(k)), [], 'device keys');
  t.same(Object.keys(payload.o).filter((k) => !ORIGIN_ALLOWED.has(k)), [], 'origin keys');
  t.match(payload.dev, { ids: ['bitad_testnode'], name: 'bitad testnode', mdl: 'fake', sw: VERSION });
  t.match(payload.o, { name: 'bitad', sw: VERSION });
  t.equal(payload.state_topic, `${BASE}/telemetry`);
  t.same(payload.availability, [{ topic: `${BASE}/state`, value_template: '{{ value_json.state }}', payload_available: 'online', payload_not_available: 'offline' }]);
  for (const a of payload.availability) t.same(Object.keys(a).filter((k) => !AVAILABILITY_ALLOWED.has(k)), [], 'availability keys');

  const ids = new Set<string>();
  const cmps = Object.entries(payload.cmps) as [string, Record<string, unknown>][];
  t.ok(cmps.length >= 10, `${cmps.length} entities`);
  for (const [id, c] of cmps) {
    t.match(id, /^[A-Za-z0-9_-]+$/, `component id ${id}`);
    t.same(Object.keys(c).filter((k) => !COMPONENT_ALLOWED.has(k)), [], `${id}: documented keys only`);
    t.ok(c.p === 'sensor' || c.p === 'binary_sensor', `${id}: platform`);
    t.match(c.unique_id, /^bitad_testnode_/, `${id}: unique_id`);
    t.notOk(ids.has(c.unique_id as string), `${id}: unique_id is unique`);
    ids.add(c.unique_id as string);
    t.type(c.value_template, 'string');
    if (c.state_class !== undefined) t.ok(['measurement', 'total', 'total_increasing'].includes(c.state_class as string), `${id}: state_class`);
    if (c.entity_category !== undefined) t.equal(c.entity_category, 'diagnostic');
    if (c.p === 'binary_sensor') {
      t.ok(BINARY_CLASSES.has(c.device_class as string), `${id}: binary device_class`);
      t.notOk('unit_of_measurement' in c || 'state_class' in c, `${id}: no unit or state_class on a binary sensor`);
    } else if (c.device_class !== undefined) {
      t.ok(UNITS[c.device_class as string]?.includes(c.unit_of_measurement as string), `${id}: ${String(c.unit_of_measurement)} is a ${String(c.device_class)} unit`);
    }
  }
  t.match(payload.cmps.cpu_temp, { p: 'sensor', device_class: 'temperature', unit_of_measurement: '°C', state_class: 'measurement' });
  t.match(payload.cmps.ttft_p95, { device_class: 'duration', unit_of_measurement: 'ms' });
});

t.test('re-sent when Home Assistant announces online, not on offline', async (t) => {
  const w = await watch(TOPIC);
  t.ok(await until(() => w.msgs.length === 1), 'retained copy');
  const sent = d.controller.mqtt!.ha!.sent;
  const ha = await client();
  await ha.publishAsync('homeassistant/status', 'offline', { qos: 1 });
  await sleep(300);
  t.equal(w.msgs.length, 1, 'offline: nothing sent');
  await ha.publishAsync('homeassistant/status', 'online', { qos: 1 });
  t.ok(await until(() => w.msgs.length === 2), 'online: sent again');
  t.equal(d.controller.mqtt!.ha!.sent, sent + 1);
  t.same(JSON.parse(w.msgs[1].payload), payload, 'the same payload');
  // The daemon still answers requests: the status topic did not disturb the request path.
  const r = await h.send('generate', { prompt: 'once upon', max_tokens: 4 }).final;
  t.equal(r.status, 'ok');
});

let telemetry: Record<string, unknown>;

t.test('telemetry is Telegraf-friendly: numeric ts, no nulls, no arrays; missing readings omitted', async (t) => {
  const w = await watch(`${BASE}/telemetry`);
  t.ok(await until(() => w.msgs.some((m) => (JSON.parse(m.payload) as { requests: number }).requests > 0 && 'load' in JSON.parse(m.payload)), 8000), 'a snapshot with the request and a load sample');
  telemetry = JSON.parse(w.msgs.at(-1)!.payload);
  t.type(telemetry.ts, 'number');
  t.ok(Math.abs((telemetry.ts as number) - Date.now()) < 60_000, 'ts is epoch ms');
  const bad: string[] = [];
  walk(telemetry, '$', (p, v) => {
    if (v === null || Array.isArray(v) || (typeof v === 'number' && !Number.isFinite(v))) bad.push(p);
  });
  t.same(bad, [], 'no null, array or non-finite value anywhere');
  t.match(telemetry, { state: 'online', requests: Number, ok: Number, queue_depth: 0, busy: Boolean, tree_budget: Number, ttft_ms_p95: Number, tokens_per_s_p50: Number, components: { mqtt: { status: 'ok' } } });
  t.type((telemetry.load as Record<string, unknown>).rss_mb, 'number');
});

const haveJinja = spawnSync('python3', ['-c', 'import jinja2'], { stdio: 'ignore' }).status === 0;

t.test('every entity template renders against the telemetry (Jinja, as Home Assistant does)', { skip: haveJinja ? false : 'python3 with jinja2 is not installed' }, async (t) => {
  const script = [
    'import json, sys, jinja2',
    'd = json.load(sys.stdin); env = jinja2.Environment()',
    'out = {}',
    'for case, v in d["cases"].items():',
    '  out[case] = {k: env.from_string(tpl).render(value_json=v) for k, tpl in d["templates"].items()}',
    'print(json.dumps(out))',
  ].join('\n');
  const templates = Object.fromEntries(Object.entries(payload.cmps as Record<string, { value_template: string }>).map(([k, c]) => [k, c.value_template]));
  const bare = { ...telemetry, load: undefined, ttft_ms_p95: undefined };
  const hot = { ...telemetry, load: { ...(telemetry.load as object), cpu_temp_c: 71.5, throttled: 0x50005 } };
  const input = JSON.stringify({ templates, cases: { real: telemetry, bare: JSON.parse(JSON.stringify(bare)), hot } });
  const out = JSON.parse(execFileSync('python3', ['-c', script], { input }).toString()) as Record<string, Record<string, string>>;
  const tel = telemetry as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  t.equal(Number(out.real.ttft_p95), tel.ttft_ms_p95);
  t.equal(Number(out.real.rss), tel.load.rss_mb);
  t.equal(Number(out.real.errors), tel.requests - tel.ok);
  t.equal(out.real.busy, tel.busy ? 'ON' : 'OFF');
  t.equal(out.real.degraded, 'OFF');
  for (const k of ['cpu_temp', 'cpu_load', 'gpu_load', 'throttled']) {
    const present = k === 'cpu_temp' ? 'cpu_temp_c' in tel.load : k === 'throttled' ? 'throttled' in tel.load : `${k}_pct` in tel.load;
    if (!present) t.equal(out.real[k], 'None', `${k}: absent reading renders None (unknown)`);
  }
  t.equal(out.bare.cpu_temp, 'None', 'no load object: None, not an error');
  t.equal(out.bare.ttft_p95, 'None');
  t.equal(out.bare.throttled, 'None');
  t.equal(out.hot.cpu_temp, '71.5');
  t.equal(out.hot.throttled, 'ON', 'bits 0–3 set: throttled now');
  for (const [k, v] of Object.entries(out.real)) t.not(v, '', `${k} renders something`);
});

t.test('decommission publishes an empty retained payload; --forget also clears state and info', async (t) => {
  await d.controller.stop('decommission test');
  const live = await watch(TOPIC);
  t.ok(await until(() => live.msgs.length === 1), 'still retained after the daemon stopped');
  const lines: string[] = [];
  t.equal(await decommission(d.cfg, { out: (l) => lines.push(l) }), 0);
  t.ok(await until(() => live.msgs.length === 2), 'a live subscriber sees the removal');
  t.equal(live.msgs[1].payload, '', 'empty payload');
  t.match(lines.join('\n'), /cleared retained homeassistant\/device\/bitad_testnode\/config/);

  // The broker dropped its retained copy, which only a retained publish does; state is still retained.
  const fresh = await watch(TOPIC);
  const state = await watch(`${BASE}/state`);
  t.ok(await until(() => state.msgs.length === 1), 'retained state still delivered');
  t.same(JSON.parse(state.msgs[0].payload), { state: 'offline' });
  await sleep(300);
  t.same(fresh.msgs, [], 'no retained discovery payload left');

  t.equal(await decommission(d.cfg, { forget: true, out: (l) => lines.push(l) }), 0);
  const after = await watch(`${BASE}/#`);
  await sleep(300);
  t.same(after.msgs.filter((m) => m.retain), [], 'no retained state or info left');
});
