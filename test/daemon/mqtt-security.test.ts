import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import mqtt from 'mqtt';
import { PACKAGE_ROOT } from '../../src/daemon/config/load.js';
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

t.test('with the deploy/ password file and ACL, the daemon serves the app user, the app cannot fake state, nor make the daemon write it', async (t) => {
  const passwd = f('passwd');
  writeFileSync(passwd, '');
  execFileSync('mosquitto_passwd', ['-b', passwd, 'bitad', 'daemon-pw']);
  execFileSync('mosquitto_passwd', ['-b', passwd, 'app', 'app-pw']);
  execFileSync('mosquitto_passwd', ['-b', passwd, 'eve', 'eve-pw']);
  // A copy in the temp dir: mosquitto drops to its own user, which may not see the checkout.
  const acl = f('bitad.acl');
  copyFileSync(join(PACKAGE_ROOT, 'deploy/mosquitto/bitad.acl'), acl);
  chmodSync(dir, 0o755);
  for (const file of [passwd, acl]) chmodSync(file, 0o644);
  const broker = await startMosquitto({ auth: { passwordFile: passwd, aclFile: acl } });
  t.teardown(() => broker.stop());
  await t.rejects(startDaemon({ embedded: false, port: broker.port, username: 'bitad', password: 'wrong' }), /cannot connect/, 'a wrong password is refused');
  // unwritable/ is in the reply namespace but not in the daemon's ACL: the broker refuses those publishes.
  const d = await startDaemon({ embedded: false, port: broker.port, username: 'bitad', password: 'daemon-pw', protocol_version: 5, reply_prefixes: ['bitad/reply/', 'unwritable/'] });
  t.teardown(() => d.stop());
  const base = d.controller.mqtt!.base;
  const app = await mqtt.connectAsync({ host: '127.0.0.1', port: broker.port, protocolVersion: 5, username: 'app', password: 'app-pw' });
  t.teardown(() => app.endAsync());
  // Another user: the ACL's %u pattern gives it its own reply tree, not the app's.
  const eve = await mqtt.connectAsync({ host: '127.0.0.1', port: broker.port, protocolVersion: 5, username: 'eve', password: 'eve-pw' });
  t.teardown(() => eve.endAsync());
  const eveGot: string[] = [];
  eve.on('message', (topic) => eveGot.push(topic));
  await eve.subscribeAsync('bitad/reply/app/#', { qos: 1 });
  const finals: (Record<string, unknown> & { topic: string })[] = [];
  const states: string[] = [];
  app.on('message', (topic, p) => {
    const m = JSON.parse(p.toString());
    if (topic.endsWith('/state')) states.push(m.state);
    else if (m.status) finals.push({ ...m, topic });
  });
  const final = async (txn: string) => {
    for (let i = 0; i < 100 && !finals.some((f) => f.transaction === txn); i++) await sleep(20);
    return finals.find((f) => f.transaction === txn);
  };
  await app.subscribeAsync(['bitad/reply/app/replies', `${base}/state`, `${base}/response/#`], { qos: 1 });
  await app.publishAsync(`${base}/request/generate`, JSON.stringify({ transaction: 'acl1', prompt: 'hi', max_tokens: 2 }), {
    qos: 1,
    properties: { responseTopic: 'bitad/reply/app/replies', correlationData: Buffer.from('c1') },
  });
  t.match(await final('acl1'), { transaction: 'acl1', status: 'ok', topic: 'bitad/reply/app/replies' }, 'request and reply pass the ACL');
  t.same(eveGot, [], "another user cannot read the app's reply tree");
  // The ACL refuses the app on <base>/state; naming it as the reply route must not get round that.
  await app.publishAsync(`${base}/request/generate`, JSON.stringify({ transaction: 'acl2', prompt: 'hi', max_tokens: 2, reply_to: `${base}/state` }), { qos: 1 });
  t.match(await final('acl2'), { status: 'error', error: { code: 'bad_request' }, topic: `${base}/response/acl2` }, 'reply_to = the state topic is refused, answered on the default topic');
  await app.publishAsync(`${base}/request/generate`, JSON.stringify({ transaction: 'acl3', prompt: 'hi', max_tokens: 2 }), {
    qos: 1,
    properties: { responseTopic: `${base}/state`, correlationData: Buffer.from('c3') },
  });
  t.match(await final('acl3'), { status: 'error', error: { code: 'bad_request' }, topic: `${base}/response/acl3` }, 'a Response Topic = the state topic is refused too');
  // A publish the broker refuses (MQTT 5 PUBACK 0x87) is dropped and counted; the daemon stays connected.
  const connects = d.controller.mqtt!.connects;
  await app.publishAsync(`${base}/request/generate`, JSON.stringify({ transaction: 'acl4', prompt: 'hi', max_tokens: 2, reply_to: 'unwritable/x' }), { qos: 1 });
  for (let i = 0; i < 100 && ((d.controller.mqtt!.health().publishes_refused as number) ?? 0) < 3; i++) await sleep(20);
  await sleep(50); // no more than those three
  t.equal(d.controller.mqtt!.health().publishes_refused, 3, 'the chunks and the final reply were refused by the broker (0x87), each counted');
  await app.publishAsync(`${base}/request/generate`, JSON.stringify({ transaction: 'acl5', prompt: 'hi', max_tokens: 2 }), { qos: 1 });
  t.match(await final('acl5'), { status: 'ok', topic: `${base}/response/acl5` }, 'the next request is answered');
  t.equal(d.controller.mqtt!.connects, connects, 'the connection held');
  // MQTT 5 PUBACK reason 0x87 (not authorized): the app may not write the daemon's state.
  await t.rejects(app.publishAsync(`${base}/state`, '{"state":"offline"}', { qos: 1, retain: true }), /Not authorized|135/i);
  await sleep(100);
  t.notOk(states.includes('offline'), 'the retained state is untouched');
});
