/** `bitad dashboard`: the fleet dashboard (src/dashboard) in the foreground until SIGTERM/SIGINT. */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../../daemon/config/load.js';
import { DashboardConfigError, DEFAULT_MAX_POINTS, DEFAULT_PORT, DEFAULT_RETENTION_MS, startDashboard, type DashboardOptions } from '../../dashboard/index.js';
import type { LinkOptions } from '../../dashboard/link.js';
import { configTls } from '../../daemon/transport/tls.js';

export const dashboardHelp = `Usage: bitad dashboard [options]

Serves a live page of every board that reports under the broker's base topic (state, info,
telemetry), with charts from its own SQLite history and a prompt box per board. The broker, its
credentials and TLS come from the same config as "bitad start" (--config, BITAD_CONFIG, BITAD_MQTT_*).

Options:
  --listen <host:port>   HTTP address (default 127.0.0.1:${DEFAULT_PORT}); not loopback needs a token;
                         without one only Host localhost, 127.x.y.z or [::1] with this port is served
  --token <token>        required on every request (or BITAD_DASHBOARD_TOKEN); open /?token=<token> once
  --broker <url>         mqtt://host:port or mqtts://host:port instead of the config's broker
  --protocol <4|5>       MQTT version (default: the config's)
  --base-topic <topic>   default: the config's mqtt.base_topic (bitad)
  --db <file>            history file (default <data_dir>/dashboard.db)
  --retention <dur>      keep chart points this long, e.g. 24h, 7d (default 24h)
  --max-points <n>       and at most this many (default ${DEFAULT_MAX_POINTS})
  --stale-s <s>          stale after this long without telemetry (default 3 telemetry intervals)
  --max-tokens <n>       largest answer the prompt box asks for (default 256)
Docs: docs/dashboard.md`;

const OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  config: { type: 'string', short: 'c' },
  listen: { type: 'string' },
  token: { type: 'string' },
  broker: { type: 'string' },
  protocol: { type: 'string' },
  'base-topic': { type: 'string' },
  db: { type: 'string' },
  retention: { type: 'string' },
  'max-points': { type: 'string' },
  'stale-s': { type: 'string' },
  'max-tokens': { type: 'string' },
} as const;

/** The dashboard's own variable is not a config key: kept away from the config loader, which refuses unknown BITAD_* names. */
const OWN_ENV = 'BITAD_DASHBOARD_TOKEN';

export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|h|d)$/.exec(s.trim());
  if (!m) throw new DashboardConfigError(`--retention: a duration like 90m, 24h or 7d, got "${s}"`);
  return Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
}

function positive(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new DashboardConfigError(`--${name} must be a positive number, got "${v}"`);
  return n;
}

function listenAddress(s: string | undefined): { host: string; port: number } {
  if (!s) return { host: '127.0.0.1', port: DEFAULT_PORT };
  const m = /^(?:\[([^\]]+)\]|([^:]+))?:?(\d+)$/.exec(s);
  if (!m) throw new DashboardConfigError(`--listen: host:port, got "${s}"`);
  return { host: m[1] ?? m[2] ?? '127.0.0.1', port: Number(m[3]) };
}

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: false }>>['values'];

/** The broker from the daemon's config (the embedded one is MQTT 3.1.1), or from --broker / --protocol. */
function mqttOptions(values: Values, env: NodeJS.ProcessEnv): { link: LinkOptions; dataDir: string } {
  const cfg = loadConfig(values.config ?? env.BITAD_CONFIG, { env });
  const m = cfg.mqtt;
  const link: LinkOptions = {
    host: m.embedded ? '127.0.0.1' : m.host,
    port: m.port,
    protocolVersion: m.embedded ? 4 : (m.protocol_version as 4 | 5),
    baseTopic: values['base-topic'] ?? m.base_topic,
    username: m.username,
    password: m.password,
    tls: configTls(m.tls),
  };
  if (values.broker) {
    const u = new URL(values.broker);
    if (u.protocol !== 'mqtt:' && u.protocol !== 'mqtts:') throw new DashboardConfigError(`--broker: mqtt:// or mqtts:// URL, got "${values.broker}"`);
    link.host = u.hostname;
    link.port = Number(u.port || (u.protocol === 'mqtts:' ? 8883 : 1883));
    if (u.protocol === 'mqtts:' && !link.tls) link.tls = { rejectUnauthorized: true };
    if (u.protocol === 'mqtt:') link.tls = null;
  }
  if (values.protocol) {
    if (values.protocol !== '4' && values.protocol !== '5') throw new DashboardConfigError('--protocol must be 4 or 5');
    link.protocolVersion = Number(values.protocol) as 4 | 5;
  }
  if (link.port === 0) throw new DashboardConfigError('the config names broker port 0 (an embedded broker on a free port): pass --broker mqtt://host:port');
  return { link, dataDir: cfg.data_dir };
}

export function dashboardOptions(argv: string[], env: NodeJS.ProcessEnv): DashboardOptions | 'help' {
  const { values } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: false, strict: true });
  if (values.help) return 'help';
  const configEnv = { ...env };
  delete configEnv[OWN_ENV];
  const { link, dataDir } = mqttOptions(values, configEnv);
  const { host, port } = listenAddress(values.listen);
  return {
    mqtt: link,
    host,
    port,
    token: values.token ?? env[OWN_ENV] ?? null,
    dbPath: values.db ?? join(dataDir, 'dashboard.db'),
    retentionMs: values.retention ? parseDuration(values.retention) : DEFAULT_RETENTION_MS,
    maxPoints: positive(values['max-points'], 'max-points') ?? DEFAULT_MAX_POINTS,
    staleMs: values['stale-s'] ? positive(values['stale-s'], 'stale-s')! * 1000 : undefined,
    maxTokens: positive(values['max-tokens'], 'max-tokens'),
  };
}

/** Exit codes as the other commands: 0 after a signal, 1 runtime error (broker unreachable), 2 usage. */
export async function dashboard(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let opts: DashboardOptions | 'help';
  try {
    opts = dashboardOptions(argv, env);
  } catch (e) {
    const usage = e instanceof DashboardConfigError || e instanceof ConfigError || String((e as { code?: string }).code).startsWith('ERR_PARSE_ARGS');
    process.stderr.write(`bitad dashboard: ${(e as Error).message}\n`);
    return usage ? 2 : 1;
  }
  if (opts === 'help') {
    process.stdout.write(dashboardHelp + '\n');
    return 0;
  }
  const running = await startDashboard(opts).catch((e: unknown) => e as Error);
  if (running instanceof Error) {
    process.stderr.write(`bitad dashboard: ${running.message}\n`);
    return running instanceof DashboardConfigError ? 2 : 1;
  }
  process.stdout.write(
    JSON.stringify({ msg: 'bitad dashboard listening', url: running.url, broker: `${opts.mqtt.host}:${opts.mqtt.port}`, base_topic: opts.mqtt.baseTopic, db: opts.dbPath, token: opts.token !== null }) + '\n',
  );
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  await running.stop();
  return 0;
}
