/**
 * The one JSON Schema for bitad's YAML config: it holds the defaults (ajv `useDefaults`), rejects
 * unknown keys (`additionalProperties: false` everywhere) and names the BITAD_* environment
 * overrides (one per leaf, see env.ts). Keys are snake_case like every wire/DB key.
 */
import { DEFAULT_MAX_PAYLOAD_BYTES, MAX_DEADLINE_MS } from '../protocol/limits.js';

/** The most finished requests `telemetry.recent_requests` may list: the dispatcher keeps this many. */
export const MAX_RECENT_REQUESTS = 100;
/** The range of `telemetry.interval_s`, which telemetry reports as `window_s` (the dashboard checks it). */
export const INTERVAL_S_MIN = 1;
export const INTERVAL_S_MAX = 86_400;

const str = (def?: string, description?: string) => ({
  type: 'string',
  ...(def !== undefined ? { default: def } : {}),
  ...(description ? { description } : {}),
});
const int = (def: number, minimum: number, maximum?: number, description?: string) => ({
  type: 'integer',
  default: def,
  minimum,
  ...(maximum !== undefined ? { maximum } : {}),
  ...(description ? { description } : {}),
});
const bool = (def: boolean, description?: string) => ({ type: 'boolean', default: def, ...(description ? { description } : {}) });
const obj = (properties: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  type: 'object',
  additionalProperties: false,
  default: {},
  properties,
  ...extra,
});

const { default: _rootDefault, ...root } = obj({
  node_id: {
    type: 'string',
    pattern: '^[A-Za-z0-9_.-]{1,64}$',
    description: 'Node name used in topics (bitad/<node_id>); default: the host name.',
  },
  data_dir: str('var', 'State directory (SQLite file, socket). Relative paths resolve against the package root.'),
  model: obj({
    path: str('models/tinystories-bita', 'Model package folder; relative paths resolve against the package root.'),
    variant: str('default'),
    threads: int(0, 0, 64, 'ORT intra-op threads; 0 = chosen from the model size (1 for tiny models, else up to 4).'),
    execution_providers: { type: 'array', items: { type: 'string', minLength: 1 }, minItems: 1, default: ['cpu'] },
  }),
  tree: obj({
    policy: {
      type: 'string',
      enum: ['auto', 'throughput', 'neighbourly', 'fixed'],
      default: 'auto',
      description: 'How draft trees are sized: auto (throughput; neighbourly within 3 % when the CPU is hot or the board throttles), throughput, neighbourly, or fixed (fixed_rows).',
    },
    fixed_rows: int(10, 1, 64, 'Rows per step for policy fixed and for sampled requests (whose tree stays fixed so a seed reproduces its tokens).'),
    min_rows: int(1, 1, 64, 'Smallest tree the adaptive policies choose (1 = plain decoding).'),
    max_rows: int(32, 1, 64, 'Largest tree any policy uses.'),
    sense_interval_ms: int(250, 50, 60_000, 'How often the board sensors (/proc, thermal zones, GPU load) are read for the tree sizing.'),
  }),
  mqtt: obj({
    enabled: bool(true),
    embedded: bool(true, 'Start an aedes broker on 127.0.0.1 (MQTT 3.1.1 only) and connect to it.'),
    host: str('127.0.0.1'),
    port: int(1883, 0, 65535, 'Broker port (embedded: the port to listen on; 0 picks a free one).'),
    protocol_version: { type: 'integer', enum: [4, 5], default: 5, description: '5 = MQTT 5, 4 = MQTT 3.1.1 (the embedded broker forces 4).' },
    username: str(),
    password: str(),
    client_id: str(undefined, 'Default: bitad-<node_id>.'),
    base_topic: str('bitad', 'Topics live under <base_topic>/<node_id>.'),
    shared_group: { type: 'string', pattern: '^[A-Za-z0-9_-]+$', description: 'Also serve $share/<group>/<base_topic>/+/request/+ (fleet queue).' },
    reply_prefixes: {
      type: 'array',
      items: { type: 'string', minLength: 1 },
      description: 'Topics a request may name as its reply route (MQTT 5 Response Topic or reply_to): equal to a prefix or below it. Default: ["<base_topic>/reply/"].',
    },
    keepalive_s: int(30, 0, 3600),
    session_expiry_s: int(3600, 0, 4294967295, 'MQTT 5 session expiry for the persistent session.'),
    reconnect_ms: int(2000, 100, 600_000),
    tls: obj({
      enabled: bool(false),
      ca: str(undefined, 'CA certificate file (PEM).'),
      cert: str(undefined, 'Client certificate file (PEM).'),
      key: str(undefined, 'Client key file (PEM).'),
      reject_unauthorized: bool(true),
    }),
  }),
  homeassistant: obj({
    enabled: bool(false, 'Publish a retained Home Assistant MQTT device-discovery payload on every connect and when Home Assistant announces itself online.'),
    prefix: { type: 'string', pattern: '^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$', default: 'homeassistant', description: "Home Assistant's discovery prefix (its birth message is read from <prefix>/status)." },
  }),
  socket: obj({
    enabled: bool(true),
    path: str(undefined, 'Unix socket path; default <data_dir>/bitad.sock.'),
    max_in_flight: int(8, 1, 10_000, 'Generation requests one connection may have queued or running; more answer busy.'),
  }),
  queue: obj({
    capacity: int(16, 0, 10_000, 'Waiting requests (not counting the running one); a full queue answers busy.'),
  }),
  limits: obj({
    max_payload_bytes: int(DEFAULT_MAX_PAYLOAD_BYTES, 256, 16 * 1024 * 1024),
    max_tokens: int(1024, 1, 1_000_000, 'Upper bound for max_tokens in a request.'),
    default_max_tokens: int(128, 1, 1_000_000),
    default_deadline_ms: int(0, 0, MAX_DEADLINE_MS, '0 = no deadline unless the request sets one.'),
  }),
  store: obj({
    enabled: bool(true),
    path: str(undefined, 'SQLite file; default <data_dir>/bitad.db.'),
    flush_ms: int(500, 10, 60_000, 'Load samples are written at most this long after they are taken (request rows are committed before their final reply).'),
    retention_days: int(30, 1, 3650),
    max_rows: int(1_000_000, 100, 1_000_000_000),
    load_sample_s: int(60, 1, 86_400),
    max_buffered_rows: int(10_000, 1, 10_000_000, 'Rows kept in memory while the file cannot be written (disk full, locked, ...); beyond it the oldest are dropped and counted.'),
    synchronous: { type: 'string', enum: ['normal', 'full'], default: 'normal', description: 'WAL synchronous level: normal survives a crash of the process, full also a power cut (one fsync per commit).' },
  }),
  telemetry: obj({
    enabled: bool(true),
    interval_s: int(30, INTERVAL_S_MIN, INTERVAL_S_MAX),
    load_poll_s: int(10, 1, 3600, 'systeminformation sampling period (its first call takes ~0.5 s).'),
    recent_requests: int(10, 0, MAX_RECENT_REQUESTS, 'Last finished requests listed in each telemetry message (no prompt, no transaction id; every app user can read them); 0 = none.'),
  }),
  metrics: obj({
    enabled: bool(false, 'Serve Prometheus metrics on http://<host>:<port>/metrics (docs/daemon.md "Metrics").'),
    host: str('127.0.0.1', 'Listen address; the endpoint has no auth, so loopback unless a scraper elsewhere needs it.'),
    port: int(9464, 0, 65535, 'Listen port (0 picks a free one).'),
  }),
  lifecycle: obj({
    drain_timeout_ms: int(10_000, 0, 600_000, 'SIGTERM: in-flight requests may finish within this time.'),
    engine_stall_ms: int(30_000, 100, 3_600_000, 'A generation without progress this long stops the watchdog ping.'),
  }),
  log: obj({
    level: { type: 'string', enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' },
  }),
});
/** The root has no `default` (ajv strict mode: ignored there); nested objects default to {}. */
export const configSchema = root;

export interface BitadConfig {
  node_id: string;
  data_dir: string;
  model: {
    path: string;
    variant: string;
    threads: number;
    execution_providers: string[];
  };
  tree: {
    policy: 'auto' | 'throughput' | 'neighbourly' | 'fixed';
    fixed_rows: number;
    min_rows: number;
    max_rows: number;
    sense_interval_ms: number;
  };
  mqtt: {
    enabled: boolean;
    embedded: boolean;
    host: string;
    port: number;
    protocol_version: 4 | 5;
    username?: string;
    password?: string;
    client_id?: string;
    base_topic: string;
    shared_group?: string;
    reply_prefixes?: string[];
    keepalive_s: number;
    session_expiry_s: number;
    reconnect_ms: number;
    tls: { enabled: boolean; ca?: string; cert?: string; key?: string; reject_unauthorized: boolean };
  };
  homeassistant: { enabled: boolean; prefix: string };
  socket: { enabled: boolean; path: string; max_in_flight: number };
  queue: { capacity: number };
  limits: { max_payload_bytes: number; max_tokens: number; default_max_tokens: number; default_deadline_ms: number };
  store: {
    enabled: boolean;
    path: string;
    flush_ms: number;
    retention_days: number;
    max_rows: number;
    load_sample_s: number;
    max_buffered_rows: number;
    synchronous: 'normal' | 'full';
  };
  telemetry: { enabled: boolean; interval_s: number; load_poll_s: number; recent_requests: number };
  metrics: { enabled: boolean; host: string; port: number };
  lifecycle: { drain_timeout_ms: number; engine_stall_ms: number };
  log: { level: string };
}
