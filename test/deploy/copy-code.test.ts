import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../../src/daemon/config/load.js';

const root = process.getuid?.() === 0;

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return lstatSync(p).isDirectory() ? [p, ...walk(p)] : [p];
  });
}

t.test('the install copies a user-owned checkout as root-owned code nobody else can write', { skip: root ? false : 'needs root (chown); CI runs as root' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bitad-copy-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const src = join(dir, 'checkout');
  mkdirSync(join(src, 'bin'), { recursive: true });
  mkdirSync(join(src, 'node_modules/x'), { recursive: true });
  writeFileSync(join(src, 'package.json'), '{}');
  writeFileSync(join(src, 'bin/bitad.js'), '#!/usr/bin/env node\n');
  writeFileSync(join(src, 'node_modules/x/index.js'), '');
  chmodSync(join(src, 'package.json'), 0o666); // a sloppy checkout: world-writable
  chmodSync(join(src, 'bin/bitad.js'), 0o775);
  for (const p of [src, ...walk(src)]) chownSync(p, 1234, 1234); // a login user's checkout
  const prefix = join(dir, 'opt/bitad');
  execFileSync('bash', [join(PACKAGE_ROOT, 'deploy/copy-code.sh'), src, prefix]);
  const files = [prefix, ...walk(prefix)];
  t.ok(files.length >= 4, 'copied');
  for (const p of files) {
    const s = lstatSync(p);
    t.equal(`${s.uid}:${s.gid}`, '0:0', `${p} is owned by root`);
    t.equal(s.mode & 0o022, 0, `${p} is not group/world writable`);
  }
  t.equal(lstatSync(join(prefix, 'bin/bitad.js')).mode & 0o111, 0o111, 'executables stay executable');
  t.notOk(existsSync(join(prefix, 'node_modules')), 'node_modules is not copied (npm ci builds it)');
});
