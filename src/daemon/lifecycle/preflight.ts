/**
 * What `bitad start` can find wrong cheaply before it loads the model (seconds to minutes on a small
 * board): a listening port already taken, a live daemon (or a file that is not a socket) at
 * socket.path. The same rules explain the real bind when it loses a race after the check, so each
 * fault has one message, naming the setting to change.
 */
import { lstatSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import type { BitadConfig } from '../config/schema.js';

/** An expected start-up fault (a port or socket path in use): its message is the whole story, no stack needed. */
export class StartupError extends Error {
  constructor(
    message: string,
    /** The config key to change. */
    readonly setting: string,
    /** The errno behind it (EADDRINUSE, EACCES…), when there was one. */
    readonly code?: string,
  ) {
    super(message);
    this.name = 'StartupError';
  }
}

/** The embedded broker is loopback only. */
export const EMBEDDED_BROKER_HOST = '127.0.0.1';

/** A TCP port the daemon listens on, and the settings that choose it. */
export interface Listener {
  what: string;
  host: string;
  port: number;
  portKey: string;
  hostKey?: string;
  /** Who else is likely to hold the port. */
  suspects: string;
}

/** The ports the daemon will listen on with this config. */
export function listeners(cfg: BitadConfig): { broker?: Listener; metrics?: Listener } {
  return {
    broker:
      cfg.mqtt.enabled && cfg.mqtt.embedded
        ? { what: 'embedded MQTT broker', host: EMBEDDED_BROKER_HOST, port: cfg.mqtt.port, portKey: 'mqtt.port', suspects: 'another bitad or broker?' }
        : undefined,
    metrics: cfg.metrics.enabled
      ? { what: 'metrics endpoint', host: cfg.metrics.host, port: cfg.metrics.port, portKey: 'metrics.port', hostKey: 'metrics.host', suspects: 'another bitad?' }
      : undefined,
  };
}

/** The listen error `e` as a StartupError naming the setting, when it is one a setting can fix. */
export function listenFailure(l: Listener, e: unknown): unknown {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE') {
    return new StartupError(`${l.what}: port ${l.port} on ${l.host} is in use (${l.suspects}): set ${l.portKey} or stop the other process`, l.portKey, code);
  }
  if (code === 'EACCES') return new StartupError(`${l.what}: may not listen on port ${l.port} (EACCES): set ${l.portKey} to 1024 or above`, l.portKey, code);
  const hostKey = l.hostKey ?? l.portKey;
  if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND') return new StartupError(`${l.what}: ${l.host} is not an address of this machine (${code}): set ${hostKey}`, hostKey, code);
  return e;
}

/** Runs `bind` (which listens on `l`), explaining a failure with listenFailure. */
export async function listenOn<T>(l: Listener, bind: () => Promise<T>): Promise<T> {
  try {
    return await bind();
  } catch (e) {
    throw listenFailure(l, e);
  }
}

function socketInUse(path: string, code?: string): StartupError {
  const detail = code ? ` (${code})` : '';
  return new StartupError(`socket.path: ${path} is in use by another process${detail} (another bitad?): set socket.path or stop the other process`, 'socket.path', code ?? 'EADDRINUSE');
}

/**
 * What is at socket.path: nothing, or a stale socket (refuses connections: left by a killed daemon)
 * that may be replaced. A live socket, one we may not connect to (another user's daemon), or any
 * file that is not a socket (a mistyped path naming the database, say) is refused, never touched.
 */
export async function socketPathState(path: string): Promise<'free' | 'stale'> {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (!st) return 'free';
  if (!st.isSocket()) throw new StartupError(`socket.path: ${path} exists and is not a socket; not removing it: set socket.path`, 'socket.path');
  const refused = await new Promise<string | null>((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(null);
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
  });
  if (refused === 'ECONNREFUSED') return 'stale';
  throw socketInUse(path, refused ?? undefined);
}

/** The Unix socket bind's error: EADDRINUSE there means another process bound the path after socketPathState. */
export function socketListenFailure(path: string, e: unknown): unknown {
  return (e as NodeJS.ErrnoException).code === 'EADDRINUSE' ? socketInUse(path) : e;
}

/** Binds and closes a throwaway listener: is the port free now? */
function probe(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(port, host, () => server.close(() => resolve()));
  });
}

/** The start-up checks that need no model: run before it loads, so a second daemon fails in milliseconds. */
export async function preflight(cfg: BitadConfig): Promise<void> {
  for (const l of Object.values(listeners(cfg))) {
    if (l && l.port !== 0) await listenOn(l, () => probe(l.host, l.port));
  }
  if (cfg.socket.enabled) await socketPathState(cfg.socket.path);
}
