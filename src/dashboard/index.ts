/**
 * `bitad dashboard`: one process that watches a fleet through the broker and serves it as a page.
 * MQTT (link.ts) → the fleet model (fleet.ts) and its SQLite history (history.ts) → HTTP, JSON and
 * Server-Sent Events (server.ts); the prompt box sends real requests (prompts.ts).
 */
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../daemon/package-root.js';
import { Fleet } from './fleet.js';
import { History } from './history.js';
import { FleetLink, type LinkOptions } from './link.js';
import { PromptStreams } from './prompts.js';
import { DashboardServer } from './server.js';
import { isLoopback } from './auth.js';

export interface DashboardOptions {
  mqtt: LinkOptions;
  /** HTTP listen address; loopback by default. Anything else needs a token. */
  host: string;
  port: number;
  token: string | null;
  dbPath: string;
  retentionMs: number;
  maxPoints: number;
  /** Override of the stale rule (3 telemetry intervals). */
  staleMs?: number;
  /** Largest max_tokens the prompt box may ask for. */
  maxTokens?: number;
}

export const DEFAULT_PORT = 8480;
export const DEFAULT_RETENTION_MS = 24 * 3_600_000;
export const DEFAULT_MAX_POINTS = 2_000_000;
const PRUNE_EVERY_MS = 10 * 60_000;

export interface RunningDashboard {
  url: string;
  port: number;
  fleet: Fleet;
  history: History;
  link: FleetLink;
  stop(): Promise<void>;
}

export class DashboardConfigError extends Error {}

export async function startDashboard(o: DashboardOptions): Promise<RunningDashboard> {
  if (!isLoopback(o.host) && !o.token) {
    throw new DashboardConfigError(`listening on ${o.host} (not loopback) needs a token: --token or BITAD_DASHBOARD_TOKEN`);
  }
  const history = new History({ path: o.dbPath, retentionMs: o.retentionMs, maxPoints: o.maxPoints });
  history.prune();
  const fleet = new Fleet(history, { staleMs: o.staleMs });
  const link = new FleetLink(o.mqtt, {
    onBoard: (node, kind, payload, retained) => {
      if (kind === 'state') fleet.onState(node, payload, Date.now(), retained);
      else if (kind === 'info') fleet.onInfo(node, payload);
      else if (payload) fleet.onTelemetry(node, payload);
    },
  });
  try {
    await link.connect();
  } catch (e) {
    history.close();
    throw e;
  }
  const prompts = new PromptStreams(link, history);
  const server = new DashboardServer({
    fleet,
    history,
    link,
    prompts,
    baseTopic: o.mqtt.baseTopic,
    token: o.token,
    staticDir: join(PACKAGE_ROOT, 'src/dashboard/static'),
    maxTokens: o.maxTokens ?? 256,
  });
  const port = await server.listen(o.host, o.port);
  const pruner = setInterval(() => history.prune(), PRUNE_EVERY_MS).unref();
  const host = o.host.includes(':') ? `[${o.host}]` : o.host;
  return {
    url: `http://${host}:${port}/`,
    port,
    fleet,
    history,
    link,
    stop: async () => {
      clearInterval(pruner);
      await server.close();
      await link.close();
      history.close();
    },
  };
}
