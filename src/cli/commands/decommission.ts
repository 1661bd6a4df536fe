/**
 * `bitad decommission`: removes a retired board from Home Assistant (an empty retained payload on
 * its discovery topic) and, with --forget, clears its retained state and info so dashboards forget
 * it too. It is a separate short-lived client, not the daemon: a board being retired has usually
 * stopped its daemon already, and a running daemon with `homeassistant.enabled` would publish the
 * payload again on its next connect.
 */
import { randomUUID } from 'node:crypto';
import mqtt, { type IClientOptions } from 'mqtt';
import type { BitadConfig } from '../../daemon/config/schema.js';
import { removeDevice } from '../../daemon/transport/ha-discovery.js';
import { configTls, tlsClientOptions } from '../../daemon/transport/tls.js';

export const decommissionHelp = `Usage: bitad decommission [--config <file.yaml>] [--forget]

Removes this node (node_id from the config) from Home Assistant: publishes an empty retained
payload to <homeassistant.prefix>/device/bitad_<node_id>/config on the configured broker.
--forget also clears the node's retained <base_topic>/<node_id>/state and info, so fleet
dashboards drop it. Stop the daemon first (or set homeassistant.enabled: false): a running
daemon with discovery on publishes the payload again whenever it reconnects. With the embedded
broker the daemon itself is the broker, so run this while it runs with discovery off.`;

/** The configured broker, as a one-shot client: its own client id, so a running daemon is never kicked off. */
function clientOptions(m: BitadConfig['mqtt']): IClientOptions {
  const opts: IClientOptions = {
    host: m.embedded ? '127.0.0.1' : m.host,
    port: m.port,
    protocol: m.tls.enabled ? 'mqtts' : 'mqtt',
    protocolVersion: m.embedded ? 4 : m.protocol_version,
    clientId: `bitad-decommission-${randomUUID().slice(0, 8)}`,
    username: m.username,
    password: m.password,
    clean: true,
    reconnectPeriod: 0,
    connectTimeout: 10_000,
  };
  return { ...opts, ...tlsClientOptions(configTls(m.tls)) };
}

export async function decommission(cfg: BitadConfig, o: { forget?: boolean; out?: (line: string) => void } = {}): Promise<number> {
  const out = o.out ?? ((line: string) => process.stdout.write(line + '\n'));
  const client = await mqtt.connectAsync(clientOptions(cfg.mqtt));
  try {
    const base = `${cfg.mqtt.base_topic}/${cfg.node_id}`;
    const cleared = await removeDevice(client, { prefix: cfg.homeassistant.prefix, nodeId: cfg.node_id, base, forget: o.forget });
    for (const topic of cleared) out(`cleared retained ${topic}`);
    if (cfg.homeassistant.enabled) out('note: homeassistant.enabled is true in this config; a running daemon with it publishes the discovery payload again on reconnect');
    return 0;
  } finally {
    await client.endAsync();
  }
}
