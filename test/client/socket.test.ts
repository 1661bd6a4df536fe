import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BitadClient } from '../../src/client/index.js';
import { startDaemon, type TestDaemon } from '../daemon/helpers/daemon.js';
import { clientCases, closeCase, type Ctx } from './cases.js';

let ctx: Ctx;
t.before(async () => {
  const daemon: TestDaemon = await startDaemon({ enabled: false }, () => undefined, { chunkDelayMs: 20 });
  ctx = { daemon, client: await BitadClient.socket(daemon.cfg.socket.path) };
});
t.teardown(async () => {
  await ctx?.client.close();
  await ctx?.daemon.stop();
});

clientCases(t, () => ctx);

t.test('close() cancels what is in flight', (t) => closeCase(t, () => BitadClient.socket(ctx.daemon.cfg.socket.path), ctx.daemon));

t.test('the connection closing under a request fails it with disconnected', async (t) => {
  // A stand-in daemon that takes the request and hangs up without an answer (a crash).
  const dir = mkdtempSync(join(tmpdir(), 'bitad-client-'));
  const path = join(dir, 'hangup.sock');
  const server = createServer((s) => s.once('data', () => s.destroy()));
  await new Promise<void>((r) => server.listen(path, r));
  t.teardown(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const c = await BitadClient.socket(path);
  const g = c.generate({ prompt: 'x' });
  await t.rejects(g.result, { code: 'disconnected', fromDaemon: false });
  await t.rejects(c.generate({ prompt: 'y' }).result, { code: 'disconnected' }, 'a later call reconnects, and is hung up on too (not "closed": close() was not called)');
  await c.close();
});

t.test('an unreachable socket is a clear connect error', async (t) => {
  await t.rejects(BitadClient.socket('/nonexistent/bitad.sock'), /cannot connect to \/nonexistent\/bitad.sock/);
});
