/** `bitad status`: the daemon's health reply, readable. */
import { SocketClient } from '../socket-client.js';

/** health is answered at once, not queued: this much silence means a hung daemon (or not bitad). */
const HEALTH_TIMEOUT_MS = 5000;

export const statusHelp = `Usage: bitad status [--config <file>] [--socket <path>] [--json]

Shows model, queue, tree size, load and uptime of the running daemon (a health request over the socket).
The socket is the config's socket.path, or /run/bitad/bitad.sock when bitad runs as the systemd unit.
No answer within ${HEALTH_TIMEOUT_MS / 1000} s, or the connection dropped: an error line and exit 1.`;

export async function status(socket: string, json: boolean): Promise<number> {
  const client = await SocketClient.connect(socket);
  const r = await client.request('health', {}, undefined, HEALTH_TIMEOUT_MS);
  client.close();
  if (r.status !== 'ok') {
    process.stderr.write(`error ${r.error.code}: ${r.error.message} (socket ${socket})\n`);
    return 1;
  }
  const d = r.data as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  if (json) {
    process.stdout.write(JSON.stringify(d, null, 2) + '\n');
    return 0;
  }
  const load = d.load;
  const lines = [
    `state        ${d.state} (bitad ${d.version}, node ${d.node_id})`,
    `model        ${d.model} (context ${d.context_length}, bita ${d.bita})`,
    ...treeLines(d.tree, d.tree_budget),
    `queue        ${d.queue.depth}/${d.queue.capacity} waiting, ${d.queue.busy ? 'generating' : 'idle'}, engine ${d.engine_responsive ? 'responsive' : 'STALLED'}`,
    `requests     ${d.requests.accepted} accepted, ${d.requests.rejected} rejected, ${d.requests.duplicates} duplicates dropped`,
    `mqtt         ${d.mqtt ? `${d.mqtt.base} (${d.mqtt.connected ? 'connected' : 'disconnected'})` : 'off'}`,
    `load         ${load ? `cpu ${load.cpu_load_pct ?? '-'} %, temp ${load.cpu_temp_c ?? '-'} °C, gpu ${load.gpu_load_pct ?? '-'} %, mem used ${load.mem_used_mb ?? '-'} MB, daemon rss ${load.rss_mb} MB` : 'not sampled yet'}`,
    `uptime       ${d.uptime_s} s`,
    ...Object.entries((d.components ?? {}) as Record<string, { status: string; reason?: string }>).map(
      ([name, c]) => `${name.padEnd(12)} ${c.status}${c.reason ? ` (${c.reason})` : ''}`,
    ),
  ];
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

/** The load-aware tree: rows in use, policy (and what auto resolved to), why, and the board it sees. */
function treeLines(tree: Record<string, any> | null | undefined, budget: number | null): string[] { // eslint-disable-line @typescript-eslint/no-explicit-any
  if (!tree) return [`tree         ${budget ?? '-'} rows`];
  const policy = tree.policy === tree.active ? tree.policy : `${tree.policy} → ${tree.active}`;
  const b = tree.board;
  const board = b
    ? `others ${b.others_cpu_pct ?? '-'} % cpu, self ${b.self_cpu_pct ?? '-'} %, temp ${b.cpu_temp_c ?? '-'} °C${b.cpu_pressure_pct != null ? `, cpu contended ${b.cpu_pressure_pct} % of the time` : ''}${b.throttled ? ', THROTTLED' : ''}${b.gpu_busy_pct !== null ? `, gpu ${b.gpu_busy_pct} %` : ''}${b.power_mode ? `, power mode ${b.power_mode}` : ''}`
    : 'not sensed yet';
  return [
    `tree         ${tree.rows} rows (${policy}, ${tree.min_rows}–${tree.max_rows}, ${tree.changes} changes): ${tree.reason}`,
    `board        ${board}`,
  ];
}
