/** `bitad start`: run the daemon until SIGTERM/SIGINT, then drain and exit; SIGHUP is logged and ignored. */
import { loadConfig } from '../../daemon/config/load.js';
import { Controller, type ControllerDeps } from '../../daemon/controller.js';

export const startHelp = `Usage: bitad start [--config <file.yaml>]

Runs the daemon in the foreground: loads the model, connects MQTT (or starts the embedded broker),
opens the Unix socket, logs JSON to stdout. SIGTERM/SIGINT drain in-flight requests
(lifecycle.drain_timeout_ms) and exit 0. SIGHUP does not reload the configuration: it logs a
warning and the daemon keeps running (restart it to apply changes). The config file may also come
from BITAD_CONFIG; every key can be overridden with a BITAD_* variable (see docs/daemon.md).`;

/** `deps` lets a test launcher run the same process lifecycle with a model-free engine. */
export async function start(configFile: string | undefined, deps: ControllerDeps = {}): Promise<number> {
  const cfg = loadConfig(configFile ?? process.env.BITAD_CONFIG, { env: process.env, checkFiles: true });
  const controller = new Controller(cfg, deps);
  let stopping: Promise<void> | null = null;
  let stopped!: () => void;
  const finished = new Promise<void>((r) => (stopped = r));
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) {
      // A second Ctrl-C means "now"; a repeated SIGTERM (e.g. from a wrapper) just waits for the drain.
      if (sig === 'SIGINT') {
        controller.log.warn({ signal: sig }, 'second interrupt: exiting without drain');
        process.exit(130);
      }
      controller.log.info({ signal: sig }, 'already draining');
      return;
    }
    stopping = controller.stop(sig).then(stopped);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // Node's default for SIGHUP (a closed terminal, `kill -HUP`, a reload habit) is to die at once: no drain, the socket left behind.
  process.on('SIGHUP', () => controller.log.warn({ signal: 'SIGHUP' }, 'SIGHUP: reload is not supported; restart bitad to apply configuration changes'));
  await controller.start();
  await finished;
  return 0;
}
