/** Reads the YAML file, applies BITAD_* overrides, validates and fills defaults, resolves paths. */
import { accessSync, constants, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { isAbsolute, resolve } from 'node:path';
import { Ajv, type ErrorObject } from 'ajv';
import { parse as parseYaml } from 'yaml';
import { configSchema, type BitadConfig } from './schema.js';
import { applyEnv, envLeaves } from './env.js';

import { PACKAGE_ROOT } from '../package-root.js';

export { PACKAGE_ROOT };

/** Where the values came from: the YAML file (if any) and the BITAD_* variable behind each key path it overrode. */
export interface ConfigOrigin {
  file?: string;
  /** "mqtt.port" → "BITAD_MQTT_PORT" */
  env?: ReadonlyMap<string, string>;
}

/**
 * Problems as "key.path: reason". The message names the file, and each problem whose key was set
 * by a BITAD_* variable ends "(from BITAD_…)": the one place that says where a bad value came from.
 */
export class ConfigError extends Error {
  readonly problems: string[];

  constructor(problems: string[], origin: ConfigOrigin = {}) {
    const annotated = problems.map((p) => {
      const variable = origin.env?.get(p.slice(0, p.indexOf(':')));
      return variable ? `${p} (from ${variable})` : p;
    });
    super(`invalid configuration${origin.file ? ` in ${origin.file}` : ''}:\n  ${annotated.join('\n  ')}`);
    this.name = 'ConfigError';
    this.problems = annotated;
  }
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true });
const validate = ajv.compile(configSchema);
const LEAVES = envLeaves(configSchema as never);

function keyPath(instancePath: string): string {
  return instancePath.replace(/^\//, '').replaceAll('/', '.') || '(root)';
}

function describe(e: ErrorObject): string {
  let path = keyPath(e.instancePath);
  let reason = e.message ?? 'invalid';
  if (e.keyword === 'additionalProperties') {
    const extra = (e.params as { additionalProperty: string }).additionalProperty;
    path = path === '(root)' ? extra : `${path}.${extra}`;
    reason = 'unknown key';
  } else if (e.keyword === 'enum') {
    reason = `must be one of ${JSON.stringify((e.params as { allowedValues: unknown[] }).allowedValues)}`;
  }
  return `${path}: ${reason}`;
}

export interface BuildOptions {
  env?: NodeJS.ProcessEnv;
  packageRoot?: string;
  host?: string;
  /** The YAML file the input came from: named in errors. */
  file?: string;
  /**
   * Also check that the files the daemon will read at start (the MQTT TLS PEM files) are readable:
   * a missing CA is then a configuration error naming its key (exit 2), not a bare ENOENT from deep
   * inside the MQTT start. Only `bitad start` asks: `ask`/`status` share the config but never read them.
   */
  checkFiles?: boolean;
}

/** Validates a parsed config object (e.g. from YAML or built by a test) and returns the full config. */
export function buildConfig(input: unknown, opts: BuildOptions = {}): BitadConfig {
  if (input === null || input === undefined) input = {};
  if (typeof input !== 'object' || Array.isArray(input)) throw new ConfigError(['(root): must be a mapping'], { file: opts.file });
  const raw = structuredClone(input) as Record<string, unknown>;
  const { used, unknown } = applyEnv(raw, opts.env ?? {}, LEAVES);
  const problems = unknown.map((n) => `${n}: unknown environment variable (no such config key)`);
  if (!validate(raw)) problems.push(...(validate.errors ?? []).map(describe));
  if (problems.length === 0) problems.push(...completeConfig(raw as unknown as BitadConfig, opts));
  if (problems.length > 0) throw new ConfigError(problems, { file: opts.file, env: used });
  return raw as unknown as BitadConfig;
}

/** Fills the derived defaults and resolves paths of a valid config in place; returns the problems found across keys. */
function completeConfig(cfg: BitadConfig, opts: BuildOptions): string[] {
  const root = opts.packageRoot ?? PACKAGE_ROOT;
  cfg.node_id ??= (opts.host ?? hostname()).replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 64) || 'bitad';
  cfg.data_dir = isAbsolute(cfg.data_dir) ? cfg.data_dir : resolve(root, cfg.data_dir);
  cfg.model.path = isAbsolute(cfg.model.path) ? cfg.model.path : resolve(root, cfg.model.path);
  cfg.socket.path = resolve(cfg.data_dir, cfg.socket.path ?? 'bitad.sock');
  cfg.store.path = resolve(cfg.data_dir, cfg.store.path ?? 'bitad.db');
  cfg.mqtt.client_id ??= `bitad-${cfg.node_id}`;
  // aedes speaks MQTT 3.1.1 only (platform-notes): the embedded broker forces protocol 4.
  if (cfg.mqtt.embedded) cfg.mqtt.protocol_version = 4;
  const problems: string[] = [];
  if (cfg.mqtt.shared_group && cfg.node_id === 'fleet') {
    // <base_topic>/fleet/request/+ is the shared fleet queue; a node of that name would also own it.
    problems.push('node_id: "fleet" is reserved when mqtt.shared_group is set');
  }
  const socketProblem = socketPathProblem(cfg);
  if (socketProblem) problems.push(socketProblem);
  if (cfg.tree.min_rows > cfg.tree.max_rows) {
    problems.push(`tree.min_rows: ${cfg.tree.min_rows} is above tree.max_rows (${cfg.tree.max_rows})`);
  }
  if (opts.checkFiles) problems.push(...unreadableFiles(cfg));
  return problems;
}

/** Linux sun_path is 108 bytes with the terminating NUL; a longer path is silently truncated by bind. */
const MAX_SOCKET_PATH_BYTES = 107;

function socketPathProblem(cfg: BitadConfig): string | null {
  const bytes = Buffer.byteLength(cfg.socket.path);
  if (!cfg.socket.enabled || bytes <= MAX_SOCKET_PATH_BYTES) return null;
  return `socket.path: ${cfg.socket.path} is ${bytes} bytes; a Unix socket path holds at most ${MAX_SOCKET_PATH_BYTES}`;
}

/** The MQTT TLS PEM files the daemon would read that it cannot (see BuildOptions.checkFiles). */
function unreadableFiles(cfg: BitadConfig): string[] {
  const tls = cfg.mqtt.tls;
  if (!cfg.mqtt.enabled || !tls.enabled) return [];
  const problems: string[] = [];
  for (const key of ['ca', 'cert', 'key'] as const) {
    const file = tls[key];
    if (file === undefined) continue;
    try {
      accessSync(file, constants.R_OK);
    } catch (e) {
      problems.push(`mqtt.tls.${key}: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
  }
  return problems;
}

/** Loads `file` (YAML; optional) with overrides from `env`. */
export function loadConfig(file: string | undefined, opts: BuildOptions = {}): BitadConfig {
  if (!file) return buildConfig({}, opts);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError([`cannot read (${(e as Error).message})`], { file });
  }
  let input: unknown;
  try {
    input = parseYaml(text);
  } catch (e) {
    throw new ConfigError([`YAML syntax error: ${(e as Error).message}`], { file });
  }
  return buildConfig(input, { ...opts, file });
}
