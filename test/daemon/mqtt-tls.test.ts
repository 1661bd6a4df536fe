import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon } from './helpers/daemon.js';
import { startMosquitto } from './helpers/mosquitto.js';

// A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
const dir = mkdtempSync(join(tmpdir(), 'bitad-tls-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const f = (n: string) => join(dir, n);
const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });

function makeCerts(): void {
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=bitad test CA', '-keyout', f('ca.key'), '-out', f('ca.crt'));
  writeFileSync(f('san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  for (const who of ['server', 'client']) {
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${who}`, '-keyout', f(`${who}.key`), '-out', f(`${who}.csr`));
    ssl('x509', '-req', '-in', f(`${who}.csr`), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '1', '-extfile', f('san.ext'), '-out', f(`${who}.crt`));
  }
  // mosquitto started as root drops to its own user, which must read these throwaway files.
  chmodSync(dir, 0o755);
  for (const name of readdirSync(dir)) chmodSync(f(name), 0o644);
}

t.test('the daemon connects over TLS with a CA and a client certificate, and refuses an unknown CA', async (t) => {
  makeCerts();
  const broker = await startMosquitto({ tls: { ca: f('ca.crt'), cert: f('server.crt'), key: f('server.key'), requireCertificate: true } });
  t.teardown(() => broker.stop());
  const tls = { enabled: true, ca: f('ca.crt'), cert: f('client.crt'), key: f('client.key') };
  const d = await startDaemon({ embedded: false, host: '127.0.0.1', port: broker.port, tls });
  t.ok(d.controller.mqtt!.connected, 'connected with a client certificate');
  await d.stop();
  // Trusting the server's own certificate as the CA is wrong: the handshake must fail.
  await t.rejects(startDaemon({ embedded: false, host: '127.0.0.1', port: broker.port, tls: { ...tls, ca: f('client.crt') } }), /cannot connect.*certificate/);
});

t.test('an unreachable broker fails the start at once, naming it', async (t) => {
  const t0 = Date.now();
  await t.rejects(startDaemon({ embedded: false, host: '127.0.0.1', port: 1 }), /cannot connect to 127\.0\.0\.1:1: .*ECONNREFUSED/);
  t.ok(Date.now() - t0 < 3000, 'within 3 s');
});
