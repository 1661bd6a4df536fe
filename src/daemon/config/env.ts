/**
 * BITAD_* environment overrides, derived from the schema: every leaf key path becomes one variable
 * (mqtt.tls.ca → BITAD_MQTT_TLS_CA). Values are coerced by the leaf's schema type; what cannot be
 * coerced is passed through as a string so validation reports it with the key path.
 */

type Schema = { type?: string; properties?: Record<string, Schema> };

export interface EnvLeaf {
  path: string[];
  name: string;
  type: string;
}

/**
 * Variables that are not config keys but are still ours: the config file, and the shared data folder
 * that benchmarks and the Python toolchain read (bench/data.ts, models/bitatool/data.py).
 */
export const RESERVED_ENV = new Set(['BITAD_CONFIG', 'BITAD_SHARED_DATA']);

export function envLeaves(schema: Schema, prefix: string[] = []): EnvLeaf[] {
  const out: EnvLeaf[] = [];
  for (const [key, sub] of Object.entries(schema.properties ?? {})) {
    const path = [...prefix, key];
    if (sub.type === 'object' && sub.properties) out.push(...envLeaves(sub, path));
    else out.push({ path, name: 'BITAD_' + path.join('_').toUpperCase(), type: sub.type ?? 'string' });
  }
  return out;
}

function coerce(raw: string, type: string): unknown {
  switch (type) {
    case 'integer':
    case 'number':
      return raw.trim() !== '' && Number.isFinite(Number(raw)) ? Number(raw) : raw;
    case 'boolean':
      if (/^(true|1|yes|on)$/i.test(raw)) return true;
      if (/^(false|0|no|off)$/i.test(raw)) return false;
      return raw;
    case 'array':
      if (raw.trim().startsWith('[')) {
        try {
          return JSON.parse(raw);
        } catch {
          return raw;
        }
      }
      return raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
    default:
      return raw;
  }
}

/**
 * Writes the overrides into `config` (a plain object from YAML) and returns the variables used,
 * plus the names of BITAD_* variables that match no key (reported as errors by the caller).
 */
export function applyEnv(
  config: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  leaves: EnvLeaf[],
): { used: Map<string, string>; unknown: string[] } {
  const used = new Map<string, string>(); // "mqtt.port" -> "BITAD_MQTT_PORT"
  const byName = new Map(leaves.map((l) => [l.name, l]));
  const unknown: string[] = [];
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith('BITAD_') || raw === undefined || RESERVED_ENV.has(name)) continue;
    const leaf = byName.get(name);
    if (!leaf) {
      unknown.push(name);
      continue;
    }
    let node = config;
    for (const key of leaf.path.slice(0, -1)) {
      const next = node[key];
      if (typeof next !== 'object' || next === null || Array.isArray(next)) node[key] = {};
      node = node[key] as Record<string, unknown>;
    }
    node[leaf.path[leaf.path.length - 1]] = coerce(raw, leaf.type);
    used.set(leaf.path.join('.'), name);
  }
  return { used, unknown };
}
