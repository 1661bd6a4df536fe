/**
 * DNS rebinding: a web page whose name the attacker re-points at 127.0.0.1 is same-origin with
 * itself, so the Origin check passes and the browser would let it read the token-less loopback
 * dashboard and start prompts. Without a token the dashboard answers only a loopback Host with its
 * own port; with a token any Host passes (a rebound page has no token).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { startDashboard, type RunningDashboard } from '../../src/dashboard/index.js';
import { startMosquitto } from '../daemon/helpers/mosquitto.js';

const dir = mkdtempSync(join(tmpdir(), 'bitad-dash-host-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** fetch() cannot set Host, so node:http. */
function send(port: number, o: { host: string; method?: string; path: string; headers?: Record<string, string>; body?: string }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...o.headers, ...(o.body ? { 'content-type': 'application/json' } : {}) };
    const req = request({ host: '127.0.0.1', port, method: o.method ?? 'GET', path: o.path, headers: { ...headers, host: o.host }, setHost: false }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

async function dashboard(t: Test, brokerPort: number, token: string | null): Promise<RunningDashboard> {
  const d = await startDashboard({
    mqtt: { host: '127.0.0.1', port: brokerPort, protocolVersion: 5, baseTopic: 'bitad' },
    host: '127.0.0.1',
    port: 0,
    token,
    dbPath: join(dir, `${token ?? 'open'}.db`),
    retentionMs: 3_600_000,
    maxPoints: 1000,
  });
  t.teardown(() => d.stop());
  d.fleet.onState('n1', { state: 'online' }, Date.now());
  return d;
}

t.test('without a token, a rebound name (any Host but loopback with the listening port) is refused, also when Origin matches it', async (t) => {
  const mosq = await startMosquitto();
  t.teardown(() => mosq.stop());
  const d = await dashboard(t, mosq.port, null);
  const attacker = `attacker.example:${d.port}`;
  const fleet = await send(d.port, { host: attacker, path: '/api/fleet' });
  t.equal(fleet.status, 421, 'fleet data not served under a foreign Host');
  t.notMatch(fleet.body, /n1/, 'and none of it in the refusal');
  const gen = await send(d.port, { host: attacker, method: 'POST', path: '/api/board/n1/generate', headers: { origin: `http://${attacker}` }, body: '{"prompt":"hi","max_tokens":4}' });
  t.equal(gen.status, 421, 'no generation started from a rebound page');
  t.equal(d.history.prompts('n1', 10).length, 0, 'nothing sent to the board');
  t.equal((await send(d.port, { host: attacker, path: '/' })).status, 421, 'nor the page');
  for (const host of [`localhost.:${d.port}`, `x.localhost:${d.port}`, `127.0.0.1.example:${d.port}`, `localhost:${d.port + 1}`, 'localhost']) {
    t.equal((await send(d.port, { host, path: '/api/fleet' })).status, 421, `Host ${host}: refused`);
  }
  for (const host of [`127.0.0.1:${d.port}`, `localhost:${d.port}`, `LOCALHOST:${d.port}`, `[::1]:${d.port}`, `127.0.0.2:${d.port}`]) {
    t.equal((await send(d.port, { host, path: '/api/fleet' })).status, 200, `Host ${host}: served`);
  }
  const ok = await send(d.port, { host: `localhost:${d.port}`, method: 'POST', path: '/api/board/n1/generate', headers: { origin: `http://localhost:${d.port}` }, body: '{"prompt":"hi","max_tokens":4}' });
  t.equal(ok.status, 202, 'the page itself (loopback Host, same Origin) still starts a prompt');
});

t.test('with a token, any Host is served to a good token (reverse proxies, LAN names); a rebound page has none', async (t) => {
  const mosq = await startMosquitto();
  t.teardown(() => mosq.stop());
  const d = await dashboard(t, mosq.port, 's3cret');
  const host = `dashboard.lan:${d.port}`;
  t.equal((await send(d.port, { host, path: '/api/fleet', headers: { authorization: 'Bearer s3cret' } })).status, 200);
  t.equal((await send(d.port, { host, path: '/api/fleet' })).status, 401);
});
