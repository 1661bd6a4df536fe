/** A real mosquitto on a free loopback port, as a child process (tests and bench/transport.ts). */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const MOSQUITTO = process.env.MOSQUITTO ?? '/usr/sbin/mosquitto';

export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

async function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export interface Mosquitto {
  port: number;
  stop(): Promise<void>;
}

export interface MosquittoOptions {
  /** TLS listener: PEM files; requireCertificate makes clients present a certificate signed by `ca`. */
  tls?: { ca: string; cert: string; key: string; requireCertificate: boolean };
  /** Authenticated broker: mosquitto_passwd file and topic ACL file (anonymous access off). */
  auth?: { passwordFile: string; aclFile: string };
  /** mosquitto's max_packet_size (default 1 MiB): a client publishing a larger packet is disconnected. */
  maxPacketSize?: number;
  /** Listen on this port (e.g. to restart a broker where clients expect it); default a free one. */
  port?: number;
}

export async function startMosquitto(opts: MosquittoOptions = {}): Promise<Mosquitto> {
  const dir = mkdtempSync(join(tmpdir(), 'bitad-mosq-'));
  const port = opts.port ?? (await freePort());
  const conf = join(dir, 'mosquitto.conf');
  const tls = opts.tls
    ? `cafile ${opts.tls.ca}\ncertfile ${opts.tls.cert}\nkeyfile ${opts.tls.key}\nrequire_certificate ${opts.tls.requireCertificate}\n`
    : '';
  const auth = opts.auth ? `allow_anonymous false\npassword_file ${opts.auth.passwordFile}\nacl_file ${opts.auth.aclFile}\n` : 'allow_anonymous true\n';
  writeFileSync(conf, `listener ${port} 127.0.0.1\n${tls}${auth}persistence false\nset_tcp_nodelay true\nmax_packet_size ${opts.maxPacketSize ?? 1048576}\n`);
  const child: ChildProcess = spawn(MOSQUITTO, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  let up = false;
  for (let i = 0; i < 100 && !up; i++) {
    if (child.exitCode !== null) break;
    up = await canConnect(port);
    if (!up) await sleep(50);
  }
  if (!up) {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`mosquitto did not start on port ${port}: ${stderr}`);
  }
  return {
    port,
    stop: async () => {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
