/** The `bitad` command line: start | ask | status | stats | generate. Only this file exits the process. */
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../daemon/config/load.js';
import type { BitadConfig } from '../daemon/config/schema.js';
import { VERSION } from '../daemon/version.js';
import { ask, askHelp } from './commands/ask.js';
import { dashboard } from './commands/dashboard.js';
import { decommission, decommissionHelp } from './commands/decommission.js';
import { generate, generateHelp } from './commands/generate.js';
import { start, startHelp } from './commands/start.js';
import { stats, statsHelp } from './commands/stats.js';
import { status, statusHelp } from './commands/status.js';
import { UsageError } from './usage.js';

const HELP = `bitad ${VERSION}: BiTA speculative decoding daemon for small language models

Usage: bitad <command> [options]

Commands:
  start      run the daemon (MQTT + Unix socket) in the foreground
  ask        stream an answer from the running daemon: bitad ask "Once upon a time"
  status     model, queue, tree size, load and uptime of the running daemon
  stats      p50/p95/p99 TTFT, TPOT, total and tokens/s from the request log
  generate   run the engine in this process, without the daemon
  dashboard  serve a live page of the fleet (every board on the broker) with charts and a prompt box
  decommission  remove this node from Home Assistant (--forget: also clear its retained state/info)

Run "bitad <command> --help" for a command's options. Docs: docs/daemon.md`;

const HELPS: Record<string, string> = { start: startHelp, ask: askHelp, status: statusHelp, stats: statsHelp, generate: generateHelp, decommission: decommissionHelp };

const OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
  config: { type: 'string', short: 'c' },
  socket: { type: 'string' },
  db: { type: 'string' },
  since: { type: 'string' },
  json: { type: 'boolean' },
  chat: { type: 'boolean' },
  model: { type: 'string' },
  mode: { type: 'string' },
  threads: { type: 'string' },
  'max-tokens': { type: 'string' },
  temperature: { type: 'string' },
  forget: { type: 'boolean' },
} as const;

function num(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got "${v}"`);
  return n;
}

/** Paths used by the systemd unit (systemd/bitad.service). */
const SYSTEM_SOCKET = '/run/bitad/bitad.sock';
const SYSTEM_DB = '/var/lib/bitad/bitad.db';

/**
 * Client commands on a board where bitad runs as a service: when nothing names a config and the
 * default path does not exist, use the unit's path (its settings live in the unit's environment).
 */
function orInstalled(configured: string, system: string, explicit: boolean): string {
  return !explicit && !existsSync(configured) && existsSync(system) ? system : configured;
}

async function main(argv: string[]): Promise<number> {
  // The dashboard has its own options and help (src/cli/commands/dashboard.ts).
  if (argv[0] === 'dashboard') return dashboard(argv.slice(1));
  const { values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  const [command, ...rest] = positionals;
  if (values.version) {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  if (!command || command === 'help') {
    process.stdout.write((rest[0] && HELPS[rest[0]] ? HELPS[rest[0]] : HELP) + '\n');
    return command || values.help ? 0 : 2;
  }
  if (!HELPS[command]) throw new UsageError(`unknown command "${command}"`);
  if (values.help) {
    process.stdout.write(HELPS[command] + '\n');
    return 0;
  }
  const config = (): BitadConfig => loadConfig(values.config ?? process.env.BITAD_CONFIG, { env: process.env });
  const explicit = Boolean(values.config ?? process.env.BITAD_CONFIG);
  const socketPath = () =>
    values.socket ?? orInstalled(config().socket.path, SYSTEM_SOCKET, explicit || Boolean(process.env.BITAD_SOCKET_PATH ?? process.env.BITAD_DATA_DIR));
  const dbPath = () =>
    values.db ?? orInstalled(config().store.path, SYSTEM_DB, explicit || Boolean(process.env.BITAD_STORE_PATH ?? process.env.BITAD_DATA_DIR));
  switch (command) {
    case 'start':
      return start(values.config);
    case 'ask': {
      if (rest.length !== 1) throw new UsageError('ask takes exactly one prompt argument (quote it)');
      return ask({
        socket: socketPath(),
        prompt: rest[0],
        maxTokens: num(values['max-tokens'], 'max-tokens'),
        temperature: num(values.temperature, 'temperature'),
        chat: values.chat,
        json: values.json,
      });
    }
    case 'status':
      return status(socketPath(), values.json ?? false);
    case 'stats':
      return stats(dbPath(), values.since ?? '24h', values.json ?? false);
    case 'decommission':
      return decommission(config(), { forget: values.forget });
    case 'generate': {
      if (rest.length !== 1) throw new UsageError('generate takes exactly one prompt argument (quote it)');
      const mode = values.mode;
      if (mode !== undefined && mode !== 'bita' && mode !== 'plain') throw new UsageError('--mode must be bita or plain');
      return generate({
        model: values.model ?? config().model.path,
        prompt: rest[0],
        maxTokens: num(values['max-tokens'], 'max-tokens'),
        temperature: num(values.temperature, 'temperature'),
        mode,
        threads: num(values.threads, 'threads'),
      });
    }
  }
  return 2;
}

// The reader of our output went away (`bitad ask … | head`): stop quietly, as Unix tools do on
// SIGPIPE (Node ignores SIGPIPE and reports a write to the closed pipe as an EPIPE error event).
// Exiting closes the socket, which cancels a request still running in the daemon.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code !== 'EPIPE') throw e;
  process.exit(0);
});

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    if (e instanceof ConfigError) {
      process.stderr.write(`bitad: ${e.message}\n`);
      process.exit(2);
    }
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`bitad: ${(e as Error).message}\nRun "bitad --help".\n`);
      process.exit(2);
    }
    process.stderr.write(`bitad: ${(e as Error).message ?? e}\n`);
    process.exit(1);
  },
);
