/**
 * systemd notifications (sd_notify). Node has no unix datagram sockets, so this spawns
 * `systemd-notify`, and only when systemd asked for notifications (NOTIFY_SOCKET is set).
 * The unit needs NotifyAccess=all because the message comes from a child process;
 * systemd-notify (systemd ≥ 246) waits until the manager has processed it, so it is not lost
 * when the child exits.
 */
import { execFile } from 'node:child_process';
import type { Logger } from 'pino';

export class SystemdNotifier {
  readonly enabled: boolean;
  /** WATCHDOG=1 period: half of WatchdogSec, as sd_watchdog_enabled(3) recommends. */
  readonly watchdogMs: number | null;

  constructor(
    private readonly log: Logger,
    env: NodeJS.ProcessEnv = process.env,
    private readonly binary = 'systemd-notify',
  ) {
    this.enabled = Boolean(env.NOTIFY_SOCKET);
    const usec = Number(env.WATCHDOG_USEC);
    const pidOk = !env.WATCHDOG_PID || Number(env.WATCHDOG_PID) === process.pid;
    this.watchdogMs = this.enabled && usec > 0 && pidOk ? usec / 2000 : null;
  }

  ready(status: string): Promise<void> {
    return this.send([`MAINPID=${process.pid}`, 'READY=1', `STATUS=${status}`]);
  }
  watchdog(): Promise<void> {
    return this.send(['WATCHDOG=1']);
  }
  stopping(): Promise<void> {
    return this.send(['STOPPING=1', 'STATUS=draining']);
  }

  private send(assignments: string[]): Promise<void> {
    if (!this.enabled) return Promise.resolve();
    return new Promise((resolve) => {
      execFile(this.binary, assignments, { timeout: 5000 }, (err) => {
        if (err) this.log.warn({ err, assignments }, 'systemd-notify failed');
        resolve();
      });
    });
  }
}
