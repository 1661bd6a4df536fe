import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPrivateDirs, DIR_MODE } from '../../src/daemon/private-dirs.js';

t.test('createPrivateDirs makes every missing level with DIR_MODE and leaves existing ones alone', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'bitad-dirs-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const before = statSync(root).mode & 0o777;
  createPrivateDirs(join(root, 'a', 'b', 'c'));
  for (const p of ['a', 'a/b', 'a/b/c']) t.equal(statSync(join(root, p)).mode & 0o777, DIR_MODE, `${p}: 0750`);
  t.equal(statSync(root).mode & 0o777, before, 'the existing parent keeps its mode');
  createPrivateDirs(join(root, 'a', 'b', 'c')); // again: nothing to do, no error
  t.ok(existsSync(join(root, 'a', 'b', 'c')));
});

t.test('a directory that cannot be made (under /proc) is an error, not a hang', { skip: !existsSync('/proc/self') && 'no procfs' }, async (t) => {
  // Node 20's mkdirSync(recursive) never returns for a path under /proc (it retries the parent it
  // cannot create for ever): `bitad start` with data_dir /proc/… spun at 100 % CPU, deaf to SIGTERM.
  const code = `import('${new URL('../../src/daemon/private-dirs.ts', import.meta.url).href}').then((m) => {
    try { m.createPrivateDirs('/proc/bitad-test-dirs/x'); console.log('created?'); } catch (e) { console.log('error', e.code); }
  });`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', code], { encoding: 'utf8', timeout: 15_000, killSignal: 'SIGKILL' });
  t.equal(r.signal, null, 'returned (not killed by the 15 s timeout)');
  t.match(r.stdout, /^error (ENOENT|EACCES|EPERM|EROFS)/, `a filesystem error: ${r.stdout.trim()}`);
});
