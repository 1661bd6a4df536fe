/**
 * Home Assistant MQTT discovery (opt-in, `homeassistant.enabled`): ONE retained device-based
 * payload per board at `<prefix>/device/bitad_<node>/config` (Home Assistant's device discovery,
 * 2024.11+: shared `dev`, `o`, availability and state topic, entities under `cmps`). The entities
 * read the board's own `<base>/telemetry`; availability comes from the retained `<base>/state`
 * (also the Last Will). The payload is re-sent when Home Assistant's birth message `online`
 * arrives on `<prefix>/status`, since a Home Assistant that lost its retained copy (a broker
 * without persistence, a wiped store) would otherwise never see the board again. Removal is an
 * empty retained payload on the same topic (`bitad decommission`, removeDevice below).
 */
import { createHash } from 'node:crypto';
import type { MqttClient } from 'mqtt';

export interface HomeAssistantConfig {
  enabled: boolean;
  prefix: string;
}

/**
 * Home Assistant accepts only [A-Za-z0-9_-] in a discovery object id; node ids may also hold `.`.
 * Replacing it alone made `a.b` and `a_b` one device, so an id that had to change also gets a short
 * hash of the raw id; an id that is already valid stays as it was, so its entities stay too.
 */
export function haObjectId(nodeId: string): string {
  const safe = nodeId.replace(/[^A-Za-z0-9_-]/g, '_');
  if (safe === nodeId) return `bitad_${nodeId}`;
  return `bitad_${safe}_${createHash('sha256').update(nodeId).digest('hex').slice(0, 8)}`;
}

export function haDiscoveryTopic(prefix: string, nodeId: string): string {
  return `${prefix}/device/${haObjectId(nodeId)}/config`;
}

/** Where Home Assistant publishes its birth (`online`) and will (`offline`) by default. */
export function haStatusTopic(prefix: string): string {
  return `${prefix}/status`;
}

interface EntitySpec {
  /** Key under `cmps`; also the suffix of the entity's unique_id. */
  id: string;
  platform: 'sensor' | 'binary_sensor';
  name: string;
  /** Path into the telemetry JSON (see telemetry.ts). */
  path?: string[];
  /** Jinja template, when a path is not enough. */
  template?: string;
  device_class?: string;
  state_class?: 'measurement';
  unit?: string;
  precision?: number;
  diagnostic?: boolean;
  icon?: string;
}

/**
 * Telemetry omits a reading it does not have (a board without a temperature sensor, percentiles
 * before the first request), so every template falls back to `None`, which Home Assistant's MQTT
 * sensors show as "unknown" instead of logging a template error on each message.
 */
function valueTemplate(path: string[]): string {
  const access = path.map((k) => `['${k}']`);
  let expr = `value_json${access[0]}`;
  for (const a of access.slice(1)) expr = `(${expr} | default({}))${a}`;
  return `{{ ${expr} | default(None) }}`;
}

/** Raspberry Pi `get_throttled`: bits 0–3 are "now" (under-voltage, capped, throttled, soft limit); higher bits are history. */
const THROTTLED_NOW = "{% set t = (value_json['load'] | default({}))['throttled'] %}{{ 'None' if t is not defined else ('ON' if t % 16 > 0 else 'OFF') }}";

export const HA_ENTITIES: readonly EntitySpec[] = [
  { id: 'tokens_per_s', platform: 'sensor', name: 'Tokens per second (p50)', path: ['tokens_per_s_p50'], state_class: 'measurement', unit: 'tok/s', precision: 1, icon: 'mdi:speedometer' },
  { id: 'ttft_p95', platform: 'sensor', name: 'Time to first token (p95)', path: ['ttft_ms_p95'], device_class: 'duration', state_class: 'measurement', unit: 'ms', precision: 0 },
  { id: 'tpot_p95', platform: 'sensor', name: 'Time per output token (p95)', path: ['tpot_ms_p95'], device_class: 'duration', state_class: 'measurement', unit: 'ms', precision: 1 },
  { id: 'total_p95', platform: 'sensor', name: 'Request latency (p95)', path: ['total_ms_p95'], device_class: 'duration', state_class: 'measurement', unit: 'ms', precision: 0 },
  { id: 'mean_accepted', platform: 'sensor', name: 'Mean accepted tokens per step', path: ['mean_accepted_tokens'], state_class: 'measurement', precision: 2, icon: 'mdi:source-branch' },
  { id: 'requests', platform: 'sensor', name: 'Requests in window', path: ['requests'], state_class: 'measurement', icon: 'mdi:counter' },
  { id: 'errors', platform: 'sensor', name: 'Failed requests in window', template: "{{ value_json['requests'] - value_json['ok'] }}", state_class: 'measurement', icon: 'mdi:alert-circle-outline' },
  { id: 'queue_depth', platform: 'sensor', name: 'Queue depth', path: ['queue_depth'], state_class: 'measurement', icon: 'mdi:tray-full' },
  { id: 'tree_rows', platform: 'sensor', name: 'Tree budget', path: ['tree_budget'], state_class: 'measurement', unit: 'rows', icon: 'mdi:file-tree' },
  { id: 'cpu_load', platform: 'sensor', name: 'CPU load', path: ['load', 'cpu_load_pct'], state_class: 'measurement', unit: '%', precision: 0, icon: 'mdi:cpu-64-bit' },
  { id: 'gpu_load', platform: 'sensor', name: 'GPU load', path: ['load', 'gpu_load_pct'], state_class: 'measurement', unit: '%', precision: 0, icon: 'mdi:expansion-card' },
  { id: 'cpu_temp', platform: 'sensor', name: 'CPU temperature', path: ['load', 'cpu_temp_c'], device_class: 'temperature', state_class: 'measurement', unit: '°C', precision: 1 },
  { id: 'mem_used', platform: 'sensor', name: 'Memory used', path: ['load', 'mem_used_mb'], device_class: 'data_size', state_class: 'measurement', unit: 'MiB', precision: 0, diagnostic: true },
  { id: 'rss', platform: 'sensor', name: 'Daemon RSS', path: ['load', 'rss_mb'], device_class: 'data_size', state_class: 'measurement', unit: 'MiB', precision: 0, diagnostic: true },
  { id: 'uptime', platform: 'sensor', name: 'Uptime', path: ['uptime_s'], device_class: 'duration', state_class: 'measurement', unit: 's', precision: 0, diagnostic: true },
  { id: 'busy', platform: 'binary_sensor', name: 'Generating', template: "{{ 'ON' if value_json['busy'] else 'OFF' }}", device_class: 'running' },
  { id: 'degraded', platform: 'binary_sensor', name: 'Degraded', template: "{{ 'ON' if value_json['state'] == 'degraded' else 'OFF' }}", device_class: 'problem', diagnostic: true },
  { id: 'throttled', platform: 'binary_sensor', name: 'Throttled', template: THROTTLED_NOW, device_class: 'problem', diagnostic: true },
];

export interface DiscoveryInput {
  nodeId: string;
  /** `<base_topic>/<node_id>`. */
  base: string;
  /** The daemon's `<base>/info` body (node_id, version, model.name). */
  info: unknown;
}

function component(nodeId: string, e: EntitySpec): Record<string, unknown> {
  return {
    p: e.platform,
    name: e.name,
    unique_id: `${haObjectId(nodeId)}_${e.id}`,
    value_template: e.template ?? valueTemplate(e.path!),
    ...(e.device_class ? { device_class: e.device_class } : {}),
    ...(e.state_class ? { state_class: e.state_class } : {}),
    ...(e.unit ? { unit_of_measurement: e.unit } : {}),
    ...(e.precision !== undefined ? { suggested_display_precision: e.precision } : {}),
    ...(e.diagnostic ? { entity_category: 'diagnostic' } : {}),
    ...(e.icon ? { icon: e.icon } : {}),
  };
}

/** The discovery payload for one board. */
export function discoveryPayload(d: DiscoveryInput): Record<string, unknown> {
  const info = (d.info ?? {}) as { version?: unknown; model?: { name?: unknown } | null };
  const version = typeof info.version === 'string' ? info.version : undefined;
  const model = typeof info.model?.name === 'string' ? info.model.name : undefined;
  const cmps: Record<string, unknown> = {};
  for (const e of HA_ENTITIES) cmps[e.id] = component(d.nodeId, e);
  return {
    dev: { ids: [haObjectId(d.nodeId)], name: `bitad ${d.nodeId}`, mf: 'bitad', ...(model ? { mdl: model } : {}), ...(version ? { sw: version } : {}) },
    o: { name: 'bitad', ...(version ? { sw: version } : {}) },
    availability: [{ topic: `${d.base}/state`, value_template: '{{ value_json.state }}', payload_available: 'online', payload_not_available: 'offline' }],
    state_topic: `${d.base}/telemetry`,
    qos: 1,
    cmps,
  };
}

/**
 * What the MQTT transport does for Home Assistant: which extra topic to subscribe to, what to
 * publish on connect, and whether an incoming message was Home Assistant's birth.
 */
export class HaDiscovery {
  readonly topic: string;
  readonly statusTopic: string;
  /** Discovery payloads published (health shows it; tests count re-sends). */
  sent = 0;

  constructor(
    private readonly cfg: HomeAssistantConfig,
    private readonly nodeId: string,
    private readonly base: string,
    private readonly info: () => unknown,
  ) {
    this.topic = haDiscoveryTopic(cfg.prefix, nodeId);
    this.statusTopic = haStatusTopic(cfg.prefix);
  }

  payload(): string {
    return JSON.stringify(discoveryPayload({ nodeId: this.nodeId, base: this.base, info: this.info() }));
  }

  /** True when `topic` is Home Assistant's status: the caller must not treat it as a request. */
  isStatus(topic: string): boolean {
    return topic === this.statusTopic;
  }

  /** Home Assistant came (back) online: it may have lost its retained copy, so send again. */
  wantsResend(payload: Buffer | string): boolean {
    return payload.toString().trim() === 'online';
  }
}

/**
 * Removes a board from Home Assistant: an empty retained payload on its discovery topic (Home
 * Assistant deletes the device; the broker drops the retained copy). With `forget`, the board's
 * retained `<base>/state` and `<base>/info` are cleared too, so dashboards forget it. Resolves
 * with the topics cleared once the broker acknowledged each (QoS 1).
 */
export async function removeDevice(client: MqttClient, o: { prefix: string; nodeId: string; base: string; forget?: boolean }): Promise<string[]> {
  const topics = [haDiscoveryTopic(o.prefix, o.nodeId), ...(o.forget ? [`${o.base}/state`, `${o.base}/info`] : [])];
  for (const topic of topics) await client.publishAsync(topic, '', { qos: 1, retain: true });
  return topics;
}
