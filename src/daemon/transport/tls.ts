/** The one place that turns the configured TLS files into mqtt.js client options (daemon, CLI, dashboard). */
import { readFileSync } from 'node:fs';
import type { IClientOptions } from 'mqtt';
import type { BitadConfig } from '../config/schema.js';

export interface TlsFiles {
  ca?: string;
  cert?: string;
  key?: string;
  rejectUnauthorized: boolean;
}

/** `mqtt.tls` as TlsFiles, or null when TLS is off. */
export function configTls(tls: BitadConfig['mqtt']['tls']): TlsFiles | null {
  return tls.enabled ? { ca: tls.ca, cert: tls.cert, key: tls.key, rejectUnauthorized: tls.reject_unauthorized } : null;
}

/** The PEM files read (config/load.ts BuildOptions.checkFiles has checked they are readable at start). */
export function tlsClientOptions(t: TlsFiles | null): Pick<IClientOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized'> {
  if (!t) return {};
  return {
    ...(t.ca ? { ca: readFileSync(t.ca) } : {}),
    ...(t.cert ? { cert: readFileSync(t.cert) } : {}),
    ...(t.key ? { key: readFileSync(t.key) } : {}),
    rejectUnauthorized: t.rejectUnauthorized,
  };
}
